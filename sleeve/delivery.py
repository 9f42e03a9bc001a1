"""Delivering the weekly report and failure alerts exactly once, whatever carries them, losing nothing.

Everything is written to the outbox (``$SLEEVE_HOME/outbox``) first: the rendered report under
``weekly_report/<week>/`` with its ``reports`` row marked ``pending``, each alert as
``alerts/<dag>.<task>.<run>.<try>.json`` marked pending. Then the sender carries it, and only a
post that succeeded marks it ``delivered``. A post that fails leaves it pending and raises (the
task retries); every later delivery (:func:`deliver_pending`: the next report run, the next
alert) first sends what is still pending, oldest first.

The carrier is a *sender* with a ``transport`` name and a few verbs:

- ``outbox`` (embedded default): :class:`Outbox` itself; writing the files is the delivery;
- ``bot`` (a Slack bot token): ``channel``, ``post``, ``update``, ``upload``, ``delete_file``;
- ``webhook`` (a Slack Incoming Webhook, which can neither edit nor upload): ``send``.

Exactly once: one ``reports`` row per week; the bot message's ``ts`` is kept as soon as it is
posted, so a re-run (or a retry after a failed upload) updates that message instead of posting
again and re-uploads only images whose content changed; a webhook never posts a delivered week
again. An alert is claimed (an exclusive lock file) before it is sent, so two processes flushing
the outbox at once never post it twice.

A rendered report (``sleeve.report_render.render``) names its PNGs in image blocks by file name
(``"image_url": "ratings.png"``); the bot replaces them with the files it uploaded into the
message's thread, a webhook (which cannot upload) leaves them out.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Protocol

from sleeve.ids import sha256_bytes

log = logging.getLogger(__name__)

PENDING, DELIVERED = "pending", "delivered"
STALE_CLAIM_S = 600  # a claim older than this was left by a process that died: take it over


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


class ImagesRejected(RuntimeError):
    """The bot sender raises this when Slack refused the message's image blocks (the images stay
    in the thread); any other error means the message itself was not updated."""


def utcnow() -> datetime:
    """The time of a delivery or failure (an event time, never a key or a window)."""
    return datetime.now(UTC)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _safe_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


class Outbox:
    """Files under the outbox folder: the copy of every report and alert, and the embedded sender."""

    transport = "outbox"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- reports ---------------------------------------------------------------------------

    def report_folder(self, week_start: str) -> Path:
        return self.root / "weekly_report" / week_start[:10]

    def write_report(self, rendered: dict) -> Path:
        """``weekly_report/<week>/``: Markdown, Block Kit JSON and the PNGs; a re-run replaces them."""
        folder = self.report_folder(rendered["week_start"])
        for name, data in rendered["images"].items():
            _write_atomic(folder / name, data)
        for stale in folder.glob("*.png"):
            if stale.name not in rendered["images"]:
                stale.unlink()
        _write_atomic(folder / "report.md", rendered["markdown"].encode())
        message = {k: rendered[k] for k in ("title", "week_start", "week_end", "text", "blocks")}
        _write_atomic(folder / "report.blocks.json", json.dumps(message, indent=2, ensure_ascii=False).encode())
        log.info("weekly report written to %s", folder)
        return folder

    def read_report(self, week_start: str) -> dict | None:
        """The rendered report as :meth:`write_report` stored it, or None if its files are gone."""
        folder = self.report_folder(week_start)
        try:
            message = json.loads((folder / "report.blocks.json").read_text())
            markdown = (folder / "report.md").read_text()
        except (OSError, ValueError):
            return None
        return {**message, "markdown": markdown, "images": {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}}

    # -- alerts ----------------------------------------------------------------------------

    def alert_path(self, alert: dict) -> Path:
        name = f"{alert['dag_id']}.{alert['task_id']}.{alert['run_id']}.{alert['try_number']}.json"
        return self.root / "alerts" / _safe_name(name)

    def write_alert(self, alert: dict, status: str = PENDING) -> Path:
        """``alerts/<dag>.<task>.<run>.<try>.json``: one file per task try (a re-delivered
        callback rewrites it; one already delivered stays delivered)."""
        path = self.alert_path(alert)
        stored = self._read(path)
        if stored and stored.get("delivery", {}).get("status") == DELIVERED:
            return path
        _write_atomic(path, json.dumps({**alert, "delivery": {"status": status}}, indent=2).encode())
        return path

    def pending_alerts(self) -> list[Path]:
        folder = self.root / "alerts"
        paths = sorted(folder.glob("*.json"), key=lambda p: (p.stat().st_mtime, p.name)) if folder.is_dir() else []
        return [p for p in paths if (self._read(p) or {}).get("delivery", {}).get("status") != DELIVERED]

    def mark_alert(self, path: Path, **delivery) -> None:
        stored = self._read(path) or {}
        _write_atomic(path, json.dumps({**stored, "delivery": delivery}, indent=2).encode())

    def claim(self, path: Path) -> Path | None:
        """An exclusive claim on ``path`` (a lock file beside it), or None if another process holds one."""
        lock = path.with_name(f".{path.name}.sending")
        for _ in range(2):
            try:
                os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                return lock
            except FileExistsError:
                try:
                    if time.time() - lock.stat().st_mtime < STALE_CLAIM_S:
                        return None
                    lock.unlink()
                except FileNotFoundError:
                    pass
        return None

    @staticmethod
    def _read(path: Path) -> dict | None:
        try:
            value = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None


Sender = Outbox | BotSender | WebhookSender


# -- the weekly report ---------------------------------------------------------------------

def _report_row(warehouse, week_start: date) -> dict:
    found = warehouse.query("SELECT * FROM reports WHERE week_start = @w", {"w": week_start})
    return found[0] if found else {}


def _delivered(row: dict) -> bool:
    return bool(row) and row.get("status") in (DELIVERED, None)  # NULL: a row from before pending existed


def deliver_report(warehouse, outbox: Outbox, sender: Sender, rendered: dict, summary: dict) -> dict:
    """Write the rendered report to the outbox and its ``reports`` row (pending); send what
    earlier deliveries left pending (reports of other weeks, alerts); then send this one and mark
    it delivered. Raises the first error after trying everything. Returns the reports row."""
    week_start = date.fromisoformat(rendered["week_start"][:10])
    previous = _report_row(warehouse, week_start)
    folder = outbox.write_report(rendered)
    row = {
        "week_start": week_start, "week_end": date.fromisoformat(rendered["week_end"][:10]),
        "summary": json.dumps(summary, sort_keys=True, default=str), "transport": sender.transport,
        "outbox_uri": folder.as_uri(), "status": PENDING,
    }
    warehouse.upsert("reports", [row])  # from here on the report is kept, whatever happens to the post
    error = None
    try:
        deliver_pending(warehouse, outbox, sender, skip_week=rendered["week_start"])
    except Exception as exc:  # an older report or alert still pending must not hold this one back
        error = exc
    _send_report(warehouse, sender, rendered, {**previous, **row}, previous)
    if error is not None:
        raise error
    return _report_row(warehouse, week_start)


def _send_report(warehouse, sender: Sender, rendered: dict, row: dict, previous: dict) -> None:
    if sender.transport == "bot":
        _send_bot(warehouse, sender, rendered, row, previous)
    elif sender.transport == "webhook":
        if previous.get("transport") == "webhook" and _delivered(previous):
            # An Incoming Webhook cannot edit a message: posting again would duplicate it.
            log.info("report for %s already posted by webhook; not posting again", rendered["week_start"][:10])
        else:
            sender.send(rendered["text"], with_images(rendered["blocks"], {}))
    now = utcnow()
    warehouse.upsert("reports", [{"week_start": row["week_start"], "status": DELIVERED, "delivered_at": now,
                                  "posted_at": previous.get("posted_at") or now}])


def _send_bot(warehouse, sender: BotSender, rendered: dict, row: dict, previous: dict) -> None:
    week = row["week_start"]
    ts = previous.get("message_ts") if previous.get("channel") == sender.channel else None
    if not ts:
        ts = sender.post(rendered["text"], with_images(rendered["blocks"], {}))
        # Keep the ts before uploading anything: a retry after a later failure must update, not re-post.
        warehouse.upsert("reports", [{"week_start": week, "channel": sender.channel, "message_ts": ts, "files": None}])
        log.info("posted the weekly report for %s", week)
        files = {}
    else:
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
        # Each upload is recorded at once: a retry skips it.
        warehouse.upsert("reports", [{"week_start": week, "files": json.dumps(files, sort_keys=True)}])
    blocks = with_images(rendered["blocks"], {name: {"slack_file": {"id": f["id"]}} for name, f in files.items()})
    try:
        sender.update(ts, rendered["text"], blocks)
    except ImagesRejected:
        log.warning("Slack refused the image blocks for %s; the images stay in the message's thread", week)
        sender.update(ts, rendered["text"], with_images(rendered["blocks"], {}))
    log.info("weekly report message for %s now carries %d image(s)", week, len(files))


def with_images(blocks: list[dict], refs: dict[str, dict]) -> list[dict]:
    """The blocks with each image block naming a PNG by file name pointed at ``refs[name]``
    (e.g. ``{"slack_file": {"id": ...}}``), or left out when there is no such ref."""
    out = []
    for block in blocks:
        if block.get("type") == "image" and "://" not in block.get("image_url", "://"):
            ref = refs.get(block["image_url"])
            if ref is None:
                continue
            block = {k: v for k, v in block.items() if k != "image_url"} | ref
        out.append(block)
    return out


# -- alerts --------------------------------------------------------------------------------

def alert_text(alert: dict) -> str:
    """The alert as a Slack message (mrkdwn: every stored string escaped)."""
    from sleeve.report_render import mrkdwn

    reason = f" ({mrkdwn(alert['reason'], 1000)})" if alert.get("reason") else ""
    return (f":red_circle: Sleeve task failed: {mrkdwn(alert['dag_id'])}.{mrkdwn(alert['task_id'])} "
            f"(run {mrkdwn(alert['run_id'])}, try {alert['try_number']}, interval end "
            f"{mrkdwn(alert['data_interval_end'])}): {mrkdwn(alert['error'] or 'error')}{reason}")


def send_alert(outbox: Outbox, sender: Sender | None, alert: dict) -> Path:
    """A failure alert (``sleeve_airflow.callbacks.failure_alert``): written to the outbox first,
    then, with a Slack sender, posted together with any alert still pending. ``sender`` None:
    Slack is configured but cannot be used now; the alert waits in the outbox."""
    if sender is None or sender.transport == "outbox":
        path = outbox.write_alert(alert, status=PENDING if sender is None else DELIVERED)
        return path
    path = outbox.write_alert(alert)
    _send_alerts(outbox, sender)
    return path


def _send_alerts(outbox: Outbox, sender: Sender) -> int:
    """Post every pending alert, oldest first; returns how many were posted. Raises the first
    error after trying them all."""
    sent, errors = 0, []
    for path in outbox.pending_alerts():
        lock = outbox.claim(path)
        if lock is None:
            continue  # another process is sending it
        try:
            alert = outbox._read(path)
            if alert is None or alert.get("delivery", {}).get("status") == DELIVERED:
                continue
            text = alert_text(alert)
            if sender.transport == "outbox":
                outbox.mark_alert(path, status=DELIVERED, transport="outbox", delivered_at=utcnow().isoformat())
                continue
            ts = sender.send(text) if sender.transport == "webhook" else sender.post(text)
            outbox.mark_alert(path, status=DELIVERED, transport=sender.transport, ts=ts,
                              delivered_at=utcnow().isoformat())
            sent += 1
        except Exception as exc:
            errors.append(exc)
            log.error("alert %s is still pending: %s", path.name, type(exc).__name__)
        finally:
            lock.unlink(missing_ok=True)
    if errors:
        raise errors[0]
    return sent


def deliver_pending(warehouse, outbox: Outbox, sender: Sender, *, skip_week: str | None = None) -> dict:
    """Send every report (other than ``skip_week``'s) and alert still pending in the outbox,
    oldest first. Raises the first error after trying them all; returns what was sent."""
    errors, reports = [], 0
    pending = warehouse.query("SELECT * FROM reports WHERE status = @s ORDER BY week_start", {"s": PENDING})
    for row in pending:
        week = row["week_start"].isoformat()
        if week == (skip_week or "")[:10]:
            continue
        rendered = outbox.read_report(week)
        if rendered is None:
            log.error("report for %s is pending but its outbox copy is gone; re-run weekly_report for that week", week)
            continue
        try:
            _send_report(warehouse, sender, rendered, {**row, "transport": sender.transport}, row)
            warehouse.upsert("reports", [{"week_start": row["week_start"], "transport": sender.transport}])
            reports += 1
        except Exception as exc:
            errors.append(exc)
            log.error("report for %s is still pending: %s", week, type(exc).__name__)
    try:
        alerts = _send_alerts(outbox, sender)
    except Exception as exc:
        errors.append(exc)
        alerts = 0
    if errors:
        raise errors[0]
    return {"reports": reports, "alerts": alerts}
