from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from inference.labels import (
    OFFLINE_VERSION,
    LabelError,
    OfflineLabeller,
    Song,
    load_songs,
    lookup,
    map_genre,
    plan,
    store_results,
    stored_labels,
    usage_stats,
    validate_labels,
)
from inference.prompts import PROMPT_VERSION
from tests.inference.conftest import SONGS, song_row

GOOD = {"moods": ["Dreamy", "dreamy", " calm "], "objects": ["lighthouse"], "palette": ["deep  blue"],
        "style": "oil painting", "genre": "ballad"}
NOW = datetime(2026, 1, 12, 3, tzinfo=UTC)


def test_validate_labels_normalises():
    assert validate_labels(json.dumps(GOOD)) == {
        "moods": ["dreamy", "calm"], "objects": ["lighthouse"], "palette": ["deep blue"],
        "style": "oil painting", "genre": "ballad"}


@pytest.mark.parametrize("change, named", [
    ({"moods": []}, "labels.moods"),
    ({"objects": "ocean"}, "labels.objects"),
    ({"palette": ["blue"] * 6}, "labels.palette"),
    ({"style": 3}, "labels.style"),
    ({"genre": "발라드"}, "labels.genre"),
    ({"objects": ["바다"]}, "labels.objects[0]"),
    ({"extra": "x"}, "unknown field(s) ['extra']"),
])
def test_validate_labels_names_the_bad_field(change, named):
    with pytest.raises(LabelError, match=named.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        validate_labels({**GOOD, **change})


def test_validate_labels_rejects_non_json_and_missing_fields():
    with pytest.raises(LabelError, match="not JSON"):
        validate_labels("Sure! moody ocean")
    with pytest.raises(LabelError, match=r"miss field\(s\) \['genre'\]"):
        validate_labels({k: v for k, v in GOOD.items() if k != "genre"})


@pytest.mark.parametrize("token, stem, english", [
    ("바다에서", "바다", ["ocean"]),
    ("그리워서", "그리워", ["nostalgic"]),
    ("비가", "비", ["rain"]),
    ("비밀", "비밀", []),  # one-syllable 비 (rain) must not match inside 비밀 (secret)
    ("밤편지", "밤", ["night", "letter"]),  # compound: both halves
    ("눈물이", "눈물", ["melancholic", "tears"]),
    ("stars", "stars", ["stars"]),
    ("roses", "roses", ["roses"]),
])
def test_lookup_handles_particles_compounds_and_plurals(token, stem, english):
    found_stem, hits = lookup(token)
    assert found_stem == stem
    assert sorted(e for _, e in hits) == sorted(english)


@pytest.mark.parametrize("text, genre", [
    ("발라드, 국내드라마", "ballad"), ("랩/힙합", "hip hop"), ("R&B/Soul", "r&b"), ("Dance", "dance pop"),
    ("Shoegaze", "shoegaze"), ("", "pop"), ("알수없음", "pop"),
])
def test_map_genre(text, genre):
    assert map_genre(text) == genre


def test_offline_labels_korean_and_english_songs():
    results = {r.song_id: r for r in OfflineLabeller().label_batch(SONGS)}
    ocean = results["s-ocean"].labels
    # title/album words weigh double: 바다 (title) and 여름 (album) lead, lyric imagery follows
    assert ocean["objects"][:2] == ["ocean", "summer"] and len(ocean["objects"]) == 4
    assert {"nostalgic", "melancholic", "romantic"} & set(ocean["moods"])
    assert "blue" in ocean["palette"]  # 푸른 named the colour
    assert ocean["genre"] == "ballad" and ocean["style"] == "soft-focus film photograph"
    city = results["s-city"].labels
    assert {"city lights", "neon lights", "rain", "stars"} & set(city["objects"])
    assert "energetic" in city["moods"] and city["genre"] == "dance pop"
    spring = results["s-spring"].labels
    assert {"cherry blossoms", "petals", "spring"} & set(spring["objects"]) and "white" in spring["palette"]
    for r in results.values():
        assert r.labeller == "offline" and r.labeller_version == OFFLINE_VERSION
        assert r.input_hash == next(s for s in SONGS if s.song_id == r.song_id).input_hash
        assert json.loads(r.raw)["keywords"] or r.song_id == "s-empty"


def test_offline_labels_are_never_empty_and_deterministic():
    blank = Song("blank")
    first = OfflineLabeller().label_batch([blank, SONGS[2]])
    again = OfflineLabeller().label_batch([blank, SONGS[2]])
    assert [r.labels for r in first] == [r.labels for r in again]
    for r in first:
        assert all(r.labels[f] for f in ("moods", "objects", "palette", "style", "genre"))
        assert validate_labels(r.labels) == r.labels
    assert first[1].labels["objects"] == ["city rooftop at night"]  # hip hop's default scene


def test_tf_idf_ranks_distinctive_words_above_common_ones():
    # 사랑 (romantic) twice vs 그리워 (nostalgic) once: alone, raw counts win; against a corpus
    # where every song says 사랑, the distinctive word ranks first.
    song = Song("x", lyrics="사랑 사랑 그리워")
    alone = OfflineLabeller([song.lyrics]).label(song).labels["moods"]
    corpus = [song.lyrics] + [f"사랑 노래 {i}" for i in range(5)]
    ranked = OfflineLabeller(corpus).label(song).labels["moods"]
    assert alone == ["romantic", "nostalgic"]
    assert ranked == ["nostalgic", "romantic"]


def test_plan_skips_unchanged_relabels_changed_and_rebuilds_missing_prompts(warehouse):
    warehouse.upsert("songs", [song_row(s, updated_at=NOW) for s in SONGS])
    songs = load_songs(warehouse)
    assert [s.song_id for s in songs] == sorted(s.song_id for s in SONGS)
    first = plan(warehouse, songs, OFFLINE_VERSION, PROMPT_VERSION)
    assert sorted(first.label) == sorted(s.song_id for s in SONGS) and not first.skipped

    results = OfflineLabeller().label_batch(songs)
    assert store_results(warehouse, results, NOW) == len(SONGS)
    assert warehouse.count("labels") == warehouse.count("prompts") == len(SONGS)
    again = plan(warehouse, songs, OFFLINE_VERSION, PROMPT_VERSION)
    assert not again.label and len(again.skipped) == len(SONGS)
    assert len(plan(warehouse, songs, OFFLINE_VERSION, PROMPT_VERSION, relabel_all=True).label) == len(SONGS)

    # A changed song relabels; a new prompt version only rebuilds prompts.
    warehouse.upsert("songs", [song_row(SONGS[0], lyrics="검은 밤 불꽃", updated_at=NOW)])
    changed = plan(warehouse, load_songs(warehouse), OFFLINE_VERSION, PROMPT_VERSION)
    assert changed.label == [SONGS[0].song_id]
    next_version = plan(warehouse, songs, OFFLINE_VERSION, "p-next")
    assert not next_version.label and len(next_version.prompt_only) == len(SONGS)
    stored = stored_labels(warehouse, next_version.prompt_only, OFFLINE_VERSION)
    assert {r.song_id: r.labels for r in stored} == {r.song_id: r.labels for r in results}

    # A row that fell back is retried on the next run.
    fell_back = results[1]
    fell_back.fallback_reason = "llm unavailable: HTTP 500 after 5 attempts"
    store_results(warehouse, [fell_back], NOW)
    assert plan(warehouse, songs, OFFLINE_VERSION, PROMPT_VERSION).label == [fell_back.song_id]

    only = load_songs(warehouse, song_ids=[SONGS[1].song_id])
    assert [s.song_id for s in only] == [SONGS[1].song_id]
    assert load_songs(warehouse, since=datetime(2027, 1, 1, tzinfo=UTC)) == []


def test_usage_stats_counts():
    results = OfflineLabeller().label_batch(SONGS[:2])
    results[0].labeller, results[0].prompt_tokens, results[0].cache_hit = "llm", 10, True
    results[1].fallback_reason = "x"
    results[1].policy_fallback = True
    assert usage_stats(results) == {"labelled": 2, "llm": 1, "offline": 1, "fallbacks": 1, "prompt_tokens": 10,
                                    "completion_tokens": 0, "cache_hits": 1, "policy_fallbacks": 1}


def test_every_word_the_offline_labeller_can_emit_obeys_the_content_policy():
    from inference import lexicon
    from inference.policy import policy_violations

    words = {w for table in (lexicon.MOODS, lexicon.OBJECTS, lexicon.COLOURS, lexicon.GENRES, lexicon.GENRE_STYLE,
                                                                                 lexicon.PALETTE_HINTS)
             for w in table.values()}
    words |= {lexicon.DEFAULT_GENRE, lexicon.DEFAULT_MOOD, lexicon.DEFAULT_STYLE, *lexicon.DEFAULT_SCENES,
              *lexicon.DEFAULT_PALETTE}
    words |= {w for defaults in lexicon.GENRE_DEFAULTS.values() for part in defaults if part
              for w in ([part] if isinstance(part, str) else part)}
    assert {w: policy_violations(w) for w in words if policy_violations(w)} == {}
