"""What batch_generate generates and how its results are recorded (warehouse side, no Airflow).

plan:    select requests (pending, or a backfill) -> resolve each one's model -> shard manifests
record:  result manifests -> ``images`` rows + ``generation_requests`` status + ``stage_runs``

:func:`plan_run`, :func:`job_config` and :func:`record_run` are the DAG's three steps; the run's
plan (its requests, failures and backfill) lives in the store at :func:`plan_key`.
``personalize`` renders its covers (and DreamBooth class images) through the same
``plan_shards`` / ``record_images`` path, under the user's store prefix.

Selection is keyed by the data interval: a run takes requests created before its interval end
that are still pending, plus those it generated before (``batch_interval_start``), so a re-run
of the same interval sees the same requests, finds their images stored and upserts the same rows.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from inference.generate_job import ERROR_NAME
from inference.generator import (
    DEFAULT_IMAGES,
    BadRequest,
    Defaults,
    Request,
    request_failure,
    validate_request,
)
from sleeve.ids import content_hash, stable_id
from sleeve.jobs import RESULT_NAME
from sleeve.registry import canary_version, get_version, production_version, serves_canary
from sleeve.settings import Settings
from sleeve.stages import record_stage
from sleeve.store import ObjectStore, read_json, write_json
from sleeve.warehouse import Warehouse

log = logging.getLogger(__name__)

DAG_ID, STAGE = "batch_generate", "generate"
DEFAULT_KINDS = ("user", "demo", "backfill")  # personalize requests are rendered by their own DAG
CANARY_KINDS = ("user", "demo")  # users' own requests; a backfill names its model
BASE_VERSION = "base"

_SELECT = """
SELECT r.request_id, r.song_id, r.prompt_id, r.kind, r.num_images, r.model_version, r.seed, r.width,
       r.height, r.steps, r.created_at, p.positive, p.negative, p.prompt_version,
       p.prompt_id IS NOT NULL AS prompt_found
FROM generation_requests AS r LEFT JOIN prompts AS p ON p.prompt_id = r.prompt_id
"""


def select_requests(warehouse: Warehouse, start: datetime, end: datetime, *, kinds=DEFAULT_KINDS,
                    request_ids: list[str] | None = None, limit: int = 10_000) -> list[dict]:
    """The requests this interval's run generates, oldest first."""
    params = {"start": start, "end": end, "kinds": list(kinds), "limit": limit}
    sql = _SELECT + (" WHERE r.created_at < @end AND (r.status = 'pending' OR r.batch_interval_start = @start)"
                     " AND r.kind IN UNNEST(@kinds)")
    if request_ids is not None:
        sql += " AND r.request_id IN UNNEST(@ids)"
        params["ids"] = list(request_ids)
    return warehouse.query(sql + " ORDER BY r.created_at, r.request_id LIMIT @limit", params)


def load_requests(warehouse: Warehouse, request_ids: list[str]) -> list[dict]:
    return warehouse.query(_SELECT + " WHERE r.request_id IN UNNEST(@ids) ORDER BY r.created_at, r.request_id",
                           {"ids": list(request_ids)})


def create_backfill(warehouse: Warehouse, *, created_at: datetime, date_from: datetime | None = None,
                    date_to: datetime | None = None, song_ids: list[str] | None = None,
                    prompt_version: str | None = None, model_version: str | None = None,
                    num_images: int = 4) -> dict:
    """Insert ``backfill`` requests for the songs requested in [date_from, date_to) and/or
    ``song_ids``, each with its latest prompt (of ``prompt_version`` if given), for
    ``model_version`` (default: the production model now, so the request id pins it).
    Existing requests are left as they are (a re-run does not reset finished ones)."""
    if not (date_from and date_to) and not song_ids:
        raise ValueError("a backfill needs a date range (backfill_from and backfill_to) or song_ids")
    songs = set(song_ids or [])
    if date_from and date_to:
        rows = warehouse.query(
            "SELECT DISTINCT song_id FROM generation_requests WHERE created_at >= @a AND created_at < @b "
            "AND kind != 'backfill' AND song_id IS NOT NULL", {"a": date_from, "b": date_to})
        songs |= {r["song_id"] for r in rows}
    version = model_version or _production(warehouse)["version"]
    sql = "SELECT prompt_id, song_id, created_at FROM prompts WHERE song_id IN UNNEST(@songs)"
    params: dict = {"songs": sorted(songs)}
    if prompt_version:
        sql += " AND prompt_version = @pv"
        params["pv"] = prompt_version
    latest: dict[str, dict] = {}
    for row in warehouse.query(sql + " ORDER BY created_at, prompt_id", params):
        latest[row["song_id"]] = row
    wanted = {
        stable_id("backfill", p["song_id"], p["prompt_id"], version, num_images): p for p in latest.values()
    }
    existing = {r["request_id"] for r in warehouse.query(
        "SELECT request_id FROM generation_requests WHERE request_id IN UNNEST(@ids)", {"ids": sorted(wanted)})}
    warehouse.upsert("generation_requests", [
        {"request_id": rid, "song_id": p["song_id"], "prompt_id": p["prompt_id"], "kind": "backfill",
         "num_images": num_images, "model_version": version, "status": "pending",
         "created_at": created_at, "updated_at": created_at}
        for rid, p in wanted.items() if rid not in existing
    ])
    no_prompt = sorted(songs - set(latest))
    if no_prompt:
        log.warning("backfill: %d song(s) have no prompt%s", len(no_prompt),
                    f" of version {prompt_version}" if prompt_version else "")
    return {"request_ids": sorted(wanted), "created": len(set(wanted) - existing), "no_prompt": no_prompt,
            "model_version": version}


def _production(warehouse: Warehouse) -> dict:
    """The production style model, or the base model alone when none is registered."""
    row = production_version(warehouse, kind="style")
    return row if row else {"version": BASE_VERSION}


def resolve_model(warehouse: Warehouse, version: str | None, base_model: str, *, style_weight: float = 1.0,
                  combine_style: bool = True, cache: dict | None = None) -> dict:
    """The model spec of a shard manifest for a request's ``model_version`` (None = production
    now). A DreamBooth adapter is combined with the production style LoRA, if any and if
    ``combine_style``. Each adapter carries its lineage (``version``, ``kind``, ``user_id``),
    which :func:`image_rows` records on every image. Raises LookupError for an unknown version."""
    cache = {} if cache is None else cache
    if version in cache:
        return cache[version]
    if version is None:
        row = _production(warehouse)
    elif version == BASE_VERSION:
        row = {"version": BASE_VERSION}
    else:
        row = get_version(warehouse, version)
        if not row:
            raise LookupError(f"unknown model version {version!r}")
    spec = {"version": row["version"], "base_model": row.get("base_model") or base_model, "adapters": []}
    if row.get("adapter_uri"):
        spec["adapters"].append({"uri": row["adapter_uri"], "weight": 1.0, **_lineage(row)})
    if row.get("kind") == "dreambooth" and combine_style:
        style = _production(warehouse)
        if style.get("adapter_uri"):
            spec["adapters"].append({"uri": style["adapter_uri"], "weight": style_weight, **_lineage(style)})
            spec["version"] = f"{row['version']}+{style['version']}"
    cache[version] = spec
    return spec


def _lineage(version_row: dict) -> dict:
    return {"version": version_row["version"], "kind": version_row.get("kind"), "user_id": version_row.get("user_id")}


def adapter_lineage(model_spec: dict) -> str:
    """The ``images.adapters`` value for images made with ``model_spec`` (a shard manifest's
    ``model``): JSON list of ``{uri, version, kind, user_id}``; ``[]`` for the base model alone."""
    keys = ("uri", "version", "kind", "user_id")
    return json.dumps([{k: a.get(k) for k in keys} for a in model_spec.get("adapters") or []], sort_keys=True)


def manifest_request(row: dict, defaults: dict) -> dict:
    """A request row as a shard manifest row, checked as the job will check it (types, zero
    vs missing, ranges): raises BadRequest with the reason, so a bad row fails alone here."""
    request = {
        "request_id": row.get("request_id"), "prompt": row.get("positive") or "",
        "negative_prompt": row.get("negative") or "", "num_images": row.get("num_images"),
        "seed": row.get("seed"), "width": row.get("width"), "height": row.get("height"), "steps": row.get("steps"),
    }
    reason = validate_request(Request.from_dict(request), Defaults(**defaults))
    if reason:
        raise BadRequest(reason)
    return request


def plan_shards(warehouse: Warehouse, store: ObjectStore, requests: list[dict], *, base_model: str,
                defaults: dict, shard_size: int = 16, style_weight: float = 1.0, combine_style: bool = True,
                prefix: str = "generate/", canary_share: float = 0.0) -> dict:
    """Group requests by model and cut them into shards of ``shard_size`` requests; write each
    shard manifest content-addressed under ``prefix`` (same requests + model -> same manifest
    and output URI). A request with no model version gets production, or the canary when one
    is running and :func:`sleeve.registry.serves_canary` puts the request in its
    ``canary_share``. Requests that cannot be planned (missing prompt, unknown model) come back
    in ``failed``."""
    failed, by_model, specs = [], {}, {}
    cache: dict = {}
    canary = canary_version(warehouse, "style") if canary_share > 0 else None
    for row in requests:
        if not row.get("prompt_found"):
            failed.append(request_failure(row, f"prompt {row.get('prompt_id')!r} not found"))
            continue
        version = row.get("model_version")
        if version is None and canary and row.get("kind") in CANARY_KINDS \
                and serves_canary(row["request_id"], canary_share):
            version = canary["version"]
        try:
            request = manifest_request(row, defaults)
            spec = resolve_model(warehouse, version, base_model, style_weight=style_weight,
                                 combine_style=combine_style, cache=cache)
        except (BadRequest, LookupError) as exc:
            failed.append(request_failure(row, str(exc)))
            continue
        specs[spec["version"]] = spec
        by_model.setdefault(spec["version"], []).append(request)
    shards = []
    for version, rows in by_model.items():
        for i in range(0, len(rows), max(1, shard_size)):
            manifest = {"kind": "sleeve.generate.shard/v1", "model": specs[version], "defaults": defaults,
                        "requests": rows[i:i + shard_size]}
            digest = content_hash(manifest)
            key = f"{prefix}manifests/{digest[:2]}/{digest}.json"
            write_json(store, key, manifest, create_only=True)
            shards.append({"manifest_uri": store.uri(key), "output_uri": store.uri(f"{prefix}results/{digest}"),
                           "model_version": version, "requests": len(manifest["requests"])})
    return {"shards": shards, "failed": failed}


def plan_key(start: datetime, params: dict) -> str:
    """Where a run's plan lives: keyed by data interval and params, so plan and record (and a
    re-run) agree on it without passing it through XCom."""
    return f"generate/plans/{start:%Y%m%dT%H%M%S}-{content_hash(dict(params))[:16]}.json"


def plan_run(warehouse: Warehouse, store: ObjectStore, params: dict, *, start: datetime, end: datetime,
             backfill_range: tuple[datetime, datetime] | None, settings: Settings) -> list[dict]:
    """The plan step: create the backfill's requests (``mode=backfill``), select the run's
    requests, write their shard manifests and the plan; returns the shards to generate.
    Requests without their own size or steps get ``SLEEVE_GEN_SIZE`` / ``SLEEVE_GEN_STEPS``."""
    request_ids, backfill = None, None
    if params["mode"] == "backfill":
        date_from, date_to = backfill_range or (None, None)
        backfill = create_backfill(
            warehouse, created_at=start, date_from=date_from, date_to=date_to, song_ids=params.get("song_ids"),
            prompt_version=params.get("prompt_version"), model_version=params.get("model_version"),
            num_images=params["num_images"])
        request_ids = backfill["request_ids"]
    requests = select_requests(warehouse, start, end, kinds=params.get("kinds") or DEFAULT_KINDS,
                               request_ids=request_ids, limit=params["max_requests"])
    defaults = {"width": settings.gen_size, "height": settings.gen_size, "steps": settings.gen_steps}
    share = params.get("canary_share")
    planned = plan_shards(warehouse, store, requests, base_model=settings.base_model, defaults=defaults,
                          shard_size=params["shard_size"],
                          canary_share=settings.canary_share if share is None else float(share))
    write_json(store, plan_key(start, params), {
        "request_ids": [r["request_id"] for r in requests], "failed": planned["failed"],
        "shards": planned["shards"], "backfill": backfill})
    return planned["shards"]


def job_config(params: dict, store_url: str) -> dict:
    """``inference.generate_job``'s config for this run."""
    return {"store_url": store_url, "format": params["format"]}


def shard_outcome(shard: dict, result: dict) -> dict:
    """What a generate task hands to record: where the shard's result is, and its counts."""
    return {"manifest_uri": shard["manifest_uri"], "result_uri": f"{shard['output_uri']}/{RESULT_NAME}",
            "images": len(result.get("images", [])), "failed": len(result.get("failed", []))}


def record_run(warehouse: Warehouse, store: ObjectStore, params: dict, *, start: datetime, end: datetime,
               started_at: datetime | None = None) -> dict:
    """The record step: :func:`record_results` for the requests and shards of the run's plan.
    It runs when every shard has finished, failed ones included: the shards that made their
    images are recorded, and a failed shard's requests stay pending with its reason."""
    key = plan_key(start, params)
    if not store.exists(key):
        raise RuntimeError(f"no plan at {key}: the plan task did not finish, so there is nothing to record")
    body = read_json(store, key)
    backfill = body.get("backfill")
    extra = {"backfill_created": backfill["created"], "backfill_no_prompt": len(backfill["no_prompt"])} \
        if backfill else {}
    results = [{"manifest_uri": s["manifest_uri"], "result_uri": f"{s['output_uri']}/{RESULT_NAME}"}
               for s in body["shards"]]
    return record_results(warehouse, store, requests=load_requests(warehouse, body["request_ids"]),
                          results=results, plan_failed=body["failed"], start=start, end=end,
                          extra_stats=extra, started_at=started_at)


def record_images(warehouse: Warehouse, store: ObjectStore, *, requests: list[dict], results: list[dict],
                  plan_failed: list[dict], data_time: Callable[[dict], datetime],
                  interval_start: datetime | None = None) -> dict:
    """Upsert ``images`` rows and the requests' status from the shards' result manifests.
    Everything is keyed, so a re-run writes the same rows. ``results`` holds, per shard,
    ``{"manifest_uri", "result_uri"}``; ``data_time(request)`` dates a request's images and
    status; ``interval_start`` is the batch_generate interval that rendered them (None for
    other stages). A shard with no result (its job failed) leaves its requests pending, with
    the job's error as their reason, for the next run. Returns ``{"images", "failed":
    {request_id: reason}, "retry": {request_id: reason}, "failed_shards", "skipped_existing",
    "gpu_seconds"}``."""
    by_id = {r["request_id"]: r for r in requests}
    images, failed = [], {f["request_id"]: f["reason"] for f in plan_failed}
    retry: dict[str, str] = {}
    skipped, gpu_seconds, failed_shards = 0, 0.0, 0
    for shard in results:
        result_key = store_key(store, shard["result_uri"])
        if not store.exists(result_key):
            failed_shards += 1
            reason = f"shard failed, retried next run: {shard_error(store, result_key)}"[:500]
            manifest = read_json(store, store_key(store, shard["manifest_uri"]))
            retry.update({row["request_id"]: reason for row in manifest["requests"]})
            log.warning("shard %s has no result: %s", shard["manifest_uri"], reason)
            continue
        result = read_json(store, result_key)
        gpu_seconds += float(result.get("gpu_seconds") or 0.0)
        skipped += int(result.get("stats", {}).get("skipped_existing", 0))
        failed.update({f["request_id"]: f["reason"] for f in result.get("failed", [])})
        images += image_rows(result, by_id, shard["manifest_uri"], data_time)
    warehouse.upsert("images", images)
    made: dict[str, int] = {}
    version_of: dict[str, str] = {}
    for img in images:
        made[img["request_id"]] = made.get(img["request_id"], 0) + 1
        version_of[img["request_id"]] = img["model_version"]
    updates = []
    for rid, req in by_id.items():
        if rid in failed:
            status, reason = "failed", failed[rid]
        elif rid in retry:
            status, reason = "pending", retry[rid]
        elif made.get(rid, 0) >= (DEFAULT_IMAGES if req.get("num_images") is None else req["num_images"]):
            status, reason = "done", None
        else:
            status, reason = "pending", None  # not in any shard result (should not happen): retry next run
        # A request without a model is pinned to the one "production" meant, so a later re-run
        # reproduces the same images. (Every row carries every column: upsert sets missing ones NULL.)
        updates.append({"request_id": rid, "status": status, "reason": reason, "updated_at": data_time(req),
                        "batch_interval_start": interval_start if status != "pending" else None,
                        "model_version": req.get("model_version") or version_of.get(rid)})
    warehouse.upsert("generation_requests", updates)
    return {"images": len(images), "failed": failed, "retry": retry, "failed_shards": failed_shards,
            "skipped_existing": skipped, "gpu_seconds": round(gpu_seconds, 3)}


def shard_error(store: ObjectStore, result_key: str) -> str:
    """Why a shard has no result: the job's ``error.json`` beside it, or what is known."""
    error_key = result_key.rsplit("/", 1)[0] + "/" + ERROR_NAME
    if store.exists(error_key):
        return str(read_json(store, error_key).get("error") or "unknown error")
    return "the job wrote no result (killed, or it never started); see the generate task's log"


def record_results(warehouse: Warehouse, store: ObjectStore, *, requests: list[dict], results: list[dict],
                   plan_failed: list[dict], start: datetime, end: datetime, extra_stats: dict | None = None,
                   started_at: datetime | None = None) -> dict:
    """batch_generate's record step: :func:`record_images` for the interval, then the run's
    ``stage_runs`` row."""
    recorded = record_images(warehouse, store, requests=requests, results=results, plan_failed=plan_failed,
                             data_time=lambda req: _at(req, start), interval_start=start)
    stats = {"requests": len(requests), "images": recorded["images"], "failed": len(recorded["failed"]),
             "retry": len(recorded["retry"]), "skipped_existing": recorded["skipped_existing"],
             "gpu_seconds": recorded["gpu_seconds"], "shards": len(results), "failed_shards": recorded["failed_shards"],
             **(extra_stats or {})}
    # Durations only (``started_at`` is when the run's first task began): never a key.
    record_stage(warehouse, DAG_ID, STAGE, (start, end), status="failed" if recorded["failed_shards"] else "success",
                 stats=stats, started_at=started_at, finished_at=datetime.now(UTC) if started_at else None)
    return stats


def image_rows(result: dict, requests: dict[str, dict], manifest_uri: str,
               created_at: Callable[[dict], datetime]) -> list[dict]:
    """``images`` rows, with their lineage (prompt, seed, model version, the adapters used, shard
    manifest), for the images a generate job's ``result`` reports (its ``model`` is the shard
    manifest's model spec). ``requests`` maps request id to its row."""
    # A result without its model spec leaves the lineage unknown (NULL), never "no adapters".
    rows, adapters = [], adapter_lineage(result["model"]) if result.get("model") else None
    for img in result.get("images", []):
        req = requests[img["request_id"]]
        rows.append({
            "image_id": img["image_id"], "request_id": img["request_id"], "image_index": img["image_index"],
            "uri": img["uri"], "thumb_uri": img["thumb_uri"], "sha256": img["sha256"],
            "prompt_id": req.get("prompt_id"), "prompt_version": req.get("prompt_version"), "seed": img["seed"],
            "model_version": img["model_version"], "adapters": adapters, "manifest_uri": manifest_uri,
            "width": img["width"], "height": img["height"], "steps": img["steps"], "created_at": created_at(req),
        })
    return rows


def _at(request: dict, start: datetime) -> datetime:
    """Data time of a request's images: its interval's start, or the request time if later."""
    created = request.get("created_at")
    return max(created, start) if created else start


def store_key(store: ObjectStore, uri: str) -> str:
    """The key of a URI inside the configured ``store``."""
    prefix = store.uri("x")[:-1]
    if not uri.startswith(prefix):
        raise ValueError(f"{uri} is not in the configured store {store.url}")
    return uri[len(prefix):]
