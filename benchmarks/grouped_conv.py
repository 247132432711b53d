"""Why edgex runs grouped convolutions on TensorFlow's own kernel: tf-keras compiles every grouped Conv2D with XLA
(a workaround from before TensorFlow had a grouped CPU kernel). Times one training step (forward and backward) of a
3x3 grouped convolution both ways at the tiny preset's shapes, checks that outputs and gradients agree, and prints
the ratio.

Usage: python -m benchmarks.grouped_conv
"""

from __future__ import annotations

import time

import numpy as np

from devices.sysinfo import cpu_model
from devices.tfkeras import tensorflow

SHAPES = ((32, 16, 16, 64), (32, 8, 8, 128))  # batch, height, width, channels
GROUPS = (2, 8, "C/8", "C/4", "C/2")


def _step(tf, fn, x, kernel):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = fn(x, kernel)
        loss = tf.reduce_sum(y * tf.sin(y))
    return [y, *tape.gradient(loss, [x, kernel])]


def _seconds(tf, fn, x, kernel, repeats: int = 10) -> float:
    _step(tf, fn, x, kernel)
    start = time.perf_counter()
    for _ in range(repeats):
        _step(tf, fn, x, kernel)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    tf = tensorflow()
    rng = np.random.default_rng(0)

    def conv(x, kernel):
        return tf.nn.convolution(x, kernel, padding="SAME")

    native, xla = tf.function(conv), tf.function(conv, jit_compile=True)
    print(f"CPU: {cpu_model()}; TensorFlow {tf.__version__}")
    print(f"{'input':>16} {'G':>5} {'native ms':>10} {'XLA ms':>9} {'XLA / native':>13} {'max rel. diff':>14}")
    for shape in SHAPES:
        channels = shape[-1]
        x = tf.constant(rng.normal(size=shape).astype(np.float32))
        for spec in GROUPS:
            groups = spec if isinstance(spec, int) else channels // int(spec.split("/")[1])
            kernel = tf.Variable(rng.normal(size=(3, 3, channels // groups, channels)).astype(np.float32))
            ours, theirs = _step(tf, native, x, kernel), _step(tf, xla, x, kernel)
            diff = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(ours, theirs))
            t_native, t_xla = _seconds(tf, native, x, kernel), _seconds(tf, xla, x, kernel)
            print(f"{'x'.join(map(str, shape[1:])):>16} {spec!s:>5} {1e3 * t_native:10.2f} {1e3 * t_xla:9.1f} "
                  f"{t_xla / t_native:12.0f}x {diff:14.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
