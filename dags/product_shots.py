"""
### product_shots

Product images for shop pages from a product photo and its information (Korean or English):
**plan** (validate each product, its photo and placements; background prompt by the LLM or the
offline prompter; shard manifests) → **shoot** (one mapped GPU job per shard:
`inference.product_job`: cut-out → background per variant → composite at each position →
fidelity gate) → **record** (`product_shots` rows with lineage, `product_requests` status,
`stage_runs`).

* Trigger from the Params form: one product (`product` + `photo_uri`, the photo already
  uploaded to the object store) or many (`products`: a list of `{product, photo_uri}`, each may
  override `positions`, `scale`, `variants`).
* Positions: `centre`, `left`, `right`, `bottom` or `{"x": 0.3, "y": 0.6}` (fractions of the
  frame). A product that would leave the frame is moved inside it (recorded as `moved`); a scale
  below 0.3 is raised to 0.3 (a product must never be tiny); anything else out of range fails
  that product with a reason, never the run.
* The product's pixels are kept exactly (masked PSNR checked after every step, the optional
  harmonisation included); a shot that fails the check is not stored.
* Exactly once: requests and shots are keyed by content; a re-run finds its shots stored.
* Reviews: shots are rated like covers (`sleeve.reviews`, shot id as image id).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from sleeve_airflow.dag_defaults import DEFAULT_ARGS, START_DATE
from sleeve_airflow.gpu import GPU_TASK

from sleeve.settings import get_settings


@dag(
    dag_id="product_shots",
    schedule=None,
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "product": Param({}, type="object", description="Product information: name (required), category, colour, "
                         "material, mood, description; Korean or English"),
        "photo_uri": Param("", type="string", description="Object-store URI of the uploaded product photo"),
        "products": Param([], type="array", description="More products: [{product, photo_uri, positions?, scale?, "
                          "variants?}]"),
        "positions": Param(["centre"], type="array", description="centre | left | right | bottom | {x, y} (0..1)"),
        "scale": Param(0.6, type="number", description="The product's longer side as a share of the frame "
                       "(0.3..1; below 0.3 is raised to 0.3)"),
        "variants": Param(2, type="integer", minimum=1, maximum=8, description="Backgrounds per product"),
        "model_version": Param("base", type="string", description="Background model: base (SLEEVE_BASE_MODEL) or "
                               "a registered version"),
        "prompter": Param(None, type=["null", "string"], enum=[None, "offline", "llm"],
                          description="Background prompts from the LLM or offline (default SLEEVE_LABELLER)"),
        "matting": Param("opencv", enum=["opencv", "rembg"], description="Background removal backend"),
        "matting_model": Param(None, type=["null", "string"], description="rembg: a model name or an .onnx "
                               "file/URI (never downloaded)"),
        "size": Param(None, type=["null", "integer"], description="Shot side in px (default SLEEVE_GEN_SIZE)"),
        "steps": Param(4, type="integer", minimum=1, maximum=150, description="Denoising steps (turbo: 1-4)"),
        "guidance_scale": Param(0.0, type="number", minimum=0, description="0 for turbo models (the negative "
                                "prompt then has no effect); about 5 for SDXL base"),
        "harmonise": Param(0.0, type="number", minimum=0, maximum=0.6, description="img2img strength of the "
                           "light/colour harmonisation outside the product (0 = off)"),
        "shard_size": Param(8, type="integer", minimum=1, description="Products per GPU job (one model load)"),
    },
    tags=["sleeve", "products", "gpu"],
    doc_md=__doc__,
)
def product_shots():
    @task
    def plan(**context) -> list[dict]:
        """Validate the products, write their prompts, requests and shard manifests."""
        from sleeve_airflow.context import data_interval, mark_stage_start
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook
        from sleeve_airflow.llm import LLMHook
        from sleeve_airflow.preflight import preflight

        from inference.product_prompts import open_prompter
        from inference.product_shots import plan_run

        kind = context["params"]["prompter"] or get_settings().labeller
        settings = preflight("warehouse", "store", "gpu", "base_model", *(("labeller",) if kind == "llm" else ()))
        mark_stage_start(context)
        store = ObjectStoreHook().store
        prompter = open_prompter(kind, client=LLMHook().client if kind == "llm" else None, cache=store)
        return plan_run(WarehouseHook().warehouse, store, context["params"], start=data_interval(context)[0],
                        prompter=prompter, settings=settings)

    @task(multiple_outputs=False, **GPU_TASK)
    def shoot(shard: dict, **context) -> dict:
        """One GPU job: cut out, generate backgrounds, composite, check, store."""
        from sleeve_airflow.gpu import run_gpu_job

        from inference.product_shots import job_config, shard_outcome

        result = run_gpu_job("inference.product_job", manifest_uri=shard["manifest_uri"],
                             config=job_config(context["params"], get_settings().store_url),
                             output_uri=shard["output_uri"])
        return shard_outcome(shard, result)

    @task(multiple_outputs=False, trigger_rule="none_failed")
    def record(results: list[dict] | None, **context) -> dict:
        """Upsert product_shots rows and request status, and the run's stage_runs stats."""
        from sleeve_airflow.context import data_interval, stage_started_at
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from inference.product_shots import record_run

        start, end = data_interval(context)
        return record_run(WarehouseHook().warehouse, ObjectStoreHook().store, context["params"], start=start,
                          end=end, results=list(results or []), started_at=stage_started_at(context, "plan"))

    shards = plan()
    shards >> record(shoot.expand(shard=shards))


product_shots()
