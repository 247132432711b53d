"""Checking an ONNX file's external-data references without the onnx package (a minimal protobuf walk).

An ONNX model may keep tensors in side files named by a ``location`` string. A crafted model can point that at
``/etc/shadow`` or ``../../secret``; we refuse absolute locations, ``..`` and anything that resolves outside
the model's folder (a symlink included) before any runtime opens the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from devices.errors import ModelFileError

# Field numbers from onnx.proto.
_MODEL_GRAPH, _MODEL_FUNCTIONS = 7, 25
_GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER = 1, 5, 15
_FUNCTION_NODE = 7
_NODE_ATTRIBUTE = 5
_ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES = 5, 6, 10, 11, 22, 23
_SPARSE_VALUES, _SPARSE_INDICES = 1, 2
_TENSOR_NAME, _TENSOR_EXTERNAL_DATA = 8, 13
_ENTRY_KEY, _ENTRY_VALUE = 1, 2


class _Malformed(Exception):
    pass


def _varint(buf, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(buf):
    """Yield (field number, wire type, value) of a protobuf message; length-delimited values are memoryviews."""
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        else:
            raise _Malformed(f"unsupported wire type {wire}")
        if pos > end:
            raise _Malformed("truncated field")
        yield number, wire, value


def _sub(buf, *numbers):
    for number, wire, value in _fields(buf):
        if wire == 2 and number in numbers:
            yield number, value


def _tensor_locations(tensor) -> list[tuple[str, str]]:
    name, found = "", []
    for number, wire, value in _fields(tensor):
        if number == _TENSOR_NAME and wire == 2:
            name = bytes(value).decode("utf-8", "replace")
        elif number == _TENSOR_EXTERNAL_DATA and wire == 2:
            entry = {n: bytes(v).decode("utf-8", "replace") for n, v in _sub(value, _ENTRY_KEY, _ENTRY_VALUE)}
            if entry.get(_ENTRY_KEY) == "location":
                found.append(entry.get(_ENTRY_VALUE, ""))
    return [(name, location) for location in found]


def _graph_locations(graph) -> list[tuple[str, str]]:
    found = []
    for number, value in _sub(graph, _GRAPH_NODE, _GRAPH_INITIALIZER, _GRAPH_SPARSE_INITIALIZER):
        if number == _GRAPH_INITIALIZER:
            found += _tensor_locations(value)
        elif number == _GRAPH_SPARSE_INITIALIZER:
            found += [loc for _, t in _sub(value, _SPARSE_VALUES, _SPARSE_INDICES) for loc in _tensor_locations(t)]
        else:
            found += _node_locations(value)
    return found


def _node_locations(node) -> list[tuple[str, str]]:
    found = []
    for _, attribute in _sub(node, _NODE_ATTRIBUTE):
        for number, value in _sub(
            attribute, _ATTR_T, _ATTR_G, _ATTR_TENSORS, _ATTR_GRAPHS, _ATTR_SPARSE, _ATTR_SPARSES
        ):
            if number in (_ATTR_T, _ATTR_TENSORS):
                found += _tensor_locations(value)
            elif number in (_ATTR_G, _ATTR_GRAPHS):
                found += _graph_locations(value)
            else:
                found += [loc for _, t in _sub(value, _SPARSE_VALUES, _SPARSE_INDICES) for loc in _tensor_locations(t)]
    return found


def external_locations(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(tensor name, location) of every external-data reference in an ONNX file."""
    data = Path(path).read_bytes()
    if not data:
        raise ModelFileError(f"{path} is empty, not an ONNX model")
    buf = memoryview(data)  # slices of a memoryview share the bytes: tensor data is never copied
    try:
        found = []
        for number, value in _sub(buf, _MODEL_GRAPH, _MODEL_FUNCTIONS):
            if number == _MODEL_GRAPH:
                found += _graph_locations(value)
            else:
                found += [loc for _, node in _sub(value, _FUNCTION_NODE) for loc in _node_locations(node)]
        return found
    except (_Malformed, IndexError) as exc:
        raise ModelFileError(f"{path} is not a valid ONNX model ({exc})") from None


def check_external_data(path: str | os.PathLike) -> int:
    """Refuse external-data locations that are absolute, contain ``..`` or resolve outside the model's folder;
    the number of tensors stored outside the file."""
    path = Path(path)
    root = Path(os.path.realpath(path.parent))
    locations = list(external_locations(path))
    for name, location in locations:
        parts = location.replace("\\", "/").split("/")
        if (
            not location
            or os.path.isabs(location)
            or location.startswith(("/", "\\"))
            or (len(location) > 1 and location[1] == ":")
        ):
            raise ModelFileError(f"{path}: tensor {name!r} has an absolute external-data location {location!r}")
        if ".." in parts:
            raise ModelFileError(f"{path}: tensor {name!r} has an external-data location with '..': {location!r}")
        resolved = Path(os.path.realpath(root / location))
        if os.path.commonpath([root, resolved]) != str(root):
            raise ModelFileError(
                f"{path}: tensor {name!r} external data {location!r} resolves outside the model's folder ({resolved})"
            )
    return len(locations)
