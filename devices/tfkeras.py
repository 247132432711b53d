"""The one place that selects Keras for edgex: Keras 2 (``tf_keras``), as tensorflow-model-optimization needs.

TensorFlow is imported by name inside the functions below, never at module level: ``devices`` must import
on a Raspberry Pi that has only numpy and a runtime.

Everything in edgex, converters and the TensorFlow backend gets TensorFlow and Keras from here, so that
``TF_USE_LEGACY_KERAS=1`` is always set before TensorFlow is first imported and ``tf.keras`` is ``tf_keras``, and
so that the CPU kernels TensorFlow uses (oneDNN or its default Eigen ones) are chosen here, once.
"""

from __future__ import annotations

import functools
import importlib
import os
import platform
import sys
from dataclasses import dataclass

from devices.errors import RuntimeMissing
from devices.logs import quiet_native_logs

ONEDNN_VARIABLE = "TF_ENABLE_ONEDNN_OPTS"
_X86_64 = ("x86_64", "amd64")


@dataclass(frozen=True)
class OneDnnSetting:
    """Whether TensorFlow runs its CPU kernels through oneDNN, and who decided it."""

    on: bool | None  # None: TensorFlow's own default for this CPU, not known before it is imported
    reason: str

    def describe(self) -> str:
        state = {True: "on", False: "off", None: "TensorFlow's default"}[self.on]
        return f"{state} ({self.reason})"


def onednn_setting() -> OneDnnSetting:
    """What edgex sets before TensorFlow is imported. TensorFlow turns oneDNN on by itself only on CPUs with AVX-512
    VNNI, BF16 or AMX; elsewhere its default Eigen kernels have no gradient for grouped convolutions, so on every
    x86-64 CPU edgex turns it on, unless ``TF_ENABLE_ONEDNN_OPTS`` says otherwise."""
    value = os.environ.get(ONEDNN_VARIABLE, "").strip().lower()
    if value in ("0", "false"):
        return OneDnnSetting(False, f"{ONEDNN_VARIABLE}={os.environ[ONEDNN_VARIABLE]} in the environment")
    if value in ("1", "true"):
        by = "set by edgex" if _ONEDNN_SET_BY_EDGEX else "in the environment"
        return OneDnnSetting(True, f"{ONEDNN_VARIABLE}={os.environ[ONEDNN_VARIABLE]} {by}")
    if platform.machine().lower() in _X86_64:
        return OneDnnSetting(True, f"edgex sets {ONEDNN_VARIABLE}=1 on x86-64 when TensorFlow is imported")
    return OneDnnSetting(None, f"{platform.machine()}: edgex leaves {ONEDNN_VARIABLE} to TensorFlow")


_ONEDNN_SET_BY_EDGEX = False


def _select_onednn() -> None:
    global _ONEDNN_SET_BY_EDGEX
    if onednn_setting().on and not os.environ.get(ONEDNN_VARIABLE, "").strip():
        os.environ[ONEDNN_VARIABLE] = "1"
        _ONEDNN_SET_BY_EDGEX = True


def tensorflow():
    """Import TensorFlow with Keras 2 selected and its start-up chatter held back."""
    if "tensorflow" in sys.modules:
        if os.environ.get("TF_USE_LEGACY_KERAS") != "1":
            raise RuntimeError(
                "TensorFlow was imported before edgex could select Keras 2; "
                "set TF_USE_LEGACY_KERAS=1 or let edgex import TensorFlow"
            )
        return sys.modules["tensorflow"]
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    _select_onednn()
    with quiet_native_logs():
        try:
            tf = importlib.import_module("tensorflow")
        except ImportError as exc:
            raise RuntimeMissing("tensorflow is not installed: pip install 'edgex[train]'") from exc
        tf.get_logger().setLevel("ERROR")
        tf.config.list_physical_devices()  # initialises the platforms now, so that their log lines are held back
    return tf


def keras():
    """The ``tf_keras`` module (Keras 2)."""
    tensorflow()
    try:
        return importlib.import_module("tf_keras")
    except ImportError as exc:
        raise RuntimeMissing("tf-keras is not installed: pip install 'edgex[train]'") from exc


def tfmot():
    """tensorflow-model-optimization, imported after Keras 2 is selected (it needs tf_keras)."""
    keras()
    try:
        return importlib.import_module("tensorflow_model_optimization")
    except ImportError as exc:
        raise RuntimeMissing("tensorflow-model-optimization is not installed: pip install 'edgex[train]'") from exc


@dataclass(frozen=True)
class GroupedConvolutionPath:
    """How grouped convolutions (1 < groups < channels, the spectrum's inner points) train in this process."""

    native: bool  # TensorFlow's own grouped kernel; else tf-keras' XLA-compiled one (correct, 7-190x slower)
    reason: str

    def describe(self) -> str:
        kernel = "TensorFlow's grouped kernel" if self.native else "tf-keras' XLA path"
        return f"grouped convolutions train on {kernel}: {self.reason}"

    def to_dict(self) -> dict:
        return {"native": self.native, "line": self.describe()}


@functools.lru_cache(maxsize=1)
def grouped_convolution_path() -> GroupedConvolutionPath:
    """The fastest correct path on this machine, found by computing one small grouped convolution's gradients:
    TensorFlow's own kernel has them where oneDNN is on (and on GPUs), not with its default Eigen CPU kernels."""
    tf = tensorflow()
    onednn = f"oneDNN {onednn_setting().describe()}" if onednn_enabled() else f"oneDNN off ({onednn_setting().reason})"
    x, kernel = tf.ones([1, 4, 4, 4]), tf.ones([3, 3, 2, 4])  # 4 channels in 2 groups
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = tf.nn.conv2d(x, kernel, 1, "SAME")
    try:
        with quiet_native_logs():
            tape.gradient(y, [x, kernel])
    except tf.errors.InvalidArgumentError:
        return GroupedConvolutionPath(False, f"{onednn}, and TensorFlow's other CPU kernels have no grouped gradient")
    return GroupedConvolutionPath(True, onednn)


def onednn_enabled() -> bool:
    """Whether the imported TensorFlow runs its CPU kernels through oneDNN."""
    tensorflow()
    return bool(importlib.import_module("tensorflow.python.util._pywrap_util_port").IsMklEnabled())
