"""How simulated users reach Sleeve: the same few actions a real user has, behind one interface.

    client.sign_up(users, at)                       -> {name: user_id}
    client.songs()                                  -> [{"song_id", "prompt_id", "prompt", ...}]
    client.request_covers(user_id, song, n, at)     -> request_id
    client.my_covers(user_id, since, until)         -> [{"image_id", "uri", "prompt", "request_id"}]
    client.reviews([{image_id, user_id, rating, created_at}]) -> {"recorded", "rejected"}
    client.image_bytes(uri)                         -> the image the user looks at

:class:`ApiClient` does them through the covers service's JSON API, in-process, as a signed-in
user each: every action a simulated user takes goes through the paths a real user's take. (It
replaced a client that wrote the warehouse rows directly; nothing needs that path any more.)
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import hashlib
import hmac
from datetime import datetime
from typing import Protocol

from sleeve.warehouse import Warehouse

EMAIL_DOMAIN = "example.com"  # reserved: simulated users are never real people
BUSY_RETRIES = 5


class UserClient(Protocol):
    def sign_up(self, names: list[str], at: datetime) -> dict[str, str]: ...

    def songs(self) -> list[dict]: ...

    def request_covers(self, user_id: str, song: dict, num_images: int, at: datetime) -> str: ...

    def my_covers(self, user_id: str, since: datetime, until: datetime) -> list[dict]: ...

    def reviews(self, reviews: list[dict]) -> dict: ...

    def image_bytes(self, uri: str) -> bytes: ...


_NOW: contextvars.ContextVar[datetime] = contextvars.ContextVar("simulated_now")


def simulated_now() -> datetime:
    """The service's clock in a simulation: the time of the user action being served. Every
    call that records an event runs inside one (a context variable, so concurrent calls each
    keep their own time); the service asking the time outside any is a bug, and says so."""
    try:
        return _NOW.get()
    except LookupError:
        raise RuntimeError("the covers service asked the time outside a simulated user action") from None


async def _at(at: datetime | None, call):
    """Await ``call`` at the simulated time ``at``, then no time again (the runner's tasks share
    one context; concurrent calls each run in a copy of it, with their own time)."""
    token = _NOW.set(at) if at is not None else None
    try:
        return await call
    finally:
        if token is not None:
            _NOW.reset(token)


class ApiClient:
    """The user actions through the covers service's JSON API (``service.app``), in-process over
    ``httpx.ASGITransport``: one cookie jar per user (signed up, or signed in, once), every call
    made at its simulated time (the service's injected clock). Covers are rendered by the
    ``batch_generate`` DAG, not by the service (``worker=False``), as in production.

    - songs: the API has no song list (a user types the song), so the users know the catalogue
      (the crawled songs with a prompt, read from the warehouse, never the service's own) and
      type each song's title, artist and genre into ``POST /api/covers``. The service labels
      and builds the prompt itself, so a request's prompt is the service's prompt of the typed
      song, not the catalogue's (that one also saw the album and lyrics: the same style and
      genre, often other objects and colours); ``my_covers`` reports the prompt the covers were
      made from. ``songs()`` returns the catalogue prompts as ``prompt`` (what the held-out set
      avoids, as before).
    - requests carry an ``Idempotency-Key`` of (song, time): a re-run asks for the same request
      ids (so the same seeds and covers), and a retried POST never makes a second request.
    - my covers: ``GET /api/me/images`` lists only reviewed covers, so the covers of the week
      are those of the user's own requests (``GET /api/requests/{id}``, ids kept from the POSTs).
    - image bytes: the thumbnail (``thumb_url``), which is what a user sees before reviewing;
      the full size stays locked until then.
    - reviews: one ``POST /api/images/{id}/review`` each, concurrently (as many users review at
      once), each at its own simulated time.
    """

    BASE_URL = "http://sleeve.sim"

    def __init__(self, settings, warehouse: Warehouse):
        import httpx

        from service.app import create_app

        self.warehouse, self.pii_key = warehouse, settings.pii_key
        self.app = create_app(settings, worker=False, clock=simulated_now)
        self._transport = httpx.ASGITransport(app=self.app)
        self._runner = asyncio.Runner()
        self._stack = contextlib.AsyncExitStack()
        self._users: dict[str, object] = {}  # user_id -> its own httpx.AsyncClient (cookie jar)
        self._requests: dict[str, dict[str, datetime]] = {}  # user_id -> {request_id: asked at}
        self._owners: dict[str, str] = {}  # image uri -> the user who may see it
        self.retried = 0  # calls answered 503 (warehouse busy) and made again
        self._runner.run(self._stack.enter_async_context(self.app.router.lifespan_context(self.app)))
        atexit.register(self.close)

    def close(self) -> None:
        if self._runner is None:
            return
        atexit.unregister(self.close)
        try:
            self._runner.run(self._close())
        finally:
            self._runner.close()
            self._runner = None

    async def _close(self) -> None:
        for http in self._users.values():
            await http.aclose()
        await self._stack.aclose()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- calls ---------------------------------------------------------------------------
    async def _call(self, user_id: str, method: str, path: str, at: datetime | None = None, **kwargs):
        """One call; a 503 (the warehouse busy) is retried after its Retry-After, as a client
        should: every call the simulation makes is safe to repeat (reviews update, requests
        carry their Idempotency-Key)."""
        if user_id not in self._users:
            raise KeyError(f"user {user_id!r} has not signed up through this client")
        for _ in range(BUSY_RETRIES):
            response = await _at(at, self._users[user_id].request(method, path, **kwargs))
            if response.status_code != 503:
                break
            self.retried += 1
            await asyncio.sleep(float(response.headers.get("retry-after", 1)))
        return response

    def _one(self, user_id: str, method: str, path: str, at: datetime | None = None, ok=(200,), **kwargs):
        response = self._runner.run(self._call(user_id, method, path, at, **kwargs))
        if response.status_code not in ok:
            raise ApiError(method, path, response)
        return response

    def password(self, name: str) -> str:
        """A simulated user's password: theirs alone, the same on every run, written nowhere."""
        return hmac.new(self.pii_key.encode(), f"simulated-user-password|{name}".encode(), hashlib.sha256).hexdigest()

    # --- the actions ---------------------------------------------------------------------
    def sign_up(self, names: list[str], at: datetime) -> dict[str, str]:
        import httpx

        ids = {}
        for name in names:
            http = httpx.AsyncClient(transport=self._transport, base_url=self.BASE_URL)
            credentials = {"email": f"{name}@{EMAIL_DOMAIN}", "password": self.password(name)}
            response = self._runner.run(_at(at, http.post("/api/signup", json=credentials)))
            if response.status_code == 409:  # signed up before (a re-run): sign in
                response = self._runner.run(_at(at, http.post("/api/login", json=credentials)))
            if response.status_code not in (200, 201):
                self._runner.run(http.aclose())
                raise ApiError("POST", "/api/signup or /api/login", response)
            user_id = response.json()["user_id"]
            self._users[user_id], ids[name] = http, user_id
        return ids

    def songs(self) -> list[dict]:
        """The catalogue's songs (not the service's requests) with their newest prompt."""
        rows = self.warehouse.query(
            "SELECT s.song_id, s.title, s.artist, s.genre, p.prompt_id, p.positive FROM songs AS s "
            "JOIN prompts AS p ON p.song_id = s.song_id WHERE s.source != 'service' "
            "ORDER BY s.song_id, p.created_at DESC, p.prompt_id")
        seen, out = set(), []
        for row in rows:
            if row["song_id"] not in seen:
                seen.add(row["song_id"])
                out.append({"song_id": row["song_id"], "prompt_id": row["prompt_id"], "prompt": row["positive"],
                            "title": row["title"], "artist": row["artist"], "genre": row["genre"]})
        return out

    def request_covers(self, user_id: str, song: dict, num_images: int, at: datetime) -> str:
        body = {"title": song["title"], "artist": song["artist"], "num_images": num_images}
        if song.get("genre"):
            body["genre"] = song["genre"]
        key = f"{song['song_id']}@{at.isoformat()}"
        response = self._one(user_id, "POST", "/api/covers", at, ok=(202,), json=body,
                             headers={"Idempotency-Key": key})
        request_id = response.json()["request_id"]
        self._requests.setdefault(user_id, {})[request_id] = at
        return request_id

    def my_covers(self, user_id: str, since: datetime, until: datetime) -> list[dict]:
        """The covers of the user's requests made in [since, until), oldest first."""
        asked = sorted((at, rid) for rid, at in self._requests.get(user_id, {}).items() if since <= at < until)
        covers = []
        for _, request_id in asked:
            status = self._one(user_id, "GET", f"/api/requests/{request_id}").json()
            for image in status["images"]:
                self._owners[image["thumb_url"]] = user_id
                covers.append({"image_id": image["image_id"], "uri": image["thumb_url"], "prompt": status["prompt"],
                               "request_id": request_id})
        return covers

    def image_bytes(self, uri: str) -> bytes:
        if uri not in self._owners:
            raise KeyError(f"{uri} is no cover of a simulated user's (list it with my_covers first)")
        return self._one(self._owners[uri], "GET", uri).content

    def reviews(self, reviews: list[dict]) -> dict:
        """Each review posted by its user at its ``created_at``; refused ones come back as
        ``rejected`` (index and the service's message), like ``record_reviews`` says it."""
        async def post_all():
            return await asyncio.gather(*(self._call(
                r["user_id"], "POST", f"/api/images/{r['image_id']}/review", r["created_at"],
                json={"rating": r["rating"], **({"comment": r["comment"]} if r.get("comment") else {})})
                for r in reviews))

        responses = self._runner.run(post_all())
        rejected = [{"index": i, "reason": f"HTTP {r.status_code}: {_detail(r)}"}
                    for i, r in enumerate(responses) if r.status_code != 200]
        return {"recorded": len(reviews) - len(rejected), "rejected": rejected}


class ApiError(RuntimeError):
    """The service refused a simulated user's call: the method, path, status and its message."""

    def __init__(self, method: str, path: str, response):
        super().__init__(f"{method} {path}: HTTP {response.status_code}: {_detail(response)}")
        self.status_code = response.status_code


def _detail(response) -> str:
    try:
        return str(response.json().get("detail"))[:300]
    except ValueError:
        return response.text[:300]

