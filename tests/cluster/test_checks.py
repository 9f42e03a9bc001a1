"""The cluster test's duplicate checks find planted duplicates (and nothing in clean state)."""

from __future__ import annotations

from cluster import checks


def test_clean_state_has_no_duplicates(warehouse, store):
    warehouse.upsert("users", [{"user_id": "u1"}, {"user_id": "u2"}])
    warehouse.upsert("users", [{"user_id": "u1"}])
    store.put_bytes("images/aa/1.png", b"one")
    store.put_bytes("images/bb/2.png", b"two")
    found = checks.all_duplicates(warehouse, store, [{"text": "Week 1\n..."}, {"text": "Week 2"}])
    assert sum(checks.count(v) for v in found.values()) == 0, found


def test_a_row_inserted_twice_is_found(warehouse):
    for _ in range(3):
        warehouse.execute("INSERT INTO users (user_id) VALUES (@u)", {"u": "u1"})
    warehouse.execute("INSERT INTO reports (week_start) VALUES (@w)", {"w": "2026-11-09"})
    assert checks.duplicate_rows(warehouse) == {"users": 2}


def test_two_model_versions_for_one_training_run_are_found(warehouse):
    warehouse.upsert("model_versions", [{"version": "v1", "training_run_id": "r1"},
                                        {"version": "v2", "training_run_id": "r1"},
                                        {"version": "v3", "training_run_id": "r2"}])
    assert checks.duplicate_versions(warehouse) == {"r1": 1}


def test_the_same_bytes_under_two_keys_are_found(store):
    store.put_bytes("images/aa/1.png", b"same")
    store.put_bytes("images/bb/2.png", b"same")
    store.put_bytes("images/by-id/x.json", b"{}")
    store.put_bytes("images/by-id/y.json", b"{}")  # records, not content
    found = checks.duplicate_objects(store)
    assert list(found.values()) == [["images/aa/1.png", "images/bb/2.png"]]
    assert checks.count(found) == 1


def test_a_report_posted_twice_and_a_file_shared_twice_are_found():
    posts = [{"text": "Sleeve weekly 2026-11-09\nx"}, {"text": "Sleeve weekly 2026-11-09\ny"},
             {"text": "Sleeve weekly 2026-11-16"}, {"text": "chart", "thread_ts": "1"}]
    assert checks.duplicate_posts(posts) == {"Sleeve weekly 2026-11-09": 1}
    files = [{"thread_ts": "1", "name": "chart.png", "shared": True}] * 2 + [
        {"thread_ts": "1", "name": "grid.png", "shared": True}, {"thread_ts": "1", "name": "grid.png"}]
    assert checks.duplicate_files(files) == {"1 chart.png": 1}
