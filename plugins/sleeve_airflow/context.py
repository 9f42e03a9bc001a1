"""Helpers that turn an Airflow task context into the plain values Sleeve's code takes."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta


def data_interval(context) -> tuple[datetime, datetime]:
    """The run's data interval. Asset-triggered and manual runs may have none: they fall back
    to the run's own ``run_after`` as a zero-length interval, never to the wall clock."""
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    if start is not None and end is not None:
        return start, end
    run_after = context["dag_run"].run_after
    return run_after, run_after


def param_datetime(context, name: str) -> datetime | None:
    """The Param ``name`` (ISO 8601 date or date-time; UTC unless it carries an offset) as an
    aware datetime, or None when it is empty. A bad value fails naming the Param."""
    value = context["params"].get(name)
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value))
    except ValueError:
        raise ValueError(f"param {name}={value!r} is not an ISO 8601 date or date-time; "
                         "use e.g. 2026-01-05 or 2026-01-05T03:00:00+00:00") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def param_range(context, start: str, end: str) -> tuple[datetime, datetime] | None:
    """``[start, end)`` from two Params, or None when neither is set. Setting only one, or an
    end that is not after the start, fails naming the Params."""
    low, high = param_datetime(context, start), param_datetime(context, end)
    if low is None and high is None:
        return None
    if low is None or high is None:
        missing = start if low is None else end
        raise ValueError(f"param {missing} is not set: give both {start} and {end}, or neither")
    if high <= low:
        raise ValueError(f"param {end}={high.isoformat()} must be after {start}={low.isoformat()}")
    return low, high


def interval(context, start: str, end: str | None = None) -> tuple[datetime, datetime]:
    """The interval a task works on: the run's data interval unless Params override it.

    ``interval(context, "interval_start", "interval_end")``: the two Params' ``[start, end)``.
    ``interval(context, "week_start")``: the Param names a day; the interval of the DAG's own
    schedule that began last before that day ended (for a weekly DAG: that day's week)."""
    if end is not None:
        return param_range(context, start, end) or data_interval(context)
    day = param_datetime(context, start)
    return schedule_interval_of(context["dag"].timetable, day.date()) if day else data_interval(context)


def schedule_interval_of(timetable, day: date) -> tuple[datetime, datetime]:
    """The cron timetable's interval that began last before the end of ``day`` (in the
    timetable's time zone), so every day of a weekly schedule maps to its own week."""
    import pendulum
    from croniter import croniter

    expression = getattr(timetable, "expression", None)
    if expression is None:
        raise TypeError(f"{type(timetable).__name__} has no cron expression to take an interval from")
    tz = timetable.timezone
    tz = pendulum.timezone(tz) if isinstance(tz, str) else tz
    day_end = datetime.combine(day + timedelta(days=1), time(), tzinfo=tz)
    start = croniter(expression, day_end).get_prev(datetime)
    return start, croniter(expression, start).get_next(datetime)


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


def dag_schedule_state(context, dag_id: str, logical_date: datetime) -> dict:
    """What Airflow knows of another DAG, for a task deciding whether to wait for it:
    ``paused`` (None: no such DAG), ``active_runs`` (queued or running runs for ``logical_date``)
    and ``next_run`` (the logical date of the next run its schedule will create, or None)."""
    from airflow.sdk.exceptions import AirflowRuntimeError

    ti = context["ti"]
    try:
        dag = ti.get_dag(dag_id)
    except AirflowRuntimeError:
        return {"paused": None, "active_runs": 0, "next_run": None}
    active = ti.get_dr_count(dag_id=dag_id, logical_dates=[logical_date], states=["queued", "running"])
    return {"paused": dag.is_paused, "active_runs": active, "next_run": dag.next_dagrun}
