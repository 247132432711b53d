"""The parity check of an export against its source, with a sample count sized to its claim.

Each sample either meets the precision's criterion or not: its outputs within the float tolerance (fp32, fp16), or
the same top-1 class (quantized). The claim is that at least ``MIN_SHARE`` of inputs meet it. Samples are checked in
batches; after each batch one-sided Clopper-Pearson bounds of the share are compared with ``MIN_SHARE``, and the
check stops once they decide it (a float export fails at its first sample out of tolerance). Looking after every
batch would make 95% bounds wrong more often than 5% over the whole sequence, so each look's bounds are widened
(Bonferroni over the looks at which that bound can cross ``MIN_SHARE``): the sequence as a whole keeps 95% in each
direction. A float export's criterion is strict (one sample out of tolerance fails it), so it can pass at one look
only, the one at which every sample meeting it puts the lower bound at ``MIN_SHARE`` (149 samples): its bounds need
no widening. Without an early decision, every planned sample is used and the point estimate gives the verdict, as a
fixed-size check would.

Top-1 agreement is not meaningful when the float model's top-1 margin is below the resolution of the quantized
output (an untrained model's near-uniform softmax against an int8 output in steps of 1/256): the top class of such
samples is a tie for the quantized model. When most samples are like that, the verdict rests on the outputs
themselves (signal-to-noise ratio) and says why; a broken conversion still fails that.

Every check also reports top-1 agreement on near ties (samples whose source top-1 margin is within one step of the
quantized output: rounding each output by up to half a step can swap such a pair, so their disagreement says nothing
about the conversion) apart from agreement on the samples where the source is confident. The verdict's criterion is
unchanged: the split says whether a shortfall comes from ties or from answers the source was sure of.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from devices.metadata import Parity

if TYPE_CHECKING:
    import numpy as np

FP32_TOLERANCE = 1e-4  # max |difference| of the outputs (probabilities)
FP16_TOLERANCE = 1e-2
MIN_TOP1_AGREEMENT = 0.98  # dynamic-range and int8 exports
MIN_SHARE = 0.98  # share of inputs that must meet the criterion (float exports: all observed, and this share)
MIN_SNR_DB = 20.0  # output-level criterion when top-1 agreement is not meaningful
CONFIDENCE = 0.95  # of each one-sided bound
PARITY_BATCH = 32  # samples between two looks at the bounds
DEFAULT_PARITY_SAMPLES = 256  # the most samples a check uses unless asked for more
FLOAT_PRECISIONS = ("fp32", "fp16")  # judged strictly: every sample within the tolerance


def _log_binomial_tail(n: int, k: int, p: float) -> float:
    """log P(X >= k) for X ~ Binomial(n, p)."""
    import numpy as np

    if k <= 0:
        return 0.0
    if p <= 0.0:
        return -math.inf
    if p >= 1.0:
        return 0.0
    i = np.arange(k, n + 1)
    terms = _log_choose(n, k) + i * math.log(p) + (n - i) * math.log1p(-p)
    top = terms.max()
    return float(top + math.log(np.exp(terms - top).sum()))


@functools.lru_cache(maxsize=8)
def _log_choose(n: int, k: int) -> np.ndarray:
    """log C(n, i) for i = k..n. A bound's bisection sums the tail 60 times for the same n and k, and a feature
    map's check (a sweep's one-layer models) has a sample per position: hundreds of thousands at paper scale."""
    import numpy as np

    return np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in range(k, n + 1)])


def _solve(f: Callable[[float], bool]) -> float:
    """The smallest p in [0, 1] with f(p) true, for f false then true (bisection)."""
    low, high = 0.0, 1.0
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (low, mid) if f(mid) else (mid, high)
    return high


def share_bounds(
    successes: int, n: int, confidence: tuple[float, float] = (CONFIDENCE, CONFIDENCE)
) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds of a binomial share: the lower at ``confidence[0]``, the upper at
    ``confidence[1]``."""
    if n == 0:
        return 0.0, 1.0
    low_alpha, high_alpha = (1 - c for c in confidence)
    low = 0.0 if successes == 0 else _solve(lambda p: _log_binomial_tail(n, successes, p) >= math.log(low_alpha))
    # upper: the largest p with P(X <= k | p) >= alpha, i.e. P(X >= k + 1 | p) <= 1 - alpha
    high = (
        1.0 if successes == n else _solve(lambda p: _log_binomial_tail(n, successes + 1, p) > math.log1p(-high_alpha))
    )
    return low, high


def look_sizes(available: int, batch: int = PARITY_BATCH, strict: bool = False) -> list[int]:
    """The sample counts at which a sequential check looks at its bounds. ``strict``: the last look is the one
    where every sample meeting the criterion decides a pass (149 samples), as no later look could be reached."""
    if strict:
        available = min(available, passing_samples())
    return [*range(batch, available, batch), available]


def passing_samples() -> int:
    """The fewest samples that, all meeting the criterion, put the lower bound at ``MIN_SHARE`` (149 at 95%)."""
    return math.ceil(math.log(1 - CONFIDENCE) / math.log(MIN_SHARE))


def look_confidences(available: int, batch: int = PARITY_BATCH, strict: bool = False) -> tuple[float, float]:
    """Per-look confidence of the lower and the upper bound that keeps ``CONFIDENCE`` over the whole sequence of
    looks in each direction. The upper bound can fall below ``MIN_SHARE`` at any look; the lower bound reaches it
    only from about 150 samples on (all agreeing), so looks before that spend none of its error. ``strict`` (every
    sample must meet the criterion): a pass is only possible at the first look where all samples meeting it put the
    lower bound at ``MIN_SHARE``, and a failure is decided by one sample, not by a bound: no widening."""
    if strict:
        return CONFIDENCE, CONFIDENCE
    sizes = look_sizes(available, batch)
    alpha = 1 - CONFIDENCE
    passing = 1  # the fewest looks to split it over such that no other look can cross at the split error
    while sum(n >= math.log(alpha / passing) / math.log(MIN_SHARE) for n in sizes) > passing:
        passing += 1
    return 1 - alpha / passing, 1 - alpha / len(sizes)


def output_step(outputs: np.ndarray) -> float:
    """The grid the exported outputs lie on (a quantized output, dequantized: multiples of its scale), or 0 when
    they are plain floats."""
    import numpy as np

    values = np.unique(np.asarray(outputs, np.float64).ravel())
    if len(values) < 2 or len(values) > 4096:
        return 0.0
    gaps = np.diff(values)
    step = float(gaps.min())
    if step <= 0 or not np.allclose(gaps / step, np.round(gaps / step), atol=1e-3):
        return 0.0
    return step


def top1_margin(outputs: np.ndarray) -> np.ndarray:
    """Per sample (per position of a feature map), the top score minus the second along the last axis."""
    import numpy as np

    top2 = np.sort(np.asarray(outputs, np.float64), axis=-1)[..., -2:]
    return top2[..., 1] - top2[..., 0] if top2.shape[-1] == 2 else np.full(top2.shape[:-1], np.inf)


def near_ties(reference: np.ndarray, step: float) -> np.ndarray:
    """Per sample, whether the source's top-1 margin is within one step of the exported output: rounding both scores
    (by up to half a step each) can swap their order."""
    return top1_margin(reference) <= step


def _split_agreement(agree: np.ndarray, near: np.ndarray) -> dict:
    """The Parity fields of top-1 agreement on near ties and on confident samples."""
    share = lambda mask: float(agree[mask].mean()) if mask.any() else float("nan")  # noqa: E731
    return {"near_ties": int(near.sum()), "near_tie_agreement": share(near), "confident_agreement": share(~near)}


def snr_db(reference: np.ndarray, exported: np.ndarray) -> np.ndarray:
    """Per sample, 10 log10(sum of squared outputs / sum of squared differences)."""
    import numpy as np

    ref = np.asarray(reference, np.float64).reshape(len(reference), -1)
    noise = ((np.asarray(exported, np.float64).reshape(len(ref), -1) - ref) ** 2).sum(axis=1)
    signal = (ref**2).sum(axis=1)
    with np.errstate(divide="ignore"):
        return 10 * np.log10(np.where(noise > 0, signal / np.maximum(noise, 1e-300), np.inf))


def _cosine(reference: np.ndarray, exported: np.ndarray) -> float:
    import numpy as np

    a = np.asarray(reference, np.float64).reshape(len(reference), -1)
    b = np.asarray(exported, np.float64).reshape(len(a), -1)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)))


@dataclass(frozen=True)
class _Criterion:
    text: str
    meets: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (reference, exported) -> per-sample bool
    strict: bool  # every sample must meet it (float tolerances): one miss fails


def _criterion(precision: str, reference: np.ndarray, exported: np.ndarray) -> tuple[_Criterion, bool, float]:
    """(criterion, whether top-1 agreement is meaningful, the output's resolution) for ``precision``, judged on
    the samples so far."""
    import numpy as np

    if precision in FLOAT_PRECISIONS:
        tol = FP32_TOLERANCE if precision == "fp32" else FP16_TOLERANCE
        per_sample = lambda r, e: np.abs(r - e).reshape(len(r), -1).max(axis=1) <= tol  # noqa: E731
        return _Criterion(f"max abs diff <= {tol:g}", per_sample, True), True, 0.0
    step = output_step(exported)
    # A tie at the top of the quantized output (every class in the same step) has no top-1 to agree with.
    low_margin = float(np.mean(near_ties(reference, step) | (top1_margin(exported) <= 0)))
    if low_margin > 0.5:
        why = "the quantized output ties at the top"
        if step:
            why = f"the float model's top-1 margin is below the output's resolution ({step:.3g}), or {why}"
        text = (
            f"output SNR >= {MIN_SNR_DB:g} dB (top-1 agreement is not meaningful: on {low_margin:.0%} of samples {why})"
        )
        return _Criterion(text, lambda r, e: snr_db(r, e) >= MIN_SNR_DB, False), False, step
    agree = lambda r, e: r.argmax(-1) == e.argmax(-1)  # noqa: E731
    return _Criterion(f"top-1 agreement >= {MIN_TOP1_AGREEMENT:.0%}", agree, False), True, step


def check_parity(
    reference: np.ndarray,
    exported: np.ndarray,
    precision: str,
    inputs: str,
    available: int = 0,
    confidence: tuple[float, float] = (CONFIDENCE, CONFIDENCE),
) -> Parity:
    """The verdict on outputs already computed: max |diff| for float exports, top-1 agreement for quantized ones
    (or the output SNR where top-1 is not meaningful), with the bounds (at ``confidence``, lower and upper) of the
    share that meets it."""
    import numpy as np

    reference = np.asarray(reference, np.float64)
    exported = np.asarray(exported, np.float64)
    if reference.ndim > 2:  # a feature map (one-layer models): each position's channel vector is judged
        reference, exported = reference.reshape(-1, reference.shape[-1]), exported.reshape(-1, exported.shape[-1])
    criterion, meaningful, step = _criterion(precision, reference, exported)
    met = criterion.meets(reference, exported)
    n, k = len(met), int(met.sum())
    low, high = share_bounds(k, n, confidence)
    share = k / n if n else 0.0
    if criterion.strict:
        passed, decided = k == n, k < n or low >= MIN_SHARE
    else:
        passed, decided = share >= MIN_SHARE, low >= MIN_SHARE or high < MIN_SHARE
    diff = np.abs(reference - exported)
    snr = snr_db(reference, exported)
    agree = reference.argmax(-1) == exported.argmax(-1)
    return Parity(
        samples=n,
        inputs=inputs,
        max_abs_diff=float(diff.max()),
        mean_abs_diff=float(diff.mean()),
        top1_agreement=float(agree.mean()),
        criterion=criterion.text,
        passed=bool(passed),
        interval=(low, high),
        decided=bool(decided),
        available=max(available, n),
        snr_db=float(10 * np.log10((reference**2).sum() / max((diff**2).sum(), 1e-300))) if n else float("nan"),
        cosine=_cosine(reference, exported),
        top1_meaningful=meaningful,
        resolution=step,
        notes=() if meaningful else (f"median per-sample SNR {float(np.median(snr)):.1f} dB",),
        **_split_agreement(agree, near_ties(reference, step)),
    )


def sequential_parity(
    reference: Callable[[int], np.ndarray],
    exported: Callable[[int], np.ndarray],
    precision: str,
    inputs: str,
    available: int,
    *,
    full: bool = False,
    batch: int = PARITY_BATCH,
) -> Parity:
    """Check in growing batches; stop when the bounds, widened for the number of looks, decide. ``full``: one look
    at every sample. ``reference(n)`` and ``exported(n)`` give the outputs of the first ``n`` samples (each may
    keep what it computed before)."""
    if full:
        return check_parity(reference(available), exported(available), precision, inputs, available)
    strict = precision in FLOAT_PRECISIONS
    confidence = look_confidences(available, batch, strict)
    for n in look_sizes(available, batch, strict):
        parity = check_parity(reference(n), exported(n), precision, inputs, available, confidence)
        if parity.decided:
            break
    return parity
