"""label_songs end to end through dag.test(): offline by default, LLM by Param, idempotent."""

from __future__ import annotations

import json

import pendulum
import pytest

from sleeve.settings import get_settings
from tests.inference.conftest import SONGS, song_row
from tests.inference.llm_server import FakeLLM

RUN_1 = pendulum.datetime(2026, 1, 12, 3, tz="UTC")
RUN_2 = pendulum.datetime(2026, 1, 13, 3, tz="UTC")


def _state(warehouse):
    labels = warehouse.query("SELECT song_id, labeller_version, labeller, labels, input_hash, fallback_reason, "
                             "created_at FROM labels ORDER BY song_id, labeller_version")
    prompts = warehouse.query("SELECT * FROM prompts ORDER BY prompt_id")
    return labels, prompts


def _stats(warehouse, when):
    rows = warehouse.query("SELECT stats, status FROM stage_runs WHERE dag_id = 'label_songs' AND stage = 'label' "
                           "AND interval_start = @t", {"t": when})
    assert len(rows) == 1 and rows[0]["status"] == "success"
    return json.loads(rows[0]["stats"])


@pytest.fixture
def songs(warehouse):
    warehouse.upsert("songs", [song_row(s, updated_at=RUN_1) for s in SONGS])
    return warehouse


def test_offline_run_labels_every_song_and_a_rerun_changes_nothing(dagbag, songs):
    dag = dagbag.get_dag("label_songs")
    events = _prompt_events()
    dag.test(logical_date=RUN_1)
    labels, prompts = _state(songs)
    assert len(labels) == len(prompts) == len(SONGS)
    assert {r["labeller_version"] for r in labels} == {"offline-1"}
    assert all(r["fallback_reason"] is None for r in labels)
    assert {p["prompt_version"] for p in prompts} == {"p1"}
    assert all("no text or lettering" in p["positive"] and json.loads(p["captions"]) for p in prompts)
    stats = _stats(songs, RUN_1)
    assert stats == {"songs": 4, "labelled": 4, "skipped": 0, "llm": 0, "offline": 4, "fallbacks": 0,
                     "prompt_tokens": 0, "completion_tokens": 0, "cache_hits": 0, "policy_fallbacks": 0,
                     "prompts_rebuilt": 0}

    assert _prompt_events() == events + 1

    dag.test(logical_date=RUN_1)  # the same run again: same rows, nothing relabelled, same record
    assert _state(songs) == (labels, prompts)
    assert _stats(songs, RUN_1) == stats and songs.count("stage_runs") == 1
    assert _prompt_events() == events + 2  # each successful run tells downstream DAGs


def _prompt_events() -> int:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sleeve_airflow.assets import PROMPTS
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.count()).select_from(AssetEvent).join(
            AssetModel, AssetModel.id == AssetEvent.asset_id).where(AssetModel.uri == PROMPTS.uri))


def test_llm_by_param_with_fallback_and_cache(dagbag, songs, monkeypatch):
    with FakeLLM() as server:
        monkeypatch.setenv("SLEEVE_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("SLEEVE_LLM_MODEL", "demo-model")
        get_settings.cache_clear()
        server.by_marker["Neon Night"] = ["garbage", "garbage"]
        dag = dagbag.get_dag("label_songs")
        dag.test(logical_date=RUN_2, run_conf={"labeller": "llm", "song_ids": ["s-ocean", "s-city"]})
        labels, prompts = _state(songs)
        assert [(r["song_id"], r["labeller"]) for r in labels] == [("s-city", "offline"), ("s-ocean", "llm")]
        assert "not JSON" in labels[0]["fallback_reason"]
        assert {r["labeller_version"] for r in labels} == {"llm-demo-model-l1"}
        stats = _stats(songs, RUN_2)
        assert (stats["songs"], stats["labelled"], stats["llm"], stats["fallbacks"]) == (2, 2, 1, 1)
        assert stats["prompt_tokens"] > 0 and stats["cache_hits"] == 0

        # relabel_all: s-ocean comes from the cache (no new request); s-city is asked again.
        before = len(server.requests)
        dag.test(logical_date=RUN_2, run_conf={"labeller": "llm", "song_ids": ["s-ocean", "s-city"],
                                               "relabel_all": True})
        stats = _stats(songs, RUN_2)
        assert stats["cache_hits"] == 1 and stats["llm"] == 2 and stats["fallbacks"] == 0
        assert len(server.requests) == before + 1


def test_injected_lyrics_cannot_put_a_named_person_into_a_prompt(dagbag, songs, monkeypatch):
    # Observed: lyrics asking for "photo of taylor swift" got labels that passed validation and
    # went into the generation prompt.
    injected = {"moods": ["dreamy"], "objects": ["photo of taylor swift", "nude photo of a celebrity"],
                "palette": ["blue"], "style": "billboard with text hacked", "genre": "dance"}
    with FakeLLM() as server:
        monkeypatch.setenv("SLEEVE_LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("SLEEVE_LLM_MODEL", "demo-model")
        get_settings.cache_clear()
        server.by_marker["Neon Night"] = ["content:" + json.dumps(injected)]
        dagbag.get_dag("label_songs").test(logical_date=RUN_2, run_conf={"labeller": "llm", "song_ids": ["s-city"]})
    (label,) = songs.query("SELECT labeller, fallback_reason FROM labels WHERE song_id = 's-city'")
    assert label["labeller"] == "offline" and label["fallback_reason"].startswith("content policy: ")
    for what in ("names a person", "sexual content", "text or lettering"):
        assert what in label["fallback_reason"]
    (prompt,) = songs.query("SELECT positive FROM prompts WHERE song_id = 's-city'")
    assert "taylor" not in prompt["positive"] and "nude" not in prompt["positive"]
    assert _stats(songs, RUN_2)["policy_fallbacks"] == 1
