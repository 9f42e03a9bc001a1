"""The weekly retrain's bookkeeping, as plain functions the ``weekly_retrain`` DAG calls.

One ``training_runs`` row per data interval (``run_id = stable_id("weekly_retrain", start)``)
with status ``running`` -> ``trained`` | ``skipped`` | ``failed``, the reason, metrics, the
gate's decision and GPU seconds. A run whose row is ``trained`` or ``skipped`` is complete: a
re-run of the same interval returns that row and trains nothing.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from sleeve import registry
from sleeve.ids import stable_id
from sleeve.warehouse import Warehouse
from training.gate import GateRules, decide

DAG_ID = "weekly_retrain"
DONE = ("trained", "skipped")


def run_id_for(start: datetime) -> str:
    return stable_id(DAG_ID, start.isoformat())


def version_for(start: datetime) -> str:
    return f"style-{start:%Y%m%d}-{run_id_for(start)[:8]}"


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


def warm_start_uri(warehouse: Warehouse, base_model: str) -> str | None:
    """The production adapter when it was trained on the same base model (else start from base)."""
    prod = registry.production_version(warehouse, "style")
    return prod["adapter_uri"] if prod and prod["base_model"] == base_model else None


def conclude(warehouse: Warehouse, *, run_id: str, start: datetime, end: datetime, version: str, base_model: str,
             manifest_uri: str, train_result: dict, eval_result: dict, rules: GateRules | None = None,
             now: datetime | None = None) -> dict:
    """Gate, register, promote or reject, and close the run row as ``trained``."""
    now = now or datetime.now(UTC)
    verdict = decide(eval_result, rules)
    metrics = {"challenger": eval_result["metrics"]["challenger"], "champion": eval_result["metrics"]["champion"],
               "final_loss": train_result.get("final_loss"), "steps": train_result.get("steps"),
               "eval_set_version": eval_result.get("eval_set_version"), "notes": eval_result.get("notes", []),
               "val_split": eval_result.get("val_split"), "val_images": eval_result.get("val_images"),
               "train_examples": train_result.get("examples"),
               "contact_sheet_uri": eval_result.get("contact_sheet_uri")}
    registry.register(warehouse, version=version, kind="style", base_model=base_model,
                      adapter_uri=train_result["adapter_uri"], manifest_uri=manifest_uri, metrics=metrics,
                      training_run_id=run_id, now=now)
    row = registry.promote(warehouse, version, now) if verdict["decision"] == "promote" \
        else registry.reject(warehouse, version, now)
    gpu = float(train_result.get("gpu_seconds", 0)) + float(eval_result.get("gpu_seconds", 0))
    record_run(warehouse, run_id, start, end, status="trained", reason=None, metrics=metrics,
               decision=verdict["decision"], decision_reasons=verdict["reasons"], model_version=version,
               gpu_seconds=round(gpu, 3), finished_at=now)
    return {"decision": verdict["decision"], "reasons": verdict["reasons"], "version": version,
            "alias": row["alias"], "adapter_uri": row["adapter_uri"]}
