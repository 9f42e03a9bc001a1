"""Failure alerts for every Sleeve DAG: recorded in ``task_failures`` (the weekly report's
health section reads it: Airflow 3 tasks cannot read Airflow's metadata DB) and sent through
the configured notifier (outbox file or Slack)."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def failure_alert(context) -> dict:
    """What an alert says: which DAG, task, run and interval failed, and the error class.
    The exception message is left out: it may quote personal data or secrets."""
    ti = context["ti"]
    exc = context.get("exception")
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "try_number": ti.try_number,
        "data_interval_end": str(context.get("data_interval_end")),
        "error": type(exc).__name__ if exc else None,
    }


def record_failure(warehouse, alert: dict, context, failed_at) -> None:
    """Upsert the failure (one row per task try, so a re-delivered callback adds nothing)."""
    warehouse.upsert("task_failures", [{
        "dag_id": alert["dag_id"], "task_id": alert["task_id"], "run_id": alert["run_id"],
        "try_number": alert["try_number"], "interval_start": context.get("data_interval_start"),
        "interval_end": context.get("data_interval_end"), "error": alert["error"], "failed_at": failed_at,
    }])


def notify_failure(context) -> None:
    """on_failure_callback: record the failure, then alert. A callback must never raise: each
    step that fails is logged (by error class only) and the other still runs."""
    from sleeve_airflow.hooks import WarehouseHook
    from sleeve_airflow.notifier import NotifierHook, utcnow

    alert = failure_alert(context)
    log.error("Sleeve task failed: %s", alert)
    try:
        record_failure(WarehouseHook().warehouse, alert, context, utcnow())
    except Exception as exc:
        log.error("could not record the failure in task_failures: %s", type(exc).__name__)
    try:
        NotifierHook().send_alert(alert)
    except Exception as exc:
        log.error("could not send the failure alert: %s", type(exc).__name__)
