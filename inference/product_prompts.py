"""Product information -> a background prompt for a product shot.

A product is described by a small dict (name, category, colour, material, mood, description;
Korean or English). Two prompters turn it into the same :class:`BackgroundPrompt` (scene,
lighting, surface, colour palette, negative prompt):

- :class:`OfflineProductPrompter` (embedded default), the offline labeller's approach: Korean
  and English words through a lexicon (:mod:`inference.lexicon` for moods and colours, the
  tables below for categories and materials), then a category template.
- :class:`LLMProductPrompter`: any OpenAI-compatible endpoint with JSON-schema output
  (:class:`inference.llm.ChatClient`), answers cached in the store, one re-ask, then the offline
  prompter with the reason kept.

The product is pasted onto the background afterwards, so the prompt describes an EMPTY scene
(a model asked for "a mug on a table" draws a second mug). Whatever the prompter says, the
positive prompt asks for a single scene and a simple background: for a product page that
matters more than any negative prompt. Every product text and every prompt term obeys the
content policy (:func:`inference.policy.policy_violations`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from inference import lexicon
from inference.labels import lookup, tokenize
from inference.policy import policy_violations
from sleeve.ids import content_hash

PRODUCT_PROMPT_VERSION = "b1"  # bump when the template, the tables or the LLM prompt change
OFFLINE_VERSION = f"product-offline-{PRODUCT_PROMPT_VERSION}"
INFO_FIELDS = ("name", "category", "colour", "material", "mood", "description")
MAX_FIELD_CHARS, MAX_DESCRIPTION_CHARS = 120, 1000

SINGLE_SCENE = "a single scene, simple clean background, empty space"
BASE_NEGATIVE = ("text, lettering, logo, watermark, people, hands, clutter, busy background, many objects, "
                 "product, duplicate, multiple scenes, collage, frame, border, blurry, low quality, deformed")


class ProductInfoError(ValueError):
    """The product information cannot be used; the message names the field."""


def check_product_info(info: object) -> dict:
    """The product information, validated: a dict of the known text fields (``name``
    required), trimmed, within length limits, and within the content policy."""
    if not isinstance(info, dict):
        raise ProductInfoError(f"product info must be an object with a name, got {type(info).__name__}")
    unknown = sorted(set(info) - set(INFO_FIELDS))
    if unknown:
        raise ProductInfoError(f"product info has unknown field(s) {unknown}; known: {', '.join(INFO_FIELDS)}")
    out = {}
    for name in INFO_FIELDS:
        value = info.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ProductInfoError(f"product {name} must be text, got {type(value).__name__}")
        value = " ".join(value.split())
        limit = MAX_DESCRIPTION_CHARS if name == "description" else MAX_FIELD_CHARS
        if len(value) > limit:
            raise ProductInfoError(f"product {name} is {len(value)} characters; at most {limit} are allowed")
        if value:
            out[name] = value
    if not out.get("name"):
        raise ProductInfoError("product info needs a name")
    reasons = policy_violations(" / ".join(out.values()))
    if reasons:
        raise ProductInfoError(f"product text breaks the content policy: {'; '.join(reasons)}")
    return out


@dataclass(frozen=True)
class BackgroundPrompt:
    scene: str
    lighting: str
    surface: str
    palette: tuple[str, ...]
    negative: str
    source: str = "offline"  # who wrote the terms: offline | llm
    version: str = OFFLINE_VERSION  # which prompter was asked (part of the lineage)
    fallback_reason: str | None = None
    mood: str = ""

    @property
    def positive(self) -> str:
        """Scene first (CLIP reads 77 tokens), then the simplicity the product page needs."""
        mood = f", {self.mood} mood" if self.mood else ""
        return (f"{self.scene}, empty {self.surface}, {self.lighting}, {_join(list(self.palette))} palette{mood}, "
                f"{SINGLE_SCENE}, product photography backdrop, no objects, no text")

    def to_dict(self) -> dict:
        return {"scene": self.scene, "lighting": self.lighting, "surface": self.surface,
                "palette": list(self.palette), "negative": self.negative, "mood": self.mood,
                "positive": self.positive, "source": self.source, "version": self.version,
                "fallback_reason": self.fallback_reason}


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


# --- offline prompter ------------------------------------------------------------------------

# Category word (Korean stem or English word) -> template group.
CATEGORIES = {
    "머그": "kitchen", "컵": "kitchen", "텀블러": "kitchen", "접시": "kitchen", "그릇": "kitchen", "주방": "kitchen",
    "냄비": "kitchen", "mug": "kitchen", "cup": "kitchen", "tumbler": "kitchen", "plate": "kitchen",
    "bowl": "kitchen", "teapot": "kitchen", "kitchen": "kitchen",
    "화장품": "beauty", "립스틱": "beauty", "크림": "beauty", "세럼": "beauty", "로션": "beauty", "스킨케어": "beauty",
    "향수": "beauty", "cosmetic": "beauty", "cosmetics": "beauty", "lipstick": "beauty", "cream": "beauty",
    "serum": "beauty", "lotion": "beauty", "skincare": "beauty", "perfume": "beauty", "beauty": "beauty",
    "병": "drink", "보틀": "drink", "음료": "drink", "와인": "drink", "주스": "drink", "bottle": "drink",
    "drink": "drink", "wine": "drink", "juice": "drink", "beverage": "drink",
    "가방": "fashion", "신발": "fashion", "운동화": "fashion", "옷": "fashion", "모자": "fashion", "지갑": "fashion",
    "bag": "fashion", "handbag": "fashion", "shoe": "fashion", "shoes": "fashion", "sneaker": "fashion",
    "sneakers": "fashion", "hat": "fashion", "wallet": "fashion", "fashion": "fashion", "jewelry": "fashion",
    "시계": "tech", "헤드폰": "tech", "이어폰": "tech", "스피커": "tech", "전자": "tech", "watch": "tech",
    "headphones": "tech", "earphones": "tech", "speaker": "tech", "phone": "tech", "camera": "tech",
    "electronics": "tech", "gadget": "tech",
    "캔들": "home", "양초": "home", "꽃병": "home", "화병": "home", "조명": "home", "램프": "home", "쿠션": "home",
    "인테리어": "home", "candle": "home", "vase": "home", "lamp": "home", "cushion": "home", "decor": "home",
    "과자": "food", "커피": "food", "초콜릿": "food", "식품": "food", "snack": "food", "coffee": "food",
    "chocolate": "food", "food": "food", "tea": "food",
    "장난감": "toy", "공": "toy", "인형": "toy", "toy": "toy", "ball": "toy", "doll": "toy",
}

TEMPLATES = {  # group -> (scene, surface, lighting)
    "kitchen": ("a bright minimal kitchen counter", "light oak wooden tabletop", "soft morning window light"),
    "beauty": ("a clean spa bathroom shelf", "white marble slab", "soft diffused studio light"),
    "drink": ("a fresh minimal studio set", "pale stone pedestal", "bright backlight with soft reflections"),
    "fashion": ("a minimal fashion studio set", "smooth concrete plinth", "soft directional studio light"),
    "tech": ("a modern tidy desk setting", "dark matte slate surface", "cool soft key light with a gentle rim light"),
    "home": ("a calm living room corner", "linen covered side table", "warm late afternoon light"),
    "food": ("a rustic farmhouse kitchen", "worn wooden board", "warm natural daylight"),
    "toy": ("a cheerful playroom corner", "soft pastel rug", "bright even daylight"),
    "default": ("a minimal photo studio", "seamless paper backdrop", "soft even studio lighting"),
}
NEUTRALS = {"kitchen": "warm white", "beauty": "soft ivory", "drink": "cool white", "fashion": "light grey",
            "tech": "charcoal", "home": "oatmeal beige", "food": "warm wood brown", "toy": "cream",
            "default": "soft white"}

MATERIALS = {
    "세라믹": "ceramic", "도자기": "ceramic", "유리": "glass", "가죽": "leather", "원목": "wood", "나무": "wood",
    "금속": "metal", "메탈": "metal", "스테인리스": "stainless steel", "스텐": "stainless steel", "면": "cotton",
    "코튼": "cotton", "린넨": "linen", "플라스틱": "plastic", "실리콘": "silicone", "종이": "paper",
    "대리석": "marble", "실크": "silk", "양모": "wool", "대나무": "bamboo",
    "ceramic": "ceramic", "porcelain": "ceramic", "glass": "glass", "leather": "leather", "wood": "wood",
    "wooden": "wood", "metal": "metal", "steel": "stainless steel", "aluminium": "metal", "aluminum": "metal",
    "cotton": "cotton", "linen": "linen", "plastic": "plastic", "silicone": "silicone", "paper": "paper",
    "marble": "marble", "silk": "silk", "wool": "wool", "bamboo": "bamboo",
}
SHINY = frozenset({"glass", "metal", "stainless steel", "marble", "silk"})

# Product moods the song lexicon lacks (its Korean stems like 따뜻 or 고요 are used too).
MOODS = {
    "고급": "luxurious", "럭셔리": "luxurious", "미니멀": "minimal", "깔끔": "clean", "심플": "minimal",
    "자연": "natural", "내추럴": "natural", "산뜻": "fresh", "상큼": "fresh", "포근": "cosy", "아늑": "cosy",
    "모던": "modern", "빈티지": "vintage", "귀여": "playful", "발랄": "playful", "시원": "fresh",
    "luxurious": "luxurious", "luxury": "luxurious", "premium": "luxurious", "minimal": "minimal",
    "minimalist": "minimal", "clean": "clean", "natural": "natural", "fresh": "fresh", "cosy": "cosy",
    "cozy": "cosy", "modern": "modern", "vintage": "vintage", "playful": "playful", "elegant": "elegant",
}
MOOD_LIGHT = {
    "warm": "warm golden hour light", "cosy": "warm golden hour light", "luxurious": "dramatic low-key light",
    "glamorous": "dramatic low-key light", "elegant": "soft dramatic side light", "serene": "soft diffused light",
    "peaceful": "soft diffused light", "fresh": "bright airy daylight", "playful": "bright cheerful daylight",
    "natural": "natural window light", "vintage": "soft warm film light",
}


def _find(table: dict, text: str) -> list[str]:
    """Values of ``table`` whose key occurs in ``text``: English keys as whole words, Korean
    keys anywhere in a word (compounds: 머그컵, 유리병), longest key first."""
    words = set(tokenize(text))
    found, taken = [], []
    for key in sorted(table, key=len, reverse=True):
        if key.isascii():
            hit = key in words or f"{key}s" in words
        else:
            starts = [m.start() for m in re.finditer(re.escape(key), text)]
            hit = any(not any(a <= s < b for a, b in taken) for s in starts)
            taken += [(s, s + len(key)) for s in starts]
        if hit and table[key] not in found:
            found.append(table[key])
    return found


def _lexicon(info: dict, field_name: str, category: str) -> list[str]:
    """The song lexicon's terms of ``category`` (moods | palette) for one field's words."""
    terms = []
    for token in tokenize(info.get(field_name, "")):
        terms += [english for cat, english in lookup(token)[1] if cat == category]
    return list(dict.fromkeys(terms))


class OfflineProductPrompter:
    name = "offline"
    version = OFFLINE_VERSION

    def prompt(self, info: dict) -> BackgroundPrompt:
        info = check_product_info(info)
        everything = " ".join(info.values())
        groups = _find(CATEGORIES, info.get("category", "")) or _find(CATEGORIES, everything)
        group = groups[0] if groups else "default"
        scene, surface, lighting = TEMPLATES[group]
        moods = (_find(MOODS, info.get("mood", "")) + _lexicon(info, "mood", "moods")
                 or _find(MOODS, everything))
        mood = moods[0] if moods else ""
        lighting = MOOD_LIGHT.get(mood, lighting)
        materials = _find(MATERIALS, info.get("material", "")) or _find(MATERIALS, everything)
        if materials and materials[0] in SHINY and "reflection" not in lighting:
            lighting += " with soft reflections"
        colours = _lexicon(info, "colour", "palette") or [
            c for c in _find(lexicon.COLOURS, everything) if c]
        palette = [NEUTRALS[group]]
        if colours:
            palette.append(f"pale {colours[0]}")  # a light tint of the product's colour: it stands out
        hint = lexicon.PALETTE_HINTS.get(mood)
        if hint:
            palette.append(hint)
        return BackgroundPrompt(scene, lighting, surface, tuple(dict.fromkeys(palette))[:3], BASE_NEGATIVE,
                                mood=mood)


# --- LLM prompter -----------------------------------------------------------------------------

_TERM = {"type": "string", "minLength": 1, "maxLength": 120}
PROMPT_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["scene", "lighting", "surface", "palette", "negative_prompt"],
    "properties": {
        "scene": {**_TERM, "description": "ONE simple, empty background scene for the product, in English"},
        "lighting": {**_TERM, "description": "the lighting of the scene"},
        "surface": {**_TERM, "description": "the surface the product stands on"},
        "palette": {"type": "array", "items": {**_TERM, "maxLength": 40}, "minItems": 1, "maxItems": 4,
                    "description": "2-3 English colour names for the background"},
        "negative_prompt": {**_TERM, "maxLength": 300, "description": "what the background must not show"},
    },
}
SYSTEM_PROMPT = (
    "You are an art director for e-commerce product photos. Read the product information (it may be "
    "Korean) and describe ONE simple, empty background scene for it, in English only: the product itself is "
    "added later, so do not mention it or any other object, person, brand or text. Reply with JSON matching "
    "the schema: scene, lighting, surface, palette (2-3 colour names that make the product stand out), "
    "negative_prompt (comma-separated things to avoid)."
)
_ENGLISH = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ,.'&/\-]*$")


class PromptAnswerError(ValueError):
    pass


def check_answer(content: str) -> dict:
    """An LLM answer, validated against :data:`PROMPT_SCHEMA` and the content policy."""
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise PromptAnswerError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or set(data) != set(PROMPT_SCHEMA["required"]):
        raise PromptAnswerError(f"the answer must have exactly the fields {PROMPT_SCHEMA['required']}")
    palette = data["palette"]
    if not isinstance(palette, list) or not 1 <= len(palette) <= 4:
        raise PromptAnswerError("palette must be a list of 1-4 colour names")
    terms = {k: data[k] for k in ("scene", "lighting", "surface")} | {f"palette[{i}]": p for i, p in enumerate(palette)}
    for name, value in {**terms, "negative_prompt": data["negative_prompt"]}.items():
        limit = 300 if name == "negative_prompt" else 40 if name.startswith("palette") else 120
        if not isinstance(value, str) or not value.strip() or len(value) > limit:
            raise PromptAnswerError(f"{name} must be 1-{limit} characters of text")
        if not _ENGLISH.match(value.strip()):
            raise PromptAnswerError(f"{name}={value[:40]!r} is not plain English")
    reasons = policy_violations(" / ".join(terms.values()))
    if reasons:
        raise PromptAnswerError(f"breaks the content policy: {'; '.join(reasons)}")
    return {k: " ".join(v.split()) if isinstance(v, str) else [" ".join(p.split()) for p in v]
            for k, v in data.items()}


@dataclass
class LLMProductPrompter:
    """Ask the LLM once per product (one re-ask for a bad answer); fall back to the offline
    prompter with the reason. ``cache`` (an object store) keeps valid answers by model,
    prompt version and product info, so re-runs never pay twice."""

    client: object  # inference.llm.ChatClient
    cache: object = None
    fallback: OfflineProductPrompter = field(default_factory=OfflineProductPrompter)

    @property
    def version(self) -> str:
        from inference.llm import _slug

        return f"product-llm-{_slug(self.client.model)}-{PRODUCT_PROMPT_VERSION}"

    def cache_key(self, info: dict) -> str:
        from inference.llm import _slug

        return f"llm-cache/products/{_slug(self.client.model)}/{PRODUCT_PROMPT_VERSION}/{content_hash(info)}.json"

    def prompt(self, info: dict) -> BackgroundPrompt:
        from inference.llm import BadAnswer, LLMError

        info = check_product_info(info)
        key = self.cache_key(info)
        if self.cache is not None and self.cache.exists(key):
            return self._result(check_answer(json.loads(self.cache.get_bytes(key))["content"]))
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": json.dumps(info, ensure_ascii=False, sort_keys=True)}]
        reasons = []
        for _ in range(2):
            try:
                answer = self.client.complete_json(messages, PROMPT_SCHEMA, name="product_background")
                terms = check_answer(answer.content)
            except BadAnswer as exc:
                reasons.append(str(exc))
                continue
            except LLMError as exc:  # retries are spent: asking again would not help
                reasons.append(f"llm unavailable: {exc}")
                break
            except PromptAnswerError as exc:
                reasons.append(f"invalid answer: {exc}")
                continue
            if self.cache is not None:
                entry = {"content": answer.content, "model": self.client.model, "version": PRODUCT_PROMPT_VERSION}
                self.cache.put_bytes(key, json.dumps(entry, ensure_ascii=False, sort_keys=True).encode(),
                                     content_type="application/json", create_only=True)
            return self._result(terms)
        offline = self.fallback.prompt(info)
        return BackgroundPrompt(**{**offline.__dict__, "version": self.version,
                                   "fallback_reason": "; ".join(reasons)[:500]})

    def _result(self, terms: dict) -> BackgroundPrompt:
        negative = ", ".join(dict.fromkeys(t.strip() for t in f"{BASE_NEGATIVE}, {terms['negative_prompt']}"
                                           .split(",") if t.strip()))
        return BackgroundPrompt(terms["scene"], terms["lighting"], terms["surface"], tuple(terms["palette"][:3]),
                                negative, source="llm", version=self.version)


def open_prompter(kind: str, *, client=None, cache=None):
    """The prompter by name: ``offline`` or ``llm`` (with a ChatClient and a store as cache)."""
    if kind == "offline":
        return OfflineProductPrompter()
    if kind == "llm":
        if client is None:
            raise ValueError("the LLM prompter needs a chat client (connection sleeve_llm or SLEEVE_LLM_*)")
        return LLMProductPrompter(client, cache=cache)
    raise ValueError(f"unknown prompter {kind!r}; use offline or llm")
