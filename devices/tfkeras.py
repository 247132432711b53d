"""The one place that selects Keras for edgex: Keras 2 (``tf_keras``), as tensorflow-model-optimization needs.

TensorFlow is imported by name inside the functions below, never at module level: ``devices`` must import
on a Raspberry Pi that has only numpy and a runtime.

Everything in edgex, converters and the TensorFlow backend gets TensorFlow and Keras from here, so that
``TF_USE_LEGACY_KERAS=1`` is always set before TensorFlow is first imported and ``tf.keras`` is ``tf_keras``.
"""

from __future__ import annotations

import importlib
import os
import sys

from devices.errors import RuntimeMissing
from devices.logs import quiet_native_logs


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
