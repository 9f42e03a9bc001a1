"""Failure alerts for every Sleeve DAG: a ``BaseNotifier`` (``dag_defaults.DEFAULT_ARGS``
``on_failure_callback``) that writes the alert to the outbox first, records the failure in
``task_failures`` (the weekly report's health section reads it: Airflow 3 tasks cannot read
Airflow's metadata DB) and sends the alert through :mod:`sleeve.delivery` (with any alert still
pending). It works with bad settings too: it then uses what it can of them (see
:func:`sleeve.preflight.reporting_settings`) and the alert says what is wrong."""

from __future__ import annotations

from airflow.sdk import BaseNotifier

from sleeve.settings import SettingsError


def failure_alert(context) -> dict:
    """What an alert says: which DAG, task, run and interval failed, and the error class. An
    exception's message is left out (it may quote personal data or secrets), except for a
    settings error, whose one line is Sleeve's own and names the setting and the fix."""
    ti = context["ti"]
    exc = context.get("exception")
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "try_number": ti.try_number,
        "data_interval_end": str(context.get("data_interval_end")),
        "error": type(exc).__name__ if exc else None,
        "reason": str(exc) if isinstance(exc, SettingsError) else None,
    }


def record_failure(warehouse, alert: dict, context, failed_at) -> None:
    """Upsert the failure (one row per task try, so a re-delivered callback adds nothing)."""
    warehouse.upsert("task_failures", [{
        "dag_id": alert["dag_id"], "task_id": alert["task_id"], "run_id": alert["run_id"],
        "try_number": alert["try_number"], "interval_start": context.get("data_interval_start"),
        "interval_end": context.get("data_interval_end"), "error": alert["error"], "failed_at": failed_at,
    }])


class FailureNotifier(BaseNotifier):
    """Outbox, record, alert. It never raises (BaseNotifier would log the exception's message,
    which may carry secrets, and re-raise): a step that fails is logged by its error class (or
    a settings error's one line) and the other steps still run."""

    def notify(self, context) -> None:
        from sleeve.delivery import Outbox, send_alert, utcnow
        from sleeve.preflight import reporting_settings
        from sleeve_airflow.hooks import WarehouseHook
        from sleeve_airflow.notifier import open_sender

        alert = failure_alert(context)
        self.log.error("Sleeve task failed: %s", alert)
        settings, unusable = reporting_settings()
        if unusable:
            self.log.error("settings: %s", unusable)
        outbox = Outbox(settings.outbox_dir)
        try:
            outbox.write_alert(alert)  # first: whatever fails next, the alert is kept
        except Exception as exc:
            self.log.error("could not write the alert to the outbox %s: %s", outbox.root, type(exc).__name__)
        try:
            record_failure(WarehouseHook(settings=settings).warehouse, alert, context, utcnow())
        except Exception as exc:
            self.log.error("could not record the failure in task_failures: %s", _why(exc))
        try:
            sender = open_sender(settings)
            _ = sender.transport  # builds the Slack client: a configuration problem shows here
        except SettingsError as exc:
            self.log.error("the alert waits in the outbox: %s", exc)
            sender = None
        try:
            path = send_alert(outbox, sender, alert)
            self.log.info("alert written to %s", path)
        except Exception as exc:
            self.log.error("the alert waits in the outbox (%s): %s", outbox.alert_path(alert), _why(exc))


def _why(exc: Exception) -> str:
    return str(exc) if isinstance(exc, SettingsError) else type(exc).__name__


notify_failure = FailureNotifier()
