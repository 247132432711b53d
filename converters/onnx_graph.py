"""An ONNX graph written straight from the layers of a Keras CNN, one weight copy at a time.

tf2onnx freezes the TensorFlow graph and optimizes it with many copies of every weight in memory; for the paper
sized regular-convolution twin (179 M parameters, 716 MB) it needs more than 24 GB. The layers edgex builds are
few and plain, so for large models they are written to ONNX directly: NHWC input transposed once to NCHW, then
Conv (grouped too) / BatchNormalization / Relu / MaxPool / Add / GlobalAveragePool / Gemm / Softmax.
"""

from __future__ import annotations

import math

import numpy as np

from devices.errors import EdgexError

_ACTIVATIONS = {"relu": "Relu", "elu": "Elu", "softmax": "Softmax", "sigmoid": "Sigmoid", "tanh": "Tanh"}


def has_grouped_convolutions(model) -> bool:
    """Grouped Conv2D layers (the spectrum's segments): tf2onnx cannot convert them (TensorFlow runs them as an
    XLA function call), the direct writer can."""
    return any(int(getattr(layer, "groups", 1) or 1) > 1 for layer in model.layers)


def unsupported_layers(model) -> list[str]:
    return [
        f"{layer.name} ({layer.__class__.__name__})"
        for layer in model.layers
        if layer.__class__.__name__ not in SUPPORTED
    ]


def _same_pads(size: int, k: int, stride: int, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's SAME padding: the extra pixel, when odd, goes after."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


class _Writer:
    def __init__(self, opset: int):
        import onnx
        from onnx import helper, numpy_helper

        self.onnx, self.helper, self.numpy_helper = onnx, helper, numpy_helper
        self.nodes, self.initializers, self.opset = [], [], opset

    def const(self, name: str, value: np.ndarray) -> str:
        self.initializers.append(self.numpy_helper.from_array(np.ascontiguousarray(value.astype(np.float32)), name))
        return name

    def node(self, op: str, inputs: list[str], output: str, name: str, **attrs) -> str:
        self.nodes.append(self.helper.make_node(op, inputs, [output], name=name, **attrs))
        return output


def _pads(layer, x_shape) -> list[int]:
    k = layer.kernel_size if hasattr(layer, "kernel_size") else layer.pool_size
    strides = layer.strides
    if layer.padding == "valid":
        return [0, 0, 0, 0]
    top, bottom = _same_pads(int(x_shape[1]), int(k[0]), int(strides[0]))
    left, right = _same_pads(int(x_shape[2]), int(k[1]), int(strides[1]))
    return [top, left, bottom, right]


def _conv(
    w: _Writer,
    name: str,
    x: str,
    weight: np.ndarray,
    bias,
    layer,
    x_shape,
    group: int = 1,
    strides=None,
    pads=None,
    kernel=None,
) -> str:
    inputs = [x, w.const(f"{name}/W", weight)]
    if bias is not None:
        inputs.append(w.const(f"{name}/B", bias))
    k = kernel or [int(d) for d in weight.shape[2:]]
    return w.node(
        "Conv",
        inputs,
        f"{name}:0",
        name,
        kernel_shape=k,
        strides=list(strides if strides is not None else layer.strides),
        pads=pads if pads is not None else _pads(layer, x_shape),
        dilations=list(getattr(layer, "dilation_rate", (1, 1))),
        group=group,
    )


def _activation(w: _Writer, name: str, x: str, activation: str) -> str:
    if activation in ("linear", None):
        return x
    if activation not in _ACTIVATIONS:
        raise EdgexError(f"layer {name!r}: activation {activation!r} has no direct ONNX writer")
    attrs = {"axis": -1} if activation == "softmax" else {}
    return w.node(_ACTIVATIONS[activation], [x], f"{name}/{activation}:0", f"{name}/{activation}", **attrs)


def _layer_conv2d(w: _Writer, layer, xs, x_shape) -> str:
    weights = layer.get_weights()
    kernel = weights[0].transpose(3, 2, 0, 1)  # (kh, kw, c_in / groups, c_out) -> (c_out, c_in / groups, kh, kw)
    bias = weights[1] if layer.use_bias else None
    groups = int(getattr(layer, "groups", 1) or 1)
    out = _conv(w, layer.name, xs[0], kernel, bias, layer, x_shape, group=groups)
    return _activation(w, layer.name, out, layer.get_config()["activation"])


def _depthwise_kernel(kernel: np.ndarray) -> np.ndarray:
    kh, kw, cin, mult = kernel.shape
    return kernel.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)


def _layer_depthwise(w: _Writer, layer, xs, x_shape) -> str:
    weights = layer.get_weights()
    kernel = weights[0]
    bias = weights[1] if layer.use_bias else None
    out = _conv(w, layer.name, xs[0], _depthwise_kernel(kernel), bias, layer, x_shape, group=kernel.shape[2])
    return _activation(w, layer.name, out, layer.get_config()["activation"])


def _layer_separable(w: _Writer, layer, xs, x_shape) -> str:
    weights = layer.get_weights()
    name = layer.name
    group = weights[0].shape[2]
    mid = _conv(w, f"{name}/depthwise", xs[0], _depthwise_kernel(weights[0]), None, layer, x_shape, group=group)
    pointwise = weights[1].transpose(3, 2, 0, 1)
    bias = weights[2] if layer.use_bias else None
    no_pads = [0, 0, 0, 0]
    out = _conv(
        w, f"{name}/pointwise", mid, pointwise, bias, layer, x_shape, strides=[1, 1], pads=no_pads, kernel=[1, 1]
    )
    return _activation(w, name, out, layer.get_config()["activation"])


def _layer_batch_norm(w: _Writer, layer, xs, x_shape) -> str:
    gamma, beta, mean, var = layer.get_weights()
    name = layer.name
    stats = [w.const(f"{name}/{k}", v) for k, v in (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))]
    return w.node("BatchNormalization", [xs[0], *stats], f"{name}:0", name, epsilon=float(layer.epsilon))


def _layer_activation(w: _Writer, layer, xs, x_shape) -> str:
    return _activation(w, layer.name, xs[0], layer.get_config()["activation"])


def _layer_relu(w: _Writer, layer, xs, x_shape) -> str:
    if layer.max_value is not None or float(layer.negative_slope) or float(layer.threshold):
        raise EdgexError(f"layer {layer.name!r}: only a plain ReLU has a direct ONNX writer")
    return w.node("Relu", xs, f"{layer.name}:0", layer.name)


def _layer_max_pool(w: _Writer, layer, xs, x_shape) -> str:
    attrs = {"kernel_shape": list(layer.pool_size), "strides": list(layer.strides), "pads": _pads(layer, x_shape)}
    return w.node("MaxPool", xs, f"{layer.name}:0", layer.name, **attrs)


def _layer_add(w: _Writer, layer, xs, x_shape) -> str:
    out = xs[0]
    for i, other in enumerate(xs[1:]):
        out = w.node("Add", [out, other], f"{layer.name}:{i}", f"{layer.name}/{i}")
    return out


def _layer_global_pool(w: _Writer, layer, xs, x_shape) -> str:
    pooled = w.node("GlobalAveragePool", xs, f"{layer.name}/pooled", f"{layer.name}/pool")
    return w.node("Flatten", [pooled], f"{layer.name}:0", layer.name, axis=1)


def _layer_dense(w: _Writer, layer, xs, x_shape) -> str:
    weights = layer.get_weights()
    inputs = [xs[0], w.const(f"{layer.name}/W", weights[0])]
    if layer.use_bias:
        inputs.append(w.const(f"{layer.name}/B", weights[1]))
    out = w.node("Gemm", inputs, f"{layer.name}:0", layer.name)
    return _activation(w, layer.name, out, layer.get_config()["activation"])


def _layer_identity(w: _Writer, layer, xs, x_shape) -> str:  # Dropout: identity at inference
    return xs[0]


_LAYER_WRITERS = {
    "Conv2D": _layer_conv2d,
    "DepthwiseConv2D": _layer_depthwise,
    "SeparableConv2D": _layer_separable,
    "BatchNormalization": _layer_batch_norm,
    "Activation": _layer_activation,
    "ReLU": _layer_relu,
    "MaxPooling2D": _layer_max_pool,
    "Add": _layer_add,
    "GlobalAveragePooling2D": _layer_global_pool,
    "Dense": _layer_dense,
    "Dropout": _layer_identity,
}


def _output_shape(layer) -> tuple:
    shape = layer.output_shape
    return tuple(shape[0] if isinstance(shape, list) else shape)  # an InputLayer reports a list of one shape


def _sources(layer) -> list[str]:
    inbound = layer._inbound_nodes[0].inbound_layers
    return [source.name for source in (inbound if isinstance(inbound, list) else [inbound])]


def keras_to_onnx(model, batch: int | None, opset: int = 17):
    """ModelProto of a Keras CNN made of SUPPORTED layers; input ``input`` (NHWC), output ``output``."""
    missing = unsupported_layers(model)
    if missing:
        raise EdgexError(f"the direct ONNX writer does not support: {', '.join(missing[:5])}")
    w = _Writer(opset)
    helper, onnx = w.helper, w.onnx
    names: dict[str, str] = {}
    shapes: dict[str, tuple] = {}
    batch_dim = batch if batch else "batch"
    graph_input = None
    for layer in model.layers:
        shapes[layer.name] = _output_shape(layer)
        if layer.__class__.__name__ == "InputLayer":
            dims = [batch_dim, *shapes[layer.name][1:]]
            graph_input = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, dims)
            names[layer.name] = w.node("Transpose", ["input"], "input_nchw", "input_to_nchw", perm=[0, 3, 1, 2])
            continue
        sources = _sources(layer)
        writer = _LAYER_WRITERS[layer.__class__.__name__]
        names[layer.name] = writer(w, layer, [names[s] for s in sources], shapes[sources[0]])
    last = model.layers[-1].name
    out_shape = shapes[last]
    if len(out_shape) == 4:  # a feature map: back to NHWC
        final = w.node("Transpose", [names[last]], "output", "output_to_nhwc", perm=[0, 2, 3, 1])
    else:
        final = w.node("Identity", [names[last]], "output", "output")
    graph_output = helper.make_tensor_value_info(final, onnx.TensorProto.FLOAT, [batch_dim, *out_shape[1:]])
    graph = helper.make_graph(w.nodes, model.name, [graph_input], [graph_output], initializer=w.initializers)
    return helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgex", producer_version="direct"
    )


SUPPORTED = ("InputLayer", *_LAYER_WRITERS)


def drop_layout_transposes(path) -> None:
    """Make a one-layer ONNX model (checked for parity already) take and give NCHW, as the layers inside a whole
    converted model do: tf2onnx wraps a Keras (NHWC) model in two Transposes, which would be timed with the layer."""
    import onnx

    model = onnx.load(str(path))
    graph = model.graph
    perms = {n.name: list(next((a.ints for a in n.attribute if a.name == "perm"), [])) for n in graph.node}
    first = [
        n
        for n in graph.node
        if n.op_type == "Transpose" and n.input[0] == graph.input[0].name and perms[n.name] == [0, 3, 1, 2]
    ]
    last = [n for n in graph.node if n.op_type == "Transpose" and perms[n.name] == [0, 2, 3, 1]]
    if len(first) != 1 or len(last) != 1:
        return  # not the two layout transposes of a one-layer model: leave the file as it is
    (first,), (last,) = first, last
    for node in graph.node:
        node.input[:] = [first.input[0] if name == first.output[0] else name for name in node.input]
        node.input[:] = [last.input[0] if name == last.output[0] else name for name in node.input]
    for output in graph.output:
        if output.name == last.output[0]:  # the transpose wrote the graph output: its input now does
            producer = next(n for n in graph.node if last.input[0] in n.output)
            producer.output[:] = [output.name if name == last.input[0] else name for name in producer.output]
    graph.node.remove(first)
    graph.node.remove(last)
    for value in (graph.input[0], graph.output[0]):
        dims = value.type.tensor_type.shape.dim
        nhwc = [onnx.TensorShapeProto.Dimension() for _ in range(4)]
        for new, old in zip(nhwc, dims):
            new.CopyFrom(old)
        order = (0, 3, 1, 2)
        for i, j in enumerate(order):  # NHWC -> NCHW
            dims[i].CopyFrom(nhwc[j])
    del graph.value_info[:]
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
