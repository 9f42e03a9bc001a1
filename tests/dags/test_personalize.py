"""The personalize DAG end to end with dag.test(): a request from the Params form is trained
and rendered through the real GPU-job subprocesses; a re-run does not retrain; a failing
request fails alone."""

import json

import pendulum

from training.dreambooth import submit_request
from training.photos import synthetic_photos

RUN_CONF = {"steps": 2, "num_class_images": 2, "num_images": 1, "image_steps": 2, "class_noun": "woman"}


def _stage(warehouse) -> list[dict]:
    return warehouse.query("SELECT stats, status FROM stage_runs WHERE dag_id = 'personalize' ORDER BY interval_start")


def test_personalize_form_request_then_rerun_with_a_failing_request(dagbag, warehouse, store):
    dag = dagbag.get_dag("personalize")
    uploads = []
    for i, data in enumerate(synthetic_photos(3, seed=21)):
        store.put_bytes(f"users/user-dag/uploads/{i}.jpg", data)
        uploads.append(store.uri(f"users/user-dag/uploads/{i}.jpg"))

    run = dag.test(logical_date=pendulum.datetime(2026, 11, 12, tz="UTC"),
                   run_conf={**RUN_CONF, "user_id": "user-dag", "photo_uris": uploads})
    assert str(run.state) == "success"
    done = warehouse.query("SELECT * FROM personalization_requests")
    assert len(done) == 1 and done[0]["status"] == "done" and done[0]["images"] == 1
    version = warehouse.query("SELECT * FROM model_versions WHERE kind = 'dreambooth'")
    assert len(version) == 1 and version[0]["user_id"] == "user-dag" and version[0]["alias"] is None
    assert warehouse.count("images") == 1
    assert warehouse.query("SELECT kind, status FROM generation_requests") == [{"kind": "personalize", "status": "done"}]
    stats = json.loads(_stage(warehouse)[0]["stats"])
    assert {k: stats[k] for k in ("requests", "trained", "failed", "images")} == \
        {"requests": 1, "trained": 1, "failed": 0, "images": 1}
    assert stats["gpu_seconds"] > 0
    photos = store.list("users/user-dag/photos/")
    assert len(photos) == 3 and store.list("users/user-dag/uploads/") == []

    # A second request whose photos vanish before training: it fails, the finished one is
    # neither retrained nor re-rendered.
    bad = submit_request(warehouse, store, "user-gone", synthetic_photos(3, seed=22))
    store.delete_prefix("users/user-gone/photos/")
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 13, tz="UTC"),
                   run_conf={**RUN_CONF, "user_id": "", "photo_uris": [],
                             "request_ids": [done[0]["request_id"], bad["request_id"]]})
    assert str(run.state) == "success"  # the summary (all_done) ran; the failing branch alone is red
    states = sorted((ti.task_id, ti.map_index, str(ti.state)) for ti in run.get_task_instances())
    assert states == [("collect_requests", -1, "success"), ("personalize_request", 0, "failed"),
                      ("personalize_request", 1, "success"), ("record_stats", -1, "success")] or \
        states == [("collect_requests", -1, "success"), ("personalize_request", 0, "success"),
                   ("personalize_request", 1, "failed"), ("record_stats", -1, "success")]
    rows = {r["request_id"]: r for r in warehouse.query("SELECT * FROM personalization_requests")}
    assert rows[done[0]["request_id"]]["updated_at"] == done[0]["updated_at"]  # untouched
    assert rows[bad["request_id"]]["status"] == "failed" and "no object at" in rows[bad["request_id"]]["reason"]
    assert rows[bad["request_id"]]["reason"].startswith("GpuJobError: GPU job training.personalize_job exited")
    assert warehouse.count("images") == 1 and warehouse.count("model_versions") == 1
    stage = _stage(warehouse)[1]
    assert stage["status"] == "failed"
    assert {k: json.loads(stage["stats"])[k] for k in ("requests", "trained", "failed", "images")} == \
        {"requests": 2, "trained": 1, "failed": 1, "images": 1}
