"""
### batch_generate

Covers for pending generation requests, or a backfill: **plan** (select requests, resolve each
one's model, cut shards) → **generate** (one mapped GPU job per shard: `inference.generate_job`)
→ **record** (`images` rows with lineage, request status, `stage_runs` stats) → Asset `images`.

* Schedule: daily at 02:00 UTC over a real data interval. A run takes the requests created before
  its interval end that are still pending (plus those it generated before, so a re-run of the
  same interval repeats itself). Requests with no model version get the production model *at
  generation time* (base model if none is registered) and are then pinned to it, so a new
  production model applies to new requests without a separate trigger and old images stay
  reproducible. Requests of kind `personalize` are left to the `personalize` DAG.
* Backfill: trigger with `mode=backfill` and a date range and/or song ids, optionally a prompt
  version and a model version (default: production now), e.g. regenerate last month's covers
  with the new model. It inserts `backfill` requests (ids pin song, prompt, model) and renders them.
* GPU: shards run on the GPU execution path (`SLEEVE_GPU_EXECUTOR`: subprocess, Celery queue and
  pool `gpu`, or a pod), at most `SLEEVE_GPU_SLOTS` at once. A shard loads the model once.
* Exactly once: images are content-addressed and each has a record keyed by
  `image_id = uuid5(request_id, image_index, model_version)`; a killed shard re-run skips what
  is stored and every row is an upsert.
* Sizes/steps: `SLEEVE_GEN_SIZE` / `SLEEVE_GEN_STEPS` (64 px / 4 steps for the tiny model;
  1024 / 30 for SDXL), or per request (`generation_requests.width/height/steps`).
"""

from __future__ import annotations

from datetime import UTC

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, get_current_context, task
from sleeve_airflow.assets import IMAGES
from sleeve_airflow.dag_defaults import DEFAULT_ARGS, START_DATE
from sleeve_airflow.gpu import gpu_task_kwargs

from sleeve.settings import get_settings

with DAG(
    dag_id="batch_generate",
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,  # two runs would select the same pending requests
    default_args=DEFAULT_ARGS,
    params={
        "mode": Param("pending", enum=["pending", "backfill"], description="Pending requests or a backfill"),
        "backfill_from": Param(None, type=["null", "string"], format="date",
                               description="Backfill: songs requested from this date (YYYY-MM-DD)"),
        "backfill_to": Param(None, type=["null", "string"], format="date",
                             description="Backfill: ... up to this date (exclusive)"),
        "song_ids": Param(None, type=["null", "array"], description="Backfill: these songs too"),
        "prompt_version": Param(None, type=["null", "string"], description="Backfill: use prompts of this version"),
        "model_version": Param(None, type=["null", "string"], description="Backfill: this model (default production)"),
        "num_images": Param(4, type="integer", minimum=1, maximum=16, description="Backfill: images per song"),
        "kinds": Param(["user", "demo", "backfill"], type="array", description="Request kinds to render"),
        "max_requests": Param(10_000, type="integer", minimum=1, description="At most this many requests per run"),
        "shard_size": Param(16, type="integer", minimum=1, description="Requests per GPU job (one model load)"),
        "batch_size": Param(8, type="integer", minimum=1, description="Images per forward pass"),
        "format": Param("png", enum=["png", "webp"], description="Stored image format"),
    },
    tags=["sleeve", "generation", "gpu"],
    doc_md=__doc__,
) as dag:

    def plan_key(context) -> str:
        """Where this run's plan lives: keyed by data interval and params, so plan and record (and a
        re-run) agree on it without passing it through XCom."""
        from sleeve_airflow.context import data_interval

        from sleeve.ids import content_hash

        start, _ = data_interval(context)
        return f"generate/plans/{start:%Y%m%dT%H%M%S}-{content_hash(dict(context['params']))[:16]}.json"

    @task
    def plan() -> list[dict]:
        """Select (or create, for a backfill) the requests, write shard manifests and the plan."""
        from datetime import datetime, time

        from sleeve_airflow.context import data_interval, mark_stage_start
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from inference.shards import DEFAULT_KINDS, create_backfill, plan_shards, select_requests
        from sleeve.store import write_json

        context = get_current_context()
        mark_stage_start(context)
        params, (start, end) = context["params"], data_interval(context)
        warehouse, store, settings = WarehouseHook().warehouse, ObjectStoreHook().store, get_settings()

        def day(name: str):
            value = params.get(name)
            if not value:
                return None
            try:
                return datetime.combine(datetime.fromisoformat(str(value)[:10]).date(), time(), tzinfo=UTC)
            except ValueError:
                raise ValueError(f"param {name}={value!r} is not a date; use YYYY-MM-DD") from None

        request_ids, backfill = None, None
        if params["mode"] == "backfill":
            backfill = create_backfill(
                warehouse, created_at=start, date_from=day("backfill_from"), date_to=day("backfill_to"),
                song_ids=params.get("song_ids"), prompt_version=params.get("prompt_version"),
                model_version=params.get("model_version"), num_images=params["num_images"])
            request_ids = backfill["request_ids"]
        requests = select_requests(warehouse, start, end, kinds=params.get("kinds") or DEFAULT_KINDS,
                                   request_ids=request_ids, limit=params["max_requests"])
        defaults = {"width": settings.gen_size, "height": settings.gen_size, "steps": settings.gen_steps}
        planned = plan_shards(warehouse, store, requests, base_model=settings.base_model, defaults=defaults,
                              shard_size=params["shard_size"])
        body = {"request_ids": [r["request_id"] for r in requests], "failed": planned["failed"],
                "shards": planned["shards"], "backfill": backfill}
        write_json(store, plan_key(context), body)
        return planned["shards"]

    @task(max_active_tis_per_dag=get_settings().gpu_slots, **gpu_task_kwargs())
    def generate(shard: dict) -> dict:
        """One GPU job: load the model once, render the shard, store images + result.json."""
        from sleeve_airflow.gpu import run_gpu_job

        from sleeve.jobs import RESULT_NAME

        params = get_current_context()["params"]
        config = {"store_url": get_settings().store_url, "format": params["format"],
                  "batch_size": params["batch_size"]}
        result = run_gpu_job("inference.generate_job", manifest_uri=shard["manifest_uri"], config=config,
                             output_uri=shard["output_uri"])
        return {"manifest_uri": shard["manifest_uri"], "result_uri": f"{shard['output_uri']}/{RESULT_NAME}",
                "images": len(result.get("images", [])), "failed": len(result.get("failed", []))}

    @task(trigger_rule="none_failed", outlets=[IMAGES])
    def record(results: list[dict] | None) -> dict:
        """Upsert images and request status, and the run's stage_runs stats."""
        from sleeve_airflow.context import data_interval, stage_started_at
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from inference.shards import load_requests, record_results
        from sleeve.store import read_json

        warehouse, store = WarehouseHook().warehouse, ObjectStoreHook().store
        context = get_current_context()
        start, end = data_interval(context)
        body = read_json(store, plan_key(context))
        backfill = body.get("backfill")
        extra = {"backfill_created": backfill["created"], "backfill_no_prompt": len(backfill["no_prompt"])} \
            if backfill else {}
        return record_results(warehouse, store, requests=load_requests(warehouse, body["request_ids"]),
                              results=list(results or []), plan_failed=body["failed"], start=start, end=end,
                              extra_stats=extra, started_at=stage_started_at(context, "plan"))

    shards = plan()
    shards >> record(generate.expand(shard=shards))
