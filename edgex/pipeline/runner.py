"""Running the stages: the hash of each stage's inputs, ``resume`` (skip what is unchanged), and the background
process that trains the twin beside the stages after it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from devices.errors import EdgexError, first_line
from devices.files import write_json_atomic
from edgex.pipeline.recipe import Recipe, as_recipe, check_recipe, write_recipe_yaml
from edgex.pipeline.runfolder import SummaryRow, summary_rows
from edgex.pipeline.stages import STAGE_SPECS, STAGES, TIMED_STAGES, Context, StageSpec
from edgex.progress import Progress


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
    recipe: Recipe
    stages: tuple[StageRecord, ...]
    seconds: float
    summary: tuple[SummaryRow, ...]  # per variant: size, top-1, p50, speedup over fp32 Keras


def stage_hash(spec: StageSpec, recipe: Recipe, upstream: dict[str, str], extra: dict | None = None) -> str:
    from edgex import __version__

    options = recipe.to_json()
    payload = {
        "edgex": __version__,
        "stage": spec.name,
        "recipe": {k: options[k] for k in spec.uses},
        "after": {name: upstream.get(name, "") for name in spec.after},
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _outputs_hash(out: Path, digest: str, outputs) -> str:
    """What downstream stages depend on: this stage's hash and the contents of the files it left."""
    from devices.files import sha256_file

    contents = {o: sha256_file(out / o) if (out / o).is_file() else "" for o in outputs}
    return hashlib.sha256(json.dumps([digest, contents], sort_keys=True).encode()).hexdigest()[:16]


def _is_run_folder(out: Path) -> bool:
    return (out / "recipe.json").is_file() or (out / "stages").is_dir()


def _prepare_folder(out: Path, recipe: Recipe, resume: bool, force: bool) -> None:
    """Check the recipe and the run folder, start it over with ``force``, and record the recipe in it."""
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
    write_json_atomic(out / "recipe.json", recipe.to_json())
    write_recipe_yaml(out / "recipe.yaml", recipe)


class _Run:
    """The state of one run: the hashes of the stages done so far, their records, the stages in the background."""

    def __init__(self, ctx: Context, resume: bool, on_stage: Callable | None):
        self.ctx, self.resume, self.on_stage = ctx, resume, on_stage
        self.hashes: dict[str, str] = {}
        self.records: list[StageRecord] = []
        self.running: dict[str, tuple[BackgroundStage, str]] = {}

    def finish(self, record: StageRecord) -> None:
        if record.status == "ran":
            state = {
                "hash": record.hash,
                "outputs": list(record.outputs),
                "seconds": record.seconds,
                "background": record.background,
            }
            write_json_atomic(self.ctx.out / "stages" / f"{record.name}.json", state)
        self.hashes[record.name] = _outputs_hash(self.ctx.out, record.hash, record.outputs)
        self.records.append(record)
        if self.on_stage:
            self.on_stage(record)

    def join_background(self) -> None:
        for name, (stage, digest) in list(self.running.items()):
            outputs, seconds = stage.result()
            del self.running[name]
            record = StageRecord(
                name=name, status="ran", seconds=seconds, hash=digest, outputs=tuple(outputs), background=True
            )
            self.finish(record)

    def unchanged(self, name: str, digest: str) -> tuple[str, ...] | None:
        """The outputs of the last run of this stage, when resuming and nothing it depends on changed."""
        state_file = self.ctx.out / "stages" / f"{name}.json"
        previous = json.loads(state_file.read_text()) if state_file.is_file() else None
        if not (self.resume and previous and previous.get("hash") == digest):
            return None
        outputs = tuple(previous.get("outputs", []))
        return outputs if all((self.ctx.out / o).exists() for o in outputs) else None

    def stage(self, name: str) -> None:
        spec, recipe = STAGE_SPECS[name], self.ctx.recipe
        if self.running and (name in TIMED_STAGES or set(spec.after) & set(self.running)):
            self.join_background()
        # The data stage depends on the data itself: an image folder whose files changed has a new fingerprint.
        extra = {"dataset": self.ctx.load_dataset().fingerprint} if name == "data" else None
        digest = stage_hash(spec, recipe, self.hashes, extra)
        outputs = self.unchanged(name, digest)
        if outputs is not None:
            self.finish(StageRecord(name=name, status="skipped", seconds=0.0, hash=digest, outputs=outputs))
        elif name == "twin" and recipe.twin.enabled and recipe.twin.background and not _gpus():
            self.running[name] = (BackgroundStage(name, self.ctx.out), digest)
        else:
            began = time.perf_counter()
            outputs = tuple(spec.run(self.ctx))
            seconds = time.perf_counter() - began
            self.finish(StageRecord(name=name, status="ran", seconds=seconds, hash=digest, outputs=outputs))


def run_pipeline(
    recipe: Recipe | dict,
    out: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    on_stage: Callable | None = None,
) -> PipelineResult:
    """Run (or resume) every stage into ``out``; ``on_stage(record)`` after each stage; ``progress`` receives the
    stages' Notes and their trainings' events (``edgex.progress``)."""
    recipe, out = as_recipe(recipe), Path(out)
    _prepare_folder(out, recipe, resume, force)
    run = _Run(Context(out, recipe, progress), resume, on_stage)
    start = time.perf_counter()
    try:
        for name in STAGES:
            run.stage(name)
        run.join_background()
    finally:
        for stage, _ in run.running.values():  # the run failed or was interrupted
            stage.stop()
    records = sorted(run.records, key=lambda record: STAGES.index(record.name))
    return PipelineResult(
        out=str(out),
        recipe=recipe,
        stages=tuple(records),
        seconds=time.perf_counter() - start,
        summary=tuple(summary_rows(out)),
    )


class BackgroundStage:
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
        root = str(Path(__file__).resolve().parents[2])  # where this edgex is, installed or not
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


def run_background_stage(name: str, out: Path, result_file: Path) -> None:
    """The second process's side: run one stage of the run in ``out``, write what happened to ``result_file``."""
    import traceback

    began = time.perf_counter()
    try:
        recipe = Recipe.from_json(json.loads((out / "recipe.json").read_text()))
        outputs = STAGE_SPECS[name].run(Context(out, recipe))
        result = {"status": "ok", "outputs": outputs, "seconds": time.perf_counter() - began}
    except BaseException as exc:
        result = {
            "status": "error",
            "error": type(exc).__name__,
            "exit_code": exc.exit_code if isinstance(exc, EdgexError) else None,
            "message": first_line(exc, 500),
            "traceback": traceback.format_exc(),
        }
    write_json_atomic(result_file, result)
