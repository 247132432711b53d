"""The on-device runtime layer of edgex: load a model into a runtime, run it, time it, evaluate it.

It imports with numpy and one runtime installed (TensorFlow only inside the TensorFlow backend), because this
package is what ships to a Raspberry Pi or a Coral board.

>>> import devices
>>> model = devices.load_model("model_int8.tflite", threads=4)         # doctest: +SKIP
>>> probabilities = model.predict(images)                              # doctest: +SKIP
"""

from __future__ import annotations

from devices.registry import RUNTIMES, available_devices, detect_runtime, load_model, parse_device

__all__ = ["RUNTIMES", "available_devices", "detect_runtime", "load_model", "parse_device"]
