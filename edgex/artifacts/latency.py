"""`edgex bench` as a library: benchmark models on devices with random or real inputs, and write the results
in the one bench schema (JSON and CSV) that compare, sweep, pipeline and deploy share."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from devices.bench import BenchConfig, BenchResult, benchmark, results_from_json, results_to_csv, results_to_json
from devices.errors import EdgexError, InputMismatch
from devices.files import write_json_atomic, write_text_atomic
from devices.metadata import read_metadata


def invalid_note(flagged: int, total: int) -> str | None:
    """The footnote for results marked * (not valid by the benchmark's own rules), or None when all are valid."""
    if not flagged:
        return None
    return (
        f"* {flagged} of {total} measurements are not valid (too few runs, too short, or a coefficient of "
        "variation above 10%): rerun with a larger --min-seconds, or on a quieter machine, before trusting them."
    )


def data_inputs(model_path: str | Path, spec: str, batch: int, batches: int = 16) -> list[np.ndarray]:
    """Real, preprocessed validation samples for a model, as ``batches`` batches of ``batch``."""
    import devices
    from edgex.artifacts.accuracy import dataset_for

    meta = read_metadata(model_path)
    if meta.input_shape:
        shape = meta.input_shape
    else:
        with devices.load_model(model_path) as model:
            shape = tuple(model.inputs[0].shape[1:])
    if len(shape) != 3 or shape[0] != shape[1] or shape[2] != 3:
        raise InputMismatch(f"--inputs data:{spec} gives square RGB images, but the model's input is {list(shape)}")
    dataset = dataset_for(meta, spec, int(shape[0]))
    images, _ = dataset.val.take(batch * batches, seed=0).arrays()
    x = meta.input_preprocessing.apply(images)
    usable = len(x) // batch * batch
    if usable == 0:
        raise EdgexError(f"the validation split of {spec} has fewer than {batch} samples")
    return [x[i : i + batch] for i in range(0, usable, batch)]


def parse_inputs(inputs: str) -> str | None:
    """``random`` -> None; ``data:SPEC`` -> SPEC."""
    if inputs == "random":
        return None
    if inputs.startswith("data:") and len(inputs) > 5:
        return inputs[5:]
    raise EdgexError(f"unknown --inputs {inputs!r}; use random or data:SPEC (e.g. data:digits)")


def run_bench(
    models: Sequence[str | Path],
    devices_: Sequence[str] = ("cpu",),
    *,
    runtime: str = "auto",
    threads: int | None = None,
    config: BenchConfig = BenchConfig(),
    inputs: str = "random",
    delegate_options: dict | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[BenchResult]:
    """One result row per (model, device). ``progress`` is ``devices.bench``'s own: the count of timed runs so far,
    called inside the timed loop on the device (not an ``edgex.progress`` receiver: ``devices`` knows no edgex)."""
    spec = parse_inputs(inputs)
    results = []
    for model in models:
        batches = data_inputs(model, spec, config.batch) if spec else None
        for device in devices_:
            result = benchmark(
                model,
                runtime=runtime,
                device=device,
                threads=threads,
                config=config,
                inputs=batches,
                delegate_options=delegate_options,
                progress=progress,
            )
            results.append(result.with_extra(label=Path(model).name, **_recorded(model)))
    return results


def run_interleaved(
    models: Sequence[str | Path],
    device: str = "cpu",
    *,
    runtime: str = "auto",
    threads: int | None = None,
    config: BenchConfig = BenchConfig(),
    inputs: str = "random",
) -> tuple[list[BenchResult], list]:
    """Models timed in turn in this process at the same thread count (devices.interleave): one row each, and the
    latency ratio of the first model to each other one (above 1: the other is faster)."""
    from devices.interleave import interleave
    from devices.registry import load_model

    if len(models) < 2:
        raise EdgexError(f"--interleave compares two or more models, got {len(models)}")
    spec = parse_inputs(inputs)
    if spec and len({_input_shape(m) for m in models}) > 1:
        raise EdgexError("--interleave with --inputs data:... needs models with the same input shape")
    batches = data_inputs(models[0], spec, config.batch) if spec else None
    with contextlib.ExitStack() as stack:
        loaded = [stack.enter_context(load_model(m, runtime=runtime, device=device, threads=threads)) for m in models]
        runs = interleave(loaded, config, batches)
    ratios = [runs.ratio(0, i) for i in range(1, len(models))]
    results = [
        r.with_extra(label=Path(m).name, **_recorded(m), **({"interleaved": ratios[i - 1].to_dict()} if i else {}))
        for i, (m, r) in enumerate(zip(models, runs.results))
    ]
    return results, ratios


def _input_shape(model) -> tuple:
    return read_metadata(model).input_shape


def _recorded(model) -> dict:
    """The bench row's columns that a model's metadata gives: its precision and format."""
    meta = read_metadata(model)
    return {k: v for k, v in (("precision", meta.precision), ("format", meta.format)) if v is not None}


def write_results(
    results: Sequence[BenchResult],
    json_path: str | Path | None = None,
    csv_path: str | Path | None = None,
    *,
    append: bool = False,
    force: bool = False,
) -> None:
    """Write rows as JSON and/or CSV; ``append`` adds to an existing file, otherwise it is never overwritten
    silently (``force`` does)."""
    rows = list(results)
    if json_path:
        json_path = Path(json_path)
        existing = []
        if json_path.exists():
            if append:
                existing = results_from_json(json.loads(json_path.read_text()))
            elif not force:
                raise EdgexError(f"{json_path} already exists; pass --append to add rows or --force to overwrite")
        write_json_atomic(json_path, results_to_json(existing + rows))
        all_rows = existing + rows
    else:
        all_rows = rows
    if csv_path:
        csv_path = Path(csv_path)
        if csv_path.exists() and not (append or force):
            raise EdgexError(f"{csv_path} already exists; pass --append to add rows or --force to overwrite")
        if append and csv_path.exists() and not json_path:
            raise EdgexError("--append to a CSV needs --json too (the JSON file keeps every row in full)")
        write_text_atomic(csv_path, results_to_csv(all_rows))


def write_study(files: dict, bench: Sequence[BenchResult], summary: str, name: str, data: dict) -> None:
    """The files of a sweep or a comparison: bench.json and .csv (the bench schema), summary.md, NAME.json last
    (its presence marks a finished study)."""
    write_json_atomic(files["bench"], results_to_json(bench))
    write_text_atomic(files["csv"], results_to_csv(bench))
    write_text_atomic(files["summary"], summary)
    write_json_atomic(files[name], data)
