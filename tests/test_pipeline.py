"""Issue: `edgex pipeline` end to end on a reduced budget, resumable stages, and the report in a real browser."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edgex.pipeline import DEFAULT_RECIPE, STAGES, resolve_recipe
from tests.conftest import assert_readable

RECIPE = """
preset: tiny
train: {epochs: 2}
twin: {epochs: 1}
prune: {sparsity: 0.5, epochs: 1}
quantize: {qat_epochs: 1, calib_samples: 50}
convert: {tflite: [fp32], onnx: [fp32], edgetpu: true}
bench: {runs: 5, min_seconds: 0.05, warmup: 1}
compare: {runtimes: [litert, onnxruntime], precisions: [fp32], breakdown: [onnxruntime]}
sweep: {shapes: model, variants: [regular, separable], precisions: [fp32]}
deploy: {target: generic-x86_64, eval_data: true}
report: {max_drop: 5.0}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One reduced-budget pipeline run through the CLI; returns (run folder, recipe file, cli output)."""
    from edgex.cli import main

    folder = tmp_path_factory.mktemp("pipeline")
    recipe = folder / "recipe.yaml"
    recipe.write_text(RECIPE)
    out = folder / "run"
    assert main(["pipeline", "--config", str(recipe), "--out", str(out)]) == 0
    return out, recipe


def _stage_lines(output: str) -> dict[str, str]:
    lines = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in STAGES and parts[1] in ("ran", "skipped"):
            lines[parts[0]] = parts[1]
    return lines


@pytest.mark.slow
def test_run_folder_has_every_artifact_and_report(run):
    out, _ = run
    for name in (
        "recipe.yaml",
        "recipe.json",
        "data.json",
        "metrics.json",
        "bench.json",
        "bench.csv",
        "sweep.json",
        "report.html",
        "report.md",
        "bundle.tar.gz",
        "deploy.json",
        "train/model.keras",
        "twin/model.keras",
        "compare/compare.json",
    ):
        assert (out / name).exists(), name
    assert {p.stem for p in (out / "stages").glob("*.json")} == set(STAGES)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {
        "keras fp32",
        "tflite fp32",
        "tflite int8 (PTQ)",
        "tflite int8 (QAT)",
        "onnx fp32",
        "edgetpu int8",
        "tflite fp32 pruned 50%",
    } <= set(metrics)
    for name, m in metrics.items():
        assert 0 <= m["top1"] <= 1 and m["size_bytes"] > 0, name
        assert (out / m["path"]).exists()
    bench = json.loads((out / "bench.json").read_text())
    assert bench["schema"] == "edgex.bench/1" and len(bench["results"]) == len(metrics)
    resolved = json.loads((out / "recipe.json").read_text())
    assert resolved["preset"] == "tiny" and resolved["train"]["epochs"] == 2
    assert resolved["seed"] == DEFAULT_RECIPE.seed  # defaults fill what the recipe leaves out
    report = (out / "report.md").read_text()
    assert "## Variants" in report and "Reproduce" in report and "edgex quantize" in report
    assert f"--calib-samples 50 --out {out}/quantize/int8" in report and "--conv regular" in report
    from devices.bundle import safe_extract, verify

    assert verify(safe_extract(out / "bundle.tar.gz", out.parent / "unpacked")) == []
    # the sweep stage timed the layer shapes of the model it trained (the README tour's `edgex sweep --shapes
    # runs/tiny/model.keras` is left to this test), in the variants the recipe asks for
    from edgex.sepconv.layer_shapes import resolve_shapes

    rows = json.loads((out / "sweep.json").read_text())["rows"]
    shapes = {spec.label for _, spec, _ in resolve_shapes(str(out / "train" / "model.keras"), 32)}
    assert shapes and {r["shape"] for r in rows} == shapes
    assert {r["variant"] for r in rows} == {"regular", "separable"}


@pytest.mark.slow
def test_twin_runs_beside_other_stages_and_the_ab_times_the_pipelines_own_files(run):
    """The twin is trained and converted in a second process, done before anything is timed; the A/B times the
    files the convert stage made for Xception against the twin converted the same way."""
    out, _ = run
    twin_state = json.loads((out / "stages" / "twin.json").read_text())
    assert twin_state["background"] is True
    assert {"twin/model_fp32.tflite", "twin/model_fp32.onnx"} <= set(twin_state["outputs"])
    assert (out / "stages" / "twin.json").stat().st_mtime <= (out / "bench.json").stat().st_mtime
    rows = json.loads((out / "compare" / "compare.json").read_text())["rows"]
    timed = {(r["model"].split("/")[-2], r["runtime"]): r["artifact"] for r in rows}
    assert timed == {
        ("train", "litert"): str(out / "artifacts/model_fp32.tflite"),
        ("train", "onnxruntime"): str(out / "artifacts/model_fp32.onnx"),
        ("twin", "litert"): str(out / "twin/model_fp32.tflite"),
        ("twin", "onnxruntime"): str(out / "twin/model_fp32.onnx"),
    }
    twin_meta = json.loads((out / "twin" / "model_fp32.onnx.json").read_text())
    assert twin_meta["parity"]["passed"] and twin_meta["opset"] == DEFAULT_RECIPE.convert.opset


def test_a_background_stage_that_fails_is_the_runs_one_line_error(tmp_path):
    from devices.errors import EdgexError
    from edgex.pipeline.runner import BackgroundStage

    (tmp_path / "recipe.json").write_text(json.dumps(resolve_recipe(None, {"preset": "tiny"}).to_json()))
    (tmp_path / "twin").write_text("not a folder")
    stage = BackgroundStage("twin", tmp_path)
    with pytest.raises(EdgexError, match=r"^twin stage \(in a background process\): .*twin") as failure:
        stage.result()
    assert "\n" not in str(failure.value)
    assert (tmp_path / "stages" / "background" / "twin.log").is_file()


def test_a_background_stage_that_dies_names_its_exit_code(tmp_path):
    from edgex.pipeline.runner import BackgroundStage

    stage = BackgroundStage("twin", tmp_path)
    stage._process.kill()  # as the kernel's out-of-memory killer would
    with pytest.raises(RuntimeError, match=r"twin stage \(in a background process\) exited with code -9"):
        stage.result()


def test_force_never_deletes_a_folder_edgex_did_not_make(tmp_path, cli):
    keep = tmp_path / "thesis"
    keep.mkdir()
    (keep / "chapter1.tex").write_text("precious")
    result = cli("pipeline", "--preset", "tiny", "--out", keep, "--force")
    assert result.exit_code == 2 and "not an edgex run folder" in result.stderr
    assert (keep / "chapter1.tex").read_text() == "precious"


def test_a_bad_value_is_refused_before_the_run_folder_is_made(tmp_path, cli):
    result = cli("pipeline", "--preset", "huge", "--out", tmp_path / "new")
    assert result.exit_code == 2 and "unknown preset 'huge'" in result.stderr
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_existing_run_folder_needs_resume_or_force(run, cli):
    out, recipe = run
    result = cli("pipeline", "--config", recipe, "--out", out)
    assert result.exit_code == 2 and "--resume" in result.stderr


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("trian: {epochs: 1}\n", "unknown recipe key 'trian'"),
        ("train: {epoch: 1}\n", "unknown recipe key 'train.epoch'"),
        ("train: 5\n", "must be a mapping"),
        ("[1, 2\n", "not valid YAML"),
    ],
)
def test_bad_recipes_are_one_line_errors(tmp_path, cli, text, fragment):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text)
    result = cli("pipeline", "--config", recipe, "--out", tmp_path / "out")
    assert result.exit_code == 2 and fragment in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_flags_override_the_recipe(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("preset: tiny\ntrain: {epochs: 3}\n")
    resolved = resolve_recipe(recipe, {"preset": "mini", "train.epochs": 7, "devices": ["cpu"]})
    assert resolved.preset == "mini" and resolved.train.epochs == 7


@pytest.mark.slow
@pytest.mark.browser
def test_report_opens_in_chromium_with_every_image_and_a_row_per_variant(run):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium not installed (apt-get install chromium)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    out, _ = run
    metrics = json.loads((out / "metrics.json").read_text())
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        page = browser.new_page()
        page.goto((out / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])"
        )
        rows = page.locator("#variants tbody tr").count()
        browser.close()
    assert len(images) >= 5
    assert all(complete and width > 0 for _, complete, width in images), images
    assert {src for src, _, _ in images} >= {
        "plots/accuracy_vs_latency.png",
        "plots/size_vs_accuracy.png",
        "plots/roofline.png",
        "plots/model_ab.png",
        "plots/time_breakdown.png",
    }
    assert rows == len(metrics)


@pytest.mark.slow
def test_every_report_plot_reads_at_a_glance(run):
    """Issue 27: each plot of the report, drawn from the run folder as the report draws it: no two texts overlap,
    ticks are plain numbers, every variant is named or numbered, the front is drawn, the A/B bars sit together."""
    from edgex.pipeline.report import report_plots
    from edgex.pipeline.runfolder import summary_rows
    from edgex.plots import Point, pareto_front

    out, _ = run
    drawn = {plot.name: plot.draw for plot in report_plots(out)}
    assert {f"{name}.png" for name in drawn} == {p.name for p in (out / "plots").glob("*.png")}
    rows = summary_rows(out)
    fronts = {
        "accuracy_vs_latency": pareto_front([Point(r.variant, r.p50_ms, 100 * r.top1) for r in rows if r.p50_ms]),
        "size_vs_accuracy": pareto_front([Point(r.variant, r.size_bytes / 2**20, 100 * r.top1) for r in rows]),
    }
    for name, front in fronts.items():
        ax = drawn[name]().axes[0]
        keyed = {entry.get_text().split("  ", 1)[-1] for entry in ax.get_legend().get_texts()}
        assert {r.variant for r in rows} <= {text.get_text() for text in ax.texts} | keyed
        assert front and [tuple(corner) for corner in ax.lines[0].get_xydata()[::2]] == [(p.x, p.y) for p in front]
        assert_readable(ax.figure)
    ab = drawn["model_ab"]()
    ticks = ab.axes[0].get_yticks()
    for tick in ticks:  # each runtime and precision: the MAC ratio and the measured bar side by side, no gap
        bars = [p for p in ab.axes[0].patches if abs(p.get_y() + p.get_height() / 2 - tick) < 0.5]
        assert len(bars) == 2 and sum(p.get_y() + p.get_height() / 2 for p in bars) / 2 == pytest.approx(tick)
        assert bars[0].get_y() + bars[0].get_height() == pytest.approx(bars[1].get_y())
    assert "per layer shape" not in ab.axes[0].get_title()
    assert_readable(ab)
    for name in set(drawn) - {"accuracy_vs_latency", "size_vs_accuracy", "model_ab"}:
        assert_readable(drawn[name]())


# Only train, evaluate, bench and report (and what a test adds): the fewest stages a pipeline run can have.
MINIMAL_STAGES = {
    "preset": "tiny",
    "prune.enabled": False,
    "quantize.int8": False,
    "quantize.qat": False,
    "convert.onnx": [],
    "convert.edgetpu": False,
    "compare.enabled": False,
    "sweep.enabled": False,
    "deploy.enabled": False,
    "bench.runs": 2,
    "bench.min_seconds": 0.01,
}


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A pipeline run of train, twin (in line), evaluate, bench and report only; returns (result, run folder)."""
    from edgex.pipeline import run_pipeline

    overrides = {**MINIMAL_STAGES, "train.epochs": 1, "twin.background": False, "convert.tflite": ["fp32"]}
    recipe = resolve_recipe(None, overrides)
    out = tmp_path_factory.mktemp("small") / "run"
    return run_pipeline(recipe, out), out


@pytest.mark.slow
def test_twin_in_line_when_the_recipe_says_so(small_run):
    result, out = small_run
    twin = next(r for r in result.stages if r.name == "twin")
    assert (
        twin.status == "ran" and not twin.background and twin.outputs == ("twin/model.keras", "twin/model.keras.json")
    )
    assert not (out / "stages" / "background").exists()
    assert [r.name for r in result.stages] == list(STAGES)
    assert [r.variant for r in result.summary] == ["keras fp32", "tflite fp32"]


@pytest.mark.slow
def test_resume_reruns_only_the_changed_stage_and_what_depends_on_it(small_run, cli, tmp_path):
    import yaml

    _, out = small_run
    same = cli("pipeline", "--config", out / "recipe.yaml", "--out", out, "--resume")
    assert same.exit_code == 0, same.output
    assert set(_stage_lines(same.stdout).values()) == {"skipped"}
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    recipe["bench"]["runs"] = 3
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump(recipe))
    before = (out / "train" / "model.keras").stat().st_mtime_ns
    again = cli("pipeline", "--config", changed, "--out", out, "--resume")
    assert again.exit_code == 0, again.output
    ran = {name for name, status in _stage_lines(again.stdout).items() if status == "ran"}
    assert ran == {"bench", "deploy", "report"}  # bench changed; deploy and report read what it wrote
    assert len(_stage_lines(again.stdout)) == len(STAGES)
    assert (out / "train" / "model.keras").stat().st_mtime_ns == before
    assert json.loads((out / "recipe.json").read_text())["bench"]["runs"] == 3


@pytest.mark.slow
def test_the_optional_study_stage_adds_its_section_to_the_report(small_run, residual_study, cli, tmp_path):
    """The stage runs the recipe's study in study/NAME. It starts from the trainings of the same study that
    test_study ran (same seeds, epochs, data and preset), as a rerun of a study reuses its finished seeds: nothing is
    trained twice in the suite."""
    import yaml

    _, out = small_run
    trained, _ = residual_study
    shutil.copytree(trained / "runs", out / "study" / "residual" / "runs")
    shutil.copy(trained / "study_config.json", out / "study" / "residual" / "study_config.json")
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["study"]["enabled"] is False  # off by default
    recipe["study"] = {"enabled": True, "studies": ["residual"], "seeds": 2, "epochs": 1, "runtimes": []}
    changed = tmp_path / "study.yaml"
    changed.write_text(yaml.safe_dump(recipe))
    result = cli("pipeline", "--config", changed, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    ran = {name for name, status in _stage_lines(result.stdout).items() if status == "ran"}
    assert ran == {"study", "report"}
    assert result.stdout.count("(saved)") == 4  # the seeds test_study trained: the stage's options matched them
    study = json.loads((out / "study" / "residual" / "study.json").read_text())
    assert [len(v["top1"]) for v in study["variants"]] == [2, 2]
    assert all(None not in v["top1_ci95"] for v in study["variants"])
    report = (out / "report.md").read_text()
    assert "## Study: residual" in report and "residual > no-residual" in report.lower()
    assert "study/residual/accuracy.png" in (out / "report.html").read_text()


@pytest.mark.slow
def test_the_optional_tune_stage_ships_its_winner_and_reports_it(small_run, cli, tmp_path):
    """Issue 25: with the tune stage on, deploy ships the tune's winner, and the report shows its Pareto plot and
    what each lever bought (the deployment knobs only here: no network lever, a 10-second budget, in which the cheap
    candidates come first)."""
    import tarfile

    import yaml

    _, out = small_run
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["tune"]["enabled"] is False  # off by default
    recipe["tune"] = {"enabled": True, "budget": "10s", "levers": [], "max_drop": 5}
    recipe["deploy"] = {"enabled": True, "target": "generic-x86_64", "eval_data": False}
    changed = tmp_path / "tune.yaml"
    changed.write_text(yaml.safe_dump(recipe))
    result = cli("pipeline", "--config", changed, "--out", out, "--resume")
    assert result.exit_code == 0, result.output
    ran = {name for name, status in _stage_lines(result.stdout).items() if status == "ran"}
    assert {"tune", "deploy", "report"} <= ran and not ran & {"train", "evaluate", "bench"}
    tune = json.loads((out / "tune" / "tune.json").read_text())
    deploy = json.loads((out / "deploy.json").read_text())
    assert deploy["variant"] == "tune winner" and tune["winner"]
    with tarfile.open(out / deploy["bundle"]) as bundle:
        assert f"model/{Path(tune['winner']['artifact']).name}" in bundle.getnames()
    report = (out / "report.md").read_text()
    assert "## Tune: the fastest artifact within the gate" in report and "| fastest passing ms |" in report
    assert "plots/tune_pareto.png" in (out / "report.html").read_text() and (out / "tune" / "pareto.png").is_file()


def test_an_unknown_study_in_the_recipe_is_a_one_line_error(tmp_path, cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("study: {enabled: true, studies: [spectrun]}\n")
    result = cli("pipeline", "--config", recipe, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "spectrun" in result.stderr and "spectrum" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_the_recipe_reads_the_fine_tuning_keys(tmp_path):
    from edgex.pipeline.runfolder import transfer_flags
    from edgex.training.trainer import transfer_options

    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        "train: {from: mobilenet.keras, head_epochs: 2, unfreeze: 3, preprocessing: torch, recompute_bn: true}\n"
    )
    recipe = resolve_recipe(recipe_file)
    assert (recipe.train.from_model, recipe.train.head_epochs, recipe.train.unfreeze) == ("mobilenet.keras", 2, "3")
    assert recipe.to_json()["train"]["from"] == "mobilenet.keras" and "from_model" not in recipe.to_json()["train"]
    assert transfer_options(recipe.to_json()["train"])["recompute_bn"] is True
    assert "--head-epochs 2" in transfer_flags(recipe) and "--recompute-bn" in transfer_flags(recipe)


def test_fine_tuning_a_foreign_model_with_the_twin_on_is_a_one_line_error(tmp_path, cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train: {from: mobilenet.keras}\n")
    result = cli("pipeline", "--config", recipe, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "twin: {enabled: false}" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_the_pipeline_fine_tunes_from_pretrained_weights(trained_tiny, tmp_path):
    from edgex.pipeline import run_pipeline

    overrides = {
        **MINIMAL_STAGES,
        "train.weights": str(trained_tiny),
        "train.head_epochs": 1,
        "train.epochs": 1,
        "train.fine_tune_lr": 1e-4,
        "twin.enabled": False,
        "convert.tflite": [],
    }
    result = run_pipeline(resolve_recipe(None, overrides), tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "train" / "model.keras.json").read_text())
    assert [phase["name"] for phase in meta["phases"]] == ["head", "fine-tune"]
    keras_row = next(r for r in result.summary if r.variant == "keras fp32")
    assert keras_row.top1 > 0.8  # the pretrained digits model keeps its accuracy through both phases
    report = (tmp_path / "run" / "report.md").read_text()
    assert f"--weights {trained_tiny}" in report and "--head-epochs 1" in report


def test_recipe_values_of_the_wrong_type_name_the_key(tmp_path, cli):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("prune: {sparsity: high}\n")
    result = cli("pipeline", "--config", recipe, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "recipe key 'prune.sparsity' must be a number, got 'high'" in result.stderr
    assert not (tmp_path / "out").exists()


def test_best_variants_are_the_smallest_and_fastest_within_the_gate():
    from edgex.pipeline import SummaryRow, best_variants

    def row(name, fmt, size, drop, p50):
        return SummaryRow(
            variant=name,
            format=fmt,
            precision="fp32",
            sparsity=0.0,
            size_bytes=size,
            top1=0.9,
            drop_points=drop,
            p50_ms=p50,
            p90_ms=p50,
            images_per_s=None,
            speedup_vs_keras=None,
            path="x",
            command="edgex ...",
        )

    rows = [
        row("keras fp32", "keras", 10, 0.0, 1.0),  # the reference is never a deployable variant
        row("big", "tflite", 8, 0.0, 0.5),
        row("small but wrong", "tflite", 1, 3.0, 0.1),  # outside a 1-point gate
        row("small", "onnx", 2, 0.5, 0.9),
        row("untimed", "tflite", 3, 0.0, None),
    ]
    best = best_variants(rows, max_drop=1.0)
    assert (best.smallest, best.fastest) == ("small", "big")
    assert best_variants(rows, max_drop=5.0).smallest == "small but wrong"
    assert best_variants(rows[:1], max_drop=1.0).smallest is None
