"""Where training runs: the tf.distribute strategy, and which worker of a multi-worker cluster this process is."""

from __future__ import annotations

import json
import os

from devices.errors import EdgexError


def strategy_named(name: str):
    from devices.tfkeras import tensorflow

    tf = tensorflow()
    if name == "multi-worker":
        if not os.environ.get("TF_CONFIG"):
            raise EdgexError(
                "--strategy multi-worker needs TF_CONFIG (cluster and task) in the environment; "
                "see the README section on multi-worker training"
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_physical_devices("GPU")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "one-device":
        return tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()


def tf_config() -> dict:
    text = os.environ.get("TF_CONFIG") or "{}"
    try:
        config = json.loads(text)
    except ValueError as exc:
        raise EdgexError(
            f"TF_CONFIG is not valid JSON ({exc}): {text[:80]!r}; expected "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}'
        ) from None
    if not isinstance(config, dict) or not isinstance(config.get("task", {}), dict):
        raise EdgexError(f"TF_CONFIG must be an object with 'cluster' and 'task' objects, got {text[:80]!r}")
    return config


def is_chief() -> tuple[bool, int]:
    """(whether this process writes the outputs, its task index)."""
    config = tf_config()
    task = config.get("task", {})
    if not task:
        return True, 0
    chief = task.get("type") == "chief" or (
        task.get("type") == "worker" and task.get("index", 0) == 0 and "chief" not in config.get("cluster", {})
    )
    index = task.get("index", 0)
    if not isinstance(index, int) or index < 0:
        raise EdgexError(f"TF_CONFIG task index must be a whole number >= 0, got {index!r}")
    return chief, index
