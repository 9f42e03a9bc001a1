"""weekly_retrain through dag.test(): snapshot -> train -> evaluate -> gate -> registry, once per
interval; a week with too little data is skipped with a reason."""

from __future__ import annotations

import json

import pendulum

from tests.training.conftest import WEEK_START, seed_world
from training.gate import GateRules
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
    # The small world holds out a few images only: the gate cannot resolve a difference and keeps
    # the base, saying so with the per-source counts; the measured effect is still recorded.
    metrics = json.loads(run["metrics"])
    reasons = json.loads(run["decision_reasons"])
    val_images = metrics["val_images"]
    by_source = metrics["val_by_source"]
    floor = GateRules().min_val_images
    assert run["decision"] == "keep" and 1 <= val_images < floor
    assert reasons[0] == (f"only {val_images} held-out image(s) ({by_source['generated']} generated, "
                          f"{by_source['cover']} covers), fewer than min_val_images={floor}: too few to resolve a "
                          "difference, champion kept")
    assert by_source["generated"] + by_source["cover"] == val_images
    assert (by_source["generated"], by_source["cover"]) == (metrics["snapshot"]["val_generated"],
                                                            metrics["snapshot"]["val_covers"])
    assert "reference rule skipped: no held-out images of an earlier promoted week yet" in reasons
    if val_images >= 2:  # the measured effect, with its interval, shown but not used
        assert any(r.startswith("val loss ") and r.endswith("for information only (too few images)") for r in reasons)
        assert metrics["gate"]["evidence"]["val"]["n"] == val_images
    assert metrics["gate"]["rules"]["min_val_images"] == floor and metrics["reference_images"] == 0
    assert run["gpu_seconds"] > 0
    assert {"val_loss", "brightness"} <= set(metrics["challenger"]) and metrics["steps"] == 4
    # the gate's val loss is on held-out images the challenger never trained on
    manifest = read_json(*open_uri(run["manifest_uri"]))
    split = manifest["split"]
    assert metrics["val_split"] == "val" and metrics["val_images"] == split["val"] >= 1
    assert metrics["train_examples"] == split["train"] == manifest["counts"]["examples"] - split["val"]
    assert any("held-out" in n for n in metrics["notes"])
    version = warehouse.query("SELECT * FROM model_versions WHERE version = @v", {"v": run["model_version"]})[0]
    assert version["training_run_id"] == run["run_id"]
    assert production_version(warehouse) is None and version["status"] == "rejected"
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


def test_gate_thresholds_are_params_that_reach_the_gate(dagbag, warehouse, store):
    """Each threshold is a Param with its documented default, and a run's value is the gate's."""
    from training.gate import GateRules

    params = dagbag.get_dag("weekly_retrain").params
    rules = GateRules()
    for name in ("min_val_images", "min_val_improvement", "max_reference_degradation", "min_reference_images",
                 "min_pair_requests",
                 "confidence", "bootstrap_samples", "max_blank_images", "max_stat_distance_increase",
                 "min_clip_score_delta"):
        assert params[name] == getattr(rules, name), name
    assert (params["reference_weeks"], params["max_eval_images"]) == (4, 256)

    seed_world(warehouse, store)
    dag = dagbag.get_dag("weekly_retrain")
    assert dag.test(logical_date=WEEK_RUN, run_conf={"steps": 2, "val_fraction": 0.5, "min_val_images": 2}).state == "success"
    run = warehouse.query("SELECT * FROM training_runs")[0]
    reasons = json.loads(run["decision_reasons"])
    assert json.loads(run["metrics"])["gate"]["rules"]["min_val_images"] == 2
    assert not any("fewer than min_val_images" in r for r in reasons)
    assert reasons[0].startswith("val loss ") and "95 % paired bootstrap over" in reasons[0]
