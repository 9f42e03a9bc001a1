"""
### weekly_retrain: canary verdict, then last week's liked images and pairs -> LoRA -> gate -> registry

`assess_canary` → (`needs_approval` → `approve_promotion` → `approved`) → `settle_canary` →
`snapshot` → `train` (GPU job) → `evaluate` (GPU job) → `conclude` → `publish` (**style model** Asset).

- **Interval**: Mondays 03:00 UTC, the week that just ended; backfills address whole weeks. The
  Params `interval_start`/`interval_end` override it for a manual run.
- **snapshot**: generated images reviewed in the interval whose valid ratings (1..5 stars)
  pass the filter (`min_rating` mean over at least `min_reviews` distinct reviewers), plus
  captioned crawled covers with `include_covers` (off: nobody rated them); nothing a personal (DreamBooth) adapter made; deduplicated (perceptual
  hashes stored once per image); split by group (a song's or album's images together, else a
  request's) into train and held-out val (`val_fraction`); a *reference* set of the held-out
  images and preference pairs of the last `reference_weeks` promoted weeks, and with `replay` their train-side images
  join this week's train split; an immutable manifest in the store. Too
  few images: the run is recorded `skipped` with the reason.
- **objective**: `sft` trains on the liked images; `dpo` runs Diffusion-DPO on the week's
  preference pairs (two covers of one request whose ratings differ by at least `min_rating_gap`)
  against a frozen reference, the production model (`beta` sets the pull); `sft+dpo` sums both.
- **train / evaluate**: `training.train_job` / `training.evaluate_job` through the GPU launcher
  (`SLEEVE_GPU_EXECUTOR`: local subprocess, Celery queue `gpu`, or a Kubernetes GPU pod).
  Warm start from the production LoRA when `warm_start` is on and the base model matches: each
  week continues from production on that week's images. `caption_dropout` of the captions are
  trained as '' so the LoRA moves the unconditional prediction too (else classifier-free
  guidance may multiply what it learnt; measured in the README's `make simulate` section).
  Training sees only the train split. The evaluation computes each held-out and reference
  image's loss under champion and challenger with the same noise (at most `max_eval_images`
  per set) and renders the fixed eval prompts with both. `clip_model` (a CLIP hub id or
  folder) adds a CLIP score per model; empty skips it.
- **conclude**: the gate decides promote/keep on paired evidence, a seeded paired bootstrap
  interval (`confidence`, `bootstrap_samples`) of the relative change of the mean loss:
  promote only with at least `min_val_images` held-out images, the interval's upper end below
  `-min_val_improvement` (resolvably better), or a held-out preference margin (the preferred
  cover's loss lowered more than the dispreferred one's, over `min_pair_requests` requests)
  resolvably below zero, and neither resolvably worse; on the reference set an upper end at most
  `max_reference_degradation` (skipped, and said so, with fewer than `min_reference_images`)
  and a preference margin on the reference pairs not resolvably worse (resolvably better: an
  unresolved reference loss is not decisive),
  at most `max_blank_images` blank renders, colour statistics within
  `max_stat_distance_increase`, CLIP score down at most `-min_clip_score_delta`. The reasons
  state each effect with its interval, e.g. `val loss −3.1 % [−5.0 %, −1.2 %] 95 % paired
  bootstrap over 24 held-out images (18 generated, 6 covers)`. The version is registered in
  `model_versions` and promoted atomically (or rejected); `training_runs` gets the status,
  metrics (with the evidence and per-source counts), decision, reasons and GPU seconds.
  `python -m sleeve.registry rollback` undoes a promotion.
- **canary** (default on): a challenger that passes the gate becomes the `canary`;
  `batch_generate` serves it `SLEEVE_CANARY_SHARE` of next week's requests (0: no canary, the
  challenger is promoted directly). This DAG's first
  step, `assess_canary`, compares that week's per-request mean ratings of canary and production
  (Welch interval at `canary_confidence`, at least `canary_min_requests` per arm, lower end above
  `canary_min_lift`); `settle_canary` promotes or retires it with the reason.
- **require_approval**: a promotion the ratings support first waits in `approve_promotion`
  (standard provider `ApprovalOperator`, deferred to the triggerer) showing the verdict, the
  gate's reasons and the contact sheet; Reject or no answer in `approval_timeout_hours`
  retires the canary.
- **Idempotent**: a run already `trained`/`skipped` for the interval trains nothing again;
  a retried train task reuses a finished adapter and resumes from its checkpoints.
- `dry_run`: build the snapshot only; nothing is recorded or trained.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from sleeve_airflow.approval import PromotionApproval
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
        "min_reviews": Param(1, type="integer", minimum=1, description="Distinct reviewers an image needs."),
        "min_examples": Param(4, type="integer", minimum=1, description="Fewer usable images: skip training."),
        "include_covers": Param(False, type="boolean",
                                description="Train on the captioned crawled covers too (no user rated them)."),
        "val_fraction": Param(0.25, type="number", minimum=0, maximum=0.5,
                              description="Share of the snapshot's groups held out for the gate."),
        "reference_weeks": Param(4, type="integer", minimum=0,
                                 description="Earlier promoted weeks whose held-out images form the reference set."),
        "replay": Param(False, type="boolean",
                        description="Train on those weeks' well-rated images too (train side), not this week's only."),
        "steps": Param(80, type="integer", minimum=1, description="Training steps."),
        "batch_size": Param(8, type="integer", minimum=1, description="Images per training step."),
        "learning_rate": Param(1e-3, type="number", exclusiveMinimum=0, description="LoRA learning rate."),
        "rank": Param(8, type="integer", minimum=1, description="LoRA rank."),
        "caption_dropout": Param(0.2, type="number", minimum=0, exclusiveMaximum=1,
                                 description="Share of training captions replaced by '' (the LoRA moves the "
                                             "unconditional prediction too, so guidance does not amplify it)."),
        "resolution": Param(64, type="integer", minimum=8, description="Training resolution (1024 for real SDXL)."),
        "base_model": Param("", type="string", description="Base model path or hub id ('' = SLEEVE_BASE_MODEL)."),
        "warm_start": Param(True, type="boolean", description="Start from the production LoRA."),
        "rating_weighted": Param(False, type="boolean", description="Weight each image's loss by its rating."),
        "objective": Param("sft", enum=["sft", "dpo", "sft+dpo"],
                           description="sft: liked images; dpo: Diffusion-DPO on review pairs; sft+dpo: both."),
        "beta": Param(5000.0, type="number", exclusiveMinimum=0,
                      description="DPO: how far from the reference (production) model preferences may pull."),
        "min_rating_gap": Param(1.0, type="number", exclusiveMinimum=0,
                                description="DPO pairs: two covers of one request whose ratings differ this much."),
        "min_pairs": Param(4, type="integer", minimum=1, description="dpo: fewer train pairs means skip."),
        "clip_model": Param("", type="string",
                            description="CLIP hub id or path for the eval CLIP score ('' = skip)."),
        "max_eval_images": Param(256, type="integer", minimum=1,
                                 description="At most this many held-out (and reference) images are evaluated."),
        "min_val_images": Param(4, type="integer", minimum=2,
                                description="Fewer held-out images: the champion is kept."),
        "min_val_improvement": Param(0.0, type="number", minimum=0, maximum=1,
                                     description="The val-loss interval must end below minus this (relative)."),
        "max_reference_degradation": Param(0.0, type="number", minimum=0, maximum=1,
                                           description="The reference-loss interval may end at most this (relative)."),
        "min_pair_requests": Param(4, type="integer", minimum=2,
                                   description="Fewer held-out requests with a rated pair: no preference margin."),
        "min_reference_images": Param(4, type="integer", minimum=2,
                                      description="Fewer reference images: the reference rule is skipped."),
        "confidence": Param(0.95, type="number", minimum=0.5, exclusiveMaximum=1,
                            description="Confidence of the paired bootstrap intervals."),
        "bootstrap_samples": Param(2000, type="integer", minimum=100, description="Paired bootstrap resamples."),
        "max_blank_images": Param(0, type="integer", minimum=0, description="Blank eval renders allowed."),
        "max_stat_distance_increase": Param(1.0, type="number", minimum=0,
                                            description="Colour-statistics distance increase allowed."),
        "min_clip_score_delta": Param(-0.5, type="number",
                                      description="CLIP score change allowed (when clip_model is set)."),
        "canary": Param(True, type="boolean",
                        description="A challenger that passes the gate serves a share of requests first (canary)."),
        "canary_confidence": Param(0.95, type="number", minimum=0.5, exclusiveMaximum=1,
                                   description="Confidence of the canary-vs-production rating interval."),
        "canary_min_requests": Param(20, type="integer", minimum=2,
                                     description="Rated requests per arm the canary verdict needs (else retired)."),
        "canary_min_lift": Param(0.0, type="number",
                                 description="Stars the interval's lower end must exceed to promote the canary."),
        "require_approval": Param(False, type="boolean",
                                  description="A person approves each canary promotion (Airflow HITL)."),
        "approval_timeout_hours": Param(48, type="number", exclusiveMinimum=0,
                                        description="No answer for this long: the promotion is rejected."),
        "dry_run": Param(False, type="boolean", description="Build the snapshot only."),
    },
)
def weekly_retrain():
    @task(multiple_outputs=False)
    def assess_canary(**context) -> dict:
        """The users' verdict on last week's canary from this interval's ratings ({}: no canary).
        The run's first task: it checks the settings the whole run needs."""
        from sleeve_airflow.context import interval
        from sleeve_airflow.hooks import WarehouseHook
        from sleeve_airflow.preflight import preflight

        from training.canary import CanaryRules, approval_text, assess

        preflight("warehouse", "store", "gpu", "base_model")
        start, end = interval(context, "interval_start", "interval_end")
        warehouse = WarehouseHook().warehouse
        verdict = assess(warehouse, start, end, CanaryRules.from_params(context["params"]))
        return approval_text(warehouse, verdict) if verdict else {}

    @task.short_circuit(ignore_downstream_trigger_rules=False)
    def needs_approval(verdict: dict, **context) -> bool:
        """Ask a person only for a promotion the ratings support, when require_approval is on."""
        return bool(context["params"]["require_approval"] and verdict.get("decision") == "promote"
                    and not verdict.get("applied"))

    approve_promotion = PromotionApproval(
        task_id="approve_promotion",
        subject="Promote canary {{ ti.xcom_pull(task_ids='assess_canary')['version'] }} to production?",
        body="{{ ti.xcom_pull(task_ids='assess_canary')['body'] }}",
    )

    @task(multiple_outputs=False)
    def approved() -> bool:
        """Runs only when the approval was given (a refusal skips it)."""
        return True

    @task(multiple_outputs=False, trigger_rule="none_failed")
    def settle_canary(verdict: dict, **context) -> dict:
        """Promote or retire the canary; a refused or timed-out approval retires it."""
        if not verdict:
            return {}
        from sleeve_airflow.hooks import WarehouseHook

        from training.canary import apply

        ti = context["ti"]  # asked (needs_approval True) and `approved` ran: yes; asked and skipped: no
        approval = bool(ti.xcom_pull(task_ids="approved")) if ti.xcom_pull(task_ids="needs_approval") else None
        return apply(WarehouseHook().warehouse, verdict, context["dag_run"].run_after, approved=approval)

    @task(multiple_outputs=False)
    def snapshot(**context) -> dict:
        """Freeze the interval's training data; the returned plan tells the next tasks whether to go."""
        from sleeve_airflow.context import interval
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook

        from sleeve.settings import get_settings
        from training.weekly import take_snapshot

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
        production = production_adapter(warehouse, plan["base_model"])
        try:
            return run_gpu_job("training.train_job", manifest_uri=plan["manifest_uri"], output_uri=store.uri(prefix),
                               config=train_config(plan, params, home=get_settings().home, reference=production,
                                                   warm_start=production if params["warm_start"] else None))
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

        return conclude_plan(WarehouseHook().warehouse, plan, trained, evaluated, params=context["params"],
                             now=context["dag_run"].run_after)

    @task(multiple_outputs=False, outlets=[STYLE_MODEL])
    def publish(outcome: dict, settled: dict, **context) -> dict:
        """Emit the style-model Asset only when a version went to production: this run's
        challenger (no canary) or last week's canary."""
        from airflow.sdk.exceptions import AirflowSkipException

        if outcome.get("alias") != "production" and (settled or {}).get("decision") != "promote":
            raise AirflowSkipException(f"no new production model ({outcome.get('why') or outcome.get('reasons')})")
        if outcome.get("alias") == "production":
            new = outcome
        else:
            from sleeve_airflow.hooks import WarehouseHook

            from sleeve.registry import get_version

            new = get_version(WarehouseHook().warehouse, settled["version"])
        context["outlet_events"][STYLE_MODEL].extra = {"version": new["version"], "adapter_uri": new["adapter_uri"]}
        return new

    verdict = assess_canary()
    settled = settle_canary(verdict)
    needs_approval(verdict) >> approve_promotion >> approved() >> settled
    plan = snapshot()
    settled >> plan
    trained = train(plan)
    evaluated = evaluate(plan, trained)
    publish(conclude(plan, trained, evaluated), settled)


weekly_retrain()
