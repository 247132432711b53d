"""The spectrum at layer level (`edgex sweep --segments`): one-layer models with G channel segments, their costs,
where the runtime runs their operations (delegated or fallen back), and plots against G.

A segments layer is a k x k convolution on G groups (C_in -> C_in) then a 1x1 convolution (C_in -> C_out);
G = C_in is the separable convolution itself (Keras' SeparableConv2D, as the model builder makes it).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from devices.errors import EdgexError
from edgex.models.costs import ConvSpec
from edgex.models.segments import groups_for, parse_segments

PREFIX = "segments:"


def is_segments(variant: str) -> bool:
    return variant.startswith(PREFIX)


def segments_variant(segments: str) -> str:
    return PREFIX + parse_segments(segments)


def groups_of(variant: str, spec: ConvSpec) -> int:
    return groups_for(variant[len(PREFIX) :], spec.c_in)


def spectrum_shapes(shapes: list[tuple[str, ConvSpec, int]], segments: tuple[str, ...]) -> list:
    """The shapes the spectrum applies to (k x k separable convolutions, or any k > 1 shape of a file), checked
    against every segments value."""
    chosen = [(kind, spec, count) for kind, spec, count in shapes if spec.k > 1 and kind in ("separable", "file")]
    if not chosen:
        raise EdgexError("--segments needs k x k separable shapes (k > 1); the shapes given have none")
    for _, spec, _ in chosen:
        for value in segments:
            try:
                groups_for(value, spec.c_in)
            except EdgexError:
                raise EdgexError(
                    f"segments {value} does not divide the {spec.c_in} input channels of shape {spec.label}"
                ) from None
    return chosen


def segments_layer(spec: ConvSpec, variant: str, keras_module):
    """A Keras model of one segments layer (biased: batch norm folds into a bias)."""
    k = keras_module
    layers = k.layers
    groups = groups_of(variant, spec)
    inputs = k.Input((spec.h, spec.w, spec.c_in))
    common = {"strides": spec.stride, "padding": spec.padding}
    if groups == spec.c_in:
        return k.Model(inputs, layers.SeparableConv2D(spec.c_out, spec.k, **common)(inputs))
    x = layers.Conv2D(spec.c_in, spec.k, groups=groups, use_bias=False, **common)(inputs)
    return k.Model(inputs, layers.Conv2D(spec.c_out, 1)(x))


def segments_costs(spec: ConvSpec, variant: str, precision: str, io_bytes: int | None) -> tuple[int, int, int, int]:
    """(G, MACs, parameters, bytes moved) of a segments layer."""
    groups = groups_of(variant, spec)
    costs = spec.segment_macs(groups), spec.segment_params(groups), spec.segment_bytes(groups, precision, io_bytes)
    return (groups, *costs)


# -- where the runtime runs the ops ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class OpPlacement:
    """The convolution-like operations of a one-layer model and where they run."""

    runtime: str
    delegated: tuple[str, ...]  # LiteRT: ops taken by XNNPACK; ONNX Runtime: ops on an optimized (int8 or NCHWc) kernel
    fallback: tuple[str, ...]  # LiteRT: ops left to the built-in kernels; ONNX Runtime: generic float kernels

    @property
    def text(self) -> str:
        def counted(ops):
            return ", ".join(f"{op} x{n}" if n > 1 else op for op, n in Counter(ops).items()) or "-"

        where = "XNNPACK" if self.runtime == "litert" else "optimized"
        return f"{where}: {counted(self.delegated)}; fallback: {counted(self.fallback)}"


def op_placement(path: str | Path, runtime: str, precision: str) -> OpPlacement:
    if runtime == "litert":
        return _litert_placement(Path(path))
    if runtime == "onnxruntime":
        return _ort_placement(Path(path), precision)
    return OpPlacement(runtime, (), ())


def _litert_placement(path: Path) -> OpPlacement:
    """Ops under an XNNPACK DELEGATE node: walked back from the delegate's outputs to its inputs."""
    from devices.litert import LiteRTModel

    ops = LiteRTModel(path, threads=1).ops()
    delegates = [op for op in ops if op["op_name"] == "DELEGATE"]
    graph = [op for op in ops if op["op_name"] != "DELEGATE"]
    taken: set[int] = set()
    for delegate in delegates:
        boundary = {int(i) for i in delegate["inputs"]}
        wanted = {int(i) for i in delegate["outputs"]}
        for op in reversed(graph):
            if {int(i) for i in op["outputs"]} & wanted:
                taken.add(int(op["index"]))
                wanted |= {int(i) for i in op["inputs"] if int(i) >= 0} - boundary
    delegated = tuple(op["op_name"] for op in graph if int(op["index"]) in taken)
    fallback = tuple(op["op_name"] for op in graph if int(op["index"]) not in taken)
    return OpPlacement("litert", delegated, fallback)


def _ort_placement(path: Path, precision: str) -> OpPlacement:
    """Convolutions in ONNX Runtime's optimized graph: QLinearConv or NCHWc Conv are its fast kernels; a float
    Conv in an int8 model ran in float (its QDQ pair was not fused), one in a float model on the generic kernel."""
    import tempfile

    import onnx

    from devices.onnxruntime import OnnxRuntimeModel

    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        OnnxRuntimeModel(path, threads=1, optimized_model_path=str(optimized))
        nodes = onnx.load(str(optimized)).graph.node
    convs = [(n.op_type, n.domain) for n in nodes if "Conv" in n.op_type]
    fast = tuple(f"{'NCHWc ' if 'nchwc' in d else ''}{op}" for op, d in convs if op != "Conv" or "nchwc" in d)
    slow = tuple(f"{op} (float)" if precision == "int8" else op for op, d in convs if op == "Conv" and not d)
    return OpPlacement("onnxruntime", fast, slow)


# -- plots and tables ------------------------------------------------------------------------------------------------
def plot_spectrum(rows, value: str = "p50_ms"):
    """One panel per runtime and precision: ``value`` (latency or MACs) against G, one line per shape."""
    from edgex.plots import figure, legend_beside, plain_ticks

    rows = [r for r in rows if is_segments(r.variant)]
    panels = list(dict.fromkeys((r.runtime, r.precision) for r in rows)) if value == "p50_ms" else [None]
    fig, axes = figure(5.5 * len(panels), 4.5, ncols=len(panels), squeeze=False)
    fig.subplots_adjust(wspace=0.35)  # room for each panel's own latency ticks and label
    scale = 1e6 if value == "macs" else 1
    for ax, panel in zip(axes[0], panels):
        chosen = [r for r in rows if panel is None or (r.runtime, r.precision) == panel]
        for shape in dict.fromkeys(r.shape for r in chosen):
            points = sorted({(r.groups, getattr(r, value) / scale) for r in chosen if r.shape == shape})
            ax.plot(*zip(*points), marker="o", label=shape)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted({r.groups for r in chosen}))  # every G measured, as a plain number
        ax.set_xlabel("segments G (1 = regular conv + 1x1,\nC = depthwise separable)")
        ax.set_ylabel("latency p50 (ms)" if value == "p50_ms" else "multiply-accumulates (millions)")
        ax.set_title(f"Latency against G, {panel[0]} {panel[1]}" if panel else "MACs against G")
        ax.grid(True, which="both", alpha=0.3)
        plain_ticks(ax.xaxis, ax.yaxis)
    legend_beside(axes[0][-1])
    return fig


def spectrum_markdown(rows) -> list[str]:
    rows = [r for r in rows if is_segments(r.variant)]
    if not rows:
        return []
    lines = [
        "## The spectrum: G channel segments (k x k grouped conv + 1x1)",
        "",
        "| shape | segments | G | runtime | precision | MACs | bytes | p50 ms | G op/s | of roof | ops placed |",
        "|---|---|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r.shape} | {r.variant[len(PREFIX) :]} | {r.groups} | {r.runtime} | {r.precision} | "
        f"{r.macs / 1e6:.1f} M | {r.bytes_moved / 1e6:.2f} MB | {r.p50_ms:.3f}{'' if r.valid else ' *'} | "
        f"{r.gops:.1f} | {r.roof_fraction:.0%} | {r.placement} |"
        for r in rows
    ]
    fallen = sorted({(r.runtime, r.precision, r.variant) for r in rows if "fallback: -" not in r.placement})
    lines += [""]
    if fallen:
        lines += [
            "Operations the runtime did not run on its optimized kernels (see 'ops placed'): "
            + ", ".join(f"{runtime} {precision} {variant}" for runtime, precision, variant in fallen)
            + "."
        ]
    else:
        lines += ["Every operation ran on the runtime's optimized kernels (XNNPACK; ONNX Runtime QLinearConv/NCHWc)."]
    return lines


__all__ = [
    "OpPlacement",
    "is_segments",
    "op_placement",
    "plot_spectrum",
    "segments_costs",
    "segments_layer",
    "segments_variant",
    "spectrum_markdown",
    "spectrum_shapes",
]
