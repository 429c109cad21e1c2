"""The console's data modules: formatting, redaction, the graph layout, parsing, aliases."""

from __future__ import annotations

import pytest

from dtq_core.snapshot import WorkflowNodeSnapshot
from dtq_tui.alerts import alerts
from dtq_tui.dialogs.edit_args import parse_args_json
from dtq_tui.fmt import age, ago, count, duration, rate, short_id
from dtq_tui.graph import layout
from dtq_tui.keys import documented_keys
from dtq_tui.palette import ROLE_GLYPHS, STATE_ROLES, Palette, role_of
from dtq_tui.redact import REDACTED, redact, restore
from dtq_tui.screens import resolve
from dtq_tui.screens.dead import DeadGroupScreen
from dtq_tui.screens.limits import parse_rate
from dtq_tui.screens.tasks import check_filter
from dtq_tui.widgets.histogram import bar
from tests.tui.fake import NOW, snapshot


def test_durations_fit_narrow_cells() -> None:
    assert duration(None) == "-"
    assert duration(0.0004) == "400µs"
    assert duration(0.012) == "12ms"
    assert duration(1.25) == "1.25s"
    assert duration(184) == "3m04s"
    assert duration(7500) == "2h05m"
    assert duration(3 * 86400 + 4 * 3600) == "3d04h"
    assert age(0.3) == "now"
    assert ago(NOW - 5, NOW) == "5.00s ago"
    assert ago(NOW + 12, NOW) == "in 12.0s"
    assert count(999) == "999"
    assert count(12_345) == "12.3k"
    assert count(1_200_000) == "1.2M"
    assert rate(0) == "0"
    assert rate(0.44) == "0.4"
    assert rate(1500) == "1.5k"
    assert short_id("0123456789abcdef", 8) == "…9abcdef"


def test_redaction_masks_secrets_at_any_depth_and_restores_untouched_ones() -> None:
    original = {"user": "ann", "password": "hunter2", "nested": [{"api_key": "k1", "n": 1}]}
    shown = redact(original)
    assert shown == {"user": "ann", "password": REDACTED, "nested": [{"api_key": REDACTED, "n": 1}]}
    assert "hunter2" not in repr(shown)
    edited = {**shown, "user": "bob"}
    assert restore(edited, original) == {**original, "user": "bob"}
    edited["password"] = "new-secret"
    assert restore(edited, original)["password"] == "new-secret"


def test_args_json_is_validated_with_a_useful_message() -> None:
    assert parse_args_json('{"args": [1, 2], "kwargs": {"x": 1}}') == ([1, 2], {"x": 1})
    assert parse_args_json('{"args": []}') == ([], {})
    with pytest.raises(ValueError, match="line 1"):
        parse_args_json('{"args": [1,}')
    with pytest.raises(ValueError, match="JSON array"):
        parse_args_json('{"args": {"a": 1}}')
    with pytest.raises(ValueError, match="unknown key 'argz'"):
        parse_args_json('{"argz": []}')


def test_rate_prompt_parsing() -> None:
    assert parse_rate("5") == (5.0, None)
    assert parse_rate("300/m 10") == (5.0, 10)
    for bad in ("", "fast", "5/d", "0", "5 x"):
        with pytest.raises(ValueError):
            parse_rate(bad)


def test_screen_names_and_aliases() -> None:
    assert resolve("dlq") == "dead"
    assert resolve(":workers") == "workers"
    assert resolve("sch") == "schedules"
    assert resolve("cron") == "schedules"
    assert resolve("w") is None  # workers or workflows: ambiguous
    assert resolve("nope") is None


def test_filters_are_checked_by_the_engine_language() -> None:
    assert check_filter("state:dead queue:email") is None
    assert "unknown filter key" in (check_filter("colour:red") or "")
    assert "unknown state" in (check_filter("state:zombie") or "")


def test_state_colours_come_from_one_mapping() -> None:
    assert role_of("DEAD") == role_of("FAILED") == role_of("open") == "bad"
    assert role_of("SUCCESS") == role_of("closed") == role_of("ok") == "good"
    assert role_of("something new") == "muted"
    assert set(STATE_ROLES.values()) <= set(ROLE_GLYPHS)
    dark = Palette({"text-success": "#8AD4A1", "foreground": "#E0E0E0", "background": "#121212"})
    light = Palette({"text-success": "#337E4A", "foreground": "#1F1F1F", "background": "#E0E0E0"})
    assert dark.state("SUCCESS") != light.state("SUCCESS")


def test_histogram_bars_use_eighths() -> None:
    assert bar(0, 10, 8) == ""
    assert bar(10, 10, 8) == "█" * 8
    assert bar(5, 10, 3) == "█▌"  # 1.5 cells


def node(
    nid: str, level: int, parents: tuple[str, ...], state: str = "success"
) -> WorkflowNodeSnapshot:
    return WorkflowNodeSnapshot(nid, nid, state, level, parents, None, None, None, None)


def test_dag_layout_draws_levels_left_to_right_with_joined_edges() -> None:
    nodes = [
        node("a", 0, ()),
        node("b", 1, ("a",)),
        node("c", 1, ("a",), "failed"),
        node("d", 2, ("b", "c"), "upstream_failed"),
    ]
    canvas = layout(nodes)
    text = "\n".join(canvas.lines())
    assert text.splitlines()[0].startswith("✔ a")
    xs = {nid: box[0] for nid, box in canvas.boxes.items()}
    assert xs["a"] < xs["b"] == xs["c"] < xs["d"]
    assert "▶✘ c" in text and "▶▲ d" in text
    assert any(ch in text for ch in "┤┴┘")  # the two parents of d merge
    # A long edge passes through the column it skips.
    skip = layout([node("a", 0, ()), node("b", 1, ("a",)), node("c", 2, ("a", "b"))])
    assert "\n".join(skip.lines()).count("▶") == 2


def test_dag_layout_packs_rows_to_fit() -> None:
    nodes = [node("root", 0, ())] + [node(f"n{i}", 1, ("root",)) for i in range(6)]
    assert layout(nodes).height == 11
    assert layout(nodes, max_height=8).height == 6


def test_alerts_add_what_the_snapshot_shows_to_the_engines_own() -> None:
    found = [text for _, text in alerts(snapshot())]
    assert found[0] == "WAL recovered 12 tasks at start"
    assert any("breaker payments open" in t for t in found)
    assert any("queue payments paused" in t for t in found)
    assert any("worker host:202:p0 silent" in t for t in found)


def test_help_keys_come_from_the_screen_docstring() -> None:
    keys = dict(documented_keys(DeadGroupScreen))
    assert set(keys) >= {"space", "r", "R", "e", "d", "enter"}
