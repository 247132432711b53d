"""The conversion bar: `paper` Xception (299x299) to TFLite fp32/int8 and ONNX fp32 works, and the int8
file is at most 27% of the fp32 file. Prints sizes, the ratio, parity figures and conversion times."""

from __future__ import annotations

from benchmarks._paper import paper_export
from devices.files import file_size
from devices.metadata import read_metadata


def main() -> None:
    rows = {}
    for to, precision in (("tflite", "fp32"), ("tflite", "int8"), ("onnx", "fp32")):
        path, seconds = paper_export(to, precision)
        parity = read_metadata(path).parity
        rows[(to, precision)] = file_size(path)
        took = f"{seconds:.1f} s" if seconds is not None else "cached"
        print(
            f"{to:7} {precision:5} {file_size(path) / 2**20:8.2f} MiB  conversion {took:>8}  parity "
            f"{'passed' if parity.passed else 'FAILED'} (max abs diff {parity.max_abs_diff:.2e}, "
            f"top-1 agreement {parity.top1_agreement:.1%} on {parity.samples} samples)"
        )
    print(
        "(random weights: every output is close to 1/10, so int8 top-1 agreement says nothing here; the trained "
        "models of the pipeline and the tests check it)"
    )
    ratio = rows[("tflite", "int8")] / rows[("tflite", "fp32")]
    print(f"int8 / fp32 TFLite size ratio: {ratio:.1%} (bar: <= 27%)")


if __name__ == "__main__":
    main()
