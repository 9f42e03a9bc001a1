"""Helpers that turn an Airflow task context into the plain values Sleeve's code takes."""

from __future__ import annotations

from datetime import datetime


def data_interval(context) -> tuple[datetime, datetime]:
    """The run's data interval. Asset-triggered and manual runs may have none: they fall back
    to the run's own ``run_after`` as a zero-length interval, never to the wall clock."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None:
        return start, end
    run_after = context["dag_run"].run_after
    return run_after, run_after
