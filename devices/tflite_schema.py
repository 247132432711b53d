"""The few fields of a .tflite flatbuffer that decide which runtime can load it, read without the flatbuffers package.

The converter records ``min_runtime_version`` in the model's metadata: the oldest TensorFlow Lite runtime with every
operator version the model uses. tflite-runtime's version is that runtime's version, so an old one can be refused
before it fails on an unknown op version (or before a user wonders why it does).
"""

from __future__ import annotations

import struct

# Field indices of the TFLite schema (tensorflow/compiler/mlir/lite/schema/schema.fbs).
_MODEL_BUFFERS = 4
_MODEL_METADATA = 6
_METADATA_NAME = 0
_METADATA_BUFFER = 1
_BUFFER_DATA = 0


def _field(data: bytes, table: int, index: int) -> int | None:
    """Position of a table's field, or None when it is absent."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    entry = 4 + 2 * index
    if entry >= struct.unpack_from("<H", data, vtable)[0]:
        return None
    offset = struct.unpack_from("<H", data, vtable + entry)[0]
    return table + offset if offset else None


def _deref(data: bytes, position: int) -> int:
    return position + struct.unpack_from("<I", data, position)[0]


def _vector(data: bytes, table: int, index: int) -> tuple[int, int]:
    """(start, length) of a vector field; (0, 0) when absent."""
    position = _field(data, table, index)
    if position is None:
        return 0, 0
    start = _deref(data, position)
    return start + 4, struct.unpack_from("<I", data, start)[0]


def metadata(data: bytes) -> dict[str, bytes]:
    """The model's metadata entries (name -> bytes of the buffer it points to)."""
    model = _deref(data, 0)
    buffers_start, buffers = _vector(data, model, _MODEL_BUFFERS)
    start, count = _vector(data, model, _MODEL_METADATA)
    found = {}
    for i in range(count):
        entry = _deref(data, start + 4 * i)
        name_start, name_length = _vector(data, entry, _METADATA_NAME)
        name = data[name_start : name_length + name_start].decode("utf-8", "replace")
        position = _field(data, entry, _METADATA_BUFFER)
        index = struct.unpack_from("<I", data, position)[0] if position is not None else 0
        if index < buffers:
            buffer = _deref(data, buffers_start + 4 * index)
            value_start, value_length = _vector(data, buffer, _BUFFER_DATA)
            found[name] = bytes(data[value_start : value_start + value_length])
    return found


def min_runtime_version(data: bytes) -> str:
    """The oldest TFLite runtime that has every op version the model uses ("" when the converter did not say)."""
    try:
        value = metadata(data).get("min_runtime_version", b"")
    except (struct.error, IndexError):
        return ""
    return value.split(b"\0")[0].decode("ascii", "replace").strip()


def version_tuple(version: str) -> tuple[int, ...]:
    """'2.14.0' -> (2, 14, 0); the leading numeric part of each dotted component ('2.1.0rc1' -> (2, 1, 0))."""
    parts = []
    for piece in version.split("."):
        digits = ""
        for char in piece:
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits or 0))
    return tuple(parts)
