"""Demo seeding: deterministic demo users, requests and a personalisation request."""

from datetime import UTC, datetime, timedelta

import pytest
from sleeve_airflow import demo_data

WEEK_START = datetime(2026, 11, 9, 3, tzinfo=UTC)
WEEK_END = WEEK_START + timedelta(days=7)


def test_demo_week_is_seeded_deterministically(warehouse, store, sleeve_env):
    with pytest.raises(RuntimeError, match="no prompts"):
        demo_data.seed_requests(warehouse, sleeve_env, WEEK_START, WEEK_END)
    warehouse.upsert("prompts", [{"prompt_id": f"p{i}", "song_id": f"s{i}", "positive": f"cover {i}",
                                  "created_at": WEEK_START} for i in range(3)])
    assert demo_data.seed_requests(warehouse, sleeve_env, WEEK_START, WEEK_END) == 3
    assert demo_data.seed_requests(warehouse, sleeve_env, WEEK_START, WEEK_END) == 3
    requests = warehouse.query("SELECT * FROM generation_requests")
    assert len(requests) == 3 and {r["kind"] for r in requests} == {"demo"}
    assert all(WEEK_START <= r["created_at"] < WEEK_END for r in requests)
    users = warehouse.query("SELECT * FROM users")
    assert len(users) == len(demo_data.DEMO_USERS) and all(u["is_demo"] for u in users)
    assert all(u["email_masked"].endswith("@e***.com") and "@example" not in u["email_masked"] for u in users)

    request_id = demo_data.seed_personalization(warehouse, sleeve_env, store, WEEK_START)
    assert demo_data.seed_personalization(warehouse, sleeve_env, store, WEEK_START) == request_id
    row = warehouse.query("SELECT * FROM personalization_requests")[0]
    assert (row["request_id"], row["status"], row["photo_count"]) == (request_id, "pending", 4)
