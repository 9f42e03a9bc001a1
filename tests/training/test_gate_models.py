"""The gate on real models: weekly snapshots, the real train and evaluate jobs (in-process) and
the real conclude step, on the tiny SDXL.

Each request has a dark cover and a bright one. Week 1 users like the dark covers: a challenger
trained on them beats the base and is promoted. Against that champion, a copy of it and a copy
with perturbed weights are kept. Week 2's reviews are corrupted (ratings inverted, as an intake
bug would do): the snapshot now holds the bright covers users dislike; a challenger trained on
them is better on that week's held-out images and pairs, but on the reference (week 1's
held-out images and pairs) it moved towards the covers those users liked less, so it is KEPT --
and the same evaluation without the reference would have promoted it. (On week 1's held-out
dark images alone it was not worse: -0.4 % [-0.4 %, -0.3 %] on this machine.) Week 3's reviews
are right again: promoted.

The test copy of the tiny model calibrates the VAE's ``scaling_factor`` the way SD does (unit-
variance latents): with the tiny random VAE's default, latents have a standard deviation of
about 0.06 against unit noise and the diffusion loss barely sees the images.
"""

from __future__ import annotations

import io
import json
import shutil
from datetime import timedelta

import pytest

from tests.training.conftest import WEEK_START

WEEK = timedelta(days=7)
TRAIN = {"learning_rate": 1e-2, "batch_size": 8, "resolution": 32, "rank": 4}
PARAMS = {"min_rating": 4.0, "min_reviews": 1, "min_examples": 4, "val_fraction": 0.5, "reference_weeks": 4,
          "steps": 60, "rank": 4, "resolution": 32, "warm_start": True, "rating_weighted": False, "clip_model": "",
          "dry_run": False, "include_covers": False, **{k: TRAIN[k] for k in ("learning_rate", "batch_size")}}


@pytest.fixture(scope="module")
def calibrated_model(tiny_model, tmp_path_factory):
    target = tmp_path_factory.mktemp("tiny-unit") / "tiny-sdxl"
    shutil.copytree(tiny_model, target)
    config_path = target / "vae" / "config.json"
    config = json.loads(config_path.read_text())
    config["scaling_factor"] = 3.0  # unit-variance latents for the tiny random VAE
    config_path.write_text(json.dumps(config))
    return target


def cover(seed: int, bright: bool) -> bytes:
    """A smooth dark gradient, or its bright negative."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    x, y = np.linspace(0, 1, 64)[None, :, None], np.linspace(0, 1, 64)[:, None, None]
    pixels = (rng.uniform(0.5, 1, 3) * [1, 0.5, 0.2] * x + rng.uniform(0, 0.5, 3) * y) * 60
    pixels = 255 - pixels if bright else pixels
    buf = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype("uint8")).save(buf, format="PNG")
    return buf.getvalue()


def seed_week(warehouse, store, week: int, *, inverted: bool, n: int = 48) -> None:
    """``n`` requests of two covers each, one song each: a dark one users love (5 stars) and a
    bright one they dislike (1 star), so every request is a preference pair; with ``inverted``
    the intake stores 6 - rating."""
    from sleeve.ids import sha256_bytes
    from sleeve.reviews import record_reviews

    day = WEEK_START + week * WEEK + timedelta(days=1)
    warehouse.upsert("users", [{"user_id": "fan", "is_demo": True, "created_at": WEEK_START}])
    images, prompts, requests, reviews = [], [], [], []
    for j in range(n):
        request = f"w{week}-r{j}"
        prompts.append({"prompt_id": f"p-{request}", "song_id": f"s-{request}", "created_at": day - timedelta(days=3),
                        "positive": f"album cover art, gradient {j}"})  # the caption does not tell them apart
        requests.append({"request_id": request, "prompt_id": f"p-{request}", "kind": "user", "user_id": "fan",
                         "num_images": 2, "created_at": day - timedelta(hours=2)})
    for k in range(2 * n):
        bright, request = k >= n, f"w{week}-r{k % n}"
        name = f"w{week}-{k}"
        data = cover(week * 1000 + k, bright)
        store.put_bytes(f"images/{name}.png", data)
        images.append({"image_id": name, "request_id": request, "image_index": int(bright),
                       "uri": store.uri(f"images/{name}.png"), "sha256": sha256_bytes(data), "prompt_id": f"p-{request}",
                       "seed": k, "model_version": "base", "adapters": "[]", "width": 64, "height": 64,
                       "created_at": day})
        rating = 1 if bright else 5
        reviews.append({"image_id": name, "user_id": "fan", "rating": 6 - rating if inverted else rating,
                        "created_at": day})
    warehouse.upsert("prompts", prompts)
    warehouse.upsert("generation_requests", requests)
    warehouse.upsert("images", images)
    assert record_reviews(warehouse, reviews)["rejected"] == []


def weekly_run(warehouse, store, home, model, week: int, steps: int, params: dict | None = None) -> dict:
    """One weekly_retrain run through training.weekly's steps; returns plan, results, outcome."""
    from sleeve.jobs import read_manifest
    from training import evaluate_job, train_job
    from training.weekly import (
        adapter_prefix,
        conclude_plan,
        eval_config,
        eval_prefix,
        production_adapter,
        take_snapshot,
        train_config,
    )

    params = {**PARAMS, "steps": steps, **(params or {})}
    start = WEEK_START + week * WEEK
    plan = take_snapshot(warehouse, store, start, start + WEEK, params, base_model=str(model),
                         dag_run_id=f"test-{week}", started_at=None)
    assert plan["go"], plan["why"]
    manifest = read_manifest(plan["manifest_uri"])
    champion = production_adapter(warehouse, str(model))
    config = train_config(plan, params, home=home, warm_start=champion)
    config["train"].update(TRAIN, steps=steps)
    trained = train_job.main(manifest, config, store.uri(adapter_prefix(plan["version"])))
    evaluated = evaluate_job.main(manifest, eval_config(plan, params, trained, home=home, champion_uri=champion),
                                  store.uri(eval_prefix(plan["version"])))
    outcome = conclude_plan(warehouse, plan, trained, evaluated, params=params, now=start + WEEK)
    return {"plan": plan, "manifest": manifest, "trained": trained, "evaluated": evaluated, "outcome": outcome,
            "champion": champion}


def evaluate(store, model, manifest, challenger_uri, champion_uri, name) -> dict:
    from training import evaluate_job

    config = {"base_model": str(model), "challenger_uri": challenger_uri, "champion_uri": champion_uri,
              "resolution": 32, "steps": 2}
    return evaluate_job.main(manifest, config, store.uri(f"evals/test/{name}"))


def perturbed_copy(store, source_uri: str, key: str, scale: float, work) -> str:
    """The adapter with gaussian noise of ``scale`` times each LoRA tensor's spread added."""
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from sleeve.jobs import download_output
    from training.trainer import WEIGHTS_NAME

    local = download_output(source_uri, work / "champion")
    with safe_open(str(local / WEIGHTS_NAME), framework="pt") as f:
        metadata = f.metadata()
    gen = torch.Generator().manual_seed(0)
    noisy = {k: (v + scale * v.std() * torch.randn(v.shape, generator=gen)).contiguous()
             for k, v in load_file(str(local / WEIGHTS_NAME)).items()}
    save_file(noisy, str(work / WEIGHTS_NAME), metadata=metadata)
    store.put_file(f"{key}/{WEIGHTS_NAME}", work / WEIGHTS_NAME)
    return store.uri(key)


def test_the_gate_promotes_only_a_resolvably_better_challenger(warehouse, store, sleeve_env, calibrated_model,
                                                               tmp_path):
    from sleeve.registry import canary_version, production_version
    from tests.training.test_canary import _serve
    from training.canary import CanaryRules, settle_canary
    from training.gate import decide

    home = sleeve_env.home
    # Week 1: users like the dark covers; the challenger (from the base) learns them.
    seed_week(warehouse, store, 1, inverted=False)
    week1 = weekly_run(warehouse, store, home, calibrated_model, 1, steps=150)
    assert week1["outcome"]["decision"] == "promote", week1["outcome"]["reasons"]
    # By default a challenger that passes the gate becomes the canary; the ratings of a later
    # week (its covers rated above the base model's) promote it. That week is far off, so the
    # covers rated in it stay out of the snapshots of weeks 2 and 3.
    version = week1["plan"]["version"]
    assert week1["outcome"]["alias"] == "canary" and production_version(warehouse) is None
    assert canary_version(warehouse)["version"] == version
    judged_from = WEEK_START + 10 * WEEK
    _serve(warehouse, version, [4, 5, 4, 5] * 5, "canary-", judged_from + timedelta(days=1))
    _serve(warehouse, "base", [2, 3, 3, 2] * 5, "base-", judged_from + timedelta(days=1))
    verdict = settle_canary(warehouse, judged_from, judged_from + WEEK, CanaryRules(min_requests=10))
    assert verdict["decision"] == "promote", verdict["reason"]
    champion = production_version(warehouse)["adapter_uri"]
    assert champion == week1["trained"]["adapter_uri"]

    # The champion against itself, and against a copy with damaged weights: both kept.
    same = evaluate(store, calibrated_model, week1["manifest"], champion, champion, "same")
    verdict = decide(same)
    assert verdict["decision"] == "keep" and "not resolvably better" in verdict["reasons"][0]
    assert same["paired"]["val"]["champion"] == same["paired"]["val"]["challenger"]
    damaged_uri = perturbed_copy(store, champion, "models/style/damaged", 0.5, tmp_path)
    damaged = evaluate(store, calibrated_model, week1["manifest"], damaged_uri, champion, "damaged")
    verdict = decide(damaged)
    assert verdict["decision"] == "keep", verdict["reasons"]
    assert damaged["metrics"]["challenger"]["val_loss"] > damaged["metrics"]["champion"]["val_loss"]
    assert verdict["evidence"]["val"]["low"] > 0  # resolvably worse

    counts = week1["plan"]["counts"]
    assert counts["generated"] == 48 and counts["val"] >= 16 and counts["reference"] == 0
    assert week1["outcome"]["reasons"][0].startswith("val loss \u2212")
    assert "reference rule skipped: no held-out images of an earlier promoted week yet" in week1["outcome"]["reasons"]

    # Week 2: the intake inverts every rating. The snapshot holds the disliked bright covers.
    seed_week(warehouse, store, 2, inverted=True)
    week2 = weekly_run(warehouse, store, home, calibrated_model, 2, steps=100)
    manifest = week2["manifest"]
    assert all(int(i["ref"].split("-")[1]) >= 48 for i in manifest["items"])  # all bright
    reference = manifest["reference"]
    assert reference["weeks"][0]["manifest_uri"] == week1["plan"]["manifest_uri"]
    assert {i["sha256"] for i in reference["items"]} == {i["sha256"] for i in week1["manifest"]["items"]
                                                          if i["split"] == "val"}
    assert len(reference["pairs"]) == len([p for p in week1["manifest"]["pairs"] if p["split"] == "val"]) >= 16
    outcome = week2["outcome"]
    assert outcome["decision"] == "keep", outcome["reasons"]
    assert outcome["reasons"][0].startswith("reference preference margin +") and \
        "moved towards the covers earlier weeks' users liked less" in outcome["reasons"][0]
    assert any(r.startswith("val loss \u2212") and ": better" in r for r in outcome["reasons"])  # fooled alone
    assert any(r.startswith("preference margin \u2212") and ": better" in r for r in outcome["reasons"])
    paired = week2["evaluated"]["paired"]
    without_reference = {**week2["evaluated"], "paired": {"val": paired["val"], "pairs": paired["pairs"]}}
    assert decide(without_reference)["decision"] == "promote"  # the reference is what kept it
    assert production_version(warehouse)["adapter_uri"] == champion
    run = warehouse.query("SELECT decision, decision_reasons, metrics FROM training_runs WHERE dag_run_id = 'test-2'")[0]
    assert run["decision"] == "keep" and json.loads(run["decision_reasons"]) == outcome["reasons"]
    metrics = json.loads(run["metrics"])
    assert metrics["reference_images"] == len(reference["items"])
    assert metrics["gate"]["evidence"]["reference_preference"]["low"] > 0
    assert metrics["val_by_source"] == {"generated": manifest["counts"]["val"], "cover": 0}

    # Week 3: the intake is fixed; a challenger trained on what users really like is promoted.
    seed_week(warehouse, store, 3, inverted=False)
    week3 = weekly_run(warehouse, store, home, calibrated_model, 3, steps=60, params={"canary": False})
    assert week3["champion"] == champion and week3["plan"]["counts"]["reference"] > 0
    assert week3["outcome"]["decision"] == "promote", week3["outcome"]["reasons"]
    assert week3["outcome"]["alias"] == "production"  # canary off: straight to production
    assert any(r.startswith("reference preference margin") and "worse" not in r.split(":")[-1]
               for r in week3["outcome"]["reasons"]), week3["outcome"]["reasons"]
