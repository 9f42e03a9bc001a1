"""Cover requests, reviews, downloads, the gallery and my page: what the pages and the API do.

A request is built the way the pipeline builds one: the song goes through the same offline
labeller and prompt builder as ``label_songs`` (its ``labels`` row is what ``label_songs``
would write, so that DAG skips the song), the user's variations (keywords, style, colours, a
person or not) adjust the labels before the prompt is built, and the rows carry the lineage:
``songs`` -> ``labels`` -> ``prompts`` -> ``generation_requests`` (kind ``user``) -> ``images``,
with the typed inputs in ``cover_inputs``. Every text a user types passes the content policy.
"""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from inference.labels import (
    OFFLINE_VERSION,
    LabelError,
    LabelResult,
    OfflineLabeller,
    Song,
    corpus_texts,
    label_row,
    validate_labels,
)
from inference.policy import policy_violations
from inference.prompts import PROMPT_VERSION, build_prompt, prompt_row
from service.clock import Clock, wall_clock
from service.warehouse import WarehouseBusy
from sleeve.ids import content_hash, stable_id
from sleeve.reviews import record_reviews
from sleeve.warehouse import Warehouse

MAX_TITLE, MAX_GENRE, MAX_LYRICS, MAX_TERM, MAX_TERMS = 200, 60, 5000, 40, 8
MAX_IMAGES, DEFAULT_IMAGES = 8, 4
GALLERY_SIZE, GALLERY_DAYS, GALLERY_MIN_RATING = 12, 30, 4.0
MY_PAGE_SIZE = 20
WITHOUT_PERSON = "person, people, human figure, face"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class RequestProblem(ValueError):
    """A create request that cannot be made; the message names the field and the fix."""


class NotFound(LookupError):
    """No such request or image for this user (another user's ids look exactly like missing ones)."""


class Conflict(ValueError):
    """The request contradicts one already made (an idempotency key reused for other covers)."""


def _text(value: str | None, name: str, limit: int) -> str | None:
    if value is None:
        return None
    if _CONTROL.search(value):
        raise ValueError(f"{name} must not contain control characters")
    value = value.strip()
    if len(value) > limit:
        raise ValueError(f"{name} is {len(value)} characters; at most {limit} are allowed")
    return value or None


class CoverRequest(BaseModel):
    """What the create form and ``POST /api/covers`` take."""

    model_config = ConfigDict(extra="forbid")

    title: str = Field(min_length=1, max_length=MAX_TITLE, description="Song title")
    artist: str = Field(min_length=1, max_length=MAX_TITLE, description="Artist")
    genre: str | None = Field(None, max_length=MAX_GENRE, description="Genre, e.g. ballad or hip hop")
    lyrics: str | None = Field(None, max_length=MAX_LYRICS, description="Lyrics (optional)")
    keywords: list[str] = Field(default_factory=list, max_length=MAX_TERMS,
                                description="Up to 8 words or short phrases to show")
    style: str | None = Field(None, max_length=MAX_GENRE, description="Art style, e.g. watercolor painting")
    colors: list[str] = Field(default_factory=list, max_length=MAX_TERMS, description="Colours to use")
    include_person: bool = Field(False, description="Show a (fictional) person on the cover")
    num_images: int = Field(DEFAULT_IMAGES, ge=1, le=MAX_IMAGES, description="Covers to make, 1-8")

    @field_validator("title", "artist")
    @classmethod
    def _required_text(cls, value: str, info) -> str:
        value = _text(value, info.field_name, MAX_TITLE)
        if not value:
            raise ValueError(f"{info.field_name} must not be blank")
        return value

    @field_validator("genre", "style")
    @classmethod
    def _short_text(cls, value: str | None, info) -> str | None:
        return _text(value, info.field_name, MAX_GENRE)

    @field_validator("lyrics")
    @classmethod
    def _lyrics(cls, value: str | None) -> str | None:
        return _text(value, "lyrics", MAX_LYRICS)

    @field_validator("keywords", "colors")
    @classmethod
    def _terms(cls, values: list[str], info) -> list[str]:
        out = []
        for i, value in enumerate(values):
            term = _text(value, f"{info.field_name}[{i}]", MAX_TERM)
            if term and term.lower() not in (t.lower() for t in out):
                out.append(term)
        return out


def policy_problems(req: CoverRequest) -> list[str]:
    """Every typed field the content policy refuses, as 'field: reason'."""
    fields = {"title": req.title, "artist": req.artist, "genre": req.genre, "lyrics": req.lyrics,
              "keywords": ", ".join(req.keywords), "style": req.style, "colors": ", ".join(req.colors)}
    return [f"{name}: {reason}" for name, text in fields.items() if text
            for reason in policy_violations(text)]


class Labeller:
    """The offline labeller fitted on the song corpus, refitted every ``refresh_s`` of the
    service's clock: requested songs join the corpus, so which corpus labels a request must
    follow the recorded times (a simulated run labels alike on every re-run), not the wall clock."""

    def __init__(self, refresh_s: float = 600.0, clock: Clock = wall_clock):
        self.refresh_s, self.clock = refresh_s, clock
        self._fitted: tuple[datetime, OfflineLabeller] | None = None
        self._lock = threading.Lock()

    def get(self, warehouse: Warehouse) -> OfflineLabeller:
        with self._lock:
            now = self.clock()
            if self._fitted is None or abs((now - self._fitted[0]).total_seconds()) > self.refresh_s:
                self._fitted = (now, OfflineLabeller(corpus_texts(warehouse)))
            return self._fitted[1]


_PLAIN = re.compile(r"^[a-z0-9][a-z0-9 &',/\-]*$")


def cover_labels(labeller: OfflineLabeller, song: Song, req: CoverRequest) -> tuple[LabelResult, dict]:
    """(the song's own labelling, the labels this request's prompt is built from)."""
    own = labeller.label(song)
    hinted = labeller.label(replace(song, title=f"{song.title} {' '.join(req.keywords)}")) if req.keywords else own
    labels = dict(hinted.labels)
    plain = [k.lower() for k in req.keywords if _PLAIN.match(k.lower())]
    objects = list(dict.fromkeys(plain + labels["objects"]))
    if req.include_person:
        objects = ["a person", *[o for o in objects if o != "a person"]]
    labels["objects"] = objects[:5]
    if req.style:
        labels["style"] = req.style.lower()
    if req.colors:
        labels["palette"] = list(dict.fromkeys([c.lower() for c in req.colors] + labels["palette"]))[:5]
    try:
        return own, validate_labels(labels)
    except LabelError as exc:
        field = "style" if "style" in str(exc) else "colors" if "palette" in str(exc) else "keywords"
        raise RequestProblem(f"{field}: use plain English words (letters, digits, spaces), e.g. "
                             f"'watercolor painting' or 'deep blue' ({exc})") from None


def create_request(warehouse: Warehouse, labeller: OfflineLabeller, user_id: str, req: CoverRequest,
                   now: datetime | None = None, idempotency_key: str | None = None) -> str:
    """Record a pending ``user`` request with its song, labels, prompt and inputs; returns its id.

    With an ``idempotency_key`` the id is a function of the user and the key, and asking again
    with the same key returns that request untouched (a retried POST makes no second request and
    never sends a rendered one back to pending); the same key for other covers is a Conflict."""
    problems = policy_problems(req)
    if problems:
        raise RequestProblem("the content policy does not allow this: " + "; ".join(problems))
    # Every ask is new covers (seeds derive from the request id), unless it repeats a key.
    request_id = stable_id("service-request", user_id, idempotency_key) if idempotency_key else str(uuid.uuid4())
    if idempotency_key and _already_made(warehouse, request_id, req):
        return request_id
    now = now or datetime.now(UTC)  # when the user asked: an event time; ids never use it
    song = Song(stable_id("service-song", req.title, req.artist, req.genre or "", req.lyrics or ""),
                req.title, req.artist, "", req.genre or "", req.lyrics or "")
    own, labels = cover_labels(labeller, song, req)
    prompt = build_prompt(labels)
    if not req.include_person:
        prompt = replace(prompt, negative=f"{prompt.negative}, {WITHOUT_PERSON}")
    variation = content_hash({"labels": labels, "negative": prompt.negative})
    prompt_id = stable_id(song.song_id, OFFLINE_VERSION, PROMPT_VERSION, variation)
    warehouse.upsert("songs", [{
        "song_id": song.song_id, "source": "service", "source_id": song.song_id, "title": song.title,
        "artist": song.artist, "genre": song.genre or None, "lyrics": song.lyrics or None,
        "content_hash": song.input_hash, "first_seen_at": now, "updated_at": now}])
    warehouse.upsert("labels", [label_row(own, now)])
    warehouse.upsert("prompts", [{**prompt_row(song.song_id, OFFLINE_VERSION, prompt, now), "prompt_id": prompt_id}])
    warehouse.upsert("cover_inputs", [{
        "request_id": request_id, "user_id": user_id, "title": req.title, "artist": req.artist, "genre": req.genre,
        "lyrics": req.lyrics, "keywords": json.dumps(req.keywords, ensure_ascii=False), "style": req.style,
        "colors": json.dumps(req.colors, ensure_ascii=False), "include_person": req.include_person,
        "created_at": now}])
    warehouse.upsert("generation_requests", [{
        "request_id": request_id, "song_id": song.song_id, "prompt_id": prompt_id, "user_id": user_id,
        "kind": "user", "num_images": req.num_images, "status": "pending", "created_at": now, "updated_at": now}])
    return request_id


def _already_made(warehouse: Warehouse, request_id: str, req: CoverRequest) -> bool:
    """True if ``request_id`` exists with these inputs; Conflict if it exists with others."""
    made = warehouse.query(
        "SELECT r.num_images, c.title, c.artist, c.genre, c.lyrics, c.keywords, c.style, c.colors, c.include_person"
        " FROM generation_requests AS r JOIN cover_inputs AS c ON c.request_id = r.request_id"
        " WHERE r.request_id = @id", {"id": request_id})
    if not made:
        return False
    row = made[0]
    same = (row["num_images"] == req.num_images and (row["title"], row["artist"], row["genre"], row["lyrics"],
            row["style"], bool(row["include_person"])) == (req.title, req.artist, req.genre, req.lyrics, req.style,
            req.include_person) and json.loads(row["keywords"] or "[]") == req.keywords
            and json.loads(row["colors"] or "[]") == req.colors)
    if not same:
        raise Conflict("this Idempotency-Key was used for a different request; use a new key for new covers")
    return True


def _thumb(image_id: str) -> str:
    return f"/api/images/{image_id}/thumb"


def _image(row: dict) -> dict:
    reviewed = row.get("rating") is not None
    return {"image_id": row["image_id"], "image_index": row.get("image_index"), "thumb_url": _thumb(row["image_id"]),
            "reviewed": reviewed, "rating": row.get("rating"), "comment": row.get("comment"),
            "download_url": f"/api/images/{row['image_id']}/download" if reviewed else None,
            "request_id": row.get("request_id"), "title": row.get("title"), "artist": row.get("artist")}


def request_status(warehouse: Warehouse, user_id: str, request_id: str) -> dict:
    """The request as its owner sees it: status, inputs, prompt and the covers made so far."""
    rows = warehouse.query(
        "SELECT r.request_id, r.user_id, r.status, r.reason, r.num_images, r.model_version, r.created_at,"
        " p.positive, p.prompt_version, c.title, c.artist, c.genre, c.lyrics, c.keywords, c.style, c.colors,"
        " c.include_person FROM generation_requests AS r LEFT JOIN prompts AS p ON p.prompt_id = r.prompt_id"
        " LEFT JOIN cover_inputs AS c ON c.request_id = r.request_id"
        " WHERE r.request_id = @id AND r.user_id = @u", {"id": request_id, "u": user_id})
    if not rows:
        raise NotFound(f"no request {request_id!r} of yours")
    row = rows[0]
    images = warehouse.query(
        "SELECT i.image_id, i.image_index, i.request_id, v.rating, v.comment FROM images AS i"
        " LEFT JOIN reviews AS v ON v.image_id = i.image_id AND v.user_id = @u"
        " WHERE i.request_id = @id ORDER BY i.image_index, i.image_id", {"id": request_id, "u": user_id})
    return {
        "request_id": row["request_id"], "status": row["status"], "reason": row["reason"],
        "num_images": row["num_images"], "model_version": row["model_version"],
        "created_at": row["created_at"].isoformat() if row["created_at"] else None,
        "prompt": row["positive"], "prompt_version": row["prompt_version"],
        "inputs": {"title": row["title"], "artist": row["artist"], "genre": row["genre"], "lyrics": row["lyrics"],
                   "keywords": json.loads(row["keywords"] or "[]"), "style": row["style"],
                   "colors": json.loads(row["colors"] or "[]"), "include_person": row["include_person"]},
        "images": [_image(i) for i in images],
    }


def user_requests(warehouse: Warehouse, user_id: str, limit: int = 20) -> list[dict]:
    return warehouse.query(
        "SELECT r.request_id, r.status, r.created_at, c.title, c.artist FROM generation_requests AS r"
        " LEFT JOIN cover_inputs AS c ON c.request_id = r.request_id"
        " WHERE r.user_id = @u AND r.kind = 'user' ORDER BY r.created_at DESC LIMIT @n", {"u": user_id, "n": limit})


_IMAGE_SQL = (
    "SELECT i.image_id, i.uri, i.thumb_uri, i.request_id, g.user_id, g.kind, v.rating,"
    " (SELECT AVG(a.rating) FROM reviews AS a WHERE a.image_id = i.image_id) AS mean_rating"
    " FROM images AS i JOIN generation_requests AS g ON g.request_id = i.request_id"
    " LEFT JOIN reviews AS v ON v.image_id = i.image_id AND v.user_id = @u WHERE i.image_id = @id")


def own_image(warehouse: Warehouse, user_id: str, image_id: str) -> dict:
    rows = warehouse.query(_IMAGE_SQL, {"id": image_id, "u": user_id})
    if not rows or rows[0]["user_id"] != user_id:
        raise NotFound(f"no cover {image_id!r} of yours")
    return rows[0]


def visible_image(warehouse: Warehouse, user_id: str | None, image_id: str) -> dict:
    """An image whose thumbnail this visitor may see: their own, or one the gallery shows
    (never a personalised cover of someone else)."""
    rows = warehouse.query(_IMAGE_SQL, {"id": image_id, "u": user_id or ""})
    if rows:
        row = rows[0]
        if row["user_id"] == user_id or (row["kind"] != "personalize" and (row["mean_rating"] or 0) >= GALLERY_MIN_RATING):
            return row
    raise NotFound(f"no cover {image_id!r}")


class Reviews:
    """Reviews enter through ``sleeve.reviews.record_reviews``, and concurrent ones share one
    call (group commit): whoever finds no write in progress writes everything queued, the rest
    wait for it, so a burst of reviews costs a few warehouse writes instead of one each.
    ``writes`` counts the calls made (for tests)."""

    def __init__(self, warehouse: Warehouse, wait_s: float, clock: Clock = wall_clock):
        self.warehouse, self.wait_s, self.clock = warehouse, wait_s, clock
        self._queue: list[dict] = []
        self._writing = False
        self._cond = threading.Condition()
        self.writes = 0

    def review(self, user_id: str, image_id: str, rating: int, comment: str | None) -> dict:
        """The one review of this user for their image (a second review updates it)."""
        own_image(self.warehouse, user_id, image_id)
        item = {"review": {"image_id": image_id, "user_id": user_id, "rating": rating, "comment": comment,
                           "created_at": self.clock()}, "done": False, "error": None}
        deadline = time.monotonic() + self.wait_s
        with self._cond:
            self._queue.append(item)
            while not item["done"]:
                if not self._writing:
                    self._writing = True
                    batch, self._queue = self._queue, []
                    self._cond.release()
                    try:
                        self._write(batch)
                    finally:
                        self._cond.acquire()
                        self._writing = False
                        self._cond.notify_all()
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0 and item in self._queue:  # not taken by a write in time
                        self._queue.remove(item)
                        raise WarehouseBusy("the warehouse is busy writing; retry shortly")
                    self._cond.wait(max(remaining, 0.05))  # (one in flight finishes its write)
        if item["error"] is not None:
            raise item["error"]
        return {"image_id": image_id, "rating": rating, "comment": (comment or "").strip() or None,
                "download_url": f"/api/images/{image_id}/download"}

    def _write(self, batch: list[dict]) -> None:
        try:
            self.writes += 1
            outcome = record_reviews(self.warehouse, [item["review"] for item in batch])
            for rejected in outcome["rejected"]:
                batch[rejected["index"]]["error"] = RequestProblem(rejected["reason"])
        except Exception as exc:  # the whole write failed (e.g. busy): every review in it says so
            for item in batch:
                item["error"] = exc
        for item in batch:
            item["done"] = True


class Gallery:
    """The best-rated recent covers, cached for ``ttl_s`` (every visitor sees the same page)."""

    def __init__(self, ttl_s: float = 1.0, clock: Clock = wall_clock):
        self.ttl_s, self.clock = ttl_s, clock
        self._cached: tuple[float, list[dict]] | None = None
        self._lock = threading.Lock()

    def get(self, warehouse: Warehouse) -> list[dict]:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self.ttl_s:
                return self._cached[1]
            since = self.clock() - timedelta(days=GALLERY_DAYS)
            rows = warehouse.query(
                "SELECT v.image_id, AVG(v.rating) AS rating, COUNT(*) AS reviews, MAX(v.created_at) AS reviewed_at,"
                " ANY_VALUE(s.title) AS title, ANY_VALUE(s.artist) AS artist FROM reviews AS v"
                " JOIN images AS i ON i.image_id = v.image_id"
                " JOIN generation_requests AS g ON g.request_id = i.request_id"
                " LEFT JOIN songs AS s ON s.song_id = g.song_id"
                " WHERE v.created_at >= @since AND g.kind != 'personalize'"
                " GROUP BY v.image_id HAVING AVG(v.rating) >= @min"
                " ORDER BY rating DESC, reviewed_at DESC, v.image_id LIMIT @n",
                {"since": since, "min": GALLERY_MIN_RATING, "n": GALLERY_SIZE})
            images = [{"image_id": r["image_id"], "thumb_url": _thumb(r["image_id"]), "rating": round(float(r["rating"]), 2),
                       "reviews": r["reviews"], "title": r["title"], "artist": r["artist"]} for r in rows]
            self._cached = (time.monotonic(), images)
            return images

    def clear(self) -> None:
        with self._lock:
            self._cached = None


def my_images(warehouse: Warehouse, user_id: str) -> list[dict]:
    """The user's most recently reviewed covers, each with the request (and inputs) it came from."""
    rows = warehouse.query(
        "SELECT v.image_id, v.rating, v.comment, v.created_at, i.image_index, i.request_id, c.title, c.artist"
        " FROM reviews AS v JOIN images AS i ON i.image_id = v.image_id"
        " JOIN generation_requests AS g ON g.request_id = i.request_id"
        " LEFT JOIN cover_inputs AS c ON c.request_id = i.request_id"
        " WHERE v.user_id = @u AND g.user_id = @u ORDER BY v.created_at DESC, v.image_id LIMIT @n",
        {"u": user_id, "n": MY_PAGE_SIZE})
    return [_image(r) for r in rows]
