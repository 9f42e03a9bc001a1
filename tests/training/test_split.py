"""The snapshot's train / held-out split: deterministic, disjoint, recorded; the trainer sees
only train items and the evaluation's validation loss only held-out items; no held-out images
means the gate keeps the champion."""

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

    items = [{"sha256": f"{n:064x}"} for n in range(200)]
    half = assign_splits(items, SnapshotConfig(val_fraction=0.5))
    assert 70 < sum(i["split"] == VAL for i in half) < 130  # a hash threshold, about the fraction
    assert [i["sha256"] for i in half] == [i["sha256"] for i in items]  # order kept
    assert not any(i["split"] == VAL for i in assign_splits(items, SnapshotConfig(val_fraction=0)))
    few = assign_splits(items[:4], SnapshotConfig(val_fraction=0.01, min_examples=4))
    assert sum(i["split"] == VAL for i in few) == 1  # at least one held out
    assert sum(i["split"] == VAL for i in assign_splits(items[:3], SnapshotConfig(min_examples=4))) <= 1
    assert [i["split"] for i in assign_splits(items[:1], SnapshotConfig(min_examples=1))] == ["train"]
    with pytest.raises(ValueError, match="val_fraction"):
        SnapshotConfig(val_fraction=0.9)


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
