"""batch_generate through dag.test(): pending requests -> images with lineage, exactly once;
bad requests fail alone with a reason; a backfill renders old songs with the production model."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pendulum
import pytest

from sleeve.ids import stable_id
from tests.conftest import tiny_model_dir

DAY = pendulum.datetime(2026, 1, 13, 2, tz="UTC")  # run for the interval [Jan 12 02:00, Jan 13 02:00)
IN_INTERVAL = datetime(2026, 1, 12, 12, tzinfo=UTC)


def _seed(warehouse):
    warehouse.upsert("prompts", [
        {"prompt_id": f"p{i}", "song_id": f"s{i}", "prompt_version": "p1", "labeller_version": "offline-1",
         "positive": f"album cover of {what}, film grain", "negative": "text, lettering", "created_at": IN_INTERVAL}
        for i, what in enumerate(["a blue ocean at night", "neon city rain", "a red heart"])
    ] + [{"prompt_id": "p-empty", "song_id": "s9", "prompt_version": "p1", "positive": "", "created_at": IN_INTERVAL}])

    def req(rid, prompt_id, **extra):
        return {"request_id": rid, "song_id": prompt_id.replace("p", "s"), "prompt_id": prompt_id, "user_id": "u1",
                "kind": "user", "num_images": 2, "status": "pending", "created_at": IN_INTERVAL,
                "updated_at": IN_INTERVAL, **extra}

    warehouse.upsert("generation_requests", [
        req("ok-1", "p0"), req("ok-2", "p1", kind="demo", width=128),
        req("empty", "p-empty"), req("no-prompt", "p-missing"), req("unknown-model", "p2", model_version="v404"),
        req("bad-size", "p2", width=100),
        req("later", "p2", created_at=datetime(2026, 1, 13, 5, tzinfo=UTC)),  # after the interval
        req("personal", "p2", kind="personalize"),  # left to the personalize DAG
    ])


def _state(warehouse):
    return {t: warehouse.query(f"SELECT * FROM {t} ORDER BY 1") for t in ("images", "generation_requests")}


def test_pending_requests_become_images_exactly_once(dagbag, warehouse, store):
    _seed(warehouse)
    dag = dagbag.get_dag("batch_generate")
    assert dag.get_task("generate").pool == "gpu"  # the pool's slots (SLEEVE_GPU_SLOTS at set-up) bound GPU jobs
    run = dag.test(logical_date=DAY)
    assert run.state == "success"

    status = {r["request_id"]: r for r in warehouse.query("SELECT * FROM generation_requests")}
    assert {k: v["status"] for k, v in status.items()} == {
        "ok-1": "done", "ok-2": "done", "empty": "failed", "no-prompt": "failed", "unknown-model": "failed",
        "bad-size": "failed", "later": "pending", "personal": "pending"}
    assert status["empty"]["reason"] == "empty prompt"
    assert "'p-missing' not found" in status["no-prompt"]["reason"]
    assert status["unknown-model"]["reason"] == "unknown model version 'v404'"
    assert "unsupported size 100x64" in status["bad-size"]["reason"]
    assert status["ok-1"]["model_version"] == "base"  # "production at generation time", pinned

    images = warehouse.query("SELECT * FROM images ORDER BY request_id, image_index")
    assert [(i["request_id"], i["image_index"]) for i in images] == [("ok-1", 0), ("ok-1", 1), ("ok-2", 0), ("ok-2", 1)]
    for image in images:
        assert image["image_id"] == stable_id(image["request_id"], image["image_index"], "base")
        assert image["model_version"] == "base" and image["prompt_version"] == "p1" and image["seed"] > 0
        assert image["manifest_uri"].startswith(store.url + "/generate/manifests/")
        assert store.exists(image["uri"][len(store.url) + 1:]) and store.exists(image["thumb_uri"][len(store.url) + 1:])
        assert image["created_at"] == IN_INTERVAL
    assert {i["width"] for i in images if i["request_id"] == "ok-2"} == {128}

    stage = warehouse.query("SELECT * FROM stage_runs WHERE dag_id = 'batch_generate'")
    assert len(stage) == 1 and stage[0]["stage"] == "generate"
    assert stage[0]["interval_start"] == pendulum.datetime(2026, 1, 12, 2, tz="UTC")
    stats = json.loads(stage[0]["stats"])
    assert {k: stats[k] for k in ("requests", "images", "failed", "skipped_existing")} == {
        "requests": 6, "images": 4, "failed": 4, "skipped_existing": 0}
    assert stats["gpu_seconds"] > 0

    # Re-running the interval: same rows, same objects; the shard finds its images stored.
    before, objects = _state(warehouse), store.list("images/")
    assert dag.test(logical_date=DAY).state == "success"
    assert _state(warehouse) == before and store.list("images/") == objects
    stats = json.loads(warehouse.query("SELECT stats FROM stage_runs WHERE dag_id = 'batch_generate'")[0]["stats"])
    assert stats["images"] == 4 and stats["skipped_existing"] == 4

    # The next day's run takes the request created after the first interval, and nothing else.
    assert dag.test(logical_date=DAY.add(days=1)).state == "success"
    assert warehouse.query("SELECT status FROM generation_requests WHERE request_id = 'later'")[0]["status"] == "done"
    assert warehouse.count("images") == 6


def test_backfill_regenerates_songs_with_the_production_model(dagbag, warehouse, store, tiny_model):
    from sleeve.registry import promote, register
    from tests.inference.loras import make_lora

    _seed(warehouse)
    make_lora(tiny_model, Path(store.url.removeprefix("file://")) / "models" / "style-v1", seed=5)
    register(warehouse, version="style-v1", kind="style", base_model=str(tiny_model),
             adapter_uri=store.uri("models/style-v1"), manifest_uri="", metrics={}, training_run_id="t1")
    promote(warehouse, "style-v1")

    dag = dagbag.get_dag("batch_generate")
    conf = {"mode": "backfill", "backfill_from": "2026-01-12", "backfill_to": "2026-01-13", "num_images": 1,
            "kinds": ["backfill"]}
    assert dag.test(logical_date=DAY.add(days=7), run_conf=conf).state == "success"
    backfill = warehouse.query("SELECT * FROM generation_requests WHERE kind = 'backfill' ORDER BY song_id")
    # The songs requested in the range that have a prompt; two songs have none and are counted.
    assert [(r["song_id"], r["status"]) for r in backfill] == [("s0", "done"), ("s1", "done"), ("s2", "done")]
    assert {r["model_version"] for r in backfill} == {"style-v1"}
    images = warehouse.query("SELECT * FROM images")
    assert len(images) == 3 and {i["model_version"] for i in images} == {"style-v1"}
    stats = json.loads(warehouse.query("SELECT stats FROM stage_runs WHERE dag_id = 'batch_generate'")[0]["stats"])
    assert stats["backfill_created"] == 3 and stats["backfill_no_prompt"] == 2 and stats["images"] == 3

    before = _state(warehouse)
    assert dag.test(logical_date=DAY.add(days=7), run_conf=conf).state == "success"
    assert _state(warehouse) == before


def test_backfill_without_range_or_songs_is_rejected(warehouse):
    # Checked in the plan task before anything is written (tested directly: a failing dag.test
    # would sit through the task's retry delays).
    from inference.shards import create_backfill

    with pytest.raises(ValueError, match="date range .* or song_ids"):
        create_backfill(warehouse, created_at=IN_INTERVAL)
    assert warehouse.count("generation_requests") == 0


@pytest.mark.parametrize("name,bad", [("mode", "everything"), ("format", "gif"), ("shard_size", 0)])
def test_params_are_validated(dagbag, name, bad):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError):
        dagbag.get_dag("batch_generate").params.get_param(name).resolve(bad)


def test_a_failed_shard_loses_nothing_else(dagbag, warehouse, store):
    # Observed: `record` (trigger rule none_failed) was skipped when one shard failed, so the
    # images the other shards had made were never recorded.
    from sleeve.registry import register

    _seed(warehouse)
    corrupt = Path(store.url.removeprefix("file://")) / "models" / "broken-v1"
    corrupt.mkdir(parents=True)
    (corrupt / "pytorch_lora_weights.safetensors").write_bytes(b"\x00\x01 not a safetensors file" * 40)
    register(warehouse, version="broken-v1", kind="style", base_model=str(tiny_model_dir()),
             adapter_uri=store.uri("models/broken-v1"), manifest_uri="", metrics={}, training_run_id="t1")
    warehouse.upsert("generation_requests", [
        {"request_id": "on-broken", "song_id": "s2", "prompt_id": "p2", "user_id": "u1", "kind": "user",
         "num_images": 1, "model_version": "broken-v1", "status": "pending", "created_at": IN_INTERVAL,
         "updated_at": IN_INTERVAL}])
    dag = dagbag.get_dag("batch_generate")
    dag.get_task("generate").retries = 0  # the retries are Airflow's; this test is about what record keeps

    run = dag.test(logical_date=DAY)
    assert run.state == "failed"  # the failure shows ...
    states = {ti.task_id: ti.state for ti in run.get_task_instances() if ti.task_id != "generate"}
    assert states == {"plan": "success", "record": "success", "shards_ok": "failed"}
    status = {r["request_id"]: r for r in warehouse.query("SELECT * FROM generation_requests")}
    # ... and the other shard's images are recorded,
    assert status["ok-1"]["status"] == status["ok-2"]["status"] == "done"
    assert warehouse.count("images") == 4
    # while the broken shard's request waits for the next run, with the job's reason.
    broken = status["on-broken"]
    assert broken["status"] == "pending" and broken["reason"].startswith("shard failed, retried next run: ")
    assert "broken-v1" in broken["reason"] and "cannot be loaded" in broken["reason"]
    stage = warehouse.query("SELECT status, stats FROM stage_runs WHERE dag_id = 'batch_generate'")[0]
    assert stage["status"] == "failed" and json.loads(stage["stats"])["failed_shards"] == 1
