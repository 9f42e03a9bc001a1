"""The content policy every prompt term obeys, whoever wrote it: an LLM's labels, a user's song
title or keywords typed into the service, a product description.

A cover may not depict a real, named person, sexual content, text or lettering, or a link.
Asking a model not to is not enough (lyrics can carry instructions): the rules are enforced on
the output. :func:`policy_violations` returns the reasons a text breaks the policy (empty: it
may be used); callers reject the text or fall back to the offline labeller and keep the reason.
"""

from __future__ import annotations

import re

_WORD = r"(?<![a-z0-9])({})(?![a-z0-9])"


def _words(*words: str) -> re.Pattern:
    return re.compile(_WORD.format("|".join(sorted(words, key=len, reverse=True))), re.IGNORECASE)


SEXUAL = _words("nude", "nudes", "naked", "nsfw", "porn", "porno", "pornographic", "sexy", "sex", "sexual",
                "erotic", "explicit", "topless", "lingerie", "hentai", "xxx", "fetish", "strip tease", "striptease")
# Requests for words in the picture: SDXL renders them as garbled lettering on a cover.
TEXT = _words("text", "texts", "lettering", "letters", "words", "caption", "captions", "typography", "font",
              "logo", "logos", "signature", "watermark", "billboard", "signboard", "sign saying", "written",
              "writing", "headline", "slogan", "title text", "subtitle", "subtitles", "graffiti tag")
# A real person is asked for by role ("a celebrity") or by name after a depiction verb.
PERSON_ROLE = _words("celebrity", "celebrities", "famous person", "famous people", "idol member", "politician",
                     "president", "actor", "actress", "influencer", "k-pop star", "kpop star", "pop star")
PERSON_NAMED = re.compile(
    r"(?<![a-z])(?:photo|picture|portrait|image|painting|drawing|face|likeness)s?\s+of\s+"
    r"(?!a\b|an\b|the\b|my\b|our\b|your\b|his\b|her\b|their\b|some\b|two\b|three\b)"
    r"([a-z][a-z'.-]+)\s+([a-z][a-z'.-]+)", re.IGNORECASE)
URL = re.compile(r"(?:https?://|www\.|\b[a-z0-9-]+\.(?:com|net|org|io|kr|co|ly|me|app|xyz)\b)", re.IGNORECASE)
# Second words of PERSON_NAMED that make "photo of <x> <y>" an ordinary scene, not a name.
_SCENE_WORDS = frozenset("""
at in on by with and under over near from night day sunset sunrise rain snow sea city sky light lights
flowers flower trees tree roads road cars car street streets house houses moon stars star clouds water
""".split())


def policy_violations(text: str) -> list[str]:
    """Why ``text`` may not go into an image prompt (empty list: it may)."""
    if not isinstance(text, str):
        return [f"not text ({type(text).__name__})"]
    reasons = []
    if (m := SEXUAL.search(text)) is not None:
        reasons.append(f"sexual content ({m.group(0)!r})")
    if (m := TEXT.search(text)) is not None:
        reasons.append(f"asks for text or lettering ({m.group(0)!r})")
    if (m := PERSON_ROLE.search(text)) is not None:
        reasons.append(f"depicts a real person ({m.group(0)!r})")
    elif (m := PERSON_NAMED.search(text)) is not None and m.group(2).lower() not in _SCENE_WORDS:
        reasons.append(f"names a person ({m.group(0)!r})")
    if (m := URL.search(text)) is not None:
        reasons.append(f"contains a link ({m.group(0)!r})")
    return reasons
