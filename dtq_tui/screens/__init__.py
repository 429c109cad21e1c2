"""The console's screens: one module per top-level screen, plus drill-down screens."""

from __future__ import annotations

from dtq_tui.screens.base import TABS, DTQScreen

#: Names (and aliases) accepted by the ``:`` jump, mapped to modes.
ALIASES: dict[str, str] = {
    "overview": "overview",
    "home": "overview",
    "queues": "overview",
    "latency": "latency",
    "lat": "latency",
    "histograms": "latency",
    "tasks": "tasks",
    "dead": "dead",
    "dlq": "dead",
    "deadletters": "dead",
    "failures": "dead",
    "workflows": "workflows",
    "flows": "workflows",
    "dag": "workflows",
    "schedules": "schedules",
    "cron": "schedules",
    "limits": "limits",
    "breakers": "limits",
    "rates": "limits",
    "dedup": "limits",
    "workers": "workers",
}


def resolve(name: str) -> str | None:
    """The mode for a typed name: exact alias, else the unique alias it starts."""
    key = name.strip().lower().lstrip(":")
    if not key:
        return None
    if key in ALIASES:
        return ALIASES[key]
    found = {mode for alias, mode in ALIASES.items() if alias.startswith(key)}
    return found.pop() if len(found) == 1 else None


def modes() -> dict[str, type[DTQScreen]]:
    """Mode name -> base screen class."""
    from dtq_tui.screens.dead import DeadLettersScreen
    from dtq_tui.screens.latency import LatencyScreen
    from dtq_tui.screens.limits import LimitsScreen
    from dtq_tui.screens.overview import OverviewScreen
    from dtq_tui.screens.schedules import SchedulesScreen
    from dtq_tui.screens.tasks import TasksScreen
    from dtq_tui.screens.workers import WorkersScreen
    from dtq_tui.screens.workflows import WorkflowsScreen

    return {
        "overview": OverviewScreen,
        "latency": LatencyScreen,
        "tasks": TasksScreen,
        "dead": DeadLettersScreen,
        "workflows": WorkflowsScreen,
        "schedules": SchedulesScreen,
        "limits": LimitsScreen,
        "workers": WorkersScreen,
    }


__all__ = ["ALIASES", "TABS", "DTQScreen", "modes", "resolve"]
