"""Plain-English readings of cron fields, for :meth:`CronExpression.describe`."""

from __future__ import annotations

from itertools import pairwise
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dtq_core.scheduling.cron import CronFields

# Weekdays in reading order (Monday first) so that 'sat,sun' reads "Saturday and Sunday".
_WEEK_ORDER = (1, 2, 3, 4, 5, 6, 0)
#: Weekday names, Sunday = 0 as in cron (not ``calendar.day_name``, which follows the locale).
DAY_NAMES = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
#: Month names, January = 1; index 0 is empty.
MONTH_NAMES = (
    "",
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


def ordinal(n: int) -> str:
    """``1`` -> ``"1st"``, ``2`` -> ``"2nd"``, ``11`` -> ``"11th"``."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def join_words(items: list[str]) -> str:
    """``["a", "b", "c"]`` -> ``"a, b and c"``."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _runs(values: list[int], key: tuple[int, ...]) -> list[tuple[int, int]]:
    """Group ``values`` (ordered as in ``key``) into runs adjacent in ``key``."""
    positions = sorted(key.index(v) for v in values)
    runs: list[tuple[int, int]] = []
    for p in positions:
        if runs and runs[-1][1] == p - 1:
            runs[-1] = (runs[-1][0], p)
        else:
            runs.append((p, p))
    return [(key[a], key[b]) for a, b in runs]


def _listing(values: list[int], key: tuple[int, ...], name: list[str]) -> str:
    """``"1, 5 and 10 through 12"``: runs of three or more become ranges."""
    items: list[str] = []
    for a, b in _runs(values, key):
        span = key.index(b) - key.index(a)
        if span >= 2:
            items.append(f"{name[a]} through {name[b]}")
        else:
            items.extend(name[v] for v in key[key.index(a) : key.index(b) + 1])
    return join_words(items)


def _unit(values: frozenset[int], low: int, high: int, unit: str, *, clock: bool) -> str:
    """Read one numeric field: ``"every 15 minutes"``, ``"every 2nd hour"``, ``"day 1"``.

    ``clock`` units (seconds, minutes) say "every 15 minutes" when the step divides 60.
    """
    ordered = sorted(values)
    if len(ordered) == high - low + 1:
        return f"every {unit}"
    if len(ordered) == 1:
        return f"{unit} {ordered[0]}"
    key = tuple(range(low, high + 1))
    names = [str(v) for v in range(high + 1)]
    gaps = {b - a for a, b in pairwise(ordered)}
    if len(ordered) >= 3 and len(gaps) == 1:
        step = gaps.pop()
        first, last = ordered[0], ordered[-1]
        if step == 1:
            return f"every {unit} from {first} through {last}"
        every = (
            f"every {step} {unit}s" if clock and 60 % step == 0 else f"every {ordinal(step)} {unit}"
        )
        if first == low and last + step > high:
            return every
        return f"{every} from {first} through {last}"
    return f"{unit}s {_listing(ordered, key, names)}"


def _at(phrase: str) -> str:
    return phrase if phrase.startswith("every") else f"at {phrase}"


def _time(f: CronFields) -> str:
    seconds, minutes, hours = sorted(f.second), sorted(f.minute), sorted(f.hour)
    if len(seconds) == 1 and len(minutes) == 1 and len(hours) <= 4:
        s = f":{seconds[0]:02}" if seconds[0] else ""
        return "at " + join_words([f"{h:02}:{minutes[0]:02}{s}" for h in hours])
    if len(seconds) == 1 and len(hours) == 1 and len(minutes) == 2:
        s = f":{seconds[0]:02}" if seconds[0] else ""
        return "at " + join_words([f"{hours[0]:02}:{m:02}{s}" for m in minutes])
    hour = _unit(f.hour, 0, 23, "hour", clock=False)
    minute = _unit(f.minute, 0, 59, "minute", clock=True)
    if len(hours) < 24:
        rest = f"{minute} past {hour}"
    elif len(minutes) == 60 or minute.startswith("every"):
        rest = minute
    else:
        rest = "every hour" if minutes == [0] else f"{minute} past every hour"
    if f.second == {0}:
        return _at(rest)
    second = _unit(f.second, 0, 59, "second", clock=True)
    if len(minutes) == 60 and len(hours) == 24 and second.startswith("every"):
        return second
    return f"{_at(second)} past {rest}"


def _days(f: CronFields) -> str:
    dom = _unit(f.day_of_month, 1, 31, "day", clock=False) + " of the month"
    dow = _listing(sorted(f.day_of_week), _WEEK_ORDER, list(DAY_NAMES))
    any_dom, any_dow = len(f.day_of_month) == 31, len(f.day_of_week) == 7
    if f.dom_restricted and f.dow_restricted:  # the OR rule
        if any_dom or any_dow:
            return ""  # '1-31' or '0-6' in the OR: every day
        return f"on {dom} or on {dow}"
    parts = ([] if any_dom else [f"on {dom}"]) + ([] if any_dow else [f"on {dow}"])
    return " and ".join(parts)


def _months(f: CronFields) -> str:
    if len(f.month) == 12:
        return ""
    ordered = sorted(f.month)
    phrase = _unit(f.month, 1, 12, "month", clock=False)
    if phrase.startswith("every") and "from" not in phrase:
        return f"in {phrase}"
    names = list(MONTH_NAMES)
    return "in " + _listing(ordered, tuple(range(1, 13)), names)


def describe_fields(fields: CronFields) -> str:
    """The schedule given by ``fields`` in plain English.

    Common forms read naturally ("every 15 minutes", "at 09:30 on Monday through Friday",
    "at minute 0 past every 2nd hour", "at 00:00 on day 1 of the month"); the rest get a
    mechanical but exact reading, field by field.
    """
    time = _time(fields)
    f = fields
    if len(f.month) == 1 and len(f.day_of_month) == 1 and len(f.day_of_week) == 7:
        (month,), (day,) = f.month, f.day_of_month
        return f"{time} on {MONTH_NAMES[month]} {day}"
    return " ".join(part for part in (time, _days(f), _months(f)) if part)
