"""weekly_retrain through dag.test(): snapshot -> train -> evaluate -> gate -> registry, once per
interval; a week with too little data is skipped with a reason."""

from __future__ import annotations

import json

import pendulum

from tests.training.conftest import WEEK_START, seed_world
from training.weekly import run_id_for

WEEK_RUN = pendulum.datetime(2026, 1, 12, 3, tz="UTC")  # interval [Jan 5 03:00, Jan 12 03:00)


def _state(warehouse):
    return {t: warehouse.query(f"SELECT * FROM {t} ORDER BY 1") for t in ("training_runs", "model_versions")}


def test_weekly_retrain_trains_gates_registers_once(dagbag, warehouse, store):
    from sleeve.registry import production_version
    from sleeve.store import open_uri, read_json

    seed_world(warehouse, store)
    dag = dagbag.get_dag("weekly_retrain")
    assert dag.test(logical_date=WEEK_RUN, run_conf={"steps": 4}).state == "success"

    run = warehouse.query("SELECT * FROM training_runs")[0]
    assert run["run_id"] == run_id_for(WEEK_START) and run["status"] == "trained"
    assert run["decision"] in ("promote", "keep") and json.loads(run["decision_reasons"])
    assert run["gpu_seconds"] > 0
    metrics = json.loads(run["metrics"])
    assert {"val_loss", "brightness"} <= set(metrics["challenger"]) and metrics["steps"] == 4
    # the gate's val loss is on held-out images the challenger never trained on
    manifest = read_json(*open_uri(run["manifest_uri"]))
    split = manifest["split"]
    assert metrics["val_split"] == "val" and metrics["val_images"] == split["val"] >= 1
    assert metrics["train_examples"] == split["train"] == manifest["counts"]["examples"] - split["val"]
    assert any("held-out" in n for n in metrics["notes"])
    version = warehouse.query("SELECT * FROM model_versions WHERE version = @v", {"v": run["model_version"]})[0]
    assert version["training_run_id"] == run["run_id"]
    prod = production_version(warehouse)
    if run["decision"] == "promote":
        assert prod["version"] == run["model_version"] and version["alias"] == "production"
    else:
        assert prod is None and version["status"] == "rejected"
    adapter_key = version["adapter_uri"][len(store.url) + 1:]
    assert store.exists(f"{adapter_key}/pytorch_lora_weights.safetensors")
    assert store.exists(f"{adapter_key}/README.md") and store.exists(f"{adapter_key}/lora_kohya.safetensors")
    assert store.exists(f"evals/style/{run['model_version']}/contact_sheet.png")

    before = _state(warehouse)
    assert dag.test(logical_date=WEEK_RUN, run_conf={"steps": 4}).state == "success"
    assert _state(warehouse) == before  # re-running a completed interval trains nothing


def test_too_little_data_is_skipped_with_reason(dagbag, warehouse, store):
    dag = dagbag.get_dag("weekly_retrain")
    assert dag.test(logical_date=WEEK_RUN).state == "success"
    run = warehouse.query("SELECT * FROM training_runs")[0]
    assert run["status"] == "skipped" and "fewer than min_examples" in run["reason"]
    assert warehouse.count("model_versions") == 0


def test_failed_training_is_recorded(dagbag, warehouse, store):
    seed_world(warehouse, store)
    dag = dagbag.get_dag("weekly_retrain")
    for t in dag.tasks:
        t.retries = 0  # the retry delay would only slow the test down
    run = dag.test(logical_date=WEEK_RUN, run_conf={"base_model": "/nonexistent/model"})
    assert run.state == "failed"
    row = warehouse.query("SELECT * FROM training_runs")[0]
    assert row["status"] == "failed" and row["reason"].startswith("train failed: GpuJobError")
    # The real on_failure_callback ran: one task_failures row and an alert through the notifier.
    failures = warehouse.query("SELECT dag_id, task_id, error FROM task_failures")
    assert failures == [{"dag_id": "weekly_retrain", "task_id": "train", "error": "GpuJobError"}]
    from sleeve.settings import get_settings

    alerts = [p.read_text() for p in get_settings().outbox_dir.rglob("*") if p.is_file()]
    assert any("weekly_retrain" in a and "train" in a for a in alerts)
