"""The colour and mood words of Sleeve's prompts, as pixels: the shared meaning of the offline world.

The procedural covers the base model learns from (:mod:`simulation.art`) paint ``midnight blue``
with these RGB values, and the simulated users (:mod:`simulation.taste`) judge "does this cover
use the prompt's colours" with the same table, as people who agree on what a colour name means.
Every colour and mood the offline labeller can emit (``inference.lexicon``) is listed; a test
checks that none is missing.
"""

from __future__ import annotations

import functools
import re

COLOURS: dict[str, tuple[int, int, int]] = {
    "amber": (255, 176, 40), "aqua": (60, 220, 210), "black": (16, 16, 20), "blue": (40, 80, 220),
    "burnt orange": (204, 85, 20), "charcoal": (54, 58, 64), "cool grey": (140, 148, 160), "cream": (250, 240, 210),
    "crimson": (200, 20, 50), "cyan": (20, 220, 240), "deep blue": (20, 40, 140), "deep brown": (80, 45, 25),
    "deep purple": (70, 20, 110), "deep red": (140, 10, 20), "deep violet": (80, 30, 150),
    "dusky blue": (70, 90, 140), "dusty rose": (200, 140, 150), "earth brown": (120, 80, 50),
    "electric blue": (30, 120, 255), "electric magenta": (255, 20, 200), "faded teal": (100, 160, 160),
    "forest green": (30, 100, 40), "gold": (230, 190, 50), "green": (40, 170, 60), "grey": (128, 128, 128),
    "hot pink": (255, 60, 160), "icy blue": (180, 220, 250), "lavender": (190, 170, 230), "lilac": (200, 160, 220),
    "magenta": (220, 30, 180), "midnight blue": (20, 25, 80), "muted blue": (90, 110, 150),
    "muted teal": (80, 130, 130), "orange": (250, 130, 30), "pale green": (170, 230, 170),
    "pale grey": (210, 210, 215), "pale pink": (250, 200, 210), "pale teal": (160, 210, 205), "peach": (255, 190, 150),
    "pink": (250, 130, 180), "purple": (130, 40, 170), "red": (220, 30, 30), "rose pink": (240, 110, 150),
    "sage green": (150, 175, 130), "sand beige": (220, 200, 160), "sepia": (150, 110, 70), "silver": (192, 196, 204),
    "sky blue": (120, 190, 240), "slate grey": (100, 110, 125), "soft grey": (175, 175, 180),
    "steel grey": (110, 120, 130), "sunny yellow": (255, 220, 40), "turquoise": (40, 200, 190),
    "violet": (140, 60, 210), "warm beige": (225, 195, 160), "warm gold": (240, 180, 60), "warm red": (220, 60, 40),
    "white": (245, 245, 245), "yellow": (245, 220, 30),
}

# Mood words -> (brightness factor, saturation factor, contrast factor): how a mood lights a cover.
DARK, BRIGHT, SOFT, VIVID = (0.62, 0.8, 1.0), (1.2, 1.1, 1.05), (1.05, 0.75, 0.7), (1.0, 1.3, 1.25)
MOODS: dict[str, tuple[float, float, float]] = {
    **dict.fromkeys(("dark", "ominous", "melancholic", "lonely", "solitary", "heartbroken", "sleepy", "smoky",
                     "intense", "cold", "sensual"), DARK),
    **dict.fromkeys(("joyful", "cheerful", "energetic", "radiant", "festive", "giddy", "glittering", "triumphant",
                     "hopeful", "youthful", "free-spirited", "warm"), BRIGHT),
    **dict.fromkeys(("dreamy", "hazy", "serene", "peaceful", "gentle", "tender", "comforting", "nostalgic",
                     "wistful", "bittersweet", "timeless", "atmospheric", "romantic"), SOFT),
    **dict.fromkeys(("bold", "wild", "glamorous", "passionate", "hypnotic", "restless", "rebellious", "confident",
                     "cinematic"), VIVID),
}

_SPLIT = re.compile(r",|\band\b")


def colour_rgb(name: str) -> tuple[int, int, int] | None:
    """RGB of a colour name ("Midnight  Blue" works), or None when the table does not know it."""
    return COLOURS.get(" ".join(name.lower().split()))


def prompt_colours(prompt: str) -> list[tuple[int, int, int]]:
    """The colours a prompt names in its "... colour palette" phrase (or anywhere, when it has
    none), in order. Longest names first, so "deep blue" is not read as "blue"."""
    return list(_prompt_colours(prompt))


@functools.lru_cache(maxsize=4096)  # every user rates the same few prompts: parse each once
def _prompt_colours(prompt: str) -> tuple[tuple[int, int, int], ...]:
    text = prompt.lower()
    if "colour palette" in text:
        text = text.split("colour palette")[0].rsplit(" mood,", 1)[-1]
    found: list[tuple[int, int, int]] = []
    for part in _SPLIT.split(text):
        words = " ".join(part.split())
        for name in sorted(COLOURS, key=len, reverse=True):
            if re.search(rf"\b{re.escape(name)}\b", words):
                found.append(COLOURS[name])
                words = words.replace(name, " ")
    return tuple(found)
