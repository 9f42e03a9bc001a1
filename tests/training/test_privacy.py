"""forget_user removes a user's photos, adapters, images and the rows pointing at them, leaves
other users alone, and audits the deletion."""

import json
import subprocess
import sys
from datetime import UTC, datetime

from sleeve.keys import image_record_key
from training.photos import store_photos, synthetic_photos, validate_photos
from training.privacy import forget_user

NOW = datetime(2026, 11, 12, 12, tzinfo=UTC)


def _seed(warehouse, store, user_id: str, tag: str, shared_uri: str | None = None) -> dict:
    photos = store_photos(store, user_id, validate_photos(synthetic_photos(3, seed=len(tag))))
    store.put_bytes(f"users/{user_id}/adapters/r-{tag}/pytorch_lora_weights.safetensors", b"weights")
    image_key = f"images/{tag}/{tag}.png"
    store.put_bytes(image_key, f"pixels {tag}".encode())
    store.put_bytes(f"thumbs/{tag}.webp", b"thumb")
    store.put_bytes(image_record_key(f"img-{tag}"), b"{}")
    warehouse.upsert("personalization_requests", [{
        "request_id": f"r-{tag}", "user_id": user_id, "class_noun": "person", "photo_count": 3,
        "photo_uris": json.dumps(photos), "status": "done", "created_at": NOW}])
    warehouse.upsert("model_versions", [{
        "version": f"dreambooth-r-{tag}", "kind": "dreambooth", "user_id": user_id, "training_run_id": f"r-{tag}",
        "adapter_uri": store.uri(f"users/{user_id}/adapters/r-{tag}"), "created_at": NOW}])
    warehouse.upsert("generation_requests", [{"request_id": f"g-{tag}", "user_id": user_id, "kind": "personalize",
                                              "created_at": NOW}])
    images = [{"image_id": f"img-{tag}", "request_id": f"g-{tag}", "uri": store.uri(image_key),
               "thumb_uri": store.uri(f"thumbs/{tag}.webp"), "created_at": NOW}]
    if shared_uri:
        images.append({"image_id": f"img-{tag}-shared", "request_id": f"g-{tag}", "uri": shared_uri, "created_at": NOW})
    warehouse.upsert("images", images)
    warehouse.upsert("reviews", [{"review_id": f"rv-{tag}", "image_id": f"img-{tag}", "rating": 5, "created_at": NOW}])
    return {"image_key": image_key}


def test_forget_user_deletes_everything_of_that_user_only(warehouse, store):
    other = _seed(warehouse, store, "user-b", "bbb")
    # user-a also points at user-b's image (the same content-addressed object): it must survive.
    _seed(warehouse, store, "user-a", "aaaa", shared_uri=store.uri(other["image_key"]))
    style = {"version": "style-1", "kind": "style", "alias": "production", "created_at": NOW}
    warehouse.upsert("model_versions", [style])
    warehouse.upsert("users", [{"user_id": u, "email_masked": f"{u[-1]}***@e***.com", "email_hash": f"h-{u}"}
                               for u in ("user-a", "user-b")])
    # user-a also reviewed user-b's image: the review is user-a's personal data, the image is not.
    warehouse.upsert("reviews", [{"review_id": "rv-a-on-b", "image_id": "img-bbb", "user_id": "user-a", "rating": 2,
                                  "created_at": NOW}])

    summary = forget_user(warehouse, store, "user-a", requested_by="test", now=NOW)

    assert store.list("users/user-a/") == []
    assert not store.exists("images/aaaa/aaaa.png") and not store.exists("thumbs/aaaa.webp")
    assert not store.exists(image_record_key("img-aaaa"))
    assert store.exists(other["image_key"])  # still used by user-b's row
    assert len(store.list("users/user-b/")) == 4
    for table, key, column in [("personalization_requests", "request_id", "user_id"),
                               ("generation_requests", "request_id", "user_id"),
                               ("model_versions", "version", "user_id")]:
        users = {r[column] for r in warehouse.query(f"SELECT {key}, {column} FROM {table}")}
        assert "user-a" not in users and "user-b" in users, table
    assert {r["image_id"] for r in warehouse.query("SELECT image_id FROM images")} == {"img-bbb"}
    assert {r["review_id"] for r in warehouse.query("SELECT review_id FROM reviews")} == {"rv-bbb"}
    assert warehouse.query("SELECT version FROM model_versions WHERE version = 'style-1'")
    assert [r["user_id"] for r in warehouse.query("SELECT user_id FROM users")] == ["user-b"]
    assert summary["rows_deleted"] == {"generation_requests": 1, "images": 2, "model_versions": 1,
                                       "personalization_requests": 1, "reviews": 2, "training_runs": 0, "users": 1}
    # 3 photos + adapter under the prefix, image + thumb + record elsewhere
    assert summary["objects_deleted"] == 7

    audit = warehouse.query("SELECT * FROM deletion_audit")
    assert len(audit) == 1 and audit[0]["user_id"] == "user-a" and audit[0]["status"] == "done"
    assert json.loads(audit[0]["rows_deleted"]) == summary["rows_deleted"]
    assert audit[0]["objects_deleted"] == 7 and audit[0]["requested_by"] == "test"


def test_forget_cli_is_safe_to_rerun(sleeve_env, warehouse, store):
    _seed(warehouse, store, "user-c", "ccc")
    cmd = [sys.executable, "-m", "training.privacy", "forget", "user-c"]
    first = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert json.loads(first.stdout)["objects_deleted"] == 7
    second = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert json.loads(second.stdout)["objects_deleted"] == 0
    assert warehouse.count("deletion_audit") == 2
    bad = subprocess.run([sys.executable, "-m", "training.privacy", "forget", "bob@example.com"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "never an email" in bad.stderr


def test_an_unknown_user_is_an_error_and_nothing_is_audited(sleeve_env, warehouse, store):
    _seed(warehouse, store, "user-d", "ddd")
    out = subprocess.run([sys.executable, "-m", "training.privacy", "forget", "user-nobody"],
                         capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "error: no user 'user-nobody' in the warehouse or the store (and none forgotten before): nothing deleted, "
        "nothing audited; check the id (users.user_id)"]
    assert warehouse.count("deletion_audit") == 0 and len(store.list("users/user-d/")) == 4
