"""Failure alerts for every Sleeve DAG: a ``BaseNotifier`` (``dag_defaults.DEFAULT_ARGS``
``on_failure_callback``) that records the failure in ``task_failures`` (the weekly report's health
section reads it: Airflow 3 tasks cannot read Airflow's metadata DB) and sends the alert through
:mod:`sleeve.delivery` (outbox file or Slack)."""

from __future__ import annotations

from airflow.sdk import BaseNotifier


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


class FailureNotifier(BaseNotifier):
    """Record the failure, then alert. It never raises (BaseNotifier would log the exception's
    message, which may carry secrets, and re-raise): a step that fails is logged by its error
    class only, and the other step still runs."""

    def notify(self, context) -> None:
        from sleeve.delivery import send_alert, utcnow
        from sleeve_airflow.hooks import WarehouseHook
        from sleeve_airflow.notifier import open_sender

        alert = failure_alert(context)
        self.log.error("Sleeve task failed: %s", alert)
        try:
            record_failure(WarehouseHook().warehouse, alert, context, utcnow())
        except Exception as exc:
            self.log.error("could not record the failure in task_failures: %s", type(exc).__name__)
        try:
            send_alert(open_sender(), alert)
        except Exception as exc:
            self.log.error("could not send the failure alert: %s", type(exc).__name__)


notify_failure = FailureNotifier()
