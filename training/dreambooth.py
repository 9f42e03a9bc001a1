"""DreamBooth-LoRA per user, on top of the weekly LoRA trainer (no second training loop).

A request (user, 3-20 photos, class noun, prompts to render) becomes a
``personalization_requests`` row. Training teaches the user's rare identifier token with the
instance prompt ``a photo of <token> <class noun>`` while class prior preservation keeps the
class itself intact: images of ``a photo of a <class noun>`` made by the base model, cached
per (base model, class noun, count, resolution) in the store and shared by every user. The
adapter lands under ``users/<user_id>/adapters/<request_id>/`` and in the registry as kind
``dreambooth`` with the user id, never aliased.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection
from datetime import UTC, datetime

from sleeve.ids import content_hash, sha256_bytes, stable_id
from sleeve.keys import adapter_prefix, check_user_id, personalize_prefix, uploads_prefix
from sleeve.store import ObjectStore, read_json, write_json
from sleeve.warehouse import Warehouse
from training.photos import (
    PhotoError,
    PhotoLimits,
    read_uploads,
    store_photos,
    validate_photos,
)

# Identifier tokens are consonant-only (no vowels, no 'y'), so they are not pronounceable words
# in English; the few consonant-only strings that are words, abbreviations or famous
# DreamBooth tokens are refused too, and so is anything the tokenizer knows as a whole word.
CONSONANTS = "bcdfghjklmnpqrstvwxz"
TOKEN_LENGTH = 4
KNOWN_CONSONANT_WORDS = frozenset("""
sks hmm hmmm brr brrr grr grrr psst pst shh shhh pfft tsk nth cwm crwth mm mmm zzz zzzz
html http www xml pdf jpg png gif mp vs mr mrs ms dr st nd rd th pm tv dvd cd bbc cnn nyc
lgbt ncaa nfl nba mlb nhl jfk fbi cia nsa ftp ssh tcp dns gps sql css js kpop bts twt
""".split())
CLASS_IMAGES_PER_REQUEST = 16  # the batch generator's per-request limit
_CLASS_NOUN = re.compile(r"^[a-z][a-z -]{1,30}[a-z]$")


class RequestError(ValueError):
    """A personalisation request is malformed; the message says what to fix."""


def is_known_word(candidate: str, vocab: Collection[str] = ()) -> bool:
    """True if ``candidate`` is a word we know: the list above or a whole-word tokenizer entry
    (CLIP marks word ends with ``</w>``)."""
    c = candidate.lower()
    return c in KNOWN_CONSONANT_WORDS or c in vocab or f"{c}</w>" in vocab


def choose_token(user_id: str, vocab: Collection[str] = (), length: int = TOKEN_LENGTH) -> str:
    """The user's identifier token: derived from the user id alone (the same user always gets
    the same token), never a known word."""
    for attempt in range(1000):
        digest = hashlib.sha256(f"dreambooth-token|{user_id}|{attempt}".encode()).digest()
        candidate = "".join(CONSONANTS[b % len(CONSONANTS)] for b in digest[:length])
        if not is_known_word(candidate, vocab):
            return candidate
    raise RuntimeError("no free identifier token found")  # 20**4 candidates: practically unreachable


def instance_prompt(token: str, class_noun: str) -> str:
    return f"a photo of {token} {class_noun}"


def class_prompt(class_noun: str) -> str:
    return f"a photo of a {class_noun}"


def check_class_noun(class_noun: str) -> str:
    noun = (class_noun or "").strip().lower()
    if not _CLASS_NOUN.match(noun):
        raise RequestError(f"class noun {class_noun!r} must be a plain lower-case noun such as woman, man, person, dog")
    return noun


def personal_prompt(token: str, class_noun: str, positive: str) -> str:
    """The subject goes first so CLIP's 77-token window never truncates it away."""
    rest = (positive or "").strip()
    return f"{instance_prompt(token, class_noun)}, {rest}" if rest else f"{instance_prompt(token, class_noun)}, album cover"


def request_id_for(user_id: str, upload_hashes: list[str], class_noun: str, prompt_ids: list[str],
                   song_ids: list[str], num_images: int) -> str:
    """Same user, same photos, same ask -> same request (re-submitting never trains twice)."""
    return stable_id("personalize", user_id, sorted(upload_hashes), class_noun, sorted(prompt_ids),
                     sorted(song_ids), int(num_images))


def submit_request(warehouse: Warehouse, store: ObjectStore, user_id: str, photos: list[bytes] | list[str],
                   class_noun: str = "person", prompt_ids: list[str] = (), song_ids: list[str] = (),
                   num_images: int = 1, *, limits: PhotoLimits | None = None, now: datetime | None = None) -> dict:
    """Validate and store the photos, and record the request (status ``pending``, or ``failed``
    with the reason). ``photos`` are raw bytes or object-store URIs of the uploads. Returns the
    request row; an existing request with the same id is returned unchanged."""
    check_user_id(user_id)
    noun = check_class_noun(class_noun)
    prompt_ids, song_ids = sorted(set(prompt_ids or ())), sorted(set(song_ids or ()))
    if not 1 <= int(num_images) <= 16:
        raise RequestError(f"num_images={num_images} is out of range 1..16")
    is_uris = bool(photos) and all(isinstance(p, str) for p in photos)
    uploads = read_uploads(store, list(photos)) if is_uris else [bytes(p) for p in photos]
    hashes = [sha256_bytes(u) if u is not None else f"missing:{p}" for u, p in zip(uploads, photos, strict=True)]
    request_id = request_id_for(user_id, hashes, noun, prompt_ids, song_ids, num_images)
    existing = warehouse.query("SELECT * FROM personalization_requests WHERE request_id = @id", {"id": request_id})
    if existing:
        return existing[0]

    now = now or datetime.now(UTC)  # when the user asked: an event time, not a key
    row = {
        "request_id": request_id, "user_id": user_id, "class_noun": noun, "photo_count": len(uploads),
        "prompt_ids": json.dumps(prompt_ids), "song_ids": json.dumps(song_ids), "num_images": int(num_images),
        "status": "pending", "reason": None, "images": 0, "gpu_seconds": 0.0, "created_at": now, "updated_at": now,
    }
    try:
        normalised = validate_photos(uploads, limits or PhotoLimits())
    except PhotoError as exc:
        row.update(status="failed", reason=f"photos rejected: {exc}", photo_uris=json.dumps([]))
    else:
        row["photo_uris"] = json.dumps(store_photos(store, user_id, normalised))
        if is_uris:  # originals may carry EXIF (GPS): drop the ones kept in the user's upload area
            for uri in photos:
                if uri.startswith(store.url + "/" + uploads_prefix(user_id)):
                    store.delete(uri[len(store.url) + 1:])
    warehouse.upsert("personalization_requests", [row])
    return row


# --- class prior images ---------------------------------------------------------------------

def class_images_key(base_model: str, class_noun: str, count: int, resolution: int) -> str:
    digest = content_hash({"base_model": base_model, "class_noun": class_noun, "count": count,
                           "resolution": resolution})[:16]
    return f"class-images/{digest}/manifest.json"


def ensure_class_images(store: ObjectStore, base_model: str, class_noun: str, count: int, resolution: int,
                        make_generator) -> tuple[list[str], bool]:
    """URIs of ``count`` prior images of the class, made once by the base model and reused across
    users. Returns (uris, cache_hit). ``make_generator()`` gives the batch generator loaded with
    the base model (no adapters); it is called only on a cache miss."""
    key = class_images_key(base_model, class_noun, count, resolution)
    if store.exists(key):
        return read_json(store, key)["uris"], True
    chunks = [(start, min(CLASS_IMAGES_PER_REQUEST, count - start))
              for start in range(0, count, CLASS_IMAGES_PER_REQUEST)]
    result = make_generator().generate([{
        "request_id": stable_id("class-prior", base_model, class_noun, resolution, start), "num_images": n,
        "prompt": class_prompt(class_noun), "width": resolution, "height": resolution,
    } for start, n in chunks], store)
    if result.failed or len(result.images) != count:
        raise RuntimeError(f"class image generation failed: {result.failed}")
    order = {stable_id("class-prior", base_model, class_noun, resolution, start): start for start, _ in chunks}
    uris = [img["uri"] for img in sorted(result.images, key=lambda i: (order[i["request_id"]], i["image_index"]))]
    write_json(store, key, {"base_model": base_model, "class_noun": class_noun, "count": count,
                            "resolution": resolution, "prompt": class_prompt(class_noun), "uris": uris})
    return uris, False


# --- one request, end to end (the DAG's mapped task calls this) ----------------------------

def model_version_for(request_id: str) -> str:
    return f"dreambooth-{request_id}"


def collect_requests(warehouse: Warehouse, *, request_ids: list[str] | None = None, limit: int = 50) -> list[str]:
    """Requests a run handles: the given ids, or every request not finished yet (oldest first).
    Requests whose photos were rejected stay failed until the user sends new photos."""
    if request_ids:
        rows = warehouse.query("SELECT request_id FROM personalization_requests WHERE request_id IN UNNEST(@ids)",
                               {"ids": list(request_ids)})
        unknown = sorted(set(request_ids) - {r["request_id"] for r in rows})
        if unknown:
            raise RequestError(f"unknown personalisation request id(s): {unknown}")
        return sorted(set(request_ids))
    rows = warehouse.query(
        "SELECT request_id FROM personalization_requests WHERE status IN ('pending', 'trained') "
        "ORDER BY created_at, request_id LIMIT @limit", {"limit": limit})
    return [r["request_id"] for r in rows]


def _render_rows(warehouse: Warehouse, request: dict, token: str, version: str) -> list[dict]:
    """One ``generation_requests`` row (kind personalize) per prompt to render: the given
    prompts, each song's latest prompt, or a plain cover prompt when none was asked for."""
    prompt_ids, song_ids = json.loads(request["prompt_ids"] or "[]"), json.loads(request["song_ids"] or "[]")
    prompts = warehouse.query(
        "SELECT prompt_id, song_id, positive, negative, prompt_version, created_at FROM prompts "
        "WHERE prompt_id IN UNNEST(@pids) OR song_id IN UNNEST(@sids) ORDER BY created_at, prompt_id",
        {"pids": prompt_ids or [""], "sids": song_ids or [""]})
    chosen = {p["prompt_id"]: p for p in prompts if p["prompt_id"] in prompt_ids}
    latest = {p["song_id"]: p for p in prompts if p["song_id"] in song_ids}  # ordered: last is latest
    chosen.update({p["prompt_id"]: p for p in latest.values()})
    missing = sorted(set(prompt_ids) - set(chosen)) + sorted(set(song_ids) - set(latest))
    if missing:
        raise RequestError(f"no prompt found for {missing}")
    if not chosen:
        chosen = {None: {"prompt_id": None, "song_id": None, "positive": "", "negative": "", "prompt_version": None}}
    return [{
        "request_id": stable_id("personalize", request["request_id"], pid), "song_id": p["song_id"],
        "prompt_id": pid, "user_id": request["user_id"], "kind": "personalize",
        "num_images": request["num_images"], "model_version": version, "prompt_version": p["prompt_version"],
        "positive": personal_prompt(token, request["class_noun"], p["positive"]), "negative": p["negative"] or "",
    } for pid, p in sorted(chosen.items(), key=lambda kv: str(kv[0]))]


def run_request(warehouse: Warehouse, store: ObjectStore, request_id: str, *, base_model: str, run_job,
                train_config: dict | None = None, render: dict | None = None, combine_style: bool = True,
                style_weight: float = 0.7, now: datetime | None = None) -> dict:
    """Train (unless already trained) and render one request; record everything against it.
    ``run_job(module, manifest_uri=, config=, output_uri=) -> result`` is the GPU launcher.
    A finished request returns at once: re-runs never retrain."""
    from inference.shards import image_rows, resolve_model
    from sleeve.registry import register

    rows = warehouse.query("SELECT * FROM personalization_requests WHERE request_id = @id", {"id": request_id})
    if not rows:
        raise RequestError(f"unknown personalisation request {request_id}")
    req = rows[0]
    if req["status"] == "done" or (req["status"] == "failed" and not json.loads(req["photo_uris"] or "[]")):
        return {"request_id": request_id, "status": req["status"], "trained": False, "images": req["images"] or 0}
    now = now or datetime.now(UTC)
    user_id, version = req["user_id"], model_version_for(request_id)
    base = personalize_prefix(user_id, request_id)
    gpu_seconds = float(req["gpu_seconds"] or 0.0)
    trained_now = False

    # 1. Train: the job reuses a finished adapter at its output, so a crash after training and
    #    before this row was written does not train twice either.
    if not req["model_version"]:
        manifest = {"request_id": request_id, "user_id": user_id, "class_noun": req["class_noun"],
                    "photo_uris": json.loads(req["photo_uris"]), "base_model": base_model, "store_url": store.url,
                    "model_version": version, "manifest_uri": store.uri(base + "train-manifest.json")}
        write_json(store, base + "train-manifest.json", manifest)
        result = run_job("training.personalize_job", manifest_uri=store.uri(base + "train-manifest.json"),
                         config=dict(train_config or {}), output_uri=store.uri(adapter_prefix(user_id, request_id)))
        trained_now = not result.get("reused")
        gpu_seconds += float(result.get("gpu_seconds") or 0.0)
        metrics = {k: result[k] for k in ("token", "class_noun", "instance_prompt", "class_prompt", "steps",
                                          "final_loss", "rank", "alpha", "prior_loss_weight", "train_text_encoder",
                                          "photos", "class_cache_hit")}
        register(warehouse, version=version, kind="dreambooth", base_model=base_model,
                 adapter_uri=result["adapter_uri"], manifest_uri=store.uri(base + "train-manifest.json"),
                 metrics=metrics, training_run_id=request_id, user_id=user_id, alias=None, now=now)
        req.update(status="trained", token=result["token"], model_version=version, gpu_seconds=gpu_seconds,
                   updated_at=now)
        warehouse.upsert("personalization_requests", [_request_update(req)])

    # 2. Render through the batch generator: the user's adapter (+ production style LoRA).
    gen_rows = _render_rows(warehouse, req, req["token"], version)
    known = {r["request_id"] for r in warehouse.query(
        "SELECT request_id FROM generation_requests WHERE request_id IN UNNEST(@ids)",
        {"ids": [r["request_id"] for r in gen_rows]})}
    warehouse.upsert("generation_requests", [
        {k: r[k] for k in ("request_id", "song_id", "prompt_id", "user_id", "kind", "num_images", "model_version")}
        | {"status": "pending", "created_at": req["created_at"], "updated_at": now}
        for r in gen_rows if r["request_id"] not in known])
    spec = resolve_model(warehouse, version, base_model, style_weight=style_weight)
    if not combine_style:
        spec = {**spec, "version": version, "adapters": spec["adapters"][:1]}
    shard = {"kind": "sleeve.generate.shard/v1", "model": spec, "defaults": dict(render or {}),
             "requests": [{"request_id": r["request_id"], "prompt": r["positive"], "negative_prompt": r["negative"],
                           "num_images": r["num_images"]} for r in gen_rows]}
    digest = content_hash(shard)[:16]
    write_json(store, f"{base}render-{digest}.json", shard)
    result = run_job("inference.generate_job", manifest_uri=store.uri(f"{base}render-{digest}.json"),
                     config={"store_url": store.url}, output_uri=store.uri(f"{base}render-{digest}"))
    gpu_seconds += float(result.get("gpu_seconds") or 0.0)
    by_id = {r["request_id"]: r for r in gen_rows}
    images = image_rows(result, by_id, store.uri(f"{base}render-{digest}.json"), lambda _: req["created_at"])
    warehouse.upsert("images", images)
    failed = {f["request_id"]: f["reason"] for f in result.get("failed", [])}
    warehouse.upsert("generation_requests", [
        {"request_id": rid, "status": "failed" if rid in failed else "done", "reason": failed.get(rid),
         "updated_at": now} for rid in by_id])
    req.update(status="failed" if failed else "done", images=len(images), gpu_seconds=gpu_seconds, updated_at=now,
               reason="; ".join(sorted(set(failed.values()))) or None,
               generation_request_ids=json.dumps(sorted(by_id)))
    warehouse.upsert("personalization_requests", [_request_update(req)])
    return {"request_id": request_id, "status": req["status"], "trained": trained_now, "images": len(images),
            "gpu_seconds": gpu_seconds, "model_version": version}


def _request_update(req: dict) -> dict:
    keys = ("request_id", "status", "reason", "token", "model_version", "generation_request_ids", "images",
            "gpu_seconds", "updated_at")
    return {k: req.get(k) for k in keys}


def mark_failed(warehouse: Warehouse, request_id: str, error: BaseException, now: datetime | None = None) -> str:
    """Record why a request failed: the error's first line and, for a GPU job, the last line
    of its output (where the job's own exception is). Words only, never photo content."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reason = f"{type(error).__name__}: {lines[0] if lines else ''}"
    if len(lines) > 1:
        reason += f" | {lines[-1]}"
    warehouse.upsert("personalization_requests", [{"request_id": request_id, "status": "failed",
                                                   "reason": reason[:1000], "updated_at": now or datetime.now(UTC)}])
    return reason


def run_stats(warehouse: Warehouse, request_ids: list[str]) -> dict:
    """The personalize stage's counters for the requests a run handled (read back from the
    warehouse, so a re-run reports the same state)."""
    row = warehouse.query(
        "SELECT COUNT(*) AS requests, COUNTIF(model_version IS NOT NULL) AS trained, "
        "COUNTIF(status = 'failed') AS failed, SUM(COALESCE(images, 0)) AS images, "
        "SUM(COALESCE(gpu_seconds, 0)) AS gpu_seconds FROM personalization_requests WHERE request_id IN UNNEST(@ids)",
        {"ids": list(request_ids) or [""]})[0]
    return {"requests": int(row["requests"]), "trained": int(row["trained"] or 0), "failed": int(row["failed"] or 0),
            "images": int(row["images"] or 0), "gpu_seconds": round(float(row["gpu_seconds"] or 0.0), 3)}
