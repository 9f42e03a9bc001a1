"""DreamBooth on the shared trainer: identifier tokens, requests, the class-image cache, and one
request taken through the personalize DAG's steps (class images, train, register, render,
record) on the tiny SDXL, with the GPU jobs run in-process."""

import importlib
import json
import time
from dataclasses import replace

import pytest

from inference.shards import load_requests, plan_shards, record_images
from sleeve.jobs import RESULT_NAME, read_manifest, write_result
from sleeve.keys import personalize_prefix
from training.dreambooth import (
    KNOWN_CONSONANT_WORDS,
    ClassImages,
    RequestError,
    choose_token,
    collect_requests,
    cover_requests,
    finish_request,
    finished_adapter,
    get_request,
    instance_prompt,
    is_finished,
    is_known_word,
    personal_prompt,
    recording_failure,
    register_adapter,
    submit_request,
    write_train_manifest,
)
from training.personalize_job import tokenizer_vocab
from training.photos import synthetic_photos


def in_process(module: str, *, manifest_uri: str, config: dict, output_uri: str) -> dict:
    """The GPU-job contract (manifest in, result.json out) without a subprocess, to keep the
    test fast; the DAG test runs the same jobs as real subprocesses."""
    started = time.perf_counter()
    result = importlib.import_module(module).main(read_manifest(manifest_uri), config, output_uri)
    result.setdefault("gpu_seconds", round(time.perf_counter() - started, 3))
    write_result(output_uri, result)
    return result


def generate(shards: list[dict]) -> list[dict]:
    """Each planned shard through the batch generator's job, as the DAG does."""
    for shard in shards:
        in_process("inference.generate_job", manifest_uri=shard["manifest_uri"], config={},
                   output_uri=shard["output_uri"])
    return [{"manifest_uri": s["manifest_uri"], "result_uri": f"{s['output_uri']}/{RESULT_NAME}"} for s in shards]


def make_class_images(warehouse, store, priors: ClassImages) -> dict:
    planned = plan_shards(warehouse, store, priors.requests(), base_model=priors.base_model,
                          defaults=priors.defaults, prefix=priors.prefix)
    return priors.record(store, generate(planned["shards"]))


def test_token_is_deterministic_per_user_and_never_a_known_word(tiny_model):
    vocab = tokenizer_vocab(str(tiny_model))
    assert "dog</w>" in vocab and is_known_word("dog", vocab)
    tokens = {choose_token(f"user-{i}", vocab) for i in range(200)}
    assert len(tokens) > 190  # spread over users
    assert choose_token("user-1", vocab) == choose_token("user-1", vocab)
    for token in tokens:
        assert len(token) == 4 and not set(token) & set("aeiouy") and not is_known_word(token, vocab)
    # A candidate the vocabulary knows as a word is skipped for the next one.
    first = choose_token("user-1")
    assert choose_token("user-1", {f"{first}</w>"}) != first
    assert "sks" in KNOWN_CONSONANT_WORDS  # the famous DreamBooth token is a known word
    assert instance_prompt("zvkt", "woman") == "a photo of zvkt woman"
    assert personal_prompt("zvkt", "woman", "neon city at night").startswith("a photo of zvkt woman, neon")


def test_submit_request_validates_stores_and_is_idempotent(warehouse, store):
    row = submit_request(warehouse, store, "user-7", synthetic_photos(3, seed=7), "Woman", num_images=2)
    assert row["status"] == "pending" and row["class_noun"] == "woman" and row["photo_count"] == 3
    uris = json.loads(row["photo_uris"])
    assert len(uris) == 3 and all("/users/user-7/photos/" in u for u in uris)
    again = submit_request(warehouse, store, "user-7", synthetic_photos(3, seed=7), "woman", num_images=2)
    assert again["request_id"] == row["request_id"] and warehouse.count("personalization_requests") == 1
    assert collect_requests(warehouse) == [row["request_id"]]

    # Uploads in the user's upload area: read by URI, originals (with EXIF) removed once normalised.
    for i, data in enumerate(synthetic_photos(4, seed=8)):
        store.put_bytes(f"users/user-8/uploads/{i}.jpg", data)
    by_uri = submit_request(warehouse, store, "user-8", [store.uri(f"users/user-8/uploads/{i}.jpg") for i in range(4)])
    assert by_uri["status"] == "pending" and store.list("users/user-8/uploads/") == []

    bad = submit_request(warehouse, store, "user-9", synthetic_photos(2, seed=9) + [b"junk"])
    assert bad["status"] == "failed"
    assert bad["reason"] == "photos rejected: photo 3 is not a readable image (UnidentifiedImageError)"
    assert store.list("users/user-9/") == []  # nothing of a rejected request is kept
    assert bad["request_id"] not in collect_requests(warehouse)
    with pytest.raises(RequestError, match="class noun"):
        submit_request(warehouse, store, "user-9", synthetic_photos(3), "Robert'); DROP TABLE")
    with pytest.raises(RequestError, match="unknown personalisation request"):
        collect_requests(warehouse, request_ids=["nope"])


def test_class_images_are_cached_per_base_model_noun_and_count(warehouse, store, tiny_model):
    priors = ClassImages(str(tiny_model), "dog", 2, 64, steps=2)
    assert priors.cached(store) is None
    made = make_class_images(warehouse, store, priors)
    assert (len(made["uris"]), made["cache_hit"]) == (2, False)
    assert priors.cached(store) == {"uris": made["uris"], "cache_hit": True}  # reused: nothing to generate
    assert ClassImages("m", "dog", 0, 64).cached(store) == {"uris": [], "cache_hit": False}
    assert ClassImages("m", "dog", 2, 64).key != ClassImages("m", "dog", 3, 64).key
    assert ClassImages("m", "dog", 2, 64).key != ClassImages("m", "cat", 2, 64).key
    # How the images are rendered is part of the cache key, and of the generator's request ids
    # (its per-image resume records are keyed by them): changing either renders new images.
    base = ClassImages("m", "dog", 2, 64, steps=4, guidance=5.0)
    for other in (replace(base, steps=30), replace(base, guidance=7.5)):
        assert other.key != base.key and other.prefix != base.prefix
        assert {r["request_id"] for r in other.requests()}.isdisjoint(r["request_id"] for r in base.requests())
    assert replace(base, steps=30).defaults == {"width": 64, "height": 64, "steps": 30, "guidance_scale": 5.0}
    assert len(ClassImages("m", "dog", 40, 64).requests()) == 3  # at most 16 images per request


def test_request_steps_train_register_render_record_and_never_retrain(warehouse, store, sleeve_env):
    row = submit_request(warehouse, store, "user-db", synthetic_photos(3, seed=11), "person", num_images=1)
    request_id, base_model = row["request_id"], sleeve_env.base_model
    request = get_request(warehouse, request_id)
    assert not is_finished(request) and finished_adapter(store, request) is None

    priors = make_class_images(warehouse, store, ClassImages(base_model, "person", 2, 64, steps=2))
    job = write_train_manifest(store, request, base_model=base_model, class_images=priors)
    config = {"steps": 2, "resolution": 64, "prior_loss_weight": 0.5, "train_text_encoder": True}
    trained = in_process("training.personalize_job", config=config, **job)
    version = register_adapter(warehouse, store, request_id, trained)
    covers = cover_requests(warehouse, request_id, version)
    planned = plan_shards(warehouse, store, covers, base_model=base_model, defaults={"steps": 2},
                          prefix=personalize_prefix("user-db", request_id))
    results = generate(planned["shards"])
    ids = [c["request_id"] for c in covers]
    recorded = record_images(warehouse, store, requests=load_requests(warehouse, ids), results=results,
                             plan_failed=planned["failed"], data_time=lambda r: r["created_at"])
    result = finish_request(warehouse, request_id, trained, recorded, ids)
    assert result["status"] == "done" and result["images"] == 1 and result["gpu_seconds"] > 0

    req = warehouse.query("SELECT * FROM personalization_requests")[0]
    assert req["status"] == "done" and len(req["token"]) == 4 and req["model_version"] == version
    version_row = warehouse.query("SELECT * FROM model_versions WHERE version = @v", {"v": version})[0]
    assert (version_row["kind"], version_row["user_id"], version_row["alias"]) == ("dreambooth", "user-db", None)
    metrics = json.loads(version_row["metrics"])
    assert metrics["token"] == req["token"] and metrics["prior_loss_weight"] == 0.5 and metrics["train_text_encoder"]
    assert metrics["class_cache_hit"] is False
    adapter = version_row["adapter_uri"].removeprefix(store.url + "/")
    assert adapter.startswith("users/user-db/adapters/")
    files = {k.rsplit("/", 1)[1] for k in store.list(adapter + "/")}
    assert {"pytorch_lora_weights.safetensors", "lora_kohya.safetensors", "README.md", "dreambooth.json"} <= files
    card = store.get_bytes(adapter + "/README.md").decode()
    assert f"a photo of {req['token']} person" in card and "prior loss weight 0.5" in card
    assert store.list(f"users/user-db/personalize/{request_id}/")  # render manifests under the user's prefix

    images = warehouse.query("SELECT * FROM images")
    gen = warehouse.query("SELECT * FROM generation_requests")
    assert len(images) == 1 and len(gen) == 1 and gen[0]["kind"] == "personalize" and gen[0]["status"] == "done"
    assert images[0]["request_id"] == gen[0]["request_id"] and gen[0]["user_id"] == "user-db"
    assert images[0]["model_version"].startswith(version) and gen[0]["model_version"] == version
    from inference.generator import read_metadata

    meta = read_metadata(store.get_bytes(images[0]["uri"].removeprefix(store.url + "/")))
    assert meta["prompt"].startswith(f"a photo of {req['token']} person")

    # Finished: nothing to do again, and the trained adapter is what a retried train gets back.
    assert is_finished(get_request(warehouse, request_id))
    assert finished_adapter(store, get_request(warehouse, request_id)) == trained
    again = in_process("training.personalize_job", config=config, **job)  # the job itself reuses it too
    assert again["reused"] and again["adapter_uri"] == trained["adapter_uri"]
    assert cover_requests(warehouse, request_id, version) == covers and warehouse.count("generation_requests") == 1
    assert warehouse.count("images") == 1 and warehouse.count("model_versions") == 1


def test_a_failing_step_is_recorded_on_the_request_and_re_raised(warehouse, store):
    row = submit_request(warehouse, store, "user-f", synthetic_photos(3, seed=5))
    with pytest.raises(RuntimeError, match="boom"), recording_failure(warehouse, row["request_id"]):
        raise RuntimeError("GPU job x exited with code 1; last lines:\nloading\nValueError: boom")
    failed = get_request(warehouse, row["request_id"])
    assert failed["status"] == "failed" and failed["reason"] == "RuntimeError: GPU job x exited with code 1; " \
        "last lines: | ValueError: boom"
    assert not is_finished(failed)  # its photos are fine: a later run tries again
    with pytest.raises(RequestError, match="no trained adapter"):
        cover_requests(warehouse, row["request_id"], "dreambooth-x")


def test_class_images_take_their_rendering_from_the_params(tiny_model):
    from training.dreambooth import class_images_for

    params = {"num_class_images": 3, "resolution": 64, "class_image_steps": 28, "class_image_guidance": 6.5}
    priors = class_images_for(params, str(tiny_model), "dog")
    assert (priors.count, priors.resolution, priors.steps, priors.guidance) == (3, 64, 28, 6.5)
    assert class_images_for({**params, "class_image_steps": 30}, str(tiny_model), "dog").key != priors.key


def test_photo_uris_outside_the_users_uploads_are_rejected_before_anything_is_read(warehouse, store, tmp_path,
                                                                                 monkeypatch):
    from sleeve.store.local import LocalStore

    own = []
    for i, data in enumerate(synthetic_photos(3, seed=31)):
        store.put_bytes(f"users/user-p/uploads/{i}.jpg", data)
        own.append(store.uri(f"users/user-p/uploads/{i}.jpg"))
    store.put_bytes("users/other/uploads/0.jpg", synthetic_photos(1, seed=32)[0])
    outside = tmp_path / "outside.jpg"  # a readable photo on the worker, outside the store
    outside.write_bytes(synthetic_photos(1, seed=33)[0])
    reads = []
    real_get = LocalStore.get_bytes
    monkeypatch.setattr(LocalStore, "get_bytes", lambda self, key: reads.append(key) or real_get(self, key))

    bad = [
        "file:///etc/passwd",
        f"file://{outside}",
        store.uri("users/other/uploads/0.jpg"),  # another user's upload
        store.url + "/users/user-p/uploads/../../other/uploads/0.jpg",
        store.url + "/users/user-p/uploads/%2e%2e/%2e%2e/other/uploads/0.jpg",
        store.url + "/users/user-p/uploads//0.jpg",
        store.url + "-evil/users/user-p/uploads/0.jpg",  # a sibling directory of the store
        store.uri("users/user-p/photos/0.png"),  # the user's prefix, but not an upload
        "gs://other-bucket/users/user-p/uploads/0.jpg",
        "users/user-p/uploads/0.jpg",
    ]
    for uri in bad:
        with pytest.raises(RequestError, match=r"photo 2 is not an upload of this user.*users/user-p/uploads/"):
            submit_request(warehouse, store, "user-p", [own[0], uri, own[1], own[2]])
    assert reads == [] and warehouse.count("personalization_requests") == 0
    assert len(store.list("users/user-p/uploads/")) == 3  # nothing read, nothing deleted

    row = submit_request(warehouse, store, "user-p", own)  # the user's own uploads go through
    assert row["status"] == "pending" and len(reads) == 3
