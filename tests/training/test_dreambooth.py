"""DreamBooth on the shared trainer: identifier tokens, requests, the class-image cache, and one
request trained and rendered end to end on the tiny SDXL."""

import importlib
import json
import time

import pytest

from sleeve.jobs import read_manifest, write_result
from training.dreambooth import (
    KNOWN_CONSONANT_WORDS,
    RequestError,
    choose_token,
    class_images_key,
    collect_requests,
    ensure_class_images,
    instance_prompt,
    is_known_word,
    personal_prompt,
    run_request,
    submit_request,
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


def test_class_images_are_cached_per_base_model_noun_and_count(store, tiny_model):
    from inference.generator import CoverGenerator, Defaults

    calls = []

    def make():
        calls.append(1)
        return CoverGenerator(str(tiny_model), defaults=Defaults(steps=2))

    uris, hit = ensure_class_images(store, str(tiny_model), "dog", 2, 64, make)
    assert (len(uris), hit, len(calls)) == (2, False, 1)
    again, hit = ensure_class_images(store, str(tiny_model), "dog", 2, 64, make)
    assert (again, hit, len(calls)) == (uris, True, 1)  # reused: the generator is not even loaded
    assert class_images_key("m", "dog", 2, 64) != class_images_key("m", "dog", 3, 64)
    assert class_images_key("m", "dog", 2, 64) != class_images_key("m", "cat", 2, 64)


def test_request_trains_registers_renders_and_never_retrains(warehouse, store, sleeve_env):
    row = submit_request(warehouse, store, "user-db", synthetic_photos(3, seed=11), "person", num_images=1)
    config = {"steps": 2, "num_class_images": 2, "class_image_steps": 2, "prior_loss_weight": 0.5,
              "train_text_encoder": True}
    result = run_request(warehouse, store, row["request_id"], base_model=sleeve_env.base_model, run_job=in_process,
                         train_config=config, render={"steps": 2})
    assert result["status"] == "done" and result["trained"] and result["images"] == 1

    req = warehouse.query("SELECT * FROM personalization_requests")[0]
    assert req["status"] == "done" and len(req["token"]) == 4 and req["model_version"] == result["model_version"]
    version = warehouse.query("SELECT * FROM model_versions WHERE version = @v", {"v": req["model_version"]})[0]
    assert (version["kind"], version["user_id"], version["alias"]) == ("dreambooth", "user-db", None)
    metrics = json.loads(version["metrics"])
    assert metrics["token"] == req["token"] and metrics["prior_loss_weight"] == 0.5 and metrics["train_text_encoder"]
    adapter = version["adapter_uri"].removeprefix(store.url + "/")
    assert adapter.startswith("users/user-db/adapters/")
    files = {k.rsplit("/", 1)[1] for k in store.list(adapter + "/")}
    assert {"pytorch_lora_weights.safetensors", "lora_kohya.safetensors", "README.md", "dreambooth.json"} <= files
    card = store.get_bytes(adapter + "/README.md").decode()
    assert f"a photo of {req['token']} person" in card and "prior loss weight 0.5" in card

    images = warehouse.query("SELECT * FROM images")
    gen = warehouse.query("SELECT * FROM generation_requests")
    assert len(images) == 1 and len(gen) == 1 and gen[0]["kind"] == "personalize" and gen[0]["status"] == "done"
    assert images[0]["request_id"] == gen[0]["request_id"] and gen[0]["user_id"] == "user-db"
    from inference.generator import read_metadata

    meta = read_metadata(store.get_bytes(images[0]["uri"].removeprefix(store.url + "/")))
    assert meta["prompt"].startswith(f"a photo of {req['token']} person")

    again = run_request(warehouse, store, row["request_id"], base_model=sleeve_env.base_model, run_job=in_process,
                        train_config=config)
    assert again["trained"] is False and warehouse.count("images") == 1 and warehouse.count("model_versions") == 1
