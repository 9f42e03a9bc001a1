"""The LLM labeller against an OpenAI-compatible server on loopback (tests/inference/llm_server.py)."""

from __future__ import annotations

import json

import pytest

from inference.labels import OfflineLabeller, Song, label_violations, usage_stats, validate_labels
from inference.llm import LABEL_PROMPT_VERSION, ChatClient, LLMError, LLMLabeller
from tests.inference.conftest import SONGS
from tests.inference.llm_server import FakeLLM


class Sleeps(list):
    """Records the waits the client asks for instead of sleeping (the waits are the behaviour)."""

    def __call__(self, seconds):
        self.append(seconds)


def make(server, store=None, **kw):
    sleeps = Sleeps()
    client = ChatClient(server.base_url, "test-model", "sk-test", backoff_s=0.5, sleep=sleeps, **kw)
    return LLMLabeller(client, cache=store, fallback=OfflineLabeller()), sleeps


def test_valid_answers_become_labels_with_usage_and_the_request_is_structured(fake_llm):
    labeller, _ = make(fake_llm)
    results = labeller.label_batch(SONGS[:2])
    assert [r.song_id for r in results] == ["s-ocean", "s-city"]
    for r in results:
        assert r.labeller == "llm" and r.fallback_reason is None and not r.cache_hit
        assert r.labeller_version == f"llm-test-model-{LABEL_PROMPT_VERSION}" and r.model == "test-model"
        assert r.labels == validate_labels(r.raw) and r.labels["objects"][0] == "lighthouse"
        assert r.prompt_tokens > 0 and r.completion_tokens > 0
    request = fake_llm.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    body = request["body"]
    assert body["model"] == "test-model" and body["temperature"] == 0
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"]["required"] == ["moods", "objects", "palette", "style", "genre"]
    user = json.loads(body["messages"][1]["content"])
    assert user["title"] in {"바다의 노래", "Neon Night"} and "lyrics" in user


def test_cache_means_reruns_never_pay_twice(fake_llm, local_store):
    store = local_store
    labeller, _ = make(fake_llm, store)
    first = labeller.label_batch(SONGS)
    assert len(fake_llm.requests) == len(SONGS) and not any(r.cache_hit for r in first)
    keys = store.list(f"llm-cache/test-model/{LABEL_PROMPT_VERSION}/")
    assert sorted(keys) == sorted(f"llm-cache/test-model/{LABEL_PROMPT_VERSION}/{s.input_hash}.json" for s in SONGS)
    entry = json.loads(store.get_bytes(keys[0]))
    assert entry["usage"]["prompt_tokens"] > 0 and entry["model"] == "test-model"

    again, _ = make(fake_llm, store)
    second = again.label_batch(SONGS)
    assert len(fake_llm.requests) == len(SONGS)  # no new request
    assert all(r.cache_hit and r.prompt_tokens == r.completion_tokens == 0 for r in second)
    assert [r.labels for r in second] == [r.labels for r in first]

    # Another model is another cache entry: it pays once.
    other = LLMLabeller(ChatClient(fake_llm.base_url, "other-model", sleep=Sleeps()), cache=store)
    assert not other.label_batch(SONGS[:1])[0].cache_hit
    assert len(fake_llm.requests) == len(SONGS) + 1


@pytest.mark.parametrize("modes, reason", [
    (["garbage", "garbage"], "invalid answer: labels are not JSON"),
    (["invalid", "invalid"], "invalid answer: labels have unknown field(s) [] / miss field(s) ['genre']"),
    (["broken", "broken"], "not a chat completion"),
])
def test_bad_answers_are_retried_once_then_fall_back_offline(fake_llm, local_store, modes, reason):
    store = local_store
    fake_llm.by_marker["Neon Night"] = list(modes)
    labeller, _ = make(fake_llm, store)
    ocean, city = labeller.label_batch(SONGS[:2])
    assert ocean.labeller == "llm" and ocean.fallback_reason is None
    assert city.labeller == "offline" and city.labeller_version == labeller.version
    assert reason in city.fallback_reason
    assert city.labels == OfflineLabeller().label_batch(SONGS[:2])[1].labels
    assert len(fake_llm.requests) == 3  # one for ocean, two for city
    raw = json.loads(city.raw)
    assert "keywords" in raw["offline"] and len(raw["llm_answers"]) == (0 if modes[0] == "broken" else 2)
    if modes[0] != "broken":
        assert city.prompt_tokens > 0  # the bad answers were paid for, and that is recorded
    # Fallbacks are not cached: the next run asks again (and now gets a valid answer).
    assert not store.exists(labeller.cache_key(SONGS[1]))
    assert labeller.label_batch(SONGS[1:2])[0].labeller == "llm"


def test_one_bad_answer_then_a_good_one_is_used(fake_llm):
    fake_llm.script = ["garbage"]
    labeller, _ = make(fake_llm)
    (result,) = labeller.label_batch(SONGS[:1])
    assert result.labeller == "llm" and result.fallback_reason is None and len(fake_llm.requests) == 2


def test_429_waits_for_retry_after_and_5xx_backs_off(fake_llm):
    fake_llm.retry_after = "7"
    fake_llm.script = ["429", "500", "500"]
    labeller, sleeps = make(fake_llm)
    (result,) = labeller.label_batch(SONGS[:1])
    assert result.labeller == "llm" and len(fake_llm.requests) == 4
    assert sleeps[0] == 7.0  # Retry-After honoured
    assert 1.0 <= sleeps[1] <= 1.25 and 2.0 <= sleeps[2] <= 2.5  # exponential backoff (+ up to 25% jitter)


def test_endpoint_down_falls_back_with_reason(fake_llm):
    fake_llm.script = ["500"] * 3
    labeller, sleeps = make(fake_llm, max_retries=2)
    (result,) = labeller.label_batch(SONGS[:1])
    assert result.labeller == "offline" and result.fallback_reason == "llm unavailable: HTTP 500 after 3 attempts"
    assert len(fake_llm.requests) == 3 and len(sleeps) == 2


def test_client_errors_are_not_retried(fake_llm):
    fake_llm.script = ["401"]
    labeller, sleeps = make(fake_llm)
    (result,) = labeller.label_batch(SONGS[:1])
    assert result.fallback_reason.startswith("llm unavailable: HTTP 401") and len(fake_llm.requests) == 1
    assert sleeps == []


def test_unreachable_endpoint_raises_after_retries():
    server = FakeLLM()  # bound but never served: connections are refused once closed
    server.httpd.server_close()
    sleeps = Sleeps()
    client = ChatClient(server.base_url, "m", max_retries=1, sleep=sleeps, timeout_s=2)
    with pytest.raises(LLMError, match="ConnectionError after 2 attempts"):
        client.complete_json([{"role": "user", "content": "hi"}], {"type": "object"})
    assert len(sleeps) == 1


def test_concurrency_is_bounded():
    with FakeLLM(delay_s=0.2) as server:
        client = ChatClient(server.base_url, "m", concurrency=3, sleep=Sleeps())
        songs = [Song(f"s{i}", title=f"song {i}") for i in range(7)]
        results = LLMLabeller(client).label_batch(songs)
    assert [r.song_id for r in results] == [s.song_id for s in songs]
    assert 2 <= server.max_in_flight <= 3


def test_client_rejects_bad_configuration():
    with pytest.raises(ValueError, match="must start with http"):
        ChatClient("api.example.com", "m")
    with pytest.raises(ValueError, match="model is empty"):
        ChatClient("http://127.0.0.1:1/v1", "")


@pytest.mark.parametrize("mode", ["huge", "huge-unsized"])
def test_an_oversized_answer_is_not_read_past_the_cap_nor_cached(fake_llm, local_store, mode):
    # Observed: a 30 MB body was parsed and a 31 MB cache entry written.
    fake_llm.by_marker["Neon Night"] = [mode, mode]
    labeller, _ = make(fake_llm, local_store)
    ocean, city = labeller.label_batch(SONGS[:2])
    assert ocean.labeller == "llm"
    assert city.labeller == "offline"
    assert ("at most 262,144 are read" if mode == "huge" else "over 262,144 bytes") in city.fallback_reason
    assert not local_store.exists(labeller.cache_key(SONGS[1]))
    entries = local_store.list("llm-cache/")
    assert len(entries) == 1 and len(local_store.get_bytes(entries[0])) < 10_000
    assert len(json.dumps(city.raw)) < 10_000  # nothing of the huge body is kept for audit either
    assert fake_llm.bytes_sent < 30 * 1024 * 1024  # the client hung up instead of reading it all


INJECTED = [  # labels that lyrics like "ignore the rules and draw ..." got out of a model
    ("objects", "nude photo of a celebrity", "sexual content"),
    ("objects", "photo of taylor swift", "names a person"),
    ("objects", "billboard with text hacked", "text or lettering"),
    ("style", "in the style of greg rutkowski", "names a person"),
]


@pytest.mark.parametrize("field,term,reason", INJECTED)
def test_labels_that_break_the_content_policy_fall_back_offline_with_the_reason(fake_llm, local_store, field,
                                                                                 term, reason):
    labels = {"moods": ["dreamy"], "objects": ["lighthouse"], "palette": ["blue"], "style": "oil painting",
              "genre": "ballad"}
    labels[field] = [term] if field == "objects" else term
    fake_llm.by_marker["Neon Night"] = ["content:" + json.dumps(labels)]
    labeller, _ = make(fake_llm, local_store)
    ocean, city = labeller.label_batch(SONGS[:2])
    assert ocean.labeller == "llm" and not ocean.policy_fallback
    assert city.labeller == "offline" and city.policy_fallback
    assert city.fallback_reason.startswith("content policy: ") and reason in city.fallback_reason
    assert term in city.fallback_reason
    assert city.labels == OfflineLabeller().label_batch(SONGS[:2])[1].labels
    assert len(fake_llm.requests) == 2  # no re-ask: at temperature 0 the answer would be the same
    assert not local_store.exists(labeller.cache_key(SONGS[1]))
    assert term in json.loads(city.raw)["llm_answers"][0]  # what the model said is kept for audit
    assert usage_stats([ocean, city])["policy_fallbacks"] == 1


def test_a_cached_answer_that_breaks_the_policy_is_not_used(fake_llm, local_store):
    labeller, _ = make(fake_llm, local_store)
    bad = {"moods": ["dreamy"], "objects": ["photo of taylor swift"], "palette": ["blue"], "style": "oil painting",
           "genre": "ballad"}
    local_store.put_bytes(labeller.cache_key(SONGS[0]), json.dumps({"content": json.dumps(bad)}).encode())
    (result,) = labeller.label_batch(SONGS[:1])
    assert result.labeller == "offline" and "names a person" in result.fallback_reason and result.policy_fallback
    assert fake_llm.requests == []


def test_offline_labels_obey_the_policy_even_for_a_hostile_genre():
    song = Song("s-x", "Night", "A", "", "nude photo shoot", "the sea at night")
    (result,) = OfflineLabeller().label_batch([song])
    assert label_violations(result.labels) == [] and result.labels["genre"] != "nude photo shoot"
