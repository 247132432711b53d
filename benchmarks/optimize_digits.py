"""The optimization bars on the default dataset and preset (digits, mini, 2 CPU cores):
int8 post-training drop <= 1.0 point and int8 file <= 30% of fp32; QAT drop <= 0.5 point;
75% sparsity drop <= 2.0 points and gzip size <= 45% of the dense gzip size.

Usage: python -m benchmarks.optimize_digits [MODEL.keras]   (trains the mini preset first when no model is given)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    from edgex.optimize.prune import prune
    from edgex.optimize.quantize import quantize
    from edgex.training.trainer import TrainConfig, train

    work = Path(tempfile.mkdtemp(prefix="edgex-optimize-"))
    if len(sys.argv) > 1:
        model = Path(sys.argv[1])
    else:
        start = time.perf_counter()
        model = Path(train(TrainConfig(data="digits", preset="mini"), work / "train").model_path)
        print(f"trained the mini preset in {time.perf_counter() - start:.0f} s")

    start = time.perf_counter()
    ptq = quantize(model, "int8", data="digits", out=work / "int8")
    print(
        f"int8 PTQ   top-1 {100 * ptq.float_top1:.2f}% -> {100 * ptq.quant_top1:.2f}%  drop {ptq.drop_points:.2f} "
        f"points (bar <= 1.0); size {ptq.quant_size_bytes / ptq.float_size_bytes:.1%} of fp32 (bar <= 30%)"
        f"  [{time.perf_counter() - start:.0f} s]"
    )

    start = time.perf_counter()
    qat = quantize(model, "qat", data="digits", out=work / "qat")
    print(
        f"QAT        top-1 {100 * qat.float_top1:.2f}% -> {100 * qat.quant_top1:.2f}%  drop {qat.drop_points:.2f} "
        f"points (bar <= 0.5); int8 vs QAT Keras top-1 agreement {qat.parity.top1_agreement:.1%}"
        f"  [{time.perf_counter() - start:.0f} s]"
    )

    start = time.perf_counter()
    pruned = prune(model, 0.75, data="digits", out=work / "prune")
    print(
        f"prune 75%  top-1 {100 * pruned.float_top1:.2f}% -> {100 * pruned.pruned_top1:.2f}%  drop "
        f"{pruned.drop_points:.2f} points (bar <= 2.0); sparsity {pruned.sparsity_pruned_weights:.1%}; gzip "
        f"{pruned.gzip_ratio:.1%} of dense (bar <= 45%); p50 {pruned.latency_ms['dense_p50']:.3f} -> "
        f"{pruned.latency_ms['pruned_p50']:.3f} ms  [{time.perf_counter() - start:.0f} s]"
    )
    print(f"(validation split: {ptq.samples} images, so one image is {100 / ptq.samples:.2f} points)")


if __name__ == "__main__":
    main()
