"""Shard planning: which model a request gets, and where its manifests go."""

import json

from inference.shards import adapter_lineage, plan_shards, resolve_model
from sleeve.registry import promote, register


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
