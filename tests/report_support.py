"""Test support for the weekly report: a fast private SLEEVE_HOME and a seeded week.

``sleeve_env`` migrates a fresh DuckDB per test (seconds on a busy machine); the report tests
copy one migrated file instead, so they stay well inside their time budget."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from types import SimpleNamespace

from sleeve.ids import stable_id

WEEK = datetime(2026, 1, 12, 3, tzinfo=UTC)
WEEK_END = WEEK + timedelta(days=7)


def png(color: str) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), color).save(buf, format="PNG")
    return buf.getvalue()


def seed_week(warehouse, store, week_start: datetime = WEEK) -> dict:
    """A small week: 2 songs, 3 requests, 4 images, 6 reviews (one out of range), stage runs,
    a training run, a promotion, a failure; plus one review in the previous week and rows just
    outside the window that must not count."""
    t = lambda hours: week_start + timedelta(hours=hours)  # noqa: E731
    songs = [{"song_id": f"s{i}", "source": "sample", "source_id": str(i), "title": title, "artist": "Demo Band",
              "first_seen_at": t(-100)} for i, title in enumerate(("Blue Night", "Sunrise <Remix> & Co"))]
    warehouse.upsert("songs", songs)
    requests = [{"request_id": f"r{i}", "song_id": f"s{i % 2}", "user_id": f"u{i % 2}", "kind": "user",
                 "num_images": 2, "status": "done", "created_at": t(i + 1)} for i in range(3)]
    requests.append({"request_id": "r-late", "song_id": "s0", "user_id": "u9", "created_at": week_start + timedelta(days=7)})
    warehouse.upsert("generation_requests", requests)
    images = []
    for i, (req, color) in enumerate((("r0", "red"), ("r0", "green"), ("r1", "blue"), ("r2", "yellow"))):
        key = f"images/{req}/{i}.png"
        store.put_bytes(key, png(color))
        images.append({"image_id": f"i{i}", "request_id": req, "image_index": i, "uri": store.uri(key),
                       "thumb_uri": store.uri(key), "model_version": "style-v1", "created_at": t(10 + i)})
    warehouse.upsert("images", images)
    reviews = [("i0", "u2", 5), ("i0", "u1", 4), ("i1", "u0", 2), ("i2", "u1", 5), ("i3", "u0", 3), ("i3", "u1", 9)]
    warehouse.upsert("reviews", [{"review_id": f"v{n}", "image_id": img, "user_id": user, "rating": rating,
                                  "created_at": t(20 + n)} for n, (img, user, rating) in enumerate(reviews)])
    warehouse.upsert("reviews", [{"review_id": "v-prev", "image_id": "i0", "user_id": "u0", "rating": 3,
                                  "created_at": t(-24)}])
    stage = lambda dag, name, stats, start_h, secs, status="success": {  # noqa: E731
        "dag_id": dag, "stage": name, "interval_start": t(start_h), "interval_end": t(start_h + 24),
        "status": status, "stats": json.dumps(stats), "started_at": t(start_h + 24),
        "finished_at": t(start_h + 24) + timedelta(seconds=secs)}
    warehouse.upsert("stage_runs", [
        stage("crawl_songs", "crawl:sample", {"fetched": 10, "new": 2, "updated": 1, "unchanged": 6,
                                              "quarantined": 1, "errors": 0}, 0, 12),
        stage("crawl_songs", "crawl:sample", {"fetched": 5, "new": 1, "errors": 2}, 24, 8),
        stage("label_songs", "label", {"songs": 3, "labelled": 3, "llm": 1, "offline": 2, "fallbacks": 1,
                                       "prompt_tokens": 120, "completion_tokens": 40, "cache_hits": 1}, 0, 3),
        stage("batch_generate", "generate", {"requests": 3, "images": 4, "failed": 0, "gpu_seconds": 40.5}, 0, 60),
        stage("personalize", "personalize", {"requests": 1, "trained": 0, "failed": 1, "gpu_seconds": 2}, 0, 5,
              "failed"),
        stage("crawl_songs", "crawl:sample", {"new": 99}, 24 * 7, 1),  # next week: not counted
    ])
    warehouse.upsert("training_runs", [{
        "run_id": stable_id("weekly_retrain", week_start.isoformat()), "kind": "style", "interval_start": week_start,
        "interval_end": week_start + timedelta(days=7), "status": "trained", "metrics": json.dumps({"clip": 0.31, "loss": 0.12}),
        "decision": "promote", "decision_reasons": json.dumps(["clip improved by 0.02"]), "model_version": "style-v2",
        "gpu_seconds": 300.0, "started_at": t(170), "finished_at": t(170) + timedelta(seconds=320)}])
    warehouse.upsert("model_versions", [
        {"version": "style-v1", "kind": "style", "alias": "archived", "status": "archived", "created_at": t(-200),
         "updated_at": t(150)},
        {"version": "style-v2", "kind": "style", "alias": "production", "status": "promoted",
         "metrics": json.dumps({"clip": 0.31}), "created_at": t(149), "updated_at": t(150)},
        {"version": "dreambooth-u0", "kind": "dreambooth", "alias": "production", "user_id": "u0",
         "created_at": t(151), "updated_at": t(151)},
    ])
    warehouse.upsert("task_failures", [
        {"dag_id": "personalize", "task_id": "train", "run_id": "scheduled__x", "try_number": n,
         "error": "RuntimeError", "failed_at": t(30)} for n in (1, 2)])
    return {"songs": songs, "images": images}


@cache
def _migrated_warehouse() -> Path:
    from sleeve.warehouse.duckdb_backend import DuckDBWarehouse

    path = Path(tempfile.mkdtemp(prefix="sleeve-report-tmpl-")) / "warehouse.duckdb"
    DuckDBWarehouse(path).migrate()
    return path


def make_report_env(tmp_path, monkeypatch) -> SimpleNamespace:
    """For a ``report_env`` fixture: settings / warehouse / store of a private, migrated SLEEVE_HOME (embedded defaults)."""
    from sleeve.settings import get_settings
    from sleeve.store import open_store
    from sleeve.warehouse import open_warehouse

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(_migrated_warehouse(), home / "warehouse.duckdb")
    monkeypatch.setenv("SLEEVE_HOME", str(home))
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    return SimpleNamespace(settings=settings, warehouse=open_warehouse(settings), store=open_store(settings.store_url))
