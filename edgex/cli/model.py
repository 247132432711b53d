"""``edgex model summary``: per-block shapes, parameters and MACs of an Xception configuration."""

from __future__ import annotations

import typer

from edgex.cli import options as o

app = typer.Typer(help="Inspect Xception configurations.", no_args_is_help=True)


@app.command("summary")
def summary(
    preset: o.Preset = "mini",
    conv: o.ConvOpt = o.Conv("separable"),
    input_size: o.InputSize = None,
    classes: o.Classes = None,
    width: o.Width = None,
    middle_blocks: o.MiddleBlocks = None,
    intermediate_activation: o.Intermediate = o.IntermediateActivation("none"),
    residual: o.Residual = True,
    segments: o.Segments = None,
    json_out: o.Json = False,
):
    """Per-block table of output shape, parameters and MACs, with totals and the cost against the regular twin."""
    from edgex.cli.render import console, human_count, print_json, table
    from edgex.models import preset_config
    from edgex.models.summary import summarize

    overrides = o.model_overrides(conv, input_size, classes, width, middle_blocks, intermediate_activation, residual)
    config = preset_config(preset, **overrides, segments=segments)
    result = summarize(config)
    data = result.to_dict()
    if json_out:
        print_json(data)
        return
    rows = [
        (b["block"], "x".join(str(d) for d in b["output_shape"][1:]), f"{b['params']:,}", human_count(b["macs"]))
        for b in data["blocks"]
        if b["params"] or b["macs"]
    ]
    rows.append(("total", "", f"{data['total_params']:,}", human_count(data["macs"])))
    title = (
        f"Xception '{preset}' ({config.label}, {config.input_size}x{config.input_size}, width {config.width:g}, "
        f"{config.middle_blocks} middle blocks, {config.classes} classes)"
    )
    console.print(table(title, ["block", "output", "params", "MACs"], rows))
    console.print(
        f"trainable parameters: {data['trainable_params']:,}   total: {data['total_params']:,}   "
        f"MACs: {data['macs']:,} ({human_count(data['macs'])})"
    )
    shares = ", ".join(f"{k} {v:.1%}" for k, v in data["mac_share_by_kind"].items() if v)
    console.print(f"MAC share: {shares}")
    if "segments" in data:
        groups = ", ".join(f"{c} -> {g}" for c, g in data["segments"]["groups_by_input_channels"].items())
        console.print(f"segments {data['segments']['value']}: input channels -> groups: {groups}")
    if "regular_twin" in data:
        twin = data["regular_twin"]
        console.print(
            f"regular-conv twin: {human_count(twin['macs'])} MACs, {twin['params']:,} params; "
            f"separable costs {twin['mac_ratio']:.3f} of it ({1 / twin['mac_ratio']:.1f}x fewer MACs)"
        )
