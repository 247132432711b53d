"""The dataset layer every command uses: the embedded digits, image folders, and TensorFlow Datasets.

A dataset yields uint8 RGB images at the model's input size and integer labels; the model's recorded
``Preprocessing`` turns them into input, the same way for training, calibration, evaluation and deployment.

>>> ds = load_dataset("digits", image_size=32)         # doctest: +SKIP
>>> ds.class_names, len(ds.train), len(ds.val)           # doctest: +SKIP
(('0', '1', ..., '9'), 1437, 360)
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from devices.errors import EdgexError, RuntimeMissing, first_line
from devices.metadata import DatasetRecord
from devices.preprocess import IMAGE_SUFFIXES, XCEPTION, Preprocessing, load_image, resize_uint8

AUGMENTATIONS = ("flip", "crop")
_IN_MEMORY_LIMIT = 2 * 2**30  # cache decoded images in memory below this many bytes


@dataclass(frozen=True)
class ScanIssue:
    kind: str  # corrupt | not_image | converted | empty_class | missing_in_val | missing_in_train
    path: str
    detail: str = ""


@dataclass(frozen=True)
class ScanReport:
    """What the scan of an image folder found before any training started."""

    root: str
    classes: tuple[str, ...]
    images: int
    issues: tuple[ScanIssue, ...] = ()

    def of_kind(self, kind: str) -> list[ScanIssue]:
        return [i for i in self.issues if i.kind == kind]

    @property
    def skipped(self) -> list[ScanIssue]:
        return [i for i in self.issues if i.kind in ("corrupt", "not_image")]

    def summary_lines(self) -> list[str]:
        lines = [f"{self.root}: {self.images} images in {len(self.classes)} classes"]
        labels = {
            "corrupt": "corrupt or unreadable (skipped)",
            "not_image": "not an image (skipped)",
            "converted": "converted to RGB",
            "empty_class": "class folder without images",
            "missing_in_val": "class present in train but not in val",
            "missing_in_train": "class present in val but not in train",
        }
        for kind, label in labels.items():
            found = self.of_kind(kind)
            if found:
                shown = ", ".join(f"{Path(i.path).name}" + (f" ({i.detail})" if i.detail else "") for i in found[:8])
                more = f" and {len(found) - 8} more" if len(found) > 8 else ""
                lines.append(f"{len(found)} {label}: {shown}{more}")
        return lines


@dataclass(frozen=True)
class Split:
    """One split: either decoded images in memory or image files decoded on the fly."""

    labels: np.ndarray
    images: np.ndarray | None = None  # uint8 (N, H, W, 3)
    files: tuple[str, ...] | None = None
    image_size: int = 32

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, n: int | None, seed: int = 0) -> Split:
        """A seeded, class-balanced-enough subset of ``n`` samples (all when n is None or larger)."""
        if n is None or n >= len(self):
            return self
        return self.subset(np.sort(np.random.default_rng(seed).permutation(len(self))[:n]))

    def subset(self, index: np.ndarray) -> Split:
        """The samples at ``index``, in that order."""
        return Split(
            labels=self.labels[index],
            images=None if self.images is None else self.images[index],
            files=None if self.files is None else tuple(self.files[i] for i in index),
            image_size=self.image_size,
        )

    def halves(self, seed: int = 0) -> tuple[Split, Split]:
        """Two disjoint halves with each class split evenly between them (seeded): one to choose with, one to
        check the choice on."""
        rng = np.random.default_rng(seed)
        first, second = [], []
        for label in np.unique(self.labels):
            members = rng.permutation(np.flatnonzero(self.labels == label))
            first.append(members[0::2])
            second.append(members[1::2])
        return self.subset(np.sort(np.concatenate(first))), self.subset(np.sort(np.concatenate(second)))

    def batches(self, batch_size: int = 64) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(uint8 images, labels) in order, decoding files as needed; no TensorFlow involved."""
        size = (self.image_size, self.image_size)
        for start in range(0, len(self), batch_size):
            stop = min(start + batch_size, len(self))
            if self.images is not None:
                yield self.images[start:stop], self.labels[start:stop]
            else:
                images = np.stack([load_image(f, size) for f in self.files[start:stop]])
                yield images, self.labels[start:stop]

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """All images and labels as arrays (for calibration sets and evaluation bundles)."""
        if self.images is not None:
            return self.images, self.labels
        parts = list(self.batches(256))
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def tf_dataset(
        self,
        batch_size: int,
        preprocessing: Preprocessing = XCEPTION,
        *,
        shuffle: bool = False,
        augment: tuple[str, ...] = (),
        seed: int = 0,
        repeat: bool = False,
        targets: np.ndarray | None = None,
    ):
        """A batched ``tf.data`` pipeline: decode, resize, cache, shuffle, batch, augment, preprocess, prefetch.
        ``targets``: one row per image (in the split's order) that travels beside its label: (labels, targets)."""
        from devices.tfkeras import tensorflow

        tf = tensorflow()
        autotune = tf.data.AUTOTUNE
        size = self.image_size
        labels = self.labels.astype(np.int32)
        if targets is not None:
            labels = (labels, np.asarray(targets, np.float32))
        if self.images is not None:
            ds = tf.data.Dataset.from_tensor_slices((self.images, labels))
        else:

            def decode(path, label):
                image = tf.numpy_function(lambda p: load_image(p.decode(), (size, size)), [path], tf.uint8)
                return tf.ensure_shape(image, (size, size, 3)), label

            ds = tf.data.Dataset.from_tensor_slices((list(self.files), labels))
            ds = ds.map(decode, num_parallel_calls=autotune, deterministic=True)
            if len(self) * size * size * 3 < _IN_MEMORY_LIMIT:
                ds = ds.cache()
        if shuffle:
            ds = ds.shuffle(min(len(self), 10_000), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size)
        scale = tf.constant(preprocessing.scale, tf.float32)
        offset = tf.constant(preprocessing.offset, tf.float32)
        bgr = preprocessing.channels == "bgr"

        def prepare(images, labels):
            x = tf.cast(images, tf.float32)
            if "crop" in augment:  # shift by up to 1/8 of the side: pad, then crop back at a random place
                pad = max(1, size // 8)
                x = tf.image.pad_to_bounding_box(x, pad, pad, size + 2 * pad, size + 2 * pad)
                x = tf.image.random_crop(x, tf.stack([tf.shape(x)[0], size, size, 3]), seed=seed)
            if "flip" in augment:
                x = tf.image.random_flip_left_right(x, seed=seed)
            if bgr:
                x = x[..., ::-1]
            return x * scale + offset, labels

        ds = ds.map(prepare, num_parallel_calls=autotune, deterministic=True)
        return ds.prefetch(autotune)


@dataclass(frozen=True)
class Dataset:
    name: str  # the --data spec it came from
    class_names: tuple[str, ...]
    image_size: int
    train: Split
    val: Split
    fingerprint: str  # changes when the data, the split or the image size change
    scan: ScanReport | None = None
    info: dict = field(default_factory=dict)

    @property
    def classes(self) -> int:
        return len(self.class_names)

    def describe(self) -> dict:
        return {
            "spec": self.name,
            "classes": list(self.class_names),
            "train": len(self.train),
            "val": len(self.val),
            "image_size": self.image_size,
            "fingerprint": self.fingerprint,
            **self.info,
        }

    def record(self) -> DatasetRecord:
        """What a model's metadata records of the data it was trained on."""
        return DatasetRecord(
            spec=self.name,
            classes=self.class_names,
            train=len(self.train),
            val=len(self.val),
            image_size=self.image_size,
            fingerprint=self.fingerprint,
            source=self.info.get("source", ""),
            val_split=self.info.get("val_split"),
            seed=self.info.get("seed"),
        )


def load_dataset(
    spec: str = "digits", image_size: int = 32, *, val_split: float = 0.2, seed: int = 0, strict: bool = False
) -> Dataset:
    """Load ``digits``, an image folder ``PATH``, or ``tfds:NAME``, resized to ``image_size``."""
    if not 0 < val_split < 1:
        raise EdgexError(f"validation split must be in (0, 1), got {val_split}")
    if not isinstance(image_size, int) or image_size < 1:
        raise EdgexError(f"image size must be a positive integer, got {image_size!r}")
    if spec == "digits":
        return _digits(image_size, val_split, seed)
    if spec.startswith("tfds:"):
        return _tfds(spec, image_size, seed)
    return _folder(spec, image_size, val_split, seed, strict)


def _stratified_split(labels: np.ndarray, val_split: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split keeping each class's share in both halves (at least one sample of each class in val)."""
    rng = np.random.default_rng(seed)
    train, val = [], []
    for cls in np.unique(labels):
        index = rng.permutation(np.flatnonzero(labels == cls))
        n_val = max(1, round(len(index) * val_split)) if len(index) > 1 else 0
        val.extend(index[:n_val])
        train.extend(index[n_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def _fingerprint(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else repr(part).encode())
    return digest.hexdigest()[:16]


def _digits_table() -> np.ndarray:
    """scikit-learn's digits: 1,797 rows of 64 intensities (0..16) and the label. Read from the file scikit-learn
    ships, without importing it (1-2 s of imports), or through its loader where that file is not found."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None:
        raise RuntimeMissing("scikit-learn is not installed (it ships the digits): pip install 'edgex[train]'")
    for folder in spec.submodule_search_locations or ():
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            return np.loadtxt(path, delimiter=",")
    from sklearn.datasets import load_digits

    digits = load_digits()
    return np.column_stack([digits.data, digits.target])


def _digits(image_size: int, val_split: float, seed: int) -> Dataset:
    table = _digits_table()
    # 8x8 intensities 0..16 -> uint8 pixels, upsampled like any small image, three channels.
    pixels = np.round(table[:, :-1].reshape(-1, 8, 8) * (255.0 / 16.0)).astype(np.uint8)
    labels = table[:, -1].astype(np.int64)
    train, val = _stratified_split(labels, val_split, seed)
    size = (image_size, image_size)
    return Dataset(
        name="digits",
        class_names=tuple(str(c) for c in range(10)),
        image_size=image_size,
        train=Split(labels[train], resize_uint8(pixels[train], size), image_size=image_size),
        val=Split(labels[val], resize_uint8(pixels[val], size), image_size=image_size),
        fingerprint=_fingerprint("digits", image_size, val_split, seed, pixels.tobytes()),
        info={
            "source": "scikit-learn load_digits (1,797 8x8 handwritten digits)",
            "val_split": val_split,
            "seed": seed,
        },
    )


# -- image folders -----------------------------------------------------------------------------------------------
def _check_image(path: Path) -> ScanIssue | None:
    from PIL import Image, UnidentifiedImageError

    if path.suffix.lower() not in IMAGE_SUFFIXES:
        return ScanIssue("not_image", str(path), f"suffix {path.suffix or '(none)'}")
    try:
        with Image.open(path) as img:
            img.load()
            mode = img.mode
    except UnidentifiedImageError:  # named like an image, but its bytes are not one (or are cut short)
        return ScanIssue("corrupt", str(path), "unreadable image data")
    except (OSError, ValueError, SyntaxError) as exc:
        return ScanIssue("corrupt", str(path), first_line(exc, 80))
    if mode != "RGB":
        return ScanIssue("converted", str(path), mode)
    return None


VAL_FOLDERS = ("val", "validation", "test")


def _split_folders(root: Path) -> dict[str, Path]:
    """{"train": ..., "val": ...} for a split layout, {"": root} for ``root/<class>/*``."""
    if (root / "train").is_dir():
        val = next((root / name for name in VAL_FOLDERS if (root / name).is_dir()), None)
        # Without a validation folder, train/ alone is the image folder (split with --val-split): its class
        # folders must not be flattened into one class called "train".
        return {"train": root / "train", "val": val} if val else {"": root / "train"}
    return {"": root}


def scan_folder(root: str | Path) -> tuple[dict, ScanReport]:
    """Scan ``root/<class>/*`` (or ``root/train/<class>/*`` with ``val/``, ``validation/`` or ``test/``):
    {split: [(path, class)]} and a report."""
    root = Path(root)
    if not root.exists():
        raise EdgexError(f"data folder not found: {root} (use --data digits for the embedded dataset)")
    if not root.is_dir():
        raise EdgexError(f"--data {root} is not a folder; expected PATH/<class>/*.jpg, digits or tfds:NAME")
    folders = _split_folders(root)
    files: dict[str, list[tuple[Path, str]]] = {}
    issues: list[ScanIssue] = []
    classes_per_split: dict[str, list[str]] = {}
    for split, base in folders.items():
        class_dirs = sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))
        classes_per_split[split] = [p.name for p in class_dirs]
        entries = []
        for class_dir in class_dirs:
            candidates = sorted(p for p in class_dir.rglob("*") if p.is_file() and not p.name.startswith("."))
            if not candidates:
                issues.append(ScanIssue("empty_class", str(class_dir)))
            entries += [(p, class_dir.name) for p in candidates]
        files[split] = entries
    all_entries = [e for entries in files.values() for e in entries]
    if not all_entries:
        raise EdgexError(f"no images found in {root}; expected {root}/<class>/*.jpg (or train/ and val/ subfolders)")
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 2) * 2)) as pool:
        checks = list(pool.map(_check_image, [p for p, _ in all_entries]))
    bad = {i.path for i in checks if i is not None and i.kind in ("corrupt", "not_image")}
    issues += [i for i in checks if i is not None]
    usable = {split: [(p, c) for p, c in entries if str(p) not in bad] for split, entries in files.items()}
    for split, entries in usable.items():
        present = {c for _, c in entries}
        for c in classes_per_split[split]:
            if c not in present and not any(i.kind == "empty_class" and Path(i.path).name == c for i in issues):
                issues.append(ScanIssue("empty_class", str(folders[split] / c), "no readable image"))
    if len(files) == 2:
        train_classes = {c for _, c in usable["train"]}
        val_classes = {c for _, c in usable["val"]}
        issues += [ScanIssue("missing_in_val", str(folders["train"] / c)) for c in sorted(train_classes - val_classes)]
        issues += [ScanIssue("missing_in_train", str(folders["val"] / c)) for c in sorted(val_classes - train_classes)]
    classes = sorted({c for entries in usable.values() for _, c in entries})
    report = ScanReport(str(root), tuple(classes), sum(len(e) for e in usable.values()), tuple(issues))
    return usable, report


def _folder(spec: str, image_size: int, val_split: float, seed: int, strict: bool) -> Dataset:
    usable, report = scan_folder(spec)
    if strict and report.skipped:
        first = report.skipped[0]
        raise EdgexError(
            f"{len(report.skipped)} unreadable file(s) in {spec} (--strict), e.g. {first.path}: "
            f"{first.kind} {first.detail}".rstrip()
        )
    classes = report.classes
    if len(classes) < 2:
        raise EdgexError(
            f"{spec} has {len(classes)} class with images ({', '.join(classes) or 'none'}); "
            "a classifier needs at least 2 class folders"
        )
    index = {c: i for i, c in enumerate(classes)}

    def split_of(entries) -> Split:
        return Split(
            labels=np.array([index[c] for _, c in entries], dtype=np.int64),
            files=tuple(str(p) for p, _ in entries),
            image_size=image_size,
        )

    if "train" in usable:
        train, val = split_of(usable["train"]), split_of(usable["val"])
        how = "train/ and val/ folders"
    else:
        every = split_of(usable[""])
        tr, va = _stratified_split(every.labels, val_split, seed)
        train = Split(every.labels[tr], files=tuple(every.files[i] for i in tr), image_size=image_size)
        val = Split(every.labels[va], files=tuple(every.files[i] for i in va), image_size=image_size)
        how = f"seeded split, {val_split:.0%} validation"
    if len(val) == 0:
        raise EdgexError(f"{spec}: the validation split is empty; add images or use --val-split")
    stats = [(str(p), os.path.getsize(p), int(os.path.getmtime(p))) for p in (*train.files, *val.files)]
    return Dataset(
        name=spec,
        class_names=classes,
        image_size=image_size,
        train=train,
        val=val,
        fingerprint=_fingerprint("folder", image_size, val_split, seed, stats),
        scan=report,
        info={"source": f"image folder ({how})", "val_split": val_split, "seed": seed},
    )


def _tfds(spec: str, image_size: int, seed: int) -> Dataset:
    name = spec.split(":", 1)[1]
    try:
        import tensorflow_datasets as tfds
    except ImportError as exc:
        raise RuntimeMissing(f"--data {spec} needs TensorFlow Datasets: pip install tensorflow-datasets") from exc
    try:
        builder = tfds.builder(name)
    except Exception as exc:
        raise EdgexError(f"TensorFlow Datasets has no dataset {name!r}: {first_line(exc)}") from exc
    splits = list(builder.info.splits.keys())
    val_name = next((s for s in ("validation", "test") if s in splits), None)
    if "train" not in splits or val_name is None:
        raise EdgexError(f"tfds:{name} needs a train and a validation or test split (has: {', '.join(splits)})")
    try:
        train_ds, val_ds = tfds.load(name, split=["train", val_name], as_supervised=True, download=False)
    except Exception as exc:
        raise EdgexError(
            f"tfds:{name} is not available locally (edgex never downloads by itself): "
            f"run `tfds build {name}` or download it first ({first_line(exc, 120)})"
        ) from exc
    class_names = tuple(builder.info.features["label"].names)

    def materialise(ds) -> Split:
        import tensorflow as tf

        ds = ds.map(
            lambda x, y: (
                tf.cast(
                    tf.image.resize(tf.image.grayscale_to_rgb(x) if x.shape[-1] == 1 else x, (image_size, image_size)),
                    tf.uint8,
                ),
                y,
            )
        )
        images, labels = [], []
        for x, y in ds.batch(512).as_numpy_iterator():
            images.append(x)
            labels.append(y)
        return Split(np.concatenate(labels).astype(np.int64), np.concatenate(images), image_size=image_size)

    train, val = materialise(train_ds), materialise(val_ds)
    return Dataset(
        name=spec,
        class_names=class_names,
        image_size=image_size,
        train=train,
        val=val,
        fingerprint=_fingerprint("tfds", name, image_size, len(train), len(val)),
        info={"source": f"TensorFlow Datasets {name} (train, {val_name})"},
    )
