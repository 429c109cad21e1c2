"""Layered left-to-right layout of a DAG run onto a character grid with box-drawing edges.

A small Sugiyama layout: nodes sit in columns by ``level``; an edge that skips levels
passes through placeholder cells; rows follow the parents' barycentre so chains stay
straight; each child gets its own vertical lane in the gap before its column, so merging
edges join with junctions (``┤``, ``┴``) instead of overlapping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from rich.cells import cell_len

from dtq_core.snapshot import WorkflowNodeSnapshot
from dtq_tui.palette import ROLE_GLYPHS, role_of
from dtq_tui.plain import plain

_U, _D, _L, _R = 1, 2, 4, 8
_GLYPHS = {
    _L | _R: "─",
    _U | _D: "│",
    _D | _R: "┌",
    _D | _L: "┐",
    _U | _R: "└",
    _U | _L: "┘",
    _U | _D | _R: "├",
    _U | _D | _L: "┤",
    _L | _R | _D: "┬",
    _L | _R | _U: "┴",
    _U | _D | _L | _R: "┼",
    _L: "─",
    _R: "─",
    _U: "│",
    _D: "│",
}

#: Widest node label (longer task names are clipped).
MAX_LABEL = 18


@dataclass(slots=True)
class Canvas:
    """The drawn graph: ``chars[y][x]`` and, for label cells, the node id in ``owner``."""

    width: int
    height: int
    chars: list[list[str]] = field(default_factory=list)
    owner: list[list[str | None]] = field(default_factory=list)
    #: Node id -> (x, y, width) of its label.
    boxes: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """The grid as plain text lines."""
        return ["".join(row).rstrip() for row in self.chars]


def label(node: WorkflowNodeSnapshot) -> str:
    """``✔ fetch`` - a node's state glyph and id (control characters escaped)."""
    glyph = ROLE_GLYPHS.get(role_of(node.state), "·")
    text = plain(node.id, MAX_LABEL - 2).plain
    return f"{glyph} {text}"


def label_cells(node: WorkflowNodeSnapshot) -> list[str]:
    """The label one terminal cell per item: a wide character is followed by ``""``.

    The canvas is a grid of cells, so a node id in CJK or with emoji keeps the edges
    after it aligned.
    """
    cells: list[str] = []
    for ch in label(node):
        cells.append(ch)
        cells.extend([""] * (cell_len(ch) - 1))
    return cells


def layout(nodes: Sequence[WorkflowNodeSnapshot], max_height: int = 0) -> Canvas:
    """Lay ``nodes`` out left to right by level.

    Args:
        nodes: The run's nodes (any order; parents refer to node ids).
        max_height: Rows available; the layout packs rows tighter when it would not fit
            (0 means no limit).
    """
    if not nodes:
        return Canvas(0, 0)
    by_id = {n.id: n for n in nodes}
    levels: dict[int, list[str]] = {}
    for n in nodes:
        levels.setdefault(max(0, n.level), []).append(n.id)
    ordered_levels = sorted(levels)
    col_of = {lv: i for i, lv in enumerate(ordered_levels)}
    ncols = len(ordered_levels)
    columns: list[list[str]] = [[] for _ in range(ncols)]
    level_index = {nid: col_of[max(0, by_id[nid].level)] for nid in by_id}

    # Edges between adjacent columns; long edges pass through placeholder nodes "~k".
    parents: dict[str, list[str]] = {nid: [] for nid in by_id}
    dummy = 0
    for n in nodes:
        c = level_index[n.id]
        for p in n.parents:
            if p not in by_id:
                continue
            pc = level_index[p]
            prev = p
            for mid in range(pc + 1, c):
                did = f"~{dummy}"
                dummy += 1
                parents[did] = [prev]
                level_index[did] = mid
                prev = did
            parents[n.id].append(prev)
    for nid, col in level_index.items():
        columns[col].append(nid)

    # Order each column by its parents' rows, assign rows top-down.
    spacing = 2
    rows: dict[str, int] = {}

    def place(spacing: int) -> int:
        rows.clear()
        height = 0
        for col, members in enumerate(columns):
            if col == 0:
                members.sort(key=lambda i: (i.startswith("~"), i))
            else:
                members.sort(
                    key=lambda i: (
                        _bary(parents[i], rows),
                        i.startswith("~"),
                        i,
                    )
                )
            # A row held by a non-parent in the previous column would make this
            # node's incoming line run into that node's outgoing one: step past it.
            before = {rows[i]: i for i in columns[col - 1]} if col else {}
            y = -spacing
            for nid in members:
                want = round(_bary(parents[nid], rows)) if parents[nid] else 0
                y = max(y + spacing, want)
                while y in before and before[y] not in parents[nid]:
                    y += 1
                rows[nid] = y
            height = max(height, y + 1)
        return height

    height = place(spacing)
    if max_height and height > max_height:
        height = place(1)

    # Column x positions: label width, then a gap with one lane per merging child.
    widths = [
        max((len(label_cells(by_id[i])) if i in by_id else 1 for i in members), default=1)
        for members in columns
    ]
    lanes: list[list[str]] = []
    for col in range(1, ncols):
        lane_children = [
            c
            for c in columns[col]
            if parents[c] and not (len(parents[c]) == 1 and rows[parents[c][0]] == rows[c])
        ]
        lanes.append(sorted(lane_children, key=lambda c: rows[c]))
    xs: list[int] = []
    x = 0
    for col in range(ncols):
        xs.append(x)
        gap = 4 + len(lanes[col]) if col < ncols - 1 else 0
        x += widths[col] + gap
    width = x

    canvas = Canvas(width, height)
    bits = [[0] * width for _ in range(height)]
    canvas.chars = [[" "] * width for _ in range(height)]
    canvas.owner = [[None] * width for _ in range(height)]
    arrows: set[tuple[int, int]] = set()
    ends: set[tuple[int, int]] = set()

    def hline(y: int, x0: int, x1: int) -> None:
        lo, hi = min(x0, x1), max(x0, x1)
        ends.update(((lo, y), (hi, y)))
        for xx in range(lo, hi + 1):
            if xx > lo:
                bits[y][xx] |= _L
            if xx < hi:
                bits[y][xx] |= _R

    def vline(x: int, y0: int, y1: int) -> None:
        lo, hi = min(y0, y1), max(y0, y1)
        ends.update(((x, lo), (x, hi)))
        for yy in range(lo, hi + 1):
            if yy > lo:
                bits[yy][x] |= _U
            if yy < hi:
                bits[yy][x] |= _D

    for col in range(1, ncols):
        lane_of = {child: i for i, child in enumerate(lanes[col - 1])}
        xl = xs[col]
        for child in columns[col]:
            yc = rows[child]
            for p in parents[child]:
                yp = rows[p]
                xr = xs[col - 1] + (len(label_cells(by_id[p])) if p in by_id else widths[col - 1])
                if child in lane_of:
                    lx = xs[col - 1] + widths[col - 1] + 1 + lane_of[child]
                    hline(yp, xr, lx)
                    vline(lx, yp, yc)
                    hline(yc, lx, xl - 2)
                else:
                    hline(yp, xr, xl - 2)
            if parents[child] and child in by_id:
                arrows.add((xl - 1, yc))
            if child not in by_id:  # a placeholder carries the line across its column
                hline(yc, xl - 1, xl + widths[col])

    for y in range(height):
        for xx in range(width):
            b = bits[y][xx]
            if b == _U | _D | _L | _R and (xx, y) not in ends:
                canvas.chars[y][xx] = "│"  # two edges crossing, not joining
            elif b:
                canvas.chars[y][xx] = _GLYPHS.get(b, "┼")
    for xx, y in arrows:
        canvas.chars[y][xx] = "▶"
    for col, members in enumerate(columns):
        for nid in members:
            if nid not in by_id:
                continue
            text = label_cells(by_id[nid])
            y = rows[nid]
            for i, ch in enumerate(text):
                canvas.chars[y][xs[col] + i] = ch
                canvas.owner[y][xs[col] + i] = nid
            canvas.boxes[nid] = (xs[col], y, len(text))
    return canvas


def _bary(parent_ids: list[str], rows: dict[str, int]) -> float:
    ys = [rows[p] for p in parent_ids if p in rows]
    return sum(ys) / len(ys) if ys else 0.0
