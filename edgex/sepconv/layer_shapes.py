"""The convolution shapes a sweep measures: those of the paper Xception, of a Keras model, or of a CSV/YAML file."""

from __future__ import annotations

import csv
from pathlib import Path

from devices.errors import EdgexError, first_line
from edgex.models.costs import ConvSpec


def xception_shapes(input_size: int = 299) -> list[tuple[str, ConvSpec, int]]:
    """(kind, spec, count) of every distinct convolution of the paper Xception at ``input_size``."""
    from edgex.models import create_model

    return model_shapes(create_model("paper", input_size=input_size, include_top=False))


def model_shapes(model) -> list[tuple[str, ConvSpec, int]]:
    """(kind, spec, count) of every distinct convolution of a Keras model."""
    from devices.tfkeras import keras
    from edgex.models.costs import model_cost

    found: dict[ConvSpec, list] = {}
    for _, kind, spec in model_cost(model).conv_specs():
        found.setdefault(spec, [kind, 0])[1] += 1
    keras().backend.clear_session()
    return [(kind, spec, count) for spec, (kind, count) in found.items()]


def resolve_shapes(shapes: str, input_size: int) -> list[tuple[str, ConvSpec, int]]:
    """``xception`` (the paper network at ``input_size``), a Keras model file, or a CSV/YAML shapes file."""
    if shapes == "xception":
        return xception_shapes(input_size)
    if Path(shapes).suffix in (".keras", ".h5"):
        from devices.tensorflow import load_keras_model

        return model_shapes(load_keras_model(shapes))
    return load_shapes(shapes)


def load_shapes(path: str | Path) -> list[tuple[str, ConvSpec, int]]:
    """Shapes from a CSV (header h,w,c_in,c_out,k,stride) or YAML (a list of such mappings)."""
    path = Path(path)
    if not path.is_file():
        raise EdgexError(f"shapes file not found: {path} (or use --shapes xception)")
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise EdgexError(
            f"--shapes {path} is not a text file: give xception, a .keras/.h5 model, or a CSV/YAML "
            "of h,w,c_in,c_out,k,stride"
        ) from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            entries = yaml.safe_load(text) or []
        except yaml.YAMLError as exc:
            raise EdgexError(f"{path} is not valid YAML: {first_line(exc)}") from None
        if not isinstance(entries, list):
            raise EdgexError(f"{path} must be a list of shapes (h, w, c_in, c_out, k, stride)")
    else:
        entries = list(csv.DictReader(text.splitlines()))
    shapes = []
    for i, entry in enumerate(entries, 1):
        try:
            values = {key: int(entry[key]) for key in ("h", "w", "c_in", "c_out")}
            values["k"] = int(entry.get("k", 3))
            values["stride"] = int(entry.get("stride", 1))
        except (KeyError, TypeError, ValueError) as exc:
            raise EdgexError(
                f"{path} entry {i}: needs integer h, w, c_in, c_out (and optional k, stride): {entry}"
            ) from exc
        shapes.append(("file", ConvSpec(**values, padding=str(entry.get("padding", "same"))), 1))
    if not shapes:
        raise EdgexError(f"{path} lists no shapes")
    return shapes


def variants_for(spec: ConvSpec, wanted: tuple[str, ...]) -> list[str]:
    """A 1x1 convolution has no separable form: it is measured as itself (regular)."""
    return [v for v in wanted if spec.k > 1 or v == "regular"]
