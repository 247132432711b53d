"""Issue 25: edgex tune, the fastest artifact within an accuracy budget, and the interleaved A/B it decides with."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from devices.errors import EdgexError
from edgex.tune import TuneConfig, parse_budget
from edgex.tune.latency import Placed
from edgex.tune.space import Space, cheap_first, resolutions
from tests.conftest import ROOT


@pytest.mark.parametrize(
    "text, seconds",
    [("90s", 90), ("20m", 1200), ("2h", 7200), ("1h30m", 5400), ("45", 45), (" 1.5m ", 90), (30, 30)],
)
def test_budgets_read_as_seconds(text, seconds):
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-5m", "soon", "5 minutes", "m", "", "2x"])
def test_a_budget_that_is_zero_or_unreadable_is_refused(text):
    with pytest.raises(EdgexError, match="budget"):
        parse_budget(text)


@pytest.mark.parametrize(
    "fields, message",
    [
        ({"max_drop": -0.5}, "--max-drop must be 0 or more"),
        ({"levers": ("drop-blocks", "shrink")}, "unknown lever 'shrink'"),
        ({"runtimes": ("tensorrt",)}, "unknown runtime 'tensorrt'"),
        ({"threads": (0,)}, "--threads must be 1 or more"),
        ({"budget_s": 0}, "budget must be more than zero"),
        ({"max_trials": 0}, "--trials must be 1 or more, got 0"),
    ],
)
def test_bad_tune_configs_name_the_value(fields, message):
    with pytest.raises(EdgexError, match=message):
        TuneConfig(**fields)


def test_paired_ratio_and_its_interval():
    """The median of the paired ratios, with an order-statistics interval that holds the true ratio; identical
    runs give exactly 1."""
    from devices.interleave import paired_ratio

    rng = np.random.default_rng(0)
    b = rng.lognormal(np.log(1e-3), 0.1, 4000)
    a = 1.5 * b * rng.lognormal(0, 0.05, 4000)
    ratio, (lo, hi) = paired_ratio(a, b)
    assert lo < 1.5 < hi and hi - lo < 0.01 and abs(ratio - 1.5) < 0.005
    assert paired_ratio(b, b) == (1.0, (1.0, 1.0))
    with pytest.raises(EdgexError, match="paired runs"):
        paired_ratio(a, b[:10])


def test_the_validation_split_halves_are_disjoint_and_stratified(digits):
    selection, heldout = digits.val.halves(seed=0)
    assert len(selection) + len(heldout) == len(digits.val)
    for label in np.unique(digits.val.labels):
        counts = (selection.labels == label).sum(), (heldout.labels == label).sum()
        assert abs(counts[0] - counts[1]) <= 1
    both = np.concatenate([selection.images, heldout.images]).reshape(len(digits.val), -1)
    assert len(np.unique(both, axis=0)) == len(np.unique(digits.val.images.reshape(len(digits.val), -1), axis=0))
    again = digits.val.halves(seed=0)[0]
    np.testing.assert_array_equal(again.labels, selection.labels)


def test_the_cheap_trials_come_first_and_cover_every_runtime_and_precision():
    from edgex.models import preset_config

    space = Space(preset_config("mini"), ("drop-blocks", "prune", "resolution", "student"), ("litert", "onnxruntime"),
                  (1, 2))  # fmt: skip
    trials = cheap_first(space)
    assert trials[0]["runtime"] == "litert" and trials[0]["precision_litert"] == "int8" and trials[0]["threads"] == 2
    assert {(t["runtime"], t.get("precision_litert") or t.get("precision_onnxruntime")) for t in trials} == {
        ("litert", p) for p in ("int8", "dynamic", "fp16", "fp32")
    } | {("onnxruntime", p) for p in ("int8", "fp32")}
    assert all(t["drop_blocks"] == 0 and t["prune"] == 0 and t["width"] == 1 for t in trials)
    assert "input_size" not in trials[0]  # mini is at 32 px, the builder's minimum: no lower resolution
    assert resolutions(32) == (32,) and resolutions(299) == (299, 256, 224, 144)


def test_each_levers_strongest_change_is_queued_after_the_cheap_trials_cheapest_to_train_first(trained_tiny, tmp_path):
    import optuna

    from edgex.models import preset_config
    from edgex.tune.search import Search
    from edgex.tune.space import strongest_changes, suggest
    from edgex.tune.subject import Subject
    from edgex.tune.workshop import Workshop

    paper = Space(preset_config("paper"), ("drop-blocks", "prune", "resolution", "student"), ("litert",), (1,))
    assert strongest_changes(paper) == [
        {"width": 0.5, "drop_blocks": 0, "input_size": 299},
        {"width": 1.0, "drop_blocks": 8, "prune": 0.0, "input_size": 299},
        {"width": 1.0, "drop_blocks": 0, "prune": 0.5, "input_size": 299},
        {"width": 1.0, "drop_blocks": 0, "prune": 0.0, "input_size": 144},
    ]
    subject = Subject(trained_tiny, TuneConfig(), None)  # tiny: no middle block, 32 px; a student or pruning
    space = Space(subject.config, ("prune", "student"), ("litert",), (1, 2))
    study, workshop = optuna.create_study(direction="minimize"), Workshop(subject, tmp_path)
    Search(study, subject, workshop, None, space, deadline=time.time() + 60).enqueue_cheap_first()
    queued = [t.system_attrs["fixed_params"] for t in study.get_trials()]
    assert queued[: len(cheap_first(space))] == cheap_first(space)
    changes = [suggest(optuna.trial.FixedTrial(p), space) for p in queued[len(cheap_first(space)) :]]
    assert [c.network.key(subject.config) for c in changes] == ["prune50", "width50"]  # the student trains 3x longer
    costs = [workshop.training_cost(c.network) for c in changes]
    assert costs[0] < costs[1] and all(c.deployment == changes[0].deployment for c in changes)
    assert changes[0].deployment.runtime == "litert" and changes[0].deployment.precision == "int8"


def _seeded(config):
    from devices.tfkeras import keras
    from edgex.models import build_xception

    keras().utils.set_random_seed(3)
    return build_xception(config)


@pytest.mark.slow
def test_pruned_channels_are_exactly_the_original_with_those_channels_silenced():
    """Pruning removes channels and what depends on them, nothing else: the pruned network computes what the
    original computes once those channels' pointwise weights and BatchNormalization output are zeroed."""
    from edgex.models import preset_config
    from edgex.tune.surgery import NetworkChange, apply_change, prunable_layers, pruned_channels

    config = preset_config("tiny", middle_blocks=1)
    model = _seeded(config)
    assert prunable_layers(model) == [
        "block2_sepconv1", "block3_sepconv1", "block4_sepconv1", "block5_sepconv1", "block5_sepconv2",
        "block6_sepconv1", "block7_sepconv1", "block7_sepconv2",
    ]  # fmt: skip
    pruned, pruned_config = apply_change(model, config, NetworkChange(prune=0.5))
    assert pruned.count_params() < model.count_params() and dict(pruned_config.pointwise_channels)
    for layer in model.layers:  # random BatchNormalization statistics, so that every channel matters
        if type(layer).__name__ == "BatchNormalization":
            gamma, beta, mean, var = layer.get_weights()
            rng = np.random.default_rng(len(layer.name))
            layer.set_weights([gamma, beta, rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 2, var.shape)])
    pruned, _ = apply_change(model, config, NetworkChange(prune=0.5))
    silenced = {layer.name: layer for layer in model.layers}
    for name, kept in pruned_channels(model, 0.5).items():
        gone = np.setdiff1d(np.arange(silenced[name].get_weights()[1].shape[-1]), kept)
        depthwise, pointwise = silenced[name].get_weights()
        pointwise[..., gone] = 0
        silenced[name].set_weights([depthwise, pointwise])
        bn = silenced[f"{name}_bn"]
        gamma, beta, mean, var = bn.get_weights()
        beta[gone] = (gamma * mean / np.sqrt(var + bn.epsilon))[gone]  # the BatchNormalization gives 0 there
        bn.set_weights([gamma, beta, mean, var])
    x = np.random.default_rng(1).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(pruned(x).numpy(), model(x).numpy(), atol=1e-6)


def test_dropping_middle_blocks_keeps_the_later_blocks_weights():
    from edgex.models import preset_config
    from edgex.tune.surgery import NetworkChange, apply_change

    config = preset_config("tiny", middle_blocks=3)
    model = _seeded(config)
    changed, changed_config = apply_change(model, config, NetworkChange(drop_blocks=2, input_size=32))
    assert changed_config.middle_blocks == 1
    original = {layer.name: layer for layer in model.layers}
    for new, old in (("block5_sepconv2", "block7_sepconv2"), ("block6_sepconv1", "block8_sepconv1"),
                     ("block7_sepconv2_bn", "block9_sepconv2_bn"), ("block1_conv1", "block1_conv1")):  # fmt: skip
        for ours, theirs in zip(changed.get_layer(new).get_weights(), original[old].get_weights()):
            np.testing.assert_array_equal(ours, theirs)
    with pytest.raises(EdgexError, match="cannot drop 4 of the model's 3 middle blocks"):
        apply_change(model, config, NetworkChange(drop_blocks=4))


@pytest.mark.parametrize("samples, behind, stopped", [(181, 0.56, False), (181, 3.0, True), (0, 0.56, True)])
def test_halving_stops_a_training_only_when_it_is_behind_by_more_than_the_splits_noise(samples, behind, stopped):
    """At a rung a training behind the better half by one image of a 181-image split (0.55 points) is within a
    standard error (1.8 points for students at 94%) and goes on; one further behind, or any without a split's size
    (plain successive halving), is stopped. Only trainings of the same kind are compared."""
    import optuna

    from edgex.tune.search import SameKindHalving

    study = optuna.create_study(pruner=SameKindHalving(samples, model_top1=0.9945))
    for kind, drop in (("student", 5.52), ("student", 5.52), ("fine-tune", 0.0)):
        trial = study.ask()
        trial.set_user_attr("training", kind)
        trial.report(drop, 2)
        study.tell(trial, 1.0)
    trial = study.ask()
    trial.set_user_attr("training", "student")
    trial.report(5.52 + behind, 1)
    assert not trial.should_prune()  # the first rung says too little
    trial.report(5.52 + behind, 2)
    assert trial.should_prune() is stopped


def test_a_rung_that_would_end_past_the_budget_is_not_begun():
    """At the pace of the epochs so far: two epochs took 200 s, so the rung at 4 epochs needs 200 s more."""
    from edgex.tune.workshop import next_rung_fits

    rungs = (1, 2, 4, 8)
    assert next_rung_fits(2, rungs, started=1000.0, now=1200.0, deadline=1400.0)
    assert not next_rung_fits(2, rungs, started=1000.0, now=1200.0, deadline=1399.0)
    assert next_rung_fits(8, rungs, started=0.0, now=800.0, deadline=801.0)  # the last rung: none follows
    assert next_rung_fits(1, rungs, started=0.0, now=100.0, deadline=None)


@pytest.mark.slow
def test_training_stops_at_the_deadline_inside_a_rung(digits, monkeypatch):
    """A rung of a large network can outlast the budget: the deadline is checked at every step, not between rungs."""
    import edgex.tune.distill
    from devices.preprocess import XCEPTION
    from edgex.models import preset_config
    from edgex.tune.distill import BudgetSpent, DistillConfig, distill

    class Clock:  # the deadline passes after the first epoch's second step
        calls = 0

        @classmethod
        def time(cls) -> float:
            cls.calls += 1
            return 100.0 if cls.calls <= 2 else 200.0

    monkeypatch.setattr(edgex.tune.distill, "time", Clock)
    config = preset_config("tiny")
    rungs = []
    with pytest.raises(BudgetSpent, match="during epoch 1 of training"):
        distill(_seeded(config), _seeded(config), digits, XCEPTION, DistillConfig(epochs=4, lr=1e-3, deadline=150.0),
                (1, 2, 4), lambda done, _: rungs.append(done) or True)  # fmt: skip
    assert Clock.calls == 3 and rungs == []  # two steps trained, stopped before the first rung's end


@pytest.mark.slow
def test_the_teachers_targets_given_up_front_train_as_the_teacher_does(digits):
    """The teacher's outputs computed once (what a network that kept its weights is fine-tuned from) train the
    student exactly as the teacher run at every step on the same unaugmented images."""
    from devices.preprocess import XCEPTION
    from edgex.models import preset_config
    from edgex.tune.distill import DistillConfig, distill, teacher_targets

    config = preset_config("tiny")
    teacher, students = _seeded(config), []
    images = XCEPTION.apply(digits.val.arrays()[0][:64])
    targets = teacher_targets(teacher, digits, XCEPTION)
    assert targets.shape == (len(digits.train), digits.classes)
    for given in (None, targets):
        student = _seeded(config)
        distill(student, teacher, digits, XCEPTION, DistillConfig(epochs=1, lr=1e-3, augment=()), (1,),
                lambda *_: True, given)  # fmt: skip
        students.append(student.predict(images, verbose=0))
    assert np.allclose(students[0], students[1], atol=1e-4), np.abs(students[0] - students[1]).max()
    assert not np.allclose(students[0], teacher.predict(images, verbose=0), atol=1e-2)  # it did train


def test_a_network_in_training_is_judged_with_settled_batchnorm_statistics(trained_tiny, tmp_path):
    """Moving statistics that lag the weights would read a good network as a bad one at its rung: its top-1 is taken
    with the statistics recomputed on training images when that scores higher, and the network keeps them."""
    from devices.tfkeras import keras
    from edgex.tune.subject import Subject
    from edgex.tune.workshop import Workshop

    subject = Subject(trained_tiny, TuneConfig(), None)
    data = subject.at_size(subject.input_size)
    model = keras().models.load_model(trained_tiny)  # its own copy: the loaded source is shared by the worker
    for layer in model.layers:
        if "BatchNormalization" in type(layer).__name__:
            layer.moving_mean.assign(layer.moving_mean + 3.0)
    lagging = subject.keras_top1(model, data.selection)
    settled = Workshop(subject, tmp_path)._settled_top1(model, data)
    assert lagging < subject.float_selection - 0.2 and settled >= subject.float_selection - 0.05, (lagging, settled)
    assert subject.keras_top1(model, data.selection) == settled


@pytest.mark.slow
def test_a_network_change_is_judged_in_the_incumbents_deployment(trained_tiny, tiny_artifacts, tmp_path):
    """A changed network paired by the sampler with a poor runtime option is timed before training in the
    incumbent's deployment (its size, not the option, decides), and once trained it is queued in that deployment."""
    import optuna

    from edgex.tune.latency import AB_BENCH, LocalDevice
    from edgex.tune.search import Search
    from edgex.tune.space import suggest
    from edgex.tune.subject import Subject
    from edgex.tune.workshop import Workshop

    subject = Subject(trained_tiny, TuneConfig(), None)
    space = Space(subject.config, ("prune",), ("litert", "onnxruntime"), (1,))
    study = optuna.create_study(direction="minimize")
    search = Search(study, subject, Workshop(subject, tmp_path), LocalDevice("cpu", config=AB_BENCH), space,
                    deadline=time.time() + 600)  # fmt: skip
    first = cheap_first(space)[0]  # the unchanged network, LiteRT int8: the incumbent
    study.enqueue_trial(first)
    trial = study.ask()
    suggest(trial, space)
    trial.set_user_attr("deployment", {"runtime": "litert", "precision": "int8", "threads": 1, "options": {}})
    search._crown(trial, Placed(tiny_artifacts["tflite-int8"], "litert"), threads=1, p50=1.0)
    study.tell(trial, 1.0)
    poor = {"prune": 0.5, "runtime": "onnxruntime", "precision_onnxruntime": "fp32", "threads": 1,
            "onnxruntime_graph": "basic", "onnxruntime_mode": "parallel"}  # fmt: skip
    study.enqueue_trial(poor)
    trial = study.ask()
    candidate = suggest(trial, space)
    try:
        search._check_speed_before_training(trial, candidate)
    except optuna.TrialPruned as pruned:
        assert "in its deployment" in str(pruned)
    exported = sorted(p.name for p in (tmp_path / "artifacts").rglob("*") if p.suffix in (".tflite", ".onnx"))
    assert exported == ["tflite-int8.tflite"], exported  # the incumbent's format and precision, not ONNX fp32
    assert len(trial.user_attrs["untrained_ratio"]) == 3
    search._enqueue_in_incumbents_deployment(trial)
    queued = [t.params if t.params else t.system_attrs["fixed_params"] for t in study.get_trials()
              if t.state == optuna.trial.TrialState.WAITING]  # fmt: skip
    assert queued == [{**first, "prune": 0.5}]


@pytest.mark.slow
def test_bench_interleave_prints_the_ratio_with_its_interval(tiny_artifacts, cli):
    """edgex bench A B --interleave: both rows, and the ratio of A to B with its interval; the same file twice is
    no difference beyond the noise."""
    fp32, int8 = tiny_artifacts["tflite-fp32"], tiny_artifacts["tflite-int8"]
    result = cli("bench", fp32, int8, "--interleave", "--threads", "1", "--min-seconds", "0.5")
    assert result.exit_code == 0, result.output
    line = next(line for line in result.stdout.splitlines() if "interleaved rounds" in line)
    assert line.startswith(f"{fp32.name} / {int8.name} latency ") and "[" in line
    same = cli("bench", int8, int8, "--interleave", "--threads", "1", "--min-seconds", "0.5")
    assert "no difference beyond the noise" in same.stdout or "1.0" in same.stdout, same.output
    bad = cli("bench", int8, "--interleave")
    assert bad.exit_code == 2 and "--interleave compares two or more models, got 1" in bad.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--budget", "0"], "the budget must be more than zero, got '0'"),
        (["--budget", "soon"], "cannot read the budget 'soon'; write it as 90s, 20m, 2h or 1h30m"),
        (["--max-drop", "-1"], "--max-drop must be 0 or more points, got -1"),
        (["--device", "gpu:3"], "device 'gpu:3' is not present on this machine"),
        (["--data", "{photos}"], "the model's classes differ from the data's"),
        (["{bare}"], "tuning measures on data, and bare.keras records none"),
    ],
    ids=["zero-budget", "unreadable-budget", "negative-max-drop", "absent-device", "other-classes", "no-data"],
)
def test_bad_tune_input_is_one_line_exit_2(tiny_copy, tmp_path, cli, args, message):
    """Issue 25's bad input, through the CLI: one line naming the value, exit 2, before any search."""
    model = tiny_copy("tune-input")
    if "{photos}" in args:
        from benchmarks.photo_folder import make_photo_folder

        args = ["--data", make_photo_folder(tmp_path / "photos", per_class=6, seed=1)]
    if "{bare}" in args:
        model = model.rename(model.with_name("bare.keras"))
        args = []
    result = cli("tune", model, *args, "--out", tmp_path / "tune")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "tune" / "tune.json").exists()


TUNE = [sys.executable, "-m", "edgex", "tune"]


def _tune_command(model: Path, out: Path, storage: str, budget: str, *extra) -> list[str]:
    return [
        *TUNE, str(model), "--out", str(out), "--storage", storage, "--budget", budget, "--max-drop", "2",
        "--epochs", "2", "--levers", "prune,student", "--threads", "1", "--json", *extra,
    ]  # fmt: skip


def _trials(db: Path) -> list[tuple[int, str]]:
    """The trials a study's SQLite file holds; none while Optuna is still creating its tables."""
    with sqlite3.connect(db) as connection:
        if not connection.execute("SELECT 1 FROM sqlite_master WHERE name = 'trials'").fetchone():
            return []
        return connection.execute("SELECT number, state FROM trials ORDER BY number").fetchall()


def _wait_for_complete(db: Path, count: int, process, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if db.is_file() and sum(state == "COMPLETE" for _, state in _trials(db)) >= count:
            return
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(1)
    pytest.fail(f"{count} trials did not complete within {timeout} s")


@pytest.mark.slow
@pytest.mark.network
def test_two_workers_a_kill_and_a_resume_share_one_search(trained_tiny, tmp_path):
    """Two worker processes share one SQLite study; one is killed with SIGKILL mid-search and resumed: its
    finished candidates are kept and not run again, a candidate whose cached artifact is corrupt fails with its
    reason while the search goes on, and the winner passes the gate on the held-out split."""
    db = tmp_path / "shared.db"
    storage = f"sqlite:///{db}"
    first, second = tmp_path / "first", tmp_path / "second"
    for out in (first, second):  # a cached artifact damaged on disk: that candidate fails, whichever worker runs it
        corrupt = out / "artifacts" / "unchanged" / "tflite-dynamic.tflite"
        corrupt.parent.mkdir(parents=True)
        corrupt.write_bytes(b"not a tflite file")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Budgets that outlast the test: each worker stops after its --trials (the killed one never gets there).
    worker = subprocess.Popen(_tune_command(trained_tiny, first, storage, "10m"), cwd=ROOT, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for_complete(db, 2, worker)
    other = subprocess.Popen(_tune_command(trained_tiny, second, storage, "10m", "--trials", "2"), cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for_complete(db, 4, worker)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    before = dict(_trials(db))
    finished = {n for n, state in before.items() if state == "COMPLETE"}
    assert other.wait(timeout=600) == 0, other.communicate()[1][-2000:]
    last = max(n for n, _ in _trials(db))
    resumed = subprocess.run(_tune_command(trained_tiny, first, storage, "10m", "--trials", "2", "--resume"),
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout)
    after = dict(_trials(db))
    assert all(after[n] == "COMPLETE" for n in finished)  # nothing finished was lost or run again
    records = {c["number"]: c for c in result["candidates"]}
    assert set(records) == set(after)
    first_runs = [c for c in records.values() if c["deployment"] == records[0]["deployment"]
                  and c["network"] == records[0]["network"]]  # fmt: skip
    measured = [c for c in first_runs if not (c["reason"] or "").startswith("repeats trial")]
    assert len(measured) == 1, first_runs  # measured once, whoever asks again: a worker, the resume or the sampler
    failed = [c for c in records.values() if c["status"] == "failed"]
    assert failed and "is not a TFLite model" in failed[0]["reason"], [c["reason"] for c in records.values()]
    assert failed[0]["deployment"]["precision"] == "dynamic"
    done = [c for c in records.values() if c["status"] == "done"]
    assert all(c["artifact"] and c["p50_ms"] > 0 for c in done)
    assert max(after) > last  # the resumed worker went on with the search
    assert any(c["number"] > failed[0]["number"] for c in done)  # and the failure did not stop it
    assert all(c["selection_top1"] is not None and c["size_bytes"] > 0 for c in done)
    winner = result["winner"]
    assert winner is not None and Path(winner["artifact"]).is_file()
    assert 100 * (result["float_heldout"] - winner["heldout_top1"]) <= 2
    assert winner["versus_default"]["rounds"] > 0 and winner["threads"] == 1
    assert (first / "pareto.png").is_file() and "What each lever bought" in (first / "tune.md").read_text()


@pytest.mark.slow
def test_the_device_compares_in_turn_and_sweeps_threads(tiny_artifacts):
    """The local device's A/B of a file against itself is no win, its thread sweep times every count, and a device
    that is not here is refused before any work."""
    from devices.errors import DeviceNotFound
    from edgex.tune.latency import AB_BENCH, LocalDevice, Placed

    device = LocalDevice("cpu", config=AB_BENCH)
    int8 = Placed(tiny_artifacts["tflite-int8"], "litert")
    same = device.ab(int8, int8, threads=1)
    assert not same.b_is_faster and same.rounds >= AB_BENCH.runs
    sweep = device.threads_sweep(int8, (1, 2))
    assert set(sweep) == {1, 2} and all(p50 > 0 for p50 in sweep.values())
    with pytest.raises(DeviceNotFound, match="device 'gpu:3' is not present on this machine"):
        LocalDevice("gpu:3")


@pytest.mark.slow
@pytest.mark.network
def test_a_tune_over_ssh_stops_when_the_board_drops_and_resumes(ssh_server, trained_tiny, tmp_path):
    """Latency measured on a board over SSH (a real sshd on 127.0.0.1): when the connection drops mid-search the
    run stops with exit 1 and its finished candidates kept; --resume goes on and ends with the winner's bundle."""
    config = tmp_path / "ssh_config"
    config.write_text(Path(ssh_server["config"]).read_text())
    out, db = tmp_path / "tune", tmp_path / "tune" / "tune.db"
    command = [
        *TUNE, str(trained_tiny), "--out", str(out), "--ssh", ssh_server["host"], "--ssh-config", str(config),
        "--remote-dir", str(tmp_path / "board"), "--remote-python", sys.executable, "--runtimes", "litert",
        "--threads", "1", "--levers", "prune", "--epochs", "2", "--max-drop", "2", "--budget", "10m", "--json",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    worker = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for_complete(db, 2, worker)
    config.write_text(config.read_text().replace(f"Port {ssh_server['port']}", "Port 1"))  # the board goes away
    _, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 1, stderr[-2000:]
    assert "unreachable" in stderr and "finished candidates kept" in stderr and "--resume goes on" in stderr
    kept = {n for n, state in _trials(db) if state == "COMPLETE"}
    config.write_text(Path(ssh_server["config"]).read_text())
    resumed = subprocess.run([*command, "--trials", "2", "--resume"], cwd=ROOT, env=env, capture_output=True,
                             text=True, timeout=600)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    result = json.loads(resumed.stdout)
    assert kept <= {c["number"] for c in result["candidates"] if c["status"] == "done"}
    assert result["device"] == f"{ssh_server['host']}" and result["winner"]["bundle"].endswith("generic-x86_64.tar.gz")
    assert Path(result["winner"]["bundle"]).is_file()
