from __future__ import annotations

import json
from datetime import UTC, datetime

from inference.labels import OfflineLabeller
from inference.prompts import PROMPT_VERSION, build_prompt, prompt_id, prompt_row
from sleeve.ids import stable_id
from tests.inference.conftest import SONGS

LABELS = {"moods": ["dreamy", "wistful", "calm"], "objects": ["lighthouse", "ocean at night", "gulls", "boat"],
          "palette": ["deep blue", "silver", "white", "black"], "style": "oil painting", "genre": "ballad"}
NOW = datetime(2026, 1, 12, 3, tzinfo=UTC)


def test_positive_prompt_has_composition_single_scene_no_text_and_labels():
    p = build_prompt(LABELS)
    assert p.prompt_version == PROMPT_VERSION
    assert p.positive.startswith("album cover art, square composition, a single scene of lighthouse, ")
    assert "ocean at night and gulls" in p.positive and "boat" not in p.positive  # at most 3 objects
    assert "dreamy and wistful mood" in p.positive and "calm" not in p.positive
    assert "deep blue, silver and white colour palette" in p.positive
    assert "oil painting" in p.positive and "ballad music" in p.positive
    assert p.positive.endswith("no text or lettering")
    for word in ("text", "lettering", "typography", "watermark", "logo"):
        assert word in p.negative.split(", ")
    assert build_prompt(LABELS) == p  # deterministic


def test_captions_are_distinct_variants_without_title_or_artist():
    labels = OfflineLabeller().label_batch([SONGS[0]])[0].labels
    p = build_prompt(labels)
    assert len(p.captions) == len(set(p.captions)) >= 3
    assert all(labels["objects"][0] in c for c in p.captions)
    for caption in p.captions + [p.positive]:
        assert SONGS[0].title not in caption and SONGS[0].artist not in caption
        assert caption.isascii()


def test_prompt_row_ids_are_stable_per_song_labeller_and_prompt_version():
    row = prompt_row("s1", "offline-1", build_prompt(LABELS), NOW)
    assert row["prompt_id"] == prompt_id("s1", "offline-1") == stable_id("s1", "offline-1", PROMPT_VERSION)
    assert row["prompt_id"] != prompt_id("s1", "llm-m-l1") != prompt_id("s1", "offline-1", "p2")
    assert json.loads(row["captions"]) == build_prompt(LABELS).captions

