"""Limits: rate limiters, circuit breakers and the dedup filter."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Static

from dtq_core.snapshot import BreakerSnapshot, DedupSnapshot, LimiterSnapshot, SystemSnapshot
from dtq_tui.dialogs.confirm import ConfirmDialog
from dtq_tui.dialogs.prompt import PromptDialog
from dtq_tui.fmt import ago, count, duration
from dtq_tui.palette import palette_for
from dtq_tui.plain import plain
from dtq_tui.screens.base import DTQScreen, matches
from dtq_tui.widgets.live_table import FLEX, TablePane
from dtq_tui.widgets.memo import update_static


def parse_rate(text: str) -> tuple[float, int | None]:
    """``"5"``, ``"5/s"``, ``"300/m"``, ``"5 10"`` (rate and burst) -> ``(per second, burst)``.

    Raises:
        ValueError: Saying what to write.
    """
    parts = text.replace(",", " ").split()
    if not parts or len(parts) > 2:
        raise ValueError("write a rate like 5, 5/s or 300/m, optionally followed by a burst")
    num, _, unit = parts[0].partition("/")
    per = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit.lower())
    if per is None:
        raise ValueError(f"unknown unit {unit!r}: use /s, /m or /h")
    try:
        rate = float(num) / per
    except ValueError:
        raise ValueError(f"{num!r} is not a number") from None
    if rate <= 0:
        raise ValueError("the rate must be above 0")
    burst = None
    if len(parts) == 2:
        if not parts[1].isdigit() or int(parts[1]) < 1:
            raise ValueError("the burst must be a whole number >= 1")
        burst = int(parts[1])
    return rate, burst


class LimitsScreen(DTQScreen):
    """Rate limits (tokens, rate, throttled), breakers (state, failures, next probe), dedup.

    | Key | Action |
    | :- | :- |
    | `e` | Change the selected rate limit. |
    | `o` | Open the selected breaker by hand. |
    | `c` | Close the selected breaker by hand. |
    | `tab` | Move between the tables. |
    """

    BINDINGS = [
        Binding("e", "edit_rate", "Edit rate", id="limits.edit"),
        Binding("o", "breaker('open')", "Open breaker", id="limits.open"),
        Binding("c", "breaker('closed')", "Close breaker", id="limits.close"),
    ]

    MODE = "limits"
    TITLE = "Limits"
    FILTER_HINT = "limit, breaker key"
    MUTATING = frozenset({"edit_rate", "breaker"})

    def compose_body(self) -> ComposeResult:
        """Limiter table, breaker table, dedup panel."""
        yield TablePane(
            [
                ("Rate limit", "key", FLEX),
                ("Scope", "scope", 5),
                ("Rate/s", "rate", 8),
                ("Burst", "burst", 5),
                ("Tokens", "tokens", 7),
                ("Throttled", "throttled", 9),
            ],
            empty_text="no rate limits: no task or queue declares rate_limit",
            id="limiters",
        )
        yield TablePane(
            [
                ("Breaker", "key", FLEX),
                ("State", "state", 11),
                ("By", "by", 4),
                ("Failures", "failures", 8),
                ("Held", "held", 6),
                ("Next probe", "probe", 10),
                ("Reset", "reset", 6),
            ],
            empty_text="no circuit breakers: no task declares breaker=...",
            id="breakers",
        )
        yield Static(id="dedup", classes="panel")

    def on_mount(self) -> None:
        """Titles."""
        self.query_one("#limiters").border_title = "rate limits"
        self.query_one("#breakers").border_title = "circuit breakers"
        self.query_one("#dedup").border_title = "dedup filter"

    @property
    def limiters(self) -> TablePane:
        """The rate-limit table."""
        return self.query_one("#limiters", TablePane)

    @property
    def breakers(self) -> TablePane:
        """The breaker table."""
        return self.query_one("#breakers", TablePane)

    def render_snapshot(self, snap: SystemSnapshot) -> None:
        """The three panes."""
        pal = palette_for(self.app.theme_variables)
        now = snap.taken_at
        lrows: list[tuple[str, list[Any]]] = []
        for lim in snap.limits:
            if not matches(self.filter_text, lim.key, lim.scope):
                continue
            tokens = Text(f"{lim.tokens:.1f}", justify="right")
            if lim.tokens < 1:
                tokens.stylize(pal.role("warn"))
            lrows.append(
                (
                    f"{lim.scope}:{lim.key}",
                    [
                        plain(lim.key),
                        plain(lim.scope),
                        Text(f"{lim.rate:g}", justify="right"),
                        Text(str(lim.burst), justify="right"),
                        tokens,
                        Text(
                            count(lim.throttled),
                            justify="right",
                            style=pal.role("warn") if lim.throttled else "",
                        ),
                    ],
                )
            )
        self.limiters.sync(lrows, "no rate limits match the filter" if snap.limits else None)
        brows: list[tuple[str, list[Any]]] = []
        for b in snap.breakers:
            if not matches(self.filter_text, b.key, b.state):
                continue
            state = pal.state_text(b.state, label=b.state.replace("_", "-"))
            brows.append(
                (
                    b.key,
                    [
                        plain(b.key),
                        state,
                        "hand" if b.manual else "auto",
                        Text(f"{b.failures}/{b.threshold}", justify="right"),
                        Text(count(b.held), justify="right"),
                        ago(b.next_probe_at, now) if b.next_probe_at else "-",
                        duration(b.reset_timeout),
                    ],
                )
            )
        self.breakers.sync(brows, "no breakers match the filter" if snap.breakers else None)
        update_static(self.query_one("#dedup", Static), _dedup_text(snap.dedup, pal), layout=True)

    def status_text(self) -> str:
        """Counts."""
        snap = self.snapshot
        if snap is None:
            return ""
        opened = sum(1 for b in snap.breakers if b.state != "closed")
        return f"{len(snap.limits)} limits · {len(snap.breakers)} breakers, {opened} not closed"

    def _limiter(self) -> LimiterSnapshot | None:
        key = self.limiters.table.current_key
        if key is None or self.snapshot is None:
            return None
        return next((x for x in self.snapshot.limits if f"{x.scope}:{x.key}" == key), None)

    def _breaker(self) -> BreakerSnapshot | None:
        key = self.breakers.table.current_key
        if key is None or self.snapshot is None:
            return None
        return next((b for b in self.snapshot.breakers if b.key == key), None)

    def action_edit_rate(self) -> None:
        """Ask for a new rate for the selected limiter and set it."""
        lim = self._limiter()
        if lim is None:
            self.notify("select a rate limit first", severity="warning")
            return
        if self.dtq.read_only:
            self.feed.set_rate_limit(lim.scope, lim.key, lim.rate, lim.burst, lambda _: None)
            return

        def check(text: str) -> str | None:
            try:
                parse_rate(text)
            except ValueError as exc:
                return str(exc)
            return None

        def answered(text: str | None) -> None:
            if text is None:
                return
            rate, burst = parse_rate(text)
            self.feed.set_rate_limit(
                lim.scope,
                lim.key,
                rate,
                burst,
                lambda _: self.notify(f"{lim.scope} {lim.key}: {rate:g}/s", markup=False),
            )

        self.app.push_screen(
            PromptDialog(
                f"New rate for {lim.scope} {lim.key} (now {lim.rate:g}/s, burst {lim.burst})",
                f"{lim.rate:g}/s {lim.burst}",
                validate=check,
                help_text="RATE[/s|/m|/h] [BURST] - e.g. 5/s 10",
            ),
            answered,
        )

    def action_breaker(self, state: str) -> None:
        """Force the selected breaker open or closed."""
        b = self._breaker()
        if b is None:
            self.notify("select a breaker first", severity="warning")
            return
        effect = (
            "tasks behind it are held (not run, not failed) until it is closed"
            if state == "open"
            else "tasks behind it run again at once, even if the service still fails"
        )

        def answered(yes: bool | str | None) -> None:
            if yes is True:
                self.feed.set_breaker(
                    b.key,
                    state,
                    lambda _: self.notify(f"breaker {b.key} forced {state}", markup=False),
                )

        self.app.push_screen(
            ConfirmDialog(
                f"Force breaker {b.key} {state}?",
                f"would force breaker {b.key} {state} (now {b.state.replace('_', '-')}, "
                f"{b.failures}/{b.threshold} failures, {b.held} held): {effect}.",
                yes=f"Force {state}",
                danger=state == "closed",
            ),
            answered,
        )


def _dedup_text(d: DedupSnapshot | None, pal: Any) -> Text:
    if d is None:
        return Text("no dedup filter: no task is enqueued with dedup_key", style="italic")
    width = 30
    filled = round(width * min(1.0, max(0.0, d.fill_ratio)))
    role = "good" if d.fill_ratio < 0.5 else "warn" if d.fill_ratio < 0.8 else "bad"
    text = Text()
    text.append("fill ")
    text.append("█" * filled, pal.role(role))
    text.append("░" * (width - filled), pal.role("muted"))
    text.append(f" {d.fill_ratio:.0%}  ")
    text.append(f"keys {count(d.keys)}/{count(d.capacity)}  est. false positives ")
    text.append(f"{d.est_fp_rate:.2%}", pal.role(role))
    text.append(f"  dropped {count(d.dropped)}  window {duration(d.ttl_s)}")
    return text
