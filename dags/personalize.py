"""### personalize: album covers with the user's face (DreamBooth-LoRA per user)

```
collect_requests ──▶ personalize_request (mapped task group: one branch per request) ──▶ record_stats
 (Params form /       class_images → train → register → render → record
  asset event)
```

- **class_images**: prior-preservation images of the class noun, made by the batch generator
  (GPU job `inference.generate_job`) on the base model and cached for every user.
- **train**: the user's DreamBooth-LoRA (GPU job `training.personalize_job`); an adapter
  already trained for the request is reused, never trained twice.
- **register**: `model_versions` row, kind `dreambooth`, with the user id (never aliased).
- **render**: the covers through batch_generate's own path (`inference.shards` plan →
  `inference.generate_job` per shard), with the user's adapter (+ the production style LoRA).
- **record**: `images` rows and `generation_requests` status, then the request row.

Triggered by hand (Params: user, photo URIs, class noun, songs/prompts, images) or by an
event on the `personalization_requests` Asset (then every unfinished request is handled).
Each step retries on its own (a retried render does not retrain). A finished request skips
its branch; a failing one records why on its row and fails its branch only. State lives in
the warehouse table `personalization_requests`. Photos are personal data: they are never
logged and live under `users/<user_id>/` in the store
(`python -m training.privacy forget USER_ID` removes them).
"""

from __future__ import annotations

import logging

from airflow.sdk import Param, dag, task, task_group
from sleeve_airflow.assets import IMAGES, PERSONALIZATION_REQUESTS
from sleeve_airflow.dag_defaults import DEFAULT_ARGS, START_DATE
from sleeve_airflow.gpu import GPU_TASK

from sleeve.settings import get_settings

log = logging.getLogger(__name__)

DAG_ID, STAGE = "personalize", "personalize"


def _params() -> dict:
    return {
        "user_id": Param("", type="string", description="User to personalise for (empty: handle pending requests)"),
        "photo_uris": Param([], type="array", description="3-20 object-store URIs of the user's photos"),
        "class_noun": Param("person", type="string", description="What the photos show: woman, man, person, dog, ..."),
        "song_ids": Param([], type="array", description="Songs whose latest prompt to render"),
        "prompt_ids": Param([], type="array", description="Prompts to render"),
        "num_images": Param(1, type="integer", minimum=1, maximum=16, description="Images per prompt"),
        "request_ids": Param([], type="array", description="Re-run these existing requests only"),
        "steps": Param(20, type="integer", minimum=1, description="DreamBooth training steps"),
        "rank": Param(4, type="integer", minimum=1, description="LoRA rank"),
        "resolution": Param(64, type="integer", minimum=8, description="Training resolution (1024 for SDXL)"),
        "num_class_images": Param(2, type="integer", minimum=0, description="Prior-preservation class images"),
        "class_image_steps": Param(4, type="integer", minimum=1,
                                   description="Denoising steps per class image (tiny model: 4; SDXL: 25-30)"),
        "class_image_guidance": Param(5.0, type="number", minimum=0,
                                      description="Guidance scale of the class images (SDXL: 5-7.5)"),
        "prior_loss_weight": Param(1.0, type="number", minimum=0, description="Weight of the class prior loss"),
        "train_text_encoder": Param(False, type="boolean", description="Also train text-encoder LoRA"),
        "combine_style": Param(True, type="boolean", description="Mix in the production style LoRA"),
        "style_weight": Param(0.7, type="number", minimum=0, description="Weight of the style LoRA in the mix"),
        "image_size": Param(64, type="integer", minimum=64, description="Rendered cover size (1024 for SDXL)"),
        "image_steps": Param(4, type="integer", minimum=1, description="Denoising steps per cover"),
    }


def _warehouse_and_store():
    from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

    return WarehouseHook().warehouse, ObjectStoreHook().store


def _generate(shards: list[dict], store_url: str) -> list[dict]:
    """One batch-generator GPU job per planned shard; where their results are, as batch_generate
    records them."""
    from sleeve_airflow.gpu import run_gpu_job

    from sleeve.jobs import RESULT_NAME

    for shard in shards:
        run_gpu_job("inference.generate_job", manifest_uri=shard["manifest_uri"], config={"store_url": store_url},
                    output_uri=shard["output_uri"])
    return [{"manifest_uri": s["manifest_uri"], "result_uri": f"{s['output_uri']}/{RESULT_NAME}"} for s in shards]


@dag(
    dag_id=DAG_ID,
    schedule=[PERSONALIZATION_REQUESTS],
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=_params(),
    tags=["sleeve", "personalize", "gpu"],
    doc_md=__doc__,
)
def personalize():
    @task
    def collect_requests(**context) -> list[str]:
        """A request from the form is validated and recorded first; otherwise the listed or all
        unfinished requests are picked up."""
        from sleeve_airflow.context import mark_stage_start
        from sleeve_airflow.preflight import preflight

        from training.dreambooth import collect_requests, submit_request

        preflight("warehouse", "store", "gpu", "base_model")
        mark_stage_start(context)
        params = context["params"]
        warehouse, store = _warehouse_and_store()
        if params["user_id"]:
            row = submit_request(warehouse, store, params["user_id"], list(params["photo_uris"]),
                                 params["class_noun"], params["prompt_ids"], params["song_ids"], params["num_images"])
            log.info("request %s is %s", row["request_id"], row["status"])
            return [row["request_id"]]
        return collect_requests(warehouse, request_ids=list(params["request_ids"]) or None)

    @task(multiple_outputs=False, **GPU_TASK)
    def class_images(request_id: str, **context) -> dict:
        """Prior-preservation images: cached, or made now on the base model. A finished request
        skips its whole branch here."""
        from airflow.sdk.exceptions import AirflowSkipException

        from inference.shards import plan_shards
        from training.dreambooth import class_images_for, get_request, is_finished, recording_failure

        warehouse, store = _warehouse_and_store()
        request = get_request(warehouse, request_id)
        if is_finished(request):
            raise AirflowSkipException(f"request {request_id} is {request['status']}: nothing to train or render")
        params, base_model = context["params"], get_settings().base_model
        with recording_failure(warehouse, request_id):
            priors = class_images_for(params, base_model, request["class_noun"])
            cached = priors.cached(store)
            if cached is not None:
                return cached
            planned = plan_shards(warehouse, store, priors.requests(), base_model=base_model,
                                  defaults=priors.defaults, prefix=priors.prefix)
            return priors.record(store, _generate(planned["shards"], store.url))

    @task(multiple_outputs=False, **GPU_TASK)
    def train(request_id: str, priors: dict, **context) -> dict:
        """The user's DreamBooth-LoRA; an adapter trained before (or by an earlier try) is reused."""
        from sleeve_airflow.gpu import run_gpu_job

        from training.dreambooth import (
            finished_adapter,
            get_request,
            recording_failure,
            train_config,
            write_train_manifest,
        )

        warehouse, store = _warehouse_and_store()
        with recording_failure(warehouse, request_id):
            request = get_request(warehouse, request_id)
            trained = finished_adapter(store, request)
            if trained is not None:
                return trained
            job = write_train_manifest(store, request, base_model=get_settings().base_model, class_images=priors)
            return run_gpu_job("training.personalize_job", config=train_config(context["params"]), **job)

    @task
    def register(request_id: str, trained: dict) -> str:
        from training.dreambooth import recording_failure, register_adapter

        warehouse, store = _warehouse_and_store()
        with recording_failure(warehouse, request_id):
            return register_adapter(warehouse, store, request_id, trained)

    @task(multiple_outputs=False, **GPU_TASK)
    def render(request_id: str, version: str, **context) -> dict:
        """The covers with the user's adapter ``version``, planned and generated as batch_generate does."""
        from inference.shards import plan_shards
        from sleeve.keys import personalize_prefix
        from training.dreambooth import cover_requests, get_request, recording_failure, render_defaults

        params = context["params"]
        warehouse, store = _warehouse_and_store()
        with recording_failure(warehouse, request_id):
            covers = cover_requests(warehouse, request_id, version)
            planned = plan_shards(
                warehouse, store, covers, base_model=get_settings().base_model, defaults=render_defaults(params),
                style_weight=params["style_weight"], combine_style=params["combine_style"],
                prefix=personalize_prefix(get_request(warehouse, request_id)["user_id"], request_id))
            return {"request_ids": [c["request_id"] for c in covers], "failed": planned["failed"],
                    "results": _generate(planned["shards"], store.url)}

    @task(multiple_outputs=False)
    def record(request_id: str, trained: dict, rendered: dict) -> dict:
        from inference.shards import load_requests, record_images
        from training.dreambooth import finish_request, recording_failure

        warehouse, store = _warehouse_and_store()
        with recording_failure(warehouse, request_id):
            recorded = record_images(warehouse, store, requests=load_requests(warehouse, rendered["request_ids"]),
                                     results=rendered["results"], plan_failed=rendered["failed"],
                                     data_time=lambda req: req["created_at"])
            row = finish_request(warehouse, request_id, trained, recorded, rendered["request_ids"])
        log.info("request %s: %s", request_id, {k: v for k, v in row.items() if k != "request_id"})
        return row

    @task_group
    def personalize_request(request_id: str):
        """One request, step by step; each step retries on its own."""
        trained = train(request_id, class_images(request_id))
        record(request_id, trained, render(request_id, register(request_id, trained)))

    @task(multiple_outputs=False, trigger_rule="all_done", outlets=[IMAGES])
    def record_stats(request_ids: list[str], **context) -> dict:
        import pendulum
        from sleeve_airflow.context import data_interval, stage_started_at

        from sleeve.stages import record_stage
        from training.dreambooth import run_stats

        warehouse, _ = _warehouse_and_store()
        start, end = data_interval(context)
        stats = run_stats(warehouse, request_ids)
        record_stage(warehouse, DAG_ID, STAGE, (start, end), run_id=context["dag_run"].run_id,
                     status="failed" if stats["failed"] else "success", stats=stats,
                     started_at=stage_started_at(context, "collect_requests"), finished_at=pendulum.now("UTC"))
        return stats

    requests = collect_requests()
    personalize_request.expand(request_id=requests) >> record_stats(requests)


personalize()
