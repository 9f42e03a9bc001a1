"""### personalize: album covers with the user's face (DreamBooth-LoRA per user)

```
collect_requests ──▶ personalize_request (mapped: one branch per request) ──▶ record_stats
 (Params form /       validate → DreamBooth-LoRA (GPU job) → registry (dreambooth, user_id)
  asset event)        → render covers via the batch generator → images + generation_requests
```

Triggered by hand (Params: user, photo URIs, class noun, songs/prompts, images) or by an
event on the `personalization_requests` Asset (then every unfinished request is handled).
Idempotent per request id: a finished request is not trained or rendered again; a failed
request does not stop the others. State lives in the warehouse table `personalization_requests`.
Photos are personal data: they are never logged and live under `users/<user_id>/` in the store
(`python -m training.privacy forget USER_ID` removes them).
"""

from __future__ import annotations

import logging

from airflow.sdk import Param, dag, task
from sleeve_airflow.assets import IMAGES, PERSONALIZATION_REQUESTS
from sleeve_airflow.dag_defaults import DEFAULT_ARGS, START_DATE
from sleeve_airflow.gpu import gpu_task_kwargs

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
        "prior_loss_weight": Param(1.0, type="number", minimum=0, description="Weight of the class prior loss"),
        "train_text_encoder": Param(False, type="boolean", description="Also train text-encoder LoRA"),
        "combine_style": Param(True, type="boolean", description="Mix in the production style LoRA"),
        "style_weight": Param(0.7, type="number", minimum=0, description="Weight of the style LoRA in the mix"),
        "image_size": Param(64, type="integer", minimum=64, description="Rendered cover size (1024 for SDXL)"),
        "image_steps": Param(4, type="integer", minimum=1, description="Denoising steps per cover"),
    }


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
    def collect_requests(params: dict, **context) -> list[str]:
        """A request from the form is validated and recorded first; otherwise the listed or all
        unfinished requests are picked up."""
        from sleeve_airflow.context import mark_stage_start
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from training.dreambooth import collect_requests, submit_request

        mark_stage_start(context)
        warehouse, store = WarehouseHook().warehouse, ObjectStoreHook().store
        if params["user_id"]:
            row = submit_request(warehouse, store, params["user_id"], list(params["photo_uris"]),
                                 params["class_noun"], params["prompt_ids"], params["song_ids"], params["num_images"])
            log.info("request %s is %s", row["request_id"], row["status"])
            return [row["request_id"]]
        return collect_requests(warehouse, request_ids=list(params["request_ids"]) or None)

    @task(retries=0, multiple_outputs=False, max_active_tis_per_dag=get_settings().gpu_slots, **gpu_task_kwargs())
    def personalize_request(request_id: str, params: dict) -> dict:
        """Train and render one request. Its failure is recorded on the request row and fails
        this branch only (clear it to retry); the other requests carry on."""
        from sleeve_airflow.gpu import run_gpu_job
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from sleeve.settings import get_settings
        from training.dreambooth import mark_failed, run_request

        warehouse, store = WarehouseHook().warehouse, ObjectStoreHook().store
        train_config = {k: params[k] for k in ("steps", "rank", "resolution", "num_class_images",
                                               "prior_loss_weight", "train_text_encoder")}
        try:
            result = run_request(
                warehouse, store, request_id, base_model=get_settings().base_model, run_job=run_gpu_job,
                train_config=train_config, combine_style=params["combine_style"], style_weight=params["style_weight"],
                render={"width": params["image_size"], "height": params["image_size"], "steps": params["image_steps"]},
            )
        except Exception as exc:
            mark_failed(warehouse, request_id, exc)
            raise
        log.info("request %s: %s", request_id, {k: v for k, v in result.items() if k != "request_id"})
        return result

    @task(multiple_outputs=False, trigger_rule="all_done", outlets=[IMAGES])
    def record_stats(request_ids: list[str], **context) -> dict:
        import pendulum
        from sleeve_airflow.context import data_interval, stage_started_at
        from sleeve_airflow.hooks import WarehouseHook

        from sleeve.stages import record_stage
        from training.dreambooth import run_stats

        warehouse = WarehouseHook().warehouse
        start, end = data_interval(context)
        stats = run_stats(warehouse, request_ids)
        record_stage(warehouse, DAG_ID, STAGE, (start, end), run_id=context["dag_run"].run_id,
                     status="failed" if stats["failed"] else "success", stats=stats,
                     started_at=stage_started_at(context, "collect_requests"), finished_at=pendulum.now("UTC"))
        return stats

    requests = collect_requests()
    done = personalize_request.partial().expand(request_id=requests)
    done >> record_stats(requests)


personalize()
