"""Versioned prompt builder: labels -> positive prompt, negative prompt, training captions.

The captions are stored with the prompt row; the weekly snapshot (:mod:`training.snapshot`)
picks one per crawled cover and freezes it into its content-hashed manifest.

Bump PROMPT_VERSION whenever the output of :func:`build_prompt` changes: prompts are keyed by
(song, labeller version, prompt version), so old and new prompts live side by side and every
generated image records which one it used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sleeve.ids import stable_id

PROMPT_VERSION = "p1"

NEGATIVE = ("text, lettering, typography, words, letters, title, caption, watermark, signature, logo, "
            "multiple panels, collage, frame, border, blurry, low quality, jpeg artifacts, deformed, disfigured")


@dataclass(frozen=True)
class Prompt:
    positive: str
    negative: str
    captions: list[str]
    prompt_version: str = PROMPT_VERSION


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def build_prompt(labels: dict) -> Prompt:
    """Validated labels (see inference.labels.validate_labels) -> prompts. Short enough for
    CLIP's 77 tokens: at most 3 objects, 2 moods and 3 colours. The song's title and artist are
    left out on purpose: they invite lettering and likenesses."""
    objects, moods, palette = labels["objects"][:3], labels["moods"][:2], labels["palette"][:3]
    scene = _join(objects)
    positive = (f"album cover art, square composition, a single scene of {scene}, "
                f"{' and '.join(moods)} mood, {_join(palette)} colour palette, {labels['style']}, "
                f"{labels['genre']} music, centered subject, no text or lettering")
    captions = [
        f"album cover, {scene}, {', '.join(moods)}, {', '.join(palette)} palette, {labels['style']}",
        f"{labels['style']} of {scene}, {moods[0]} mood",
        f"{objects[0]}, {labels['genre']} album cover, {palette[0]} tones",
        ", ".join(dict.fromkeys([*objects, *moods, *palette, labels["style"], labels["genre"]])),
    ]
    return Prompt(positive, NEGATIVE, list(dict.fromkeys(captions)))


def prompt_id(song_id: str, labeller_version: str, prompt_version: str = PROMPT_VERSION) -> str:
    return stable_id(song_id, labeller_version, prompt_version)


def prompt_row(song_id: str, labeller_version: str, prompt: Prompt, created_at: datetime) -> dict:
    return {
        "prompt_id": prompt_id(song_id, labeller_version, prompt.prompt_version), "song_id": song_id,
        "labeller_version": labeller_version, "prompt_version": prompt.prompt_version,
        "positive": prompt.positive, "negative": prompt.negative,
        "captions": json.dumps(prompt.captions, ensure_ascii=False), "created_at": created_at,
    }

