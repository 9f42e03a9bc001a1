"""What product_shots shoots and how its results are recorded (warehouse side, no Airflow).

plan:    products (Params) -> validated info, photo and placements -> background prompts (LLM or
         offline) -> ``product_requests`` rows -> shard manifests for ``inference.product_job``
record:  result manifests -> ``product_shots`` rows (full lineage) + request status + ``stage_runs``

A bad product (unreadable photo, invalid info, a position out of range, text against the content
policy) fails alone: its ``product_requests`` row says why and the other products go on.
Requests and shots are keyed by content (the product as given and the settings that decide the
pixels), so re-running a run writes the same rows and makes no shot twice.

Product shots are reviewed like covers, through :func:`sleeve.reviews.record_reviews`, with the
shot id in ``reviews.image_id``. They get no ``images`` row on purpose: ``images`` is what the
cover model learns from (the weekly snapshot) and what the cover grid shows, and a product photo
must never train the album-cover LoRA.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from sleeve.ids import content_hash, sha256_bytes, stable_id
from sleeve.jobs import RESULT_NAME
from sleeve.settings import Settings
from sleeve.stages import record_stage
from sleeve.store import ObjectStore, StoreError, open_uri, read_json, write_json
from sleeve.warehouse import Warehouse

log = logging.getLogger(__name__)

DAG_ID, STAGE = "product_shots", "product"
MAX_PRODUCTS, MAX_VARIANTS, MAX_PLACEMENTS = 500, 8, 6
PREFIX = "products/"


def product_entries(params: dict) -> list[dict]:
    """The products of a run: the form's ``product`` + ``photo_uri`` (if given) then ``products``."""
    entries = [dict(e) if isinstance(e, dict) else {"invalid": e} for e in params.get("products") or []]
    if params.get("product") or params.get("photo_uri"):
        entries.insert(0, {"product": params.get("product"), "photo_uri": params.get("photo_uri")})
    if not entries:
        raise ValueError("nothing to shoot: give product and photo_uri, or a products list")
    if len(entries) > MAX_PRODUCTS:
        raise ValueError(f"{len(entries)} products in one run; at most {MAX_PRODUCTS} (split the run)")
    return entries


def render_settings(params: dict, settings: Settings) -> dict:
    """The shard manifest's ``defaults``: what decides a shot's pixels besides its product."""
    return {"size": params.get("size") or settings.gen_size, "steps": params["steps"],
            "guidance_scale": params["guidance_scale"], "harmonise": params["harmonise"],
            "shadow": params.get("shadow", 0.45)}


def check_render_settings(defaults: dict) -> None:
    from inference.generator import MAX_SIDE, MAX_STEPS, MIN_SIDE, SIDE_MULTIPLE

    size, steps = defaults["size"], defaults["steps"]
    if not MIN_SIDE <= size <= MAX_SIDE or size % SIDE_MULTIPLE:
        raise ValueError(f"size={size}: the shot side must be a multiple of {SIDE_MULTIPLE} in {MIN_SIDE}..{MAX_SIDE}")
    if not 1 <= steps <= MAX_STEPS:
        raise ValueError(f"steps={steps} is out of range 1..{MAX_STEPS}")
    if not 0 <= defaults["harmonise"] <= 0.6:
        raise ValueError(f"harmonise={defaults['harmonise']} is out of range: an img2img strength in [0, 0.6] (0 = off)")


def plan_product(entry: dict, params: dict, store: ObjectStore, prompter, *, key: dict, at: datetime) -> dict:
    """One ``product_requests`` row: pending with its prompt and placements, or failed with
    the reason (nothing else about a bad product reaches the GPU)."""
    from inference.product_composite import PlacementError, parse_placement
    from inference.product_matting import MattingError, load_photo
    from inference.product_prompts import ProductInfoError, check_product_info

    request_id = stable_id("product-request", content_hash({"entry": entry, **key}))
    uri, variants = entry.get("photo_uri"), entry.get("variants") or params["variants"]
    row = {"request_id": request_id, "photo_uri": uri if isinstance(uri, str) else None, "status": "failed",
           "model_version": key["model_version"], "matting": key["matting"]["backend"], "created_at": at,
           "updated_at": at, "variants": variants if type(variants) is int else None}
    try:
        unknown = sorted(set(entry) - {"product", "photo_uri", "positions", "scale", "variants"})
        if unknown:
            raise ValueError(f"a products item has unknown field(s) {unknown}")
        info = check_product_info(entry.get("product"))
        row.update(name=info["name"], info=json.dumps(info, ensure_ascii=False, sort_keys=True))
        if isinstance(variants, bool) or not isinstance(variants, int) or not 1 <= variants <= MAX_VARIANTS:
            raise ValueError(f"variants={variants!r} is out of range 1..{MAX_VARIANTS}")
        positions = entry.get("positions") or params["positions"]
        if not isinstance(positions, list) or not 1 <= len(positions) <= MAX_PLACEMENTS:
            raise PlacementError(f"positions must be a list of 1-{MAX_PLACEMENTS} positions, got {positions!r}")
        placements = [parse_placement(p, entry.get("scale", params["scale"])) for p in positions]
        if len({p.key for p in placements}) < len(placements):
            raise PlacementError("positions repeat one another")
        row["placements"] = json.dumps([p.to_dict() for p in placements])
        if not isinstance(uri, str) or not uri:
            raise ValueError("photo_uri is missing: upload the product photo to the store and give its URI")
        try:
            source, photo_key = open_uri(uri, store)
            data = source.get_bytes(photo_key)
        except (StoreError, OSError, LookupError, ValueError) as exc:
            raise ValueError(f"the photo {uri} cannot be read from the store ({type(exc).__name__})") from None
        load_photo(data)  # bounded decode now, so a corrupt or huge upload never reaches a GPU
        prompt = prompter.prompt(info)
    except (ProductInfoError, PlacementError, MattingError, ValueError) as exc:
        return {**row, "reason": str(exc)}
    return {**row, "status": "pending", "reason": None, "photo_sha256": sha256_bytes(data),
            "product_id": stable_id("product", sha256_bytes(data), content_hash(info)),
            "variants": variants, "prompt_source": prompt.source, "prompt_version": prompt.version,
            "fallback_reason": prompt.fallback_reason,
            "prompt": json.dumps({k: v for k, v in prompt.to_dict().items() if k in ("scene", "lighting", "surface",
                                                                                  "palette", "mood")}),
            "positive": prompt.positive, "negative": prompt.negative}


def manifest_product(row: dict) -> dict:
    return {"request_id": row["request_id"], "product_id": row["product_id"], "photo_uri": row["photo_uri"],
            "positive": row["positive"], "negative": row["negative"], "seed": None, "variants": row["variants"],
            "placements": json.loads(row["placements"])}


def plan_key(start: datetime, params: dict) -> str:
    return f"{PREFIX}plans/{start:%Y%m%dT%H%M%S}-{content_hash(dict(params))[:16]}.json"


def plan_run(warehouse: Warehouse, store: ObjectStore, params: dict, *, start: datetime, prompter,
             settings: Settings) -> list[dict]:
    """The plan step: a ``product_requests`` row per product, shard manifests for the good
    ones and the run's plan (in the store, where record finds it); returns the shards."""
    from inference.shards import resolve_model

    defaults = render_settings(params, settings)
    check_render_settings(defaults)
    model = resolve_model(warehouse, params.get("model_version") or "base", settings.base_model, combine_style=False)
    matting = {"backend": params.get("matting") or "opencv", "model": params.get("matting_model") or None}
    key = {"model_version": model["version"], "defaults": defaults, "matting": matting, "prompter": prompter.version,
           "positions": params["positions"], "scale": params["scale"], "variants": params["variants"]}
    rows = [plan_product(e, params, store, prompter, key=key, at=start) for e in product_entries(params)]
    warehouse.upsert("product_requests", rows)
    good = [r for r in rows if r["status"] == "pending"]
    shards, size = [], max(1, int(params.get("shard_size") or 8))
    for i in range(0, len(good), size):
        manifest = {"kind": "sleeve.product.shard/v1", "model": model, "matting": matting, "defaults": defaults,
                    "products": [manifest_product(r) for r in good[i:i + size]]}
        digest = content_hash(manifest)
        manifest_key = f"{PREFIX}manifests/{digest[:2]}/{digest}.json"
        write_json(store, manifest_key, manifest, create_only=True)
        shards.append({"manifest_uri": store.uri(manifest_key), "output_uri": store.uri(f"{PREFIX}results/{digest}"),
                       "products": len(manifest["products"])})
    write_json(store, plan_key(start, params), {"request_ids": [r["request_id"] for r in rows], "shards": shards})
    for row in rows:
        if row["status"] == "failed":
            log.warning("product %s not shot: %s", row.get("name") or row["request_id"], row["reason"])
    return shards


def job_config(params: dict, store_url: str) -> dict:
    return {"store_url": store_url}


def shard_outcome(shard: dict, result: dict) -> dict:
    return {"manifest_uri": shard["manifest_uri"], "result_uri": f"{shard['output_uri']}/{RESULT_NAME}",
            "shots": len(result.get("shots", [])), "failed": len(result.get("failed", []))}


def shot_row(shot: dict, request: dict, manifest_uri: str, at: datetime) -> dict:
    p = shot["placement"]
    return {
        "shot_id": shot["shot_id"], "request_id": shot["request_id"], "product_id": shot["product_id"],
        "name": request.get("name"), "variant": shot["variant"], "position": p["name"], "x": p["x"], "y": p["y"],
        "scale": p["scale"], "moved": shot["moved"], "uri": shot["uri"], "thumb_uri": shot["thumb_uri"],
        "sha256": shot["sha256"], "width": shot["width"], "height": shot["height"],
        "upload_uri": request.get("photo_uri"), "photo_uri": shot["photo_uri"], "mask_uri": shot["mask_uri"],
        "matting": shot["matting"], "background_uri": shot["background_uri"], "prompt": shot["prompt"],
        "negative": shot["negative"], "prompt_version": request.get("prompt_version"), "seed": shot["seed"],
        "model_version": shot["model_version"], "base_model": shot["base_model"], "steps": shot["steps"],
        "guidance_scale": shot["guidance_scale"], "harmonise": shot["harmonise"],
        "fidelity_psnr_db": shot["fidelity_psnr_db"], "fidelity": json.dumps(shot["fidelity"], sort_keys=True),
        "manifest_uri": manifest_uri, "created_at": at,
    }


def record_run(warehouse: Warehouse, store: ObjectStore, params: dict, *, start: datetime, end: datetime,
               results: list[dict], started_at: datetime | None = None) -> dict:
    """The record step: ``product_shots`` rows, each request's status, the run's stage_runs row."""
    from inference.shards import store_key

    plan = read_json(store, plan_key(start, params))
    requests = {r["request_id"]: r for r in warehouse.query(
        "SELECT * FROM product_requests WHERE request_id IN UNNEST(@ids)", {"ids": plan["request_ids"] or [""]})}
    shots, failed, gpu_seconds, skipped = [], {}, 0.0, 0
    for shard in results:
        result = read_json(store, store_key(store, shard["result_uri"]))
        gpu_seconds += float(result.get("gpu_seconds") or 0.0)
        skipped += int(result.get("stats", {}).get("skipped_existing", 0))
        for f in result.get("failed", []):
            where = f" ({f['placement']}, variant {f['variant']})" if "placement" in f else ""
            failed.setdefault(f["request_id"], []).append(f["reason"] + where)
        shots += [shot_row(s, requests[s["request_id"]], shard["manifest_uri"], start) for s in result.get("shots", [])]
    warehouse.upsert("product_shots", shots)
    made: dict[str, int] = {}
    for shot in shots:
        made[shot["request_id"]] = made.get(shot["request_id"], 0) + 1
    updates = []
    for rid, req in requests.items():
        if req["status"] == "failed":
            continue  # failed at plan time (which always runs first): its row already says why
        expected = req["variants"] * len(json.loads(req["placements"] or "[]"))
        reasons = failed.get(rid) or ([] if made.get(rid, 0) >= expected else ["not in any shard result"])
        updates.append({**req, "status": "failed" if reasons else "done", "reason": "; ".join(reasons)[:1000] or None,
                        "shots": made.get(rid, 0), "updated_at": start})
    warehouse.upsert("product_requests", updates)
    status = {rid: req["status"] for rid, req in requests.items()} | {u["request_id"]: u["status"] for u in updates}
    stats = {"products": len(requests), "shots": len(shots), "failed": sum(s == "failed" for s in status.values()), "skipped_existing": skipped,
             "gpu_seconds": round(gpu_seconds, 3), "shards": len(results),
             "lowest_fidelity_psnr_db": min((s["fidelity_psnr_db"] for s in shots), default=None)}
    record_stage(warehouse, DAG_ID, STAGE, (start, end), status="success", stats=stats, started_at=started_at,
                 finished_at=datetime.now(UTC) if started_at else None)
    return stats
