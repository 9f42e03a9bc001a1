"""Delivering the weekly report and failure alerts exactly once, whatever carries them.

The carrier is a *sender* with a ``transport`` name and a few verbs:

- ``outbox`` (embedded default): :class:`Outbox`, files under ``$SLEEVE_HOME/outbox``;
- ``bot`` (a Slack bot token): ``channel``, ``post``, ``update``, ``upload``, ``delete_file``;
- ``webhook`` (a Slack Incoming Webhook, which can neither edit nor upload): ``send``.

The Airflow side hands in the Slack sender (``sleeve_airflow.notifier``); the policy is here:
one ``reports`` row per week, the message ``ts`` kept as soon as the message is posted, so a
re-run (or a retry after a failed upload) calls ``update`` instead of posting again and
re-uploads only images whose content changed; a webhook never posts the same week twice.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

from sleeve.ids import sha256_bytes

log = logging.getLogger(__name__)


class BotSender(Protocol):
    transport: str  # "bot"
    channel: str

    def post(self, text: str, blocks: list | None = None) -> str: ...  # returns the message ts
    def update(self, ts: str, text: str, blocks: list | None = None) -> None: ...
    def upload(self, *, thread_ts: str, filename: str, content: bytes, title: str) -> str: ...  # file id
    def delete_file(self, file_id: str) -> bool: ...  # False if it was already gone


class WebhookSender(Protocol):
    transport: str  # "webhook"

    def send(self, text: str, blocks: list | None = None) -> None: ...


def utcnow() -> datetime:
    """The time of a delivery or failure (an event time, never a key or a window)."""
    return datetime.now(UTC)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Outbox:
    """The embedded sender: the report and alerts as files, readable without Slack."""

    transport = "outbox"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def write_report(self, rendered: dict) -> Path:
        """``weekly_report/<week>/``: Markdown, Block Kit JSON and the PNGs; a re-run replaces them."""
        folder = self.root / "weekly_report" / rendered["week_start"][:10]
        _write_atomic(folder / "report.md", rendered["markdown"].encode())
        blocks = {"text": rendered["text"], "blocks": rendered["blocks"]}
        _write_atomic(folder / "report.blocks.json", json.dumps(blocks, indent=2, ensure_ascii=False).encode())
        for stale in folder.glob("*.png"):
            if stale.name not in rendered["images"]:
                stale.unlink()
        for name, data in rendered["images"].items():
            _write_atomic(folder / name, data)
        log.info("weekly report written to %s", folder)
        return folder

    def write_alert(self, alert: dict) -> Path:
        """``alerts/<dag>.<task>.<run>.<try>.json``: one file per task try."""
        name = f"{alert['dag_id']}.{alert['task_id']}.{alert['run_id']}.{alert['try_number']}.json"
        path = self.root / "alerts" / "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        _write_atomic(path, json.dumps(alert, indent=2).encode())
        return path


def deliver_report(warehouse, sender: Outbox | BotSender | WebhookSender, rendered: dict, summary: dict) -> dict:
    """Deliver a rendered report (``sleeve.report_render.render``) once per week and record it
    in ``reports``. Returns the reports row."""
    week_start = date.fromisoformat(rendered["week_start"][:10])
    found = warehouse.query("SELECT * FROM reports WHERE week_start = @w", {"w": week_start})
    previous = found[0] if found else {}
    row = {
        "week_start": week_start, "week_end": date.fromisoformat(rendered["week_end"][:10]),
        "summary": json.dumps(summary, sort_keys=True, default=str), "transport": sender.transport,
        "posted_at": previous.get("posted_at") or utcnow(),  # first delivery; kept on re-runs
    }
    if sender.transport == "outbox":
        row["outbox_uri"] = sender.write_report(rendered).as_uri()
    elif sender.transport == "webhook":
        _send_webhook(sender, rendered, previous)
    else:
        _send_bot(warehouse, sender, rendered, previous, row)
    warehouse.upsert("reports", [row])
    return row


def _send_webhook(sender: WebhookSender, rendered: dict, previous: dict) -> None:
    if previous.get("transport") == "webhook":
        # An Incoming Webhook cannot edit a message: posting again would duplicate it.
        log.info("report for %s already posted by webhook; not posting again", rendered["week_start"][:10])
        return
    sender.send(rendered["text"], rendered["blocks"])


def _send_bot(warehouse, sender: BotSender, rendered: dict, previous: dict, row: dict) -> None:
    row["channel"] = sender.channel
    ts = previous.get("message_ts") if previous.get("channel") == sender.channel else None
    if ts:
        sender.update(ts, rendered["text"], rendered["blocks"])
        log.info("updated the weekly report message for %s", rendered["week_start"][:10])
    else:
        ts = sender.post(rendered["text"], rendered["blocks"])
        # Keep the ts before uploading anything: a retry after a later failure must update, not re-post.
        warehouse.upsert("reports", [{**row, "message_ts": ts, "files": None}])
        log.info("posted the weekly report for %s", rendered["week_start"][:10])
    row["message_ts"] = ts
    files = json.loads(previous.get("files") or "{}") if previous.get("message_ts") == ts else {}
    for name, data in rendered["images"].items():
        digest = sha256_bytes(data)
        if files.get(name, {}).get("sha256") == digest:
            continue
        if name in files:
            sender.delete_file(files[name]["id"])
        file_id = sender.upload(thread_ts=ts, filename=name, content=data,
                                title=f"{rendered['title']}: {name.removesuffix('.png')}")
        files[name] = {"id": file_id, "sha256": digest}
        row["files"] = json.dumps(files, sort_keys=True)
        warehouse.upsert("reports", [row])  # each upload is recorded at once: a retry skips it
    row["files"] = json.dumps(files, sort_keys=True)


def send_alert(sender: Outbox | BotSender | WebhookSender, alert: dict) -> None:
    """A failure alert (``sleeve_airflow.callbacks.failure_alert``): a JSON file in the outbox,
    or a short Slack message."""
    if sender.transport == "outbox":
        sender.write_alert(alert)
        return
    text = (f":red_circle: Sleeve task failed: {alert['dag_id']}.{alert['task_id']} "
            f"(run {alert['run_id']}, try {alert['try_number']}, interval end {alert['data_interval_end']}): "
            f"{alert['error'] or 'error'}")
    if sender.transport == "webhook":
        sender.send(text)
    else:
        sender.post(text)
