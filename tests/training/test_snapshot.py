"""Snapshot selection, dedupe, unreadable images and the skip path, on the real warehouse/store."""

from datetime import timedelta

from tests.training.conftest import WEEK_END, WEEK_START


def test_snapshot_filters_dedupes_and_records_reasons(warehouse, store, world):
    from sleeve.store import open_uri, read_json
    from training.snapshot import build_snapshot

    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END)
    counts = snap["counts"]
    assert counts["generated"] == world["passing_generated"] and counts["covers"] == world["covers"]
    assert counts["duplicates"] == 1 and counts["unreadable"] == 1 and snap["skip_reason"] is None
    manifest = read_json(*open_uri(snap["uri"]))
    assert all(i["caption"] for i in manifest["items"])
    assert {d["ref"] for d in manifest["dropped"]} == {"imgdup", "cbroken"}
    again = build_snapshot(warehouse, store, WEEK_START, WEEK_END)
    assert again["uri"] == snap["uri"]  # same selection, same immutable object


def test_stricter_filter_and_other_weeks(warehouse, store, world):
    from training.snapshot import SnapshotConfig, build_snapshot

    strict = build_snapshot(warehouse, store, WEEK_START, WEEK_END, SnapshotConfig(min_rating=5, include_covers=False))
    assert strict["counts"]["generated"] == 2  # ratings 5 and 5 (the duplicate of one is dropped)
    earlier = build_snapshot(warehouse, store, WEEK_START - timedelta(days=7), WEEK_START)
    assert earlier["counts"]["generated"] == 0
    assert "fewer than min_examples" in earlier["skip_reason"]


def test_near_duplicates_are_dropped(warehouse, store, world):
    import io

    from PIL import Image

    from sleeve.ids import sha256_bytes
    from tests.training.conftest import png
    from training.snapshot import build_snapshot

    image = Image.open(io.BytesIO(png(100)))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=90)  # same picture, different bytes
    store.put_bytes("images/near.jpg", buf.getvalue())
    row = warehouse.query("SELECT * FROM images WHERE image_id = 'img0'")[0]
    warehouse.upsert("images", [{**row, "image_id": "imgnear", "uri": store.uri("images/near.jpg"),
                                 "sha256": sha256_bytes(buf.getvalue())}])
    warehouse.upsert("reviews", [{"review_id": "rvnear", "image_id": "imgnear", "rating": 5,
                                  "created_at": WEEK_START + timedelta(days=1)}])
    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END)
    assert any(d["ref"] in ("imgnear", "img0") and "near-duplicate" in d["reason"] for d in snap["dropped"])


def test_personalised_covers_never_enter_the_style_snapshot(warehouse, store, world):
    """A well-rated personalised cover shows a user's face: it must not train the shared model,
    whether it is recognised by its request kind or by the DreamBooth model that made it."""
    from training.snapshot import build_snapshot

    before = build_snapshot(warehouse, store, WEEK_START, WEEK_END)["counts"]["generated"]
    row = warehouse.query("SELECT * FROM images WHERE image_id = 'img0'")[0]
    day = WEEK_START + timedelta(days=1)
    warehouse.upsert("generation_requests", [{"request_id": "face-req", "kind": "personalize", "created_at": day}])
    warehouse.upsert("model_versions", [{"version": "dreambooth-u1", "kind": "dreambooth", "user_id": "u1"}])
    faces = [
        {**row, "image_id": "face-by-kind", "request_id": "face-req", "sha256": "f1", "uri": row["uri"] + "?1"},
        {**row, "image_id": "face-by-model", "model_version": "dreambooth-u1", "sha256": "f2", "uri": row["uri"] + "?2"},
    ]
    warehouse.upsert("images", faces)
    warehouse.upsert("reviews", [{"review_id": f"rv-{f['image_id']}", "image_id": f["image_id"], "rating": 5,
                                  "created_at": day} for f in faces])
    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END)
    assert snap["counts"]["generated"] == before
    assert not {"face-by-kind", "face-by-model"} & {d["ref"] for d in snap["dropped"]}
