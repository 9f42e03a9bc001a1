"""product_shots through dag.test() on the tiny model: synthetic product photos (one Korean)
become shots with full lineage, exactly once; every bad product fails alone with its reason;
shots are reviewed like covers, reach the weekly report, and never the cover model's snapshot."""

from __future__ import annotations

import json
from datetime import timedelta

import numpy as np
import pendulum

from inference.product_samples import draw, encode, upload_samples
from sleeve.reviews import record_reviews

RUN = pendulum.datetime(2026, 1, 14, 9, tz="UTC")


def _bad_products(store) -> dict[str, dict]:
    """name -> products item, each with one thing wrong (and the reason it must fail with)."""
    store.put_bytes("uploads/products/notes.txt", b"this is a text file, not a photo")
    store.put_bytes("uploads/products/plain.png", encode(np.full((128, 128, 3), 235, np.uint8), "PNG"))
    store.put_bytes("uploads/products/empty.png", encode(np.full((64, 64, 3), 90, np.uint8), "PNG",
                                                          alpha=np.zeros((64, 64))))
    mug = upload_samples(store, size=128, keys=("mug",))[0]["photo_uri"]
    return {
        "not an image": ({"product": {"name": "Notes"}, "photo_uri": store.uri("uploads/products/notes.txt")},
                         "not a readable image"),
        "missing photo": ({"product": {"name": "Ghost"}, "photo_uri": store.uri("uploads/products/nope.png")},
                          "cannot be read from the store"),
        "no photo uri": ({"product": {"name": "No photo"}}, "photo_uri is missing"),
        "position out of range": ({"product": {"name": "Far mug"}, "photo_uri": mug,
                                   "positions": [{"x": 1.5, "y": 0.5}]}, "x=1.5 is out of range"),
        "unknown position": ({"product": {"name": "Top mug"}, "photo_uri": mug, "positions": ["top"]},
                             "unknown position 'top'"),
        "policy": ({"product": {"name": "Celebrity mug"}, "photo_uri": mug}, "content policy"),
        "no name": ({"product": {"colour": "red"}, "photo_uri": mug}, "needs a name"),
        "too many variants": ({"product": {"name": "Mug", "mood": "calm"}, "photo_uri": mug, "variants": 20},
                              "variants=20 is out of range"),
        "no product": ({"product": {"name": "Backdrop"}, "photo_uri": store.uri("uploads/products/plain.png")},
                       "nothing in the photo stands out"),
        "empty alpha": ({"product": {"name": "Invisible"}, "photo_uri": store.uri("uploads/products/empty.png")},
                        "mask covers 0.0%"),
    }


def _state(warehouse):
    return {t: warehouse.query(f"SELECT * FROM {t} ORDER BY 1") for t in ("product_requests", "product_shots")}


def test_products_become_shots_with_lineage_and_bad_ones_fail_alone(dagbag, warehouse, store, sleeve_env):
    good = upload_samples(store, size=128, keys=("mug", "bottle"))  # the mug's information is Korean
    rgb, truth = draw("ball", (200, 40, 40), (255, 255, 255), size=96, shadow=0)
    store.put_bytes("uploads/products/ball.png", encode(rgb, "PNG", alpha=truth))
    good.append({"product": {"name": "Red ball", "category": "toy"}, "photo_uri": store.uri("uploads/products/ball.png"),
                 "positions": ["bottom"], "scale": 0.1})  # transparent PNG; a tiny scale raised to the minimum
    bad = _bad_products(store)
    conf = {"products": good + [item for item, _ in bad.values()], "positions": ["centre", "left"], "variants": 2,
            "steps": 2, "shard_size": 2}
    dag = dagbag.get_dag("product_shots")
    run = dag.test(logical_date=RUN, run_conf=conf)
    assert run.state == "success"

    requests = {r["name"]: r for r in warehouse.query("SELECT * FROM product_requests") if r["name"]}
    by_reason = {r["reason"]: r for r in warehouse.query("SELECT * FROM product_requests")}
    for case, (_, reason) in bad.items():
        assert any(reason in (text or "") for text in by_reason), f"{case}: no row failed with {reason!r}"
    assert sum(r["status"] == "failed" for r in by_reason.values()) == len(bad)
    mug, bottle, ball = requests["하늘색 세라믹 머그컵"], requests["Glass water bottle"], requests["Red ball"]
    assert (mug["status"], bottle["status"], ball["status"]) == ("done", "done", "done")
    assert (mug["shots"], bottle["shots"], ball["shots"]) == (4, 4, 2)
    assert mug["prompt_source"] == "offline" and "kitchen counter" in mug["positive"] and mug["positive"].isascii()
    assert json.loads(ball["placements"])[0] == {"name": "bottom", "x": None, "y": None, "scale": 0.3,
                                                  "requested_scale": 0.1}

    shots = warehouse.query("SELECT * FROM product_shots ORDER BY name, variant, position")
    assert len(shots) == 10
    for shot in shots:
        for key in ("uri", "thumb_uri", "photo_uri", "mask_uri", "background_uri", "manifest_uri"):
            assert shot[key].startswith(store.url + "/products/"), key
            assert store.exists(shot[key][len(store.url) + 1:])
        assert shot["upload_uri"].startswith(store.url + "/uploads/products/")
        assert shot["seed"] > 0 and shot["model_version"] == "base" and shot["prompt_version"] == "product-offline-b1"
        assert shot["fidelity_psnr_db"] == 100.0 and shot["created_at"] == RUN
        assert (shot["width"], shot["height"]) == (64, 64)  # SLEEVE_GEN_SIZE: the output size
    assert {s["matting"] for s in shots if s["name"] == "Red ball"} == {"alpha"}

    stage = warehouse.query("SELECT * FROM stage_runs WHERE dag_id = 'product_shots'")
    stats = json.loads(stage[0]["stats"])
    # 3 good products + the 2 whose photos only fail at cut-out time (in the job) = 5 in shards of 2.
    assert (stats["products"], stats["shots"], stats["failed"], stats["shards"]) == (3 + len(bad), 10, len(bad), 3)

    # Re-running the same run: the same rows, no new objects, nothing rendered again.
    before, objects = _state(warehouse), store.list("products/shots/")
    assert dag.test(logical_date=RUN, run_conf=conf).state == "success"
    assert _state(warehouse) == before and store.list("products/shots/") == objects


def test_shots_are_reviewed_like_covers_and_stay_out_of_the_cover_model(dagbag, warehouse, store, sleeve_env):
    from sleeve.report import build_report
    from sleeve.report_render import PRODUCT_GRID_NAME, render
    from training.snapshot import SnapshotConfig, select_candidates

    conf = {"products": upload_samples(store, size=128, keys=("jar",)), "variants": 1, "steps": 1}
    assert dagbag.get_dag("product_shots").test(logical_date=RUN, run_conf=conf).state == "success"
    shot = warehouse.query("SELECT shot_id, name FROM product_shots")[0]
    warehouse.upsert("users", [{"user_id": "u1", "is_demo": True}])
    outcome = record_reviews(warehouse, [
        {"image_id": shot["shot_id"], "user_id": "u1", "rating": 5, "created_at": RUN + timedelta(hours=1)},
        {"image_id": "no-such-shot", "user_id": "u1", "rating": 5, "created_at": RUN + timedelta(hours=1)}])
    assert outcome["recorded"] == 1 and "unknown image 'no-such-shot'" in outcome["rejected"][0]["reason"]

    week = (RUN - timedelta(days=2), RUN + timedelta(days=5))
    # 5 stars, still no: not a candidate, not even one dropped for its lineage
    assert select_candidates(warehouse, store, *week, SnapshotConfig(include_covers=False)) == ([], [], 0)
    report = build_report(warehouse, *week)
    assert report["top_covers"] == []
    products = report["product_shots"]
    assert (products["requests"], products["shots"], products["failed"], products["reviews"]) == (1, 1, 0, 1)
    assert products["top"][0]["title"] == "장미 수분 크림" and products["top"][0]["rating"] == 5.0

    def load(uri):
        return store.get_bytes(uri[len(store.url) + 1:])

    rendered = render(report, load)
    assert PRODUCT_GRID_NAME in rendered["images"]
    assert "1 shot for 1 product, 0 failed; mean rating 5.00 (1 review)" in rendered["markdown"]
    assert report["ratings"]["count"] == 0 and report["activity"]["reviews"] == 0  # the covers' numbers stay the covers'
    assert f"]({PRODUCT_GRID_NAME})" in rendered["markdown"]
