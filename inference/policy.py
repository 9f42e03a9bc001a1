"""The content policy every prompt term obeys, whoever wrote it: an LLM's labels, a user's song
title or keywords typed into the service, a product description.

A cover may not depict a real, named person, sexual content, text or lettering, or a link.
Asking a model not to is not enough (lyrics can carry instructions): the rules are enforced on
the output. :func:`policy_violations` returns the reasons a text breaks the policy (empty: it
may be used); callers reject the text or fall back to the offline labeller and keep the reason.

Text is normalised first (NFKC folds full-width letters, invisible format characters such as
zero-width spaces are dropped, case is folded) and checked a second time with digits read as
the letters they stand for (``nud3``), so spelling tricks do not walk past the word lists.
Names are found by their frame ("photo of taylor swift", "in the style of greg rutkowski",
"taylor swift's face") and by common Korean family names ("kim minji"); a bare name in no frame
("beyonce") is beyond a word list and is not caught.
"""

from __future__ import annotations

import re
import unicodedata

_WORD = r"(?<![a-z0-9])({})(?![a-z0-9])"


def _words(*words: str) -> re.Pattern:
    return re.compile(_WORD.format("|".join(sorted(words, key=len, reverse=True))))


SEXUAL = _words("nude", "nudes", "naked", "nsfw", "porn", "porno", "pornographic", "sexy", "sex", "sexual",
                "erotic", "explicit", "topless", "lingerie", "hentai", "xxx", "fetish", "strip tease", "striptease")
# Requests for words in the picture: SDXL renders them as garbled lettering on a cover.
TEXT = _words("text", "texts", "lettering", "letters", "word", "words", "caption", "captions", "typography",
              "font", "logo", "logos", "signature", "watermark", "billboard", "signboard", "written", "writing",
              "headline", "slogan", "title text", "subtitle", "subtitles", "graffiti tag", "saying", "that says",
              "which says", "that reads", "which reads", "spelling", "spelled", "spells", "inscription",
              "inscribed", "quote", "quotes")
# A real person is asked for by role ("a celebrity") or by name in a frame that names people.
PERSON_ROLE = _words("celebrity", "celebrities", "famous person", "famous people", "idol member", "politician",
                     "president", "actor", "actress", "influencer", "k-pop star", "kpop star", "pop star")
_NOT_A_NAME = r"(?!(?:a|an|the|my|our|your|his|her|their|some|two|three|this|that|these|those)\b)"
_NAME = r"([a-z][a-z'.-]+)\s+([a-z][a-z.-]+)"
PERSON_FRAMED = re.compile(
    r"(?<![a-z])(?:(?:photo|picture|portrait|image|painting|drawing|face|likeness|statue)s?\s+of"
    r"|in\s+the\s+style\s+of|style\s+of|inspired\s+by|featuring|feat\.?|ft\.|starring)\s+" + _NOT_A_NAME + _NAME)
PERSON_POSSESSIVE = re.compile(
    r"(?<![a-z])" + _NOT_A_NAME + r"([a-z][a-z.-]+)\s+([a-z][a-z.-]+)'s\s+(?:face|portrait|likeness|photo|body)")
KOREAN_NAME = re.compile(
    r"(?<![a-z])(kim|lee|choi|jung|jeong|kang|yoon|jang|lim|shin|kwon|hwang|ahn|jeon|baek|seo|cho)"
    r"\s+([a-z]{2,}(?:-[a-z]+)?)(?![a-z])")
URL = re.compile(r"(?:https?://|www\.|\b[a-z0-9-]+\.(?:com|net|org|io|kr|co|ly|me|app|xyz)\b)")
# Second words after a frame that make it an ordinary scene or a generic figure, not a name.
_NOT_NAMES = frozenset("""
at in on by with and under over near from night day sunset sunrise rain snow sea city sky light lights
flowers flower trees tree roads road cars car street streets house houses moon stars star clouds water
man woman girl boy child kid baby lady person people mother father friend lover stranger dancer singer
cat dog bird angel ghost robot painting paintings art artist movement era school
""".split())
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})


def normalise(text: str) -> str:
    """NFKC, invisible format characters (Unicode category Cf) dropped, case folded, one space."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    return " ".join(text.casefold().split())


def _named_person(text: str) -> str | None:
    for pattern in (PERSON_FRAMED, PERSON_POSSESSIVE):
        for m in pattern.finditer(text):
            if m.group(2).rstrip(".") not in _NOT_NAMES and m.group(1) not in _NOT_NAMES:
                return m.group(0)
    m = KOREAN_NAME.search(text)
    return m.group(0) if m else None


def policy_violations(text: str) -> list[str]:
    """Why ``text`` may not go into an image prompt (empty list: it may)."""
    if not isinstance(text, str):
        return [f"not text ({type(text).__name__})"]
    plain = normalise(text)
    variants = dict.fromkeys([plain, plain.translate(_LEET)])
    reasons = []
    for pattern, what in ((SEXUAL, "sexual content"), (TEXT, "asks for text or lettering")):
        if found := next((m.group(0) for v in variants if (m := pattern.search(v))), None):
            reasons.append(f"{what} ({found!r})")
    if found := next((m.group(0) for v in variants if (m := PERSON_ROLE.search(v))), None):
        reasons.append(f"depicts a real person ({found!r})")
    elif found := next((n for v in variants if (n := _named_person(v))), None):
        reasons.append(f"names a person ({found!r})")
    if (m := URL.search(plain)) is not None:
        reasons.append(f"contains a link ({m.group(0)!r})")
    return reasons
