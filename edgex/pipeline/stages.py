"""The stages of ``edgex pipeline``, one small function each, and the table of what each reads.

Each stage takes the run's Context and returns the files it wrote, relative to the run folder.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devices.errors import EdgexError
from devices.files import file_size, write_json_atomic, write_text_atomic
from edgex.pipeline.recipe import Recipe
from edgex.pipeline.runfolder import ab_files, artifact_file, best_variants, summary_rows, variants
from edgex.progress import Note, Progress

STAGES = ("data", "train", "twin", "prune", "quantize", "convert", "evaluate", "bench", "separable", "study", "tune",
          "deploy", "report")  # fmt: skip
TIMED_STAGES = ("bench", "separable", "study", "tune")  # nothing runs beside them


@dataclass
class Context:
    out: Path
    recipe: Recipe
    progress: Progress | None = None
    dataset: object = None

    def rel(self, path) -> str:
        return str(Path(path).relative_to(self.out)) if Path(path).is_absolute() else str(path)

    def load_dataset(self):
        if self.dataset is None:
            from edgex.data import load_dataset
            from edgex.models import preset_config

            size = preset_config(self.recipe.preset).input_size
            if self.recipe.train.from_model:  # the model to fine-tune sets the input size, not the preset
                from edgex.training.transfer import inspect_classifier

                size = inspect_classifier(self.recipe.train.from_model)[1].input_size
            self.dataset = load_dataset(self.recipe.data, size, seed=self.recipe.seed)
        return self.dataset

    def line(self, text: str) -> None:
        if self.progress:
            self.progress(Note(text))


@dataclass(frozen=True)
class StageSpec:
    name: str
    run: Callable[[Context], list[str]]  # returns the output files (relative to the run folder)
    uses: tuple[str, ...]  # recipe keys it depends on
    after: tuple[str, ...]  # stages whose outputs it reads


def stage_data(ctx: Context) -> list[str]:
    dataset = ctx.load_dataset()
    info = dataset.describe()
    if dataset.scan is not None:
        info["scan"] = dataset.scan.summary_lines()
    write_json_atomic(ctx.out / "data.json", info)
    return ["data.json"]


def stage_train(ctx: Context) -> list[str]:
    from edgex.training.trainer import transfer_options

    _train_into(ctx, ctx.recipe.train.epochs, {}, "train", transfer_options(ctx.recipe.to_json()["train"]))
    return ["train/model.keras", "train/model.keras.json"]


def stage_twin(ctx: Context) -> list[str]:
    if not ctx.recipe.twin.enabled:
        return []
    _train_into(ctx, ctx.recipe.twin.epochs, {"conv": "regular"}, "twin")
    return ["twin/model.keras", "twin/model.keras.json", *_convert_twin(ctx)]


def _train_into(ctx: Context, epochs: int, model: dict, folder: str, transfer: dict | None = None) -> None:
    """Continue an interrupted training run with the same options; start over when the options changed."""
    from edgex.training.trainer import TrainConfig, changed_options, train

    r, t = ctx.recipe, ctx.recipe.train
    config = TrainConfig(
        data=r.data,
        preset=r.preset,
        epochs=epochs,
        batch_size=t.batch_size,
        optimizer=t.optimizer,
        lr=t.lr,
        seed=r.seed,
        augment=tuple(t.augment),
        **({"model": model} if model else {}),
        **(transfer or {}),  # the twin trains from scratch: its regular convolutions have no pretrained weights
    )
    same = changed_options(ctx.out / folder, config) == {}
    train(config, ctx.out / folder, resume=same, force=not same, progress=ctx.progress)


def _convert_twin(ctx: Context) -> list[str]:
    """The twin in the A/B's formats, with the options the convert and quantize stages give Xception."""
    from converters import load_source
    from converters.registry import format_for_runtime

    pairs = ab_files(ctx.recipe)
    if not pairs:
        return []
    source = load_source(ctx.out / "twin/model.keras")
    for (runtime, precision), (_, twin_file) in pairs.items():
        _export(ctx, source, format_for_runtime(runtime), precision, twin_file)
    return [twin_file for _, twin_file in pairs.values()]


def _export(ctx: Context, source, to: str, precision: str, out: str):
    """How this run converts a model (Xception in the convert stage, its twin for the A/B): the recipe's data,
    calibration samples and opset."""
    from edgex.artifacts.convert import export_model

    r = ctx.recipe
    return export_model(
        source.path,
        to,
        precision,
        data=r.data,
        opset=r.convert.opset,
        calib_samples=r.quantize.calib_samples,
        out=ctx.out / out,
        force=True,
        source=source,
        dataset=ctx.load_dataset(),
    )


def stage_prune(ctx: Context) -> list[str]:
    from converters.registry import artifact_name
    from edgex.optimize.prune import prune

    p = ctx.recipe.prune
    if not p.enabled:
        return []
    # Latency is the bench stage's job: prune may share the machine with the twin's training.
    report = prune(
        ctx.out / "train/model.keras",
        p.sparsity,
        data=ctx.recipe.data,
        schedule=p.schedule,
        epochs=p.epochs,
        out=ctx.out / "prune",
        force=True,
        measure_latency=False,
        progress=ctx.progress,
    )
    pruned = Path(report.pruned_model)
    return [
        ctx.rel(pruned),
        "prune/prune_report.json",
        ctx.rel(pruned.with_name(artifact_name(pruned.stem, "tflite", "fp32"))),
    ]


def stage_quantize(ctx: Context) -> list[str]:
    from edgex.optimize.quantize import REPORT_FILE, quantize

    q = ctx.recipe.quantize
    outputs = []
    for mode in ("int8", "qat"):
        if not getattr(q, mode):
            continue
        report = quantize(
            ctx.out / "train/model.keras",
            mode,
            data=ctx.recipe.data,
            epochs=q.qat_epochs,
            calib_samples=q.calib_samples,
            max_drop=q.max_drop,
            out=ctx.out / "quantize" / mode,
            force=True,
            progress=ctx.progress,
        )
        outputs += [ctx.rel(report.artifact), f"quantize/{mode}/{REPORT_FILE}"]
    return outputs


def stage_convert(ctx: Context) -> list[str]:
    from converters import load_source

    c = ctx.recipe.convert
    source = load_source(ctx.out / "train/model.keras")
    jobs = [("tflite", p) for p in c.tflite] + [("onnx", p) for p in c.onnx]
    if c.edgetpu:
        jobs.append(("edgetpu", "int8"))
    return [ctx.rel(_export(ctx, source, to, precision, artifact_file(to, precision)).path) for to, precision in jobs]


def stage_evaluate(ctx: Context) -> list[str]:
    from edgex.artifacts.accuracy import evaluate_model

    dataset = ctx.load_dataset()
    metrics = {}
    for name, v in variants(ctx.out, ctx.recipe).items():
        result = evaluate_model(ctx.out / v.path, ctx.recipe.data, dataset=dataset)
        metrics[name] = {
            **v.to_json(),
            "top1": result.accuracy.top1,
            "top5": result.accuracy.top5,
            "samples": result.accuracy.samples,
            "runtime": result.runtime,
            "size_bytes": file_size(ctx.out / v.path),
        }
        ctx.line(f"  {name}: top-1 {100 * result.accuracy.top1:.2f}%")
    float_top1 = metrics.get("keras fp32", {}).get("top1")
    for m in metrics.values():
        m["drop_points"] = None if float_top1 is None else 100 * (float_top1 - m["top1"])
    write_json_atomic(ctx.out / "metrics.json", metrics)
    return ["metrics.json"]


def stage_bench(ctx: Context) -> list[str]:
    from converters.registry import runtime_for_format
    from devices.bench import BenchConfig, benchmark, results_to_csv, results_to_json

    b = ctx.recipe.bench
    config = BenchConfig(warmup=b.warmup, runs=b.runs, min_seconds=b.min_seconds, max_seconds=b.max_seconds)
    results = []
    for index, device in enumerate(ctx.recipe.devices):
        for name, v in variants(ctx.out, ctx.recipe).items():
            runtime = runtime_for_format(v.format)
            result = benchmark(ctx.out / v.path, runtime=runtime, device=device, threads=b.threads, config=config)
            # The first device's rows carry the plain variant name: the summary, the report and the best variant
            # are for it; the other devices' rows are in bench.json and bench.csv.
            label = name if index == 0 else f"{name} on {device}"
            results.append(
                result.with_extra(label=label, variant=name, device=device, precision=v.precision, sparsity=v.sparsity)
            )
            ctx.line(f"  {name} on {device}: p50 {result.latency.p50:.3f} ms")
    write_json_atomic(ctx.out / "bench.json", results_to_json(results))
    write_text_atomic(ctx.out / "bench.csv", results_to_csv(results))
    return ["bench.json", "bench.csv"]


def stage_separable(ctx: Context) -> list[str]:
    outputs = []
    if ctx.recipe.compare.enabled and ctx.recipe.twin.enabled:
        outputs += _model_ab(ctx)
    if ctx.recipe.sweep.enabled:
        outputs += _layer_sweep(ctx)
    return outputs


def _model_ab(ctx: Context) -> list[str]:
    """Xception against its twin, timed on the files the convert, quantize and twin stages made."""
    from edgex.sepconv.compare import CompareConfig, compare

    r, c = ctx.recipe, ctx.recipe.compare
    xception, twin = str(ctx.out / "train/model.keras"), str(ctx.out / "twin/model.keras")
    artifacts = {}
    for (runtime, precision), (xception_file, twin_file) in ab_files(r).items():
        if (ctx.out / xception_file).is_file() and (ctx.out / twin_file).is_file():
            artifacts[xception, runtime, precision] = str(ctx.out / xception_file)
            artifacts[twin, runtime, precision] = str(ctx.out / twin_file)
    config = CompareConfig(
        preset=None,
        models=(xception, twin),
        precisions=tuple(c.precisions),
        runtimes=tuple(c.runtimes),
        device=r.devices[0],
        data=r.data,
        calib_samples=r.quantize.calib_samples,
        breakdown=bool(c.breakdown),
        breakdown_runtimes=tuple(c.breakdown),
    )
    result = compare(config, ctx.out / "compare", force=True, artifacts=artifacts)
    return [ctx.rel(p) for p in result.files.values()]


def _layer_sweep(ctx: Context) -> list[str]:
    from edgex.sepconv.sweep import SweepConfig, sweep

    s = ctx.recipe.sweep
    shapes = str(ctx.out / "train/model.keras") if s.shapes == "model" else s.shapes
    config = SweepConfig(
        input_size=s.input_size,
        shapes=shapes,
        variants=tuple(s.variants),
        precisions=tuple(s.precisions),
        runtimes=tuple(s.runtimes),
        device=ctx.recipe.devices[0],
        threads=s.threads,
    )
    result = sweep(config, ctx.out / "sweep", force=True)
    shutil.copyfile(ctx.out / "sweep" / "sweep.json", ctx.out / "sweep.json")
    return [ctx.rel(p) for p in result.files.values()] + ["sweep.json"]


def stage_tune(ctx: Context) -> list[str]:
    """edgex tune on the trained model in tune/; a rerun with other options starts the tune over."""
    from edgex.pipeline.recipe import tune_config
    from edgex.tune import tune

    if not ctx.recipe.tune.enabled:
        return []
    result = tune(
        ctx.out / "train/model.keras", tune_config(ctx.recipe), ctx.out / "tune", force=True,
        progress=lambda event: _prefixed_line(ctx, "tune", event),
    )  # fmt: skip
    winner = [ctx.rel(result.winner.artifact), ctx.rel(result.winner.artifact) + ".json"] if result.winner else []
    return [*(ctx.rel(path) for path in result.files.values()), *winner]


def _tune_winner(ctx: Context) -> Path | None:
    """The tune stage's winner, when the stage ran and one passed."""
    import json

    found = ctx.out / "tune" / "tune.json"
    if not ctx.recipe.tune.enabled or not found.is_file():
        return None
    winner = json.loads(found.read_text()).get("winner")
    return Path(winner["artifact"]) if winner else None


def stage_deploy(ctx: Context) -> list[str]:
    from edgex.deploy import DEPLOY_TARGETS

    d = ctx.recipe.deploy
    if not d.enabled:
        return []
    winner = _tune_winner(ctx)
    if winner is not None and not DEPLOY_TARGETS[d.target].coral:
        return _bundle(ctx, winner, "tune winner")
    rows = summary_rows(ctx.out)
    deployable = [r.variant for r in rows if r.format in ("tflite", "onnx", "edgetpu")]
    if DEPLOY_TARGETS[d.target].coral:  # the Edge TPU-ready model (its compiled twin is found next to it)
        deployable = [r.variant for r in rows if r.format == "edgetpu"]
        if not deployable:
            raise EdgexError(f"deploy target {d.target} needs the Edge TPU model: set convert.edgetpu: true")
    smallest = best_variants(rows, ctx.recipe.report.max_drop).smallest
    choice = smallest if smallest in deployable else next(iter(deployable), None)
    if choice is None:
        raise EdgexError("no deployable variant (.tflite or .onnx) was produced; enable a conversion")
    return _bundle(ctx, ctx.out / next(r.path for r in rows if r.variant == choice), choice)


def _bundle(ctx: Context, model: Path, variant: str) -> list[str]:
    from edgex.deploy import build_bundle

    d = ctx.recipe.deploy
    bundle = build_bundle(
        model, d.target, ctx.out / "bundle.tar.gz", eval_data=ctx.recipe.data if d.eval_data else None, force=True
    )
    write_json_atomic(
        ctx.out / "deploy.json",
        {"variant": variant, "bundle": "bundle.tar.gz", "target": d.target, "notes": list(bundle.notes)},
    )
    return ["bundle.tar.gz", "deploy.json"]


def stage_study(ctx: Context) -> list[str]:
    """Each study of the recipe in study/NAME/; a rerun with the same training options reuses finished seeds."""
    from edgex.pipeline.recipe import study_configs
    from edgex.study import run_study
    from edgex.study.run import changed_training

    if not ctx.recipe.study.enabled:
        return []
    files = []
    for config in study_configs(ctx.recipe):
        folder = ctx.out / "study" / config.study
        restart = changed_training(folder, config) != {}
        result = run_study(config, folder, force=restart, progress=lambda event: _prefixed_line(ctx, "study", event))
        files += [ctx.rel(folder / name) for name in ("study.json", "study.csv", "summary.md")]
        files += [ctx.rel(path) for path in result.files.values() if str(path).endswith(".png")]
    return files


def _prefixed_line(ctx: Context, stage: str, event) -> None:
    """A stage's Note as one line of the pipeline's output, the stage's name before it."""
    if isinstance(event, Note):
        ctx.line(f"{stage} {event.text}")


def stage_report(ctx: Context) -> list[str]:
    from edgex.pipeline.report import write_report

    return [ctx.rel(p) for p in write_report(ctx.out, ctx.recipe)]


STAGE_SPECS = {
    "data": StageSpec("data", stage_data, ("data", "preset", "seed"), ()),
    "train": StageSpec("train", stage_train, ("data", "preset", "seed", "train"), ("data",)),
    "twin": StageSpec(
        "twin", stage_twin, ("data", "preset", "seed", "train", "twin", "convert", "quantize", "compare"), ("data",)
    ),
    "prune": StageSpec("prune", stage_prune, ("data", "prune"), ("train",)),
    "quantize": StageSpec("quantize", stage_quantize, ("data", "quantize"), ("train",)),
    "convert": StageSpec("convert", stage_convert, ("data", "convert", "quantize"), ("train",)),
    "evaluate": StageSpec("evaluate", stage_evaluate, ("data",), ("train", "prune", "quantize", "convert")),
    "bench": StageSpec("bench", stage_bench, ("devices", "bench"), ("train", "prune", "quantize", "convert")),
    "separable": StageSpec(
        "separable", stage_separable, ("data", "devices", "compare", "sweep"), ("train", "twin", "quantize", "convert")
    ),
    "study": StageSpec("study", stage_study, ("data", "seed", "study"), ("data",)),
    "tune": StageSpec("tune", stage_tune, ("data", "devices", "seed", "tune", "report"), ("train",)),
    "deploy": StageSpec(
        "deploy",
        stage_deploy,
        ("data", "deploy", "report", "tune"),
        ("evaluate", "bench", "prune", "quantize", "convert", "tune"),
    ),
    "report": StageSpec(
        "report",
        stage_report,
        ("report",),
        (
            "data",
            "train",
            "twin",
            "prune",
            "quantize",
            "convert",
            "evaluate",
            "bench",
            "separable",
            "study",
            "tune",
            "deploy",
        ),
    ),
}
