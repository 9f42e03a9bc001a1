"""Song labels: the schema, the labeller interface, the offline rule-based labeller, and the
select -> label -> store steps the ``label_songs`` DAG runs.

A cover model needs visual words, not lyrics. Labels are English: moods, concrete objects or
scenes, a colour palette, an art style and the genre. Every labeller returns the same shape,
validated by :func:`validate_labels`, with the raw answer kept for audit; every term obeys the
content policy (:func:`label_violations`, :mod:`inference.policy`).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from inference import lexicon
from inference.policy import policy_violations
from sleeve.ids import content_hash

OFFLINE_VERSION = "offline-1"
LIST_FIELDS = ("moods", "objects", "palette")
TEXT_FIELDS = ("style", "genre")
FIELDS = LIST_FIELDS + TEXT_FIELDS
MAX_ITEMS = 5

_TERM = {"type": "string", "minLength": 1, "maxLength": 60}
LABELS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": list(FIELDS),
    "properties": {
        "moods": {"type": "array", "items": _TERM, "minItems": 1, "maxItems": MAX_ITEMS,
                  "description": "1-3 English mood or vibe adjectives"},
        "objects": {"type": "array", "items": _TERM, "minItems": 1, "maxItems": MAX_ITEMS,
                    "description": "2-4 concrete objects or scenes that fit in one picture"},
        "palette": {"type": "array", "items": _TERM, "minItems": 1, "maxItems": MAX_ITEMS,
                    "description": "2-4 English colour names"},
        "style": {**_TERM, "description": "an art style, e.g. watercolor painting"},
        "genre": {**_TERM, "description": "the music genre in English"},
    },
}
_ENGLISH = re.compile(r"^[a-z0-9][a-z0-9 &',/\-]*$")


class LabelError(ValueError):
    """Labels do not match the schema; the message names the field."""


def validate_labels(data: object) -> dict:
    """Check ``data`` (a dict or JSON text) against :data:`LABELS_SCHEMA` and return it
    normalised: lower-case, single spaces, duplicates dropped, fields in schema order."""
    if isinstance(data, str | bytes):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise LabelError(f"labels are not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise LabelError(f"labels must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - set(FIELDS))
    missing = [f for f in FIELDS if f not in data]
    if unknown or missing:
        raise LabelError(f"labels have unknown field(s) {unknown} / miss field(s) {missing}")
    out = {}
    for name in LIST_FIELDS:
        items = data[name]
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
            raise LabelError(f"labels.{name} must be a list of 1-{MAX_ITEMS} strings")
        terms = [_term(f"{name}[{i}]", item) for i, item in enumerate(items)]
        out[name] = list(dict.fromkeys(terms))
    for name in TEXT_FIELDS:
        out[name] = _term(name, data[name])
    return out


def _term(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise LabelError(f"labels.{name} must be a string, got {type(value).__name__}")
    term = " ".join(value.lower().split())
    if not term or len(term) > _TERM["maxLength"]:
        raise LabelError(f"labels.{name} must be 1-{_TERM['maxLength']} characters")
    if not _ENGLISH.match(term):
        raise LabelError(f"labels.{name}={term!r} is not plain English words")
    return term


def label_violations(labels: dict) -> list[str]:
    """Every policy violation in validated labels, each naming its term, e.g.
    ``objects[0]='nude photo of a celebrity': sexual content ('nude')``."""
    found = []
    for name in FIELDS:
        values = labels[name] if name in LIST_FIELDS else [labels[name]]
        for i, term in enumerate(values):
            where = f"{name}[{i}]" if name in LIST_FIELDS else name
            found += [f"{where}={term!r}: {reason}" for reason in policy_violations(term)]
    return found


@dataclass(frozen=True)
class Song:
    song_id: str
    title: str = ""
    artist: str = ""
    album: str = ""
    genre: str = ""
    lyrics: str = ""

    @classmethod
    def from_row(cls, row: dict) -> Song:
        return cls(row["song_id"], *((row.get(f) or "") for f in ("title", "artist", "album", "genre", "lyrics")))

    @property
    def input_hash(self) -> str:
        """What a labeller sees; equal songs share LLM cache entries, changed songs relabel."""
        return content_hash([self.title, self.artist, self.album, self.genre, self.lyrics])


@dataclass
class LabelResult:
    song_id: str
    labels: dict
    raw: str
    labeller: str  # who produced the labels: offline | llm
    labeller_version: str  # which labeller was asked (the row key)
    input_hash: str
    fallback_reason: str | None = None
    model: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cache_hit: bool = False
    policy_fallback: bool = False  # the labels broke the content policy; the offline ones are used


# --- offline labeller ------------------------------------------------------------------------

_TOKEN = re.compile(r"[가-힣]+|[A-Za-z][A-Za-z'&]*")
_INDEX: dict[str, list[tuple[str, str]]] = {}
for _category, _table in (("moods", lexicon.MOODS), ("objects", lexicon.OBJECTS), ("palette", lexicon.COLOURS)):
    for _surface, _english in _table.items():
        _INDEX.setdefault(_surface, []).append((_category, _english))
_STOPWORDS = frozenset(
    "the a an i you me my your we our he she it its is are was be to of in on at for and or but with that this "
    "oh yeah la na baby so just all no not do don't i'm you're it's can can't will 나 너 내 네 난 넌 날 널 우리 그 "
    "이 저 그대 나의 너의 우린 이제 그냥 정말 너무 다시 또 왜 더 다".split()
)


def tokenize(text: str) -> list[str]:
    return [t.lower() for t in _TOKEN.findall(text or "")]


def lookup(token: str) -> tuple[str, list[tuple[str, str]]]:
    """(stem, [(category, english), ...]) for a token. The stem is what TF-IDF counts: the
    first lexicon stem, or the token minus a trailing particle when the lexicon has nothing."""
    found = _matches(token)
    return (found[0][0] if found else _strip_particle(token)), [hit for _, hits in found for hit in hits]


def _matches(token: str) -> list[tuple[str, list[tuple[str, str]]]]:
    if token.isascii():
        for stem in (token, token.rstrip("s")):
            if stem in _INDEX:
                return [(stem, _INDEX[stem])]
        return []
    for end in range(len(token), 0, -1):
        stem, rest = token[:end], token[end:]
        if stem not in _INDEX:
            continue
        if not rest or rest in lexicon.PARTICLES:
            return [(stem, _INDEX[stem])]
        tail = _matches(rest)  # a compound (밤편지) or a stem with an ending (그리워서)
        if tail or end > 1:
            return [(stem, _INDEX[stem]), *tail]
    return []


def _strip_particle(token: str) -> str:
    for size in (3, 2, 1):
        if len(token) > size + 1 and token[-size:] in lexicon.PARTICLES:
            return token[:-size]
    return token


def map_genre(text: str) -> str:
    """Melon's '발라드, 국내드라마' or 'Hip Hop' -> an English genre (the first part that maps)."""
    norm = " ".join((text or "").lower().split())
    parts = [norm] + [p.strip() for p in re.split(r"[,;]", norm)]
    parts += [s.strip() for p in parts for s in p.split("/")]
    for part in parts:
        if part in lexicon.GENRES:
            return lexicon.GENRES[part]
    for part in parts:
        if part and _ENGLISH.match(part) and len(part) <= 30 and not policy_violations(part):
            return part  # an English genre the lexicon does not know (and the policy allows): keep it
    return lexicon.DEFAULT_GENRE


class OfflineLabeller:
    """Deterministic labels from the lexicon, ranked by TF-IDF against a corpus of songs so
    that words every song uses (사랑, love) weigh less than the ones that set this song apart.
    Never empty: the genre, then fixed defaults, fill what the words do not give."""

    name = "offline"
    version = OFFLINE_VERSION

    def __init__(self, corpus: Iterable[str] = ()):
        self.doc_freq: Counter = Counter()
        self.docs = 0
        for text in corpus:
            self.doc_freq.update({lookup(t)[0] for t in tokenize(text)})
            self.docs += 1

    def idf(self, stem: str) -> float:
        return math.log((1 + self.docs) / (1 + self.doc_freq[stem])) + 1.0

    def label_batch(self, songs: list[Song]) -> list[LabelResult]:
        fitted = self if self.docs else OfflineLabeller(song_text(s) for s in songs)  # no corpus: the batch
        return [fitted.label(s) for s in songs]

    def label(self, song: Song) -> LabelResult:
        scores: dict[str, Counter] = {f: Counter() for f in LIST_FIELDS}
        terms: Counter = Counter()
        for text, weight in ((f"{song.title} {song.album}", 2.0), (song.lyrics, 1.0)):
            for token in tokenize(text):
                stem, hits = lookup(token)
                terms[stem] += weight
                for category, english in hits:
                    scores[category][english] += weight * self.idf(stem)
        genre = map_genre(song.genre)
        default_mood, default_scene, default_palette = lexicon.GENRE_DEFAULTS.get(
            genre, (lexicon.DEFAULT_MOOD, None, lexicon.DEFAULT_PALETTE))
        pick = int(song.input_hash[:8], 16)
        moods = _top(scores["moods"], 3) or [default_mood]
        objects = _top(scores["objects"], 4) or [
            default_scene or lexicon.DEFAULT_SCENES[pick % len(lexicon.DEFAULT_SCENES)]]
        hinted = [lexicon.PALETTE_HINTS[w] for w in objects + moods if w in lexicon.PALETTE_HINTS]
        palette = list(dict.fromkeys(_top(scores["palette"], 3) + hinted + list(default_palette)))[:4]
        labels = validate_labels({"moods": moods, "objects": objects, "palette": palette,
                                  "style": lexicon.GENRE_STYLE.get(genre, lexicon.DEFAULT_STYLE),
                                  "genre": genre})
        keywords = sorted(((w * self.idf(s), s) for s, w in terms.items() if s not in _STOPWORDS and len(s) > 1),
                          key=lambda x: (-x[0], x[1]))[:10]
        raw = json.dumps({"keywords": [s for _, s in keywords],
                          "scores": {f: dict(_ranked(c)) for f, c in scores.items() if c}},
                         ensure_ascii=False, sort_keys=True)
        return LabelResult(song.song_id, labels, raw, self.name, self.version, song.input_hash)


def _ranked(counter: Counter) -> list[tuple[str, float]]:
    return sorted(((k, round(v, 4)) for k, v in counter.items()), key=lambda kv: (-kv[1], kv[0]))


def _top(counter: Counter, n: int) -> list[str]:
    return [k for k, _ in _ranked(counter)[:n]]


def song_text(song: Song) -> str:
    return f"{song.title} {song.album} {song.lyrics}"


# --- the DAG's steps, as plain functions -------------------------------------------------------

_SONG_COLUMNS = "song_id, title, artist, album, genre, lyrics"


def load_songs(warehouse, *, song_ids: list[str] | None = None, since: datetime | None = None) -> list[Song]:
    """Songs to consider: the given ids, or those updated since ``since``, or all; by song_id."""
    sql, params = f"SELECT {_SONG_COLUMNS} FROM songs WHERE TRUE", {}
    if song_ids:
        sql, params["ids"] = sql + " AND song_id IN UNNEST(@ids)", list(song_ids)
    if since is not None:
        sql, params["since"] = sql + " AND updated_at >= @since", since
    return [Song.from_row(r) for r in warehouse.query(sql + " ORDER BY song_id", params)]


def corpus_texts(warehouse, limit: int = 5000) -> list[str]:
    """The offline labeller's document frequencies come from (a fixed sample of) all songs."""
    rows = warehouse.query(f"SELECT {_SONG_COLUMNS} FROM songs ORDER BY song_id LIMIT @n", {"n": limit})
    return [song_text(Song.from_row(r)) for r in rows]


@dataclass
class Plan:
    """What a run does per song: label it, only (re)build its prompt, or skip it."""

    label: list[str] = field(default_factory=list)
    prompt_only: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def plan(warehouse, songs: list[Song], labeller_version: str, prompt_version: str, *,
         relabel_all: bool = False) -> Plan:
    """Unchanged songs (same input hash, labelled without a fallback) are skipped; a fallback
    is retried on the next run; a new prompt version rebuilds prompts from stored labels."""
    ids = [s.song_id for s in songs]
    done = {r["song_id"]: r for r in warehouse.query(
        "SELECT l.song_id, l.input_hash, l.fallback_reason, p.prompt_id IS NOT NULL AS has_prompt "
        "FROM labels AS l LEFT JOIN prompts AS p ON p.song_id = l.song_id "
        "AND p.labeller_version = l.labeller_version AND p.prompt_version = @pv "
        "WHERE l.labeller_version = @lv AND l.song_id IN UNNEST(@ids)",
        {"lv": labeller_version, "pv": prompt_version, "ids": ids})} if ids else {}
    out = Plan()
    for song in songs:
        row = done.get(song.song_id)
        if relabel_all or row is None or row["input_hash"] != song.input_hash or row["fallback_reason"]:
            out.label.append(song.song_id)
        elif not row["has_prompt"]:
            out.prompt_only.append(song.song_id)
        else:
            out.skipped.append(song.song_id)
    return out


def stored_labels(warehouse, song_ids: list[str], labeller_version: str) -> list[LabelResult]:
    rows = warehouse.query(
        "SELECT song_id, labeller, labels, raw, input_hash, fallback_reason FROM labels "
        "WHERE labeller_version = @lv AND song_id IN UNNEST(@ids) ORDER BY song_id",
        {"lv": labeller_version, "ids": list(song_ids)}) if song_ids else []
    return [LabelResult(r["song_id"], json.loads(r["labels"]), r["raw"], r["labeller"], labeller_version,
                        r["input_hash"], r["fallback_reason"]) for r in rows]


def label_row(result: LabelResult, created_at: datetime) -> dict:
    return {
        "song_id": result.song_id, "labeller_version": result.labeller_version, "labeller": result.labeller,
        "labels": json.dumps(result.labels, sort_keys=True), "raw": result.raw, "input_hash": result.input_hash,
        "fallback_reason": result.fallback_reason, "model": result.model, "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens, "cache_hit": result.cache_hit, "created_at": created_at,
    }


def usage_stats(results: list[LabelResult]) -> dict:
    """The stage_runs counters a labelling run reports."""
    return {
        "labelled": len(results),
        "llm": sum(r.labeller == "llm" for r in results),
        "offline": sum(r.labeller == "offline" for r in results),
        "fallbacks": sum(bool(r.fallback_reason) for r in results),
        "prompt_tokens": sum(r.prompt_tokens for r in results),
        "completion_tokens": sum(r.completion_tokens for r in results),
        "cache_hits": sum(r.cache_hit for r in results),
        "policy_fallbacks": sum(r.policy_fallback for r in results),
    }


def store_results(warehouse, results: list[LabelResult], created_at: datetime, *, with_labels: bool = True) -> int:
    """Upsert labels (unless only prompts are rebuilt) and their prompts; returns prompts written.
    ``created_at`` is the run's interval end, so a re-run writes identical rows."""
    from inference.prompts import build_prompt, prompt_row

    if with_labels:
        warehouse.upsert("labels", [label_row(r, created_at) for r in results])
    return warehouse.upsert("prompts", [prompt_row(r.song_id, r.labeller_version, build_prompt(r.labels), created_at)
                                        for r in results])
