"""The generation job as the GPU launcher runs it: a subprocess, manifest in, images + result out."""

from __future__ import annotations

import json
import subprocess
import sys

from inference import generate_job
from sleeve.jobs import read_result, run_job
from sleeve.store import open_store, write_json
from tests.inference.loras import make_lora


def test_job_renders_a_shard_with_an_adapter_and_resumes(sleeve_env, tiny_model, tmp_path):
    store = open_store(sleeve_env.store_url)
    make_lora(tiny_model, sleeve_env.store_dir / "models" / "v1", seed=3)
    manifest = {
        "model": {"version": "v1", "base_model": str(tiny_model),
                  "adapters": [{"uri": store.uri("models/v1"), "weight": 0.9}]},
        "defaults": {"width": 64, "height": 64, "steps": 2},
        "requests": [
            {"request_id": "r1", "prompt": "album cover of a red car at night", "negative_prompt": "text",
             "num_images": 2},
            {"request_id": "r2", "prompt": "", "num_images": 2},
            {"request_id": "r3", "prompt": "calm sea", "num_images": 1, "seed": 42, "steps": 3},
        ],
    }
    write_json(store, "generate/manifests/test.json", manifest)
    argv = ["--manifest", store.uri("generate/manifests/test.json"), "--config",
            json.dumps({"store_url": sleeve_env.store_url}),
            "--output", store.uri("generate/results/test")]
    proc = subprocess.run([sys.executable, "-m", "inference.generate_job", *argv], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = read_result(store.uri("generate/results/test"))
    assert result["model_version"] == "v1" and result["gpu_seconds"] > 0
    assert result["failed"] == [{"request_id": "r2", "reason": "empty prompt"}]
    assert sorted((i["request_id"], i["image_index"]) for i in result["images"]) == [("r1", 0), ("r1", 1), ("r3", 0)]
    assert {i["steps"] for i in result["images"] if i["request_id"] == "r3"} == {3}
    for image in result["images"]:
        assert store.exists(image["uri"][len(store.url) + 1:])
    # The adapter was fetched from the store into the job's cache, once.
    assert list((sleeve_env.home / "cache" / "adapters").rglob("pytorch_lora_weights.safetensors"))

    # Re-running the same shard (e.g. after the worker was killed) stores nothing new.
    objects = store.list("images/")
    assert run_job(generate_job.main, argv) == 0
    again = read_result(store.uri("generate/results/test"))
    assert again["stats"]["skipped_existing"] == 3 and again["stats"]["generated"] == 0
    assert [i["sha256"] for i in again["images"]] == [i["sha256"] for i in result["images"]]
    assert store.list("images/") == objects


def test_job_without_a_model_fails_with_a_clear_message(sleeve_env):
    store = open_store(sleeve_env.store_url)
    write_json(store, "generate/manifests/bad.json", {"requests": []})
    proc = subprocess.run(
        [sys.executable, "-m", "inference.generate_job", "--manifest", store.uri("generate/manifests/bad.json"),
         "--output", store.uri("generate/results/bad")], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "shard manifest has no model.base_model" in proc.stderr
