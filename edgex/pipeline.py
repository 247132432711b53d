"""`edgex pipeline`: the whole job, from data to a deployable model and a report, in resumable stages.

data -> train (Xception and its regular twin) -> prune -> quantize (int8, QAT) -> convert -> evaluate -> bench ->
separable (model-level A/B and layer sweep) -> deploy (bundle) -> report.

Every stage records a hash of its options and of the stages it depends on; ``resume`` skips a stage whose
outputs exist and whose hash is unchanged, and reruns what changed (and everything downstream of it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from devices.errors import EdgexError
from devices.files import file_size, write_json_atomic, write_text_atomic

DEFAULT_RECIPE: dict = {
    "data": "digits",
    "preset": "mini",
    "devices": ["cpu"],
    "seed": 0,
    "train": {"epochs": 20, "batch_size": 32, "optimizer": "adam", "lr": None, "augment": ["crop"]},
    "twin": {"enabled": True, "epochs": 3},
    "prune": {"enabled": True, "sparsity": 0.75, "epochs": 4, "schedule": "polynomial"},
    "quantize": {"int8": True, "qat": True, "qat_epochs": 1, "calib_samples": 200, "max_drop": 1.0},
    "convert": {"tflite": ["fp32", "fp16", "dynamic"], "onnx": ["fp32", "int8"], "edgetpu": True, "opset": 17},
    "bench": {"threads": None, "warmup": 3, "runs": 20, "min_seconds": 0.3, "max_seconds": 20.0},
    "compare": {"enabled": True, "runtimes": ["litert", "onnxruntime"], "precisions": ["fp32", "int8"],
                "breakdown": ["onnxruntime"]},
    # shapes: "model" (the layers of the trained model), "xception" (the paper network at input_size) or a file.
    "sweep": {"enabled": True, "shapes": "model", "input_size": 299, "variants": ["regular", "separable"],
              "precisions": ["fp32", "int8"], "runtimes": ["litert"], "threads": 1},
    "deploy": {"enabled": True, "target": "rpi4", "eval_data": True},
    "report": {"max_drop": 1.0},
}
STAGES = ("data", "train", "prune", "quantize", "convert", "evaluate", "bench", "separable", "deploy", "report")


# -- the recipe ---------------------------------------------------------------------------------------------------
def _merge(base: dict, override: dict, where: str = "") -> dict:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if key not in base:
            raise EdgexError(f"unknown recipe key {where + key!r}; valid keys here: {', '.join(sorted(base))}")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise EdgexError(f"recipe key {where + key!r} must be a mapping of: {', '.join(sorted(base[key]))}")
            merged[key] = _merge(base[key], value, f"{where}{key}.")
        else:
            merged[key] = value
    return merged


def resolve_recipe(config: str | Path | None = None, overrides: dict | None = None) -> dict:
    """Defaults, then the YAML recipe file, then command-line overrides (``{"train.epochs": 5, "data": ...}``)."""
    recipe = copy.deepcopy(DEFAULT_RECIPE)
    if config:
        import yaml

        path = Path(config)
        if not path.is_file():
            raise EdgexError(f"recipe file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise EdgexError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from exc
        if not isinstance(loaded, dict):
            raise EdgexError(f"recipe {path} must be a mapping of stage options")
        recipe = _merge(recipe, loaded)
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        nested: dict = {leaf: value}
        for parent in reversed(parents):
            nested = {parent: nested}
        recipe = _merge(recipe, nested)
    if isinstance(recipe["devices"], str):
        recipe["devices"] = [recipe["devices"]]
    return recipe


# -- stages --------------------------------------------------------------------------------------------------------
@dataclass
class Context:
    out: Path
    recipe: dict
    progress: Callable | None = None
    dataset: object = None
    variants: dict = field(default_factory=dict)  # name -> {"path", "format", "precision", "sparsity", "command"}

    def rel(self, path) -> str:
        return str(Path(path).relative_to(self.out)) if Path(path).is_absolute() else str(path)

    def load_dataset(self):
        if self.dataset is None:
            from edgex.data import load_dataset
            from edgex.models import preset_config

            size = preset_config(self.recipe["preset"]).input_size
            self.dataset = load_dataset(self.recipe["data"], size, seed=self.recipe["seed"])
        return self.dataset


@dataclass(frozen=True)
class StageSpec:
    name: str
    run: Callable[[Context], list[str]]  # returns the output files (relative to the run folder)
    uses: tuple[str, ...]  # recipe keys it depends on
    after: tuple[str, ...]  # stages whose outputs it reads


def _stage_data(ctx: Context) -> list[str]:
    dataset = ctx.load_dataset()
    info = dataset.describe()
    if dataset.scan is not None:
        info["scan"] = dataset.scan.summary_lines()
    write_json_atomic(ctx.out / "data.json", info)
    return ["data.json"]


def _stage_train(ctx: Context) -> list[str]:
    from edgex.training import TrainConfig, train

    r = ctx.recipe
    t = r["train"]
    base = dict(data=r["data"], preset=r["preset"], batch_size=t["batch_size"], optimizer=t["optimizer"], lr=t["lr"],
                seed=r["seed"], augment=tuple(t["augment"]))
    outputs = []
    train(TrainConfig(epochs=t["epochs"], **base), ctx.out / "train", resume=True, progress=ctx.progress)
    outputs += ["train/model.keras", "train/model.keras.json"]
    if r["twin"]["enabled"]:
        train(TrainConfig(epochs=r["twin"]["epochs"], model={"conv": "regular"}, **base), ctx.out / "twin",
              resume=True, progress=ctx.progress)
        outputs += ["twin/model.keras", "twin/model.keras.json"]
    return outputs


def _stage_prune(ctx: Context) -> list[str]:
    from edgex.prune import prune

    p = ctx.recipe["prune"]
    if not p["enabled"]:
        return []
    report = prune(ctx.out / "train/model.keras", p["sparsity"], data=ctx.recipe["data"], schedule=p["schedule"],
                   epochs=p["epochs"], out=ctx.out / "prune", force=True, progress=ctx.progress)
    return [ctx.rel(report.pruned_model), "prune/prune_report.json",
            ctx.rel(Path(report.pruned_model).with_name(Path(report.pruned_model).stem + "_fp32.tflite"))]


def _stage_quantize(ctx: Context) -> list[str]:
    from edgex.quantize import quantize

    q = ctx.recipe["quantize"]
    outputs = []
    for mode in ("int8", "qat"):
        if not q[mode]:
            continue
        report = quantize(ctx.out / "train/model.keras", mode, data=ctx.recipe["data"], epochs=q["qat_epochs"],
                          calib_samples=q["calib_samples"], out=ctx.out / "quantize" / mode, force=True,
                          progress=ctx.progress)
        outputs += [ctx.rel(report.artifact), f"quantize/{mode}/quantize_report.json"]
    return outputs


def _stage_convert(ctx: Context) -> list[str]:
    from edgex.export import export_model

    c = ctx.recipe["convert"]
    source = ctx.out / "train/model.keras"
    jobs = [("tflite", p) for p in c["tflite"]] + [("onnx", p) for p in c["onnx"]]
    if c["edgetpu"]:
        jobs.append(("edgetpu", "int8"))
    outputs = []
    for to, precision in jobs:
        name = f"model_{precision}.{'onnx' if to == 'onnx' else 'tflite'}" if to != "edgetpu" else "model_quant.tflite"
        result = export_model(source, to, precision, data=ctx.recipe["data"], opset=c["opset"],
                              out=ctx.out / "artifacts" / name, force=True,
                              calib_samples=ctx.recipe["quantize"]["calib_samples"], dataset=ctx.load_dataset())
        outputs.append(ctx.rel(result.path))
    return outputs


def variants(out: Path, recipe: dict) -> dict[str, dict]:
    """Every deployable variant the run made: name -> path, format, precision, sparsity, reproduce command."""
    data, found = recipe["data"], {}

    def add(name, path, fmt, precision, sparsity, command):
        if (out / path).exists():
            found[name] = {"path": path, "format": fmt, "precision": precision, "sparsity": sparsity,
                           "command": command}

    train_cmd = (f"edgex train --data {data} --preset {recipe['preset']} --epochs {recipe['train']['epochs']} "
                 f"--seed {recipe['seed']} --out OUT/train")
    add("keras fp32", "train/model.keras", "keras", "fp32", 0.0, train_cmd)
    for precision in recipe["convert"]["tflite"]:
        add(f"tflite {precision}", f"artifacts/model_{precision}.tflite", "tflite", precision, 0.0,
            f"edgex convert OUT/train/model.keras --to tflite --precision {precision} --data {data}")
    add("tflite int8", "quantize/int8/model_int8.tflite", "tflite", "int8", 0.0,
        f"edgex quantize OUT/train/model.keras --mode int8 --data {data} --out OUT/quantize/int8")
    add("tflite int8 (QAT)", "quantize/qat/model_qat.tflite", "tflite", "int8", 0.0,
        f"edgex quantize OUT/train/model.keras --mode qat --epochs {recipe['quantize']['qat_epochs']} --data {data} "
        "--out OUT/quantize/qat")
    for precision in recipe["convert"]["onnx"]:
        add(f"onnx {precision}", f"artifacts/model_{precision}.onnx", "onnx", precision, 0.0,
            f"edgex convert OUT/train/model.keras --to onnx --precision {precision} --data {data}")
    add("edgetpu int8", "artifacts/model_quant.tflite", "edgetpu", "int8", 0.0,
        f"edgex convert OUT/train/model.keras --to edgetpu --data {data}")
    sparsity = recipe["prune"]["sparsity"]
    pct = int(round(sparsity * 100))
    add(f"tflite fp32 pruned {pct}%", f"prune/model_pruned{pct}_fp32.tflite", "tflite", "fp32", sparsity,
        f"edgex prune OUT/train/model.keras --sparsity {sparsity} --epochs {recipe['prune']['epochs']} --data {data} "
        "--out OUT/prune")
    return found


def _stage_evaluate(ctx: Context) -> list[str]:
    from edgex.evaluation import evaluate_model

    dataset = ctx.load_dataset()
    metrics = {}
    for name, v in variants(ctx.out, ctx.recipe).items():
        result = evaluate_model(ctx.out / v["path"], ctx.recipe["data"], dataset=dataset)
        metrics[name] = {**v, "top1": result.accuracy.top1, "top5": result.accuracy.top5,
                         "samples": result.accuracy.samples, "runtime": result.runtime,
                         "size_bytes": file_size(ctx.out / v["path"])}
        if ctx.progress:
            ctx.progress("line", text=f"  {name}: top-1 {100 * result.accuracy.top1:.2f}%")
    float_top1 = metrics.get("keras fp32", {}).get("top1")
    for m in metrics.values():
        m["drop_points"] = None if float_top1 is None else 100 * (float_top1 - m["top1"])
    write_json_atomic(ctx.out / "metrics.json", metrics)
    return ["metrics.json"]


def _stage_bench(ctx: Context) -> list[str]:
    from devices.bench import BenchConfig, benchmark, results_to_csv, results_to_json

    b = ctx.recipe["bench"]
    config = BenchConfig(warmup=b["warmup"], runs=b["runs"], min_seconds=b["min_seconds"], max_seconds=b["max_seconds"])
    results = []
    for device in ctx.recipe["devices"]:
        for name, v in variants(ctx.out, ctx.recipe).items():
            runtime = "litert" if v["format"] in ("tflite", "edgetpu") else ("onnxruntime" if v["format"] == "onnx"
                                                                             else "tensorflow")
            result = benchmark(ctx.out / v["path"], runtime=runtime, device=device, threads=b["threads"], config=config)
            results.append(result.with_extra(label=name, variant=name, precision=v["precision"],
                                             sparsity=v["sparsity"]))
            if ctx.progress:
                ctx.progress("line", text=f"  {name} on {device}: p50 {result.latency.p50:.3f} ms")
    write_json_atomic(ctx.out / "bench.json", results_to_json(results))
    write_text_atomic(ctx.out / "bench.csv", results_to_csv(results))
    return ["bench.json", "bench.csv"]


def _stage_separable(ctx: Context) -> list[str]:
    from edgex.compare import CompareConfig, compare
    from edgex.sweep import SweepConfig, sweep

    r = ctx.recipe
    outputs = []
    device = r["devices"][0]
    if r["compare"]["enabled"] and r["twin"]["enabled"]:
        c = r["compare"]
        result = compare(CompareConfig(preset=None, models=(str(ctx.out / "train/model.keras"),
                                                            str(ctx.out / "twin/model.keras")),
                                       precisions=tuple(c["precisions"]), runtimes=tuple(c["runtimes"]), device=device,
                                       data=r["data"], breakdown=bool(c["breakdown"]),
                                       breakdown_runtimes=tuple(c["breakdown"] or ())), ctx.out / "compare", force=True)
        outputs += [ctx.rel(p) for p in result.files.values()]
    if r["sweep"]["enabled"]:
        s = r["sweep"]
        shapes = str(ctx.out / "train/model.keras") if s["shapes"] == "model" else s["shapes"]
        result = sweep(SweepConfig(input_size=s["input_size"], shapes=shapes, variants=tuple(s["variants"]),
                                   precisions=tuple(s["precisions"]), runtimes=tuple(s["runtimes"]), device=device,
                                   threads=s["threads"]), ctx.out / "sweep", force=True)
        shutil.copyfile(ctx.out / "sweep" / "sweep.json", ctx.out / "sweep.json")
        outputs += [ctx.rel(p) for p in result.files.values()] + ["sweep.json"]
    return outputs


def best_variants(metrics: dict, bench: list, max_drop: float) -> dict:
    """The smallest variant within the accuracy gate, and the fastest one within it."""
    p50 = {r.label: r.latency.p50 for r in bench}
    passing = [(name, m) for name, m in metrics.items()
               if m.get("drop_points") is not None and m["drop_points"] <= max_drop and m["format"] != "keras"]
    if not passing:
        return {}
    smallest = min(passing, key=lambda item: item[1]["size_bytes"])[0]
    timed = [(name, m) for name, m in passing if name in p50]
    fastest = min(timed, key=lambda item: p50[item[0]])[0] if timed else None
    return {"smallest": smallest, "fastest": fastest}


def _stage_deploy(ctx: Context) -> list[str]:
    from devices.bench import results_from_json
    from edgex.deploy import build_bundle

    d = ctx.recipe["deploy"]
    if not d["enabled"]:
        return []
    metrics = json.loads((ctx.out / "metrics.json").read_text())
    bench = results_from_json(json.loads((ctx.out / "bench.json").read_text()))
    best = best_variants(metrics, bench, ctx.recipe["report"]["max_drop"])
    deployable = {n: m for n, m in metrics.items() if m["format"] in ("tflite", "onnx", "edgetpu")}
    choice = best.get("smallest") if best.get("smallest") in deployable else next(iter(deployable), None)
    if choice is None:
        raise EdgexError("no deployable variant (.tflite or .onnx) was produced; enable a conversion")
    bundle = build_bundle(ctx.out / metrics[choice]["path"], d["target"], ctx.out / "bundle.tar.gz",
                          eval_data=ctx.recipe["data"] if d["eval_data"] else None, force=True)
    write_json_atomic(ctx.out / "deploy.json", {"variant": choice, "bundle": "bundle.tar.gz", "target": d["target"],
                                                "notes": list(bundle.notes)})
    return ["bundle.tar.gz", "deploy.json"]


def _stage_report(ctx: Context) -> list[str]:
    from edgex.report import write_report

    return [ctx.rel(p) for p in write_report(ctx.out, ctx.recipe)]


STAGE_SPECS = {
    "data": StageSpec("data", _stage_data, ("data", "preset", "seed"), ()),
    "train": StageSpec("train", _stage_train, ("data", "preset", "seed", "train", "twin"), ("data",)),
    "prune": StageSpec("prune", _stage_prune, ("data", "prune"), ("train",)),
    "quantize": StageSpec("quantize", _stage_quantize, ("data", "quantize"), ("train",)),
    "convert": StageSpec("convert", _stage_convert, ("data", "convert", "quantize"), ("train",)),
    "evaluate": StageSpec("evaluate", _stage_evaluate, ("data",), ("train", "prune", "quantize", "convert")),
    "bench": StageSpec("bench", _stage_bench, ("devices", "bench"), ("train", "prune", "quantize", "convert")),
    "separable": StageSpec("separable", _stage_separable, ("data", "devices", "compare", "sweep"), ("train",)),
    "deploy": StageSpec("deploy", _stage_deploy, ("data", "deploy", "report"), ("evaluate", "bench")),
    "report": StageSpec("report", _stage_report, ("report",),
                        ("data", "train", "prune", "quantize", "convert", "evaluate", "bench", "separable", "deploy")),
}


# -- running --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageRecord:
    name: str
    status: str  # ran | skipped
    seconds: float
    hash: str
    outputs: tuple[str, ...]


@dataclass(frozen=True)
class PipelineResult:
    out: str
    recipe: dict
    stages: tuple[StageRecord, ...]
    seconds: float
    summary: tuple[dict, ...]  # per variant: size, top-1, p50, speedup over fp32 Keras


def _stage_hash(spec: StageSpec, recipe: dict, upstream: dict[str, str]) -> str:
    from edgex import __version__

    payload = {"edgex": __version__, "stage": spec.name, "recipe": {k: recipe[k] for k in spec.uses},
               "after": {name: upstream.get(name, "") for name in spec.after}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_pipeline(recipe: dict, out: str | Path, *, resume: bool = False, force: bool = False,
                 progress: Callable | None = None, on_stage: Callable | None = None) -> PipelineResult:
    """Run (or resume) every stage into ``out``; ``on_stage(record)`` after each stage."""
    out = Path(out)
    state_dir = out / "stages"
    if out.exists() and any(out.iterdir()) and not (resume or force):
        raise EdgexError(f"run folder {out} already exists; pass --resume to continue it or --force to start over")
    if force and not resume and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "recipe.json", recipe)
    _write_recipe_yaml(out / "recipe.yaml", recipe)
    ctx = Context(out, recipe, progress)
    hashes: dict[str, str] = {}
    records = []
    start = time.perf_counter()
    for name in STAGES:
        spec = STAGE_SPECS[name]
        digest = _stage_hash(spec, recipe, hashes)
        hashes[name] = digest
        state_file = state_dir / f"{name}.json"
        previous = json.loads(state_file.read_text()) if state_file.is_file() else None
        if resume and previous and previous.get("hash") == digest and all(
                (out / o).exists() for o in previous.get("outputs", [])):
            record = StageRecord(name, "skipped", 0.0, digest, tuple(previous["outputs"]))
        else:
            began = time.perf_counter()
            outputs = spec.run(ctx)
            record = StageRecord(name, "ran", time.perf_counter() - began, digest, tuple(outputs))
            write_json_atomic(state_file, {"hash": digest, "outputs": list(outputs), "seconds": record.seconds})
        records.append(record)
        if on_stage:
            on_stage(record)
    return PipelineResult(str(out), recipe, tuple(records), time.perf_counter() - start, tuple(summary_rows(out)))


def summary_rows(out: Path) -> list[dict]:
    from devices.bench import results_from_json

    metrics_path, bench_path = out / "metrics.json", out / "bench.json"
    if not metrics_path.exists():
        return []
    metrics = json.loads(metrics_path.read_text())
    bench = results_from_json(json.loads(bench_path.read_text())) if bench_path.exists() else []
    p50 = {r.label: r.latency for r in bench}
    keras = p50.get("keras fp32")
    rows = []
    for name, m in metrics.items():
        lat = p50.get(name)
        rows.append({"variant": name, "format": m["format"], "precision": m["precision"], "sparsity": m["sparsity"],
                     "size_bytes": m["size_bytes"], "top1": m["top1"], "drop_points": m["drop_points"],
                     "p50_ms": lat.p50 if lat else None, "p90_ms": lat.p90 if lat else None,
                     "images_per_s": 1e3 / lat.mean if lat else None,
                     "speedup_vs_keras": keras.p50 / lat.p50 if (lat and keras) else None, "path": m["path"],
                     "command": m["command"]})
    return rows


def _write_recipe_yaml(path: Path, recipe: dict) -> None:
    import yaml

    write_text_atomic(path, "# The resolved recipe of this run (defaults, recipe file, command-line flags).\n"
                      + yaml.safe_dump(recipe, sort_keys=False))


__all__ = ["DEFAULT_RECIPE", "STAGES", "PipelineResult", "best_variants", "resolve_recipe", "run_pipeline",
           "variants"]
