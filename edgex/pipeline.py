"""`edgex pipeline`: the whole job, from data to a deployable model and a report, in resumable stages.

data -> train (Xception) -> twin (its regular-convolution twin) -> prune -> quantize (int8, QAT) -> convert ->
evaluate -> bench -> separable (model-level A/B and layer sweep) -> deploy (bundle) -> report.

Every stage records a hash of its options and of the contents of what it reads (the dataset's fingerprint, the
files of the stages before it); ``resume`` skips a stage whose outputs exist and whose hash is unchanged, and reruns
what changed (and everything downstream of it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devices.errors import EdgexError
from devices.files import file_size, write_json_atomic, write_text_atomic

DEFAULT_RECIPE: dict = {
    "data": "digits",
    "preset": "mini",
    "devices": ["cpu"],
    "seed": 0,
    "train": {"epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": None, "augment": ["crop"]},
    # The twin is there for the latency A/B, which its weights do not change: one epoch gives it a sane accuracy.
    # background: the twin is trained (and converted for the A/B) in a second process while prune, quantize,
    # convert and evaluate run; it is done before anything is timed.
    "twin": {"enabled": True, "epochs": 1, "background": True},
    "prune": {"enabled": True, "sparsity": 0.75, "epochs": 4, "schedule": "polynomial"},
    "quantize": {"int8": True, "qat": True, "qat_epochs": 1, "calib_samples": 200, "max_drop": 1.0},
    "convert": {"tflite": ["fp32", "fp16", "dynamic"], "onnx": ["fp32", "int8"], "edgetpu": True, "opset": 17},
    "bench": {"threads": None, "warmup": 3, "runs": 20, "min_seconds": 0.3, "max_seconds": 20.0},
    "compare": {
        "enabled": True,
        "runtimes": ["litert", "onnxruntime"],
        "precisions": ["fp32", "int8"],
        "breakdown": ["onnxruntime"],
    },
    # shapes: "model" (the layers of the trained model), "xception" (the paper network at input_size) or a file.
    "sweep": {
        "enabled": True,
        "shapes": "model",
        "input_size": 299,
        "variants": ["regular", "separable"],
        "precisions": ["fp32", "int8"],
        "runtimes": ["litert"],
        "threads": 1,
    },
    "deploy": {"enabled": True, "target": "rpi4", "eval_data": True},
    "report": {"max_drop": 1.0},
}
STAGES = ("data", "train", "twin", "prune", "quantize", "convert", "evaluate", "bench", "separable", "deploy", "report")
TIMED_STAGES = ("bench", "separable")  # nothing runs beside them


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
    return _train_model(ctx, twin=False)


def _stage_twin(ctx: Context) -> list[str]:
    outputs = _train_model(ctx, twin=True)
    return outputs + _convert_twin(ctx) if outputs else []


def _ab_files(recipe: dict) -> dict[tuple[str, str], tuple[str, str]]:
    """(runtime, precision) of the model-level A/B -> (Xception's file, its twin's file), for the pairs this recipe
    makes: the convert and quantize stages convert Xception, the twin stage converts the twin the same way."""
    if not (recipe["compare"]["enabled"] and recipe["twin"]["enabled"]):
        return {}
    c, q = recipe["convert"], recipe["quantize"]
    xception = {
        ("litert", "fp32"): "fp32" in c["tflite"] and _artifact_file("tflite", "fp32"),
        ("litert", "int8"): q["int8"] and _PTQ_INT8_FILE,
        ("onnxruntime", "fp32"): "fp32" in c["onnx"] and _artifact_file("onnx", "fp32"),
        ("onnxruntime", "int8"): "int8" in c["onnx"] and _artifact_file("onnx", "int8"),
    }
    return {
        (runtime, precision): (
            xception[runtime, precision],
            f"twin/model_{precision}.{'tflite' if runtime == 'litert' else 'onnx'}",
        )
        for runtime in recipe["compare"]["runtimes"]
        for precision in recipe["compare"]["precisions"]
        if xception.get((runtime, precision))
    }


def _convert_twin(ctx: Context) -> list[str]:
    """The twin in the A/B's formats, with the options the convert and quantize stages give Xception."""
    from converters import load_source

    pairs = _ab_files(ctx.recipe)
    if not pairs:
        return []
    source = load_source(ctx.out / "twin/model.keras")
    for (runtime, precision), (_, twin_file) in pairs.items():
        _export(ctx, source, "tflite" if runtime == "litert" else "onnx", precision, twin_file)
    return [twin_file for _, twin_file in pairs.values()]


def _export(ctx: Context, source, to: str, precision: str, out: str):
    """How this run converts a model (Xception in the convert stage, its twin for the A/B): the recipe's data,
    calibration samples and opset."""
    from edgex.export import export_model

    r = ctx.recipe
    return export_model(
        source.path,
        to,
        precision,
        data=r["data"],
        opset=r["convert"]["opset"],
        calib_samples=r["quantize"]["calib_samples"],
        out=ctx.out / out,
        force=True,
        source=source,
        dataset=ctx.load_dataset(),
    )


_PTQ_INT8_FILE = "quantize/int8/model_int8.tflite"  # where the quantize stage's int8 model lands


def _artifact_file(to: str, precision: str) -> str:
    """Where the convert stage writes a format and precision, inside the run folder."""
    if to == "edgetpu":  # Coral's naming: edgetpu_compiler turns x_quant.tflite into x_quant_edgetpu.tflite
        return "artifacts/model_quant.tflite"
    return f"artifacts/model_{precision}.{'onnx' if to == 'onnx' else 'tflite'}"


def _train_model(ctx: Context, *, twin: bool) -> list[str]:
    from edgex.training import TrainConfig

    r = ctx.recipe
    t = r["train"]
    base = dict(
        data=r["data"],
        preset=r["preset"],
        batch_size=t["batch_size"],
        optimizer=t["optimizer"],
        lr=t["lr"],
        seed=r["seed"],
        augment=tuple(t["augment"]),
    )
    if twin:
        if not r["twin"]["enabled"]:
            return []
        _train_into(
            TrainConfig(epochs=r["twin"]["epochs"], model={"conv": "regular"}, **base), ctx.out / "twin", ctx.progress
        )
        return ["twin/model.keras", "twin/model.keras.json"]
    _train_into(TrainConfig(epochs=t["epochs"], **base), ctx.out / "train", ctx.progress)
    return ["train/model.keras", "train/model.keras.json"]


def _train_into(config, folder: Path, progress) -> None:
    """Continue an interrupted training run with the same options; start over when the options changed."""
    from edgex.training import changed_options, train

    same = changed_options(folder, config) == {}
    train(config, folder, resume=same, force=not same, progress=progress)


def _stage_prune(ctx: Context) -> list[str]:
    from edgex.prune import prune

    p = ctx.recipe["prune"]
    if not p["enabled"]:
        return []
    # Latency is the bench stage's job: prune may share the machine with the twin's training.
    report = prune(
        ctx.out / "train/model.keras",
        p["sparsity"],
        data=ctx.recipe["data"],
        schedule=p["schedule"],
        epochs=p["epochs"],
        out=ctx.out / "prune",
        force=True,
        measure_latency=False,
        progress=ctx.progress,
    )
    return [
        ctx.rel(report.pruned_model),
        "prune/prune_report.json",
        ctx.rel(Path(report.pruned_model).with_name(Path(report.pruned_model).stem + "_fp32.tflite")),
    ]


def _stage_quantize(ctx: Context) -> list[str]:
    from edgex.quantize import quantize

    q = ctx.recipe["quantize"]
    outputs = []
    for mode in ("int8", "qat"):
        if not q[mode]:
            continue
        report = quantize(
            ctx.out / "train/model.keras",
            mode,
            data=ctx.recipe["data"],
            epochs=q["qat_epochs"],
            calib_samples=q["calib_samples"],
            max_drop=q["max_drop"],
            out=ctx.out / "quantize" / mode,
            force=True,
            progress=ctx.progress,
        )
        outputs += [ctx.rel(report.artifact), f"quantize/{mode}/quantize_report.json"]
    return outputs


def _stage_convert(ctx: Context) -> list[str]:
    from converters import load_source

    c = ctx.recipe["convert"]
    source = load_source(ctx.out / "train/model.keras")
    jobs = [("tflite", p) for p in c["tflite"]] + [("onnx", p) for p in c["onnx"]]
    if c["edgetpu"]:
        jobs.append(("edgetpu", "int8"))
    outputs = []
    for to, precision in jobs:
        outputs.append(ctx.rel(_export(ctx, source, to, precision, _artifact_file(to, precision)).path))
    return outputs


def variants(out: Path, recipe: dict) -> dict[str, dict]:
    """Every deployable variant the recipe asks for and the run made: name -> path, format, precision, sparsity,
    and the command that reproduces it."""
    import shlex

    found = {}
    run = shlex.quote(str(out))
    data, t, q, c = shlex.quote(str(recipe["data"])), recipe["train"], recipe["quantize"], recipe["convert"]

    def add(name, path, fmt, precision, sparsity, command):
        if (out / path).exists():
            found[name] = {
                "path": path,
                "format": fmt,
                "precision": precision,
                "sparsity": sparsity,
                "command": command,
            }

    source = f"{run}/train/model.keras"
    calib = f"--data {data} --calib-samples {q['calib_samples']}"
    add(
        "keras fp32",
        "train/model.keras",
        "keras",
        "fp32",
        0.0,
        f"edgex train {_train_options(recipe)} --epochs {t['epochs']} --out {run}/train",
    )
    for precision in c["tflite"]:
        path = _artifact_file("tflite", precision)
        add(
            f"tflite {precision}",
            path,
            "tflite",
            precision,
            0.0,
            f"edgex convert {source} --to tflite --precision {precision} {calib} --out {run}/{path}",
        )
    if q["int8"]:
        add(
            "tflite int8 (PTQ)",
            _PTQ_INT8_FILE,
            "tflite",
            "int8",
            0.0,
            f"edgex quantize {source} --mode int8 {calib} --out {run}/quantize/int8",
        )
    if q["qat"]:
        add(
            "tflite int8 (QAT)",
            "quantize/qat/model_qat.tflite",
            "tflite",
            "int8",
            0.0,
            f"edgex quantize {source} --mode qat --epochs {q['qat_epochs']} {calib} --out {run}/quantize/qat",
        )
    for precision in c["onnx"]:
        path = _artifact_file("onnx", precision)
        add(
            f"onnx {precision}",
            path,
            "onnx",
            precision,
            0.0,
            f"edgex convert {source} --to onnx --precision {precision} --opset {c['opset']}"
            + (f" {calib}" if precision == "int8" else f" --data {data}")
            + f" --out {run}/{path}",
        )
    if c["edgetpu"]:
        path = _artifact_file("edgetpu", "int8")
        add(
            "edgetpu int8",
            path,
            "edgetpu",
            "int8",
            0.0,
            f"edgex convert {source} --to edgetpu {calib} --out {run}/{path}",
        )
    p = recipe["prune"]
    if p["enabled"]:
        pct = round(p["sparsity"] * 100)
        add(
            f"tflite fp32 pruned {pct}%",
            f"prune/model_pruned{pct}_fp32.tflite",
            "tflite",
            "fp32",
            p["sparsity"],
            f"edgex prune {source} --sparsity {p['sparsity']} --schedule {p['schedule']} --epochs {p['epochs']} "
            f"--data {data} --out {run}/prune",
        )
    return found


def _train_options(recipe: dict) -> str:
    """The `edgex train` options that Xception and its twin share in this run."""
    import shlex

    t = recipe["train"]
    return (
        f"--data {shlex.quote(str(recipe['data']))} --preset {recipe['preset']} --batch-size {t['batch_size']} "
        f"--optimizer {t['optimizer']}"
        + (f" --lr {t['lr']}" if t["lr"] is not None else "")
        + f" --augment {','.join(t['augment']) or 'none'} --seed {recipe['seed']}"
    )


def twin_command(out: Path, recipe: dict) -> str:
    """The command that trains the regular-convolution twin of this run."""
    import shlex

    return (
        f"edgex train {_train_options(recipe)} --conv regular --epochs {recipe['twin']['epochs']} "
        f"--out {shlex.quote(str(out))}/twin"
    )


def _stage_evaluate(ctx: Context) -> list[str]:
    from edgex.evaluation import evaluate_model

    dataset = ctx.load_dataset()
    metrics = {}
    for name, v in variants(ctx.out, ctx.recipe).items():
        result = evaluate_model(ctx.out / v["path"], ctx.recipe["data"], dataset=dataset)
        metrics[name] = {
            **v,
            "top1": result.accuracy.top1,
            "top5": result.accuracy.top5,
            "samples": result.accuracy.samples,
            "runtime": result.runtime,
            "size_bytes": file_size(ctx.out / v["path"]),
        }
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
    for index, device in enumerate(ctx.recipe["devices"]):
        for name, v in variants(ctx.out, ctx.recipe).items():
            runtime = (
                "litert"
                if v["format"] in ("tflite", "edgetpu")
                else ("onnxruntime" if v["format"] == "onnx" else "tensorflow")
            )
            result = benchmark(ctx.out / v["path"], runtime=runtime, device=device, threads=b["threads"], config=config)
            # The first device's rows carry the plain variant name: the summary, the report and the best variant
            # are for it; the other devices' rows are in bench.json and bench.csv.
            label = name if index == 0 else f"{name} on {device}"
            results.append(
                result.with_extra(
                    label=label, variant=name, device=device, precision=v["precision"], sparsity=v["sparsity"]
                )
            )
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
        xception, twin = str(ctx.out / "train/model.keras"), str(ctx.out / "twin/model.keras")
        artifacts = {}
        for (runtime, precision), (xception_file, twin_file) in _ab_files(r).items():
            if (ctx.out / xception_file).is_file() and (ctx.out / twin_file).is_file():
                artifacts[xception, runtime, precision] = str(ctx.out / xception_file)
                artifacts[twin, runtime, precision] = str(ctx.out / twin_file)
        result = compare(
            CompareConfig(
                preset=None,
                models=(xception, twin),
                precisions=tuple(c["precisions"]),
                runtimes=tuple(c["runtimes"]),
                device=device,
                data=r["data"],
                calib_samples=r["quantize"]["calib_samples"],
                breakdown=bool(c["breakdown"]),
                breakdown_runtimes=tuple(c["breakdown"] or ()),
            ),
            ctx.out / "compare",
            force=True,
            artifacts=artifacts,
        )
        outputs += [ctx.rel(p) for p in result.files.values()]
    if r["sweep"]["enabled"]:
        s = r["sweep"]
        shapes = str(ctx.out / "train/model.keras") if s["shapes"] == "model" else s["shapes"]
        result = sweep(
            SweepConfig(
                input_size=s["input_size"],
                shapes=shapes,
                variants=tuple(s["variants"]),
                precisions=tuple(s["precisions"]),
                runtimes=tuple(s["runtimes"]),
                device=device,
                threads=s["threads"],
            ),
            ctx.out / "sweep",
            force=True,
        )
        shutil.copyfile(ctx.out / "sweep" / "sweep.json", ctx.out / "sweep.json")
        outputs += [ctx.rel(p) for p in result.files.values()] + ["sweep.json"]
    return outputs


def best_variants(metrics: dict, bench: list, max_drop: float) -> dict:
    """The smallest variant within the accuracy gate, and the fastest one within it."""
    p50 = {r.label: r.latency.p50 for r in bench}
    passing = [
        (name, m)
        for name, m in metrics.items()
        if m.get("drop_points") is not None and m["drop_points"] <= max_drop and m["format"] != "keras"
    ]
    if not passing:
        return {}
    smallest = min(passing, key=lambda item: item[1]["size_bytes"])[0]
    timed = [(name, m) for name, m in passing if name in p50]
    fastest = min(timed, key=lambda item: p50[item[0]])[0] if timed else None
    return {"smallest": smallest, "fastest": fastest}


def _stage_deploy(ctx: Context) -> list[str]:
    from devices.bench import results_from_json
    from edgex.deploy import TARGETS, build_bundle

    d = ctx.recipe["deploy"]
    if not d["enabled"]:
        return []
    metrics = json.loads((ctx.out / "metrics.json").read_text())
    bench = results_from_json(json.loads((ctx.out / "bench.json").read_text()))
    best = best_variants(metrics, bench, ctx.recipe["report"]["max_drop"])
    deployable = {n: m for n, m in metrics.items() if m["format"] in ("tflite", "onnx", "edgetpu")}
    if TARGETS[d["target"]].coral:  # the Edge TPU-ready model (its compiled twin is found next to it)
        deployable = {n: m for n, m in deployable.items() if m["format"] == "edgetpu"}
        if not deployable:
            raise EdgexError(f"deploy target {d['target']} needs the Edge TPU model: set convert.edgetpu: true")
    choice = best.get("smallest") if best.get("smallest") in deployable else next(iter(deployable), None)
    if choice is None:
        raise EdgexError("no deployable variant (.tflite or .onnx) was produced; enable a conversion")
    bundle = build_bundle(
        ctx.out / metrics[choice]["path"],
        d["target"],
        ctx.out / "bundle.tar.gz",
        eval_data=ctx.recipe["data"] if d["eval_data"] else None,
        force=True,
    )
    write_json_atomic(
        ctx.out / "deploy.json",
        {"variant": choice, "bundle": "bundle.tar.gz", "target": d["target"], "notes": list(bundle.notes)},
    )
    return ["bundle.tar.gz", "deploy.json"]


def _stage_report(ctx: Context) -> list[str]:
    from edgex.report import write_report

    return [ctx.rel(p) for p in write_report(ctx.out, ctx.recipe)]


STAGE_SPECS = {
    "data": StageSpec("data", _stage_data, ("data", "preset", "seed"), ()),
    "train": StageSpec("train", _stage_train, ("data", "preset", "seed", "train"), ("data",)),
    "twin": StageSpec(
        "twin", _stage_twin, ("data", "preset", "seed", "train", "twin", "convert", "quantize", "compare"), ("data",)
    ),
    "prune": StageSpec("prune", _stage_prune, ("data", "prune"), ("train",)),
    "quantize": StageSpec("quantize", _stage_quantize, ("data", "quantize"), ("train",)),
    "convert": StageSpec("convert", _stage_convert, ("data", "convert", "quantize"), ("train",)),
    "evaluate": StageSpec("evaluate", _stage_evaluate, ("data",), ("train", "prune", "quantize", "convert")),
    "bench": StageSpec("bench", _stage_bench, ("devices", "bench"), ("train", "prune", "quantize", "convert")),
    "separable": StageSpec(
        "separable", _stage_separable, ("data", "devices", "compare", "sweep"), ("train", "twin", "quantize", "convert")
    ),
    "deploy": StageSpec(
        "deploy", _stage_deploy, ("data", "deploy", "report"), ("evaluate", "bench", "prune", "quantize", "convert")
    ),
    "report": StageSpec(
        "report",
        _stage_report,
        ("report",),
        ("data", "train", "twin", "prune", "quantize", "convert", "evaluate", "bench", "separable", "deploy"),
    ),
}


# -- running --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StageRecord:
    name: str
    status: str  # ran | skipped
    seconds: float
    hash: str
    outputs: tuple[str, ...]
    background: bool = False  # ran in a second process, beside the stages after it


@dataclass(frozen=True)
class PipelineResult:
    out: str
    recipe: dict
    stages: tuple[StageRecord, ...]
    seconds: float
    summary: tuple[dict, ...]  # per variant: size, top-1, p50, speedup over fp32 Keras


def _stage_hash(spec: StageSpec, recipe: dict, upstream: dict[str, str], extra: dict | None = None) -> str:
    from edgex import __version__

    payload = {
        "edgex": __version__,
        "stage": spec.name,
        "recipe": {k: recipe[k] for k in spec.uses},
        "after": {name: upstream.get(name, "") for name in spec.after},
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _outputs_hash(out: Path, digest: str, outputs) -> str:
    """What downstream stages depend on: this stage's hash and the contents of the files it left."""
    from devices.files import sha256_file

    contents = {o: sha256_file(out / o) if (out / o).is_file() else "" for o in outputs}
    return hashlib.sha256(json.dumps([digest, contents], sort_keys=True).encode()).hexdigest()[:16]


def check_recipe(recipe: dict) -> None:
    """Refuse values that a later stage would refuse, before anything is written or trained."""
    from converters import TARGETS as FORMATS
    from devices.errors import choice_error
    from devices.registry import parse_device
    from edgex.deploy import TARGETS
    from edgex.models import preset_config

    preset_config(recipe["preset"])
    if recipe["deploy"]["enabled"] and recipe["deploy"]["target"] not in TARGETS:
        raise choice_error("deploy.target", recipe["deploy"]["target"], TARGETS)
    for fmt in ("tflite", "onnx"):
        for precision in recipe["convert"][fmt]:
            if precision not in FORMATS[fmt].precisions:
                raise choice_error(f"convert.{fmt} precision", precision, FORMATS[fmt].precisions)
    if not recipe["devices"]:
        raise EdgexError("recipe key 'devices' is empty: name at least one device, for example cpu")
    for device in recipe["devices"]:
        parse_device(device)


def _is_run_folder(out: Path) -> bool:
    return (out / "recipe.json").is_file() or (out / "stages").is_dir()


def run_pipeline(
    recipe: dict,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: Callable | None = None,
    on_stage: Callable | None = None,
) -> PipelineResult:
    """Run (or resume) every stage into ``out``; ``on_stage(record)`` after each stage."""
    out = Path(out)
    state_dir = out / "stages"
    check_recipe(recipe)
    if out.exists() and not out.is_dir():
        raise EdgexError(f"--out {out} is a file, not a folder")
    if out.exists() and any(out.iterdir()) and not (resume or force):
        raise EdgexError(f"run folder {out} already exists; pass --resume to continue it or --force to start over")
    if force and not resume and out.exists() and any(out.iterdir()):
        if not _is_run_folder(out):  # never delete a folder that edgex did not make
            raise EdgexError(
                f"--force starts a run over, but {out} is not an edgex run folder (no recipe.json): "
                "choose another --out"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "recipe.json", recipe)
    _write_recipe_yaml(out / "recipe.yaml", recipe)
    ctx = Context(out, recipe, progress)
    hashes: dict[str, str] = {}
    records = []
    running: dict[str, tuple[_BackgroundStage, str]] = {}

    def finish(record: StageRecord) -> None:
        if record.status == "ran":
            write_json_atomic(
                state_dir / f"{record.name}.json",
                {
                    "hash": record.hash,
                    "outputs": list(record.outputs),
                    "seconds": record.seconds,
                    "background": record.background,
                },
            )
        hashes[record.name] = _outputs_hash(out, record.hash, record.outputs)
        records.append(record)
        if on_stage:
            on_stage(record)

    def join_background() -> None:
        for name, (stage, digest) in list(running.items()):
            outputs, seconds = stage.result()
            del running[name]
            finish(StageRecord(name, "ran", seconds, digest, tuple(outputs), background=True))

    start = time.perf_counter()
    try:
        for name in STAGES:
            spec = STAGE_SPECS[name]
            if running and (name in TIMED_STAGES or set(spec.after) & set(running)):
                join_background()
            # The data stage depends on the data itself: an image folder whose files changed has a new fingerprint.
            extra = {"dataset": ctx.load_dataset().fingerprint} if name == "data" else None
            digest = _stage_hash(spec, recipe, hashes, extra)
            state_file = state_dir / f"{name}.json"
            previous = json.loads(state_file.read_text()) if state_file.is_file() else None
            if (
                resume
                and previous
                and previous.get("hash") == digest
                and all((out / o).exists() for o in previous.get("outputs", []))
            ):
                finish(StageRecord(name, "skipped", 0.0, digest, tuple(previous["outputs"])))
            elif name == "twin" and recipe["twin"]["enabled"] and recipe["twin"]["background"] and not _gpus():
                running[name] = (_BackgroundStage(name, out), digest)
            else:
                began = time.perf_counter()
                outputs = spec.run(ctx)
                finish(StageRecord(name, "ran", time.perf_counter() - began, digest, tuple(outputs)))
        join_background()
    finally:
        for stage, _ in running.values():  # the run failed or was interrupted
            stage.stop()
    records.sort(key=lambda record: STAGES.index(record.name))
    return PipelineResult(str(out), recipe, tuple(records), time.perf_counter() - start, tuple(summary_rows(out)))


class _BackgroundStage:
    """A stage run in a second Python process (``python -m edgex.pipeline``): it reads the run's recipe.json, and
    its output goes to ``stages/background/NAME.log``. A plain process, not multiprocessing: nothing of the caller's own
    script is run again in it."""

    def __init__(self, name: str, out: Path):
        import subprocess
        import sys

        self.name = name
        self._result = out / "stages" / "background" / f"{name}.json"
        self._log = self._result.with_suffix(".log")
        self._result.unlink(missing_ok=True)
        self._log.parent.mkdir(parents=True, exist_ok=True)
        root = str(Path(__file__).resolve().parents[1])  # where this edgex is, installed or not
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        with open(self._log, "wb") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "edgex.pipeline", name, str(out), str(self._result)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )

    def result(self) -> tuple[list[str], float]:
        """The stage's outputs and seconds, once it is done; its error, raised here."""
        code = self._process.wait()
        result = json.loads(self._result.read_text()) if self._result.is_file() else None
        if result is None:
            tail = " | ".join(self._log.read_text(errors="replace").strip().splitlines()[-3:])
            raise RuntimeError(f"{self.name} stage (in a background process) exited with code {code}: {tail}")
        if result["status"] == "ok":
            return result["outputs"], result["seconds"]
        message = f"{self.name} stage (in a background process): {result['message']}"
        if os.environ.get("EDGEX_DEBUG") == "1":
            message += "\n" + result["traceback"]
        if result["exit_code"] is None:  # not an EdgexError: a bug or an unexpected library failure
            raise RuntimeError(f"{result['error']}: {message}")
        error = EdgexError(message)
        error.exit_code = result["exit_code"]
        raise error

    def stop(self) -> None:
        import subprocess

        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


def _gpus() -> bool:
    """Whether TensorFlow trains on a GPU here: a second process would find its memory taken (and needs no help)."""
    from devices.tfkeras import tensorflow

    return bool(tensorflow().config.list_physical_devices("GPU"))


def _run_background_stage(name: str, out: Path, result_file: Path) -> None:
    """The second process's side: run one stage of the run in ``out``, write what happened to ``result_file``."""
    import traceback

    began = time.perf_counter()
    try:
        recipe = json.loads((out / "recipe.json").read_text())
        outputs = STAGE_SPECS[name].run(Context(out, recipe))
        result = {"status": "ok", "outputs": outputs, "seconds": time.perf_counter() - began}
    except BaseException as exc:
        result = {
            "status": "error",
            "error": type(exc).__name__,
            "exit_code": exc.exit_code if isinstance(exc, EdgexError) else None,
            "message": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500],
            "traceback": traceback.format_exc(),
        }
    write_json_atomic(result_file, result)


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
        rows.append(
            {
                "variant": name,
                "format": m["format"],
                "precision": m["precision"],
                "sparsity": m["sparsity"],
                "size_bytes": m["size_bytes"],
                "top1": m["top1"],
                "drop_points": m["drop_points"],
                "p50_ms": lat.p50 if lat else None,
                "p90_ms": lat.p90 if lat else None,
                "images_per_s": 1e3 / lat.mean if lat else None,
                "speedup_vs_keras": keras.p50 / lat.p50 if (lat and keras) else None,
                "path": m["path"],
                "command": m["command"],
            }
        )
    return rows


def _write_recipe_yaml(path: Path, recipe: dict) -> None:
    import yaml

    write_text_atomic(
        path,
        "# The resolved recipe of this run (defaults, recipe file, command-line flags).\n"
        + yaml.safe_dump(recipe, sort_keys=False),
    )


__all__ = ["DEFAULT_RECIPE", "STAGES", "PipelineResult", "best_variants", "resolve_recipe", "run_pipeline", "variants"]


if __name__ == "__main__":  # the second process of a background stage: NAME RUN_FOLDER RESULT_FILE
    import sys

    _run_background_stage(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]))
