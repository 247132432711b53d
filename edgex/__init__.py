"""edgex: take Xception from training to an edge device, and measure what depthwise separable convolutions buy there.

The Python API mirrors the commands (each command is a thin shell over one of these functions)::

    from edgex.models import create_model                  # Xception presets and the regular-conv twin
    from edgex.data import load_dataset                    # digits, image folders, TFDS
    from edgex.training import train, TrainConfig
    from edgex.artifacts.accuracy import evaluate_model
    from edgex.artifacts.convert import export_model       # convert with calibration data and a parity check
    from converters import convert                         # TFLite / ONNX / SavedModel / Edge TPU + parity check
    from edgex.optimize.quantize import quantize
    from edgex.optimize.prune import prune
    from devices.bench import benchmark                    # latency statistics on any runtime and device
    from edgex.sepconv.sweep import sweep; from edgex.sepconv.compare import compare
    from edgex.deploy import build_bundle, verify_bundle, deploy_remote
    from edgex.pipeline import resolve_recipe, run_pipeline

Importing ``edgex`` is cheap: TensorFlow is imported only by the functions that need it.
"""

from edgex import _moved

__version__ = "0.1.0"

_moved.install()
