"""What ``edgex tune`` is asked to do: TuneConfig, the budget's parser, and its checks."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from devices.errors import EdgexError, choice_error

NETWORK_LEVERS = ("drop-blocks", "prune", "resolution", "student")
RUNTIMES = ("litert", "onnxruntime", "edgetpu")  # the runtimes a candidate can be made for (edgex.tune.space)
_UNITS = {"s": 1, "m": 60, "h": 3600}


def parse_budget(text: str | float) -> float:
    """Seconds of a budget written as ``90s``, ``20m``, ``2h``, ``1h30m`` or a plain number of seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        spelled = str(text).strip().lower()
        parts = re.findall(r"(\d+(?:\.\d+)?)\s*([smh])", spelled)
        if re.fullmatch(r"\d+(?:\.\d+)?", spelled):
            seconds = float(spelled)
        elif parts and re.fullmatch(r"(?:\s*\d+(?:\.\d+)?\s*[smh])+\s*", spelled):
            seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
        else:
            raise EdgexError(f"cannot read the budget {text!r}; write it as 90s, 20m, 2h or 1h30m")
    if not seconds > 0:
        raise EdgexError(f"the budget must be more than zero, got {text!r}")
    return seconds


@dataclass(frozen=True)
class TuneConfig:
    """A search for the fastest artifact within an accuracy gate."""

    data: str | None = None  # fine-tuning, selection and held-out data (None: the data the model records)
    device: str = "cpu"  # where latency is measured: cpu, gpu[:N], edgetpu[:usb|pci]
    ssh: str | None = None  # USER@HOST[:PORT] of a board: latency measured there by the bundle runner
    ssh_config: str | None = None  # an ssh_config file for --ssh (default: the user's)
    remote_dir: str = "edgex-tune"  # the runner's folder on the board (relative to the login's home)
    remote_python: str = "python3"  # the board's Python (with numpy and a runtime)
    target: str | None = None  # the deploy target of the winner's bundle (rpi4, coral-usb, ...; default with --ssh)
    max_drop: float = 1.0  # points of top-1 a candidate may lose against the model (selection split)
    budget_s: float = 1200.0  # seconds of search; the winner's checks come after
    max_trials: int | None = None  # candidates this worker tries at most within the budget (None: the budget decides)
    levers: tuple[str, ...] = NETWORK_LEVERS  # network changes to try (the deployment knobs are always tried)
    runtimes: tuple[str, ...] = ()  # () = every runtime that runs on the device
    threads: tuple[int, ...] = ()  # () = 1 to the device's cores
    layer_errors: bool = False  # also int8 with the k most sensitive layers kept in float
    max_epochs: int = 12  # the most epochs a changed network trains (students three times as many)
    seed: int = 0
    storage: str | None = None  # an Optuna storage URL shared by several workers (default: SQLite in the run folder)

    def __post_init__(self):
        if not self.max_drop >= 0:
            raise EdgexError(f"--max-drop must be 0 or more points, got {self.max_drop}")
        if not self.budget_s > 0:
            raise EdgexError(f"the budget must be more than zero, got {self.budget_s} s")
        if self.max_trials is not None and self.max_trials < 1:
            raise EdgexError(f"--trials must be 1 or more, got {self.max_trials}")
        for lever in self.levers:
            if lever not in NETWORK_LEVERS:
                raise choice_error("lever", lever, NETWORK_LEVERS)
        for runtime in self.runtimes:
            if runtime not in RUNTIMES:
                raise choice_error("runtime", runtime, RUNTIMES)
        if any(t < 1 for t in self.threads):
            raise EdgexError(f"--threads must be 1 or more, got {', '.join(map(str, self.threads))}")
        if self.max_epochs < 1:
            raise EdgexError(f"--epochs must be 1 or more, got {self.max_epochs}")

    def to_dict(self) -> dict:
        return asdict(self)
