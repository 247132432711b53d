"""ONNX export: fp32 through tf2onnx, int8 by ONNX Runtime static QDQ quantization or through the int8 TFLite
model (tf2onnx ``from_tflite``); every file is checked (full checker, strict shape inference)."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from converters.registry import ExportInfo, ExportOptions
from converters.source import CONVERTED_MAX_BYTES, SourceModel, converted_once, reuses_conversions
from devices.errors import EdgexError, RuntimeMissing, first_line
from devices.logs import quiet_native_logs

INPUT_NAME = "input"
_PROTOBUF_LIMIT = 1_900_000_000  # bytes: above this, weights go to an external-data file next to the model
# Above this many bytes of weights, tf2onnx would need tens of times that in memory: edgex writes the graph itself.
DIRECT_WRITER_BYTES = 256 * 2**20


def _onnx():
    try:
        import onnx
    except ImportError as exc:
        raise RuntimeMissing("onnx is not installed: pip install 'edgex[train]'") from exc
    return onnx


def _tf2onnx():
    from devices.tfkeras import tensorflow

    tensorflow()  # selects Keras 2 before tf2onnx imports TensorFlow
    try:
        import tf2onnx
    except ImportError as exc:
        raise RuntimeMissing("tf2onnx is not installed: pip install 'edgex[train]'") from exc
    return tf2onnx


def check_onnx(path: str | Path, name: str = "") -> None:
    """``onnx.checker`` with ``full_check`` and strict shape inference; errors name the file and the problem."""
    onnx = _onnx()
    try:
        onnx.checker.check_model(str(path), full_check=True)
        model = onnx.load(str(path), load_external_data=False)
        onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise EdgexError(f"the ONNX file {name or path} fails the checker: {first_line(exc, 300)}") from exc


def _rename(model, old: str, new: str) -> None:
    graph = model.graph
    for node in graph.node:
        node.input[:] = [new if n == old else n for n in node.input]
        node.output[:] = [new if n == old else n for n in node.output]
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.name == old:
            value.name = new


def _name_io(model, dynamic: bool) -> None:
    """Input ``input``, outputs ``output`` (``output_N`` when several), and a ``batch`` symbol when dynamic."""
    if model.graph.input[0].name != INPUT_NAME:
        _rename(model, model.graph.input[0].name, INPUT_NAME)
    outputs = [o.name for o in model.graph.output]
    for i, name in enumerate(outputs):
        wanted = "output" if len(outputs) == 1 else f"output_{i}"
        if name != wanted:
            _rename(model, name, wanted)
    for value in (*model.graph.input, *model.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        if dynamic:
            dim.dim_param = "batch"
        else:
            dim.dim_value = 1


def save_onnx(model, path: Path, final_name: str) -> None:
    onnx = _onnx()
    if model.ByteSize() > _PROTOBUF_LIMIT:
        onnx.save_model(
            model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=f"{final_name}.data"
        )
    else:
        onnx.save_model(model, str(path))


def to_onnx_fp32(source: SourceModel, options: ExportOptions):
    """The fp32 ONNX ModelProto of ``source``, with named input/output: through tf2onnx, or for large Keras models
    made of plain CNN layers through edgex's direct writer (see converters.onnx_graph)."""
    writer = writer_for(source, options)

    def convert():
        if writer == "direct":
            from converters.onnx_graph import keras_to_onnx

            return keras_to_onnx(source.keras_model, options.batch_size, options.opset)
        return _tf2onnx_fp32(source, options)

    if not reuses_conversions(source):
        return convert()
    model = None

    def serialized() -> bytes:
        nonlocal model
        model = convert()
        return model.SerializeToString() if model.ByteSize() <= CONVERTED_MAX_BYTES // 4 else b""  # b"": not kept

    data = converted_once(source, ("onnx", "fp32", options.batch, options.opset, writer), serialized)
    return model if model is not None else _onnx().load_from_string(data)


def writer_for(source: SourceModel, options: ExportOptions) -> str:
    from converters.onnx_graph import has_grouped_convolutions, unsupported_layers

    if options.onnx_writer != "auto":
        return options.onnx_writer
    if source.keras_model is None or unsupported_layers(source.keras_model):
        return "tf2onnx"
    if has_grouped_convolutions(source.keras_model):
        return "direct"
    weight_bytes = sum(int(np.prod(w.shape)) * 4 for w in source.keras_model.weights)
    return "direct" if weight_bytes > DIRECT_WRITER_BYTES else "tf2onnx"


def _tf2onnx_fp32(source: SourceModel, options: ExportOptions):
    from devices.tfkeras import tensorflow

    tf2onnx = _tf2onnx()
    tf = tensorflow()
    spec = (tf.TensorSpec([options.batch_size, *source.input_shape], tf.float32, name=INPUT_NAME),)
    try:
        # tf2onnx logs unsupported ops itself; _check_ops reports the first one as the error.
        with quiet_native_logs(), _python_logging_at(logging.CRITICAL):
            if source.kind == "keras":
                model, _ = tf2onnx.convert.from_keras(source.keras_model, input_signature=spec, opset=options.opset)
            else:
                function = tf.function(source.concrete_function(options.batch_size))
                model, _ = tf2onnx.convert.from_function(function, input_signature=spec, opset=options.opset)
    except Exception as exc:
        raise EdgexError(f"tf2onnx cannot convert this model to opset {options.opset}: {first_line(exc, 300)}") from exc
    _check_ops(model, options)
    _name_io(model, dynamic=options.batch_size is None)
    return model


def _check_ops(model, options: ExportOptions) -> None:
    """tf2onnx leaves TensorFlow ops it cannot map in the graph; name the first one and its layer."""
    onnx = _onnx()
    for node in model.graph.node:
        if node.domain in ("", "ai.onnx") and not onnx.defs.has(node.op_type):
            parts = [p for p in node.name.split("/") if p]
            layer = parts[1] if len(parts) > 2 else (parts[0] if parts else "?")
            raise EdgexError(
                f"ONNX opset {options.opset} cannot express op {node.op_type} (layer {layer!r}, node {node.name!r})"
            )


@contextlib.contextmanager
def _python_logging_at(level: int):
    root = logging.getLogger()
    previous = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(previous)


class _Calibration:
    """ONNX Runtime's CalibrationDataReader protocol over preprocessed samples."""

    def __init__(self, samples: np.ndarray):
        self._samples = samples
        self._next = 0

    def get_next(self):
        if self._next >= len(self._samples):
            return None
        sample = self._samples[self._next : self._next + 1].astype(np.float32)
        self._next += 1
        return {INPUT_NAME: sample}

    def rewind(self):
        self._next = 0


def _int8_qdq(source: SourceModel, path: Path, options: ExportOptions) -> dict:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        save_onnx(to_onnx_fp32(source, options), fp32, "fp32.onnx")
        prepared = Path(tmp) / "prepared.onnx"
        # The quantizer logs a warning for every 1-D weight it leaves per-tensor (batch norm folded away).
        # reduce_range (7-bit weights): on x86 without VNNI, ONNX Runtime's int8 kernels multiply with VPMADDUBSW,
        # whose int16 pair sums saturate with full-range weights; measured on an AVX2 EPYC, a tiny Xception kept
        # 54% top-1 agreement with 8-bit weights and 99.6% with 7-bit ones. Weights stay symmetric int8 (TensorRT).
        with quiet_native_logs(), _python_logging_at(logging.ERROR):
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            quantize_static(
                str(prepared),
                str(path),
                _Calibration(options.calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                reduce_range=True,
            )
    return {
        "onnx_int8_route": "qdq",
        "quantizer": "onnxruntime.quantization.quantize_static (QDQ, per-channel "
        "7-bit symmetric int8 weights, int8 activations, MinMax calibration)",
    }


def _int8_from_tflite(source: SourceModel, path: Path, options: ExportOptions) -> dict:
    from converters.tflite import convert_bytes

    tf2onnx = _tf2onnx()
    tflite_bytes = convert_bytes(source, replace(options, io="float"))
    with tempfile.TemporaryDirectory() as tmp:
        tflite_path = Path(tmp) / "int8.tflite"
        tflite_path.write_bytes(tflite_bytes)
        try:
            # tf2onnx reads the flatbuffer with tf.lite.Interpreter, which warns that it is deprecated.
            with quiet_native_logs(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                model, _ = tf2onnx.convert.from_tflite(str(tflite_path), opset=options.opset)
        except Exception as exc:
            raise EdgexError(f"tf2onnx cannot convert the int8 TFLite model: {first_line(exc, 300)}") from exc
    _name_io(model, dynamic=options.batch_size is None)
    save_onnx(model, path, options.final_name)
    return {"onnx_int8_route": "tflite", "quantizer": "int8 TFLite (TFLiteConverter) then tf2onnx.convert.from_tflite"}


def export(source: SourceModel, path: Path, options: ExportOptions) -> ExportInfo:
    path = Path(path)
    if options.precision == "fp32":
        save_onnx(to_onnx_fp32(source, options), path, options.final_name)
        details = {}
    elif options.onnx_int8_route == "tflite":
        details = _int8_from_tflite(source, path, options)
    else:
        details = _int8_qdq(source, path, options)
    check_onnx(path, options.final_name)
    details["opset"] = options.opset
    details["onnx_writer"] = writer_for(source, options)
    return ExportInfo((), details)
