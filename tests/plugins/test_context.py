"""The task-context helpers: data interval, or the interval Params name instead."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from types import SimpleNamespace

import pendulum
import pytest
from sleeve_airflow.context import data_interval, interval, param_datetime, param_range, schedule_interval_of
from sleeve_airflow.dag_defaults import weekly_interval

START, END = pendulum.datetime(2026, 1, 5, 3, tz="UTC"), pendulum.datetime(2026, 1, 12, 3, tz="UTC")


def ctx(**params):
    return {"params": params, "data_interval_start": START, "data_interval_end": END,
            "dag": SimpleNamespace(timetable=weekly_interval())}


def test_without_params_it_is_the_data_interval():
    assert interval(ctx(), "interval_start", "interval_end") == (START, END)
    assert interval(ctx(week_start=None), "week_start") == (START, END)
    run = SimpleNamespace(run_after=END)
    assert data_interval({"dag_run": run}) == (END, END)  # no interval: run_after, never the wall clock


def test_two_params_override_the_interval():
    got = interval(ctx(interval_start="2026-02-02T03:00:00+00:00", interval_end="2026-02-09"),
                   "interval_start", "interval_end")
    assert got == (datetime(2026, 2, 2, 3, tzinfo=UTC), datetime(2026, 2, 9, tzinfo=UTC))


def test_values_without_offset_are_utc_and_offsets_are_kept():
    assert param_datetime(ctx(d="2026-01-14"), "d") == datetime(2026, 1, 14, tzinfo=UTC)
    seoul = param_datetime(ctx(d="2026-01-14T09:00:00+09:00"), "d")
    assert seoul.utcoffset() == timedelta(hours=9) and seoul == datetime(2026, 1, 14, tzinfo=UTC)
    assert param_datetime(ctx(d=""), "d") is None and param_range(ctx(), "a", "b") is None


@pytest.mark.parametrize("params,match", [
    ({"backfill_from": "last week", "backfill_to": "2026-01-13"}, "param backfill_from='last week' is not an ISO"),
    ({"backfill_from": "2026-01-12"}, "param backfill_to is not set: give both backfill_from and backfill_to"),
    ({"backfill_to": "2026-01-12"}, "param backfill_from is not set"),
    ({"backfill_from": "2026-01-12", "backfill_to": "2026-01-12"}, "param backfill_to=.* must be after backfill_from"),
])
def test_bad_values_name_the_param(params, match):
    with pytest.raises(ValueError, match=match):
        param_range(ctx(**params), "backfill_from", "backfill_to")


@pytest.mark.parametrize("day", ["2026-01-12", "2026-01-14", "2026-01-18"])
def test_a_day_param_gives_the_weekly_schedules_interval_holding_it(day):
    # weekly_interval(): Mondays 03:00 UTC; Monday the 12th through Sunday the 18th are one week.
    start, end = interval(ctx(week_start=day), "week_start")
    assert (start, end) == (datetime(2026, 1, 12, 3, tzinfo=UTC), datetime(2026, 1, 19, 3, tzinfo=UTC))


def test_schedule_interval_follows_the_timetable_not_a_fixed_weekday():
    daily = SimpleNamespace(expression="0 2 * * *", timezone="UTC")
    assert schedule_interval_of(daily, date(2026, 1, 14)) == (datetime(2026, 1, 14, 2, tzinfo=UTC),
                                                               datetime(2026, 1, 15, 2, tzinfo=UTC))
    seoul = SimpleNamespace(expression="0 3 * * 1", timezone=timezone(timedelta(hours=9)))
    start, _ = schedule_interval_of(seoul, date(2026, 1, 12))
    assert start == datetime(2026, 1, 12, 3, tzinfo=timezone(timedelta(hours=9)))
    with pytest.raises(TypeError, match="no cron expression"):
        schedule_interval_of(SimpleNamespace(), date(2026, 1, 12))
