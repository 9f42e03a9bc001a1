"""DreamBooth-LoRA per user, on top of the weekly LoRA trainer (no second training loop).

A request (user, 3-20 photos, class noun, prompts to render) becomes a
``personalization_requests`` row. Training teaches the user's rare identifier token with the
instance prompt ``a photo of <token> <class noun>`` while class prior preservation keeps the
class itself intact: images of ``a photo of a <class noun>`` made by the base model, cached
per (base model, class noun, count, resolution) in the store and shared by every user. The
adapter lands under ``users/<user_id>/adapters/<request_id>/`` and in the registry as kind
``dreambooth`` with the user id, never aliased.

Plain Python only: the ``personalize`` DAG runs the steps (class images, train, register,
render, record) as tasks, launching the GPU jobs and rendering through ``inference.shards``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from sleeve.ids import content_hash, sha256_bytes, stable_id
from sleeve.jobs import RESULT_NAME, read_result
from sleeve.keys import adapter_prefix, check_user_id, personalize_prefix
from sleeve.registry import register
from sleeve.store import ObjectStore, open_uri, read_json, write_json
from sleeve.warehouse import Warehouse
from training.photos import (
    PhotoError,
    PhotoLimits,
    read_uploads,
    store_photos,
    upload_keys,
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
    with the reason). ``photos`` are raw bytes, or URIs of the user's uploads in the store
    (``users/<user_id>/uploads/``; any other URI is refused before anything is read). Returns
    the request row; an existing request with the same id is returned unchanged."""
    check_user_id(user_id)
    noun = check_class_noun(class_noun)
    prompt_ids, song_ids = sorted(set(prompt_ids or ())), sorted(set(song_ids or ()))
    if not 1 <= int(num_images) <= 16:
        raise RequestError(f"num_images={num_images} is out of range 1..16")
    is_uris = bool(photos) and all(isinstance(p, str) for p in photos)
    if not is_uris and not all(isinstance(p, bytes | bytearray) for p in photos):
        raise RequestError("photos must be all upload URIs or all image bytes")
    if is_uris:
        try:
            upload_keys(store, user_id, list(photos))  # before anything is read
        except PhotoError as exc:
            raise RequestError(str(exc)) from None
    uploads = read_uploads(store, user_id, list(photos)) if is_uris else [bytes(p) for p in photos]
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
        if is_uris:  # originals may carry EXIF (GPS): drop them once normalised
            for key in upload_keys(store, user_id, list(photos)):
                store.delete(key)
    warehouse.upsert("personalization_requests", [row])
    return row


# --- class prior images ---------------------------------------------------------------------

@dataclass(frozen=True)
class ClassImages:
    """The prior-preservation images a training needs: ``count`` images of ``a photo of a
    <noun>`` by the base model, made once through the batch generator and cached for every
    user per everything that decides their pixels (base model, noun, count, resolution,
    denoising steps, guidance scale)."""

    base_model: str
    class_noun: str
    count: int
    resolution: int
    steps: int = 4  # denoising steps per image (the tiny model's; SDXL: 25-30)
    guidance: float = 5.0  # classifier-free guidance scale

    @property
    def _identity(self) -> dict:
        return {"base_model": self.base_model, "class_noun": self.class_noun, "count": self.count,
                "resolution": self.resolution, "steps": self.steps, "guidance": float(self.guidance)}

    @property
    def prefix(self) -> str:
        return f"class-images/{content_hash(self._identity)[:16]}/"

    @property
    def key(self) -> str:
        return self.prefix + "manifest.json"

    @property
    def defaults(self) -> dict:
        return {"width": self.resolution, "height": self.resolution, "steps": self.steps,
                "guidance_scale": float(self.guidance)}

    def _chunks(self) -> dict[str, tuple[int, int]]:
        """Request id -> (first image, images): the generator takes at most 16 images a request.
        The ids carry the rendering settings too: the generator's per-image records (its resume
        markers) are keyed by them, so other settings must never find the old images."""
        identity = self._identity
        return {stable_id("class-prior", identity["base_model"], identity["class_noun"], identity["resolution"],
                          identity["steps"], identity["guidance"], start):
                (start, min(CLASS_IMAGES_PER_REQUEST, self.count - start))
                for start in range(0, self.count, CLASS_IMAGES_PER_REQUEST)}

    def requests(self) -> list[dict]:
        """Rows for ``inference.shards.plan_shards`` on the base model alone."""
        return [{"request_id": rid, "positive": class_prompt(self.class_noun), "negative": "", "num_images": n,
                 "width": self.resolution, "height": self.resolution, "model_version": "base",
                 "prompt_found": True} for rid, (_, n) in self._chunks().items()]

    def cached(self, store: ObjectStore) -> dict | None:
        """``{"uris", "cache_hit"}`` when nothing has to be generated, else None."""
        if not self.count:
            return {"uris": [], "cache_hit": False}
        if store.exists(self.key):
            return {"uris": read_json(store, self.key)["uris"], "cache_hit": True}
        return None

    def record(self, store: ObjectStore, results: list[dict]) -> dict:
        """Cache the images the generate jobs made (``results``: per shard ``{"result_uri"}``), in
        prompt-chunk order; returns ``{"uris", "cache_hit": False}``."""
        images, failed = [], []
        for shard in results:
            src, key = open_uri(shard["result_uri"], store)
            result = read_json(src, key)
            images += result.get("images", [])
            failed += result.get("failed", [])
        if failed or len(images) != self.count:
            raise RuntimeError(f"class image generation failed: {failed or f'{len(images)}/{self.count} images'}")
        order = {rid: start for rid, (start, _) in self._chunks().items()}
        uris = [img["uri"] for img in sorted(images, key=lambda i: (order[i["request_id"]], i["image_index"]))]
        write_json(store, self.key, {**self._identity, "prompt": class_prompt(self.class_noun), "uris": uris})
        return {"uris": uris, "cache_hit": False}


# --- one request, step by step (the personalize DAG's task group calls these) ---------------

TRAIN_SETTINGS = ("steps", "rank", "resolution", "prior_loss_weight", "train_text_encoder")


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


def get_request(warehouse: Warehouse, request_id: str) -> dict:
    rows = warehouse.query("SELECT * FROM personalization_requests WHERE request_id = @id", {"id": request_id})
    if not rows:
        raise RequestError(f"unknown personalisation request {request_id}")
    return rows[0]


def is_finished(request: dict) -> bool:
    """Done, or failed with its photos rejected: nothing to train or render until the user asks again."""
    return request["status"] == "done" or (request["status"] == "failed"
                                           and not json.loads(request["photo_uris"] or "[]"))


@contextmanager
def recording_failure(warehouse: Warehouse, request_id: str) -> Iterator[None]:
    """Record any error of a step on the request row (then re-raise it, so the step retries)."""
    try:
        yield
    except Exception as exc:
        mark_failed(warehouse, request_id, exc)
        raise


def class_images_for(params: dict, base_model: str, class_noun: str) -> ClassImages:
    """The class images a request needs, from the personalize DAG's Params."""
    return ClassImages(base_model, class_noun, params["num_class_images"], params["resolution"],
                       steps=params["class_image_steps"], guidance=params["class_image_guidance"])


def train_config(params: dict) -> dict:
    """The ``training.personalize_job`` config from the DAG's Params."""
    return {k: params[k] for k in TRAIN_SETTINGS}


def render_defaults(params: dict) -> dict:
    return {"width": params["image_size"], "height": params["image_size"], "steps": params["image_steps"]}


def write_train_manifest(store: ObjectStore, request: dict, *, base_model: str, class_images: dict) -> dict:
    """The personalize_job's input; returns ``{"manifest_uri", "output_uri"}`` (the adapter folder)."""
    request_id, user_id = request["request_id"], request["user_id"]
    key = personalize_prefix(user_id, request_id) + "train-manifest.json"
    write_json(store, key, {
        "request_id": request_id, "user_id": user_id, "class_noun": request["class_noun"],
        "photo_uris": json.loads(request["photo_uris"]), "base_model": base_model,
        "model_version": model_version_for(request_id), "manifest_uri": store.uri(key),
        "class_image_uris": class_images["uris"], "class_cache_hit": class_images["cache_hit"]})
    return {"manifest_uri": store.uri(key), "output_uri": store.uri(adapter_prefix(user_id, request_id))}


def finished_adapter(store: ObjectStore, request: dict) -> dict | None:
    """The training result of an adapter already trained for the request (never train twice)."""
    prefix = adapter_prefix(request["user_id"], request["request_id"])
    return read_result(store.uri(prefix), store) if store.exists(f"{prefix}/{RESULT_NAME}") else None


def register_adapter(warehouse: Warehouse, store: ObjectStore, request_id: str, trained: dict,
                     now: datetime | None = None) -> str:
    """Register the trained adapter (kind ``dreambooth``, the user's, never aliased) and mark the
    request trained; returns the model version."""
    request, now = get_request(warehouse, request_id), now or datetime.now(UTC)
    version = model_version_for(request_id)
    manifest_uri = store.uri(personalize_prefix(request["user_id"], request_id) + "train-manifest.json")
    metrics = {k: trained[k] for k in ("token", "class_noun", "instance_prompt", "class_prompt", "steps",
                                       "final_loss", "rank", "alpha", "prior_loss_weight", "train_text_encoder",
                                       "photos", "class_cache_hit")}
    register(warehouse, version=version, kind="dreambooth", base_model=trained["base_model"],
             adapter_uri=trained["adapter_uri"], manifest_uri=manifest_uri, metrics=metrics,
             training_run_id=request_id, user_id=request["user_id"], alias=None, now=now)
    warehouse.upsert("personalization_requests", [{
        "request_id": request_id, "status": "trained", "reason": None, "token": trained["token"],
        "model_version": version, "gpu_seconds": float(trained.get("gpu_seconds") or 0.0), "updated_at": now}])
    return version


def cover_requests(warehouse: Warehouse, request_id: str, version: str, now: datetime | None = None) -> list[dict]:
    """The covers to render, one ``generation_requests`` row (kind personalize, pinned to the
    user's adapter ``version``) per prompt: the given prompts, each song's latest prompt, or a
    plain cover prompt when none was asked for. New rows are written pending; returns rows
    ready for ``inference.shards.plan_shards`` (with the personal prompt)."""
    request = get_request(warehouse, request_id)
    if not request["token"]:
        raise RequestError(f"personalisation request {request_id} has no trained adapter yet")
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
    rows = [{
        "request_id": stable_id("personalize", request_id, pid), "song_id": p["song_id"], "prompt_id": pid,
        "user_id": request["user_id"], "kind": "personalize", "num_images": request["num_images"],
        "model_version": version, "created_at": request["created_at"],
        "prompt_version": p["prompt_version"], "prompt_found": True,
        "positive": personal_prompt(request["token"], request["class_noun"], p["positive"]),
        "negative": p["negative"] or "",
    } for pid, p in sorted(chosen.items(), key=lambda kv: str(kv[0]))]
    known = {r["request_id"] for r in warehouse.query(
        "SELECT request_id FROM generation_requests WHERE request_id IN UNNEST(@ids)",
        {"ids": [r["request_id"] for r in rows]})}
    warehouse.upsert("generation_requests", [
        {k: r[k] for k in ("request_id", "song_id", "prompt_id", "user_id", "kind", "num_images", "model_version",
                           "created_at")} | {"status": "pending", "updated_at": now or datetime.now(UTC)}
        for r in rows if r["request_id"] not in known])
    return rows


def finish_request(warehouse: Warehouse, request_id: str, trained: dict, recorded: dict,
                   generation_request_ids: list[str], now: datetime | None = None) -> dict:
    """Close the request row once its covers are recorded (``recorded``: what
    ``inference.shards.record_images`` returned): done, or failed with the covers' reasons."""
    failed = recorded["failed"]
    row = {"request_id": request_id, "status": "failed" if failed else "done",
           "reason": "; ".join(sorted(set(failed.values()))) or None, "images": recorded["images"],
           "gpu_seconds": round(float(trained.get("gpu_seconds") or 0.0) + recorded["gpu_seconds"], 3),
           "generation_request_ids": json.dumps(sorted(generation_request_ids)),
           "updated_at": now or datetime.now(UTC)}
    warehouse.upsert("personalization_requests", [row])
    return row


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
