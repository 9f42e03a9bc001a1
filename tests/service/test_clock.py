"""The service dates what users do by its injected clock, never the wall clock, and a request
with an Idempotency-Key is made once however often it is posted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.service.conftest import PASSWORD, add_images, create, sign_up

# Far from the wall clock of any test run: a wall-clock time in a row can never pass for it.
SIMULATED = datetime(2031, 3, 3, 9, 30, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clocked(app_settings):
    from fastapi.testclient import TestClient

    from service.app import create_app

    clock = Clock(SIMULATED)
    app = create_app(app_settings, worker=False, clock=clock)
    with TestClient(app, base_url="http://testserver") as c:
        c.app_state, c.clock = app.state, clock
        yield c


def _created(warehouse, table: str, where: str = "", params: dict | None = None) -> set:
    return {r["created_at"] for r in warehouse.query(f"SELECT created_at FROM {table} {where}", params or {})}


def test_sign_ups_requests_and_reviews_are_dated_by_the_injected_clock(clocked):
    warehouse = clocked.app_state.warehouse
    user = sign_up(clocked)
    assert _created(warehouse, "users") == _created(warehouse, "service_accounts") == {SIMULATED}

    clocked.clock.now = asked = SIMULATED + timedelta(hours=5)
    request_id = create(clocked)
    for table in ("songs", "labels", "prompts", "cover_inputs"):
        stamp = "first_seen_at" if table == "songs" else "created_at"
        assert {r[stamp] for r in warehouse.query(f"SELECT {stamp} FROM {table}")} == {asked}, table
    row = warehouse.query("SELECT created_at, updated_at FROM generation_requests WHERE request_id = @r",
                          {"r": request_id})[0]
    assert row == {"created_at": asked, "updated_at": asked}
    assert clocked.get(f"/api/requests/{request_id}").json()["created_at"] == asked.isoformat()

    image_id = add_images(clocked.app_state, request_id, n=1)[0]
    clocked.clock.now = reviewed = asked + timedelta(days=1)
    assert clocked.post(f"/api/images/{image_id}/review", json={"rating": 4}).status_code == 200
    assert _created(warehouse, "reviews") == {reviewed}
    clocked.clock.now = reviewed + timedelta(hours=2)  # a second review updates it, at its own time
    assert clocked.post(f"/api/images/{image_id}/review", json={"rating": 2}).status_code == 200
    rows = warehouse.query("SELECT user_id, rating, created_at FROM reviews")
    assert rows == [{"user_id": user["user_id"], "rating": 2, "created_at": reviewed + timedelta(hours=2)}]


def test_the_create_and_sign_up_forms_use_the_clock_too(clocked):
    import re

    page = clocked.get("/signup")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text).group(1)
    response = clocked.post("/signup", data={"email": "bo@example.com", "password": PASSWORD, "csrf": token},
                            follow_redirects=False)
    assert response.status_code == 303
    clocked.clock.now = asked = SIMULATED + timedelta(minutes=7)
    response = clocked.post("/create", data={"title": "Paper Moon", "artist": "Ivo", "csrf": token},
                            follow_redirects=False)
    assert response.status_code == 303
    warehouse = clocked.app_state.warehouse
    assert _created(warehouse, "users") == {SIMULATED}
    assert _created(warehouse, "generation_requests") == {asked}


def test_the_gallery_window_is_the_last_30_days_of_the_clock(clocked):
    from service.covers import Gallery

    sign_up(clocked)
    image_id = add_images(clocked.app_state, create(clocked), n=1)[0]
    assert clocked.post(f"/api/images/{image_id}/review", json={"rating": 5}).status_code == 200
    clock = Clock(SIMULATED + timedelta(days=29))
    gallery = Gallery(ttl_s=0, clock=clock)
    assert [i["image_id"] for i in gallery.get(clocked.app_state.warehouse)] == [image_id]
    clock.now = SIMULATED + timedelta(days=31)
    assert gallery.get(clocked.app_state.warehouse) == []


def test_the_embedded_worker_dates_status_changes_by_the_clock(clocked):
    from service.generation import EmbeddedWorker

    sign_up(clocked)
    request_id = create(clocked)
    state = clocked.app_state
    worker = EmbeddedWorker(state.warehouse, state.store, state.settings, clock=Clock(SIMULATED + timedelta(hours=1)))
    worker._set_status([request_id], "running")
    row = state.warehouse.query("SELECT status, updated_at FROM generation_requests")[0]
    assert row == {"status": "running", "updated_at": SIMULATED + timedelta(hours=1)}


def test_the_labeller_is_refitted_by_the_clock_not_the_wall_clock(clocked):
    from service.covers import Labeller

    warehouse = clocked.app_state.warehouse
    clock = Clock(SIMULATED)
    labeller = Labeller(refresh_s=600, clock=clock)
    first = labeller.get(warehouse)
    clock.now = SIMULATED + timedelta(seconds=599)
    assert labeller.get(warehouse) is first
    clock.now = SIMULATED + timedelta(seconds=601)
    assert labeller.get(warehouse) is not first


# --- Idempotency-Key ----------------------------------------------------------------------------
def _post(client, key: str | None, **fields):
    body = {"title": "Night Letter", "artist": "Mina", "genre": "ballad", **fields}
    return client.post("/api/covers", json=body, headers={"Idempotency-Key": key} if key is not None else {})


def test_a_retried_request_with_its_key_is_made_once_and_left_as_it_is(clocked):
    sign_up(clocked)
    warehouse = clocked.app_state.warehouse
    first = _post(clocked, "week-1/song-7")
    assert first.status_code == 202
    request_id = first.json()["request_id"]
    add_images(clocked.app_state, request_id, n=2)  # rendered: status done
    clocked.clock.now = SIMULATED + timedelta(minutes=1)
    again = _post(clocked, "week-1/song-7")
    assert again.status_code == 202 and again.json()["request_id"] == request_id
    rows = warehouse.query("SELECT status, created_at FROM generation_requests")
    assert rows == [{"status": "done", "created_at": SIMULATED}]  # not back to pending, not re-dated
    assert warehouse.count("cover_inputs") == 1
    # Without a key (or with another) every ask is a new request.
    assert _post(clocked, None).json()["request_id"] != request_id
    assert _post(clocked, "week-1/song-8").json()["request_id"] != request_id
    assert warehouse.count("generation_requests") == 3


def test_a_key_reused_for_other_covers_is_a_conflict_and_keys_are_per_user(clocked):
    sign_up(clocked)
    request_id = _post(clocked, "k1").json()["request_id"]
    for fields in ({"num_images": 2}, {"title": "Other Song"}, {"colors": ["teal"]}):
        response = _post(clocked, "k1", **fields)
        assert response.status_code == 409 and "Idempotency-Key" in response.json()["detail"], fields
    assert clocked.app_state.warehouse.count("generation_requests") == 1
    clocked.post("/api/logout")
    sign_up(clocked, "bo@example.com")
    other = _post(clocked, "k1")
    assert other.status_code == 202 and other.json()["request_id"] != request_id


@pytest.mark.parametrize("key", ["", "x" * 201, "a key with spaces"])
def test_bad_idempotency_keys_are_refused(clocked, key):
    sign_up(clocked)
    response = _post(clocked, key)
    assert response.status_code == 422 and "idempotency" in response.json()["detail"].lower()
