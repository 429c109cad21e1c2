"""Cron expressions: parse five- or six-field schedules and find fire times across DST.

Times are searched on the wall clock of the expression's zone, field by field (year, month,
day, hour, minute, second), jumping to the next allowed value of each field, so a yearly
expression costs a handful of steps rather than a walk over every minute.

DST policy: the fire times are the instants whose wall-clock reading matches the expression,
with two exceptions. A wall time inside a spring-forward gap does not exist that day and is
skipped (never shifted to a later instant). A wall time that happens twice on a fall-back
night fires once, at its first occurrence (``fold=0``); the repeated hour's second pass never
fires, so ``*/15 * * * *`` does not run eight times in the repeated hour, and ``0 * * * *``
leaves two real hours between its 02:00 and 03:00 runs in Europe/Berlin.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dtq_core.errors import CronError
from dtq_core.scheduling.cron_words import DAY_NAMES, MONTH_NAMES, describe_fields, join_words

#: Years searched by ``next``/``prev`` before giving up; Feb 29 can be 8 years away (2096 ->
#: 2104), and only DST gaps or the end of the calendar can make a valid expression find nothing.
HORIZON_YEARS = 10

#: The ``@`` shorthands and the five-field expressions they stand for.
MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

_MONTHS = {name[:3].lower(): i for i, name in enumerate(MONTH_NAMES) if name}
_WEEKDAYS = {name[:3].lower(): i for i, name in enumerate(DAY_NAMES)}
# The longest each month can be (February in a leap year), for the never-fires check.
_MAX_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# What month, day, hour, minute and second restart from after a carry, by walk direction.
_RESET = {1: (1, 1, 0, 0, 0), -1: (12, 31, 23, 59, 59)}
_SECOND = timedelta(seconds=1)
_TICK = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    low: int
    high: int  # the top of `*` and of `a/step`
    top: int  # the largest literal accepted (7 for Sunday in day-of-week)
    names: dict[str, int] | None = None
    noun: str = ""


_SPECS = (
    _Field("second", 0, 59, 59),
    _Field("minute", 0, 59, 59),
    _Field("hour", 0, 23, 23),
    _Field("day-of-month", 1, 31, 31),
    _Field("month", 1, 12, 12, _MONTHS, "month"),
    _Field("day-of-week", 0, 6, 7, _WEEKDAYS, "weekday"),
)


@dataclass(frozen=True, slots=True)
class CronFields:
    """The values each field allows, with names, steps and ``7``-as-Sunday resolved.

    Attributes:
        second: Seconds 0-59 (``{0}`` for a five-field expression).
        minute: Minutes 0-59.
        hour: Hours 0-23.
        day_of_month: Days 1-31.
        month: Months 1-12.
        day_of_week: Weekdays 0-6, Sunday being 0.
    """

    second: frozenset[int]
    minute: frozenset[int]
    hour: frozenset[int]
    day_of_month: frozenset[int]
    month: frozenset[int]
    day_of_week: frozenset[int]
    #: The day-of-month field was written starting with ``*`` (or ``?``).
    dom_star: bool = True
    #: The day-of-week field was written starting with ``*`` (or ``?``).
    dow_star: bool = True

    @property
    def dom_restricted(self) -> bool:
        """Whether day-of-month restricts, as Vixie cron reads it (not written ``*...``)."""
        return not self.dom_star

    @property
    def dow_restricted(self) -> bool:
        """Whether day-of-week restricts, as Vixie cron reads it (not written ``*...``)."""
        return not self.dow_star

    def day_matches(self, day: int, weekday: int) -> bool:
        """Whether a date passes the day rule (``weekday``: 0 is Sunday).

        When both day fields are restricted a day matches if either does (the Vixie rule);
        otherwise both must. As in Vixie cron and POSIX, a field is restricted unless it
        is written starting with ``*`` (or ``?``): ``0-6`` and ``1-31`` restrict (so
        ``51 * 10 * 0-6`` fires every day), while ``*`` and ``*/2`` do not (so
        ``0 0 */2 * mon`` fires on Mondays that are odd days of the month).
        """
        dom_ok = day in self.day_of_month
        dow_ok = weekday in self.day_of_week
        if self.dom_restricted and self.dow_restricted:
            return dom_ok or dow_ok
        return dom_ok and dow_ok


def _error(spec: _Field, message: str) -> CronError:
    return CronError(f"{spec.name}: {message}")


def _value(token: str, spec: _Field) -> int:
    if token.isascii() and token.isdigit():
        value = int(token)
        if not spec.low <= value <= spec.top:
            raise _error(spec, f"{value} is out of range {spec.low}-{spec.top}")
        return value
    if spec.names is None:
        raise _error(spec, f"{token!r} is not a number")
    named = spec.names.get(token.lower())
    if named is None:
        raise _error(spec, f"{token!r} is not a {spec.noun} name")
    return named


def _parse_item(item: str, text: str, spec: _Field) -> range:
    if not item:
        raise _error(spec, f"empty value in {text!r}")
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not (step_text.isascii() and step_text.isdigit()):
            raise _error(spec, f"step {step_text!r} is not a number")
        step = int(step_text)
        if step == 0:
            raise _error(spec, "step 0 is not allowed")
        if step > spec.high - spec.low:
            raise _error(spec, f"step {step} is out of range 1-{spec.high - spec.low}")
    if base == "*" or (base == "?" and spec.name.startswith("day")):
        low, high = spec.low, spec.high
    elif base == "?":
        raise _error(spec, "'?' is only allowed in day-of-month and day-of-week")
    elif "-" in base:
        first, _, last = base.partition("-")
        if not first or not last or "-" in last:
            raise _error(spec, f"{base!r} is not a valid range")
        low, high = _value(first, spec), _value(last, spec)
        if spec.top == 7 and high == 0 < low:
            high = 7  # 'fri-sun' ends on the Sunday that follows
        if low > high:
            raise _error(spec, f"range {base!r} goes backwards")
    else:
        low = _value(base, spec)
        high = max(spec.high, low) if slash else low
    return range(low, high + 1, step)


def _parse_field(text: str, spec: _Field) -> frozenset[int]:
    values = {v for item in text.split(",") for v in _parse_item(item, text, spec)}
    return frozenset(v % 7 for v in values) if spec.top == 7 else frozenset(values)


def _parse(expr: str) -> CronFields:
    if expr.startswith("@"):
        if expr.lower() not in MACROS:
            raise CronError(f"unknown macro {expr!r}")
        expr = MACROS[expr.lower()]
    parts = expr.split()
    if len(parts) == 5:
        parts.insert(0, "0")
    elif len(parts) != 6:
        raise CronError(f"expected 5 or 6 fields, got {len(parts)}: {expr!r}")
    sec, minute, hour, dom, month, dow = (
        _parse_field(p, s) for p, s in zip(parts, _SPECS, strict=True)
    )
    fields = CronFields(
        sec,
        minute,
        hour,
        dom,
        month,
        dow,
        dom_star=parts[3].startswith(("*", "?")),
        dow_star=parts[5].startswith(("*", "?")),
    )
    if not fields.dow_restricted:
        possible = any(d <= _MAX_DAYS[m] for m in fields.month for d in fields.day_of_month)
        if not possible:
            months = [MONTH_NAMES[m] for m in sorted(fields.month)]
            days = " or ".join(str(d) for d in sorted(fields.day_of_month))
            verb = "has" if len(months) == 1 else "have"
            raise CronError(f"{expr!r} never fires: {join_words(months)} {verb} no day {days}")
    return fields


def _zone(tz: str | tzinfo | None) -> tzinfo:
    if tz is None:
        return UTC
    if isinstance(tz, tzinfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise CronError(f"unknown time zone {tz!r}") from None


def _ceil(values: tuple[int, ...], value: int) -> int | None:
    i = bisect_left(values, value)
    return values[i] if i < len(values) else None


def _floor(values: tuple[int, ...], value: int) -> int | None:
    i = bisect_right(values, value)
    return values[i - 1] if i else None


class CronExpression:
    """A cron schedule: five fields, or six with a leading seconds field, in one time zone.

    Supports ``*``, ``a-b``, steps (``*/15``, ``10-50/5``, ``5/10``), lists, month and
    weekday names (``JAN``, ``mon-fri``), ``7`` as Sunday, ``?`` as ``*`` in the day fields
    and the ``@yearly``/``@annually``/``@monthly``/``@weekly``/``@daily``/``@midnight``/
    ``@hourly`` macros. See the module docstring for the DST policy.

    Args:
        expr: The expression, e.g. ``"*/15 9-17 * * mon-fri"``.
        tz: A zone name, a ``tzinfo`` or ``None`` for UTC. Naive datetimes given to the
            methods are read in this zone and every result is an aware datetime in it.

    Raises:
        CronError: The expression is malformed (the message names the field and token),
            never fires (``0 0 30 2 *``) or the zone is unknown.

    Attributes:
        expr: The expression as given, stripped (``str()`` returns it too).
        tz: The zone of the wall clock; ``datetime.UTC`` when none was given.
        fields: The allowed values per field; equality and hashing use these and the zone,
            so ``"@daily" == "0 0 * * *" == "0 0 0 * * ?"``.
    """

    __slots__ = ("_sorted", "expr", "fields", "tz")

    def __init__(self, expr: str, tz: str | tzinfo | None = None) -> None:
        self.expr = expr.strip()
        self.tz = _zone(tz)
        self.fields = _parse(self.expr)
        f = self.fields
        # Indexed like the wall-time fields (year, month, day, hour, minute, second).
        self._sorted = tuple(
            tuple(sorted(s)) for s in ((), f.month, f.day_of_month, f.hour, f.minute, f.second)
        )

    def __str__(self) -> str:
        return self.expr

    def __repr__(self) -> str:
        return f"CronExpression({self.expr!r}, tz={str(self.tz)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CronExpression):
            return NotImplemented
        return (self.fields, str(self.tz)) == (other.fields, str(other.tz))

    def __hash__(self) -> int:
        return hash((self.fields, str(self.tz)))

    def describe(self) -> str:
        """The schedule in plain English, e.g. ``"at 09:30 on Monday through Friday"``.

        The zone is appended in parentheses unless it is UTC.
        """
        text = describe_fields(self.fields)
        return text if str(self.tz) == "UTC" else f"{text} ({self.tz})"

    def matches(self, dt: datetime) -> bool:
        """Whether ``dt`` (to the second) is a fire time.

        The second pass of a repeated fall-back hour never matches, as it never fires.
        """
        local = self._local(dt)
        if self._second_pass(local):
            return False
        f = self.fields
        return (
            local.second in f.second
            and local.minute in f.minute
            and local.hour in f.hour
            and local.month in f.month
            and f.day_matches(local.day, (local.weekday() + 1) % 7)
        )

    def next(self, after: datetime) -> datetime:
        """The first fire time strictly after ``after``.

        Raises:
            CronError: Nothing fires within :data:`HORIZON_YEARS` years.
        """
        local = self._local(after)
        cursor = local.replace(tzinfo=None)
        if self._second_pass(local):
            cursor = self._irregular(cursor)[1] - _TICK
        limit = min(cursor.year + HORIZON_YEARS, datetime.max.year)
        return self._search(
            after, cursor, lambda c: self._walk(c.replace(microsecond=0) + _SECOND, limit, 1), 1
        )

    def prev(self, before: datetime) -> datetime:
        """The last fire time strictly before ``before``.

        Raises:
            CronError: Nothing fired within :data:`HORIZON_YEARS` years.
        """
        local = self._local(before)
        cursor = local.replace(tzinfo=None)
        if self._second_pass(local):
            cursor = self._irregular(cursor)[1]
        limit = max(cursor.year - HORIZON_YEARS, datetime.min.year)
        return self._search(
            before, cursor, lambda c: self._walk((c - _TICK).replace(microsecond=0), limit, -1), 0
        )

    def next_n(self, after: datetime, n: int) -> list[datetime]:
        """The first ``n`` fire times strictly after ``after``, in order."""
        if n < 0:
            raise ValueError(f"n must not be negative, got {n}")
        times: list[datetime] = []
        for _ in range(n):
            after = self.next(after)
            times.append(after)
        return times

    def _local(self, dt: datetime) -> datetime:
        aware = dt.replace(tzinfo=self.tz) if dt.utcoffset() is None else dt
        return aware.astimezone(self.tz)

    def _second_pass(self, local: datetime) -> bool:
        return local.fold == 1 and local.utcoffset() != local.replace(fold=0).utcoffset()

    def _search(
        self,
        origin: datetime,
        cursor: datetime,
        step: Callable[[datetime], datetime | None],
        edge: int,
    ) -> datetime:
        """Walk wall times from ``cursor``, hopping over DST gaps by their ``edge`` end."""
        try:
            while (wall := step(cursor)) is not None:
                aware = wall.replace(tzinfo=self.tz)
                if aware.astimezone(UTC).astimezone(self.tz).replace(tzinfo=None) == wall:
                    return aware
                start, end = self._irregular(wall)
                cursor = end - _TICK if edge else start
        except OverflowError:
            pass  # the search ran off the end of the calendar: nothing fires there
        way = "after" if edge else "before"
        raise CronError(f"{self.expr!r}: no occurrence within {HORIZON_YEARS} years {way} {origin}")

    def _irregular(self, wall: datetime) -> tuple[datetime, datetime]:
        """The wall-clock span of the DST gap or repeated hour that contains ``wall``."""
        a = wall.replace(tzinfo=self.tz, fold=0).astimezone(UTC)
        b = wall.replace(tzinfo=self.tz, fold=1).astimezone(UTC)
        low, high = min(a, b), max(a, b)
        before = low.astimezone(self.tz).utcoffset()
        while high - low > _SECOND:  # offsets change on whole seconds
            mid = low + timedelta(seconds=(high - low).total_seconds() // 2)
            if mid.astimezone(self.tz).utcoffset() == before:
                low = mid
            else:
                high = mid
        after = high.astimezone(self.tz).utcoffset()
        assert before is not None and after is not None
        at = high.replace(tzinfo=None)
        return at + min(before, after), at + max(before, after)

    def _walk(self, start: datetime, limit: int, step: int) -> datetime | None:
        """The nearest matching wall time from ``start`` on (``step`` 1) or back (-1).

        Fields are settled from month down to second; a field with no allowed value left
        carries into the one above and resets those below to their first (or last) value.
        """
        pick = _ceil if step > 0 else _floor
        reset = _RESET[step]
        v = [start.year, start.month, start.day, start.hour, start.minute, start.second]
        while (v[0] - limit) * step <= 0:
            for i in range(1, 6):
                day = i == 2  # days depend on the month and weekday, not on a fixed list
                found = self._day(v[0], v[1], v[2], step) if day else pick(self._sorted[i], v[i])
                if found is None:
                    v[i - 1] += step
                    v[i:] = reset[i - 1 :]
                    break
                if found != v[i]:
                    v[i] = found
                    v[i + 1 :] = reset[i:]
            else:
                return datetime(v[0], v[1], v[2], v[3], v[4], v[5])
        return None

    def _day(self, year: int, month: int, day: int, step: int) -> int | None:
        """The nearest allowed day from ``day`` on (``step`` 1) or back (-1), if any."""
        first_weekday, length = calendar.monthrange(year, month)
        day = min(day, length) if step < 0 else day
        if not 1 <= day <= length:
            return None
        f = self.fields
        if not (f.dom_restricted and f.dow_restricted):
            # Both must match (one or both written '*...'): at most a month of days.
            for d in range(day, (length + 1) if step > 0 else 0, step):
                if d in f.day_of_month and (first_weekday + d) % 7 in f.day_of_week:
                    return d
            return None
        by_date = (_ceil if step > 0 else _floor)(self._sorted[2], day)
        by_date = by_date if by_date is not None and by_date <= length else None
        by_weekday = None
        for d in range(day, day + 7 * step, step):
            # calendar counts weekdays from Monday = 0; cron from Sunday = 0.
            if not 1 <= d <= length:
                break
            if (first_weekday + d) % 7 in f.day_of_week:
                by_weekday = d
                break
        if by_date is None or by_weekday is None:
            return by_weekday if by_date is None else by_date
        return min(by_date, by_weekday) if step > 0 else max(by_date, by_weekday)
