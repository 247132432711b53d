"""Fine-tuning's phase 1 against a linear probe, offline: MobileNetV2 backbones (alpha 0.35, 64 px) pretrained by
plain Keras on the digits, each fine-tuned with ``edgex train --from`` on the photo folder of
``benchmarks/photo_folder.py`` (244 crops, 2 classes). Per backbone it prints a logistic regression on the frozen
features (scikit-learn's defaults; the mean of 5 stratified splits of every image, on the features as they are and
standardized, and trained on phase 1's training split scored on its validation split), phase 1's validation top-1,
the top-1 after phase 2, and phase 1's time (features and head). Exits 1 when phase 1's mean is more than 2 points
below the probe's 5-split mean on the features as they are (the issue's probe).

The backbones pretrain with BatchNormalization's momentum at 0.9: at Keras' 0.999 a few epochs leave the moving
statistics near their initial values and the features the same for every image. ``--unconverged`` adds such a
backbone, fine-tuned as it is (edgex warns) and with ``--recompute-bn``.

    python -m benchmarks.head_phase [--backbones 3] [--pretrain-epochs 3] [--epochs 5] [--unconverged]
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 64
CONVERGED_MOMENTUM = 0.9


@dataclass(frozen=True)
class Row:
    backbone: str
    spread: float  # edgex.training.head.feature_spread of the training features
    probe_cv: float  # logistic regression, mean over 5 stratified splits of every image
    probe_cv_z: float  # the same on standardized features
    probe_split: float  # logistic regression, phase 1's training split -> its validation split
    phase1: float  # phase 1's validation top-1 (the epoch it keeps)
    final: float  # validation top-1 after phase 2
    phase1_seconds: float  # the backbone over both splits, then the head's epochs


def pretrain(out: Path, seed: int, epochs: int, momentum: float | None) -> Path:
    """keras.applications.MobileNetV2 trained on the digits with plain Keras (``momentum`` None: Keras' own)."""
    from devices.preprocess import XCEPTION
    from devices.tfkeras import keras
    from edgex.data import load_dataset

    k = keras()
    k.utils.set_random_seed(seed)
    digits = load_dataset("digits", SIZE)
    (x, y), (xv, yv) = digits.train.arrays(), digits.val.arrays()
    model = k.applications.MobileNetV2(alpha=0.35, input_shape=(SIZE, SIZE, 3), weights=None, classes=10)
    for layer in model.layers:
        if momentum is not None and isinstance(layer, k.layers.BatchNormalization):
            layer.momentum = momentum
    model.compile(k.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", ["accuracy"])
    model.fit(XCEPTION.apply(x), y, batch_size=32, epochs=epochs, verbose=0)
    accuracy = model.evaluate(XCEPTION.apply(xv), yv, verbose=0)[1]
    print(f"  pretrained {out.name}: digits val top-1 {100 * accuracy:.1f}%", flush=True)
    model.save(out)
    return out


def probe(model_path: Path, photos: Path, recompute_bn: bool) -> tuple[float, float, float, float]:
    """(5-split mean, the same standardized, phase 1's split, spread) of a logistic regression on the frozen
    backbone's features, computed by the code phase 1 uses (after recomputing BatchNormalization's statistics as
    --recompute-bn does)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from devices.preprocess import XCEPTION
    from devices.tensorflow import load_keras_model
    from edgex.data import load_dataset
    from edgex.training.head import cache_features, feature_spread
    from edgex.training.transfer import recompute_bn_statistics

    model, dataset = load_keras_model(model_path), load_dataset(str(photos), SIZE)
    if recompute_bn:
        recompute_bn_statistics(model, dataset.train.arrays()[0], XCEPTION)
    features = cache_features(model, dataset, XCEPTION)
    every = np.concatenate([features.train, features.val])
    labels = np.concatenate([features.train_labels, features.val_labels])
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    cv = cross_val_score(LogisticRegression(max_iter=5000), every, labels, cv=folds).mean()
    standardized = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000))
    cv_z = cross_val_score(standardized, every, labels, cv=folds).mean()
    split = (
        LogisticRegression(max_iter=5000)
        .fit(features.train, features.train_labels)
        .score(features.val, features.val_labels)
    )
    return float(cv), float(cv_z), float(split), feature_spread(features.train)[0]


def fine_tune(name: str, model_path: Path, photos: Path, out: Path, epochs: int, recompute_bn: bool = False) -> Row:
    from edgex.training.trainer import TrainConfig, train

    probe_cv, probe_cv_z, probe_split, spread = probe(model_path, photos, recompute_bn)
    config = TrainConfig(
        data=str(photos), from_model=str(model_path), preprocessing="xception", epochs=epochs, recompute_bn=recompute_bn
    )
    result = train(config, out, force=True)
    head = result.phases[0]
    seconds = head["features"]["seconds"] + head["fit_seconds"]
    return Row(
        backbone=name,
        spread=spread,
        probe_cv=probe_cv,
        probe_cv_z=probe_cv_z,
        probe_split=probe_split,
        phase1=head["val_top1"],
        final=result.val_top1,
        phase1_seconds=seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbones", type=int, default=3, help="backbones pretrained with seeds 0, 1, ...")
    parser.add_argument("--pretrain-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=5, help="phase 2's epochs")
    parser.add_argument("--unconverged", action="store_true", help="add a backbone at Keras' BN momentum 0.999")
    args = parser.parse_args()
    if args.backbones < 2:
        parser.error(f"--backbones must be at least 2 (the target is a mean over backbones), got {args.backbones}")
    from benchmarks.photo_folder import make_photo_folder
    from devices.sysinfo import cpu_count, cpu_features, cpu_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = make_photo_folder(tmp / "photos")
        rows = []
        for seed in range(args.backbones):
            path = pretrain(tmp / f"seed{seed}.keras", seed, args.pretrain_epochs, CONVERGED_MOMENTUM)
            rows.append(fine_tune(f"seed {seed}", path, photos, tmp / f"run{seed}", args.epochs))
        extra = []
        if args.unconverged:
            path = pretrain(tmp / "unconverged.keras", 0, args.pretrain_epochs, None)
            extra.append(fine_tune("momentum 0.999", path, photos, tmp / "unconverged", args.epochs))
            extra.append(fine_tune("  --recompute-bn", path, photos, tmp / "recomputed", args.epochs, True))
    report(rows, extra, f"{cpu_model()} ({' '.join(cpu_features())}), {cpu_count()} cores, shared")


def report(rows: list[Row], extra: list[Row], cpu: str) -> None:
    print(f"\nCPU: {cpu}; photo folder, 64 px; val top-1 (%)")
    columns = (
        ("spread", 8),
        ("probe 5-split", 13),
        ("standardized", 12),
        ("probe split", 11),
        ("phase 1", 8),
        ("final", 6),
        ("phase 1 s", 9),
    )
    print(f"{'backbone':<17} " + " ".join(f"{name:>{width}}" for name, width in columns))
    for r in [*rows, *extra]:
        print(
            f"{r.backbone:<17} {r.spread:8.1e} {100 * r.probe_cv:13.1f} {100 * r.probe_cv_z:12.1f} "
            f"{100 * r.probe_split:11.1f} "
            f"{100 * r.phase1:8.1f} {100 * r.final:6.1f} {r.phase1_seconds:9.1f}"
        )
    probe_mean = 100 * np.mean([r.probe_cv for r in rows])
    standardized_mean = 100 * np.mean([r.probe_cv_z for r in rows])
    phase1_mean = 100 * np.mean([r.phase1 for r in rows])
    print(
        f"mean over {len(rows)} backbones: probe {probe_mean:.1f}% (standardized {standardized_mean:.1f}%), phase 1 "
        f"{phase1_mean:.1f}% ({phase1_mean - probe_mean:+.1f} points; target: no more than 2 below the probe)"
    )
    if phase1_mean < probe_mean - 2:
        raise SystemExit("phase 1 is more than 2 points below the probe")


if __name__ == "__main__":
    main()
