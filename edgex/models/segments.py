"""The paper's spectrum between a regular and a depthwise separable convolution, indexed by segments.

A separable block with G segments is a k x k convolution with G channel groups (C_in -> C_in) followed by a 1x1
convolution (C_in -> C_out). G is absolute ("4") or relative to each layer's input channels ("C/4", "C").
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from devices.errors import EdgexError

SPECTRUM = ("1", "2", "4", "8", "C/8", "C/4", "C/2", "C")  # valid for every preset (channels are multiples of 8)


def parse_segments(value) -> str:
    """The canonical spelling of a segments value: "4", "C/4" or "C" (an int is absolute)."""
    text = str(value).strip().replace(" ", "")
    upper = text.upper()
    if upper == "C" or upper == "C/1":
        return "C"
    if upper.startswith("C/") and upper[2:].isdigit() and int(upper[2:]) >= 1:
        return f"C/{int(upper[2:])}"
    if text.isdigit() and int(text) >= 1:
        return str(int(text))
    raise EdgexError(f"segments must be a positive integer G, C/N or C, got {value!r}; e.g. {', '.join(SPECTRUM)}")


def groups_for(segments: str, channels: int) -> int:
    """The number of groups G that ``segments`` means for a layer with ``channels`` input channels."""
    segments = parse_segments(segments)
    if segments == "C":
        return channels
    if segments.startswith("C/"):
        divisor = int(segments[2:])
        if channels % divisor:
            raise EdgexError(f"segments {segments} needs input channels divisible by {divisor}, got {channels}")
        return channels // divisor
    groups = int(segments)
    if channels % groups:
        raise EdgexError(f"segments {groups} does not divide a layer's {channels} input channels")
    return groups


def allowed_segments(channels: Iterable[int]) -> list[str]:
    """Every segments value valid for all of ``channels``: the divisors G of their gcd, then C/G."""
    common = 0
    for c in channels:
        common = math.gcd(common, int(c))
    divisors = [d for d in range(1, common + 1) if common % d == 0]
    return [str(d) for d in divisors] + [f"C/{d}" for d in reversed(divisors) if d > 1] + ["C"]


def check_segments(segments: str, channels: Iterable[int], what: str = "this configuration") -> None:
    """One-line error unless ``segments`` is valid for every layer's input channels."""
    channels = sorted(set(int(c) for c in channels))
    allowed = allowed_segments(channels)
    if parse_segments(segments) not in allowed:
        raise EdgexError(
            f"segments {segments} does not divide the input channels of every separable convolution of {what} "
            f"({', '.join(map(str, channels))}); allowed: {', '.join(allowed)}"
        )


def segments_value(segments: str, channels: int = 0) -> float:
    """A number to plot a segments value on: G itself, or G for ``channels`` input channels (C/N -> C/N)."""
    segments = parse_segments(segments)
    return float(groups_for(segments, channels)) if segments.startswith("C") else float(segments)


__all__ = ["SPECTRUM", "allowed_segments", "check_segments", "groups_for", "parse_segments", "segments_value"]
