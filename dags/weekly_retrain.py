"""
### weekly_retrain: last week's liked images + covers -> LoRA -> evaluation gate -> registry

`snapshot` → `train` (GPU job) → `evaluate` (GPU job) → `conclude` → `publish` (**style model** Asset).

- **Interval**: Mondays 03:00 UTC, the week that just ended; backfills address whole weeks. The
  Params `interval_start`/`interval_end` override it for a manual run.
- **snapshot**: generated images reviewed in the interval whose ratings pass the filter
  (`min_rating`, `min_reviews`) plus captioned covers; deduplicated; split by content hash into
  train and held-out val (`val_fraction`); an immutable manifest in the store. Too few images:
  the run is recorded `skipped` with the reason.
- **train / evaluate**: `training.train_job` / `training.evaluate_job` through the GPU launcher
  (`SLEEVE_GPU_EXECUTOR`: local subprocess, Celery queue `gpu`, or a Kubernetes GPU pod).
  Warm start from the production LoRA when `warm_start` is on and the base model matches.
  Training sees only the train split; the gate's validation loss uses only the held-out split.
  `clip_model` (a CLIP hub id or folder) adds a CLIP score per model; empty skips it.
- **conclude**: the gate's rules decide promote/keep; the version is registered in
  `model_versions` and promoted atomically (or rejected); `training_runs` gets the status,
  metrics, decision, reasons and GPU seconds. `python -m sleeve.registry rollback` undoes a
  promotion.
- **Idempotent**: a run already `trained`/`skipped` for the interval trains nothing again;
  a retried train task reuses a finished adapter and resumes from its checkpoints.
- `dry_run`: build the snapshot only; nothing is recorded or trained.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from sleeve_airflow.assets import STYLE_MODEL
from sleeve_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, weekly_interval
from sleeve_airflow.gpu import GPU_TASK


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
        "include_covers": Param(True, type="boolean", description="Train on the captioned crawled covers too."),
        "val_fraction": Param(0.15, type="number", minimum=0, maximum=0.5,
                              description="Share of the snapshot held out for the gate's validation loss."),
        "steps": Param(12, type="integer", minimum=1, description="Training steps."),
        "batch_size": Param(2, type="integer", minimum=1, description="Images per training step."),
        "learning_rate": Param(1e-4, type="number", exclusiveMinimum=0, description="LoRA learning rate."),
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
    @task(multiple_outputs=False)
    def snapshot(**context) -> dict:
        """Freeze the interval's training data; the returned plan tells the next tasks whether to go."""
        from sleeve_airflow.context import interval
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook
        from sleeve_airflow.preflight import preflight

        from sleeve.settings import get_settings
        from training.weekly import take_snapshot

        preflight("warehouse", "store", "gpu", "base_model")
        params = context["params"]
        start, end = interval(context, "interval_start", "interval_end")
        return take_snapshot(WarehouseHook().warehouse, ObjectStoreHook().store, start, end, params,
                             base_model=params["base_model"] or get_settings().base_model,
                             dag_run_id=context["run_id"], started_at=context["ti"].start_date)

    @task(multiple_outputs=False, **GPU_TASK)
    def train(plan: dict, **context) -> dict:
        """The LoRA training GPU job; a retry after it finished returns its result instead."""
        if not plan["go"]:
            return {}
        from sleeve_airflow.gpu import run_gpu_job
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from sleeve.jobs import RESULT_NAME, read_result
        from sleeve.settings import get_settings
        from training.weekly import adapter_prefix, fail_run, production_adapter, train_config

        params, store, warehouse = context["params"], ObjectStoreHook().store, WarehouseHook().warehouse
        prefix = adapter_prefix(plan["version"])
        if store.exists(f"{prefix}/{RESULT_NAME}"):
            return read_result(store.uri(prefix), store)  # do not train twice
        warm = production_adapter(warehouse, plan["base_model"]) if params["warm_start"] else None
        try:
            return run_gpu_job("training.train_job", manifest_uri=plan["manifest_uri"], output_uri=store.uri(prefix),
                               config=train_config(plan, params, home=get_settings().home, warm_start=warm))
        except Exception as exc:
            fail_run(warehouse, plan, "train", exc)
            raise

    @task(multiple_outputs=False, **GPU_TASK)
    def evaluate(plan: dict, trained: dict, **context) -> dict:
        """Champion vs challenger GPU job on the held-out images and the fixed eval prompts."""
        if not plan["go"]:
            return {}
        from sleeve_airflow.gpu import run_gpu_job
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from sleeve.settings import get_settings
        from training.weekly import eval_config, eval_prefix, fail_run, production_adapter

        warehouse = WarehouseHook().warehouse
        config = eval_config(plan, context["params"], trained, home=get_settings().home,
                             champion_uri=production_adapter(warehouse, plan["base_model"]))
        try:
            return run_gpu_job("training.evaluate_job", manifest_uri=plan["manifest_uri"], config=config,
                               output_uri=ObjectStoreHook().store.uri(eval_prefix(plan["version"])))
        except Exception as exc:
            fail_run(warehouse, plan, "evaluate", exc)
            raise

    @task(multiple_outputs=False)
    def conclude(plan: dict, trained: dict, evaluated: dict, **context) -> dict:
        """Gate, register and promote or reject; close the run row."""
        if not plan["go"]:
            return {"decision": None, "why": plan["why"]}
        from sleeve_airflow.hooks import WarehouseHook

        from training.weekly import conclude_plan

        return conclude_plan(WarehouseHook().warehouse, plan, trained, evaluated, now=context["dag_run"].run_after)

    @task(multiple_outputs=False, outlets=[STYLE_MODEL])
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
