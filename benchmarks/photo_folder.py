"""A small two-class photo folder from real photographs, for trying fine-tuning and small-data training offline:
crops of scikit-learn's two sample photos (china.jpg and flower.jpg, 427x640), saved as JPEG at 96 to 160 px.

    python -m benchmarks.photo_folder PHOTOS [--per-class 122]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def make_photo_folder(out: str | Path, per_class: int = 122, seed: int = 0) -> Path:
    """Write ``out/<china|flower>/NNN.jpg``: random square crops (96-160 px) of the two sample photos."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    out = Path(out)
    sample = load_sample_images()
    for name, photo in zip(("china", "flower"), sample.images):
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        height, width = photo.shape[:2]
        for i in range(per_class):
            side = int(rng.integers(96, 161))
            top, left = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
            crop = photo[top : top + side, left : left + side]
            Image.fromarray(crop).save(folder / f"{i:03d}.jpg", quality=90)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--per-class", type=int, default=122)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = make_photo_folder(args.out, args.per_class, args.seed)
    print(f"{path}: {2 * args.per_class} photos in 2 classes (china, flower)")


if __name__ == "__main__":
    main()
