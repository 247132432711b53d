"""An ONNX graph written straight from the layers of a Keras CNN, one weight copy at a time.

tf2onnx freezes the TensorFlow graph and optimizes it with many copies of every weight in memory; for the paper
sized regular-convolution twin (179 M parameters, 716 MB) it needs more than 24 GB. The layers edgex builds are
few and plain, so for large models they are written to ONNX directly: NHWC input transposed once to NCHW, then
Conv / BatchNormalization / Relu / MaxPool / Add / GlobalAveragePool / Gemm / Softmax.
"""

from __future__ import annotations

import math

import numpy as np

from devices.errors import EdgexError

SUPPORTED = (
    "InputLayer",
    "Conv2D",
    "DepthwiseConv2D",
    "SeparableConv2D",
    "BatchNormalization",
    "Activation",
    "ReLU",
    "MaxPooling2D",
    "Add",
    "GlobalAveragePooling2D",
    "Dense",
    "Dropout",
)
_ACTIVATIONS = {"relu": "Relu", "elu": "Elu", "softmax": "Softmax", "sigmoid": "Sigmoid", "tanh": "Tanh"}


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
        kind = layer.__class__.__name__
        inbound = layer._inbound_nodes[0].inbound_layers
        sources = (
            [layer.name for layer in (inbound if isinstance(inbound, list) else [inbound])]
            if kind != "InputLayer"
            else []
        )
        xs = [names[s] for s in sources]
        x_shape = shapes[sources[0]] if sources else None
        name = layer.name
        if kind == "InputLayer":
            shape = tuple(layer.output_shape[0] if isinstance(layer.output_shape, list) else layer.output_shape)
            graph_input = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [batch_dim, *shape[1:]])
            out = w.node("Transpose", ["input"], "input_nchw", "input_to_nchw", perm=[0, 3, 1, 2])
        elif kind == "Conv2D":
            weights = layer.get_weights()
            kernel = weights[0].transpose(3, 2, 0, 1)
            out = _conv(
                w,
                name,
                xs[0],
                kernel,
                weights[1] if layer.use_bias else None,
                layer,
                x_shape,
                group=int(getattr(layer, "groups", 1) or 1),
            )
            out = _activation(w, name, out, layer.get_config()["activation"])
        elif kind == "DepthwiseConv2D":
            weights = layer.get_weights()
            kh, kw, cin, mult = weights[0].shape
            kernel = weights[0].transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
            out = _conv(w, name, xs[0], kernel, weights[1] if layer.use_bias else None, layer, x_shape, group=cin)
            out = _activation(w, name, out, layer.get_config()["activation"])
        elif kind == "SeparableConv2D":
            weights = layer.get_weights()
            kh, kw, cin, mult = weights[0].shape
            depthwise = weights[0].transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
            mid = _conv(w, f"{name}/depthwise", xs[0], depthwise, None, layer, x_shape, group=cin)
            pointwise = weights[1].transpose(3, 2, 0, 1)
            out = _conv(
                w,
                f"{name}/pointwise",
                mid,
                pointwise,
                weights[2] if layer.use_bias else None,
                layer,
                x_shape,
                strides=[1, 1],
                pads=[0, 0, 0, 0],
                kernel=[1, 1],
            )
            out = _activation(w, name, out, layer.get_config()["activation"])
        elif kind == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            out = w.node(
                "BatchNormalization",
                [
                    xs[0],
                    w.const(f"{name}/gamma", gamma),
                    w.const(f"{name}/beta", beta),
                    w.const(f"{name}/mean", mean),
                    w.const(f"{name}/var", var),
                ],
                f"{name}:0",
                name,
                epsilon=float(layer.epsilon),
            )
        elif kind == "Activation":
            out = _activation(w, name, xs[0], layer.get_config()["activation"])
        elif kind == "ReLU":
            if layer.max_value is not None or float(layer.negative_slope) or float(layer.threshold):
                raise EdgexError(f"layer {name!r}: only a plain ReLU has a direct ONNX writer")
            out = w.node("Relu", xs, f"{name}:0", name)
        elif kind == "MaxPooling2D":
            out = w.node(
                "MaxPool",
                xs,
                f"{name}:0",
                name,
                kernel_shape=list(layer.pool_size),
                strides=list(layer.strides),
                pads=_pads(layer, x_shape),
            )
        elif kind == "Add":
            out = xs[0]
            for i, other in enumerate(xs[1:]):
                out = w.node("Add", [out, other], f"{name}:{i}", f"{name}/{i}")
        elif kind == "GlobalAveragePooling2D":
            pooled = w.node("GlobalAveragePool", xs, f"{name}/pooled", f"{name}/pool")
            out = w.node("Flatten", [pooled], f"{name}:0", name, axis=1)
        elif kind == "Dense":
            weights = layer.get_weights()
            inputs = [xs[0], w.const(f"{name}/W", weights[0])]
            if layer.use_bias:
                inputs.append(w.const(f"{name}/B", weights[1]))
            out = w.node("Gemm", inputs, f"{name}:0", name)
            out = _activation(w, name, out, layer.get_config()["activation"])
        else:  # Dropout: identity at inference
            out = xs[0]
        names[name] = out
        shapes[name] = tuple(layer.output_shape)
    last = model.layers[-1].name
    final = names[last]
    out_shape = shapes[last]
    if len(out_shape) == 4:  # a feature map: back to NHWC
        final = w.node("Transpose", [final], "output", "output_to_nhwc", perm=[0, 2, 3, 1])
    else:
        final = w.node("Identity", [final], "output", "output")
    graph_output = helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [batch_dim, *out_shape[1:]])
    graph = helper.make_graph(w.nodes, model.name, [graph_input], [graph_output], initializer=w.initializers)
    proto = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgex", producer_version="direct"
    )
    return proto
