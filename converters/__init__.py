"""Model transformation: Keras/SavedModel -> TFLite, ONNX, SavedModel, Edge TPU, each checked against the original.

One module per target format, selected from one table::

    from converters import convert
    result = convert("runs/train/model.keras", to="tflite", precision="int8",
                     calibration=samples, parity_inputs=val_samples)
    result.parity.max_abs_diff, result.path

Importing this package is cheap; TensorFlow, tf2onnx and onnx are imported by the target modules when used.
"""

from __future__ import annotations

from converters.registry import (
    FORMATS,
    ConversionResult,
    Parity,
    convert,
    default_output,
    default_precision,
    load_source,
)

__all__ = [
    "FORMATS",
    "ConversionResult",
    "Parity",
    "convert",
    "default_output",
    "default_precision",
    "load_source",
]
