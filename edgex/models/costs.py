"""Parameters, multiply-accumulates and bytes moved, per layer: the arithmetic every summary and benchmark uses.

MACs count the multiply-accumulates of convolution and dense layers (the convention behind the 8.36 G
of Xception at 299x299); batch normalization, activations, pooling and additions are not counted.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from devices.errors import EdgexError

VARIANTS = ("regular", "separable", "depthwise", "pointwise")
# Bytes per element of (weights, activations) as the runtimes store them at each precision.
PRECISION_BYTES = {"fp32": (4, 4), "fp16": (2, 4), "int8": (1, 1)}


@dataclass(frozen=True)
class ConvSpec:
    """One convolution: input H x W x c_in, c_out filters of k x k, stride, padding."""

    h: int
    w: int
    c_in: int
    c_out: int
    k: int = 3
    stride: int = 1
    padding: str = "same"

    def __post_init__(self):
        for name in ("h", "w", "c_in", "c_out", "k", "stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise EdgexError(f"convolution {name} must be a positive integer, got {value!r}")
        if self.padding not in ("same", "valid"):
            raise EdgexError(f"padding must be 'same' or 'valid', got {self.padding!r}")
        if self.padding == "valid" and (self.h < self.k or self.w < self.k):
            raise EdgexError(f"a {self.k}x{self.k} valid convolution needs an input of at least that size")

    @property
    def out_h(self) -> int:
        return _out(self.h, self.k, self.stride, self.padding)

    @property
    def out_w(self) -> int:
        return _out(self.w, self.k, self.stride, self.padding)

    @property
    def label(self) -> str:
        s = f"/{self.stride}" if self.stride > 1 else ""
        return f"{self.h}x{self.w}x{self.c_in}->{self.c_out} k{self.k}{s}"

    def macs(self, variant: str) -> int:
        hw = self.out_h * self.out_w
        k2 = self.k * self.k
        return {
            "regular": hw * k2 * self.c_in * self.c_out,
            "separable": hw * (k2 * self.c_in + self.c_in * self.c_out),
            "depthwise": hw * k2 * self.c_in,
            "pointwise": hw * self.c_in * self.c_out,
        }[_variant(variant)]

    def params(self, variant: str) -> int:
        k2 = self.k * self.k
        return {
            "regular": k2 * self.c_in * self.c_out,
            "separable": k2 * self.c_in + self.c_in * self.c_out,
            "depthwise": k2 * self.c_in,
            "pointwise": self.c_in * self.c_out,
        }[_variant(variant)]

    def segment_macs(self, groups: int) -> int:
        """The spectrum (PAPER.md): a k x k conv on ``groups`` channel segments (c_in -> c_in), then a 1x1
        (c_in -> c_out): H * W * (k^2 * c_in * c_in / G + c_in * c_out). G = c_in is the separable convolution."""
        return self.out_h * self.out_w * self._spatial_per_pixel(groups) + self.macs("pointwise")

    def segment_params(self, groups: int) -> int:
        return self._spatial_per_pixel(groups) + self.params("pointwise")

    def segment_bytes(self, groups: int, precision: str = "fp32", io_bytes: int | None = None) -> int:
        """Bytes moved by the two operations of a segments layer (as ``bytes_moved`` counts a separable one)."""
        extra_weights = self.segment_params(groups) - self.params("separable")
        return self.bytes_moved("separable", precision, io_bytes) + extra_weights * _bytes_of(precision)[0]

    def _spatial_per_pixel(self, groups: int) -> int:
        if not isinstance(groups, int) or groups < 1 or self.c_in % groups:
            raise EdgexError(f"groups must be a positive divisor of {self.c_in} input channels, got {groups!r}")
        return self.k * self.k * self.c_in * (self.c_in // groups)

    def output_channels(self, variant: str) -> int:
        return self.c_in if _variant(variant) == "depthwise" else self.c_out

    def bytes_moved(self, variant: str, precision: str = "fp32", io_bytes: int | None = None) -> int:
        """Weights + input + output activations at ``precision``; a separable layer also writes and reads its
        depthwise output, since the runtimes execute it as two operations. ``io_bytes``: bytes per element of
        the input and output when the model takes and gives another type (float around an int8 layer)."""
        weight_bytes, act_bytes = _bytes_of(precision)
        variant = _variant(variant)
        # A pointwise layer on its own sees the already-strided input (the depthwise part does the striding).
        in_elems = self.h * self.w * self.c_in
        out_elems = self.out_h * self.out_w * self.output_channels(variant)
        if variant == "pointwise":
            in_elems = self.out_h * self.out_w * self.c_in
        middle = 2 * self.out_h * self.out_w * self.c_in if variant == "separable" else 0
        edge_bytes = act_bytes if io_bytes is None else io_bytes
        return self.params(variant) * weight_bytes + (in_elems + out_elems) * edge_bytes + middle * act_bytes

    def arithmetic_intensity(self, variant: str, precision: str = "fp32", io_bytes: int | None = None) -> float:
        """Operations (2 per MAC) per byte moved."""
        return 2 * self.macs(variant) / self.bytes_moved(variant, precision, io_bytes)

    def theoretical_ratio(self) -> float:
        """MACs of separable / regular: 1/c_out + 1/k^2."""
        return 1 / self.c_out + 1 / (self.k * self.k)


def _out(size: int, k: int, stride: int, padding: str) -> int:
    return math.ceil(size / stride) if padding == "same" else (size - k) // stride + 1


def _bytes_of(precision: str) -> tuple[int, int]:
    if precision not in PRECISION_BYTES:
        raise EdgexError(f"unknown precision {precision!r}; choose one of: {', '.join(PRECISION_BYTES)}")
    return PRECISION_BYTES[precision]


def _variant(variant: str) -> str:
    if variant not in VARIANTS:
        raise EdgexError(f"unknown variant {variant!r}; choose one of: {', '.join(VARIANTS)}")
    return variant


@dataclass(frozen=True)
class LayerCost:
    name: str
    block: str  # "block4", "predictions", ...
    kind: str  # regular | grouped | separable | depthwise | pointwise | shortcut | dense | other
    output_shape: tuple
    params: int  # every parameter of the layer (BN moving statistics included)
    macs: int
    spec: ConvSpec | None = None  # for convolutions


@dataclass(frozen=True)
class ModelCost:
    layers: tuple[LayerCost, ...]
    trainable_params: int
    total_params: int

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    def macs_by_kind(self) -> dict[str, int]:
        """MACs per operation type, with separable convolutions split into their depthwise and pointwise parts."""
        kinds = {"pointwise": 0, "regular": 0, "grouped": 0, "shortcut": 0, "depthwise": 0, "dense": 0}
        for layer in self.layers:
            if layer.kind == "separable":
                kinds["depthwise"] += layer.spec.macs("depthwise")
                kinds["pointwise"] += layer.spec.macs("pointwise")
            elif layer.kind in kinds:
                kinds[layer.kind] += layer.macs
        return kinds

    def regular_twin_macs(self) -> int:
        """MACs of the same network with every separable convolution replaced by a regular one (analytic)."""
        return sum(layer.spec.macs("regular") if layer.kind == "separable" else layer.macs for layer in self.layers)

    def regular_twin_params(self) -> int:
        return self.total_params + sum(
            layer.spec.params("regular") - layer.spec.params("separable")
            for layer in self.layers
            if layer.kind == "separable"
        )

    def spectrum_macs(self, segments: str) -> int:
        """MACs of the same network with every separable convolution on ``segments`` (analytic, see PAPER.md)."""
        return self._spectrum(segments, "macs", ConvSpec.segment_macs)

    def spectrum_params(self, segments: str) -> int:
        return self._spectrum(segments, "params", ConvSpec.segment_params)

    def _spectrum(self, segments: str, counted: str, formula) -> int:
        from edgex.models.segments import groups_for

        total = 0
        for layer in self.layers:
            total += getattr(layer, counted)
            if layer.kind == "separable":
                separable = getattr(layer.spec, counted)("separable")
                total += formula(layer.spec, groups_for(segments, layer.spec.c_in)) - separable
        return total

    def conv_specs(self) -> list[tuple[str, str, ConvSpec]]:
        """(layer name, kind, spec) of every convolution, in model order."""
        return [(layer.name, layer.kind, layer.spec) for layer in self.layers if layer.spec is not None]

    def blocks(self) -> list[dict]:
        """Per-block rows: block, output shape of its last layer, parameters and MACs."""
        rows: dict[str, dict] = {}
        for layer in self.layers:
            row = rows.setdefault(layer.block, {"block": layer.block, "output_shape": None, "params": 0, "macs": 0})
            row["output_shape"] = layer.output_shape
            row["params"] += layer.params
            row["macs"] += layer.macs
        return list(rows.values())

    def to_dict(self) -> dict:
        return {
            "trainable_params": self.trainable_params,
            "total_params": self.total_params,
            "macs": self.macs,
            "macs_by_kind": self.macs_by_kind(),
            "layers": [asdict(layer) for layer in self.layers],
        }


def model_cost(model) -> ModelCost:
    """Count parameters and MACs of every layer of a Keras model (nested models are walked)."""
    rows = [_layer_cost(layer) for layer in _flat_layers(model)]
    trainable = sum(int(w.shape.num_elements()) for w in model.trainable_weights)
    return ModelCost(tuple(rows), trainable, int(model.count_params()))


def _flat_layers(model):
    for layer in model.layers:
        if layer.__class__.__name__ == "InputLayer":
            continue
        if hasattr(layer, "layers") and layer.__class__.__name__ in ("Functional", "Sequential", "Model"):
            yield from _flat_layers(layer)
        else:
            yield layer


def _block_of(name: str) -> str:
    head = name.split("_")[0]
    return head if head.startswith("block") else name


def _layer_cost(layer) -> LayerCost:
    kind_of = layer.__class__.__name__
    params = int(layer.count_params())
    out_shape = _shape(layer.output_shape)
    block = _block_of(layer.name)
    if kind_of in ("Conv2D", "SeparableConv2D", "DepthwiseConv2D"):
        in_shape = _shape(layer.input_shape)
        k = int(layer.kernel_size[0])
        stride = int(layer.strides[0])
        c_in = int(in_shape[-1])
        c_out = int(out_shape[-1])
        spec = ConvSpec(
            h=int(in_shape[1]), w=int(in_shape[2]), c_in=c_in, c_out=c_out, k=k, stride=stride, padding=layer.padding
        )
        if kind_of == "SeparableConv2D":
            kind = "separable"
        elif kind_of == "DepthwiseConv2D":
            kind = "depthwise"
            spec = replace(spec, c_out=c_in * int(layer.depth_multiplier))
        elif k == 1:
            kind = "shortcut" if "shortcut" in layer.name else "pointwise"
        groups = int(getattr(layer, "groups", 1) or 1)
        if kind_of == "Conv2D" and k > 1:
            kind = "grouped" if groups > 1 else "regular"
        if kind == "depthwise":
            macs = spec.out_h * spec.out_w * k * k * spec.c_out
        elif kind == "separable":
            macs = spec.macs("separable")
        else:
            macs = spec.macs("regular") // groups
        return LayerCost(
            name=layer.name, block=block, kind=kind, output_shape=out_shape, params=params, macs=macs, spec=spec
        )
    if kind_of == "Dense":
        c_in = int(_shape(layer.input_shape)[-1])
        units = int(layer.units)
        positions = math.prod(int(d) for d in out_shape[1:-1]) if len(out_shape) > 2 else 1
        macs = positions * c_in * units
        return LayerCost(name=layer.name, block=block, kind="dense", output_shape=out_shape, params=params, macs=macs)
    return LayerCost(name=layer.name, block=block, kind="other", output_shape=out_shape, params=params, macs=0)


def _shape(shape) -> tuple:
    if isinstance(shape, list):  # layers with several inputs report a list; they have no MACs anyway
        shape = shape[0]
    return tuple(None if d is None else int(d) for d in shape)


__all__ = ["PRECISION_BYTES", "VARIANTS", "ConvSpec", "LayerCost", "ModelCost", "model_cost"]
