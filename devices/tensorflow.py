"""TensorFlow backend: Keras files (.keras, .h5) and SavedModel folders, on the CPU or a GPU.

The runtime backend that runs models on TensorFlow. TensorFlow itself is imported through ``devices.tfkeras`` (the
one place that selects Keras 2) and only inside functions, so ``devices`` still imports without it.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import io
import json
import threading
import types
import zipfile
from pathlib import Path

from devices.base import LoadedModel, TensorInfo
from devices.errors import DeviceNotFound, EdgexError, ModelFileError, RuntimeMissing, first_line
from devices.tfkeras import grouped_convolution_path, keras, tensorflow

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_ARCHIVE_PATCH = threading.Lock()


def runtime_version() -> str:
    for dist in ("tensorflow", "tensorflow-cpu"):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return ""


def is_saved_model(path: Path) -> bool:
    return path.is_dir() and (path / "saved_model.pb").is_file()


@contextlib.contextmanager
def _tfmot_scope():
    """Custom objects of tensorflow-model-optimization (QAT and pruning wrappers), when it is installed."""
    with contextlib.ExitStack() as stack:
        try:
            from devices.tfkeras import tfmot as import_tfmot

            tfmot = import_tfmot()
        except RuntimeMissing:
            pass
        else:
            stack.enter_context(tfmot.quantization.keras.quantize_scope())
            stack.enter_context(tfmot.sparsity.keras.prune_scope())
        yield


def _h5_layer_classes(path: Path) -> set[str]:
    import h5py

    with h5py.File(path, "r") as fh:
        config = fh.attrs.get("model_config")
    if config is None:
        return set()
    config = json.loads(config.decode() if isinstance(config, bytes) else config)
    classes = set()

    def walk(node):
        if isinstance(node, dict):
            if "class_name" in node:
                classes.add(node["class_name"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(config)
    return classes


def load_keras_model(path: str | Path):
    """Load a Keras model file in safe mode (no Lambda layers, no arbitrary code), uncompiled."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model file not found: {path}")
    k = keras()
    if path.suffix == ".keras":
        if not zipfile.is_zipfile(path):
            raise ModelFileError(f"{path} is not a valid .keras file (truncated or not a Keras archive)")
    elif path.suffix in (".h5", ".hdf5"):
        try:
            if "Lambda" in _h5_layer_classes(path):
                raise ModelFileError(
                    f"{path} contains a Lambda layer, which safe mode refuses to load "
                    "(it would run arbitrary code); rebuild the model without Lambda layers"
                )
        except OSError as exc:
            raise ModelFileError(f"{path} is not a valid HDF5 Keras file: {exc}") from exc
    else:
        raise ModelFileError(f"{path} is not a Keras model file; expected one of: {', '.join(KERAS_SUFFIXES)}")
    kwargs = {"safe_mode": True} if path.suffix == ".keras" else {}
    try:
        try:
            with _archive_members_in_memory():
                return native_grouped_convolutions(k.models.load_model(path, compile=False, **kwargs))
        except (ValueError, TypeError):
            # QAT and pruning wrappers are tfmot's own layers; without its scope they fail in several ways.
            with _tfmot_scope(), _archive_members_in_memory():
                return native_grouped_convolutions(k.models.load_model(path, compile=False, **kwargs))
    except Exception as exc:  # Keras raises ValueError, TypeError, KeyError, OSError... for bad files
        text = str(exc)
        if "Lambda" in text or "safe_mode" in text:
            raise ModelFileError(
                f"{path} contains a Lambda layer, which safe mode refuses to load (it would run arbitrary code); "
                "rebuild the model without Lambda layers"
            ) from exc
        raise ModelFileError(f"cannot load Keras model {path}: {first_line(exc, 300)}") from exc


class _MembersInMemory(zipfile.ZipFile):
    """A zip archive whose members are read whole into memory when opened for reading."""

    def open(self, name, mode="r", pwd=None, **kwargs):
        member = super().open(name, mode, pwd, **kwargs)
        if mode != "r":
            return member
        with member:
            return io.BytesIO(member.read())


@contextlib.contextmanager
def _archive_members_in_memory():
    """tf-keras reads a .keras file's weights through h5py from the zip member, and h5py seeks back and forth.
    Before Python 3.12 every backward seek in a zip member reads it again from its start: about 8 of the 9.4 s
    that loading the paper model took (1.7 s now). Within the block, tf-keras reads each member whole into memory."""
    try:
        saving_lib = importlib.import_module(f"{keras().__name__}.src.saving.saving_lib")
    except ImportError:  # another Keras: left as it is
        yield
        return
    shim = types.ModuleType("zipfile")
    shim.__dict__.update(vars(zipfile))
    shim.ZipFile = _MembersInMemory
    with _ARCHIVE_PATCH:
        saving_lib.zipfile = shim
        try:
            yield
        finally:
            saving_lib.zipfile = zipfile


def grouped_convolutions(model) -> list:
    """The convolutions of ``model`` (wrapped ones included) that split their channels into groups."""
    return [layer for layer in model.submodules if getattr(layer, "groups", 1) > 1]


def native_grouped_convolutions(model):
    """``model``, its grouped convolutions set to run on TensorFlow's own kernel where that kernel has gradients
    (``devices.tfkeras.grouped_convolution_path``). tf-keras compiles each one with XLA, a workaround from when
    TensorFlow had no grouped kernel for the CPU; TensorFlow 2.21 has one, with the same outputs and gradients,
    and trains them 7-190x faster (``python -m benchmarks.grouped_conv``). Elsewhere the XLA path stays."""
    grouped = grouped_convolutions(model)
    if not grouped or not grouped_convolution_path().native:
        return model
    for layer in grouped:
        if hasattr(layer, "_jit_compiled_convolution_op"):
            layer._jit_compiled_convolution_op = layer.convolution_op
    return model


def _tf_device(device: str) -> str:
    tf = tensorflow()
    kind, _, index = device.partition(":")
    if kind == "cpu":
        return "/CPU:0"
    if kind == "gpu":
        gpus = tf.config.list_physical_devices("GPU")
        i = int(index or 0) if (index or "0").isdigit() else -1
        if not 0 <= i < len(gpus):
            raise DeviceNotFound(f"device {device!r} not found: TensorFlow sees {len(gpus)} GPU(s)")
        return f"/GPU:{i}"
    raise EdgexError(f"the TensorFlow backend runs on 'cpu' or 'gpu[:N]', not {device!r}")


class TensorFlowModel(LoadedModel):
    runtime = "tensorflow"

    def __init__(self, path, *, device: str = "cpu", threads: int | None = None, model=None):
        super().__init__(path)
        tf = tensorflow()
        self.device = device
        self.threads = threads
        self._tf_device = _tf_device(device)
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(int(threads))
                tf.config.threading.set_inter_op_parallelism_threads(1)
            except RuntimeError:
                pass  # TensorFlow already runs in this process: its thread pools are fixed
            # Report the threads TensorFlow really uses (0 is its default: every core), not the ones asked for.
            in_effect = tf.config.threading.get_intra_op_parallelism_threads()
            self.threads = in_effect or None
        with tf.device(self._tf_device):
            if model is not None:
                self._model = model
            elif is_saved_model(self.path):
                self._model = None
                try:
                    loaded = tf.saved_model.load(str(self.path))
                except Exception as exc:
                    raise ModelFileError(f"cannot load SavedModel {self.path}: {exc}") from exc
                self._saved = loaded
                self._fn = loaded.signatures["serving_default"]
            else:
                self._model = load_keras_model(self.path)
        if self._model is not None:
            model = self._model
            # One trace for every batch size: a last, smaller batch would otherwise trace the graph again.
            signature = [tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in model.inputs]
            self._fn = tf.function(
                lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False), input_signature=signature
            )
            self._in = [_tensor_info(t.name.split(":")[0], t) for t in model.inputs]
            self._out = [_tensor_info(t.name.split(":")[0], t) for t in model.outputs]
        else:
            specs = self._fn.structured_input_signature[1]
            self._in_names = sorted(specs)
            self._in = [_tensor_info(n, specs[n]) for n in self._in_names]
            outs = self._fn.structured_outputs
            self._out_names = sorted(outs)
            self._out = [_tensor_info(n, outs[n]) for n in self._out_names]
        self._feeds = []
        self._results = []

    @property
    def keras_model(self):
        return self._model

    @property
    def inputs(self):
        return self._in

    @property
    def outputs(self):
        return self._out

    @property
    def version(self) -> str:
        return runtime_version()

    def prepare(self, samples: int) -> None:
        super().prepare(samples)
        if self._model is not None:
            with tensorflow().device(self._tf_device):
                self._fn.get_concrete_function()  # the graph traced once, for every batch size

    def set_inputs(self, arrays):
        tf = tensorflow()
        with tf.device(self._tf_device):
            self._feeds = [tf.constant(a) for a in arrays]

    def invoke(self):
        tf = tensorflow()
        with tf.device(self._tf_device):
            if self._model is not None:
                out = self._fn(*self._feeds)
                outs = out if isinstance(out, (list, tuple)) else [out]
            else:
                result = self._fn(**dict(zip(self._in_names, self._feeds)))
                outs = [result[n] for n in self._out_names]
        # .numpy() waits for the device, so a GPU run is timed to its end.
        self._results = [o.numpy() for o in outs]

    def get_outputs(self):
        return self._results

    def close(self):
        self._model = None
        self._fn = None


def _tensor_info(name: str, tensor) -> TensorInfo:
    """A Keras tensor or a tf.TensorSpec as the runtime sees it (-1 for a dynamic dimension)."""
    shape = tuple(-1 if d is None else int(d) for d in tensor.shape)
    return TensorInfo(name=name, shape=shape, dtype=tensor.dtype.name)


def load(path, *, device: str = "cpu", threads: int | None = None) -> TensorFlowModel:
    return TensorFlowModel(Path(path), device=device, threads=threads)


def from_keras(model, *, device: str = "cpu") -> TensorFlowModel:
    """Wrap an in-memory Keras model in the common interface (for evaluation and parity checks)."""
    return TensorFlowModel(Path(model.name), device=device, model=model)


def gpu_names() -> list[str]:
    try:
        tf = tensorflow()
    except Exception:
        return []
    return [f"gpu:{i}" for i, _ in enumerate(tf.config.list_physical_devices("GPU"))]


__all__ = ["TensorFlowModel", "from_keras", "gpu_names", "load", "load_keras_model"]
