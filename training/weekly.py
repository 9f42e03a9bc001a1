"""The weekly retrain's steps and bookkeeping, as plain functions the ``weekly_retrain`` DAG calls.

One ``training_runs`` row per data interval (``run_id = stable_id("weekly_retrain", start)``)
with status ``running`` -> ``trained`` | ``skipped`` | ``failed``, the reason, metrics, the
gate's decision and GPU seconds. A run whose row is ``trained`` or ``skipped`` is complete: a
re-run of the same interval returns that row and trains nothing.

The snapshot step returns the run's *plan* (run id, interval, version, base model, manifest,
``go``/``why``), which the train, evaluate and conclude steps take; the job configs for
``training.train_job`` and ``training.evaluate_job`` are built from it here.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from sleeve import registry
from sleeve.ids import stable_id
from sleeve.store import ObjectStore
from sleeve.warehouse import Warehouse
from training.evaluate_job import MAX_EVAL_IMAGES
from training.gate import GateRules, decide
from training.snapshot import SOURCES, SnapshotConfig, build_snapshot

DAG_ID = "weekly_retrain"
DONE = ("trained", "skipped")


def run_id_for(start: datetime) -> str:
    return stable_id(DAG_ID, start.isoformat())


def version_for(start: datetime) -> str:
    return f"style-{start:%Y%m%d}-{run_id_for(start)[:8]}"


def adapter_prefix(version: str) -> str:
    """Where the train job writes the version's adapter (and its result.json)."""
    return f"models/style/{version}"


def eval_prefix(version: str) -> str:
    return f"evals/style/{version}"


def get_run(warehouse: Warehouse, run_id: str) -> dict | None:
    rows = warehouse.query("SELECT * FROM training_runs WHERE run_id = @run_id", {"run_id": run_id})
    return rows[0] if rows else None


def record_run(warehouse: Warehouse, run_id: str, start: datetime, end: datetime, **fields) -> dict:
    """Upsert the run row; JSON fields (config, metrics, decision_reasons) are encoded here."""
    for name in ("config", "metrics", "decision_reasons"):
        if name in fields and not isinstance(fields[name], str | None):
            fields[name] = json.dumps(fields[name], sort_keys=True, default=str)
    existing = get_run(warehouse, run_id) or {}
    row = {**existing, "run_id": run_id, "kind": "style", "interval_start": start, "interval_end": end, **fields}
    warehouse.upsert("training_runs", [row])
    return get_run(warehouse, run_id)


def fail_run(warehouse: Warehouse, plan: dict, stage: str, exc: BaseException) -> None:
    """Mark the run failed with the stage and the error's last line (the task then re-raises,
    so Airflow retries; a later success overwrites this row)."""
    last = (str(exc).strip().splitlines() or [""])[-1][:300]
    record_run(warehouse, plan["run_id"], datetime.fromisoformat(plan["start"]), datetime.fromisoformat(plan["end"]),
               status="failed", reason=f"{stage} failed: {type(exc).__name__}: {last}")


def production_adapter(warehouse: Warehouse, base_model: str) -> str | None:
    """The production adapter when it was trained on the same base model: the warm start and
    the champion (else training starts from, and the challenger is compared with, the base)."""
    prod = registry.production_version(warehouse, "style")
    return prod["adapter_uri"] if prod and prod["base_model"] == base_model else None


def take_snapshot(warehouse: Warehouse, store: ObjectStore, start: datetime, end: datetime, params: dict, *,
                  base_model: str, dag_run_id: str, started_at: datetime | None) -> dict:
    """The snapshot step: build the interval's snapshot, open the run row and return the plan.
    ``go`` is False (``why`` says why) for an interval already done, a dry run, or too little
    data (then the run is recorded ``skipped``)."""
    run_id = run_id_for(start)
    plan = {"run_id": run_id, "start": start.isoformat(), "end": end.isoformat(), "version": version_for(start),
            "base_model": base_model}
    existing = get_run(warehouse, run_id)
    if existing and existing["status"] in DONE:
        return {**plan, "go": False, "why": f"run already {existing['status']}"}
    snap = build_snapshot(warehouse, store, start, end, SnapshotConfig.from_dict(params))
    plan.update(manifest_uri=snap["uri"], counts=snap["counts"])
    if params["dry_run"]:
        return {**plan, "go": False, "why": "dry run"}
    status, reason = ("skipped", snap["skip_reason"]) if snap["skip_reason"] else ("running", None)
    record_run(warehouse, run_id, start, end, dag_run_id=dag_run_id, status=status, reason=reason,
               manifest_uri=snap["uri"], config=dict(params), started_at=started_at,
               metrics={"snapshot": snap["counts"]})
    return {**plan, "go": status == "running", "why": reason}


def train_config(plan: dict, params: dict, *, home: Path, warm_start: str | None, reference: str | None = None) -> dict:
    """``training.train_job``'s config. The work dir is per run, so a retried task resumes from
    its checkpoints; the caches are shared across weeks. ``reference`` (DPO's frozen model) is
    the production adapter, whether or not training warm-starts from it."""
    return {
        "train": {"base_model": plan["base_model"], "steps": params["steps"], "rank": params["rank"],
                  "batch_size": params["batch_size"], "learning_rate": params["learning_rate"],
                  "resolution": params["resolution"], "caption_dropout": params.get("caption_dropout", 0.0),
                  "warm_start": warm_start, "checkpoint_every": 50,
                  "objective": params.get("objective", "sft"), "beta": float(params.get("beta", 5000.0)),
                  "reference": reference},
        "rating_weighted": params["rating_weighted"], "version": plan["version"],
        "manifest_uri": plan["manifest_uri"],
        "work_dir": str(home / "work" / DAG_ID / plan["run_id"]),
        "cache_dir": str(home / "cache" / "training"),
    }


def eval_config(plan: dict, params: dict, trained: dict, *, home: Path, champion_uri: str | None) -> dict:
    """``training.evaluate_job``'s config: the new adapter against the champion (None: the base)."""
    return {"base_model": plan["base_model"], "challenger_uri": trained["adapter_uri"], "champion_uri": champion_uri,
            "resolution": params["resolution"], "clip_model": params["clip_model"],
            "max_eval_images": params.get("max_eval_images", MAX_EVAL_IMAGES),
            "cache_dir": str(home / "cache" / "training")}


def conclude(warehouse: Warehouse, *, run_id: str, start: datetime, end: datetime, version: str, base_model: str,
             manifest_uri: str, train_result: dict, eval_result: dict, rules: GateRules | None = None,
             counts: dict | None = None, now: datetime | None = None, canary: bool = True) -> dict:
    """Gate, register, promote or reject, and close the run row as ``trained``. ``counts`` are
    the snapshot's (kept in the run's metrics beside the gate's evidence). With ``canary`` (the
    default) a challenger that passes the gate becomes the canary and the users' ratings of the
    next week promote or retire it; without, it goes straight to production."""
    now = now or datetime.now(UTC)
    verdict = decide(eval_result, rules)
    sources = (eval_result.get("paired") or {}).get("val", {}).get("sources") or []
    metrics = {"challenger": eval_result["metrics"]["challenger"], "champion": eval_result["metrics"]["champion"],
               "final_loss": train_result.get("final_loss"), "steps": train_result.get("steps"),
               "eval_set_version": eval_result.get("eval_set_version"), "notes": eval_result.get("notes", []),
               "val_split": eval_result.get("val_split"), "val_images": eval_result.get("val_images"),
               "val_by_source": {s: sources.count(s) for s in SOURCES},
               "reference_images": eval_result.get("reference_images", 0),
               "gate": {"evidence": verdict["evidence"], "rules": verdict["rules"]},
               "snapshot": counts or {}, "train_examples": train_result.get("examples"),
               "objective": train_result.get("objective", "sft"), "train_pairs": train_result.get("pairs", 0),
               "contact_sheet_uri": eval_result.get("contact_sheet_uri"),
               "canary": bool(canary and verdict["decision"] == "promote")}
    registry.register(warehouse, version=version, kind="style", base_model=base_model,
                      adapter_uri=train_result["adapter_uri"], manifest_uri=manifest_uri, metrics=metrics,
                      training_run_id=run_id, now=now)
    if verdict["decision"] != "promote":
        row = registry.reject(warehouse, version, now)
    elif canary:
        row = registry.start_canary(warehouse, version, now)
    else:
        row = registry.promote(warehouse, version, now)
    gpu = float(train_result.get("gpu_seconds", 0)) + float(eval_result.get("gpu_seconds", 0))
    record_run(warehouse, run_id, start, end, status="trained", reason=None, metrics=metrics,
               decision=verdict["decision"], decision_reasons=verdict["reasons"], model_version=version,
               gpu_seconds=round(gpu, 3), finished_at=now)
    return {"decision": verdict["decision"], "reasons": verdict["reasons"], "version": version,
            "alias": row["alias"], "adapter_uri": row["adapter_uri"]}


def uses_canary(params: dict | None, canary_share: float) -> bool:
    """Whether a challenger that passes the gate goes through the canary: the ``canary`` Param
    (default on), unless no request would be served by it (``SLEEVE_CANARY_SHARE=0``): a canary
    without covers could only be retired."""
    return bool((params or {}).get("canary", True)) and canary_share > 0


def conclude_plan(warehouse: Warehouse, plan: dict, train_result: dict, eval_result: dict, params: dict | None = None,
                  now: datetime | None = None, canary_share: float | None = None) -> dict:
    """:func:`conclude` for the plan the snapshot step returned, with the gate rules among
    ``params``; ``canary_share``: the deployment's (``SLEEVE_CANARY_SHARE``) when None."""
    if canary_share is None:
        from sleeve.settings import get_settings

        canary_share = get_settings().canary_share
    return conclude(warehouse, run_id=plan["run_id"], start=datetime.fromisoformat(plan["start"]),
                    end=datetime.fromisoformat(plan["end"]), version=plan["version"], base_model=plan["base_model"],
                    manifest_uri=plan["manifest_uri"], train_result=train_result, eval_result=eval_result,
                    rules=GateRules.from_params(params or {}), counts=plan.get("counts"), now=now,
                    canary=uses_canary(params, canary_share))
