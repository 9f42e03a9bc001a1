"""
### weekly_retrain: last week's liked images + covers -> LoRA -> evaluation gate -> registry

`snapshot` → `train` (GPU job) → `evaluate` (GPU job) → `conclude` → `publish` (**style model** Asset).

- **Interval**: Mondays 03:00 UTC, the week that just ended; backfills address whole weeks. The
  Params `interval_start`/`interval_end` override it for a manual run.
- **snapshot**: generated images reviewed in the interval whose ratings pass the filter
  (`min_rating`, `min_reviews`) plus captioned covers; deduplicated; split by content hash into
  train and held-out val (`val_fraction`); an immutable manifest in the store. Too few images:
  the run is recorded `skipped` with the reason.
- **train / evaluate**: `training.train_job` / `training.evaluate` through the GPU launcher
  (`SLEEVE_GPU_EXECUTOR`: local subprocess, Celery queue `gpu`, or a Kubernetes GPU pod).
  Warm start from the production LoRA when `warm_start` is on and the base model matches.
  Training sees only the train split; the gate's validation loss uses only the held-out split.
  `clip_model` (a CLIP hub id or folder) adds a CLIP score per model; empty skips it.
- **conclude**: the gate's rules decide promote/keep; the version is registered in
  `model_versions` and promoted atomically (or rejected); `training_runs` gets the status,
  metrics, decision, reasons and GPU seconds. `python -m training.registry rollback` undoes a
  promotion.
- **Idempotent**: a run already `trained`/`skipped` for the interval trains nothing again;
  a retried train task reuses a finished adapter and resumes from its checkpoints.
- `dry_run`: build the snapshot only; nothing is recorded or trained.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from sleeve_airflow.assets import STYLE_MODEL
from sleeve_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, weekly_interval
from sleeve_airflow.gpu import gpu_task_kwargs


def _interval(context) -> tuple:
    import pendulum
    from sleeve_airflow.context import data_interval

    params = context["params"]
    if params.get("interval_start") and params.get("interval_end"):
        return pendulum.parse(params["interval_start"]), pendulum.parse(params["interval_end"])
    return data_interval(context)


@dag(
    dag_id="weekly_retrain",
    schedule=weekly_interval(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["sleeve", "training"],
    doc_md=__doc__,
    params={
        "interval_start": Param(None, type=["null", "string"], format="date-time",
                                description="Override the data interval start (ISO 8601)."),
        "interval_end": Param(None, type=["null", "string"], format="date-time",
                              description="Override the data interval end (ISO 8601)."),
        "min_rating": Param(4.0, type="number", minimum=1, maximum=5, description="Mean rating an image needs."),
        "min_reviews": Param(1, type="integer", minimum=1, description="Reviews an image needs."),
        "min_examples": Param(4, type="integer", minimum=1, description="Fewer usable images: skip training."),
        "val_fraction": Param(0.15, type="number", minimum=0, maximum=0.5,
                              description="Share of the snapshot held out for the gate's validation loss."),
        "steps": Param(12, type="integer", minimum=1, description="Training steps."),
        "rank": Param(4, type="integer", minimum=1, description="LoRA rank."),
        "resolution": Param(64, type="integer", minimum=8, description="Training resolution (1024 for real SDXL)."),
        "base_model": Param("", type="string", description="Base model path or hub id ('' = SLEEVE_BASE_MODEL)."),
        "warm_start": Param(True, type="boolean", description="Start from the production LoRA."),
        "rating_weighted": Param(False, type="boolean", description="Weight each image's loss by its rating."),
        "clip_model": Param("", type="string",
                            description="CLIP hub id or path for the eval CLIP score ('' = skip)."),
        "dry_run": Param(False, type="boolean", description="Build the snapshot only."),
    },
)
def weekly_retrain():
    @task
    def snapshot(**context) -> dict:
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from sleeve.settings import get_settings
        from training.snapshot import SnapshotConfig, build_snapshot
        from training.weekly import DONE, get_run, record_run, run_id_for, version_for

        params = context["params"]
        start, end = _interval(context)
        warehouse, store = WarehouseHook().warehouse, ObjectStoreHook().store
        run_id = run_id_for(start)
        plan = {"run_id": run_id, "start": start.isoformat(), "end": end.isoformat(), "version": version_for(start),
                "base_model": params["base_model"] or get_settings().base_model}
        existing = get_run(warehouse, run_id)
        if existing and existing["status"] in DONE:
            return {**plan, "go": False, "why": f"run already {existing['status']}"}
        snap = build_snapshot(warehouse, store, start, end, SnapshotConfig.from_dict(params))
        plan.update(manifest_uri=snap["uri"], counts=snap["counts"])
        if params["dry_run"]:
            return {**plan, "go": False, "why": "dry run"}
        status, reason = ("skipped", snap["skip_reason"]) if snap["skip_reason"] else ("running", None)
        record_run(warehouse, run_id, start, end, dag_run_id=context["run_id"], status=status, reason=reason,
                   manifest_uri=snap["uri"], config=dict(params), started_at=context["ti"].start_date,
                   metrics={"snapshot": snap["counts"]})
        return {**plan, "go": status == "running", "why": reason}

    @task(**gpu_task_kwargs())
    def train(plan: dict, **context) -> dict:
        if not plan["go"]:
            return {}
        from sleeve_airflow.gpu import run_gpu_job
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from sleeve.jobs import read_result
        from sleeve.settings import get_settings
        from training.weekly import fail_run, warm_start_uri

        params, settings = context["params"], get_settings()
        store = ObjectStoreHook().store
        output_uri = store.uri(f"models/style/{plan['version']}")
        if store.exists(f"models/style/{plan['version']}/result.json"):
            return read_result(output_uri, store)  # a retry after training finished: do not train twice
        warm = warm_start_uri(WarehouseHook().warehouse, plan["base_model"]) if params["warm_start"] else None
        config = {
            "train": {"base_model": plan["base_model"], "steps": params["steps"], "rank": params["rank"],
                      "resolution": params["resolution"], "warm_start": warm, "checkpoint_every": 50},
            "rating_weighted": params["rating_weighted"], "version": plan["version"],
            "manifest_uri": plan["manifest_uri"],
            "work_dir": str(settings.home / "work" / "weekly_retrain" / plan["run_id"]),
            "cache_dir": str(settings.home / "cache" / "training"),
        }
        try:
            return run_gpu_job("training.train_job", manifest_uri=plan["manifest_uri"], config=config,
                               output_uri=output_uri)
        except Exception as exc:
            fail_run(WarehouseHook().warehouse, plan, "train", exc)
            raise

    @task(**gpu_task_kwargs())
    def evaluate(plan: dict, trained: dict, **context) -> dict:
        if not plan["go"]:
            return {}
        from sleeve_airflow.gpu import run_gpu_job
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from sleeve.settings import get_settings
        from training.registry import production_version
        from training.weekly import fail_run

        prod = production_version(WarehouseHook().warehouse)
        config = {"base_model": plan["base_model"], "challenger_uri": trained["adapter_uri"],
                  "champion_uri": prod["adapter_uri"] if prod and prod["base_model"] == plan["base_model"] else None,
                  "resolution": context["params"]["resolution"], "clip_model": context["params"]["clip_model"],
                  "cache_dir": str(get_settings().home / "cache" / "training")}
        try:
            return run_gpu_job("training.evaluate", manifest_uri=plan["manifest_uri"], config=config,
                               output_uri=ObjectStoreHook().store.uri(f"evals/style/{plan['version']}"))
        except Exception as exc:
            fail_run(WarehouseHook().warehouse, plan, "evaluate", exc)
            raise

    @task
    def conclude(plan: dict, trained: dict, evaluated: dict, **context) -> dict:
        if not plan["go"]:
            return {"decision": None, "why": plan["why"]}
        import pendulum
        from sleeve_airflow.hooks import WarehouseHook

        from training.weekly import conclude as conclude_run

        return conclude_run(WarehouseHook().warehouse, run_id=plan["run_id"], start=pendulum.parse(plan["start"]),
                            end=pendulum.parse(plan["end"]), version=plan["version"], base_model=plan["base_model"],
                            manifest_uri=plan["manifest_uri"], train_result=trained, eval_result=evaluated,
                            now=context["dag_run"].run_after)

    @task(outlets=[STYLE_MODEL])
    def publish(outcome: dict, **context) -> dict:
        """Emit the style-model Asset only when a new version went to production."""
        from airflow.sdk.exceptions import AirflowSkipException

        if outcome.get("decision") != "promote":
            raise AirflowSkipException(f"no new production model ({outcome.get('why') or outcome.get('reasons')})")
        context["outlet_events"][STYLE_MODEL].extra = {"version": outcome["version"],
                                                       "adapter_uri": outcome["adapter_uri"]}
        return outcome

    plan = snapshot()
    trained = train(plan)
    evaluated = evaluate(plan, trained)
    publish(conclude(plan, trained, evaluated))


weekly_retrain()
