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
* Canary: while a challenger that passed the offline gate is the `canary`, it serves
  `canary_share` of the new requests (default `SLEEVE_CANARY_SHARE`, 20 %), chosen by a hash of
  the request id (the same request always lands on the same side); its images carry its
  version, and `weekly_retrain` compares their ratings with production's.
* GPU: shards run on the GPU execution path (`SLEEVE_GPU_EXECUTOR`: subprocess, Celery queue and
  pool `gpu`, or a pod), at most as many at once as the `gpu` pool has slots. A shard loads the model once.
* Exactly once: images are content-addressed and each has a record keyed by
  `image_id = uuid5(request_id, image_index, model_version)`; a killed shard re-run skips what
  is stored and every row is an upsert.
* One shard failing (say, a corrupt adapter) loses nothing else: **record** runs once every
  shard has finished, records the images the other shards made, and leaves the failed shard's
  requests pending with its error as the reason (the next run retries them); then
  **shards_ok** fails the run, so the failure shows.
* Sizes/steps: `SLEEVE_GEN_SIZE` / `SLEEVE_GEN_STEPS` (64 px / 4 steps for the tiny model;
  1024 / 30 for SDXL), or per request (`generation_requests.width/height/steps`).
"""

from __future__ import annotations

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task
from sleeve_airflow.assets import IMAGES
from sleeve_airflow.dag_defaults import DEFAULT_ARGS, START_DATE
from sleeve_airflow.gpu import GPU_TASK

from sleeve.settings import get_settings


@dag(
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
        "format": Param("png", enum=["png", "webp"], description="Stored image format"),
        "canary_share": Param(None, type=["null", "number"], minimum=0, maximum=1,
                              description="Share of new requests the canary model serves (null: SLEEVE_CANARY_SHARE)"),
    },
    tags=["sleeve", "generation", "gpu"],
    doc_md=__doc__,
)
def batch_generate():
    @task
    def plan(**context) -> list[dict]:
        """Select (or create, for a backfill) the requests, write shard manifests and the plan."""
        from sleeve_airflow.context import data_interval, mark_stage_start, param_range
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook
        from sleeve_airflow.preflight import preflight

        from inference.shards import plan_run

        preflight("warehouse", "store", "gpu", "base_model")
        mark_stage_start(context)
        start, end = data_interval(context)
        return plan_run(WarehouseHook().warehouse, ObjectStoreHook().store, context["params"], start=start, end=end,
                        backfill_range=param_range(context, "backfill_from", "backfill_to"), settings=get_settings())

    @task(multiple_outputs=False, **GPU_TASK)
    def generate(shard: dict, **context) -> dict:
        """One GPU job: load the model once, render the shard, store images + result.json."""
        from sleeve_airflow.gpu import run_gpu_job

        from inference.shards import job_config, shard_outcome

        result = run_gpu_job("inference.generate_job", manifest_uri=shard["manifest_uri"],
                             config=job_config(context["params"], get_settings().store_url),
                             output_uri=shard["output_uri"])
        return shard_outcome(shard, result)

    @task(multiple_outputs=False, trigger_rule="all_done", outlets=[IMAGES])
    def record(**context) -> dict:
        """Upsert images and request status from every shard that finished, and the run's stats."""
        from sleeve_airflow.context import data_interval, stage_started_at
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from inference.shards import record_run

        start, end = data_interval(context)
        return record_run(WarehouseHook().warehouse, ObjectStoreHook().store, context["params"], start=start,
                          end=end, started_at=stage_started_at(context, "plan"))

    @task(trigger_rule="one_failed", retries=0)
    def shards_ok() -> None:
        """Runs only when a shard (or record) failed: fails the run after record kept the rest."""
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("a generation shard failed; its requests stay pending (see record's stats)")

    generated = generate.expand(shard=plan())
    recorded = record()
    generated >> recorded
    [generated, recorded] >> shards_ok()


batch_generate()
