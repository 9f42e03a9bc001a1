"""Demo seeding: deterministic demo users, requests and a personalisation request."""

from datetime import UTC, datetime, timedelta

import pytest
from sleeve_airflow import demo_data

WEEK_START = datetime(2026, 11, 9, 3, tzinfo=UTC)
WEEK_END = WEEK_START + timedelta(days=7)


def test_demo_week_is_seeded_deterministically(warehouse, store, sleeve_env):
    with pytest.raises(RuntimeError, match="no prompts"):
        demo_data.seed_requests(warehouse, sleeve_env, WEEK_START, WEEK_END)
    warehouse.upsert("prompts", [{"prompt_id": f"p{i}", "song_id": f"s{i}", "positive": f"cover {i}",
                                  "created_at": WEEK_START} for i in range(3)])
    assert demo_data.seed_requests(warehouse, sleeve_env, WEEK_START, WEEK_END) == 3
    assert demo_data.seed_requests(warehouse, sleeve_env, WEEK_START, WEEK_END) == 3
    requests = warehouse.query("SELECT * FROM generation_requests")
    assert len(requests) == 3 and {r["kind"] for r in requests} == {"demo"}
    assert all(WEEK_START <= r["created_at"] < WEEK_END for r in requests)
    users = warehouse.query("SELECT * FROM users")
    assert len(users) == len(demo_data.DEMO_USERS) and all(u["is_demo"] for u in users)
    assert all(u["email_masked"].endswith("@e***.com") and "@example" not in u["email_masked"] for u in users)

    request_id = demo_data.seed_personalization(warehouse, sleeve_env, store, WEEK_START)
    assert demo_data.seed_personalization(warehouse, sleeve_env, store, WEEK_START) == request_id
    row = warehouse.query("SELECT * FROM personalization_requests")[0]
    assert (row["request_id"], row["status"], row["photo_count"]) == (request_id, "pending", 4)


def test_demo_reviews_rate_what_the_covers_show(warehouse, store, sleeve_env):
    """Demo users rate with the simulated default taste: a vivid cover in the prompt's colours
    with a centred subject beats a grey one with nothing in the middle."""
    import io

    from PIL import Image, ImageDraw

    from sleeve.ids import sha256_bytes

    prompt = ("album cover art, square composition, a single scene of sun, joyful mood, crimson and sunny yellow "
              "colour palette, pop art, pop music, centered subject, no text or lettering")
    warehouse.upsert("prompts", [{"prompt_id": "p0", "song_id": "s0", "positive": prompt, "created_at": WEEK_START}])
    demo_data.seed_requests(warehouse, sleeve_env, WEEK_START, WEEK_END, per_user=1)
    request = warehouse.query("SELECT request_id FROM generation_requests")[0]["request_id"]
    good = Image.new("RGB", (64, 64), (200, 20, 50))
    ImageDraw.Draw(good).ellipse([18, 18, 46, 46], fill=(255, 220, 40))
    rows = []
    for n, image in enumerate([good, Image.new("RGB", (64, 64), (128, 128, 128))] * 3):
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        key = f"images/{n}.png"
        store.put_bytes(key, buf.getvalue())
        rows.append({"image_id": f"i{n}", "request_id": request, "image_index": n, "uri": store.uri(key),
                     "sha256": sha256_bytes(buf.getvalue()), "prompt_id": "p0", "model_version": "base",
                     "created_at": WEEK_START + timedelta(days=1)})
    warehouse.upsert("images", rows)
    assert demo_data.seed_reviews(warehouse, store, WEEK_START, WEEK_END) == 6
    ratings = {r["image_id"]: r["rating"] for r in warehouse.query("SELECT image_id, rating FROM reviews")}
    assert min(ratings[f"i{n}"] for n in (0, 2, 4)) > max(ratings[f"i{n}"] for n in (1, 3, 5))
