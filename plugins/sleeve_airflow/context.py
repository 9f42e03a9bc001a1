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


STAGE_START_KEY = "stage_started_at"


def mark_stage_start(context) -> None:
    """Called by a DAG's first task: remember when the stage really began (``ti.start_date``),
    for the duration recorded in ``stage_runs``. (The DAG run's own ``start_date`` is the
    logical date under ``dag.test()``, so it cannot serve.)"""
    context["ti"].xcom_push(key=STAGE_START_KEY, value=context["ti"].start_date.isoformat())


def stage_started_at(context, first_task_id: str) -> datetime | None:
    """When the stage began, as marked by ``first_task_id`` in the same run."""
    value = context["ti"].xcom_pull(task_ids=first_task_id, key=STAGE_START_KEY)
    return datetime.fromisoformat(value) if value else None
