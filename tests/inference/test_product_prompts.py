"""Product information -> background prompts: Korean and English through the lexicon and the
category templates; bad information and policy-breaking text rejected; the LLM prompter on a
loopback server, with its cache and its fallbacks."""

from __future__ import annotations

import pytest

from inference.llm import ChatClient
from inference.product_prompts import (
    BASE_NEGATIVE,
    SINGLE_SCENE,
    LLMProductPrompter,
    OfflineProductPrompter,
    ProductInfoError,
    check_answer,
    check_product_info,
    open_prompter,
)

KOREAN_MUG = {"name": "하늘색 세라믹 머그컵", "category": "머그컵", "colour": "하늘색", "material": "세라믹",
              "mood": "따뜻한"}


def test_korean_product_becomes_an_english_single_scene_prompt():
    prompt = OfflineProductPrompter().prompt(KOREAN_MUG)
    assert prompt.scene == "a bright minimal kitchen counter"  # 머그컵 -> the kitchen template
    assert "pale sky blue" in prompt.palette  # 하늘색, from the song lexicon's colours
    assert prompt.mood == "warm" and prompt.lighting == "warm golden hour light"  # 따뜻 -> warm
    assert prompt.positive.isascii() and SINGLE_SCENE in prompt.positive and "no objects" in prompt.positive
    assert prompt.positive.startswith(prompt.scene)  # scene first: CLIP reads 77 tokens
    assert prompt.negative == BASE_NEGATIVE and prompt.source == "offline"


def test_english_products_pick_their_templates_and_materials():
    glass = OfflineProductPrompter().prompt({"name": "Water bottle", "category": "Bottle", "colour": "green",
                                             "material": "glass", "mood": "fresh"})
    assert glass.scene == "a fresh minimal studio set" and "reflections" in glass.lighting
    assert glass.palette == ("cool white", "pale green")  # the template's neutral + a tint of the product
    watch = OfflineProductPrompter().prompt({"name": "Chronograph watch", "mood": "luxury"})
    assert watch.surface == "dark matte slate surface" and watch.lighting == "dramatic low-key light"
    unknown = OfflineProductPrompter().prompt({"name": "Thing"})
    assert unknown.scene == "a minimal photo studio" and unknown.mood == ""


def test_korean_compounds_match_inside_words():
    prompt = OfflineProductPrompter().prompt({"name": "유리병 향수", "colour": "분홍색"})
    assert prompt.scene == "a clean spa bathroom shelf"  # 향수 (perfume) over 병 (bottle): longest key first
    assert "reflections" in prompt.lighting  # 유리 (glass)
    assert "pale pink" in prompt.palette


@pytest.mark.parametrize("info, message", [
    ("a mug", "must be an object"),
    ({"category": "mug"}, "needs a name"),
    ({"name": "   "}, "needs a name"),
    ({"name": "Mug", "price": "9.99"}, "unknown field"),
    ({"name": "Mug", "colour": 3}, "colour must be text"),
    ({"name": "x" * 121}, "at most 120"),
    ({"name": "Mug", "description": "see www.shop.com"}, "content policy: contains a link"),
    ({"name": "Celebrity signature mug"}, "content policy"),
    ({"name": "Sexy mug"}, "sexual content"),
])
def test_bad_product_info_is_rejected_with_a_reason(info, message):
    with pytest.raises(ProductInfoError, match=message):
        check_product_info(info)


def test_product_info_is_normalised():
    assert check_product_info({"name": "  Blue\n mug ", "mood": ""}) == {"name": "Blue mug"}


def _client(server):
    return ChatClient(server.base_url, "test-model", backoff_s=0.01, max_retries=1)


def test_llm_prompter_answers_and_caches(fake_llm, local_store):
    prompter = open_prompter("llm", client=_client(fake_llm), cache=local_store)
    first = prompter.prompt(KOREAN_MUG)
    assert first.source == "llm" and first.scene == "a sunlit marble kitchen counter"
    assert first.palette == ("cream", "sage green") and first.fallback_reason is None
    assert first.negative == BASE_NEGATIVE  # the model's "clutter, text" merged in without repeats
    assert first.version == "product-llm-test-model-b1"
    sent = fake_llm.requests[0]["body"]
    assert sent["response_format"]["json_schema"]["name"] == "product_background"
    assert "머그컵" in sent["messages"][1]["content"]  # the Korean info goes to the model as it is
    again = prompter.prompt(KOREAN_MUG)
    assert again == first and len(fake_llm.requests) == 1  # the cache answered


@pytest.mark.parametrize("modes, reason", [
    (["garbage", "garbage"], "invalid answer: not JSON"),
    (["invalid", "invalid"], "is not plain English"),
    (["policy", "policy"], "content policy"),
    (["401"], "llm unavailable"),
])
def test_llm_prompter_falls_back_to_offline_with_the_reason(fake_llm, local_store, modes, reason):
    fake_llm.script = list(modes)
    prompt = LLMProductPrompter(_client(fake_llm), cache=local_store).prompt(KOREAN_MUG)
    assert prompt.source == "offline" and reason in prompt.fallback_reason
    assert prompt.scene == OfflineProductPrompter().prompt(KOREAN_MUG).scene
    assert not local_store.list("llm-cache/")  # nothing unusable is cached


def test_llm_prompter_reasks_once_after_a_bad_answer(fake_llm):
    fake_llm.script = ["garbage"]
    prompt = LLMProductPrompter(_client(fake_llm)).prompt(KOREAN_MUG)
    assert prompt.source == "llm" and len(fake_llm.requests) == 2


def test_check_answer_rejects_extra_fields_and_long_terms():
    good = ('{"scene": "a beach", "lighting": "sun", "surface": "sand", "palette": ["blue"], '
            '"negative_prompt": "people"}')
    assert check_answer(good)["scene"] == "a beach"
    with pytest.raises(ValueError, match="exactly the fields"):
        check_answer(good[:-1] + ', "extra": 1}')
    with pytest.raises(ValueError, match="1-120 characters"):
        check_answer(good.replace('"a beach"', '"' + "a" * 130 + '"'))
    with pytest.raises(ValueError, match="palette must be"):
        check_answer(good.replace('["blue"]', "[]"))


def test_unknown_prompter_is_an_error():
    with pytest.raises(ValueError, match="unknown prompter"):
        open_prompter("magic")
    with pytest.raises(ValueError, match="needs a chat client"):
        open_prompter("llm")
