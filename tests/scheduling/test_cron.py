"""Cron expressions: syntax, errors, next/prev on fixed dates, DST, descriptions, properties."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from datetime import time as dtime
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from dtq_core.errors import CronError
from dtq_core.scheduling.cron import HORIZON_YEARS, CronExpression

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
SYDNEY = ZoneInfo("Australia/Sydney")
LORD_HOWE = ZoneInfo("Australia/Lord_Howe")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def as_utc(times: list[datetime]) -> list[datetime]:
    return [t.astimezone(UTC) for t in times]


@pytest.mark.parametrize(
    ("minute", "expected"),
    [
        ("*", set(range(60))),
        ("*/15", {0, 15, 30, 45}),
        ("10-50/5", set(range(10, 51, 5))),
        ("5/10", {5, 15, 25, 35, 45, 55}),
        ("1,5,10-12", {1, 5, 10, 11, 12}),
        ("0-59", set(range(60))),
        ("7", {7}),
        ("59", {59}),
        ("05", {5}),
        ("0-10/3,58", {0, 3, 6, 9, 58}),
    ],
)
def test_minute_forms(minute: str, expected: set[int]) -> None:
    assert CronExpression(f"{minute} * * * *").fields.minute == expected


@pytest.mark.parametrize(
    ("month", "expected"),
    [
        ("JAN", {1}),
        ("jan", {1}),
        ("Dec", {12}),
        ("jan,mar-May", {1, 3, 4, 5}),
        ("jan-dec/3", {1, 4, 7, 10}),
        ("*/6", {1, 7}),
        ("2-3,oct", {2, 3, 10}),
    ],
)
def test_month_forms(month: str, expected: set[int]) -> None:
    assert CronExpression(f"0 0 1 {month} *").fields.month == expected


@pytest.mark.parametrize(
    ("dow", "expected"),
    [
        ("mon-fri", {1, 2, 3, 4, 5}),
        ("MON-FRI", {1, 2, 3, 4, 5}),
        ("SUN", {0}),
        ("7", {0}),
        ("0,7", {0}),
        ("5-7", {5, 6, 0}),
        ("fri-sun", {5, 6, 0}),
        ("sat,sun", {6, 0}),
        ("*/2", {0, 2, 4, 6}),
        ("1/2", {1, 3, 5}),
        ("1-7/2", {1, 3, 5, 0}),
        ("?", set(range(7))),
    ],
)
def test_weekday_forms(dow: str, expected: set[int]) -> None:
    assert CronExpression(f"0 0 * * {dow}").fields.day_of_week == expected


def test_question_mark_is_star_in_day_of_month() -> None:
    assert CronExpression("0 0 ? * mon") == CronExpression("0 0 * * mon")
    assert CronExpression("0 0 ? * ?").fields.day_of_month == set(range(1, 32))


def test_five_fields_fire_on_second_zero_and_six_fields_add_seconds() -> None:
    five = CronExpression("*/5 * * * *").fields
    six = CronExpression("*/20 */5 * * * *").fields
    assert five.second == {0}
    assert six.second == {0, 20, 40}
    assert six.minute == five.minute


def test_all_fields_are_parsed_in_order() -> None:
    f = CronExpression("1 2 3 4 5 6").fields
    assert (f.second, f.minute, f.hour, f.day_of_month, f.month, f.day_of_week) == (
        {1},
        {2},
        {3},
        {4},
        {5},
        {6},
    )


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_macros(macro: str, equivalent: str) -> None:
    assert CronExpression(macro) == CronExpression(equivalent)
    assert CronExpression(macro).expr == macro


def test_whitespace_is_tolerated() -> None:
    assert CronExpression("  */5   *\t* * *  ") == CronExpression("*/5 * * * *")
    assert CronExpression("  */5   *\t* * *  ").expr == "*/5   *\t* * *"


def test_equality_and_hash_use_normalized_fields_and_zone() -> None:
    a, b, c = CronExpression("@daily"), CronExpression("0 0 * * *"), CronExpression("0 0 0 * * ?")
    assert a == b == c
    assert len({a, b, c}) == 1
    assert CronExpression("0 0 * * 7") == CronExpression("0 0 * * sun")
    assert CronExpression("*/30 * * * *") == CronExpression("0,30 * * * *")
    assert CronExpression("0 0 * * *") != CronExpression("0 0 * * *", tz="Europe/Berlin")
    assert CronExpression("0 0 * * *", "Europe/Berlin") == CronExpression("0 0 * * *", BERLIN)
    assert CronExpression("0 0 * * *") != CronExpression("0 1 * * *")
    assert CronExpression("* * * * *") != "* * * * *"


def test_str_repr_and_expr() -> None:
    cron = CronExpression(" 0 9 * * mon ", tz="Europe/Berlin")
    assert str(cron) == cron.expr == "0 9 * * mon"
    assert repr(cron) == "CronExpression('0 9 * * mon', tz='Europe/Berlin')"
    assert cron.tz is BERLIN
    assert CronExpression("@hourly").tz is UTC


def test_fields_are_frozensets() -> None:
    f = CronExpression("0 9 * * mon").fields
    assert isinstance(f.hour, frozenset)
    assert isinstance(f.day_of_week, frozenset)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("* * *", "expected 5 or 6 fields, got 3: '* * *'"),
        ("* * * * * * *", "expected 5 or 6 fields, got 7: '* * * * * * *'"),
        ("", "expected 5 or 6 fields, got 0: ''"),
        ("@sometimes", "unknown macro '@sometimes'"),
        ("@daily 5", "unknown macro '@daily 5'"),
        ("0 0 * * mun", "day-of-week: 'mun' is not a weekday name"),
        ("0 0 * * mon-fry", "day-of-week: 'fry' is not a weekday name"),
        ("0 0 1 jam *", "month: 'jam' is not a month name"),
        ("75 * * * *", "minute: 75 is out of range 0-59"),
        ("0 24 * * *", "hour: 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month: 0 is out of range 1-31"),
        ("0 0 32 * *", "day-of-month: 32 is out of range 1-31"),
        ("0 0 * 13 *", "month: 13 is out of range 1-12"),
        ("0 0 * * 8", "day-of-week: 8 is out of range 0-7"),
        ("60 * * * * *", "second: 60 is out of range 0-59"),
        ("0 1-99 * * *", "hour: 99 is out of range 0-23"),
        ("0 */0 * * *", "hour: step 0 is not allowed"),
        ("*/x * * * *", "minute: step 'x' is not a number"),
        ("*/ * * * *", "minute: step '' is not a number"),
        ("*/5/2 * * * *", "minute: step '5/2' is not a number"),
        ("*/60 * * * *", "minute: step 60 is out of range 1-59"),
        ("abc * * * *", "minute: 'abc' is not a number"),
        ("jan * * * *", "minute: 'jan' is not a number"),
        ("\u00b2 * * * *", "minute: '\u00b2' is not a number"),
        ("L * * * *", "minute: 'L' is not a number"),
        ("0 0 L * *", "day-of-month: 'L' is not a number"),
        ("1,,2 * * * *", "minute: empty value in '1,,2'"),
        ("1, * * * *", "minute: empty value in '1,'"),
        ("? * * * *", "minute: '?' is only allowed in day-of-month and day-of-week"),
        ("0 0 * ? *", "month: '?' is only allowed in day-of-month and day-of-week"),
        ("0 20-5 * * *", "hour: range '20-5' goes backwards"),
        ("0 0 * dec-jan *", "month: range 'dec-jan' goes backwards"),
        ("1-2-3 * * * *", "minute: '1-2-3' is not a valid range"),
        ("-5 * * * *", "minute: '-5' is not a valid range"),
        ("5- * * * *", "minute: '5-' is not a valid range"),
        ("0 0 30 2 *", "'0 0 30 2 *' never fires: February has no day 30"),
        ("0 0 30,31 feb *", "'0 0 30,31 feb *' never fires: February has no day 30 or 31"),
        (
            "0 0 31 4,6,9,11 *",
            "'0 0 31 4,6,9,11 *' never fires: April, June, September and November have no day 31",
        ),
        ("0 0 31 apr ?", "'0 0 31 apr ?' never fires: April has no day 31"),
    ],
)
def test_parse_errors_are_one_line_and_name_field_and_token(expr: str, message: str) -> None:
    with pytest.raises(CronError) as info:
        CronExpression(expr)
    assert str(info.value) == message
    assert "\n" not in str(info.value)
    assert isinstance(info.value, ValueError)


def test_unknown_zone() -> None:
    with pytest.raises(CronError, match=r"unknown time zone 'Mars/Olympus'"):
        CronExpression("* * * * *", tz="Mars/Olympus")


@pytest.mark.parametrize("expr", ["0 0 29 2 *", "0 0 30 2 1", "0 0 31 * *", "0 0 30 1-2 *"])
def test_rare_but_possible_days_are_accepted(expr: str) -> None:
    CronExpression(expr).next(utc(2024, 3, 1))


def test_next_is_strictly_after() -> None:
    cron = CronExpression("*/15 * * * *")
    assert cron.next(utc(2024, 1, 1, 0, 7)) == utc(2024, 1, 1, 0, 15)
    assert cron.next(utc(2024, 1, 1, 0, 15)) == utc(2024, 1, 1, 0, 30)
    assert cron.next(datetime(2024, 1, 1, 0, 14, 59, 999999, tzinfo=UTC)) == utc(2024, 1, 1, 0, 15)
    assert cron.next(datetime(2024, 1, 1, 0, 15, 0, 1, tzinfo=UTC)) == utc(2024, 1, 1, 0, 30)


def test_prev_is_strictly_before() -> None:
    cron = CronExpression("*/15 * * * *")
    assert cron.prev(utc(2024, 1, 1, 0, 15)) == utc(2024, 1, 1, 0, 0)
    assert cron.prev(datetime(2024, 1, 1, 0, 15, 0, 1, tzinfo=UTC)) == utc(2024, 1, 1, 0, 15)
    assert cron.prev(utc(2024, 1, 1, 0, 0)) == utc(2023, 12, 31, 23, 45)


def test_sub_second_inputs_with_seconds_field() -> None:
    cron = CronExpression("* * * * * *")
    at = datetime(2024, 5, 5, 12, 0, 0, 500000, tzinfo=UTC)
    assert cron.next(at) == utc(2024, 5, 5, 12, 0, 1)
    assert cron.prev(at) == utc(2024, 5, 5, 12, 0, 0)


def test_rolls_over_year_end() -> None:
    cron = CronExpression("0 0 * * *")
    assert cron.next(utc(2024, 12, 31, 23, 59, 59)) == utc(2025, 1, 1)
    assert cron.prev(utc(2025, 1, 1)) == utc(2024, 12, 31)


def test_month_ends() -> None:
    cron = CronExpression("0 0 31 * *")
    assert cron.next(utc(2024, 4, 1)) == utc(2024, 5, 31)
    assert cron.next_n(utc(2024, 1, 31), 4) == [
        utc(2024, 3, 31),
        utc(2024, 5, 31),
        utc(2024, 7, 31),
        utc(2024, 8, 31),
    ]
    assert cron.prev(utc(2024, 5, 1)) == utc(2024, 3, 31)
    assert CronExpression("0 0 30 * *").next(utc(2024, 1, 30)) == utc(2024, 3, 30)


def test_leap_days() -> None:
    cron = CronExpression("0 0 29 2 *")
    assert cron.next(utc(2023, 3, 1)) == utc(2024, 2, 29)
    assert cron.next(utc(2024, 2, 29)) == utc(2028, 2, 29)
    assert cron.next(utc(2096, 3, 1)) == utc(2104, 2, 29)  # 2100 is not a leap year
    assert cron.prev(utc(2104, 2, 28)) == utc(2096, 2, 29)
    assert cron.prev(utc(2001, 1, 1)) == utc(2000, 2, 29)  # 2000 is one
    assert CronExpression("0 0 28-29 2 *").next_n(utc(2023, 1, 1), 3) == [
        utc(2023, 2, 28),
        utc(2024, 2, 28),
        utc(2024, 2, 29),
    ]


def test_weekdays() -> None:
    cron = CronExpression("0 12 * * mon-fri")
    friday = utc(2024, 3, 15, 12)
    assert cron.next(friday) == utc(2024, 3, 18, 12)
    assert cron.prev(utc(2024, 3, 18, 11)) == friday
    assert CronExpression("0 0 * * 7").next(utc(2024, 3, 15)) == utc(2024, 3, 17)


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # Vixie rule: "on the 13th, and also on every Friday".
    cron = CronExpression("0 0 13 * fri")
    assert cron.next_n(utc(2024, 9, 1), 5) == [
        utc(2024, 9, 6),
        utc(2024, 9, 13),
        utc(2024, 9, 20),
        utc(2024, 9, 27),
        utc(2024, 10, 4),
    ]
    assert cron.next_n(utc(2024, 10, 5), 3) == [
        utc(2024, 10, 11),
        utc(2024, 10, 13),  # a Sunday, matched by day-of-month alone
        utc(2024, 10, 18),
    ]
    assert cron.matches(utc(2024, 10, 13))
    assert cron.matches(utc(2024, 10, 11))
    assert not cron.matches(utc(2024, 10, 12))
    # "0 0 30 2 1" never lands on Feb 30 but fires on February's Mondays.
    assert CronExpression("0 0 30 2 1").next(utc(2024, 1, 1)) == utc(2024, 2, 5)


def test_day_fields_and_when_one_is_star() -> None:
    assert CronExpression("0 0 13 * *").next(utc(2024, 9, 1)) == utc(2024, 9, 13)
    assert CronExpression("0 0 13 * ?").next(utc(2024, 9, 1)) == utc(2024, 9, 13)
    assert CronExpression("0 0 * * fri").next(utc(2024, 9, 7)) == utc(2024, 9, 13)
    assert CronExpression("0 0 ? * fri").next(utc(2024, 9, 7)) == utc(2024, 9, 13)


def test_day_fields_are_restricted_unless_written_with_a_star() -> None:
    # Vixie cron and POSIX: a day field not starting with '*' restricts, even when it
    # allows every value; one starting with '*' does not, even when stepped.
    every_day = CronExpression("51 * 10 * 0-6")  # the 10th OR any weekday: every day
    assert every_day.next_n(utc(2024, 9, 1), 3) == [
        utc(2024, 9, 1, 0, 51),
        utc(2024, 9, 1, 1, 51),
        utc(2024, 9, 1, 2, 51),
    ]
    assert every_day.next(utc(2024, 9, 11, 23, 52)) == utc(2024, 9, 12, 0, 51)
    assert CronExpression("0 0 1-31 * fri").next(utc(2024, 9, 2)) == utc(2024, 9, 3)
    # '*/2' (odd days) AND Monday: the Mondays that are odd days of the month.
    cron = CronExpression("0 0 */2 * mon")
    assert cron.next_n(utc(2024, 9, 1), 3) == [utc(2024, 9, 9), utc(2024, 9, 23), utc(2024, 10, 7)]
    assert cron.prev(utc(2024, 10, 7)) == utc(2024, 9, 23)


def test_six_field_expressions() -> None:
    assert CronExpression("*/20 * * * * *").next(utc(2024, 1, 1, 12, 0, 5)) == utc(
        2024, 1, 1, 12, 0, 20
    )
    cron = CronExpression("30 0 9 * * *")
    assert cron.next(utc(2024, 1, 1, 9)) == utc(2024, 1, 1, 9, 0, 30)
    assert cron.next(utc(2024, 1, 1, 9, 0, 30)) == utc(2024, 1, 2, 9, 0, 30)


def test_yearly_next_and_prev() -> None:
    cron = CronExpression("@yearly")
    assert cron.next(utc(2024, 6, 1)) == utc(2025, 1, 1)
    assert cron.prev(utc(2024, 6, 1)) == utc(2024, 1, 1)
    assert cron.prev(utc(2024, 1, 1)) == utc(2023, 1, 1)


def test_next_n() -> None:
    cron = CronExpression("0 */6 * * *")
    assert cron.next_n(utc(2024, 1, 1, 1), 4) == [
        utc(2024, 1, 1, 6),
        utc(2024, 1, 1, 12),
        utc(2024, 1, 1, 18),
        utc(2024, 1, 2, 0),
    ]
    assert cron.next_n(utc(2024, 1, 1), 0) == []
    with pytest.raises(ValueError, match="negative"):
        cron.next_n(utc(2024, 1, 1), -1)


def test_matches() -> None:
    cron = CronExpression("*/15 9-17 * * mon-fri")
    assert cron.matches(utc(2024, 3, 15, 9, 45))
    assert cron.matches(datetime(2024, 3, 15, 9, 45, 0, 300000, tzinfo=UTC))  # to the second
    assert not cron.matches(utc(2024, 3, 15, 9, 45, 30))  # five fields fire on second 0
    assert not cron.matches(utc(2024, 3, 15, 9, 46))
    assert not cron.matches(utc(2024, 3, 15, 18, 0))
    assert not cron.matches(utc(2024, 3, 16, 9, 45))  # Saturday


def test_search_is_bounded() -> None:
    with pytest.raises(CronError, match=rf"no occurrence within {HORIZON_YEARS} years after"):
        CronExpression("0 0 29 2 *").next(datetime(9997, 3, 1))
    with pytest.raises(CronError, match=rf"no occurrence within {HORIZON_YEARS} years before"):
        CronExpression("@yearly").prev(datetime(1, 1, 1))
    assert CronExpression("@yearly").prev(datetime(1, 6, 1)) == utc(1, 1, 1)


def test_next_is_fast() -> None:
    crons = [CronExpression(e) for e in ("@yearly", "0 0 29 2 *", "0 0 13 * fri", "*/5 * * * *")]
    start = utc(2024, 5, 17, 10, 3)
    began = time.perf_counter()
    for cron in crons:
        for _ in range(100):
            cron.next(start)
    # 400 calls; well under 1 ms each even on a slow CI machine.
    assert time.perf_counter() - began < 0.4


def test_results_are_aware_in_the_expression_zone() -> None:
    cron = CronExpression("0 9 * * *", tz="Europe/Berlin")
    result = cron.next(utc(2024, 6, 1))
    assert result.tzinfo is BERLIN
    assert result.astimezone(UTC) == utc(2024, 6, 1, 7)
    assert CronExpression("0 9 * * *").next(utc(2024, 6, 1)).tzinfo is UTC


def test_naive_inputs_are_read_in_the_expression_zone() -> None:
    cron = CronExpression("0 9 * * *", tz=BERLIN)
    assert cron.next(datetime(2024, 6, 1, 8)) == utc(2024, 6, 1, 7)
    assert cron.prev(datetime(2024, 6, 1, 10)) == utc(2024, 6, 1, 7)
    assert cron.matches(datetime(2024, 6, 1, 9))


def test_aware_inputs_are_converted() -> None:
    cron = CronExpression("0 9 * * *", tz=BERLIN)
    assert cron.next(utc(2024, 6, 1, 7, 30)) == utc(2024, 6, 2, 7)  # 09:30 in Berlin
    tokyo = datetime(2024, 6, 1, 15, tzinfo=ZoneInfo("Asia/Tokyo"))  # 08:00 in Berlin
    assert cron.next(tokyo) == utc(2024, 6, 1, 7)
    assert cron.matches(utc(2024, 6, 1, 7))


def test_fixed_offset_zone() -> None:
    india = timezone(timedelta(hours=5, minutes=30))
    cron = CronExpression("0 9 * * *", tz=india)
    assert cron.next(utc(2024, 6, 1)) == utc(2024, 6, 1, 3, 30)
    assert cron.next(utc(2024, 6, 1)).tzinfo is india


# Europe/Berlin 2024: clocks jump 02:00 CET -> 03:00 CEST on Mar 31 (01:00 UTC) and fall back
# 03:00 CEST -> 02:00 CET on Oct 27 (01:00 UTC), repeating 02:00-03:00.


# Note: aware datetimes inside a repeated hour never compare equal to another zone's (PEP 495),
# so these tests compare UTC instants.


def test_berlin_spring_gap_daily_time_is_skipped_not_shifted() -> None:
    cron = CronExpression("30 2 * * *", tz=BERLIN)
    assert as_utc(cron.next_n(datetime(2024, 3, 30, 3), 2)) == [
        utc(2024, 4, 1, 0, 30),  # Mar 31 has no 02:30
        utc(2024, 4, 2, 0, 30),
    ]
    assert cron.prev(utc(2024, 4, 1)).astimezone(UTC) == utc(2024, 3, 30, 1, 30)


def test_berlin_spring_gap_quarter_hours() -> None:
    cron = CronExpression("*/15 * * * *", tz=BERLIN)
    assert as_utc(cron.next_n(datetime(2024, 3, 31, 1, 30), 4)) == [
        utc(2024, 3, 31, 0, 45),  # 01:45 CET
        utc(2024, 3, 31, 1, 0),  # 03:00 CEST
        utc(2024, 3, 31, 1, 15),
        utc(2024, 3, 31, 1, 30),
    ]
    assert cron.prev(utc(2024, 3, 31, 1, 0)).astimezone(UTC) == utc(2024, 3, 31, 0, 45)


def test_berlin_spring_gap_seconds_jump_in_one_step() -> None:
    cron = CronExpression("* * * * * *", tz=BERLIN)
    assert as_utc(cron.next_n(datetime(2024, 3, 31, 1, 59, 58), 2)) == [
        utc(2024, 3, 31, 0, 59, 59),
        utc(2024, 3, 31, 1, 0, 0),
    ]
    assert cron.prev(utc(2024, 3, 31, 1)).astimezone(UTC) == utc(2024, 3, 31, 0, 59, 59)


def test_berlin_fall_back_daily_time_fires_once() -> None:
    cron = CronExpression("30 2 * * *", tz=BERLIN)
    first, second = cron.next_n(datetime(2024, 10, 26, 12), 2)
    assert first.astimezone(UTC) == utc(2024, 10, 27, 0, 30)  # 02:30 CEST, first pass
    assert (first.fold, first.utcoffset()) == (0, timedelta(hours=2))
    assert second.astimezone(UTC) == utc(2024, 10, 28, 1, 30)  # next day, CET
    assert cron.prev(utc(2024, 10, 28)).astimezone(UTC) == utc(2024, 10, 27, 0, 30)


def test_berlin_fall_back_quarter_hours_fire_once_per_wall_time() -> None:
    cron = CronExpression("*/15 * * * *", tz=BERLIN)
    assert as_utc(cron.next_n(utc(2024, 10, 26, 23, 50), 6)) == [
        utc(2024, 10, 27, 0, 0),  # 02:00 CEST
        utc(2024, 10, 27, 0, 15),
        utc(2024, 10, 27, 0, 30),
        utc(2024, 10, 27, 0, 45),  # 02:45 CEST; the CET pass of 02:00-02:45 stays silent
        utc(2024, 10, 27, 2, 0),  # 03:00 CET
        utc(2024, 10, 27, 2, 15),
    ]


def test_berlin_hourly_across_fall_back() -> None:
    cron = CronExpression("0 * * * *", tz=BERLIN)
    assert as_utc(cron.next_n(utc(2024, 10, 26, 22, 30), 4)) == [
        utc(2024, 10, 26, 23),  # 01:00 CEST
        utc(2024, 10, 27, 0),  # 02:00 CEST
        utc(2024, 10, 27, 2),  # 03:00 CET: two real hours later
        utc(2024, 10, 27, 3),
    ]


def test_berlin_starting_inside_the_repeated_hour() -> None:
    cron = CronExpression("*/15 * * * *", tz=BERLIN)
    second_pass = utc(2024, 10, 27, 1, 10)  # 02:10 CET
    assert second_pass.astimezone(BERLIN).fold == 1
    assert cron.next(second_pass).astimezone(UTC) == utc(2024, 10, 27, 2, 0)  # 03:00 CET
    assert cron.prev(second_pass).astimezone(UTC) == utc(2024, 10, 27, 0, 45)  # 02:45 CEST
    first_pass = utc(2024, 10, 27, 0, 10)  # 02:10 CEST
    assert cron.next(first_pass).astimezone(UTC) == utc(2024, 10, 27, 0, 15)
    assert cron.prev(first_pass).astimezone(UTC) == utc(2024, 10, 27, 0, 0)
    assert cron.matches(utc(2024, 10, 27, 0, 15))
    assert not cron.matches(utc(2024, 10, 27, 1, 15))  # same wall time, second pass


# America/New_York 2024: 02:00 EST -> 03:00 EDT on Mar 10 (07:00 UTC); 02:00 EDT -> 01:00 EST
# on Nov 3 (06:00 UTC), repeating 01:00-02:00.


def test_new_york_spring_gap() -> None:
    cron = CronExpression("30 2 * * *", tz=NEW_YORK)
    assert cron.next(datetime(2024, 3, 9, 12)).astimezone(UTC) == utc(2024, 3, 11, 6, 30)
    assert cron.prev(datetime(2024, 3, 11)).astimezone(UTC) == utc(2024, 3, 9, 7, 30)
    hourly = CronExpression("0 * * * *", tz=NEW_YORK)
    assert as_utc(hourly.next_n(datetime(2024, 3, 10, 0, 30), 3)) == [
        utc(2024, 3, 10, 6),  # 01:00 EST
        utc(2024, 3, 10, 7),  # 03:00 EDT: 02:00 does not exist
        utc(2024, 3, 10, 8),
    ]


def test_new_york_fall_back() -> None:
    cron = CronExpression("30 1 * * *", tz=NEW_YORK)
    assert as_utc(cron.next_n(datetime(2024, 11, 2, 12), 2)) == [
        utc(2024, 11, 3, 5, 30),  # 01:30 EDT only
        utc(2024, 11, 4, 6, 30),  # 01:30 EST next day
    ]
    half_hours = CronExpression("*/30 * * * *", tz=NEW_YORK)
    assert as_utc(half_hours.next_n(utc(2024, 11, 3, 4, 45), 5)) == [
        utc(2024, 11, 3, 5, 0),  # 01:00 EDT
        utc(2024, 11, 3, 5, 30),  # 01:30 EDT
        utc(2024, 11, 3, 7, 0),  # 02:00 EST
        utc(2024, 11, 3, 7, 30),
        utc(2024, 11, 3, 8, 0),
    ]


def test_new_york_naive_ambiguous_inputs_follow_fold() -> None:
    cron = CronExpression("*/30 * * * *", tz=NEW_YORK)
    first = datetime(2024, 11, 3, 1, 30)  # fold=0: 01:30 EDT
    second = datetime(2024, 11, 3, 1, 30, fold=1)  # 01:30 EST
    assert cron.next(first).astimezone(UTC) == utc(2024, 11, 3, 7)
    assert cron.prev(first).astimezone(UTC) == utc(2024, 11, 3, 5)
    assert cron.next(second).astimezone(UTC) == utc(2024, 11, 3, 7)
    assert cron.prev(second).astimezone(UTC) == utc(2024, 11, 3, 5, 30)
    assert cron.matches(first)
    assert not cron.matches(second)


# Australia/Sydney 2024: 03:00 AEDT -> 02:00 AEST on Apr 7 (Apr 6 16:00 UTC); 02:00 AEST ->
# 03:00 AEDT on Oct 6 (Oct 5 16:00 UTC).


def test_sydney_southern_hemisphere() -> None:
    cron = CronExpression("30 2 * * *", tz=SYDNEY)
    assert as_utc(cron.next_n(datetime(2024, 4, 6, 12), 2)) == [
        utc(2024, 4, 6, 15, 30),  # Apr 7 02:30 AEDT, once
        utc(2024, 4, 7, 16, 30),  # Apr 8 02:30 AEST
    ]
    oct_6_skipped = cron.next(datetime(2024, 10, 5, 12))
    assert oct_6_skipped.astimezone(UTC) == utc(2024, 10, 6, 15, 30)


def test_samoa_skipped_a_whole_day() -> None:
    # Pacific/Apia went from Dec 29 2011 23:59:59 (-10) straight to Dec 31 00:00 (+14).
    cron = CronExpression("0 12 * * *", tz="Pacific/Apia")
    assert cron.next(datetime(2011, 12, 29, 13)).astimezone(UTC) == utc(2011, 12, 30, 22)
    assert cron.prev(datetime(2011, 12, 31, 11)).astimezone(UTC) == utc(2011, 12, 29, 22)


def test_lord_howe_half_hour_shift() -> None:
    cron = CronExpression("*/15 * * * *", tz=LORD_HOWE)
    # Oct 6 2024 02:00 -> 02:30 local (15:30 UTC on Oct 5): 02:00 and 02:15 do not exist.
    assert cron.next(datetime(2024, 10, 6, 1, 45)).astimezone(UTC) == utc(2024, 10, 5, 15, 30)
    assert cron.prev(datetime(2024, 10, 6, 2, 30)).astimezone(UTC) == utc(2024, 10, 5, 15, 15)


@pytest.mark.parametrize(
    ("expr", "text"),
    [
        ("*/15 * * * *", "every 15 minutes"),
        ("30 9 * * mon-fri", "at 09:30 on Monday through Friday"),
        ("0 */2 * * *", "at minute 0 past every 2nd hour"),
        ("0 0 1 * *", "at 00:00 on day 1 of the month"),
        ("* * * * *", "every minute"),
        ("* * * * * *", "every second"),
        ("*/10 * * * * *", "every 10 seconds"),
        ("@hourly", "every hour"),
        ("@daily", "at 00:00"),
        ("@weekly", "at 00:00 on Sunday"),
        ("@yearly", "at 00:00 on January 1"),
        ("0 0 29 2 *", "at 00:00 on February 29"),
        ("5 * * * *", "at minute 5 past every hour"),
        ("30 0 9 * * *", "at 09:00:30"),
        ("0 9,17 * * sat,sun", "at 09:00 and 17:00 on Saturday and Sunday"),
        ("0,30 9 * * *", "at 09:00 and 09:30"),
        ("*/7 * * * *", "every 7th minute"),
        ("5/10 * * * *", "every 10 minutes from 5 through 55"),
        ("10-50/5 3 * * *", "every 5 minutes from 10 through 50 past hour 3"),
        ("1,5,10-12 * * * *", "at minutes 1, 5 and 10 through 12 past every hour"),
        (
            "*/15 9-17 * * 1-5",
            "every 15 minutes past every hour from 9 through 17 on Monday through Friday",
        ),
        ("0 0 1,15 * 5", "at 00:00 on days 1 and 15 of the month or on Friday"),
        ("0 0 */2 * *", "at 00:00 on every 2nd day of the month"),
        ("0 12 * jan-mar,jul *", "at 12:00 in January through March and July"),
        ("0 0 * */3 *", "at 00:00 in every 3rd month"),
        ("0 0 * * 5-7", "at 00:00 on Friday through Sunday"),
        ("15 */5 * * * *", "at second 15 past every 5 minutes"),
    ],
)
def test_describe(expr: str, text: str) -> None:
    assert CronExpression(expr).describe() == text


def test_describe_names_a_non_utc_zone() -> None:
    assert CronExpression("30 9 * * *", "Europe/Berlin").describe() == "at 09:30 (Europe/Berlin)"


def test_equal_expressions_describe_alike() -> None:
    assert CronExpression("0,30 * * * *").describe() == CronExpression("*/30 * * * *").describe()


ZONES: list[tzinfo] = [UTC, BERLIN, NEW_YORK, SYDNEY]

# UTC instants of 2024 transitions, to aim generated start times at DST edges.
TRANSITIONS = [
    utc(2024, 3, 31, 1),
    utc(2024, 10, 27, 1),
    utc(2024, 3, 10, 7),
    utc(2024, 11, 3, 6),
    utc(2024, 4, 6, 16),
    utc(2024, 10, 5, 16),
]

instants = st.one_of(
    st.datetimes(datetime(2000, 1, 1), datetime(2090, 1, 1), timezones=st.just(UTC)),
    st.builds(
        lambda base, seconds: base + timedelta(seconds=seconds),
        st.sampled_from(TRANSITIONS),
        st.integers(-3 * 3600, 3 * 3600),
    ),
)


@st.composite
def field(draw: st.DrawFn, low: int, high: int) -> tuple[str, set[int]]:
    """A field's text and, computed independently of the parser, the values it allows."""
    items: list[str] = []
    values: set[int] = set()
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["star", "value", "range", "star-step", "range-step", "from"]))
        a, b = sorted(draw(st.lists(st.integers(low, high), min_size=2, max_size=2)))
        k = draw(st.integers(1, high - low))
        if kind == "star":
            items.append("*")
            values |= set(range(low, high + 1))
        elif kind == "value":
            items.append(str(a))
            values.add(a)
        elif kind == "range":
            items.append(f"{a}-{b}")
            values |= {v for v in range(low, high + 1) if a <= v <= b}
        elif kind == "star-step":
            items.append(f"*/{k}")
            values |= {v for v in range(low, high + 1) if (v - low) % k == 0}
        elif kind == "range-step":
            items.append(f"{a}-{b}/{k}")
            values |= {v for v in range(a, b + 1) if (v - a) % k == 0}
        else:
            items.append(f"{a}/{k}")
            values |= {v for v in range(a, high + 1) if (v - a) % k == 0}
    return ",".join(items), values


@st.composite
def expressions(draw: st.DrawFn, days: bool = True) -> tuple[str, list[Any]]:
    """An expression and its expected sets (second, minute, hour, dom, month, dow).

    With ``days=False`` it is a five-field expression whose day fields are ``*``.
    """
    if not days:
        (minute, minutes), (hour, hours) = draw(field(0, 59)), draw(field(0, 23))
        stars = [set(range(1, 32)), set(range(1, 13)), set(range(7))]
        return f"{minute} {hour} * * *", [{0}, minutes, hours, *stars, (True, True)]
    specs = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6)]
    parts = [draw(field(lo, hi)) for lo, hi in specs]
    # Vixie cron: a day field written starting with '*' does not restrict.
    stars = (parts[3][0].startswith("*"), parts[5][0].startswith("*"))
    return " ".join(text for text, _ in parts), [*(values for _, values in parts), stars]


def never_fires(sets: list[Any]) -> bool:
    longest = {2: 29, 4: 30, 6: 30, 9: 30, 11: 30}
    dow_star = sets[6][1]
    return dow_star and all(d > longest.get(m, 31) for m in sets[4] for d in sets[3])


def day_ok(sets: list[Any], day: date) -> bool:
    """The Vixie day rule: OR when both day fields are written without a leading '*'."""
    dom, dow, (dom_star, dow_star) = sets[3], sets[5], sets[6]
    in_dom, in_dow = day.day in dom, day.isoweekday() % 7 in dow
    if not dom_star and not dow_star:
        return in_dom or in_dow
    return in_dom and in_dow


def fires_at(sets: list[Any], t: datetime) -> bool:
    """The oracle: does this instant fire, per the documented DST policy?"""
    if t.fold == 1 and t.utcoffset() != t.replace(fold=0).utcoffset():
        return False  # the second pass of a repeated wall time
    return (
        t.second in sets[0]
        and t.minute in sets[1]
        and t.hour in sets[2]
        and t.month in sets[4]
        and day_ok(sets, t.date())
    )


FAST = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(expressions())
def test_parser_agrees_with_the_oracle(case: tuple[str, list[Any]]) -> None:
    expr, sets = case
    if never_fires(sets):
        with pytest.raises(CronError, match="never fires"):
            CronExpression(expr)
        return
    cron = CronExpression(expr)
    f = cron.fields
    assert [f.second, f.minute, f.hour, f.day_of_month, f.month, f.day_of_week] == sets[:6]
    assert (f.dom_star, f.dow_star) == sets[6]
    assert cron.describe()
    if sets[0] == {0}:
        assert CronExpression(expr.split(" ", 1)[1]) == cron  # the five-field form


@FAST
@given(expressions(), st.sampled_from(ZONES), instants)
def test_next_and_prev_properties(case: tuple[str, list[Any]], tz: tzinfo, x: datetime) -> None:
    expr, sets = case
    if never_fires(sets):
        return
    cron = CronExpression(expr, tz)
    n = cron.next(x)
    p = cron.prev(x)
    assert p < x < n
    for t in (n, p):
        assert t.tzinfo is tz
        assert t.fold == 0
        assert t.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == t.replace(tzinfo=None)
        assert fires_at(sets, t.astimezone(UTC).astimezone(tz)), t
        assert cron.matches(t)
    assert cron.prev(n) <= x
    assert cron.next(p) >= x
    assert cron.next(cron.prev(n)) == n
    later = cron.next_n(x, 4)
    assert later[0] == n
    assert all(a < b for a, b in pairwise(later))
    assert all(cron.next(a) == b for a, b in pairwise(later))


#: Every minute of 2 a.m., in New York the night before it springs forward (2000-04-02):
#: that night has no 2 a.m., so the next fire is the night after, 31 hours on.
SPRING_GAP = (
    "* 2 * * *",
    [{0}, set(range(60)), {2}, set(range(1, 32)), set(range(1, 13)), set(range(7)), (True, True)],
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(days=False), st.sampled_from(ZONES), instants)
@example(case=SPRING_GAP, tz=NEW_YORK, x=datetime(2000, 4, 2, tzinfo=UTC))
def test_no_fire_time_is_skipped(case: tuple[str, list[Any]], tz: tzinfo, x: datetime) -> None:
    # Day fields are '*', so the next fire is within a day (plus a DST hour), or two when
    # the only fire times of the next day fall in its DST gap ('* 2 * * *' on a spring-
    # forward day in New York): scan every minute in between against the oracle.
    expr, sets = case
    cron = CronExpression(expr, tz)
    n = cron.next(x)
    assert x < n <= x + timedelta(days=2, hours=1)
    t = x.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while t < n:
        assert not fires_at(sets, t.astimezone(tz)), t
        assert not cron.matches(t)
        t += timedelta(minutes=1)
    assert cron.prev(n) <= x


def is_transition_day(day: date, tz: tzinfo) -> bool:
    start = datetime.combine(day, dtime(), tzinfo=tz)
    return start.utcoffset() != (start + timedelta(days=1)).utcoffset()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(), st.sampled_from(ZONES), instants)
def test_no_fire_day_is_skipped(case: tuple[str, list[Any]], tz: tzinfo, x: datetime) -> None:
    # A whole day strictly between x and next(x) that passes the month and day rules would
    # hold a fire time, unless a DST gap swallowed all of them; so it must be a DST day.
    expr, sets = case
    if never_fires(sets):
        return
    n = CronExpression(expr, tz).next(x).astimezone(tz)
    day = x.astimezone(tz).date() + timedelta(days=1)
    while day < n.date():
        if day.month in sets[4] and day_ok(sets, day):
            assert is_transition_day(day, tz), day
        day += timedelta(days=1)


def brute_next(sets: list[Any], x: datetime) -> datetime:
    """The next fire after ``x`` (UTC, five-field: second 0) by walking minutes.

    Days that fail the month or the day rule are stepped over whole; on the others
    every minute is tried, so the walk is at most about two days of minutes.
    """
    t = x.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(3000 * 1440):
        if t.month not in sets[4] or not day_ok(sets, t.date()):
            t = datetime.combine(t.date() + timedelta(days=1), dtime(), tzinfo=UTC)
            continue
        if t.hour in sets[2] and t.minute in sets[1]:
            return t
        t += timedelta(minutes=1)
    raise AssertionError("no fire within 3000 days")


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions(), instants)
def test_next_agrees_with_a_brute_force_minute_walk(
    case: tuple[str, list[Any]], x: datetime
) -> None:
    # Restricted day fields of every shape ('0-6', '1-31', '*/2', lists), in UTC.
    expr, sets = case
    sets = [{0}, *sets[1:]]
    expr = "0 " + expr.split(" ", 1)[1]
    if never_fires(sets):
        return
    x = x.astimezone(UTC)
    assert CronExpression(expr).next(x) == brute_next(sets, x)
