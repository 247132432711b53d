"""Running a study: every variant trained with every seed (each result saved as it completes and reused on a
rerun), the seed-0 model of each variant timed per runtime and precision, and the claims compared."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from pathlib import Path

from devices.bench import BenchConfig
from devices.errors import EdgexError, first_line
from devices.files import write_json_atomic
from edgex.progress import Note, Progress, notes_once
from edgex.study.config import INCEPTION_INPUT, StudyConfig, Variant
from edgex.study.results import Comparison, Latency, SeedRun, StudyResult, VariantResult

STUDY_BENCH = BenchConfig(warmup=2, min_warmup_seconds=0.05, runs=20, min_seconds=0.3, max_seconds=5.0)
CONFIG_FILE = "study_config.json"
# A rerun reuses saved (variant, seed) results only when these agree; seeds, runtimes and precisions may change.
TRAINING_FIELDS = ("study", "epochs", "data", "preset", "batch_size")


def run_study(
    config: StudyConfig, out: str | Path, *, force: bool = False, progress: Progress | None = None
) -> StudyResult:
    """Train, time and compare the variants of ``config.study``; writes study.json, study.csv, summary.md, plots.

    ``progress`` receives a Note per finished step, and each distinct note of the trainings once (which kernel
    grouped convolutions train on)."""
    from devices.sysinfo import cpu_model
    from edgex.study.report import write_study_files

    out = Path(out)
    start = time.perf_counter()
    _prepare(out, config, force)
    say = _Say(progress)
    variants = []
    for variant in config.variants():
        runs = tuple(_seed_run(config, variant, seed, out, say) for seed in range(config.seeds))
        params, macs = _costs(_model_path(out, variant, 0))
        latency = tuple(_latency(config, variant, out, say))
        variants.append(
            VariantResult(
                name=variant.name,
                architecture=variant.architecture,
                model=variant.model,
                params=params,
                macs=macs,
                runs=runs,
                latency=latency,
            )
        )
    by_name = {v.name: v for v in variants}
    comparisons = tuple(Comparison.of(c, by_name[c.better], by_name[c.worse]) for c in config.claims())
    result = StudyResult(
        config=config,
        variants=tuple(variants),
        comparisons=comparisons,
        seconds=time.perf_counter() - start,
        out_dir=str(out),
        cpu=cpu_model(),
    )
    return write_study_files(result, out)


class _Say:
    """The study's lines, as Notes to its progress; ``trainings`` passes on each distinct note of the trainings
    once (the same line for every variant and seed would drown the study's own)."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.trainings = notes_once(progress)

    def __call__(self, text: str) -> None:
        if self.progress is not None:
            self.progress(Note(text))


def changed_training(out: str | Path, config: StudyConfig) -> dict[str, tuple]:
    """The training options (old, new) in which the study saved in ``out`` differs from ``config``; {} when the
    folder holds none, or one whose finished trainings ``config`` can reuse."""
    recorded = Path(out) / CONFIG_FILE
    if not recorded.is_file():
        return {}
    before = json.loads(recorded.read_text())
    wanted = {k: config.to_dict()[k] for k in TRAINING_FIELDS}
    return {k: (before.get(k), v) for k, v in wanted.items() if before.get(k) != v}


def _prepare(out: Path, config: StudyConfig, force: bool) -> None:
    wanted = {k: config.to_dict()[k] for k in TRAINING_FIELDS}
    changed = {} if force else changed_training(out, config)
    if changed:
        what = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise EdgexError(f"{out} holds a study with other options ({what}); use another --out or --force")
    if force:
        shutil.rmtree(out / "runs", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / CONFIG_FILE, wanted)


def _seed_dir(out: Path, variant: Variant, seed: int) -> Path:
    return out / "runs" / variant.tag / f"seed{seed}"


def _model_path(out: Path, variant: Variant, seed: int) -> Path:
    return _seed_dir(out, variant, seed) / "model.keras"


def _seed_run(config: StudyConfig, variant: Variant, seed: int, out: Path, say: _Say) -> SeedRun:
    folder = _seed_dir(out, variant, seed)
    saved = folder / "result.json"
    if saved.is_file() and _model_path(out, variant, seed).is_file():
        run = SeedRun.from_dict(json.loads(saved.read_text()))
        say(f"{variant.name} seed {seed}: top-1 {run.val_top1:.2%} (saved)")
        return run
    if variant.architecture == "inception_v3":
        top1, curve, seconds = _train_inception(config, variant, seed, folder)
    else:
        top1, curve, seconds = _train_xception(config, variant, seed, folder, say.trainings)
    curve = tuple(float(a) for a in curve)
    run = SeedRun(variant=variant.name, seed=seed, val_top1=float(top1), curve=curve, seconds=seconds)
    write_json_atomic(saved, run.to_dict())
    say(f"{variant.name} seed {seed}: top-1 {run.val_top1:.2%} after {config.epochs} epochs ({seconds:.0f} s)")
    return run


def _train_xception(config: StudyConfig, variant: Variant, seed: int, folder: Path, progress: Progress | None):
    from edgex.training.trainer import TrainConfig, train

    train_config = TrainConfig(
        data=config.data,
        preset=config.preset_name,
        model=dict(variant.model),
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=seed,
    )
    result = train(train_config, folder, force=True, progress=progress)
    return result.val_top1, result.history.get("val_accuracy", [result.val_top1]), result.seconds


def _train_inception(config: StudyConfig, variant: Variant, seed: int, folder: Path):
    """keras.applications.InceptionV3 (weights=None) with the recipe train() gives Xception: same data, split,
    preprocessing, crop augmentation, batch, Adam 2e-3 with cosine decay, seed."""
    from devices.files import atomic_path, utc_now
    from devices.metadata import ArtifactMetadata, write_metadata
    from devices.preprocess import XCEPTION
    from devices.tfkeras import keras
    from edgex.data import load_dataset
    from edgex.training.steps import compile_classifier
    from edgex.training.trainer import settle_bn_statistics, val_top1, without_optimizer

    k = keras()
    k.utils.set_random_seed(seed)
    dataset = load_dataset(config.data, INCEPTION_INPUT, val_split=0.2, seed=seed)
    steps = max(1, len(dataset.train) // config.batch_size)
    train_ds = dataset.train.tf_dataset(config.batch_size, XCEPTION, shuffle=True, augment=("crop",), seed=seed,
                                        repeat=True)  # fmt: skip
    val_ds = dataset.val.tf_dataset(max(config.batch_size, 128), XCEPTION)
    model = k.applications.InceptionV3(
        weights=None, input_shape=(INCEPTION_INPUT, INCEPTION_INPUT, 3), classes=dataset.classes
    )
    schedule = k.optimizers.schedules.CosineDecay(2e-3, steps * config.epochs)
    compile_classifier(model, k.optimizers.Adam(schedule))
    start = time.perf_counter()
    history = model.fit(train_ds, validation_data=val_ds, epochs=config.epochs, steps_per_epoch=steps, verbose=0)
    seconds = time.perf_counter() - start
    curve = [float(a) for a in history.history["val_accuracy"]]
    # the same settling of BatchNormalization statistics as train() gives Xception after training from scratch
    bn = settle_bn_statistics(model, dataset, XCEPTION, val_top1(val_ds), seed, curve[-1])
    top1 = bn["val_top1_after"] if bn["kept"] else curve[-1]
    path = folder / "model.keras"
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, overwrite=True) as tmp:
        without_optimizer(model).save(tmp)
    meta = ArtifactMetadata(
        created=utc_now(),
        input_shape=(INCEPTION_INPUT, INCEPTION_INPUT, 3),
        class_names=dataset.class_names,
        preprocessing=XCEPTION,
        dataset=dataset.record(),
        seed=seed,
        epochs=config.epochs,
        params=int(model.count_params()),
        sections={"batchnorm_statistics": bn},
    )
    write_metadata(path, meta)
    k.backend.clear_session()
    return top1, curve, seconds


def _costs(model_path: Path) -> tuple[int, int]:
    from devices.tensorflow import load_keras_model
    from devices.tfkeras import keras
    from edgex.models.costs import model_cost

    cost = model_cost(load_keras_model(model_path))
    keras().backend.clear_session()
    return cost.total_params, cost.macs


def _latency(config: StudyConfig, variant: Variant, out: Path, say) -> list[Latency]:
    """p50 of the seed-0 model per runtime and precision (saved beside it, reused on a rerun)."""
    saved = out / "runs" / variant.tag / "latency.json"
    wanted = [(r, p) for r in config.runtimes for p in config.precisions]
    known = {}
    if saved.is_file():
        known = {(d["runtime"], d["precision"]): Latency(**d) for d in json.loads(saved.read_text())}
    rows = [known.get(pair) or _time(config, out, variant, *pair) for pair in wanted]
    merged = {**known, **{(r.runtime, r.precision): r for r in rows}}
    write_json_atomic(saved, [asdict(row) for row in merged.values()])
    for row in rows:
        timing = f"{row.p50_ms:.3f} ms" if row.p50_ms is not None else row.note
        say(f"{variant.name} {row.runtime} {row.precision}: p50 {timing}")
    return rows


def _time(config: StudyConfig, out: Path, variant: Variant, runtime: str, precision: str) -> Latency:
    from devices.bench import benchmark
    from edgex.artifacts.convert import export_model

    model = _model_path(out, variant, 0)
    to = "tflite" if runtime == "litert" else "onnx"
    path = model.with_name(f"model_{precision}.{to}")
    try:
        export_model(model, to, precision, data=config.data, calib_samples=64, parity_samples=64, out=path, force=True)
        result = benchmark(path, runtime=runtime, threads=config.threads, config=STUDY_BENCH)
    except EdgexError as exc:  # reported in the table: the study goes on with the other runtimes
        failed = f"failed: {first_line(exc, 160)}"
        return Latency(runtime=runtime, precision=precision, p50_ms=None, valid=False, note=failed)
    return Latency(runtime=runtime, precision=precision, p50_ms=result.latency.p50, valid=result.valid)


__all__ = ["STUDY_BENCH", "run_study"]
