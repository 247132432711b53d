"""Fine-tuning's phase 1: the new head trained on backbone features computed once and cached (as TensorFlow Lite
Model Maker and TF Hub's image retrainer do), to convergence with early stopping on the validation split; and the
check that the backbone's features vary at all across the user's images."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

HEAD_LR = 1e-3  # Adam's default; --lr sets another
HEAD_PATIENCE = 20  # epochs without a lower validation loss before phase 1 stops (an epoch on features takes ms)
# A validation loss lower by less than this is no progress: on classes a linear head separates, the loss falls
# by ever smaller steps for as long as it trains (Keras' EarlyStopping calls it min_delta).
HEAD_MIN_DELTA = 1e-4
FEATURE_BATCH = 64
# Phase 1 sees every training image once, as it is: in a trial on the photo folder (two backbones, three seeds, a
# head on raw features), features of 2 or 5 augmented copies (crop, flip) gained nothing measurable, and they
# multiply the backbone passes; --augment applies to phase 2.
AUGMENTATION = "none"
# Features whose image-to-image standard deviation is below this share of their scale carry nothing a head can learn.
# The scale is their RMS, and never less than 1: BatchNormalization with settled statistics gives each channel about
# unit variance. Measured on MobileNetV2 (alpha 0.35) over the photo folder: 0.2-0.3 after training at momentum 0.9,
# 0.4 with recomputed statistics; 7e-10 after 3 epochs at Keras' momentum 0.999 (statistics still near their initial
# mean 0 and variance 1), 3e-12 untrained. The floor sits far from both sides.
SPREAD_FLOOR = 1e-3
# With --head-epochs 0 no head phase needs every image's features: the check runs the backbone over this many
# training images only (the spread is a statistic over images; at paper scale all of the digits took 5 minutes).
CHECK_SAMPLES = 256


@dataclass(frozen=True)
class CachedFeatures:
    """The frozen backbone's output (the head's input) for every training and validation image, computed once."""

    train: np.ndarray  # float32 (N, D), in the order of the dataset's train split
    train_labels: np.ndarray
    val: np.ndarray
    val_labels: np.ndarray
    seconds: float  # time the backbone took over both splits

    def describe(self) -> dict:
        spread, std, rms = feature_spread(self.train)
        return {
            "train_images": len(self.train),
            "val_images": len(self.val),
            "dimensions": int(self.train.shape[1]),
            "augmentation": AUGMENTATION,
            "seconds": self.seconds,
            "std": std,
            "rms": rms,
            "spread": spread,
        }


@dataclass(frozen=True)
class HeadFit:
    """Phase 1's result: every epoch's metrics and the epoch whose weights the head kept."""

    history: list[dict]  # per epoch: loss, accuracy, val_loss, val_accuracy
    best_epoch: int  # 1-based: the epoch of the lowest validation loss, whose weights were restored
    seconds: float

    @property
    def val_top1(self) -> float:
        return self.history[self.best_epoch - 1]["val_accuracy"]


def backbone_of(model):
    """The model up to its classifier head: what the head receives (BatchNormalization and dropout in inference
    mode when called with ``training=False``)."""
    from devices.tfkeras import keras
    from edgex.training.transfer import head_layer

    return keras().Model(model.inputs, head_layer(model).input, name="backbone")


def cache_features(model, dataset, preprocessing) -> CachedFeatures:
    """Run the frozen backbone once over the training and validation images, as they are (no augmentation)."""
    backbone = backbone_of(model)
    began = time.perf_counter()
    train, val = (split_outputs(backbone, split, preprocessing) for split in (dataset.train, dataset.val))
    seconds = time.perf_counter() - began
    return CachedFeatures(
        train=train, train_labels=dataset.train.labels, val=val, val_labels=dataset.val.labels, seconds=seconds
    )


def sampled_features_check(model, dataset, preprocessing, seed: int = 0) -> dict:
    """The features' description for the check alone, from a seeded sample of CHECK_SAMPLES training images."""
    sample = dataset.train.take(CHECK_SAMPLES, seed=seed)
    began = time.perf_counter()
    train = split_outputs(backbone_of(model), sample, preprocessing)
    seconds = time.perf_counter() - began
    no_val = np.empty((0, train.shape[1]), np.float32)
    features = CachedFeatures(
        train=train, train_labels=sample.labels, val=no_val, val_labels=sample.labels[:0], seconds=seconds
    )
    return {**features.describe(), "of_train_images": len(dataset.train)}


def split_outputs(model, split, preprocessing) -> np.ndarray:
    """A Keras model's outputs for every image of a split, in the split's order (inference mode)."""
    return np.asarray(model.predict(split.tf_dataset(FEATURE_BATCH, preprocessing), verbose=0), np.float32)


def feature_spread(features: np.ndarray) -> tuple[float, float, float]:
    """(spread, std, rms): the features' standard deviation across images (RMS over the features), the RMS of their
    values, and the spread: the first over their scale, the RMS but at least 1 (see SPREAD_FLOOR)."""
    values = np.asarray(features, np.float64).reshape(len(features), -1)
    std = float(np.sqrt(values.var(axis=0).mean()))
    rms = float(np.sqrt(np.mean(values**2)))
    return std / max(rms, 1.0), std, rms


def dead_features_line(described: dict) -> str | None:
    """One line when the features barely vary across the training images, naming the likely cause and the fix."""
    if described["spread"] >= SPREAD_FLOOR:
        return None
    return (
        f"the backbone's features barely vary across the {described['train_images']} training images (std "
        f"{described['std']:.1e}, RMS {described['rms']:.2g}), likely unconverged BatchNormalization statistics: "
        "--recompute-bn recomputes them on these images"
    )


def features_line(described: dict) -> str:
    """One line: the features computed once, and the augmentation policy of phase 1 (or the sample checked)."""
    if "of_train_images" in described:
        return (
            f"backbone features of {described['train_images']} of {described['of_train_images']} training images "
            f"checked in {described['seconds']:.1f} s (augmentation: {described['augmentation']})"
        )
    return (
        f"backbone features of {described['train_images']} training and {described['val_images']} validation images "
        f"computed once in {described['seconds']:.1f} s (augmentation: {described['augmentation']})"
    )


def head_line(record: dict) -> str:
    """One line: how long the head trained and which epoch it kept."""
    return (
        f"head trained {record['epochs_run']} epochs in {record['fit_seconds']:.1f} s and keeps epoch "
        f"{record['best_epoch']} (lowest validation loss): val top-1 {100 * record['val_top1']:.1f}%"
    )


def fit_head(
    model, features: CachedFeatures, *, max_epochs: int, lr: float | None, batch_size: int, seed: int = 0
) -> HeadFit:
    """Train ``model``'s classifier head alone on cached features with Adam, for at most ``max_epochs`` epochs,
    stopping after HEAD_PATIENCE epochs without a validation loss lower by HEAD_MIN_DELTA; the head keeps the best
    epoch's weights.

    The head trains on standardized features (see _Standardized) and its weights are carried back to the features
    as they are. Each epoch is one TensorFlow function call (its minibatches, then the loss and top-1 of both
    splits): Keras' ``fit`` spent 50-200 ms per epoch around a few milliseconds of arithmetic on a shared 2-core
    machine."""
    from devices.tfkeras import keras
    from edgex.training.transfer import head_layer

    k = keras()
    head = head_layer(model)
    alone = k.layers.Dense.from_config({**head.get_config(), "dtype": "float32"})
    alone.build((None, features.train.shape[1]))
    scaled = _Standardized.of(features.train, centred=alone.use_bias)
    alone.set_weights(scaled.into(head.get_weights()))
    standardized = replace(features, train=scaled.apply(features.train), val=scaled.apply(features.val))
    run_epoch = _epoch_function(alone, k.optimizers.Adam(lr or HEAD_LR), standardized, batch_size)
    order = np.random.default_rng(seed)
    history, best_epoch, best_weights = [], 0, alone.get_weights()
    began = time.perf_counter()
    for epoch in range(1, max_epochs + 1):
        history.append(run_epoch(order.permutation(len(features.train))))
        if not best_epoch or history[-1]["val_loss"] < history[best_epoch - 1]["val_loss"] - HEAD_MIN_DELTA:
            best_epoch, best_weights = epoch, alone.get_weights()
        elif epoch - best_epoch >= HEAD_PATIENCE:
            break
    head.set_weights(scaled.out_of(best_weights))
    return HeadFit(history, best_epoch, time.perf_counter() - began)


@dataclass(frozen=True)
class _Standardized:
    """Features as z-scores, and a Dense head's weights carried between them and the features as they are.

    Adam moves each weight by about its learning rate per step, so on raw features the head converges only where
    the features vary on a scale of 1: pooled features that vary by a few hundredths around a common mean need
    weights of hundreds (a small CNN's pooled features of the digits: 35% after 200 epochs where a logistic
    regression reaches 55%, and 85% on z-scores). On z-scores every dimension varies on the same scale. Dimensions
    flatter than the dead-features floor are divided by the floor, so that they stay flat instead of amplifying
    rounding noise."""

    mean: np.ndarray  # float64 (D,); zeros for a head without a bias to absorb it
    std: np.ndarray  # float64 (D,), at least SPREAD_FLOOR times the features' scale

    @classmethod
    def of(cls, train: np.ndarray, centred: bool = True) -> _Standardized:
        values = np.asarray(train, np.float64)
        floor = SPREAD_FLOOR * max(feature_spread(values)[2], 1.0)
        mean = values.mean(axis=0) if centred else np.zeros(values.shape[1])
        return cls(mean, np.maximum(values.std(axis=0), floor))

    def apply(self, features: np.ndarray) -> np.ndarray:
        return ((features - self.mean) / self.std).astype(np.float32)

    def into(self, weights: list) -> list:
        """Weights for the features as they are -> the same function of the z-scores."""
        kernel = np.asarray(weights[0], np.float64)
        bias = [(weights[1] + self.mean @ kernel).astype(np.float32)] if len(weights) > 1 else []
        return [(kernel * self.std[:, None]).astype(np.float32), *bias]

    def out_of(self, weights: list) -> list:
        """Weights for the z-scores -> the same function of the features as they are."""
        kernel = np.asarray(weights[0], np.float64) / self.std[:, None]
        bias = [(weights[1] - self.mean @ kernel).astype(np.float32)] if len(weights) > 1 else []
        return [kernel.astype(np.float32), *bias]


def _epoch_function(dense, optimizer, features: CachedFeatures, batch_size: int):
    """``run(order) -> {loss, accuracy, val_loss, val_accuracy}``: one epoch over the training features in ``order``,
    then the metrics of both splits under the new weights."""
    from devices.tfkeras import keras, tensorflow
    from edgex.training.steps import build_optimizer

    tf, k = tensorflow(), keras()
    x, y = tf.constant(features.train), tf.constant(features.train_labels, tf.int32)
    val_x, val_y = tf.constant(features.val), tf.constant(features.val_labels, tf.int32)
    batches = -(-len(features.train) // batch_size)
    build_optimizer(optimizer, dense.trainable_variables)

    def loss_and_top1(inputs, labels):
        probs = dense(inputs)
        loss = tf.reduce_mean(k.losses.sparse_categorical_crossentropy(labels, probs))
        hits = tf.equal(tf.argmax(probs, -1, output_type=tf.int32), labels)
        return loss, tf.reduce_mean(tf.cast(hits, tf.float32))

    @tf.function
    def epoch(order):
        for i in tf.range(batches):
            index = order[i * batch_size : (i + 1) * batch_size]
            with tf.GradientTape() as tape:
                loss, _ = loss_and_top1(tf.gather(x, index), tf.gather(y, index))
            gradients = tape.gradient(loss, dense.trainable_variables)
            optimizer.apply_gradients(zip(gradients, dense.trainable_variables))
        return (*loss_and_top1(x, y), *loss_and_top1(val_x, val_y))

    names = ("loss", "accuracy", "val_loss", "val_accuracy")
    return lambda order: dict(zip(names, (float(v) for v in epoch(tf.constant(order, tf.int32)))))
