"""What a run folder holds and how to read it: where each stage's files land, the deployable variants and the command
that reproduces each one, the best variants, and the summary rows. The runner and the report both read from here."""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from converters.registry import artifact_name, format_for_runtime
from edgex.pipeline.recipe import Recipe

PTQ_INT8_FILE = "quantize/int8/" + artifact_name("model", "tflite", "int8")  # the quantize stage's int8 model


def artifact_file(to: str, precision: str) -> str:
    """Where the convert stage writes a format and precision, inside the run folder."""
    return "artifacts/" + artifact_name("model", to, precision)


def twin_file(runtime: str, precision: str) -> str:
    """Where the twin stage writes the twin for one pair of the A/B."""
    return "twin/" + artifact_name("model", format_for_runtime(runtime), precision)


def ab_files(recipe: Recipe) -> dict[tuple[str, str], tuple[str, str]]:
    """(runtime, precision) of the model-level A/B -> (Xception's file, its twin's file), for the pairs this recipe
    makes: the convert and quantize stages convert Xception, the twin stage converts the twin the same way."""
    if not (recipe.compare.enabled and recipe.twin.enabled):
        return {}
    c, q = recipe.convert, recipe.quantize
    xception = {
        ("litert", "fp32"): "fp32" in c.tflite and artifact_file("tflite", "fp32"),
        ("litert", "int8"): q.int8 and PTQ_INT8_FILE,
        ("onnxruntime", "fp32"): "fp32" in c.onnx and artifact_file("onnx", "fp32"),
        ("onnxruntime", "int8"): "int8" in c.onnx and artifact_file("onnx", "int8"),
    }
    return {
        (runtime, precision): (xception[runtime, precision], twin_file(runtime, precision))
        for runtime in recipe.compare.runtimes
        for precision in recipe.compare.precisions
        if xception.get((runtime, precision))
    }


@dataclass(frozen=True)
class Variant:
    """One deployable model of the run."""

    name: str
    path: str  # relative to the run folder
    format: str  # keras, tflite, onnx or edgetpu
    precision: str
    sparsity: float
    command: str  # the command that makes it again

    def to_json(self) -> dict:
        data = asdict(self)
        del data["name"]  # the key it is filed under
        return data


def candidate_variants(out: Path, recipe: Recipe) -> list[Variant]:
    """Every variant the recipe asks for, made or not."""
    run = shlex.quote(str(out))
    command = (
        f"edgex train {train_options(recipe)}{transfer_flags(recipe)} --epochs {recipe.train.epochs} --out {run}/train"
    )
    keras = Variant(
        name="keras fp32", path="train/model.keras", format="keras", precision="fp32", sparsity=0.0, command=command
    )
    return [keras, *_converted_variants(run, recipe), *_pruned_variants(run, recipe)]


def _converted_variants(run: str, recipe: Recipe) -> list[Variant]:
    """The variants of the convert and quantize stages."""
    source, data, c = f"{run}/train/model.keras", shlex.quote(recipe.data), recipe.convert
    calib = f"--data {data} --calib-samples {recipe.quantize.calib_samples}"
    found = []
    for precision in c.tflite:
        path = artifact_file("tflite", precision)
        command = f"edgex convert {source} --to tflite --precision {precision} {calib} --out {run}/{path}"
        found.append(
            Variant(
                name=f"tflite {precision}",
                path=path,
                format="tflite",
                precision=precision,
                sparsity=0.0,
                command=command,
            )
        )
    found += _quantized_variants(run, source, calib, recipe.quantize)
    for precision in c.onnx:
        path = artifact_file("onnx", precision)
        command = (
            f"edgex convert {source} --to onnx --precision {precision} --opset {c.opset}"
            + (f" {calib}" if precision == "int8" else f" --data {data}")
            + f" --out {run}/{path}"
        )
        found.append(
            Variant(
                name=f"onnx {precision}", path=path, format="onnx", precision=precision, sparsity=0.0, command=command
            )
        )
    if c.edgetpu:
        path = artifact_file("edgetpu", "int8")
        command = f"edgex convert {source} --to edgetpu {calib} --out {run}/{path}"
        found.append(
            Variant(name="edgetpu int8", path=path, format="edgetpu", precision="int8", sparsity=0.0, command=command)
        )
    return found


def _quantized_variants(run: str, source: str, calib: str, q) -> list[Variant]:
    found = []
    if q.int8:
        command = f"edgex quantize {source} --mode int8 {calib} --out {run}/quantize/int8"
        found.append(
            Variant(
                name="tflite int8 (PTQ)",
                path=PTQ_INT8_FILE,
                format="tflite",
                precision="int8",
                sparsity=0.0,
                command=command,
            )
        )
    if q.qat:
        command = f"edgex quantize {source} --mode qat --epochs {q.qat_epochs} {calib} --out {run}/quantize/qat"
        path = "quantize/qat/" + artifact_name("model", "tflite", "qat")
        found.append(
            Variant(
                name="tflite int8 (QAT)", path=path, format="tflite", precision="int8", sparsity=0.0, command=command
            )
        )
    return found


def _pruned_variants(run: str, recipe: Recipe) -> list[Variant]:
    p = recipe.prune
    if not p.enabled:
        return []
    pct = round(p.sparsity * 100)
    command = (
        f"edgex prune {run}/train/model.keras --sparsity {p.sparsity} --schedule {p.schedule} --epochs {p.epochs} "
        f"--data {shlex.quote(recipe.data)} --out {run}/prune"
    )
    path = "prune/" + artifact_name(f"model_pruned{pct}", "tflite", "fp32")
    name = f"tflite fp32 pruned {pct}%"
    return [Variant(name=name, path=path, format="tflite", precision="fp32", sparsity=p.sparsity, command=command)]


def variants(out: Path, recipe: Recipe) -> dict[str, Variant]:
    """Every deployable variant the recipe asks for and the run made, by name."""
    return {v.name: v for v in candidate_variants(out, recipe) if (out / v.path).exists()}


def train_options(recipe: Recipe) -> str:
    """The `edgex train` options that Xception and its twin share in this run."""
    t = recipe.train
    return (
        f"--data {shlex.quote(recipe.data)} --preset {recipe.preset} --batch-size {t.batch_size} "
        f"--optimizer {t.optimizer}"
        + (f" --lr {t.lr}" if t.lr is not None else "")
        + f" --augment {','.join(t.augment) or 'none'} --seed {recipe.seed}"
    )


def transfer_flags(recipe: Recipe) -> str:
    """The `edgex train` options of a start from pretrained weights or another model ('' for a start from scratch)."""
    t = recipe.train
    flags = f" --from {shlex.quote(t.from_model)}" if t.from_model else ""
    flags += f" --weights {shlex.quote(t.weights)}" if t.weights != "none" else ""
    if flags:
        flags += f" --head-epochs {t.head_epochs} --unfreeze {t.unfreeze} --fine-tune-lr {t.fine_tune_lr}"
    flags += " --recompute-bn" if t.recompute_bn else ""
    return flags + (f" --preprocessing {t.preprocessing}" if t.preprocessing else "")


def twin_command(out: Path, recipe: Recipe) -> str:
    """The command that trains the regular-convolution twin of this run."""
    return (
        f"edgex train {train_options(recipe)} --conv regular --epochs {recipe.twin.epochs} "
        f"--out {shlex.quote(str(out))}/twin"
    )


def reproduce_commands(out: Path, recipe: Recipe, rows) -> list[tuple[str, str]]:
    """(what, command) for every variant of ``rows`` and the twin."""
    commands = [(r.variant, r.command) for r in rows]
    if recipe.twin.enabled:
        commands.append(("regular-convolution twin", twin_command(out, recipe)))
    return commands


@dataclass(frozen=True)
class SummaryRow:
    """One variant: what the evaluate stage measured (metrics.json) and the bench stage timed (bench.json)."""

    variant: str
    format: str
    precision: str
    sparsity: float
    size_bytes: int
    top1: float
    drop_points: float | None  # against the fp32 Keras model, in points of top-1
    p50_ms: float | None
    p90_ms: float | None
    images_per_s: float | None
    speedup_vs_keras: float | None
    path: str
    command: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Best:
    """The smallest variant within the accuracy gate, and the fastest one within it (None: none passed or timed)."""

    smallest: str | None = None
    fastest: str | None = None


def read_json(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def summary_rows(out: Path) -> list[SummaryRow]:
    from devices.bench import results_from_json

    metrics = read_json(out / "metrics.json")
    if metrics is None:
        return []
    bench = read_json(out / "bench.json")
    p50 = {r.label: r.latency for r in (results_from_json(bench) if bench else [])}
    keras = p50.get("keras fp32")
    rows = []
    for name, m in metrics.items():
        lat = p50.get(name)
        rows.append(
            SummaryRow(
                variant=name,
                format=m["format"],
                precision=m["precision"],
                sparsity=m["sparsity"],
                size_bytes=m["size_bytes"],
                top1=m["top1"],
                drop_points=m["drop_points"],
                p50_ms=lat.p50 if lat else None,
                p90_ms=lat.p90 if lat else None,
                images_per_s=1e3 / lat.mean if lat else None,
                speedup_vs_keras=keras.p50 / lat.p50 if (lat and keras) else None,
                path=m["path"],
                command=m["command"],
            )
        )
    return rows


def best_variants(rows: list[SummaryRow], max_drop: float) -> Best:
    """The smallest and the fastest deployable variants whose drop is within ``max_drop`` points."""
    passing = [r for r in rows if r.drop_points is not None and r.drop_points <= max_drop and r.format != "keras"]
    if not passing:
        return Best()
    timed = [r for r in passing if r.p50_ms is not None]
    return Best(
        min(passing, key=lambda r: r.size_bytes).variant,
        min(timed, key=lambda r: r.p50_ms).variant if timed else None,
    )
