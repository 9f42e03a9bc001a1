"""The product GPU job on the tiny model: shots stored with lineage and exact product pixels,
reproducible, resumable; a bad photo fails alone; the fidelity gate refuses a shot whose
harmonisation leaked into the product."""

from __future__ import annotations

import functools
import io
import json

import numpy as np
import pytest
from PIL import Image

from inference import product_job
from inference.generator import read_metadata
from inference.product_composite import parse_placement
from inference.product_samples import draw, encode, upload_samples
from sleeve.jobs import read_result, run_job


def _manifest(store, model, products, **defaults):
    return {"kind": "sleeve.product.shard/v1", "model": {"version": "base", "base_model": str(model), "adapters": []},
            "matting": {"backend": "opencv", "model": None},
            "defaults": {"size": 64, "steps": 2, "guidance_scale": 0.0, "harmonise": 0.0, **defaults},
            "products": products}


def _product(rid, uri, positions=("centre", "right"), variants=2):
    return {"request_id": rid, "product_id": f"p-{rid}", "photo_uri": uri, "positive": "a marble table, soft light",
            "negative": "text", "seed": None, "variants": variants,
            "placements": [parse_placement(p, 0.6).to_dict() for p in positions]}


def _pixels(store, uri):
    return np.asarray(Image.open(io.BytesIO(store.get_bytes(uri[len(store.url) + 1:]))).convert("RGB"))


def test_job_makes_exact_reproducible_shots_and_fails_bad_photos_alone(sleeve_env, store, tiny_model, tmp_path):
    mug = upload_samples(store, size=128, keys=("mug",))[0]
    store.put_bytes("uploads/products/broken.jpg", b"\xff\xd8\xff not really a jpeg")
    rgb, truth = draw("ball", (200, 40, 40), (255, 255, 255), size=96, shadow=0)
    store.put_bytes("uploads/products/ball.png", encode(rgb, "PNG", alpha=truth))
    products = [_product("mug", mug["photo_uri"]), _product("broken", store.uri("uploads/products/broken.jpg")),
                _product("ball", store.uri("uploads/products/ball.png"), positions=("bottom",), variants=1),
                _product("gone", store.uri("uploads/products/missing.png"))]
    store.put_bytes("m.json", json.dumps(_manifest(store, tiny_model, products)).encode())
    out = store.uri("out")
    assert run_job(product_job.main, ["--manifest", store.uri("m.json"), "--config",
                                      json.dumps({"store_url": store.url}), "--output", out]) == 0
    result = read_result(out)
    assert {f["request_id"]: f["reason"] for f in result["failed"]} == {
        "broken": "the photo is not a readable image (UnidentifiedImageError)",
        "gone": "the photo cannot be read (StoreError)"}
    shots = {(s["request_id"], s["variant"], s["placement"]["name"]): s for s in result["shots"]}
    assert set(shots) == {("mug", 0, "centre"), ("mug", 0, "right"), ("mug", 1, "centre"), ("mug", 1, "right"),
                          ("ball", 0, "bottom")}
    for shot in shots.values():
        assert shot["status"] == "generated" and shot["fidelity_psnr_db"] == 100.0
        assert set(shot["fidelity"]) == {"paste", "shadow", "stored"}
        assert (shot["width"], shot["height"]) == (64, 64) and shot["model_version"] == "base"
        for key in ("uri", "thumb_uri", "photo_uri", "mask_uri", "background_uri"):
            assert store.exists(shot[key][len(store.url) + 1:])
        meta = read_metadata(store.get_bytes(shot["uri"][len(store.url) + 1:]))
        assert meta["seed"] == shot["seed"] and meta["prompt"] == "a marble table, soft light"
    assert shots[("ball", 0, "bottom")]["matting"] == "alpha" and shots[("mug", 0, "centre")]["matting"] == "opencv@grabcut-1"
    # One background per variant, shared by its placements; variants differ.
    assert shots[("mug", 0, "centre")]["background_uri"] == shots[("mug", 0, "right")]["background_uri"]
    assert shots[("mug", 0, "centre")]["seed"] != shots[("mug", 1, "centre")]["seed"]

    # Re-run: nothing is made twice; a fresh run elsewhere makes the same bytes (seeds per request+variant).
    again = product_job.main(_manifest(store, tiny_model, products), {"store_url": store.url}, store.uri("out2"))
    assert again["stats"]["generated"] == 0 and again["stats"]["skipped_existing"] == 5
    store.delete_prefix("products/by-id/")
    fresh = product_job.main(_manifest(store, tiny_model, products[:1]), {"store_url": store.url}, store.uri("out3"))
    assert {s["sha256"] for s in fresh["shots"]} == {s["sha256"] for k, s in shots.items() if k[0] == "mug"}


def test_harmonisation_repaints_around_the_product_only(sleeve_env, store, tiny_model):
    bottle = upload_samples(store, size=128, keys=("bottle",))[0]
    products = [_product("b", bottle["photo_uri"], positions=("centre",), variants=1)]
    plain = product_job.main(_manifest(store, tiny_model, products), {"store_url": store.url}, store.uri("o1"))
    store.delete_prefix("products/by-id/")
    harmonised = product_job.main(_manifest(store, tiny_model, products, harmonise=0.4), {"store_url": store.url},
                                  store.uri("o2"))
    before, after = plain["shots"][0], harmonised["shots"][0]
    assert after["fidelity"]["harmonise"] == 100.0 and after["fidelity_psnr_db"] == 100.0
    a, b = _pixels(store, before["uri"]), _pixels(store, after["uri"])
    mask = np.asarray(Image.open(io.BytesIO(store.get_bytes(after["mask_uri"][len(store.url) + 1:]))))
    assert mask.max() == 255 and not np.array_equal(a, b)  # the surroundings changed ...


def test_the_fidelity_gate_refuses_a_leaky_harmonisation(sleeve_env, store, tiny_model, monkeypatch):
    jar = upload_samples(store, size=128, keys=("jar",))[0]
    products = [_product("j", jar["photo_uri"], positions=("centre",), variants=1)]
    from inference import product_composite

    monkeypatch.setattr(product_composite, "compose", functools.partial(product_composite.compose, repaste=False))
    result = product_job.main(_manifest(store, tiny_model, products, harmonise=0.4), {"store_url": store.url},
                              store.uri("o"))
    assert result["shots"] == [] and len(result["failed"]) == 1
    assert result["failed"][0]["reason"].startswith("the product's pixels changed (harmonise")
    assert "at least 40 dB is required" in result["failed"][0]["reason"]
    assert store.list("products/by-id/") == [] and store.list("products/shots/") == []


def test_a_manifest_without_a_model_is_refused(sleeve_env):
    with pytest.raises(ValueError, match="no model.base_model"):
        product_job.main({"products": []}, {}, "file:///tmp/x")

