"""Simulated users act through the covers service's JSON API (simulation.client.ApiClient):
accounts, requests, the DAG's covers, reviews, all dated by the simulation's clock."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pendulum
import pytest

WEEK = datetime(2027, 1, 4, 3, tzinfo=UTC)
SONG = {"song_id": "catalogue-1", "source": "sample", "source_id": "1", "title": "Harbour Lights",
        "artist": "Mina", "genre": "ballad", "first_seen_at": WEEK - timedelta(days=9)}


@pytest.fixture
def world(sleeve_env, warehouse):
    """One catalogue song with its prompt, and one song the service made (never offered)."""
    warehouse.upsert("songs", [SONG, {**SONG, "song_id": "service-1", "source": "service", "title": "Asked Once"}])
    warehouse.upsert("prompts", [
        {"prompt_id": f"p-{sid}", "song_id": sid, "prompt_version": "p1", "labeller_version": "offline-1",
         "positive": f"album cover of {sid}", "negative": "text", "created_at": WEEK - timedelta(days=8)}
        for sid in ("catalogue-1", "service-1")])
    return sleeve_env


@pytest.fixture
def api(world, warehouse):
    from simulation.client import ApiClient

    with ApiClient(world, warehouse) as client:
        yield client


def _render(dagbag, day: datetime) -> None:
    run = dagbag.get_dag("batch_generate").test(logical_date=pendulum.instance(day))
    assert run.state == "success"


def test_users_sign_up_request_get_their_covers_and_review_through_the_api(api, warehouse, dagbag):
    from PIL import Image

    signed_up = WEEK - timedelta(days=1)
    ids = api.sign_up(["sim-t-000", "sim-t-001"], signed_up)
    users = warehouse.query("SELECT user_id, created_at, is_demo FROM users ORDER BY user_id")
    assert {u["user_id"] for u in users} == set(ids.values()) and {u["created_at"] for u in users} == {signed_up}
    assert warehouse.count("service_accounts") == 2  # real accounts, made by the service

    songs = api.songs()
    assert [s["song_id"] for s in songs] == ["catalogue-1"] and songs[0]["title"] == "Harbour Lights"
    ann, bo = ids["sim-t-000"], ids["sim-t-001"]
    asked = WEEK + timedelta(hours=1)
    request_id = api.request_covers(ann, songs[0], 2, asked)
    assert api.request_covers(ann, songs[0], 2, asked) == request_id  # a retried ask: the same request
    api.request_covers(bo, songs[0], 3, asked + timedelta(hours=2))
    rows = warehouse.query("SELECT user_id, created_at, status, num_images, kind FROM generation_requests "
                           "ORDER BY created_at")
    assert [(r["user_id"], r["created_at"], r["status"], r["num_images"], r["kind"]) for r in rows] == [
        (ann, asked, "pending", 2, "user"), (bo, asked + timedelta(hours=2), "pending", 3, "user")]

    _render(dagbag, WEEK + timedelta(days=1))  # batch_generate renders them, not the service
    covers = api.my_covers(ann, WEEK, WEEK + timedelta(days=7))
    prompt = warehouse.query("SELECT p.positive FROM prompts AS p JOIN generation_requests AS r "
                             "ON r.prompt_id = p.prompt_id WHERE r.request_id = @r", {"r": request_id})[0]["positive"]
    assert len(covers) == 2 and {c["request_id"] for c in covers} == {request_id}
    # the service's prompt of the typed song (its labeller saw the title, artist and genre)
    assert {c["prompt"] for c in covers} == {prompt} and "ballad music" in prompt and prompt != songs[0]["prompt"]
    assert api.my_covers(ann, WEEK + timedelta(days=7), WEEK + timedelta(days=14)) == []
    assert len(api.my_covers(bo, WEEK, WEEK + timedelta(days=7))) == 3
    assert Image.open(io.BytesIO(api.image_bytes(covers[0]["uri"]))).size[0] > 0

    at = WEEK + timedelta(days=2)
    reviews = [{"image_id": c["image_id"], "user_id": ann, "rating": 4 - n, "created_at": at + timedelta(hours=n)}
               for n, c in enumerate(covers)]
    assert api.reviews(reviews) == {"recorded": 2, "rejected": []}
    stored = warehouse.query("SELECT image_id, user_id, rating, created_at FROM reviews ORDER BY created_at")
    assert stored == [{**r} for r in reviews]  # each dated by the simulation, not the wall clock

    # A second review of the same image updates it, never duplicates it.
    again = {"image_id": covers[0]["image_id"], "user_id": ann, "rating": 1, "created_at": at + timedelta(hours=5)}
    assert api.reviews([again]) == {"recorded": 1, "rejected": []}
    assert warehouse.count("reviews") == 2
    assert warehouse.query("SELECT rating, created_at FROM reviews WHERE image_id = @i",
                           {"i": covers[0]["image_id"]}) == [{"rating": 1, "created_at": again["created_at"]}]

    # Another user's cover cannot be reviewed: refused with the service's reason, nothing recorded.
    outcome = api.reviews([{**again, "user_id": bo, "rating": 5}, {**again, "rating": 6}])
    assert outcome["recorded"] == 0
    assert [r["index"] for r in outcome["rejected"]] == [0, 1]
    assert "404" in outcome["rejected"][0]["reason"] and "422" in outcome["rejected"][1]["reason"]
    assert warehouse.count("reviews") == 2


def test_a_rerun_signs_the_users_in_and_asks_for_the_same_requests(world, warehouse):
    from simulation.client import ApiClient

    asked = WEEK + timedelta(hours=1)
    with ApiClient(world, warehouse) as first:
        ids = first.sign_up(["sim-t-000"], WEEK)
        request_id = first.request_covers(ids["sim-t-000"], first.songs()[0], 4, asked)
    with ApiClient(world, warehouse) as again:  # accounts exist: sign in, same user ids
        assert again.sign_up(["sim-t-000"], WEEK) == ids
        assert again.request_covers(ids["sim-t-000"], again.songs()[0], 4, asked) == request_id
    assert warehouse.count("generation_requests") == 1 and warehouse.count("users") == 1


def test_the_service_refuses_to_date_a_call_made_outside_a_user_action(api):
    from simulation.client import simulated_now

    with pytest.raises(RuntimeError, match="outside a simulated user action"):
        simulated_now()
    ids = api.sign_up(["sim-t-000"], WEEK)
    with pytest.raises(KeyError, match="list it with my_covers"):
        api.image_bytes("/api/images/00000000-0000-0000-0000-000000000000/thumb")
    assert ids


def test_a_call_refused_while_another_process_holds_the_warehouse_is_made_again(world, warehouse, monkeypatch):
    import subprocess
    import sys

    from simulation.client import ApiClient
    from sleeve.settings import get_settings

    monkeypatch.setenv("SLEEVE_SERVICE_DB_WAIT_S", "0.5")  # the service gives up on the file after 0.5 s
    get_settings.cache_clear()
    with ApiClient(get_settings(), warehouse) as api:
        ids = api.sign_up(["sim-t-000"], WEEK)
        song = api.songs()[0]
        holder = subprocess.Popen([sys.executable, "-c", (
            "import duckdb, sys, time\n"
            "while True:\n"
            "    try:\n        con = duckdb.connect(sys.argv[1]); break\n"
            "    except duckdb.IOException:\n        time.sleep(0.02)\n"
            "print('held', flush=True); time.sleep(2.5); con.close()"), str(world.warehouse_path)],
            stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"  # (the service let go of it, idle)
            request_id = api.request_covers(ids["sim-t-000"], song, 4, WEEK + timedelta(hours=1))
        finally:
            holder.wait(timeout=30)
        assert api.retried >= 1  # it was refused (503 + Retry-After) at least once, then made
    assert [r["request_id"] for r in warehouse.query("SELECT request_id FROM generation_requests")] == [request_id]
