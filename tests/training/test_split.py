"""The snapshot's train / held-out split: deterministic, disjoint, recorded; the trainer sees
only train items and the evaluation's validation loss only held-out items; no held-out images
means the gate keeps the champion."""

import json

import pytest

from tests.training.conftest import WEEK_END, WEEK_START


def test_split_is_deterministic_disjoint_and_recorded(warehouse, store, world):
    from sleeve.store import open_uri, read_json
    from training.snapshot import TRAIN, VAL, SnapshotConfig, build_snapshot, split_items

    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END)
    manifest = read_json(*open_uri(snap["uri"]))
    train, val = split_items(manifest, TRAIN), split_items(manifest, VAL)
    assert len(train) + len(val) == len(manifest["items"]) == snap["counts"]["examples"]
    assert val and train  # >= min_examples items: at least one held out, at least one trained on
    assert not {i["sha256"] for i in train} & {i["sha256"] for i in val}
    assert not {i["uri"] for i in train} & {i["uri"] for i in val}
    assert manifest["split"] == snap["split"]
    assert (manifest["split"]["train"], manifest["split"]["val"]) == (len(train), len(val))
    assert (snap["counts"]["train"], snap["counts"]["val"]) == (len(train), len(val))
    assert manifest["split"]["val_fraction"] == SnapshotConfig().val_fraction

    again = build_snapshot(warehouse, store, WEEK_START, WEEK_END)
    assert again["uri"] == snap["uri"] and read_json(*open_uri(again["uri"])) == manifest

    # an image's side depends on its content only: another selection keeps every image's side
    others = read_json(*open_uri(build_snapshot(warehouse, store, WEEK_START, WEEK_END,
                                                SnapshotConfig(include_covers=False, min_examples=99))["uri"]))
    side = {i["sha256"]: i["split"] for i in manifest["items"]}
    hashed = [i for i in others["items"] if i["sha256"] in side]
    assert hashed and all(i["split"] == side[i["sha256"]] for i in hashed)
    assert "fewer than min_examples" in others["skip_reason"]


def test_split_fraction_rules():
    from training.snapshot import VAL, SnapshotConfig, assign_splits

    items = [{"sha256": f"{n:064x}", "group": f"request:{n}"} for n in range(200)]
    half = assign_splits(items, SnapshotConfig(val_fraction=0.5))
    assert 70 < sum(i["split"] == VAL for i in half) < 130  # a hash threshold, about the fraction
    assert [i["sha256"] for i in half] == [i["sha256"] for i in items]  # order kept
    assert not any(i["split"] == VAL for i in assign_splits(items, SnapshotConfig(val_fraction=0)))
    few = assign_splits(items[:4], SnapshotConfig(val_fraction=0.01, min_examples=4))
    assert sum(i["split"] == VAL for i in few) == 1  # at least one held out
    assert sum(i["split"] == VAL for i in assign_splits(items[:3], SnapshotConfig(min_examples=4))) <= 1
    assert [i["split"] for i in assign_splits(items[:1], SnapshotConfig(min_examples=1))] == ["train"]
    one_group = [{**i, "group": "song:s1"} for i in items[:8]]  # one group cannot be split
    assert {i["split"] for i in assign_splits(one_group, SnapshotConfig(val_fraction=0.5))} == {"train"}
    with pytest.raises(ValueError, match="val_fraction"):
        SnapshotConfig(val_fraction=0.9)


def seed_groups(warehouse, store, *, requests=12, per_request=4, albums=6):
    """Requests of 4 sibling images (one song each; requests 0 and 1 share song s0, whose cover
    is crawled too), and albums of two songs with different covers. Every image is rated 5."""
    from datetime import timedelta

    from sleeve.ids import sha256_bytes
    from tests.training.conftest import png

    day = WEEK_START + timedelta(days=1)
    songs, prompts, images, reviews, covers = [], [], [], [], []
    for r in range(requests):
        song = f"s{max(0, r - 1)}"  # r0 and r1 -> s0
        for k in range(per_request):
            data = png(1000 + r * 10 + k)
            key = f"images/g{r}-{k}.png"
            store.put_bytes(key, data)
            images.append({"image_id": f"g{r}-{k}", "request_id": f"req{r}", "image_index": k, "uri": store.uri(key),
                           "sha256": sha256_bytes(data), "prompt_id": f"p-{song}", "seed": k, "model_version": "base",
                           "width": 72, "height": 64, "created_at": day})
            reviews.append({"review_id": f"rv-g{r}-{k}", "image_id": f"g{r}-{k}", "user_id": "u1", "rating": 5,
                            "created_at": day})
    for n in range(requests - 1):
        songs.append({"song_id": f"s{n}", "source": "sample", "source_id": f"s{n}", "album_id": None})
        prompts.append({"prompt_id": f"p-s{n}", "song_id": f"s{n}", "positive": f"album cover of song {n}",
                        "captions": json.dumps([f"song {n}"]), "created_at": day - timedelta(days=3)})
    data = png(4000, (80, 80))
    store.put_bytes("covers/s0.png", data)
    covers.append({"song_id": "s0", "sha256": sha256_bytes(data), "uri": store.uri("covers/s0.png"),
                   "created_at": day - timedelta(days=5)})
    for a in range(albums):
        for t in range(2):
            song, data = f"a{a}t{t}", png(5000 + a * 10 + t, (80, 80))
            store.put_bytes(f"covers/{song}.png", data)
            songs.append({"song_id": song, "source": "sample", "source_id": song, "album_id": f"al{a}"})
            prompts.append({"prompt_id": f"p-{song}", "song_id": song, "positive": f"cover {song}",
                            "captions": json.dumps([f"album {a} track {t}"]), "created_at": day - timedelta(days=3)})
            covers.append({"song_id": song, "sha256": sha256_bytes(data), "uri": store.uri(f"covers/{song}.png"),
                           "created_at": day - timedelta(days=5)})
    for table, rows in (("songs", songs), ("prompts", prompts), ("images", images), ("reviews", reviews),
                        ("covers", covers)):
        warehouse.upsert(table, rows)


def test_related_images_never_straddle_the_split(warehouse, store):
    """Siblings of one request, every image of one song (generated or crawled) and the covers
    of one album land on the same side; the held-out counts are reported per source."""
    from sleeve.store import open_uri, read_json
    from training.snapshot import VAL, SnapshotConfig, build_snapshot

    seed_groups(warehouse, store)
    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END, SnapshotConfig(val_fraction=0.3, include_covers=True))
    manifest = read_json(*open_uri(snap["uri"]))
    items = manifest["items"]
    assert snap["counts"]["generated"] == 48 and snap["counts"]["covers"] == 13
    request_of = {f"g{r}-{k}": f"req{r}" for r in range(12) for k in range(4)}
    sides: dict[str, set] = {}
    for item in items:
        if item["source"] == "generated":
            keys = [request_of[item["ref"]], "song:" + ("s0" if request_of[item["ref"]] in ("req0", "req1")
                                                        else f"s{int(request_of[item['ref']][3:]) - 1}")]
        else:
            keys = [f"album:{item['ref'][:-2]}" if item["ref"].startswith("a") else f"song:{item['ref']}"]
        for key in keys:
            sides.setdefault(key, set()).add(item["split"])
    assert all(len(s) == 1 for s in sides.values()), {k: s for k, s in sides.items() if len(s) > 1}
    assert {"train"} != {i["split"] for i in items} != {"val"}  # both sides used

    val = [i for i in items if i["split"] == VAL]
    by_source = {"generated": sum(i["source"] == "generated" for i in val),
                 "cover": sum(i["source"] == "cover" for i in val)}
    assert manifest["split"]["val_by_source"] == by_source
    assert (snap["counts"]["val_generated"], snap["counts"]["val_covers"]) == (by_source["generated"],
                                                                              by_source["cover"])
    assert manifest["split"]["groups"]["val"] == len({i["group"] for i in val})


def test_trainer_sees_only_train_and_evaluation_only_held_out(warehouse, store, world, tiny_model, tmp_path,
                                                            monkeypatch):
    """Runs the real train and evaluate jobs on a real snapshot, recording what reaches the
    trainer and the validation-loss data (the wrapped functions still do the work)."""
    from sleeve.store import open_uri, read_json
    from training import evaluate_job, gate, train_job, trainer
    from training.snapshot import TRAIN, VAL, SnapshotConfig, build_snapshot, split_items

    snap = build_snapshot(warehouse, store, WEEK_START, WEEK_END)
    manifest = read_json(*open_uri(snap["uri"]))
    train_uris = {i["uri"] for i in split_items(manifest, TRAIN)}
    val_uris = {i["uri"] for i in split_items(manifest, VAL)}

    seen = {"train": [], "val": []}  # what reached train_lora / the prepared (latent) data
    real_train, real_prepared = train_job.train_lora, trainer.PreparedData

    def spy_train(config, examples, *args, **kwargs):
        seen["train"] += [e.uri for e in examples]
        return real_train(config, examples, *args, **kwargs)

    class SpyPrepared(real_prepared):
        def __init__(self, parts, examples, *args, **kwargs):
            seen["val"] += [e.uri for e in examples]
            super().__init__(parts, examples, *args, **kwargs)

    monkeypatch.setattr(train_job, "train_lora", spy_train)
    monkeypatch.setattr(trainer, "PreparedData", SpyPrepared)
    out = store.uri("models/style/split-test")
    trained = train_job.main(manifest, {"train": {"base_model": str(tiny_model), "steps": 2, "rank": 2},
                                        "work_dir": str(tmp_path / "work")}, out)
    assert set(seen["train"]) == train_uris and len(seen["train"]) == len(train_uris)
    assert (trained["examples"], trained["held_out"]) == (len(train_uris), len(val_uris))

    seen["val"].clear()  # the trainer prepares its (train) data the same way
    config = {"base_model": str(tiny_model), "challenger_uri": trained["adapter_uri"], "champion_uri": None,
              "steps": 1}
    evaluated = evaluate_job.main(manifest, config, store.uri("evals/split-test"))
    assert set(seen["val"]) == val_uris
    assert evaluated["val_split"] == VAL and evaluated["val_images"] == len(val_uris)
    assert any("held-out" in n and "not trained on" in n for n in evaluated["notes"])
    assert all(m["val_loss"] == m["val_loss"] for m in evaluated["metrics"].values())  # finite, not NaN

    # the same week with nothing held out: the evaluation says so and the gate keeps the champion
    seen["val"].clear()
    no_val = read_json(*open_uri(build_snapshot(warehouse, store, WEEK_START, WEEK_END,
                                                SnapshotConfig(val_fraction=0))["uri"]))
    assert no_val["split"]["val"] == 0 and not split_items(no_val, VAL)
    blind = evaluate_job.main(no_val, config, store.uri("evals/split-test-no-val"))
    assert seen["val"] == [] and blind["val_images"] == 0
    assert "no held-out (val) images" in " ".join(blind["notes"])
    verdict = gate.decide(blind)
    assert verdict["decision"] == "keep" and any("no held-out" in r for r in verdict["reasons"])
