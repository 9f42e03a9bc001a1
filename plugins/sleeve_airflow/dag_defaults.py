"""Conventions every Sleeve DAG shares: start date, the weekly data interval, retries and the
failure alert. DAG files import from here so they stay thin and alike."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable

from sleeve_airflow.callbacks import notify_failure

START_DATE = pendulum.datetime(2026, 1, 5, tz="UTC")  # a Monday
WEEKLY_CRON = "0 3 * * 1"  # Mondays 03:00 UTC, covering the week that just ended


def weekly_interval() -> CronDataIntervalTimetable:
    """A real data interval (Monday 03:00 to Monday 03:00), so backfills address whole weeks."""
    return CronDataIntervalTimetable(WEEKLY_CRON, timezone="UTC")


DEFAULT_ARGS = {
    "owner": "sleeve",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "on_failure_callback": notify_failure,
}
