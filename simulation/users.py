"""The simulated population: who they are, when they ask for covers, and the held-out yardstick.

Everything is a pure function of the names and the week, never of a global RNG or the clock,
so every strategy of one run meets exactly the same users making exactly the same requests.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

from simulation.taste import Features, Taste, UserTaste

IMAGES_PER_REQUEST = 4
REQUEST_DAYS = 4.9  # users ask from Monday 03:00 to Saturday 00:36; batch_generate renders Saturday 02:00
HELDOUT_SEED = 20261116


def unit(*parts: object) -> float:
    """A number in [0, 1) that is a pure function of ``parts``."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Population:
    taste: Taste
    users: tuple[UserTaste, ...]

    @classmethod
    def of(cls, taste: Taste, n: int | None = None) -> Population:
        n = taste.users if n is None else n
        return cls(taste, tuple(UserTaste.draw(taste, f"sim-{taste.name}-{i:03d}") for i in range(n)))

    @property
    def names(self) -> list[str]:
        return [u.name for u in self.users]

    def requests(self, week: int, week_start: datetime, songs: list[dict], activity: float) -> list[tuple]:
        """``(user, song, at)`` for the week: each user asks, with probability ``activity``, for
        covers of one song, at some time in the first ~5 days of the week."""
        songs = sorted(songs, key=lambda s: s["song_id"])
        out = []
        for user in self.users:
            if unit("active", user.name, week) >= activity:
                continue
            song = songs[int(unit("song", user.name, week) * len(songs))]
            at = week_start + timedelta(seconds=int(unit("at", user.name, week) * REQUEST_DAYS * 86400))
            out.append((user, song, at))
        return sorted(out, key=lambda r: (r[2], r[0].name))


@dataclass(frozen=True)
class HeldOutItem:
    key: str
    prompt: str
    negative: str
    seed: int


def heldout_set(prompts: int = 16, seeds: int = 3, exclude: set[str] = frozenset()) -> list[HeldOutItem]:
    """A fixed set of prompts (production format, labels drawn from the labeller's vocabulary,
    none a catalogue song's) x seeds: the covers every strategy's model is judged on each week.
    No user requests them, so no model ever trains on them."""
    from inference.prompts import build_prompt
    from simulation.art import random_labels

    rng = random.Random(HELDOUT_SEED)
    items: list[HeldOutItem] = []
    while len(items) < prompts * seeds:
        prompt = build_prompt(random_labels(rng))
        if prompt.positive in exclude or any(i.prompt == prompt.positive for i in items):
            continue
        n = len(items) // seeds
        items += [HeldOutItem(f"heldout-{n:02d}-{s}", prompt.positive, prompt.negative, 1000 + s) for s in range(seeds)]
    return items


def judge(population: Population, images: list, items: list[HeldOutItem]) -> dict:
    """Every user rates every held-out cover. The rating noise is keyed by the held-out slot
    (prompt, seed), not by the model, so two models' covers in the same slot meet the same
    mood of the same user: the comparison between strategies carries no extra noise."""
    ratings = []
    for image, item in zip(images, items, strict=True):
        features = Features.of(image)
        ratings += [user.rate(features, item.prompt, item.key) for user in population.users]
    return {"mean_rating": round(sum(ratings) / len(ratings), 4),
            "share_4plus": round(sum(r >= 4 for r in ratings) / len(ratings), 4), "ratings": len(ratings)}
