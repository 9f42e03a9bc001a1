"""The personalize DAG end to end with dag.test(): a request from the Params form goes through
class images, train, register, render and record as real GPU-job subprocesses; a render that
fails is retried on its own without retraining; a re-run does not retrain; a failing request
fails alone."""

import json
from datetime import timedelta

import pendulum
from sleeve_airflow import gpu

from training.dreambooth import submit_request
from training.photos import synthetic_photos

RUN_CONF = {"steps": 2, "num_class_images": 2, "num_images": 1, "image_steps": 2, "class_noun": "woman"}
STEPS = ("class_images", "train", "register", "render", "record")


def _stage(warehouse) -> list[dict]:
    return warehouse.query("SELECT stats, status FROM stage_runs WHERE dag_id = 'personalize' ORDER BY interval_start")


def _states(run) -> dict[tuple[str, int], str]:
    return {(ti.task_id, ti.map_index): str(ti.state) for ti in run.get_task_instances()}


def _branch(index: int, *states: str) -> dict[tuple[str, int], str]:
    return {(f"personalize_request.{step}", index): state for step, state in zip(STEPS, states, strict=True)}


def test_personalize_form_request_then_rerun_with_a_failing_request(dagbag, warehouse, store, monkeypatch):
    dag = dagbag.get_dag("personalize")
    for task in dag.tasks:  # retries as configured, without the minutes of waiting in between
        task.retry_delay = timedelta(0)
    uploads = []
    for i, data in enumerate(synthetic_photos(3, seed=21)):
        store.put_bytes(f"users/user-dag/uploads/{i}.jpg", data)
        uploads.append(store.uri(f"users/user-dag/uploads/{i}.jpg"))

    # The first render's GPU job dies (say, out of memory): render alone is retried.
    launched, real_run_gpu_job = [], gpu.run_gpu_job

    def flaky_run_gpu_job(module, **kwargs):
        first_render = "/personalize/" in kwargs["output_uri"] and "failed" not in launched
        launched.append("failed" if first_render else module)
        if first_render:
            raise gpu.GpuJobError("GPU job inference.generate_job exited with code 137")
        return real_run_gpu_job(module, **kwargs)

    monkeypatch.setattr(gpu, "run_gpu_job", flaky_run_gpu_job)
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 12, tz="UTC"),
                   run_conf={**RUN_CONF, "user_id": "user-dag", "photo_uris": uploads})
    assert str(run.state) == "success"
    assert _states(run) == {("collect_requests", -1): "success", ("record_stats", -1): "success",
                            **_branch(0, *["success"] * 5)}
    tries = {ti.task_id.rsplit(".", 1)[-1]: ti.try_number for ti in run.get_task_instances()}
    assert tries["render"] == 2 and tries["train"] == 1  # the retried render did not retrain
    assert launched == ["inference.generate_job", "training.personalize_job", "failed", "inference.generate_job"]
    monkeypatch.undo()
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
    # neither retrained nor re-rendered. (Same class noun: its class images come from the cache.)
    bad = submit_request(warehouse, store, "user-gone", synthetic_photos(3, seed=22), "woman")
    store.delete_prefix("users/user-gone/photos/")
    run = dag.test(logical_date=pendulum.datetime(2026, 11, 13, tz="UTC"),
                   run_conf={**RUN_CONF, "user_id": "", "photo_uris": [],
                             "request_ids": [done[0]["request_id"], bad["request_id"]]})
    assert str(run.state) == "success"  # the summary (all_done) ran; the failing branch alone is red
    done_index, bad_index = (0, 1) if done[0]["request_id"] < bad["request_id"] else (1, 0)
    assert _states(run) == {
        ("collect_requests", -1): "success", ("record_stats", -1): "success",
        **_branch(done_index, *["skipped"] * 5),  # finished: neither retrained nor re-rendered
        **_branch(bad_index, "success", "failed", "upstream_failed", "upstream_failed", "upstream_failed")}
    rows = {r["request_id"]: r for r in warehouse.query("SELECT * FROM personalization_requests")}
    assert rows[done[0]["request_id"]]["updated_at"] == done[0]["updated_at"]  # untouched
    assert rows[bad["request_id"]]["status"] == "failed" and "no object at" in rows[bad["request_id"]]["reason"]
    assert rows[bad["request_id"]]["reason"].startswith("GpuJobError: GPU job training.personalize_job exited")
    assert warehouse.count("images") == 1 and warehouse.count("model_versions") == 1
    stage = _stage(warehouse)[1]
    assert stage["status"] == "failed"
    assert {k: json.loads(stage["stats"])[k] for k in ("requests", "trained", "failed", "images")} == \
        {"requests": 2, "trained": 1, "failed": 1, "images": 1}
