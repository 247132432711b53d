"""What a study trains: its variants (a registry, one function per study) and the paper's claims it checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from devices.errors import EdgexError, choice_error
from edgex.models.segments import SPECTRUM, parse_segments

RUNTIME_PRECISIONS = {"litert": ("fp32", "int8"), "onnxruntime": ("fp32", "int8")}
INCEPTION_INPUT = 75  # keras.applications.InceptionV3's smallest input


@dataclass(frozen=True)
class Variant:
    name: str  # "elu", "segments:C/4", "inception_v3"
    model: dict = field(default_factory=dict)  # overrides of the preset (XceptionConfig fields)
    architecture: str = "xception"  # or "inception_v3" (keras.applications, weights=None)

    @property
    def tag(self) -> str:
        """The variant's folder name."""
        return self.name.replace(":", "_").replace("/", "_")


@dataclass(frozen=True)
class Claim:
    """An ordering the paper reports: ``better`` ends with a higher top-1 than ``worse``."""

    better: str
    worse: str
    source: str  # where the paper says so, or that it says nothing
    claimed: bool = True  # False: a comparison the paper does not make, reported as measured


@dataclass(frozen=True)
class StudyConfig:
    study: str  # spectrum | activation | residual | inception
    seeds: int = 3  # trainings per variant (seeds 0 .. seeds-1)
    epochs: int = 4
    data: str = "digits"
    preset: str | None = None  # None: the study's own default (tiny; paper at 75 px for inception)
    segments: tuple[str, ...] = SPECTRUM  # the spectrum study's points
    runtimes: tuple[str, ...] = ("litert", "onnxruntime")  # latency p50 of the seed-0 model; () for none
    precisions: tuple[str, ...] = ("fp32", "int8")
    batch_size: int = 32
    threads: int | None = 1  # runtime threads for latency

    def __post_init__(self):
        if self.study not in STUDIES:
            raise choice_error("study", self.study, list(STUDIES))
        if not isinstance(self.seeds, int) or self.seeds < 1:
            raise EdgexError(f"seeds must be a positive integer, got {self.seeds!r}")
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise EdgexError(f"epochs must be a positive integer, got {self.epochs!r}")
        object.__setattr__(self, "segments", tuple(dict.fromkeys(parse_segments(s) for s in self.segments)))
        for runtime in self.runtimes:
            if runtime not in RUNTIME_PRECISIONS:
                raise choice_error("runtime", runtime, list(RUNTIME_PRECISIONS))
        for precision in self.precisions:
            if precision not in ("fp32", "int8"):
                raise choice_error("precision", precision, ("fp32", "int8"))
        self.variants()  # a segments value the preset cannot take fails here, before any training

    @property
    def preset_name(self) -> str:
        return self.preset or ("paper" if self.study == "inception" else "tiny")

    def variants(self) -> list[Variant]:
        variants = STUDIES[self.study].variants(self)
        if self.study != "inception":
            from edgex.models import preset_config

            for variant in variants:
                preset_config(self.preset_name, **variant.model)
        return variants

    def claims(self) -> list[Claim]:
        return STUDIES[self.study].claims(self)

    def to_dict(self) -> dict:
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


@dataclass(frozen=True)
class Study:
    name: str
    variants: Callable[[StudyConfig], list[Variant]]
    claims: Callable[[StudyConfig], list[Claim]]
    question: str  # one line for the summary


STUDIES: dict[str, Study] = {}


def register_study(name: str, question: str):
    """Register a study: the decorated function returns its variants and claims for a config."""

    def wrap(fn):
        STUDIES[name] = Study(name, lambda c: fn(c)[0], lambda c: fn(c)[1], question)
        return fn

    return wrap


@register_study("spectrum", "Top-1 and latency along the spectrum from one segment (regular conv) to C (separable).")
def _spectrum(config: StudyConfig):
    variants = [Variant(f"segments:{s}", {"segments": s}) for s in config.segments]
    source = "no claim: the paper leaves the points between the ends as future work"
    claims = [Claim("segments:C", v.name, source, claimed=False) for v in variants if v.name != "segments:C"]
    return variants, claims if "C" in config.segments else []


@register_study("activation", "An activation between depthwise and pointwise: none vs ELU vs ReLU.")
def _activation(config: StudyConfig):
    variants = [Variant(a, {"intermediate_activation": a}) for a in ("none", "elu", "relu")]
    source = "paper Figure 10: no activation converges faster and ends better than ELU, which beats ReLU"
    return variants, [Claim("none", "elu", source), Claim("elu", "relu", source), Claim("none", "relu", source)]


@register_study("residual", "Residual connections on or off.")
def _residual(config: StudyConfig):
    variants = [Variant("residual", {"residual": True}), Variant("no-residual", {"residual": False})]
    return variants, [Claim("residual", "no-residual", "paper Figure 9: without residuals, lower final accuracy")]


@register_study("inception", f"Xception against Inception V3 at {INCEPTION_INPUT} px (about the same parameters).")
def _inception(config: StudyConfig):
    variants = [Variant("xception", {"input_size": INCEPTION_INPUT}), Variant("inception_v3", {}, "inception_v3")]
    return variants, [Claim("xception", "inception_v3", "paper Table 1: 79.0% vs 78.2% top-1 on ImageNet")]


__all__ = ["STUDIES", "Claim", "StudyConfig", "Variant", "register_study"]
