"""LLM labeller: any OpenAI-compatible chat-completions endpoint, with JSON-schema output.

- :class:`ChatClient` posts to ``{base_url}/chat/completions`` over requests, retries 429/5xx
  and connection errors with exponential backoff (honouring ``Retry-After``), and bounds the
  number of requests in flight.
  An answer is read as a stream and dropped past ``max_answer_bytes`` (a labels answer is
  about 1 KB; a hostile or broken endpoint may send megabytes).
- :class:`LLMLabeller` asks once per song, re-asks once if the answer is garbage or breaks the
  schema, then falls back to the offline labeller with the reason recorded. Labels that break
  the content policy (:mod:`inference.policy`: people's names, sexual content, text, links —
  lyrics can carry instructions) fall back at once: asking again at temperature 0 would get the
  same answer. Valid answers are cached in the object store under (model, label-prompt version,
  input hash), so re-runs and backfills never pay twice; a cached answer is checked again.
"""

from __future__ import annotations

import json
import logging
import random
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import requests
from requests.adapters import HTTPAdapter

from inference.labels import (
    LABELS_SCHEMA,
    LabelError,
    LabelResult,
    OfflineLabeller,
    Song,
    label_violations,
    validate_labels,
)
from sleeve.http import retry_after_seconds

log = logging.getLogger(__name__)

LABEL_PROMPT_VERSION = "l1"  # bump when SYSTEM_PROMPT or the schema changes: it keys the cache
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_LYRICS_CHARS = 3000
MAX_ANSWER_BYTES = 256 * 1024  # a labels completion is ~1 KB; anything this big is not one
ERROR_BODY_BYTES = 2048  # what is read of an error response, for its message

SYSTEM_PROMPT = (
    "You are an art director designing album covers. Read the song (the lyrics may be Korean) and "
    "describe ONE cover image, in English only. Reply with JSON matching the schema: moods = 1-3 mood "
    "adjectives; objects = 2-4 concrete things or places that fit in a single painted scene (no people's "
    "names, no words or text); palette = 2-4 colour names; style = one art style; genre = the music "
    "genre in English."
)


class LLMError(RuntimeError):
    """The endpoint could not be reached or kept failing after the retries."""


class BadAnswer(LLMError):
    """The endpoint answered, but not with a usable chat completion."""


@dataclass(frozen=True)
class ChatAnswer:
    content: str
    prompt_tokens: int
    completion_tokens: int


def wire_schema(schema: dict) -> dict:
    """The schema as sent: string length bounds dropped (several servers reject them in strict
    mode); they are still checked locally by validate_labels."""
    if isinstance(schema, dict):
        return {k: wire_schema(v) for k, v in schema.items() if k not in ("minLength", "maxLength")}
    if isinstance(schema, list):
        return [wire_schema(v) for v in schema]
    return schema


class ChatClient:
    """A small chat-completions client: one verb, :meth:`complete_json`."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout_s: float = 60.0,
                 max_retries: int = 4, backoff_s: float = 1.0, max_wait_s: float = 60.0, concurrency: int = 4,
                 max_answer_bytes: int = MAX_ANSWER_BYTES, sleep=time.sleep):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"LLM base URL {base_url!r} must start with http:// or https://")
        if not model:
            raise ValueError("LLM model is empty; set the model (connection extra 'model' or SLEEVE_LLM_MODEL)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_wait_s = backoff_s, max_wait_s
        self.concurrency, self.max_answer_bytes = concurrency, max_answer_bytes
        self._sleep = sleep
        self._slots = threading.BoundedSemaphore(concurrency)
        self.session = requests.Session()
        self.session.mount("http://", HTTPAdapter(pool_maxsize=concurrency))
        self.session.mount("https://", HTTPAdapter(pool_maxsize=concurrency))
        if api_key:
            self.session.headers["Authorization"] = f"Bearer {api_key}"

    def complete_json(self, messages: list[dict], schema: dict, name: str = "labels") -> ChatAnswer:
        body = {
            "model": self.model, "messages": messages, "temperature": 0,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": name, "strict": True, "schema": wire_schema(schema)}},
        }
        for attempt in range(self.max_retries + 1):
            try:
                with self._slots, self.session.post(self.url, json=body, timeout=self.timeout_s, stream=True) as resp:
                    status, retry_after = resp.status_code, resp.headers.get("Retry-After")
                    data = read_capped(resp, self.max_answer_bytes if status < 400 else ERROR_BODY_BYTES,
                                       truncate=status >= 400, deadline=time.monotonic() + self.timeout_s)
            except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                problem, wait = f"{type(exc).__name__}", None
            else:
                if status < 400:
                    return _parse_completion(data)
                if status not in RETRY_STATUSES:
                    raise LLMError(f"HTTP {status} from the LLM endpoint: {data[:200].decode('utf-8', 'replace')}")
                problem, wait = f"HTTP {status}", retry_after_seconds(retry_after)
            if attempt == self.max_retries:
                raise LLMError(f"{problem} after {attempt + 1} attempts")
            if wait is None:  # exponential backoff with a little jitter so threads spread out
                wait = self.backoff_s * 2**attempt * (1 + random.random() / 4)
            log.warning("LLM request failed (%s); retrying in %.1fs", problem, min(wait, self.max_wait_s))
            self._sleep(min(wait, self.max_wait_s))
        raise AssertionError("unreachable")


def read_capped(resp: requests.Response, limit: int, *, truncate: bool = False,
                deadline: float | None = None) -> bytes:
    """The (decompressed) body, read in chunks and given up past ``limit`` bytes: BadAnswer,
    or with ``truncate`` the first ``limit`` bytes. A declared Content-Length over the limit
    is refused before anything is read. Past ``deadline`` (``time.monotonic()``) a body still
    trickling in is a Timeout: the per-read timeout alone lets a slow server hold a request."""
    declared = resp.headers.get("Content-Length", "")
    if not truncate and declared.isdigit() and int(declared) > limit:
        raise BadAnswer(f"answer is {int(declared):,} bytes; at most {limit:,} are read")
    chunks, size = [], 0
    for chunk in resp.iter_content(chunk_size=16384):
        chunks.append(chunk)
        size += len(chunk)
        if deadline is not None and time.monotonic() > deadline:
            raise requests.Timeout(f"answer still arriving after the deadline ({size:,} bytes so far)")
        if size > limit:
            if truncate:
                break
            raise BadAnswer(f"answer is over {limit:,} bytes; reading stopped there")
    return b"".join(chunks)[:limit]


def _parse_completion(data: bytes) -> ChatAnswer:
    try:
        payload = json.loads(data)
        content = payload["choices"][0]["message"]["content"]
        usage = payload.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BadAnswer(f"not a chat completion ({type(exc).__name__}): {data[:120]!r}") from None
    if not isinstance(content, str):
        raise BadAnswer("the completion has no text content")
    return ChatAnswer(content, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


@dataclass(frozen=True)
class Unusable:
    """A song the LLM could not label usably: why, what it cost and what it said."""

    song: Song
    reason: str
    tokens: tuple[int, int]
    answers: list[str]
    cache_hit: bool = False
    policy: bool = False


def policy_reason(violations: list[str]) -> str:
    return ("content policy: " + "; ".join(violations))[:500]


def song_messages(song: Song) -> list[dict]:
    fields = {"title": song.title, "artist": song.artist, "album": song.album, "genre": song.genre,
              "lyrics": song.lyrics[:MAX_LYRICS_CHARS]}
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": json.dumps(fields, ensure_ascii=False)}]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "-", text).strip("-").lower() or "model"


class LLMLabeller:
    name = "llm"

    def __init__(self, client: ChatClient, cache=None, fallback: OfflineLabeller | None = None):
        self.client = client
        self.cache = cache  # an ObjectStore, or None for no cache
        self.fallback = fallback or OfflineLabeller()
        self.version = f"llm-{_slug(client.model)}-{LABEL_PROMPT_VERSION}"

    def cache_key(self, song: Song) -> str:
        return f"llm-cache/{_slug(self.client.model)}/{LABEL_PROMPT_VERSION}/{song.input_hash}.json"

    def label_batch(self, songs: list[Song]) -> list[LabelResult]:
        with ThreadPoolExecutor(max_workers=max(1, self.client.concurrency)) as pool:
            outcomes = list(pool.map(self._label_one, songs))
        failed = [o for o in outcomes if isinstance(o, Unusable)]
        fallbacks = iter(self.fallback.label_batch([o.song for o in failed]))
        results = []
        for outcome in outcomes:
            if isinstance(outcome, LabelResult):
                results.append(outcome)
                continue
            result = next(fallbacks)
            result.labeller_version, result.fallback_reason, result.model = self.version, outcome.reason, \
                self.client.model
            result.prompt_tokens, result.completion_tokens = outcome.tokens
            result.cache_hit, result.policy_fallback = outcome.cache_hit, outcome.policy
            # Keep what the LLM said (for audit) beside the offline evidence.
            result.raw = json.dumps({"llm_answers": outcome.answers, "offline": json.loads(result.raw)},
                                    ensure_ascii=False)
            log.warning("song %s: LLM labels unusable (%s); used the offline labeller", outcome.song.song_id,
                        outcome.reason)
            results.append(result)
        return results

    def _label_one(self, song: Song) -> LabelResult | Unusable:
        key = self.cache_key(song)
        if self.cache is not None and self.cache.exists(key):
            content = json.loads(self.cache.get_bytes(key))["content"]
            labels = validate_labels(content)
            if violations := label_violations(labels):  # written before the check existed, or by hand
                return Unusable(song, policy_reason(violations), (0, 0), [content[:2000]], cache_hit=True,
                                policy=True)
            return self._result(song, labels, content, (0, 0), cache_hit=True)
        tokens, reasons, answers = [0, 0], [], []
        for _ in range(2):  # one re-ask for garbage or schema-invalid answers
            try:
                answer = self.client.complete_json(song_messages(song), LABELS_SCHEMA)
            except BadAnswer as exc:
                reasons.append(str(exc))
                continue
            except LLMError as exc:  # retries already exhausted: asking again would not help
                return Unusable(song, f"llm unavailable: {exc}", tuple(tokens), answers)
            tokens[0] += answer.prompt_tokens
            tokens[1] += answer.completion_tokens
            answers.append(answer.content[:2000])
            try:
                labels = validate_labels(answer.content)
            except LabelError as exc:
                reasons.append(f"invalid answer: {exc}")
                continue
            if violations := label_violations(labels):  # never cached: the next run asks again
                return Unusable(song, policy_reason(violations), tuple(tokens), answers, policy=True)
            if self.cache is not None:
                entry = {"content": answer.content, "model": self.client.model, "input_hash": song.input_hash,
                         "prompt_version": LABEL_PROMPT_VERSION,
                         "usage": {"prompt_tokens": answer.prompt_tokens,
                                   "completion_tokens": answer.completion_tokens}}
                self.cache.put_bytes(key, json.dumps(entry, ensure_ascii=False, sort_keys=True).encode("utf-8"),
                                     content_type="application/json", create_only=True)
            return self._result(song, labels, answer.content, tuple(tokens))
        return Unusable(song, "; ".join(reasons)[:500], tuple(tokens), answers)

    def _result(self, song, labels, raw, tokens, cache_hit=False) -> LabelResult:
        return LabelResult(song.song_id, labels, raw, self.name, self.version, song.input_hash,
                           model=self.client.model, prompt_tokens=tokens[0], completion_tokens=tokens[1],
                           cache_hit=cache_hit)
