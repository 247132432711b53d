"""The run report: report.html (self-contained apart from its PNG plots) and report.md."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

from devices import sysinfo
from devices.files import write_text_atomic

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;
line-height:1.45;padding:0 1rem}
h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}th,td{border:1px solid #ccc;padding:.25rem .5rem}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{background:#eef8ee}.plots{display:flex;flex-wrap:wrap;gap:1rem}
.plots figure{margin:0;flex:1 1 480px}.plots img{max-width:100%;border:1px solid #eee}
figcaption{font-size:.85rem;color:#555}code,pre{background:#f6f6f6;padding:.1rem .3rem;border-radius:3px}
pre{padding:.6rem;overflow-x:auto}.muted{color:#666;font-size:.9rem}
"""


def _fmt(value, kind: str = "") -> str:
    if value is None:
        return "-"
    if kind == "pct":
        return f"{100 * value:.2f}%"
    if kind == "points":
        return f"{value:+.2f}"
    if kind == "ms":
        return f"{value:.3f}"
    if kind == "bytes":
        return f"{value / 2**20:.2f} MiB" if value >= 2**20 else f"{value / 1024:.1f} KiB"
    if kind == "x":
        return f"{value:.2f}x"
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


COLUMNS = [
    ("variant", "variant", ""),
    ("format", "format", ""),
    ("precision", "precision", ""),
    ("sparsity", "sparsity", ""),
    ("size_bytes", "size", "bytes"),
    ("top1", "top-1", "pct"),
    ("drop_points", "drop vs float (points)", "points"),
    ("p50_ms", "p50 ms", "ms"),
    ("p90_ms", "p90 ms", "ms"),
    ("images_per_s", "img/s", ""),
    ("speedup_vs_keras", "speedup vs fp32 Keras", "x"),
]


def _plots(out: Path, rows: list[dict], compare: dict | None) -> dict[str, tuple[str, str]]:
    """Make (or collect) the report's PNGs under out/plots: name -> (relative path, caption)."""
    from edgex import plots

    folder = out / "plots"
    folder.mkdir(exist_ok=True)
    made: dict[str, tuple[str, str]] = {}
    timed = [r for r in rows if r["p50_ms"] is not None]
    if timed:
        points = [{"label": r["variant"], "ms": r["p50_ms"], "top1": 100 * r["top1"]} for r in timed]
        plots.scatter(
            points,
            "ms",
            "top1",
            folder / "accuracy_vs_latency.png",
            xlabel="latency p50 (ms)",
            ylabel="top-1 accuracy (%)",
            title="Accuracy against latency (Pareto front dashed)",
            logx=True,
            front=True,
        )
        made["accuracy_vs_latency"] = ("plots/accuracy_vs_latency.png", "Accuracy against latency on this device.")
    if rows:
        points = [{"label": r["variant"], "mib": r["size_bytes"] / 2**20, "top1": 100 * r["top1"]} for r in rows]
        plots.scatter(
            points,
            "mib",
            "top1",
            folder / "size_vs_accuracy.png",
            xlabel="file size (MiB)",
            ylabel="top-1 accuracy (%)",
            title="Accuracy against model size",
            logx=True,
            front=True,
        )
        made["size_vs_accuracy"] = ("plots/size_vs_accuracy.png", "Accuracy against file size.")
    if compare and compare.get("ab"):
        plots.speedups(
            [
                {
                    "shape": f"{a['runtime']} {a['precision']}",
                    "runtime": a["runtime"],
                    "precision": a["precision"],
                    "measured_speedup": a["measured_speedup"],
                    "theoretical_speedup": a["theoretical_speedup"],
                }
                for a in compare["ab"]
            ],
            folder / "model_ab.png",
        )
        made["model_ab"] = (
            "plots/model_ab.png",
            "Model level: Xception's speedup over its regular-convolution twin, measured against the MAC ratio.",
        )
    for name, source, caption in (
        ("time_breakdown", out / "compare" / "time_breakdown.png", "Per-op-type time share next to MAC share."),
        ("sweep_speedup", out / "sweep" / "speedup.png", "Layer level: separable vs regular speedup per shape."),
        ("roofline", out / "sweep" / "roofline.png", "Every swept layer on the measured roofline."),
        ("sweep_latency", out / "sweep" / "latency_vs_macs.png", "One-layer latency against MACs."),
    ):
        if source.exists():
            shutil.copyfile(source, folder / f"{name}.png")
            made[name] = (f"plots/{name}.png", caption)
    return made


def _load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def write_report(out: Path, recipe: dict) -> list[Path]:
    from edgex.pipeline import summary_rows

    rows = summary_rows(out)
    compare = _load(out / "compare" / "compare.json")
    sweep = _load(out / "sweep.json")
    deploy = _load(out / "deploy.json")
    data = _load(out / "data.json") or {}
    max_drop = recipe["report"]["max_drop"]
    gate = [r for r in rows if r["drop_points"] is not None and r["drop_points"] <= max_drop and r["format"] != "keras"]
    smallest = min(gate, key=lambda r: r["size_bytes"])["variant"] if gate else None
    timed = [r for r in gate if r["p50_ms"] is not None]
    fastest = min(timed, key=lambda r: r["p50_ms"])["variant"] if timed else None
    plots = _plots(out, rows, compare)
    env = sysinfo.environment()
    versions = sysinfo.versions()
    stages = {p.stem: json.loads(p.read_text()) for p in sorted((out / "stages").glob("*.json"))}
    context = dict(
        rows=rows,
        compare=compare,
        sweep=sweep,
        deploy=deploy,
        data=data,
        max_drop=max_drop,
        smallest=smallest,
        fastest=fastest,
        plots=plots,
        env=env,
        versions=versions,
        recipe=recipe,
        stages=stages,
        out=out,
    )
    html_path, md_path = out / "report.html", out / "report.md"
    write_text_atomic(html_path, _html(**context))
    write_text_atomic(md_path, _markdown(**context))
    return [html_path, md_path, *(out / p for p, _ in plots.values())]


def _commands(rows, recipe, out) -> list[tuple[str, str]]:
    from edgex.pipeline import twin_command

    commands = [(r["variant"], r["command"]) for r in rows]
    if recipe["twin"]["enabled"]:
        commands.append(("regular-convolution twin", twin_command(out, recipe)))
    return commands


def _html(
    rows, compare, sweep, deploy, data, max_drop, smallest, fastest, plots, env, versions, recipe, stages, out
) -> str:
    e = html.escape
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>edgex report: {e(out.name)}</title>"
        f"<style>{CSS}</style></head><body>",
        f"<h1>edgex report</h1><p class='muted'>run <code>{e(str(out))}</code> · preset <b>{e(recipe['preset'])}</b>"
        f" · data <b>{e(str(recipe['data']))}</b> ({data.get('train', '?')} train / {data.get('val', '?')} val images)"
        f" · devices {e(', '.join(recipe['devices']))}</p>",
    ]
    best = []
    if smallest:
        best.append(f"smallest within the accuracy gate (drop &le; {max_drop:g} points): <b>{e(smallest)}</b>")
    if fastest:
        best.append(f"fastest within the gate: <b>{e(fastest)}</b>")
    if deploy:
        best.append(
            f"bundle for <b>{e(deploy['target'])}</b>: <code>{e(deploy['bundle'])}</code> ({e(deploy['variant'])})"
        )
    parts.append("<h2>Best for this device</h2><ul>" + "".join(f"<li>{b}</li>" for b in best) + "</ul>")
    head = "".join(f"<th>{e(label)}</th>" for _, label, _ in COLUMNS)
    body = []
    for r in rows:
        cls = " class='best'" if r["variant"] in (smallest, fastest) else ""
        cells = "".join(f"<td{' class=num' if kind else ''}>{e(_fmt(r[key], kind))}</td>" for key, _, kind in COLUMNS)
        body.append(f"<tr{cls}>{cells}</tr>")
    parts.append(
        f"<h2>Variants</h2><table id='variants'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}"
        "</tbody></table><p class='muted'>top-1 on the validation split through each artifact's own runtime; "
        "latency from the bench stage (bench.json). Pruning shrinks compressed size, not latency, unless "
        "the runtime has sparse kernels: the latency column is what was measured.</p>"
    )
    if compare and compare.get("ab"):
        parts.append(
            "<h2>Separable vs regular convolutions</h2><table id='ab'><thead><tr><th>runtime</th>"
            "<th>precision</th><th>Xception ms</th><th>twin ms</th><th>measured speedup</th>"
            "<th>MAC ratio</th><th>efficiency</th></tr></thead><tbody>"
        )
        for a in compare["ab"]:
            parts.append(
                f"<tr><td>{e(a['runtime'])}</td><td>{e(a['precision'])}</td><td class=num>{a['xception_ms']:.3f}"
                f"</td><td class=num>{a['twin_ms']:.3f}</td><td class=num>{a['measured_speedup']:.2f}x</td>"
                f"<td class=num>{a['theoretical_speedup']:.2f}x</td><td class=num>"
                f"{a['measured_speedup'] / a['theoretical_speedup']:.0%}</td></tr>"
            )
        parts.append("</tbody></table>")
    if sweep:
        parts.append(
            "<h3>Layer sweep: measured roofs</h3><table><thead><tr><th>runtime</th><th>precision</th>"
            "<th>compute G op/s</th><th>bandwidth GB/s</th></tr></thead><tbody>"
            + "".join(
                f"<tr><td>{e(r['runtime'])}</td><td>{e(r['precision'])}</td><td class=num>"
                f"{r['compute_gops']:.1f}</td><td class=num>{r['bandwidth_gbs']:.1f}</td></tr>"
                for r in sweep["roofs"]
            )
            + "</tbody></table>"
        )
    parts.append(
        "<h2>Plots</h2><div class='plots'>"
        + "".join(
            f"<figure><img src='{e(path)}' alt='{e(caption)}'><figcaption>{e(caption)}</figcaption></figure>"
            for path, caption in plots.values()
        )
        + "</div>"
    )
    parts.append(
        "<h2>Environment</h2><table>"
        + "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in {**env, **versions}.items())
        + "</table>"
    )
    parts.append(
        "<h2>Reproduce</h2><p>Every artifact, one command each:</p><table><tbody>"
        + "".join(
            f"<tr><td>{e(name)}</td><td><code>{e(cmd)}</code></td></tr>" for name, cmd in _commands(rows, recipe, out)
        )
        + "</tbody></table><p>The whole run: <code>edgex pipeline --config "
        f"{e(str(out / 'recipe.yaml'))} --out NEW_FOLDER</code></p>"
    )
    stage_rows = "".join(
        f"<tr><td>{e(name)}</td><td class=num>{s.get('seconds', 0):.1f} s</td><td><code>{e(s['hash'])}</code></td></tr>"
        for name, s in stages.items()
    )
    parts.append(
        f"<h2>Stages</h2><table><thead><tr><th>stage</th><th>time (last run)</th><th>input hash</th></tr>"
        f"</thead><tbody>{stage_rows}</tbody></table>"
    )
    parts.append("</body></html>")
    return "\n".join(parts)


def _markdown(
    rows, compare, sweep, deploy, data, max_drop, smallest, fastest, plots, env, versions, recipe, stages, out
) -> str:
    lines = [
        "# edgex report",
        "",
        f"Run `{out}` · preset **{recipe['preset']}** · data **{recipe['data']}** · "
        f"devices {', '.join(recipe['devices'])}",
        "",
    ]
    if smallest:
        lines.append(f"- smallest within the accuracy gate (drop <= {max_drop:g} points): **{smallest}**")
    if fastest:
        lines.append(f"- fastest within the gate: **{fastest}**")
    if deploy:
        lines.append(f"- bundle for **{deploy['target']}**: `{deploy['bundle']}` ({deploy['variant']})")
    lines += [
        "",
        "## Variants",
        "",
        "| " + " | ".join(label for _, label, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_fmt(r[key], kind) for key, _, kind in COLUMNS) + " |" for r in rows]
    if compare and compare.get("ab"):
        lines += [
            "",
            "## Separable vs regular convolutions",
            "",
            "| runtime | precision | Xception ms | twin ms | measured speedup | MAC ratio |",
            "|---|---|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {a['runtime']} | {a['precision']} | {a['xception_ms']:.3f} | {a['twin_ms']:.3f} | "
            f"{a['measured_speedup']:.2f}x | {a['theoretical_speedup']:.2f}x |"
            for a in compare["ab"]
        ]
    lines += ["", "## Plots", ""] + [f"![{caption}]({path})" for path, caption in plots.values()]
    lines += ["", "## Environment", ""] + [f"- {k}: {v}" for k, v in {**env, **versions}.items()]
    lines += ["", "## Reproduce", ""] + [f"- {name}: `{cmd}`" for name, cmd in _commands(rows, recipe, out)]
    return "\n".join(lines) + "\n"
