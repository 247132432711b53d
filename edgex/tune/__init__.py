"""`edgex tune`: the fastest artifact of a model that stays within an accuracy budget, found by measuring on the
target device: deployment knobs (runtime, precision, kept-float layers, threads, runtime options) on the unchanged
network, and network changes (middle blocks dropped, pointwise channels pruned, a lower resolution, a distilled
student), searched with Optuna under the accuracy gate, winners decided by interleaved A/B, the winner re-checked
on a held-out split."""

from edgex.tune.config import NETWORK_LEVERS, TuneConfig, parse_budget
from edgex.tune.results import CandidateRecord, TuneResult, Winner
from edgex.tune.run import tune

__all__ = ["NETWORK_LEVERS", "CandidateRecord", "TuneConfig", "TuneResult", "Winner", "parse_budget", "tune"]
