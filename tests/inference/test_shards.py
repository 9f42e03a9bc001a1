"""Shard planning: which model a request gets, and where its manifests go."""

import json
from datetime import UTC, datetime

from inference.shards import adapter_lineage, plan_shards, resolve_model, store_key
from sleeve.registry import promote, register
from sleeve.store import read_json, write_json


def _register(warehouse, version: str, kind: str, user_id: str | None = None) -> None:
    register(warehouse, version=version, kind=kind, base_model="tiny", adapter_uri=f"file:///m/{version}",
             manifest_uri="file:///s.json", metrics={}, training_run_id="run", user_id=user_id, alias=None)


def test_a_dreambooth_adapter_is_mixed_with_the_production_style_unless_asked_not_to(warehouse, store):
    _register(warehouse, "style-1", "style")
    promote(warehouse, "style-1")
    _register(warehouse, "dreambooth-r1", "dreambooth", user_id="u1")
    mixed = resolve_model(warehouse, "dreambooth-r1", "tiny", style_weight=0.7)
    assert mixed["version"] == "dreambooth-r1+style-1"
    personal = {"uri": "file:///m/dreambooth-r1", "weight": 1.0, "version": "dreambooth-r1", "kind": "dreambooth",
                "user_id": "u1"}
    assert mixed["adapters"] == [personal, {"uri": "file:///m/style-1", "weight": 0.7, "version": "style-1",
                                            "kind": "style", "user_id": None}]
    alone = resolve_model(warehouse, "dreambooth-r1", "tiny", combine_style=False)
    assert alone == {"version": "dreambooth-r1", "base_model": "tiny", "adapters": [personal]}
    assert json.loads(adapter_lineage(mixed)) == [{k: a[k] for k in ("uri", "version", "kind", "user_id")}
                                                  for a in mixed["adapters"]]
    assert adapter_lineage(resolve_model(warehouse, "base", "tiny")) == "[]"

    rows = [{"request_id": "g1", "positive": "a cover", "num_images": 1, "model_version": "dreambooth-r1",
             "prompt_found": True}, {"request_id": "g2", "prompt_id": "gone", "prompt_found": False}]
    planned = plan_shards(warehouse, store, rows, base_model="tiny", defaults={}, combine_style=False,
                          prefix="users/u1/personalize/r1/")
    assert planned["failed"] == [{"request_id": "g2", "reason": "prompt 'gone' not found"}]
    [shard] = planned["shards"]
    assert shard["model_version"] == "dreambooth-r1" and shard["requests"] == 1
    assert shard["manifest_uri"].startswith(store.url + "/users/u1/personalize/r1/manifests/")
    assert shard["output_uri"].startswith(store.url + "/users/u1/personalize/r1/results/")


def test_bad_rows_fail_alone_at_planning_and_zero_is_not_missing(warehouse, store):
    # Observed: num_images=0 from a warehouse row became 4 (`x or 4`), steps=0 and width=0 the
    # defaults, and num_images="3" raised TypeError in the job and lost the whole shard.
    def row(rid, **extra):
        return {"request_id": rid, "positive": "a cover", "prompt_found": True, **extra}

    rows = [row("good", num_images=2), row("zero-images", num_images=0), row("zero-steps", steps=0),
            row("zero-width", width=0), row("text-images", num_images="3"), row("missing", num_images=None)]
    planned = plan_shards(warehouse, store, rows, base_model="tiny", defaults={"width": 64, "height": 64, "steps": 4})
    assert planned["failed"] == [
        {"request_id": "zero-images", "reason": "num_images=0 is out of range 1..16"},
        {"request_id": "zero-steps", "reason": "steps=0 is out of range 1..150"},
        {"request_id": "zero-width",
         "reason": "unsupported size 0x64: width must be a multiple of 64 between 64 and 2048"},
        {"request_id": "text-images", "reason": "num_images must be int, got str '3'"},
    ]
    [shard] = planned["shards"]
    manifest = read_json(store, store_key(store, shard["manifest_uri"]))
    assert [(r["request_id"], r["num_images"]) for r in manifest["requests"]] == [("good", 2), ("missing", None)]


def test_a_shard_without_result_leaves_its_requests_pending_with_the_jobs_error(warehouse, store):
    from inference.shards import record_images

    write_json(store, "generate/manifests/ok.json", {"requests": [{"request_id": "a"}]})
    write_json(store, "generate/results/ok/result.json", {"images": [], "failed": [], "stats": {}})
    write_json(store, "generate/manifests/bad.json", {"requests": [{"request_id": "b"}, {"request_id": "c"}]})
    write_json(store, "generate/results/bad/error.json", {"error": "ValueError: LoRA adapter x cannot be loaded"})
    write_json(store, "generate/manifests/gone.json", {"requests": [{"request_id": "d"}]})
    results = [{"manifest_uri": store.uri(f"generate/manifests/{n}.json"),
                "result_uri": store.uri(f"generate/results/{n}/result.json")} for n in ("ok", "bad", "gone")]
    requests = [{"request_id": r, "num_images": 1} for r in "abcd"]
    recorded = record_images(warehouse, store, requests=requests, results=results, plan_failed=[],
                             data_time=lambda _: datetime(2026, 1, 1, tzinfo=UTC))
    assert recorded["failed_shards"] == 2 and recorded["failed"] == {}
    assert recorded["retry"]["b"] == recorded["retry"]["c"] == \
        "shard failed, retried next run: ValueError: LoRA adapter x cannot be loaded"
    assert "wrote no result" in recorded["retry"]["d"]
