"""How simulated users reach Sleeve: the same few actions a real user has, behind one interface.

    client.sign_up(users, at)                       -> {name: user_id}
    client.songs()                                  -> [{"song_id", "prompt_id", "prompt"}]
    client.request_covers(user_id, song, n, at)     -> request_id
    client.my_covers(user_id, since, until)         -> [{"image_id", "uri", "prompt", "request_id"}]
    client.review(user_id, image_id, rating, at)    (several at once: ``reviews``)

:class:`WarehouseClient` does them through the warehouse: users and generation requests rows
like the sign-up and request forms write, reviews through :func:`sleeve.reviews.record_reviews`
(the one review writer). A client for the web service's JSON API implements the same five
methods; nothing else in the simulation touches the warehouse.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from sleeve.ids import hash_email, mask_email, stable_id
from sleeve.reviews import record_reviews
from sleeve.store import ObjectStore
from sleeve.warehouse import Warehouse

EMAIL_DOMAIN = "example.com"  # reserved: simulated users are never real people


class UserClient(Protocol):
    def sign_up(self, names: list[str], at: datetime) -> dict[str, str]: ...

    def songs(self) -> list[dict]: ...

    def request_covers(self, user_id: str, song: dict, num_images: int, at: datetime) -> str: ...

    def my_covers(self, user_id: str, since: datetime, until: datetime) -> list[dict]: ...

    def reviews(self, reviews: list[dict]) -> dict: ...

    def image_bytes(self, uri: str) -> bytes: ...


class WarehouseClient:
    """The user actions on the embedded (or BigQuery) warehouse and the object store."""

    def __init__(self, warehouse: Warehouse, store: ObjectStore, pii_key: str):
        self.warehouse, self.store, self.pii_key = warehouse, store, pii_key

    def sign_up(self, names: list[str], at: datetime) -> dict[str, str]:
        rows = []
        for name in names:
            email = f"{name}@{EMAIL_DOMAIN}"
            email_hash = hash_email(email, self.pii_key)
            rows.append({"user_id": stable_id("user", email_hash), "email_hash": email_hash,
                         "email_masked": mask_email(email), "display_name": name, "is_demo": True,
                         "created_at": at})
        existing = {r["user_id"] for r in self.warehouse.query(
            "SELECT user_id FROM users WHERE user_id IN UNNEST(@ids)", {"ids": [r["user_id"] for r in rows]})}
        self.warehouse.upsert("users", [r for r in rows if r["user_id"] not in existing])
        return {r["display_name"]: r["user_id"] for r in rows}

    def songs(self) -> list[dict]:
        """Songs with a prompt (the newest per song), as the request form lists them."""
        rows = self.warehouse.query(
            "SELECT song_id, prompt_id, positive, created_at FROM prompts ORDER BY song_id, created_at DESC, prompt_id")
        seen, out = set(), []
        for row in rows:
            if row["song_id"] not in seen:
                seen.add(row["song_id"])
                out.append({"song_id": row["song_id"], "prompt_id": row["prompt_id"], "prompt": row["positive"]})
        return out

    def request_covers(self, user_id: str, song: dict, num_images: int, at: datetime) -> str:
        request_id = stable_id("sim-request", user_id, song["prompt_id"], at.isoformat())
        self.warehouse.upsert("generation_requests", [{
            "request_id": request_id, "song_id": song["song_id"], "prompt_id": song["prompt_id"], "user_id": user_id,
            "kind": "user", "num_images": num_images, "status": "pending", "created_at": at, "updated_at": at}])
        return request_id

    def my_covers(self, user_id: str, since: datetime, until: datetime) -> list[dict]:
        """The user's covers of requests made in [since, until), oldest first."""
        return self.warehouse.query(
            "SELECT i.image_id, i.uri, i.request_id, p.positive AS prompt FROM images AS i "
            "JOIN generation_requests AS r ON r.request_id = i.request_id "
            "LEFT JOIN prompts AS p ON p.prompt_id = i.prompt_id "
            "WHERE r.user_id = @user AND r.created_at >= @since AND r.created_at < @until "
            "ORDER BY r.created_at, i.request_id, i.image_index",
            {"user": user_id, "since": since, "until": until})

    def reviews(self, reviews: list[dict]) -> dict:
        return record_reviews(self.warehouse, reviews)

    def image_bytes(self, uri: str) -> bytes:
        from sleeve.store import open_uri

        store, key = open_uri(uri, self.store)
        return store.get_bytes(key)
