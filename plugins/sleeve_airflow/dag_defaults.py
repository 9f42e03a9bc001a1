"""Conventions every Sleeve DAG shares: start date, the weekly data interval, retries and the
failure alert. DAG files import from here so they stay thin and alike.

Nothing here reads Sleeve's settings: DAG files import it at parse time, and a bad setting must
fail the runs that need it (their first task, ``sleeve_airflow.preflight``), never the import."""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import CronDataIntervalTimetable, ExceptionRetryPolicy, RetryAction, RetryRule

from sleeve.settings import SettingsError
from sleeve_airflow.callbacks import notify_failure

START_DATE = pendulum.datetime(2026, 1, 5, tz="UTC")  # a Monday
WEEKLY_CRON = "0 3 * * 1"  # Mondays 03:00 UTC, covering the week that just ended


def weekly_interval() -> CronDataIntervalTimetable:
    """A real data interval (Monday 03:00 to Monday 03:00), so backfills address whole weeks."""
    return CronDataIntervalTimetable(WEEKLY_CRON, timezone="UTC")


# A settings or credentials error (SettingsError, incl. sleeve.preflight.NotReady) fails the
# task at once: retrying cannot fix configuration. Everything else gets the retries.
NO_RETRY_ON_CONFIGURATION = ExceptionRetryPolicy(rules=[
    RetryRule(exception=SettingsError, action=RetryAction.FAIL,
              reason="configuration error: fix the setting named in the error, then clear the task"),
])

DEFAULT_ARGS = {
    "owner": "sleeve",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "retry_policy": NO_RETRY_ON_CONFIGURATION,
    "on_failure_callback": notify_failure,
}
