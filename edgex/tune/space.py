"""What a candidate is, and the search space it is drawn from: one function per network lever, and the deployment
knobs of each runtime (precision, kept-float layers, threads, runtime options).

Optuna asks for the parameters one by one (define by run); every parameter a lever asks for is named after it, so
that a study's trials read as the levers they pulled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from edgex.models.xception import MIN_INPUT_SIZE, XceptionConfig
from edgex.tune.surgery import NetworkChange

# The format each runtime runs, and the precisions it is offered in (converters.registry's targets).
RUNTIME_FORMATS = {"litert": "tflite", "onnxruntime": "onnx", "edgetpu": "edgetpu"}
PRECISIONS = {"litert": ("int8", "dynamic", "fp16", "fp32"), "onnxruntime": ("int8", "fp32"), "edgetpu": ("int8",)}
KEEP_FLOAT = (1, 2, 4)  # int8 with the k most sensitive layers kept in float (--layer-errors)
# Runtime options that change speed: parameter -> {choice: the loader's keyword arguments}.
RUNTIME_OPTIONS: dict[str, dict[str, dict[str, dict]]] = {
    "litert": {
        "xnnpack": {
            "on": {},
            "off": {"xnnpack": False},  # LiteRT's reference kernels, without its default XNNPACK delegate
            "latest": {"xnnpack_latest": True},  # XNNPACK with the operators newer releases turn on
        }
    },
    "onnxruntime": {
        "graph": {"all": {}, "extended": {"graph_optimization": "extended"}, "basic": {"graph_optimization": "basic"}},
        "mode": {"sequential": {}, "parallel": {"execution_mode": "parallel"}},
    },
    "edgetpu": {},
}


@dataclass(frozen=True)
class Deployment:
    """How an artifact is made and run: runtime, precision, threads and runtime options."""

    runtime: str  # litert, onnxruntime or edgetpu
    precision: str  # fp32, fp16, dynamic or int8
    threads: int
    keep_float: int = 0  # int8: the k most sensitive layers kept in float
    options: tuple[tuple[str, str], ...] = ()  # (runtime option, choice), see RUNTIME_OPTIONS

    @property
    def format(self) -> str:
        return RUNTIME_FORMATS[self.runtime]

    @property
    def load_options(self) -> dict:
        """The keyword arguments that devices.load_model takes for these runtime options."""
        chosen: dict = {}
        for name, choice in self.options:
            chosen.update(RUNTIME_OPTIONS[self.runtime][name][choice])
        return chosen

    @property
    def artifact_key(self) -> str:
        """What decides the file (not threads or runtime options, which only change how it runs)."""
        keep = f"-keep{self.keep_float}" if self.keep_float else ""
        return f"{self.format}-{self.precision}{keep}"

    def describe(self) -> str:
        keep = f" ({self.keep_float} layers float)" if self.keep_float else ""
        options = "".join(f", {name} {choice}" for name, choice in self.options)
        return f"{self.runtime} {self.precision}{keep}, {self.threads} thread(s){options}"

    def to_dict(self) -> dict:
        return {**asdict(self), "options": dict(self.options)}

    @classmethod
    def from_dict(cls, data: dict) -> Deployment:
        """A deployment from ``to_dict``'s record."""
        return cls(
            runtime=data["runtime"], precision=data["precision"], threads=data["threads"],
            keep_float=data.get("keep_float", 0), options=tuple((data.get("options") or {}).items()),
        )  # fmt: skip


@dataclass(frozen=True)
class Candidate:
    network: NetworkChange = field(default_factory=NetworkChange)
    deployment: Deployment = field(default_factory=lambda: Deployment(runtime="litert", precision="int8", threads=1))


@dataclass(frozen=True)
class Space:
    """The choices open to a search: set by the model, the device and the config."""

    config: XceptionConfig | None  # the model's Xception config (None: not an edgex Xception, no network levers)
    levers: tuple[str, ...]
    runtimes: tuple[str, ...]
    threads: tuple[int, ...]
    keep_float: tuple[int, ...] = ()  # offered when the layer errors are known


# -- network levers: (trial, model config) -> the NetworkChange fields the lever sets --------------------------
def _drop_blocks(trial, config: XceptionConfig) -> dict:
    return {"drop_blocks": trial.suggest_int("drop_blocks", 0, config.middle_blocks)}


PRUNE_SHARES = (0.0, 0.25, 0.5)
WIDTHS = (1.0, 0.67, 0.5)


def _prune(trial, config: XceptionConfig) -> dict:
    return {"prune": trial.suggest_categorical("prune", list(PRUNE_SHARES))}


def _resolution(trial, config: XceptionConfig) -> dict:
    sizes = resolutions(config.input_size)
    return {"input_size": trial.suggest_categorical("input_size", list(sizes))}


def _student(trial, config: XceptionConfig) -> dict:
    return {"width": trial.suggest_categorical("width", list(WIDTHS))}


# In the order they are asked: a student is built fresh, so pruning the model's channels applies only without one.
LEVERS: dict[str, Callable] = {
    "student": _student,
    "drop-blocks": _drop_blocks,
    "prune": _prune,
    "resolution": _resolution,
}
LEVER_PARAMS = {"student": "width", "drop-blocks": "drop_blocks", "prune": "prune", "resolution": "input_size"}


def resolutions(size: int) -> tuple[int, ...]:
    """The model's input size and lower ones (7/8, 3/4, 5/8, 1/2 of it, multiples of 8 where it allows), down to
    the builder's minimum."""
    lower = {max(MIN_INPUT_SIZE, int(size * f) // 8 * 8 if size >= 64 else int(size * f)) for f in (0.875, 0.75, 0.5)}
    return (size, *sorted((s for s in lower if s < size), reverse=True))


def applicable_levers(space: Space) -> tuple[str, ...]:
    """The levers that can change this model: none for a model edgex did not build."""
    config = space.config
    if config is None:
        return ()
    usable = {
        "student": True,
        "drop-blocks": config.middle_blocks > 0,
        "prune": config.conv == "separable" and config.segments is None and not config.pointwise_channels,
        "resolution": len(resolutions(config.input_size)) > 1,
    }
    return tuple(lever for lever in LEVERS if lever in space.levers and usable[lever])


def suggest(trial, space: Space) -> Candidate:
    """The candidate an Optuna trial asks for."""
    fields: dict = {}
    for lever in applicable_levers(space):
        if lever != "prune" or fields.get("width", 1.0) >= 1.0:
            fields.update(LEVERS[lever](trial, space.config))
    if fields.get("input_size") == getattr(space.config, "input_size", None):
        fields["input_size"] = None  # the model's own resolution is no change
    runtime = trial.suggest_categorical("runtime", list(space.runtimes))
    precision = trial.suggest_categorical(f"precision_{runtime}", list(PRECISIONS[runtime]))
    keep = 0
    if precision == "int8" and runtime == "litert" and space.keep_float:
        keep = trial.suggest_categorical("keep_float", [0, *space.keep_float])
    threads = trial.suggest_categorical("threads", list(space.threads))
    options = tuple(
        (name, trial.suggest_categorical(f"{runtime}_{name}", list(choices)))
        for name, choices in RUNTIME_OPTIONS[runtime].items()
    )
    options = tuple((name, choice) for name, choice in options if RUNTIME_OPTIONS[runtime][name][choice])
    deployment = Deployment(runtime=runtime, precision=precision, threads=threads, keep_float=keep, options=options)
    return Candidate(network=NetworkChange(**fields), deployment=deployment)


def _unchanged(space: Space) -> dict:
    """The lever parameters of the unchanged network."""
    unchanged = {"drop_blocks": 0, "prune": 0.0, "width": 1.0, "input_size": getattr(space.config, "input_size", 0)}
    return {LEVER_PARAMS[lever]: unchanged[LEVER_PARAMS[lever]] for lever in applicable_levers(space)}


def strongest_changes(space: Space) -> list[dict]:
    """Each lever's strongest change on its own, as the lever parameters of a trial: all middle blocks dropped,
    the most pruning, the lowest resolution, the narrowest student."""
    config = space.config
    strongest = {
        "student": ("width", min(WIDTHS)),
        "drop-blocks": ("drop_blocks", getattr(config, "middle_blocks", 0)),
        "prune": ("prune", max(PRUNE_SHARES)),
        "resolution": ("input_size", min(resolutions(getattr(config, "input_size", MIN_INPUT_SIZE)))),
    }
    changes = []
    for lever in applicable_levers(space):
        name, value = strongest[lever]
        params = {**_unchanged(space), name: value}
        changes.append({k: v for k, v in params.items() if not (lever == "student" and k == "prune")})
    return changes


def cheap_first(space: Space) -> list[dict]:
    """Trials to run before the sampler's own, cheapest first: the unchanged network in every runtime and
    precision, at the most and at the fewest threads (no training; each export serves several of them)."""
    unchanged = _unchanged(space)
    trials = []
    for runtime in space.runtimes:
        for precision in PRECISIONS[runtime]:
            for threads in dict.fromkeys((max(space.threads), min(space.threads))):
                trial = {**unchanged, "runtime": runtime, f"precision_{runtime}": precision, "threads": threads}
                trial.update({f"{runtime}_{name}": next(iter(c)) for name, c in RUNTIME_OPTIONS[runtime].items()})
                trials.append(trial | ({"keep_float": 0} if space.keep_float and precision == "int8" else {}))
    return trials
