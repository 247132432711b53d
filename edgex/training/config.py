"""What `edgex train` is asked to do: TrainConfig, its checks, its phases, and the recipe keys that set it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from devices.errors import EdgexError, choice_error
from devices.preprocess import PREPROCESSINGS
from edgex.training.transfer import Phase, parse_unfreeze

OPTIMIZERS = ("adam", "paper")
STRATEGIES = ("auto", "one-device", "mirrored", "multi-worker")
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class TrainConfig:
    data: str = "digits"  # digits, an image folder, or tfds:NAME
    preset: str = "mini"
    model: dict = field(default_factory=dict)  # overrides of the preset (conv, width, middle_blocks, ...)
    epochs: int = 20  # from scratch: all epochs; fine-tuning: the epochs of phase 2
    batch_size: int = 32  # global batch, split across replicas
    optimizer: str = "adam"  # adam, or paper: SGD momentum 0.9, lr 0.045 x 0.94 every 2 epochs, wd 1e-5, dropout 0.5
    lr: float | None = None  # adam: 2e-3 with cosine decay; paper: 0.045 (fine-tuning: phase 1's)
    seed: int = 0
    val_split: float = 0.2
    augment: tuple[str, ...] = ("crop",)
    strategy: str = "auto"
    precision: str = "float32"
    strict: bool = False  # unreadable images are an error instead of being skipped
    weights: str = "none"  # none, imagenet, or a .h5 / .weights.h5 / .keras file matched by layer name and shape
    from_model: str | None = None  # a Keras image classifier to fine-tune instead of a preset (recipes: from)
    # fine-tuning phase 1: the most epochs the new head trains on backbone features computed once; it stops early
    # when the validation loss stops falling (head.HEAD_PATIENCE epochs) and keeps its best epoch (0 skips phase 1)
    head_epochs: int = 200
    unfreeze: str = "all"  # fine-tuning phase 2: the top N blocks (or all) train with the head
    fine_tune_lr: float = 1e-5  # fine-tuning phase 2's learning rate
    preprocessing: str | None = None  # xception, caffe, torch, raw; None: --from's recorded one, else xception
    recompute_bn: bool = False  # fine-tuning: BatchNormalization statistics recomputed on the training images first

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise choice_error("optimizer", self.optimizer, OPTIMIZERS)
        if self.strategy not in STRATEGIES:
            raise choice_error("strategy", self.strategy, STRATEGIES)
        if self.precision not in PRECISIONS:
            raise choice_error("precision", self.precision, PRECISIONS)
        if not isinstance(self.epochs, int) or self.epochs < 1:
            raise EdgexError(f"epochs must be a positive integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise EdgexError(f"batch size must be a positive integer, got {self.batch_size!r}")
        for name in ("lr", "fine_tune_lr"):
            value = getattr(self, name)
            if value is not None and not (0 < value < 10):
                raise EdgexError(f"{name.replace('_', ' ')} must be in (0, 10), got {value}")
        from edgex.data import AUGMENTATIONS

        for a in self.augment:
            if a not in AUGMENTATIONS:
                raise choice_error("augmentation", a, AUGMENTATIONS)
        self._check_transfer()

    def _check_transfer(self) -> None:
        if self.preprocessing is not None and self.preprocessing not in PREPROCESSINGS:
            raise choice_error("preprocessing", self.preprocessing, PREPROCESSINGS)
        if not isinstance(self.head_epochs, int) or self.head_epochs < 0:
            raise EdgexError(f"head epochs must be an integer >= 0, got {self.head_epochs!r}")
        object.__setattr__(self, "unfreeze", parse_unfreeze(self.unfreeze))
        if self.recompute_bn and not self.pretrained:
            raise EdgexError(
                "--recompute-bn is for fine-tuning (--weights or --from); training from scratch recomputes "
                "BatchNormalization statistics after its last epoch"
            )
        if self.from_model is None:
            return
        if self.weights not in ("none", "", None):
            raise EdgexError(f"--weights {self.weights} and --from are exclusive: --from starts from its own weights")
        changed = sorted(k for k, v in self.model.items() if v is not None)
        if changed:
            raise EdgexError(f"--from fine-tunes the model as it is; model options do not apply ({', '.join(changed)})")
        if self.precision != "float32":
            raise EdgexError(f"--precision {self.precision} is for edgex presets; --from models train in float32")

    @property
    def pretrained(self) -> bool:
        return self.from_model is not None or self.weights not in ("none", "", None)

    def phases(self) -> tuple[Phase, ...]:
        """From scratch, one phase; from pretrained weights, the head alone, then the top blocks at a low rate."""
        if not self.pretrained:
            return (Phase(number=1, name="train", epochs=self.epochs, lr=self.lr),)
        head = Phase(number=1, name="head", epochs=self.head_epochs, lr=self.lr, unfreeze="0", bn_frozen=True)
        fine_tune = Phase(
            number=2 if self.head_epochs else 1,
            name="fine-tune",
            epochs=self.epochs,
            lr=self.fine_tune_lr,
            unfreeze=self.unfreeze,
            bn_frozen=True,
        )
        return (head, fine_tune) if self.head_epochs else (fine_tune,)

    def model_config(self, classes: int):
        from edgex.models import preset_config

        overrides = dict(self.model)
        overrides["classes"] = classes
        if self.optimizer == "paper" and overrides.get("dropout") is None:
            overrides["dropout"] = 0.5
        return preset_config(self.preset, **overrides)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["augment"] = list(self.augment)
        return data


# Recipe keys of the transfer-learning options (``train: {weights: ..., from: ..., head_epochs: ..., unfreeze: ...}``)
# and the TrainConfig fields they set.
RECIPE_TRANSFER_KEYS = {
    "weights": "weights",
    "from": "from_model",
    "head_epochs": "head_epochs",
    "unfreeze": "unfreeze",
    "fine_tune_lr": "fine_tune_lr",
    "preprocessing": "preprocessing",
    "recompute_bn": "recompute_bn",
}


def transfer_options(section: dict) -> dict:
    """TrainConfig keyword arguments from a recipe's ``train`` section (the keys it has)."""
    return {field_name: section[key] for key, field_name in RECIPE_TRANSFER_KEYS.items() if key in section}
