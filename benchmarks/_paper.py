"""Shared by the benchmark scripts: the `paper` Xception (299x299, random weights: latency and size do not
depend on the weights' values) saved once and converted once, in a cache folder."""

from __future__ import annotations

import os
import time
from pathlib import Path

CACHE = Path(os.environ.get("EDGEX_BENCH_CACHE", Path.home() / ".cache" / "edgex-benchmarks"))


def paper_keras(conv: str = "separable", classes: int = 10) -> Path:
    """The paper-sized model (10 classes so the digits can calibrate and check it) as a .keras file."""
    path = CACHE / f"paper_{conv}_{classes}.keras"
    if not path.exists():
        from devices.metadata import ArtifactMetadata, write_metadata
        from devices.preprocess import XCEPTION
        from devices.tfkeras import keras
        from edgex.models import create_model

        keras().utils.set_random_seed(0)
        CACHE.mkdir(parents=True, exist_ok=True)
        model = create_model("paper", classes=classes, conv=conv)
        model.save(path)
        meta = ArtifactMetadata(
            input_shape=(299, 299, 3),
            class_names=tuple(str(i) for i in range(classes)),
            preprocessing=XCEPTION,
            preset="paper",
        )
        write_metadata(path, meta)
    return path


def paper_export(to: str, precision: str, conv: str = "separable") -> tuple[Path, float | None]:
    """(artifact, conversion seconds or None when cached)."""
    from converters import default_output
    from edgex.artifacts.convert import export_model

    source = paper_keras(conv)
    out = default_output(source, to, precision)
    if out.exists():
        return out, None
    start = time.perf_counter()
    export_model(source, to, precision, data="digits", calib_samples=100, parity_samples=16)
    return out, time.perf_counter() - start
