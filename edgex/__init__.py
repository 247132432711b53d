"""edgex: take Xception from training to an edge device, and measure what depthwise separable convolutions buy there.

The Python API mirrors the commands (each command is a thin shell over one of these functions)::

    from edgex.models import create_model                  # Xception presets and the regular-conv twin
    from edgex.data import load_dataset                    # digits, image folders, TFDS
    from edgex.training import train, TrainConfig
    from edgex.evaluation import evaluate_model
    from edgex.export import export_model                  # convert with calibration data and a parity check
    from converters import convert                         # TFLite / ONNX / SavedModel / Edge TPU + parity check
    from edgex.quantize import quantize
    from edgex.prune import prune
    from devices.bench import benchmark                    # latency statistics on any runtime and device
    from edgex.sweep import sweep; from edgex.compare import compare
    from edgex.deploy import build_bundle, verify_bundle, deploy_remote
    from edgex.pipeline import resolve_recipe, run_pipeline

Importing ``edgex`` is cheap: TensorFlow is imported only by the functions that need it.
"""

__version__ = "0.1.0"
