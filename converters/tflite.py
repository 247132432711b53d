"""TFLite (LiteRT) export: fp32, fp16 weights, dynamic-range int8 weights, full-integer int8."""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from converters.calibration import split_calibration
from converters.registry import ExportInfo, ExportOptions
from converters.source import SourceModel, converted_once
from devices.errors import EdgexError
from devices.logs import quiet_native_logs

_IO_DTYPES = {"int8": "int8", "uint8": "uint8", "float": "float32"}


def representative_dataset(samples: np.ndarray):
    """The generator TFLite's calibration asks for: one preprocessed sample (batch of 1) at a time."""

    def generate():
        for sample in samples:
            yield [sample[None].astype(np.float32)]

    return generate


def make_converter(source: SourceModel, options: ExportOptions):
    """A configured ``tf.lite.TFLiteConverter`` for ``source`` at ``options.precision``."""
    from devices.tfkeras import tensorflow

    tf = tensorflow()
    concrete = source.concrete_function(options.batch_size)
    # The converter saves its trackable object as a SavedModel first. A plain tf.Module holding the variables
    # is enough, and saves five times faster than the Keras model (no tracing of every layer's call).
    holder = tf.Module()
    if source.keras_model is not None:
        holder.weights = list(source.keras_model.variables)
    else:  # a SavedModel source: the loaded object owns the variables
        holder.loaded = concrete._edgex_keepalive
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    converter._edgex_keepalive = (concrete, holder)
    converter.experimental_lower_to_saved_model = options.signature
    if options.precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif options.precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif options.precision == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(options.calibration)
        if options.keep_float:
            # Layers kept in float need float kernels next to the int8 ones.
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
        else:
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if options.io != "float":
            converter.inference_input_type = getattr(tf, options.io)
            converter.inference_output_type = getattr(tf, options.io)
    return converter


def convert_bytes(source: SourceModel, options: ExportOptions) -> bytes:
    """The TFLite flatbuffer of ``source``; unsupported operations become one-line errors naming op and layer."""
    key = (
        "tflite",
        options.precision,
        options.io,
        options.batch,
        options.keep_float,
        options.calibration_digest,
        options.signature,
    )
    return converted_once(source, key, lambda: _convert_bytes(source, options))


def _convert_bytes(source: SourceModel, options: ExportOptions) -> bytes:
    from devices.tfkeras import tensorflow

    tf = tensorflow()
    converter = make_converter(source, options)
    try:
        # Selective quantization runs tf.lite.Interpreter, which warns that it is deprecated.
        with quiet_native_logs(), warnings.catch_warnings(), split_calibration():
            warnings.simplefilter("ignore", UserWarning)
            if options.keep_float:
                return _selective_int8(tf, converter, source, options)
            return converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError...
        raise EdgexError(
            f"TFLite cannot express this model at {options.precision}: {describe_converter_error(exc)}"
        ) from exc


def _selective_int8(tf, converter, source: SourceModel, options: ExportOptions) -> bytes:
    debug_options = tf.lite.experimental.QuantizationDebugOptions(
        denylisted_nodes=output_tensors_of_layers(source, options, options.keep_float)
    )
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter, debug_dataset=representative_dataset(options.calibration), debug_options=debug_options
    )
    return debugger.get_nondebug_quantized_model()


def output_tensors_of_layers(source: SourceModel, options: ExportOptions, layers: tuple[str, ...]) -> list[str]:
    """Names of the TFLite tensors produced inside the given Keras layers (TFLite names them ``.../layer/...``)."""
    from dataclasses import replace

    from devices.litert import interpreter_module

    float_model = make_converter(source, replace(options, precision="fp32", keep_float=())).convert()
    interp = interpreter_module().Interpreter(model_content=float_model)
    names = [d["name"] for d in interp.get_tensor_details()]
    nodes, missing = [], []
    for layer in layers:
        matched = [n for n in names if re.search(rf"(^|[/;]){re.escape(layer)}(/|;|:|$)", n)]
        nodes += matched
        if not matched:
            missing.append(layer)
    if missing:
        raise EdgexError(f"--keep-float: no layer named {', '.join(missing)} in the model")
    return sorted(set(nodes))


def describe_converter_error(exc: Exception) -> str:
    """The first useful line of a converter error: the op and, where the message has it, the layer."""
    text = str(exc)
    op = re.search(r"'(tf\.\w+|tfl\.\w+)' op", text) or re.search(r"op[: ]+'?(\w+)'? is neither", text)
    layer = re.search(r'loc\(.*?"([^"@]+?)(?:@[^"]*)?"', text)
    if op:
        where = (
            f" in layer {layer.group(1).split('/')[1] if '/' in layer.group(1) else layer.group(1)}" if layer else ""
        )
        reason = re.search(
            r"op[^\n]*?(is neither[^\n.]*|not supported[^\n.]*|is not quantizable[^\n.]*|"
            r"quantization[^\n.]*not[^\n.]*supported[^\n.]*)",
            text,
        )
        return f"op {op.group(1)}{where}: {reason.group(1) if reason else 'not supported'}"
    lines = [line.strip() for line in text.splitlines() if line.strip() and "loc(" not in line]
    return (lines[0] if lines else type(exc).__name__)[:300]


def export(source: SourceModel, path: Path, options: ExportOptions) -> ExportInfo:
    data = convert_bytes(source, options)
    Path(path).write_bytes(data)
    details = {"converter": "tf.lite.TFLiteConverter (from a concrete function)"}
    notes = []
    if options.precision == "fp16":
        notes.append(
            "fp16 stores weights as float16; they are dequantized to float32 when the model is loaded on "
            "CPUs without fp16 arithmetic"
        )
    if options.keep_float:
        details["kept_float"] = list(options.keep_float)
    return ExportInfo(tuple(notes), details)


@dataclass(frozen=True)
class LayerError:
    """How far one quantized tensor is from its float value (TFLite's QuantizationDebugger statistics)."""

    tensor: str
    layer: str  # the Keras layer the tensor belongs to ("" when it cannot be told)
    op: str
    rmse_over_scale: float  # RMS error in units of the quantization step; ~0.29 is pure rounding error
    mean_error: float
    max_abs_error: float
    scale: float


def _layer_of(tensor: str, layers: list[str]) -> str:
    """The Keras layer of a TFLite tensor. Fused tensors are named "act;bn;conv": the last part is the op."""
    for part in reversed(tensor.split(";")):
        for name in layers:  # longest names first, so that block1_conv1_bn is not taken for block1_conv1
            if re.search(rf"(^|/){re.escape(name)}(/|$)", part):
                return name
    return ""


def quantization_errors(source: SourceModel, calibration: np.ndarray, samples: int = 64) -> list[LayerError]:
    """Per-layer quantization error of the full-integer model, worst first."""
    import csv
    import io
    import math

    from devices.tfkeras import tensorflow

    tf = tensorflow()
    options = ExportOptions(precision="int8", calibration=calibration)
    converter = make_converter(source, options)
    debug_data = representative_dataset(calibration[:samples])
    # The debugger runs tf.lite.Interpreter, which warns that it is deprecated.
    with quiet_native_logs(), warnings.catch_warnings(), split_calibration():
        warnings.simplefilter("ignore")
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_data)
        debugger.run()
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    layers = (
        sorted((layer.name for layer in source.keras_model.layers), key=len, reverse=True) if source.keras_model else []
    )
    errors = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        scale = float(row.get("scale") or 0)
        mse = float(row.get("mean_squared_error") or 0)
        tensor = row.get("tensor_name", "")
        layer = _layer_of(tensor, layers)
        errors.append(
            LayerError(
                tensor=tensor,
                layer=layer,
                op=row.get("op_name", ""),
                rmse_over_scale=math.sqrt(mse) / scale if scale else 0.0,
                mean_error=float(row.get("mean_error") or 0),
                max_abs_error=float(row.get("max_abs_error") or 0),
                scale=scale,
            )
        )
    return sorted(errors, key=lambda e: e.rmse_over_scale, reverse=True)
