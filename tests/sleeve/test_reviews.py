from datetime import UTC, datetime

import pytest

from sleeve.reviews import ReviewError, check_review, record_reviews, review_id_for

NOW = datetime(2026, 11, 10, 12, tzinfo=UTC)


def _review(**overrides) -> dict:
    return {"image_id": "img-1", "user_id": "user-1", "rating": 4, "comment": " nice ", "created_at": NOW, **overrides}


@pytest.mark.parametrize("rating", [0, 6, -1, 4.5, "5", True, None, 5.0])
def test_ratings_outside_one_to_five_whole_stars_are_rejected(rating):
    with pytest.raises(ReviewError, match="rating"):
        check_review(_review(rating=rating))


@pytest.mark.parametrize("field,value,match", [
    ("image_id", "", "image_id"), ("user_id", None, "user_id"), ("comment", 5, "comment"),
    ("comment", "a\x00b", "NUL"), ("comment", "x" * 2001, "characters"),
    ("created_at", datetime(2026, 11, 10), "timezone"), ("created_at", "2026-11-10", "timezone"),
])
def test_malformed_fields_are_rejected(field, value, match):
    with pytest.raises(ReviewError, match=match):
        check_review(_review(**{field: value}))


def test_one_review_per_user_and_image_and_bad_ones_fail_alone(warehouse):
    warehouse.upsert("users", [{"user_id": "user-1"}, {"user_id": "user-2"}])
    warehouse.upsert("images", [{"image_id": "img-1", "request_id": "req-1"}])
    outcome = record_reviews(warehouse, [_review(), _review(rating=9), _review(image_id="img-404"),
                                         _review(user_id="user-404"), _review(user_id="user-2", rating=1)])
    assert outcome["recorded"] == 2
    assert [r["index"] for r in outcome["rejected"]] == [1, 2, 3]
    assert "unknown image" in outcome["rejected"][1]["reason"] and "unknown user" in outcome["rejected"][2]["reason"]
    # A second review of the same image by the same user updates the first.
    assert record_reviews(warehouse, [_review(rating=2, comment=None)])["recorded"] == 1
    rows = warehouse.query("SELECT review_id, user_id, rating, comment FROM reviews ORDER BY user_id")
    assert rows == [{"review_id": review_id_for("img-1", "user-1"), "user_id": "user-1", "rating": 2, "comment": None},
                    {"review_id": review_id_for("img-1", "user-2"), "user_id": "user-2", "rating": 1, "comment": "nice"}]
