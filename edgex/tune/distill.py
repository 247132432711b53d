"""Training a changed network from the model being tuned as its teacher (knowledge distillation, Hinton et al.
2015): the loss mixes cross-entropy on the labels with the KL divergence between the teacher's and the student's
outputs softened by a temperature, scaled by its square so that both terms keep their size. A network that kept
the teacher's weights is fine-tuned this way; a student built fresh is trained from scratch this way.

The teacher's outputs can be given up front (``targets``, one row per training image at the teacher's own input
size): the teacher then runs once per run instead of at every step (at 299 px its forward pass was half of every
epoch), and training goes without augmentation, so that each image's target is the teacher's output on that very
image (consistent views, Beyer et al. 2022). A network that kept the teacher's weights is fine-tuned this way.

Training runs in rungs of epochs; after each rung, ``after_rung(epoch, model)`` decides whether to go on (a
successive-halving schedule stops hopeless candidates early and good-enough ones as soon as they pass).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from devices.errors import EdgexError

TEMPERATURE = 4.0  # Hinton et al.'s range is 2-20; 4 is the common choice for small image classifiers
TEACHER_WEIGHT = 0.7  # the KL term's share of the loss; the labels' cross-entropy has the rest


class BudgetSpent(Exception):
    """Training reached its deadline: the network is not trained, and not kept."""


@dataclass(frozen=True)
class DistillConfig:
    """How a changed network is trained from its teacher."""

    epochs: int  # the most epochs it may train
    lr: float  # peak learning rate (Adam, cosine decay over ``epochs``)
    batch_size: int = 32
    seed: int = 0
    augment: tuple[str, ...] = ("crop",)
    deadline: float | None = None  # time.time() at which training stops, whatever step it is at (the tune's budget)

    def __post_init__(self):
        if self.epochs < 1 or self.lr <= 0 or self.batch_size < 1:
            raise EdgexError(
                f"distillation needs epochs >= 1, lr > 0 and batch size >= 1 "
                f"(got {self.epochs}, {self.lr}, {self.batch_size})"
            )


def distill(
    student,
    teacher,
    dataset,
    preprocessing,
    config: DistillConfig,
    rungs: tuple[int, ...],
    after_rung: Callable[[int, object], bool],
    targets=None,
) -> int:
    """Train ``student`` from ``teacher`` on ``dataset``'s training split (images at the student's input size; the
    teacher sees them resized to its own, or gave ``targets`` for them); returns the epochs trained. ``rungs``: the
    epochs after which ``after_rung(epochs_done, student)`` is asked whether to go on."""
    from devices.tfkeras import keras, tensorflow
    from edgex.training.steps import build_optimizer

    tf, k = tensorflow(), keras()
    k.utils.set_random_seed(config.seed)
    steps = max(1, len(dataset.train) // config.batch_size)
    augment = config.augment if targets is None else ()
    train = dataset.train.tf_dataset(
        config.batch_size, preprocessing, shuffle=True, augment=augment, seed=config.seed, repeat=True, targets=targets
    )
    optimizer = k.optimizers.Adam(k.optimizers.schedules.CosineDecay(config.lr, steps * config.epochs))
    build_optimizer(optimizer, student.trainable_variables)
    step = _train_step(tf, k, student, None if targets is not None else teacher, optimizer)
    batches = iter(train)
    done = 0
    for rung in sorted({min(r, config.epochs) for r in rungs} | {config.epochs}):
        for _ in range((rung - done) * steps):
            if config.deadline is not None and time.time() > config.deadline:
                raise BudgetSpent(f"the budget ran out during epoch {done + 1} of training")
            images, labels = next(batches)
            step(images, labels)
        done = rung
        if not after_rung(done, student) or done >= config.epochs:
            return done
    return done


def teacher_targets(teacher, dataset, preprocessing):
    """The teacher's outputs for every image of ``dataset``'s training split, in order (``dataset`` at the teacher's
    input size): what ``distill`` takes as ``targets``."""
    from edgex.training.head import split_outputs

    return split_outputs(teacher, dataset.train, preprocessing)


def _train_step(tf, k, student, teacher, optimizer):
    """One step; ``teacher`` None: each batch's labels come as (labels, the teacher's outputs)."""
    student_size = tuple(student.inputs[0].shape[1:3])
    teacher_size = student_size if teacher is None else tuple(teacher.inputs[0].shape[1:3])
    eps = 1e-7

    def soften(probabilities):
        logits = tf.math.log(tf.clip_by_value(tf.cast(probabilities, tf.float32), eps, 1.0)) / TEMPERATURE
        return tf.nn.softmax(logits)

    @tf.function
    def step(images, labels):
        if teacher is None:
            labels, given = labels
        else:
            seen = images if teacher_size == student_size else tf.image.resize(images, teacher_size)
            given = teacher(seen, training=False)
        target = soften(given)
        with tf.GradientTape() as tape:
            predicted = student(images, training=True)
            kl = tf.reduce_mean(tf.reduce_sum(target * tf.math.log(target / soften(predicted)), axis=-1))
            ce = tf.reduce_mean(k.losses.sparse_categorical_crossentropy(labels, predicted))
            loss = TEACHER_WEIGHT * TEMPERATURE**2 * kl + (1 - TEACHER_WEIGHT) * ce
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))
        return loss

    return step
