"""Personal photos never enter the style model: covers rendered with a user's DreamBooth adapter
(through the real plan -> generate -> record path, so with the combined version string the
generator really writes) are left out of the style snapshot by their lineage."""

from __future__ import annotations

import importlib
import json
from datetime import timedelta

from sleeve.jobs import RESULT_NAME, read_manifest, write_result
from tests.inference.loras import make_lora
from tests.training.conftest import WEEK_END, WEEK_START

DAY = WEEK_START + timedelta(days=1)


def _render(warehouse, store, settings, request_ids: list[str]) -> None:
    """batch_generate's steps for ``request_ids``: plan shards, run the generate job on each
    (in-process, same contract), record the images."""
    from inference.shards import load_requests, plan_shards, record_images

    requests = load_requests(warehouse, request_ids)
    planned = plan_shards(warehouse, store, requests, base_model=settings.base_model,
                          defaults={"width": 64, "height": 64, "steps": 2})
    assert planned["failed"] == []
    results = []
    for shard in planned["shards"]:
        job = importlib.import_module("inference.generate_job")
        write_result(shard["output_uri"], job.main(read_manifest(shard["manifest_uri"]), {}, shard["output_uri"]))
        results.append({"manifest_uri": shard["manifest_uri"], "result_uri": f"{shard['output_uri']}/{RESULT_NAME}"})
    record_images(warehouse, store, requests=requests, results=results, plan_failed=[], data_time=lambda r: DAY)


def test_images_made_with_a_personal_adapter_never_enter_the_style_snapshot(warehouse, store, sleeve_env,
                                                                            tiny_model):
    from sleeve.registry import promote, register
    from sleeve.reviews import record_reviews
    from training.snapshot import SnapshotConfig, build_snapshot

    style_dir, face_dir = sleeve_env.store_dir / "models/style/style-1", sleeve_env.store_dir / "users/u-face/adapters/r1"
    make_lora(tiny_model, style_dir, seed=1)
    make_lora(tiny_model, face_dir, seed=2)
    common = {"base_model": str(tiny_model), "manifest_uri": "file:///snap.json", "metrics": {}, "training_run_id": "t"}
    register(warehouse, version="style-1", kind="style", adapter_uri=store.uri("models/style/style-1"), **common)
    promote(warehouse, "style-1")
    register(warehouse, version="dreambooth-u-face", kind="dreambooth", user_id="u-face", alias=None,
             adapter_uri=store.uri("users/u-face/adapters/r1"), **common)
    warehouse.upsert("users", [{"user_id": u, "is_demo": True, "created_at": DAY} for u in ("u-face", "u-rev")])
    warehouse.upsert("prompts", [{"prompt_id": f"p{n}", "song_id": f"s{n}", "positive": f"album cover art {n}",
                                  "captions": json.dumps([f"cover {n}"]), "created_at": DAY - timedelta(days=3)}
                                 for n in range(2)])
    # Ordinary user requests: one for the production style, one pinned to the user's face adapter.
    warehouse.upsert("generation_requests", [
        {"request_id": "r-style", "prompt_id": "p0", "song_id": "s0", "user_id": "u-rev", "kind": "user",
         "num_images": 2, "status": "pending", "created_at": DAY},
        {"request_id": "r-face", "prompt_id": "p1", "song_id": "s1", "user_id": "u-face", "kind": "user",
         "num_images": 2, "model_version": "dreambooth-u-face", "status": "pending", "created_at": DAY}])
    _render(warehouse, store, sleeve_env, ["r-style", "r-face"])

    images = warehouse.query("SELECT image_id, request_id, model_version FROM images ORDER BY image_id")
    faces = {i["image_id"] for i in images if i["request_id"] == "r-face"}
    assert len(images) == 4 and len(faces) == 2
    assert {i["model_version"] for i in images if i["request_id"] == "r-face"} == {"dreambooth-u-face+style-1"}
    recorded = record_reviews(warehouse, [{"image_id": i["image_id"], "user_id": "u-rev", "rating": 5,
                                           "created_at": DAY} for i in images])
    assert recorded["rejected"] == []

    def snapshot():
        return build_snapshot(warehouse, store, WEEK_START, WEEK_END, SnapshotConfig(include_covers=False,
                                                                                      min_examples=1))

    def refs(snap):
        from sleeve.store import open_uri, read_json

        return {i["ref"] for i in read_json(*open_uri(snap["uri"]))["items"]}

    snap = snapshot()
    assert refs(snap) == {i["image_id"] for i in images} - faces
    assert snap["counts"]["personal_excluded"] == 2

    # the lineage recorded on each image: the personal adapter and the style it was mixed with
    lineage = json.loads(warehouse.query("SELECT adapters FROM images WHERE request_id = 'r-face' LIMIT 1")[0]
                         ["adapters"])
    assert [(a["version"], a["kind"], a["user_id"]) for a in lineage] == [
        ("dreambooth-u-face", "dreambooth", "u-face"), ("style-1", "style", None)]

    # rows recorded before the adapters column: the shard manifest that made them decides
    warehouse.execute("UPDATE images SET adapters = NULL")
    snap = snapshot()
    assert refs(snap) == {i["image_id"] for i in images} - faces and snap["counts"]["personal_excluded"] == 2

    # a manifest planned before adapters carried their lineage ({uri, weight} only): the registry
    # knows the adapter's URI; once the registry forgot it (the user was forgotten), its store area
    from sleeve.store import open_uri, read_json, write_json

    face_manifest = warehouse.query("SELECT manifest_uri FROM images WHERE request_id = 'r-face' LIMIT 1")[0]
    legacy = read_json(*open_uri(face_manifest["manifest_uri"], store))
    legacy["model"]["adapters"] = [{"uri": a["uri"], "weight": a["weight"]} for a in legacy["model"]["adapters"]]
    write_json(store, "generate/manifests/legacy.json", legacy)
    warehouse.execute("UPDATE images SET manifest_uri = @uri WHERE request_id = 'r-face'",
                      {"uri": store.uri("generate/manifests/legacy.json")})
    assert refs(snapshot()) == {i["image_id"] for i in images} - faces
    warehouse.execute("DELETE FROM model_versions WHERE kind = 'dreambooth'")
    assert refs(snapshot()) == {i["image_id"] for i in images} - faces

    # no recorded lineage and no manifest: the snapshot fails closed, with the reason
    warehouse.execute("UPDATE images SET manifest_uri = NULL WHERE request_id = 'r-face'")
    snap = snapshot()
    assert refs(snap) == {i["image_id"] for i in images} - faces
    assert {d["ref"] for d in snap["dropped"] if d["reason"].startswith("lineage unknown")} == faces
