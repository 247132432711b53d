"""Input preprocessing recorded with every model, applied identically on the host and on the device."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from devices.errors import EdgexError, RuntimeMissing

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


@dataclass(frozen=True)
class Preprocessing:
    """How uint8 RGB pixels become model input: ``x * scale + offset``, after resizing to the input size."""

    name: str = "xception"  # Xception's own: pixels scaled to [-1, 1]
    scale: float = 1.0 / 127.5
    offset: float = -1.0
    resize: str = "bilinear"

    def apply(self, images):
        """uint8 images (N, H, W, 3) -> float32 model input."""
        import numpy as np

        return (np.asarray(images, dtype=np.float32) * np.float32(self.scale) + np.float32(self.offset)).astype(
            np.float32
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> Preprocessing:
        if not data:
            return cls()
        return cls(**{k: data[k] for k in ("name", "scale", "offset", "resize") if k in data})


XCEPTION = Preprocessing()


def load_image(path: str | Path, size: tuple[int, int]):
    """Decode any image Pillow reads (grayscale, RGBA, CMYK, palette, the first frame of a GIF) to uint8 RGB HxWx3."""
    import numpy as np

    try:
        from PIL import Image
    except ImportError as exc:
        raise RuntimeMissing("Pillow is not installed (needed to read images): pip install pillow") from exc
    try:
        with Image.open(path) as img:
            img.seek(0)
            rgb = img.convert("RGB")
            if rgb.size != (size[1], size[0]):
                rgb = rgb.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as exc:
        raise EdgexError(f"cannot read image {path}: {exc}") from exc


def resize_uint8(images, size: tuple[int, int]):
    """Resize uint8 images (N, h, w) or (N, h, w, 3) to RGB (N, H, W, 3) with the same filter as load_image."""
    import numpy as np
    from PIL import Image

    out = np.empty((len(images), size[0], size[1], 3), dtype=np.uint8)
    for i, img in enumerate(images):
        pil = Image.fromarray(np.asarray(img, dtype=np.uint8)).convert("RGB")
        out[i] = np.asarray(pil.resize((size[1], size[0]), Image.BILINEAR), dtype=np.uint8)
    return out
