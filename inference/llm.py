"""LLM labeller: any OpenAI-compatible chat-completions endpoint, with JSON-schema output.

- :class:`ChatClient` posts to ``{base_url}/chat/completions`` over requests, retries 429/5xx
  and connection errors with exponential backoff (honouring ``Retry-After``), and bounds the
  number of requests in flight.
- :class:`LLMLabeller` asks once per song, re-asks once if the answer is garbage or breaks the
  schema, then falls back to the offline labeller with the reason recorded. Valid answers are
  cached in the object store under (model, label-prompt version, input hash), so re-runs and
  backfills never pay twice.
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

from inference.labels import LABELS_SCHEMA, LabelError, LabelResult, OfflineLabeller, Song, validate_labels
from sleeve.http import retry_after_seconds

log = logging.getLogger(__name__)

LABEL_PROMPT_VERSION = "l1"  # bump when SYSTEM_PROMPT or the schema changes: it keys the cache
RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
MAX_LYRICS_CHARS = 3000

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
                 sleep=time.sleep):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"LLM base URL {base_url!r} must start with http:// or https://")
        if not model:
            raise ValueError("LLM model is empty; set the model (connection extra 'model' or SLEEVE_LLM_MODEL)")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.timeout_s, self.max_retries = timeout_s, max_retries
        self.backoff_s, self.max_wait_s = backoff_s, max_wait_s
        self.concurrency = concurrency
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
                with self._slots:
                    resp = self.session.post(self.url, json=body, timeout=self.timeout_s)
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem, wait = f"{type(exc).__name__}", None
            else:
                if resp.status_code < 400:
                    return _parse_completion(resp)
                if resp.status_code not in RETRY_STATUSES:
                    raise LLMError(f"HTTP {resp.status_code} from the LLM endpoint: {resp.text[:200]}")
                problem, wait = f"HTTP {resp.status_code}", retry_after_seconds(resp.headers.get("Retry-After"))
            if attempt == self.max_retries:
                raise LLMError(f"{problem} after {attempt + 1} attempts")
            if wait is None:  # exponential backoff with a little jitter so threads spread out
                wait = self.backoff_s * 2**attempt * (1 + random.random() / 4)
            log.warning("LLM request failed (%s); retrying in %.1fs", problem, min(wait, self.max_wait_s))
            self._sleep(min(wait, self.max_wait_s))
        raise AssertionError("unreachable")


def _parse_completion(resp: requests.Response) -> ChatAnswer:
    try:
        payload = resp.json()
        content = payload["choices"][0]["message"]["content"]
        usage = payload.get("usage") or {}
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise BadAnswer(f"not a chat completion ({type(exc).__name__}): {resp.text[:120]!r}") from None
    if not isinstance(content, str):
        raise BadAnswer("the completion has no text content")
    return ChatAnswer(content, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


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
        failed = [o for o in outcomes if not isinstance(o, LabelResult)]
        fallbacks = iter(self.fallback.label_batch([song for song, *_ in failed]))
        results = []
        for outcome in outcomes:
            if isinstance(outcome, LabelResult):
                results.append(outcome)
                continue
            song, reason, usage, answers = outcome
            result = next(fallbacks)
            result.labeller_version, result.fallback_reason, result.model = self.version, reason, self.client.model
            result.prompt_tokens, result.completion_tokens = usage
            # Keep what the LLM said (for audit) beside the offline evidence.
            result.raw = json.dumps({"llm_answers": answers, "offline": json.loads(result.raw)}, ensure_ascii=False)
            log.warning("song %s: LLM labels unusable (%s); used the offline labeller", song.song_id, reason)
            results.append(result)
        return results

    def _label_one(self, song: Song) -> LabelResult | tuple[Song, str, tuple[int, int], list[str]]:
        key = self.cache_key(song)
        if self.cache is not None and self.cache.exists(key):
            entry = json.loads(self.cache.get_bytes(key))
            return self._result(song, validate_labels(entry["content"]), entry["content"], (0, 0), cache_hit=True)
        tokens, reasons, answers = [0, 0], [], []
        for _ in range(2):  # one re-ask for garbage or schema-invalid answers
            try:
                answer = self.client.complete_json(song_messages(song), LABELS_SCHEMA)
            except BadAnswer as exc:
                reasons.append(str(exc))
                continue
            except LLMError as exc:  # retries already exhausted: asking again would not help
                return song, f"llm unavailable: {exc}", tuple(tokens), answers
            tokens[0] += answer.prompt_tokens
            tokens[1] += answer.completion_tokens
            answers.append(answer.content[:2000])
            try:
                labels = validate_labels(answer.content)
            except LabelError as exc:
                reasons.append(f"invalid answer: {exc}")
                continue
            if self.cache is not None:
                entry = {"content": answer.content, "model": self.client.model, "input_hash": song.input_hash,
                         "prompt_version": LABEL_PROMPT_VERSION,
                         "usage": {"prompt_tokens": answer.prompt_tokens,
                                   "completion_tokens": answer.completion_tokens}}
                self.cache.put_bytes(key, json.dumps(entry, ensure_ascii=False, sort_keys=True).encode("utf-8"),
                                     content_type="application/json", create_only=True)
            return self._result(song, labels, answer.content, tuple(tokens))
        return song, "; ".join(reasons)[:500], tuple(tokens), answers

    def _result(self, song, labels, raw, tokens, cache_hit=False) -> LabelResult:
        return LabelResult(song.song_id, labels, raw, self.name, self.version, song.input_hash,
                           model=self.client.model, prompt_tokens=tokens[0], completion_tokens=tokens[1],
                           cache_hit=cache_hit)
