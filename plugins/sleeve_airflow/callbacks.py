"""Failure alerts for every Sleeve DAG, sent through the configured notifier."""

from __future__ import annotations

import json
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


def notify_failure(context) -> None:
    """on_failure_callback: write the alert to the outbox (embedded default notifier)."""
    from sleeve.settings import get_settings

    alert = failure_alert(context)
    outbox = get_settings().outbox_dir / "alerts"
    outbox.mkdir(parents=True, exist_ok=True)
    name = f"{alert['dag_id']}.{alert['task_id']}.{alert['run_id']}.{alert['try_number']}.json".replace(":", "_")
    (outbox / name).write_text(json.dumps(alert, indent=2))
    log.error("Sleeve task failed: %s", alert)
