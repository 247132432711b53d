"""Point labels that never overlap: each label goes beside its point where it covers no other label, marker or
line, or further out with a leader line, found by a greedy search in display pixels (as ggrepel or adjustText do,
but with every rule a hard one, so the result can be checked)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ANGLES = (0, 180, 45, -45, 135, -135, 90, -90, 20, -20, 160, -160, 70, -70, 110, -110)  # degrees, preferred first
RINGS = 8  # distances tried around a point, one label height apart, before any free cell of the axes
CLOSE_RINGS = 2  # how far a label may go from its point before the point is numbered instead


def place_labels(ax, anchors, labels, *, marker_radius: float, fontsize: float, others=(), lines=(), numbers=False):
    """Label each anchor (data coordinates) inside the axes where the text covers no other label, no marker (of the
    anchors or of ``others``, unlabelled points) and no ``lines`` (a polyline such as a Pareto front), and reads as
    its own point's. A label set away from its point gets a leader line that crosses no label, no other marker and,
    unless there is no other way, no other leader.

    With ``numbers``, a label that finds no room close to its point gives way to a number (1, 2, ... from left to
    right), which may go further; the caller keys the numbers. ``marker_radius`` in pixels. The axes limits must be
    final. Returns (the texts placed, {index: its number}, the indices without room)."""
    renderer = ax.figure.canvas.get_renderer()
    x0, y0, x1, y1 = ax.get_window_extent(renderer).extents
    scene = _Scene(
        frame=(x0 + 2, y0 + 2, x1 - 2, y1 - 2),
        points=_pixels(ax, anchors),
        others=_pixels(ax, others),
        lines=_pixels(ax, lines),
        radius=marker_radius + 1,
    )
    every = list(range(len(labels)))
    rings, near = (CLOSE_RINGS, True) if numbers else (RINGS, False)
    sizes = [_text_size(ax, label, fontsize, renderer) for label in labels]
    spots = scene.best_layout(every, {i: scene.choices(i, sizes[i], rings, near) for i in every}, _NOTHING, _NOTHING)
    text = {i: labels[i] for i in spots}
    numbered = {}
    if numbers:
        rest = sorted((i for i in every if i not in spots), key=lambda i: tuple(scene.points[i]))
        number = {i: n for n, i in enumerate(rest, 1)}
        placed = np.array([box for box, _ in spots.values()]).reshape(-1, 4)
        drawn = np.array([leader for _, leader in spots.values() if leader]).reshape(-1, 4)
        far = {i: scene.choices(i, _text_size(ax, str(number[i]), fontsize, renderer), RINGS) for i in rest}
        more = scene.best_layout(rest, far, placed, drawn)
        spots |= more
        numbered = {i: number[i] for i in more}
        text |= {i: str(n) for i, n in numbered.items()}
    texts = [_annotate(ax, anchors[i], scene.points[i], text[i], *spots[i], fontsize, scene.radius) for i in spots]
    return texts, numbered, [i for i in every if i not in spots]


_NOTHING = np.empty((0, 4))


def _pixels(ax, points) -> np.ndarray:
    return ax.transData.transform(np.asarray(points, dtype=float).reshape(-1, 2))


def _text_size(ax, label, fontsize, renderer) -> tuple[float, float]:
    text = ax.text(0, 0, label, fontsize=fontsize)
    extent = text.get_window_extent(renderer)
    text.remove()
    return extent.width, extent.height


@dataclass(frozen=True)
class _Scene:
    """What the labels must keep clear of, in display pixels; boxes and segments are rows of (x0, y0, x1, y1)."""

    frame: tuple  # the labels stay inside the axes
    points: np.ndarray  # the labelled points, (n, 2)
    others: np.ndarray  # unlabelled points
    lines: np.ndarray  # a polyline's vertices
    radius: float  # a marker's, with a pixel to spare

    def best_layout(self, indices, choices, placed, drawn) -> dict:
        """The layout that labels the most points with the shortest leaders (crossing ones only if need be), over a
        few orders of placement; a label the others left no room for goes first in the next try."""
        best = None
        for order in _orders(self.points, list(indices)):
            for attempt in range(4):
                spots = self.layout(order, choices, attempt >= 2, placed, drawn)
                homeless = [i for i in order if i not in spots]
                length = sum(math.dist(leader[:2], leader[2:]) for _, leader in spots.values() if leader)
                cost = (len(homeless), attempt >= 2, length)
                if best is None or cost < best[0]:
                    best = (cost, spots)
                if not homeless:
                    break
                order = homeless + [i for i in order if i not in homeless]
        return best[1] if best else {}

    def choices(self, index: int, size, rings: int, near: bool = False):
        """Label ``index``'s boxes of ``size`` that no other label can spoil (inside the frame, clear of every marker
        and line, a leader clear of other markers or none), nearest first, from ``rings`` rings around the point
        (``near``: nowhere else, and nearer its own point than any other), with their leaders (NaN: none) and
        whether each cuts a line."""
        boxes = _candidates(self.points[index], size, self.frame, self.radius, rings, grid=not near)
        leaders = _leaders(self.points[index], boxes, self.radius)
        every = np.vstack([self.points, self.others])
        markers = _pad(np.hstack([every, every]), self.radius)
        own = markers[index]
        close = _overlap(markers, _pad(own[None], own[2] - own[0]))[:, 0]  # a leader cannot avoid these
        segments = np.hstack([self.lines[:-1], self.lines[1:]]) if len(self.lines) > 1 else _NOTHING
        padded = _pad(boxes, 2)
        keep = ~_overlap(padded, markers).any(1) & ~_crosses(segments, padded).any(0)
        keep &= ~_crosses(leaders, markers[~close]).any(1)
        keep &= _by_own_point(boxes, index, every, ~close, ~np.isnan(leaders[:, 0]), nearest=near)
        return boxes[keep], leaders[keep], _cuts(leaders[keep], segments).any(1)

    def layout(self, order, choices, leaders_cross: bool, placed, drawn) -> dict:
        """Greedy placement in ``order`` around what is ``placed`` (boxes) and ``drawn`` (leaders): index -> (box,
        leader or None) for the labels that found room."""
        spots = {}
        for index in order:
            found = _first_free(*choices[index], placed, drawn, leaders_cross)
            if found is not None:
                box, leader = found
                placed = np.vstack([placed, box])
                spots[index] = (tuple(box), None if np.isnan(leader[0]) else tuple(leader))
                drawn = drawn if np.isnan(leader[0]) else np.vstack([drawn, leader])
        return spots


def _first_free(boxes, leaders, cuts_line, placed, drawn, leaders_cross: bool):
    """The first (box, leader) that keeps clear of the labels placed and their leaders, or None. Checked a ring's
    worth at a time: the first few candidates are usually free."""
    for start in range(0, len(boxes), len(ANGLES) * RINGS):
        chunk = slice(start, start + len(ANGLES) * RINGS)
        some, lines = boxes[chunk], leaders[chunk]
        free = ~_overlap(_pad(some, 6, 2), placed).any(1)  # a word's gap between labels side by side
        free &= ~_crosses(lines, placed).any(1) & ~_crosses(drawn, _pad(some, 2)).any(0)
        if not leaders_cross:
            free &= ~cuts_line[chunk] & ~_cuts(lines, drawn).any(1)
        found = np.flatnonzero(free)
        if len(found):
            return some[found[0]], lines[found[0]]
    return None


def _orders(points, indices) -> list[list[int]]:
    """Orders to place labels in: the crowded first (they need the near spots), then left to right, right to left
    and top to bottom."""
    crowd = {i: int((np.hypot(*(points - points[i]).T) < 60).sum()) for i in indices}
    return [
        sorted(indices, key=lambda i: (-crowd[i], *points[i])),
        sorted(indices, key=lambda i: tuple(points[i])),
        sorted(indices, key=lambda i: (-points[i][0], points[i][1])),
        sorted(indices, key=lambda i: (-points[i][1], points[i][0])),
    ]


def _candidates(point, size, frame, radius, rings: int, grid: bool) -> np.ndarray:
    """Boxes for a label inside the frame: beside the point, then in widening rings (slid back inside where they
    stick out), then (``grid``) anywhere, nearest first."""
    width, height = size
    angles = np.radians(np.tile(ANGLES, rings))
    distance = radius + 2 + np.repeat(np.arange(rings), len(ANGLES)) * height
    dx, dy = np.cos(angles), np.sin(angles)
    left = point[0] + distance * dx - np.where(dx > 0.3, 0, np.where(dx < -0.3, width, width / 2))
    bottom = point[1] + distance * dy - np.where(dy > 0.3, 0, np.where(dy < -0.3, height, height / 2))
    # a label that would stick out of the axes slides back in, along the edge
    corners = np.column_stack([np.clip(left, frame[0], frame[2] - width), np.clip(bottom, frame[1], frame[3] - height)])
    if grid:
        columns = np.arange(frame[0], frame[2] - width, width / 2)
        rows = np.arange(frame[1], frame[3] - height, height)
        cells = np.stack(np.meshgrid(columns, rows), axis=-1).reshape(-1, 2)
        cells = cells[np.argsort(np.hypot(cells[:, 0] + width / 2 - point[0], cells[:, 1] + height / 2 - point[1]))]
        corners = np.vstack([corners, cells])
    boxes = np.column_stack([corners, corners + np.array([width, height])])
    inside = (
        (boxes[:, 0] >= frame[0]) & (boxes[:, 1] >= frame[1]) & (boxes[:, 2] <= frame[2]) & (boxes[:, 3] <= frame[3])
    )
    return boxes[inside]


def _leaders(point, boxes, radius) -> np.ndarray:
    """Each box's leader from the point to the box's nearest corner or edge middle; NaN where the box sits right
    next to the marker and needs none."""
    xs = np.column_stack([boxes[:, 0], (boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 2]])
    ys = np.column_stack([boxes[:, 1], (boxes[:, 1] + boxes[:, 3]) / 2, boxes[:, 3]])
    x = xs[np.arange(len(xs)), np.abs(xs - point[0]).argmin(1)]
    y = ys[np.arange(len(ys)), np.abs(ys - point[1]).argmin(1)]
    leaders = np.column_stack([np.full_like(x, point[0]), np.full_like(y, point[1]), x, y])
    leaders[np.hypot(x - point[0], y - point[1]) <= radius + 3] = np.nan
    return leaders


def _by_own_point(boxes, own: int, points, apart, led, nearest: bool) -> np.ndarray:
    """Whether each label box reads as its own point's: without a leader it must be clearly nearer its own point
    than any other; with one (``led``) it must be nearer (``nearest``) or at least keep 5 pixels from other points.
    Points not ``apart`` from its own (markers drawn over each other) are not counted."""
    gap_x = np.maximum(np.maximum(boxes[:, None, 0] - points[None, :, 0], 0), points[None, :, 0] - boxes[:, None, 2])
    gap_y = np.maximum(np.maximum(boxes[:, None, 1] - points[None, :, 1], 0), points[None, :, 1] - boxes[:, None, 3])
    gaps = np.hypot(gap_x, gap_y)
    mine = gaps[:, own]
    needed = np.where(led, mine if nearest else np.minimum(mine, 5), mine + 6)
    return (gaps[:, apart] > needed[:, None]).all(1)


def _pad(boxes, dx: float, dy: float | None = None) -> np.ndarray:
    dy = dx if dy is None else dy
    return boxes + np.array([-dx, -dy, dx, dy])


def _overlap(a, b) -> np.ndarray:
    """(len(a), len(b)): whether box a[i] overlaps box b[j]."""
    return (
        (a[:, None, 0] < b[None, :, 2])
        & (b[None, :, 0] < a[:, None, 2])
        & (a[:, None, 1] < b[None, :, 3])
        & (b[None, :, 1] < a[:, None, 3])
    )


def _crosses(segments, boxes) -> np.ndarray:
    """(len(segments), len(boxes)): whether the segment passes through the box (Liang-Barsky clipping); a NaN
    segment (no leader) crosses nothing."""
    x0, y0 = segments[:, None, 0], segments[:, None, 1]
    dx, dy = segments[:, None, 2] - x0, segments[:, None, 3] - y0
    low = np.zeros((len(segments), len(boxes)))
    high = np.ones_like(low)
    inside = np.ones(low.shape, dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        for p, q in ((-dx, x0 - boxes[None, :, 0]), (dx, boxes[None, :, 2] - x0), (-dy, y0 - boxes[None, :, 1]),
                     (dy, boxes[None, :, 3] - y0)):  # fmt: skip
            p, q = np.broadcast_to(p, low.shape), np.broadcast_to(q, low.shape)
            inside &= (p != 0) | (q >= 0)
            low = np.where(p < 0, np.maximum(low, q / p), low)
            high = np.where(p > 0, np.minimum(high, q / p), high)
    return inside & (low <= high) & ~np.isnan(segments[:, None, 0])


def _cuts(a, b) -> np.ndarray:
    """(len(a), len(b)): whether segment a[i] crosses segment b[j] (touching ends do not count; NaN never cuts)."""

    def side(p, q, r):
        return (q[..., 0] - p[..., 0]) * (r[..., 1] - p[..., 1]) - (q[..., 1] - p[..., 1]) * (r[..., 0] - p[..., 0])

    p, q = a[:, None, :2], a[:, None, 2:]
    r, s = b[None, :, :2], b[None, :, 2:]
    return (side(p, q, r) * side(p, q, s) < 0) & (side(r, s, p) * side(r, s, q) < 0)


def _annotate(ax, anchor, point, label, box, leader, fontsize, radius):
    """The label with its box's lower left corner where the placement put it, in points from its anchor."""
    scale = 72 / ax.figure.dpi
    arrow = None
    if leader:  # from the corner or edge middle that _leaders chose
        relpos = ((leader[2] - box[0]) / (box[2] - box[0]), (leader[3] - box[1]) / (box[3] - box[1]))
        arrow = {"arrowstyle": "-", "color": "0.45", "linewidth": 0.6, "shrinkA": 0, "shrinkB": radius * scale,
                 "relpos": relpos}  # fmt: skip
    offset = ((box[0] - point[0]) * scale, (box[1] - point[1]) * scale)
    return ax.annotate(label, anchor, xytext=offset, textcoords="offset points", ha="left", va="bottom",
                       fontsize=fontsize, arrowprops=arrow)  # fmt: skip
