"""Snapshot selection, dedupe, unreadable images and the skip path, on the real warehouse/store."""

from datetime import timedelta

from tests.training.conftest import WEEK_END, WEEK_START


def test_snapshot_filters_dedupes_and_records_reasons(warehouse, store, world):
    from sleeve.store import open_uri, read_json
    from training.snapshot import SnapshotConfig, build_snapshot

    with_covers = SnapshotConfig(include_covers=True)
    assert build_snapshot(warehouse, store, WEEK_START, WEEK_END)["counts"]["covers"] == 0  # off by default
    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END, with_covers)
    counts = snap["counts"]
    assert counts["generated"] == world["passing_generated"] and counts["covers"] == world["covers"]
    assert counts["duplicates"] == 1 and counts["unreadable"] == 1 and snap["skip_reason"] is None
    manifest = read_json(*open_uri(snap["uri"]))
    assert all(i["caption"] for i in manifest["items"])
    assert {d["ref"] for d in manifest["dropped"]} == {"imgdup", "cbroken"}
    again = build_snapshot(warehouse, store, WEEK_START, WEEK_END, with_covers)
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
    warehouse.upsert("reviews", [{"review_id": "rvnear", "image_id": "imgnear", "user_id": "u3", "rating": 5,
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


def _reviews(warehouse, image_id, ratings, users=None):
    day = WEEK_START + timedelta(days=1)
    users = users or [f"u{n}" for n in range(len(ratings))]
    warehouse.upsert("reviews", [{"review_id": f"{image_id}-{n}", "image_id": image_id, "user_id": user,
                                  "rating": rating, "created_at": day}
                                 for n, (rating, user) in enumerate(zip(ratings, users, strict=True))])


def test_invalid_legacy_ratings_are_ignored(warehouse, store, world):
    """Rows written before sleeve.reviews validated ratings: outside 1..5 or NULL never count."""
    from training.snapshot import SnapshotConfig, build_snapshot

    def selected():
        snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END, SnapshotConfig(include_covers=False))
        return snap

    before = selected()["counts"]["generated"]
    _reviews(warehouse, "img2", [3, 50])  # a 3 and an out-of-range 50: the mean of valid ratings is 3
    assert selected()["counts"]["generated"] == before
    _reviews(warehouse, "img4", [2, 0, -5, None])  # the 2 stays; 0, -5 and NULL are not ratings
    assert selected()["counts"]["generated"] == before
    _reviews(warehouse, "img2", [5, 5, 99], users=["u1", "u7", "u8"])  # valid 5 + 5 (u0's 3 was replaced)
    assert selected()["counts"]["generated"] == before + 1
    # an image whose only review in the week is invalid was not reviewed this week
    row = warehouse.query("SELECT * FROM images WHERE image_id = 'img1'")[0]
    warehouse.upsert("reviews", [{"review_id": "rv1", "image_id": "img1", "user_id": "u1", "rating": 6,
                                  "created_at": WEEK_START + timedelta(days=1)}])
    assert row and selected()["counts"]["generated"] == before


def test_min_reviews_counts_distinct_reviewers_not_rows(warehouse, store, world):
    from training.snapshot import SnapshotConfig, build_snapshot

    config = SnapshotConfig(include_covers=False, min_reviews=2, min_examples=1)
    assert build_snapshot(warehouse, store, WEEK_START, WEEK_END, config)["counts"]["generated"] == 0
    _reviews(warehouse, "img0", [5, 5, 5], users=["u1", "u1", "u1"])  # legacy duplicates of one reviewer
    assert build_snapshot(warehouse, store, WEEK_START, WEEK_END, config)["counts"]["generated"] == 0
    _reviews(warehouse, "img3", [5, 4], users=["u1", "u2"])  # two people
    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END, config)
    assert snap["counts"]["generated"] == 1
    from sleeve.store import open_uri, read_json

    [item] = read_json(*open_uri(snap["uri"]))["items"]
    assert (item["ref"], item["reviews"], item["rating"]) == ("img3", 2, 4.5)
    # one reviewer's legacy duplicates weigh once in the mean: u1 5,5,5,5 and u2 1 -> (5 + 1) / 2 = 3 < 4
    _reviews(warehouse, "img5", [5, 5, 5, 5, 1], users=["u1", "u1", "u1", "u1", "u2"])
    assert build_snapshot(warehouse, store, WEEK_START, WEEK_END, config)["counts"]["generated"] == 1


def test_image_bytes_are_read_once_then_hashes_come_from_the_warehouse(warehouse, store, world, monkeypatch):
    """The first snapshot reads each image, stores its perceptual hash and size on the row;
    later snapshots (of this or any other week) read no image bytes at all."""
    from training import snapshot

    reads = []
    real = snapshot.read_image_bytes

    def counting(uri, store=None):
        reads.append(uri)
        return real(uri, store)

    monkeypatch.setattr(snapshot, "read_image_bytes", counting)
    with_covers = snapshot.SnapshotConfig(include_covers=True)
    first = snapshot.build_snapshot(warehouse, store, WEEK_START, WEEK_END, with_covers)
    readable = {r["uri"] for r in warehouse.query("SELECT uri FROM covers WHERE song_id != 'cbroken'")}
    assert readable <= set(reads)
    first_reads = len(set(reads))
    reads.clear()
    again = snapshot.build_snapshot(warehouse, store, WEEK_START, WEEK_END, with_covers)
    assert reads == [store.uri("covers/broken.png")]  # only what could not be hashed is tried again
    assert again["uri"] == first["uri"] and again["counts"] == first["counts"]
    assert (first["hashed_now"], again["hashed_now"]) == (first_reads - 1, 0)  # all but the broken cover
    hashed = warehouse.query("SELECT song_id, phash, width, height FROM covers WHERE phash IS NOT NULL "
                             "ORDER BY song_id")
    assert [r["song_id"] for r in hashed] == ["c0", "c1", "c2"] and all(len(r["phash"]) == 16 for r in hashed)
    assert all((r["width"], r["height"]) == (80, 80) for r in hashed)
    reads.clear()
    snapshot.build_snapshot(warehouse, store, WEEK_START + timedelta(days=7), WEEK_END + timedelta(days=7),
                            with_covers)
    assert reads == [store.uri("covers/broken.png")]


def test_near_duplicate_search_finds_what_a_full_scan_finds():
    import random

    from sleeve.phash import distance, near_duplicates

    rng = random.Random(5)
    hashes = [rng.getrandbits(64) for _ in range(600)]
    for n in range(0, 600, 7):  # plant near-duplicates at 0..6 bits
        flipped = hashes[n]
        for bit in rng.sample(range(64), n % 7):
            flipped ^= 1 << bit
        hashes.append(flipped)
    hashes += [0, 1, 3, 0]  # a cluster that shares every band
    for d in (0, 3, 4, 8):
        kept_scan, twins_scan = [], []
        for n, h in enumerate(hashes):
            twin = next((k for k in kept_scan if distance(h, hashes[k]) <= d), None)
            twins_scan.append(twin)
            if twin is None:
                kept_scan.append(n)
        twins = near_duplicates(hashes, d)
        assert [t is None for t in twins] == [t is None for t in twins_scan]
        assert all(twins[twins[n]] is None and distance(hashes[n], hashes[twins[n]]) <= d
                   for n in range(len(hashes)) if twins[n] is not None)
        assert sum(t is not None for t in twins) > (len(hashes) - 600) // 2


def _rated_week(warehouse, store, week: int, start, rating=5, n=12):
    """``n`` images of ``n`` songs (no album), each reviewed once on the week's second day."""
    from sleeve.ids import sha256_bytes
    from tests.training.conftest import png

    day = start + timedelta(days=1)
    prompts, images, reviews = [], [], []
    for i in range(n):
        ref, data = f"w{week}i{i}", png(7000 + week * 100 + i)
        store.put_bytes(f"images/{ref}.png", data)
        prompts.append({"prompt_id": f"p-{ref}", "song_id": f"s-{ref}", "positive": f"album cover {ref}",
                        "created_at": day - timedelta(days=3)})
        images.append({"image_id": ref, "request_id": f"r-{ref}", "image_index": 0, "uri": store.uri(f"images/{ref}.png"),
                       "sha256": sha256_bytes(data), "prompt_id": f"p-{ref}", "seed": i, "model_version": "base",
                       "width": 72, "height": 64, "created_at": day})
        reviews.append({"review_id": f"rv-{ref}", "image_id": ref, "user_id": "u1", "rating": rating, "created_at": day})
    for table, rows in (("prompts", prompts), ("images", images), ("reviews", reviews)):
        warehouse.upsert(table, rows)


def test_replay_trains_again_on_trusted_weeks_only(warehouse, store):
    """Week 1 was promoted, week 2 kept (its reviews may be the bad ones): week 3's snapshot
    trains on week 1's train-side images again, never on week 2's, and week 1's held-out
    images stay evidence (the reference), never training data."""
    from sleeve.store import open_uri, read_json
    from training.snapshot import TRAIN, VAL, SnapshotConfig, build_snapshot

    weeks = [WEEK_START + timedelta(days=7 * k) for k in range(4)]
    for week in (1, 2, 3):
        _rated_week(warehouse, store, week, weeks[week - 1])
    config = SnapshotConfig(val_fraction=0.3, replay=True)
    earlier = {}
    for week, decision in ((1, "promote"), (2, "keep")):
        snap = build_snapshot(warehouse, store, weeks[week - 1], weeks[week], config)
        earlier[week] = read_json(*open_uri(snap["uri"]))
        warehouse.upsert("training_runs", [{
            "run_id": f"run{week}", "kind": "style", "status": "trained", "decision": decision,
            "manifest_uri": snap["uri"], "model_version": f"style-w{week}",
            "interval_start": weeks[week - 1], "interval_end": weeks[week]}])
    assert earlier[1]["counts"]["replayed"] == 0  # nothing was trusted before week 1

    manifest = read_json(*open_uri(build_snapshot(warehouse, store, weeks[2], weeks[3], config)["uri"]))
    replayed = [i for i in manifest["items"] if i.get("replay")]
    week1_train = {i["ref"] for i in earlier[1]["items"] if i["split"] == TRAIN}
    week1_val = {i["ref"] for i in earlier[1]["items"] if i["split"] == VAL}
    assert week1_train and week1_val
    assert {i["ref"] for i in replayed} == week1_train
    assert {i["split"] for i in replayed} == {TRAIN} and {i["replay"] for i in replayed} == {str(weeks[0])}
    assert not any(i["ref"].startswith("w2") for i in manifest["items"])  # the kept week is never learnt
    assert {i["ref"] for i in manifest["reference"]["items"]} == week1_val
    assert manifest["counts"]["replayed"] == len(week1_train)
    assert {i["ref"] for i in manifest["items"] if not i.get("replay")} == {f"w3i{n}" for n in range(12)}

    alone = read_json(*open_uri(build_snapshot(warehouse, store, weeks[2], weeks[3],
                                               SnapshotConfig(val_fraction=0.3))["uri"]))  # the default: off
    assert alone["counts"]["replayed"] == 0 and {i["ref"][:2] for i in alone["items"]} == {"w3"}
