"""Versioned prompt builder: labels -> positive prompt, negative prompt, training captions;
and the training-caption manifest (one row per crawled cover) the trainer reads.

Bump PROMPT_VERSION whenever the output of :func:`build_prompt` changes: prompts are keyed by
(song, labeller version, prompt version), so old and new prompts live side by side and every
generated image records which one it used.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from sleeve.ids import sha256_bytes, stable_id

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


def caption_manifest(warehouse, store, song_ids: list[str] | None = None, *,
                     prompt_version: str = PROMPT_VERSION) -> tuple[str, list[dict]]:
    """Write the training-caption manifest and return ``(uri, rows)``.

    One row per crawled cover that has a prompt at ``prompt_version``: ``{song_id, image_uri,
    sha256, captions, prompt_id, labeller_version, prompt_version}``, sorted by song_id. When a
    song has prompts from several labellers, the LLM's (``llm-*``) wins over the offline one.
    The JSONL bytes are content-addressed (``manifests/captions/<sha256>.jsonl``, create-only),
    so the same data always gives the same URI and a manifest never changes once written.
    """
    sql = ("SELECT c.song_id, c.uri, c.sha256, p.prompt_id, p.labeller_version, p.prompt_version, p.captions "
           "FROM covers AS c JOIN prompts AS p ON p.song_id = c.song_id AND p.prompt_version = @pv")
    params: dict = {"pv": prompt_version}
    if song_ids is not None:
        sql, params["ids"] = sql + " WHERE c.song_id IN UNNEST(@ids)", list(song_ids)
    best: dict[str, dict] = {}
    for r in warehouse.query(sql + " ORDER BY c.song_id, p.labeller_version", params):
        current = best.get(r["song_id"])
        if current is None or (r["labeller_version"].startswith("llm") and
                               not current["labeller_version"].startswith("llm")):
            best[r["song_id"]] = r
    rows = [{"song_id": r["song_id"], "image_uri": r["uri"], "sha256": r["sha256"],
             "captions": json.loads(r["captions"]), "prompt_id": r["prompt_id"],
             "labeller_version": r["labeller_version"], "prompt_version": r["prompt_version"]}
            for _, r in sorted(best.items())]
    data = "".join(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n" for row in rows).encode("utf-8")
    key = f"manifests/captions/{sha256_bytes(data)}.jsonl"
    store.put_bytes(key, data, content_type="application/x-ndjson", create_only=True)
    return store.uri(key), rows
