"""A simulated week of users, generation requests and reviews for the offline demo.

Everything here is deterministic (derived from ids, never from the wall clock or a global RNG)
and clearly marked as demo data: users have ``is_demo = TRUE``, emails use the reserved
``example.com`` domain, requests have kind ``demo``. Timestamps fall inside the demo week.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sleeve.ids import hash_email, mask_email, stable_id
from sleeve.reviews import record_reviews
from sleeve.settings import Settings
from sleeve.store import ObjectStore
from sleeve.warehouse import Warehouse
from training.dreambooth import submit_request
from training.photos import synthetic_photos

DEMO_USERS = ("mina", "joon", "alex", "sora", "lee")


def _unit(*parts: object) -> float:
    """A stable pseudo-random number in [0, 1) for the given parts."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def seed_users(warehouse: Warehouse, settings: Settings, week_start: datetime) -> list[str]:
    rows = []
    for name in DEMO_USERS:
        email = f"{name}@example.com"
        email_hash = hash_email(email, settings.pii_key)
        rows.append({
            "user_id": stable_id("user", email_hash), "email_hash": email_hash, "email_masked": mask_email(email),
            "display_name": f"demo-{name}", "is_demo": True, "created_at": week_start,
        })
    warehouse.upsert("users", rows)
    return [r["user_id"] for r in rows]


def seed_requests(warehouse: Warehouse, settings: Settings, week_start: datetime, week_end: datetime,
                  per_user: int = 2, images_per_request: int = 4) -> int:
    """Each demo user asks for covers of a few labelled songs during the week."""
    users = seed_users(warehouse, settings, week_start)
    prompts = warehouse.query(
        "SELECT prompt_id, song_id FROM prompts ORDER BY prompt_id LIMIT @n", {"n": len(users) * per_user}
    )
    if not prompts:
        raise RuntimeError("no prompts to request covers for: run crawl_songs and label_songs first")
    span = (week_end - week_start).total_seconds()
    rows = []
    for i, prompt in enumerate(prompts):
        user = users[i % len(users)]
        created = week_start + timedelta(seconds=int(span * _unit("request-time", prompt["prompt_id"], user)))
        rows.append({
            "request_id": stable_id("demo-request", week_start.isoformat(), user, prompt["prompt_id"]),
            "song_id": prompt["song_id"], "prompt_id": prompt["prompt_id"], "user_id": user, "kind": "demo",
            "num_images": images_per_request, "status": "pending", "created_at": created, "updated_at": created,
        })
    warehouse.upsert("generation_requests", rows)
    return len(rows)


def seed_reviews(warehouse: Warehouse, week_start: datetime, week_end: datetime) -> int:
    """The requesting user rates each of the week's demo images 1-5 (skewed towards good)."""
    images = warehouse.query(
        "SELECT i.image_id, r.user_id, i.created_at FROM images AS i "
        "JOIN generation_requests AS r ON r.request_id = i.request_id "
        "WHERE r.kind = 'demo' AND r.created_at >= @start AND r.created_at < @end",
        {"start": week_start, "end": week_end},
    )
    reviews = []
    for image in images:
        rating = 1 + min(4, int(5 * _unit("rating", image["image_id"]) ** 0.6))
        created = max(image["created_at"] or week_start, week_start)
        reviews.append({"image_id": image["image_id"], "user_id": image["user_id"], "rating": rating,
                        "created_at": min(created, week_end - timedelta(seconds=1))})
    outcome = record_reviews(warehouse, reviews)
    if outcome["rejected"]:
        raise RuntimeError(f"demo reviews were rejected: {outcome['rejected'][:3]}")
    return outcome["recorded"]


def seed_personalization(warehouse: Warehouse, settings: Settings, store: ObjectStore, week_start: datetime) -> str:
    """One demo user uploads synthetic face photos (drawn procedurally, no real person) and asks
    for a personalised cover of one song. Returns the request id."""
    user = seed_users(warehouse, settings, week_start)[0]
    song = warehouse.query("SELECT song_id FROM prompts ORDER BY song_id LIMIT 1")
    if not song:
        raise RuntimeError("no prompts to personalise: run crawl_songs and label_songs first")
    row = submit_request(warehouse, store, user, synthetic_photos(4, seed=7), "person",
                         song_ids=[song[0]["song_id"]], num_images=1, now=week_start + timedelta(days=4))
    if row["status"] == "failed":
        raise RuntimeError(f"demo personalisation request was rejected: {row['reason']}")
    return row["request_id"]


def seed_product_reviews(warehouse: Warehouse, settings: Settings, week_start: datetime, week_end: datetime) -> int:
    """The demo users rate the week's product shots 1-5, like covers (shot id as image id)."""
    users = seed_users(warehouse, settings, week_start)
    shots = warehouse.query("SELECT shot_id, created_at FROM product_shots WHERE created_at >= @start "
                            "AND created_at < @end ORDER BY shot_id", {"start": week_start, "end": week_end})
    reviews = [{"image_id": shot["shot_id"], "user_id": users[i % len(users)],
                "rating": 1 + min(4, int(5 * _unit("product-rating", shot["shot_id"]) ** 0.6)),
                "created_at": min(shot["created_at"] + timedelta(hours=1), week_end - timedelta(seconds=1))}
               for i, shot in enumerate(shots)]
    outcome = record_reviews(warehouse, reviews)
    if outcome["rejected"]:
        raise RuntimeError(f"demo product reviews were rejected: {outcome['rejected'][:3]}")
    return outcome["recorded"]
