"""Where reviews enter the warehouse: the one writer every source of ratings goes through.

The web service, the demo and the simulated users all call :func:`record_reviews`, so a rating
is checked once, at the boundary: an integer 1..5 (not a bool, not 4.5, not "5"), by a known
user, of an image that exists (a cover in ``images`` or a shot in ``product_shots``), with a short
plain-text comment. A user has one review per image:
``review_id`` is derived from (image, user), so a second review of the same image updates the
first instead of adding a row. A bad review is rejected alone, with its reason; the rest land.
"""

from __future__ import annotations

from datetime import datetime

from sleeve.ids import stable_id
from sleeve.warehouse import Warehouse

MIN_RATING, MAX_RATING = 1, 5
MAX_COMMENT_CHARS = 2000

# The reviews that count, for every reader that learns from them (the snapshot, the preference
# pairs): one per user and image (averaged), by a known user, before the interval's @end.
PER_USER_RATINGS_SQL = """
  SELECT image_id, user_id, AVG(rating) AS rating, MAX(created_at) AS last_at
  FROM reviews
  WHERE created_at < @end AND rating BETWEEN 1 AND 5 AND user_id IS NOT NULL
  GROUP BY image_id, user_id
"""


class ReviewError(ValueError):
    """A review that must not be stored; the message says why."""


def review_id_for(image_id: str, user_id: str) -> str:
    return stable_id("review", image_id, user_id)


def check_review(review: dict) -> dict:
    """The review as it will be stored, or ReviewError naming the bad field."""
    rating = review.get("rating")
    if isinstance(rating, bool) or not isinstance(rating, int) or not MIN_RATING <= rating <= MAX_RATING:
        raise ReviewError(f"rating must be a whole number of stars from {MIN_RATING} to {MAX_RATING}, got {rating!r}")
    for name in ("image_id", "user_id"):
        value = review.get(name)
        if not isinstance(value, str) or not value.strip():
            raise ReviewError(f"{name} must be a non-empty string, got {value!r}")
    comment = review.get("comment")
    if comment is not None:
        if not isinstance(comment, str):
            raise ReviewError(f"comment must be text, got {type(comment).__name__}")
        if "\x00" in comment:
            raise ReviewError("comment must not contain NUL characters")
        if len(comment) > MAX_COMMENT_CHARS:
            raise ReviewError(f"comment is {len(comment)} characters; at most {MAX_COMMENT_CHARS} are kept")
        comment = comment.strip() or None
    created = review.get("created_at")
    if not isinstance(created, datetime) or created.tzinfo is None:
        raise ReviewError(f"created_at must be a timezone-aware datetime, got {created!r}")
    return {"review_id": review_id_for(review["image_id"], review["user_id"]), "image_id": review["image_id"],
            "user_id": review["user_id"], "rating": rating, "comment": comment, "created_at": created}


def record_reviews(warehouse: Warehouse, reviews: list[dict]) -> dict:
    """Validate and upsert ``reviews`` (dicts with image_id, user_id, rating, comment?, created_at).
    Returns ``{"recorded": n, "rejected": [{"index": i, "reason": ...}]}``."""
    checked, rejected = {}, []
    for index, review in enumerate(reviews):
        try:
            checked[index] = check_review(review)
        except ReviewError as exc:
            rejected.append({"index": index, "reason": str(exc)})
    image_ids = sorted({r["image_id"] for r in checked.values()})
    user_ids = sorted({r["user_id"] for r in checked.values()})
    known_images = {r["image_id"] for r in warehouse.query(  # a cover, or a product shot (no images row)
        "SELECT image_id FROM images WHERE image_id IN UNNEST(@ids) "
        "UNION ALL SELECT shot_id AS image_id FROM product_shots WHERE shot_id IN UNNEST(@ids)",
        {"ids": image_ids})} if image_ids else set()
    known_users = {r["user_id"] for r in warehouse.query(
        "SELECT user_id FROM users WHERE user_id IN UNNEST(@ids)", {"ids": user_ids})} if user_ids else set()
    rows = []
    for index, row in checked.items():
        if row["image_id"] not in known_images:
            rejected.append({"index": index, "reason": f"unknown image {row['image_id']!r}"})
        elif row["user_id"] not in known_users:
            rejected.append({"index": index, "reason": f"unknown user {row['user_id']!r}"})
        else:
            rows.append(row)
    warehouse.upsert("reviews", rows)
    return {"recorded": len(rows), "rejected": sorted(rejected, key=lambda r: r["index"])}
