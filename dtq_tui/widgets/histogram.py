"""A latency histogram drawn as horizontal bars, with its percentiles marked."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from dtq_core.snapshot import LatencySnapshot
from dtq_tui.fmt import count, duration
from dtq_tui.palette import palette_for
from dtq_tui.plain import plain

_EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(value: float, peak: float, width: int) -> str:
    """A bar of ``value / peak`` of ``width`` cells, in eighths of a cell."""
    if peak <= 0 or width <= 0:
        return ""
    eighths = round(8 * width * min(1.0, value / peak))
    full, rest = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[rest] if rest else "")


class HistogramView(Widget):
    """Bars of one :class:`LatencySnapshot`, one row per bin, percentiles on the right."""

    DEFAULT_CSS = """
    HistogramView {
        height: 1fr;
        padding: 0 1;
    }
    """

    histogram: reactive[LatencySnapshot | None] = reactive(None)
    """The histogram shown (``None``: an empty state)."""

    def render(self) -> Text:
        """Summary line, then a bar per bin."""
        h = self.histogram
        pal = palette_for(self.app.theme_variables)
        if h is None:
            return Text("no histogram selected", style="italic")
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append_text(plain(f"{h.scope} {h.key}", style="bold"))
        text.append(f"  {'queue wait' if h.kind == 'wait' else 'run time'}")
        text.append(f"  last {duration(h.window_s)}  n={count(h.count)}\n", pal.role("muted"))
        marks = [
            ("P50", h.p50, "good"),
            ("P95", h.p95, "warn"),
            ("P99", h.p99, "bad"),
            ("P99.9", h.p999, "bad"),
            ("max", h.max, "bad"),
        ]
        for label, value, role in marks:
            text.append(f"{label} ", "bold")
            text.append(f"{duration(value)}  ", pal.role(role))
        text.append(f"mean {duration(h.mean)}\n")
        bins = [b for b in h.bins if b[2] > 0]
        if not bins:
            text.append("no samples in this window", style="italic")
            return text
        # Trim to the populated range, keep empty bins inside it (gaps are information).
        lo = next(i for i, b in enumerate(h.bins) if b[2] > 0)
        hi = max(i for i, b in enumerate(h.bins) if b[2] > 0)
        shown = list(h.bins[lo : hi + 1])
        room = max(3, self.size.height - 2) if self.size.height else len(shown)
        if len(shown) > room:  # merge neighbours so every bin fits
            step = -(-len(shown) // room)
            shown = [
                (
                    shown[i][0],
                    shown[min(i + step, len(shown)) - 1][1],
                    sum(b[2] for b in shown[i : i + step]),
                )
                for i in range(0, len(shown), step)
            ]
        peak = max(b[2] for b in shown)
        label_w = 17
        count_w = 7
        tags_of = [
            [lbl for lbl, value, _ in marks if low <= value <= high] for low, high, _ in shown
        ]
        # Room for the longest " ◀ P95,P99,max" after the count: labels never wrap nor cut.
        tags_w = max((len(" ◀ " + ",".join(t)) for t in tags_of if t), default=0)
        width = max(4, (self.size.width or 60) - label_w - count_w - 4 - tags_w)
        for (low, high, n), tags in zip(shown, tags_of, strict=True):
            text.append(f"{duration(low):>7}-{duration(high):<8}", pal.role("muted"))
            text.append(" │")
            # Bars past P95 are the tail: warn; past P99: bad.
            role = "bad" if low > h.p99 else "warn" if low > h.p95 else "active"
            text.append(f"{bar(n, peak, width):<{width}}", pal.role(role))
            text.append(f" {count(n):>{count_w}}")
            if tags:
                text.append(" ◀ " + ",".join(tags), "bold")
            text.append("\n")
        text.rstrip()
        return text
