"""Preference pairs: within one request, rating gaps, ties, personal requests, the manifest."""

from datetime import timedelta

import pytest

from tests.training.conftest import WEEK_END, WEEK_START, png

DAY = WEEK_START + timedelta(days=1)


def add_request(warehouse, store, request_id, ratings, *, kind="user", model_version="base", adapters="[]",
                seed=0, when=DAY, song_id=None):
    """A request of len(ratings) images, each rated by the request's user (None: not rated)."""
    from sleeve.ids import sha256_bytes

    song_id = song_id or f"song-{request_id}"
    warehouse.upsert("prompts", [{"prompt_id": f"p-{request_id}", "song_id": song_id,
                                  "positive": f"album cover for {request_id}", "created_at": when - timedelta(days=5)}])
    warehouse.upsert("generation_requests", [{"request_id": request_id, "prompt_id": f"p-{request_id}", "kind": kind,
                                              "user_id": "u1", "num_images": len(ratings),
                                              "created_at": when - timedelta(days=1)}])
    images, reviews = [], []
    for n, rating in enumerate(ratings):
        data = png(seed + n)
        key = f"images/{request_id}-{n}.png"
        store.put_bytes(key, data)
        image_id = f"{request_id}-{n}"
        images.append({"image_id": image_id, "request_id": request_id, "image_index": n, "uri": store.uri(key),
                       "sha256": sha256_bytes(data), "prompt_id": f"p-{request_id}", "seed": n,
                       "model_version": model_version, "adapters": adapters, "created_at": when - timedelta(hours=1)})
        if rating is not None:
            reviews.append({"review_id": f"rv-{image_id}", "image_id": image_id, "user_id": "u1", "rating": rating,
                            "created_at": when})
    warehouse.upsert("images", images)
    warehouse.upsert("reviews", reviews)


def pairs_of(warehouse, store, gap=1.0, **config):
    from sleeve.store import open_uri, read_json
    from training.snapshot import SnapshotConfig, build_snapshot

    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END,
                          SnapshotConfig(min_rating_gap=gap, include_covers=False, **config))
    return snap, read_json(*open_uri(snap["uri"]))["pairs"]


def as_ratings(pairs):
    return sorted((p["preferred"]["rating"], p["dispreferred"]["rating"]) for p in pairs)


def test_pairs_within_a_request_by_gap_and_ties_dropped(warehouse, store):
    add_request(warehouse, store, "rq1", [5, 4, 4, 2], seed=10)
    add_request(warehouse, store, "rq2", [3, 3, None, 3], seed=20)  # all ties, one unrated
    snap, pairs = pairs_of(warehouse, store)
    assert as_ratings(pairs) == [(4, 2), (4, 2), (5, 2), (5, 4), (5, 4)]  # 4 vs 4 is a tie: no pair
    assert all(p["request_id"] == "rq1" and p["caption"] == "album cover for rq1" for p in pairs)
    assert snap["counts"]["pairs"] == 5
    _, wide = pairs_of(warehouse, store, gap=2)
    assert as_ratings(wide) == [(4, 2), (4, 2), (5, 2)]


def test_images_of_different_requests_never_pair(warehouse, store):
    add_request(warehouse, store, "rqa", [5], seed=30)
    add_request(warehouse, store, "rqb", [1], seed=40)
    assert pairs_of(warehouse, store)[1] == []


def test_personal_and_unknown_lineage_requests_are_excluded_whole(warehouse, store):
    add_request(warehouse, store, "face", [5, 1], kind="personalize", seed=50)
    add_request(warehouse, store, "db", [5, 1], adapters='[{"kind": "dreambooth", "version": "db-u1"}]', seed=60)
    add_request(warehouse, store, "unknown", [5, 1], model_version="mystery", adapters=None, seed=70)
    add_request(warehouse, store, "fine", [5, 1], seed=80)
    snap, pairs = pairs_of(warehouse, store)
    assert {p["request_id"] for p in pairs} == {"fine"}
    assert snap["counts"]["pairs_personal_requests_excluded"] == 2


def test_only_requests_reviewed_in_the_interval(warehouse, store):
    add_request(warehouse, store, "old", [5, 1], seed=90, when=WEEK_START - timedelta(days=3))
    assert pairs_of(warehouse, store)[1] == []


def test_pairs_are_content_hashed_in_the_manifest(warehouse, store):
    add_request(warehouse, store, "rq1", [5, 2], seed=100)
    first, _ = pairs_of(warehouse, store)
    assert pairs_of(warehouse, store)[0]["uri"] == first["uri"]
    warehouse.upsert("reviews", [{"review_id": "rv-rq1-1", "image_id": "rq1-1", "user_id": "u1", "rating": 5,
                                  "created_at": DAY}])  # now a tie
    changed, pairs = pairs_of(warehouse, store)
    assert pairs == [] and changed["uri"] != first["uri"]


def test_pairs_follow_the_group_split(warehouse, store):
    """A pair's request group is held out with its song: held-out pairs never train."""
    from training.snapshot import VAL, _split_score

    held = next(f"s{n}" for n in range(200) if _split_score(f"song:s{n}") < 0.15)
    trained = next(f"s{n}" for n in range(200) if _split_score(f"song:s{n}") >= 0.15)
    warehouse.upsert("songs", [{"song_id": s, "source": "sample", "source_id": s} for s in (held, trained)])
    add_request(warehouse, store, "held", [5, 1], seed=110, song_id=held)
    add_request(warehouse, store, "trained", [5, 1], seed=120, song_id=trained)
    _, pairs = pairs_of(warehouse, store)
    sides = {p["request_id"]: p["split"] for p in pairs}
    assert sides == {"held": VAL, "trained": "train"}


def test_the_reference_holds_the_held_out_pairs_of_trusted_earlier_weeks_only(warehouse, store):
    """Week 1 was promoted, week 2 kept (its reviews may be the bad ones): week 3's reference
    holds week 1's held-out pairs (read from the file beside its manifest), none of its train
    pairs and nothing of week 2."""
    from sleeve.store import open_uri, read_json
    from training.snapshot import VAL, SnapshotConfig, _split_score, build_snapshot, held_out_key

    songs = [f"s{n}" for n in range(200)]
    held = [s for s in songs if _split_score(f"song:{s}") < 0.25][:6]
    trained = [s for s in songs if _split_score(f"song:{s}") >= 0.25][:6]
    warehouse.upsert("songs", [{"song_id": s, "source": "sample", "source_id": s} for s in held + trained])
    weeks = [WEEK_START + timedelta(days=7 * k) for k in range(4)]
    for week in (1, 2, 3):
        for n, song in enumerate(held + trained):
            add_request(warehouse, store, f"w{week}-{song}", [5, 3, 1], seed=1000 * week + 10 * n, song_id=song,
                        when=weeks[week - 1] + timedelta(days=1))
    uris = {}
    for week, decision in ((1, "promote"), (2, "keep")):
        snap = build_snapshot(warehouse, store, weeks[week - 1], weeks[week], SnapshotConfig(include_covers=False))
        uris[week] = snap["uri"]
        warehouse.upsert("training_runs", [{
            "run_id": f"run{week}", "kind": "style", "status": "trained", "decision": decision,
            "manifest_uri": snap["uri"], "model_version": f"style-w{week}",
            "interval_start": weeks[week - 1], "interval_end": weeks[week]}])
    week1 = read_json(*open_uri(uris[1]))
    src, key = open_uri(uris[1])
    week1_held_out = [p for p in week1["pairs"] if p["split"] == VAL]
    assert len(week1_held_out) == 3 * len(held) and read_json(src, held_out_key(key))["pairs"] == week1_held_out

    snap = build_snapshot(warehouse, store, weeks[2], weeks[3], SnapshotConfig(include_covers=False))
    reference = read_json(*open_uri(snap["uri"]))["reference"]
    assert sorted(p["request_id"] for p in reference["pairs"]) == sorted(p["request_id"] for p in week1_held_out)
    assert {p["week"] for p in reference["pairs"]} == {str(weeks[0])}
    assert snap["counts"]["reference_pairs"] == len(week1_held_out)
    assert [w["pairs"] for w in reference["weeks"]] == [len(week1_held_out)]


def test_dpo_objective_skips_with_too_few_pairs(warehouse, store):
    add_request(warehouse, store, "rq1", [5, 2], seed=130)
    snap, _ = pairs_of(warehouse, store, objective="dpo", min_pairs=2)
    assert "fewer than min_pairs=2" in snap["skip_reason"]
    add_request(warehouse, store, "rq2", [4, 1], seed=140)
    assert pairs_of(warehouse, store, objective="dpo", min_pairs=2)[0]["skip_reason"] is None


@pytest.mark.parametrize("bad", [{"min_rating_gap": 0}, {"objective": "rlhf"}])
def test_bad_preference_settings_name_themselves(bad):
    from training.snapshot import SnapshotConfig

    with pytest.raises(ValueError, match=next(iter(bad))):
        SnapshotConfig(**bad)


def test_an_image_row_without_a_uri_is_dropped_with_the_reason(warehouse, store):
    """Rows written without a URI (a failed upload, a hand-made row) are a bad input, not a crash."""
    from training.snapshot import SnapshotConfig, build_snapshot

    warehouse.upsert("images", [{"image_id": "nouri", "request_id": "rq-x", "image_index": 0, "model_version": "base",
                                 "adapters": "[]", "created_at": DAY}])
    warehouse.upsert("reviews", [{"review_id": "rv-nouri", "image_id": "nouri", "user_id": "u1", "rating": 5,
                                  "created_at": DAY}])
    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END, SnapshotConfig(include_covers=False))
    assert {"ref": "nouri", "uri": None, "reason": "unreadable: no image URI recorded"} in snap["dropped"]
