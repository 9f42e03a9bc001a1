"""Hidden tastes: how a simulated user rates a cover, from its pixels and its prompt.

A taste is a JSON file of components (see ``simulation/tastes/*.json``); a new profile needs no
code. Each component scores one property of the picture in [0, 1]:

=================  ==========================================================================
kind               score
=================  ==========================================================================
brightness         closeness of the mean luma to ``target`` (Gaussian of ``width``)
saturation         closeness of the mean HSV saturation to ``target``
contrast           closeness of the luma's standard deviation to ``target``
hue                closeness of the saturation-weighted mean hue to ``target`` (0..1, circular)
centred            a subject that stands out from the background, near the middle
minimal            few edges: ``exp(-edge density / scale)``
palette_fidelity   every colour the prompt names covers part of the picture
=================  ==========================================================================

The taste's score is the weighted mean of its components; a user's rating is
``round(offset + scale * score + bias + noise)`` clipped to 1..5 stars. Users differ: each has
the component weights scaled by a log-normal factor (``weight_sd``), each target moved by the
component's ``jitter``, a rating bias (``bias_sd``) and per-rating noise (``noise_sd``), all
drawn from the user's name, so a population is a pure function of the taste file.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from simulation.palette import prompt_colours

TASTES_DIR = Path(__file__).resolve().parent / "tastes"
DEFAULT_TASTE = TASTES_DIR / "default.json"
KINDS = ("brightness", "saturation", "contrast", "hue", "centred", "minimal", "palette_fidelity")
TARGETED = ("brightness", "saturation", "contrast", "hue")
RATING_DEFAULTS = {"offset": 1.0, "scale": 4.0, "bias_sd": 0.3, "noise_sd": 0.5, "weight_sd": 0.25}


class TasteError(ValueError):
    """A taste file that cannot be used; the message names the file and the field."""


def unit_normal(*parts: object) -> float:
    """A standard normal number that is a pure function of ``parts``."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    u1 = (int.from_bytes(digest[:8], "big") + 1) / (2**64 + 2)
    u2 = int.from_bytes(digest[8:16], "big") / 2**64
    return math.sqrt(-2 * math.log(u1)) * math.cos(2 * math.pi * u2)


@dataclass(frozen=True)
class Features:
    """What the components look at, computed once per image."""

    brightness: float
    saturation: float
    contrast: float
    hue: float | None  # None: too grey to have one
    subject_offset: float  # 0 = a distinct subject in the middle .. 1 = none, or in a corner
    edges: float
    pixels: object = field(repr=False)  # H x W x 3 floats in [0, 1]
    # palette_fidelity per prompt: a function of the picture and the prompt, not of the user,
    # so 60 users rating one cover compute it once
    _palette: dict = field(default_factory=dict, repr=False, compare=False)

    def palette_fidelity(self, prompt: str) -> float | None:
        if prompt not in self._palette:
            self._palette[prompt] = palette_fidelity(self.pixels, prompt)
        return self._palette[prompt]

    @classmethod
    def of(cls, image) -> Features:
        import numpy as np

        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        hsv = np.asarray(image.convert("RGB").convert("HSV"), dtype=np.float32) / 255.0
        luma = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        sat = hsv[..., 1]
        weight = sat.sum()
        hue = None
        if sat.mean() > 0.12:
            angle = hsv[..., 0] * 2 * math.pi
            hue = (math.atan2(float((np.sin(angle) * sat).sum() / weight),
                              float((np.cos(angle) * sat).sum() / weight)) / (2 * math.pi)) % 1.0
        edges = float(np.abs(np.diff(luma, axis=0)).mean() + np.abs(np.diff(luma, axis=1)).mean())
        return cls(float(luma.mean()), float(sat.mean()), float(luma.std()), hue, _subject_offset(rgb), edges, rgb)


def _subject_offset(rgb) -> float:
    """How far the picture's subject (pixels unlike its border) sits from the centre, over half
    the diagonal; 1.0 when nothing stands out (under 4 % or over 60 % of the picture)."""
    import numpy as np

    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    mask = np.linalg.norm(rgb - background, axis=-1) > 0.25
    share = mask.mean()
    if share < 0.04 or share > 0.6:
        return 1.0
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    dy, dx = ys.mean() - (h - 1) / 2, xs.mean() - (w - 1) / 2
    return float(min(1.0, math.hypot(dx, dy) / math.hypot(w / 2, h / 2)))


def palette_fidelity(pixels, prompt: str) -> float | None:
    """Mean over the prompt's colours of how well the picture shows each: the distance of the
    closest 10 % of pixels to that colour, as a Gaussian score. None: the prompt names none."""
    import numpy as np

    colours = prompt_colours(prompt)
    if not colours:
        return None
    flat = pixels.reshape(-1, 3)
    scores = []
    for colour in colours:
        distance = np.linalg.norm(flat - np.asarray(colour, dtype=np.float32) / 255.0, axis=1)
        near = float(np.percentile(distance, 10))
        scores.append(math.exp(-0.5 * (near / 0.18) ** 2))
    return float(np.mean(scores))


def _gauss(x: float, target: float, width: float) -> float:
    return math.exp(-0.5 * ((x - target) / width) ** 2)


@dataclass(frozen=True)
class Component:
    kind: str
    weight: float = 1.0
    target: float | None = None
    width: float = 0.2
    scale: float = 0.1
    jitter: float = 0.0

    def score(self, f: Features, prompt: str, target: float | None) -> float | None:
        if self.kind in ("brightness", "saturation", "contrast"):
            return _gauss(getattr(f, self.kind), target, self.width)
        if self.kind == "hue":
            if f.hue is None:
                return 0.5
            d = abs(f.hue - target) % 1.0
            return _gauss(min(d, 1 - d), 0.0, self.width)
        if self.kind == "centred":
            return 1.0 - f.subject_offset
        if self.kind == "minimal":
            return math.exp(-f.edges / self.scale)
        return f.palette_fidelity(prompt)


@dataclass(frozen=True)
class Taste:
    name: str
    description: str
    components: tuple[Component, ...]
    users: int = 60
    rating: dict = field(default_factory=lambda: dict(RATING_DEFAULTS))
    source: str = ""

    @classmethod
    def load(cls, path: str | Path) -> Taste:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise TasteError(f"taste file {path} does not exist; the shipped ones are in {TASTES_DIR}") from None
        except json.JSONDecodeError as exc:
            raise TasteError(f"taste file {path} is not JSON: {exc}") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "<dict>") -> Taste:
        def bad(message: str) -> TasteError:
            return TasteError(f"taste {source}: {message}")

        if not isinstance(data, dict):
            raise bad("must be a JSON object")
        unknown = sorted(set(data) - {"name", "description", "users", "components", "rating"})
        if unknown:
            raise bad(f"unknown field(s) {unknown}")
        name = data.get("name")
        if not isinstance(name, str) or not name.strip():
            raise bad("needs a non-empty 'name'")
        raw = data.get("components")
        if not isinstance(raw, list) or not raw:
            raise bad("needs a non-empty 'components' list")
        components = []
        fields = set(Component.__dataclass_fields__)
        for n, item in enumerate(raw):
            if not isinstance(item, dict) or item.get("kind") not in KINDS:
                raise bad(f"components[{n}].kind must be one of {', '.join(KINDS)}")
            extra = sorted(set(item) - fields)
            if extra:
                raise bad(f"components[{n}] has unknown field(s) {extra}")
            for key in ("weight", "target", "width", "scale", "jitter"):
                if key in item and (isinstance(item[key], bool) or not isinstance(item[key], int | float)):
                    raise bad(f"components[{n}].{key} must be a number")
            component = Component(**item)
            if component.kind in TARGETED and component.target is None:
                raise bad(f"components[{n}] ({component.kind}) needs a 'target'")
            if component.weight <= 0 or component.width <= 0 or component.scale <= 0 or component.jitter < 0:
                raise bad(f"components[{n}]: weight, width and scale must be > 0 and jitter >= 0")
            components.append(component)
        rating = {**RATING_DEFAULTS, **(data.get("rating") or {})}
        if set(rating) - set(RATING_DEFAULTS):
            raise bad(f"rating has unknown field(s) {sorted(set(rating) - set(RATING_DEFAULTS))}")
        users = data.get("users", 60)
        if isinstance(users, bool) or not isinstance(users, int) or users < 1:
            raise bad(f"users must be a positive whole number, got {users!r}")
        return cls(name.strip(), str(data.get("description", "")), tuple(components), users, rating, source)


@dataclass(frozen=True)
class UserTaste:
    """One user's version of a taste: own weights, targets, bias and noise."""

    name: str
    taste: Taste
    weights: tuple[float, ...]
    targets: tuple[float | None, ...]
    bias: float

    @classmethod
    def draw(cls, taste: Taste, name: str) -> UserTaste:
        sd = taste.rating["weight_sd"]
        weights = tuple(c.weight * math.exp(sd * unit_normal(taste.name, name, "weight", i))
                        for i, c in enumerate(taste.components))
        targets = tuple(None if c.target is None else c.target + c.jitter * unit_normal(taste.name, name, "target", i)
                        for i, c in enumerate(taste.components))
        return cls(name, taste, weights, targets, taste.rating["bias_sd"] * unit_normal(taste.name, name, "bias"))

    def score(self, features: Features, prompt: str) -> float:
        """The weighted mean of the components (those that apply to this prompt)."""
        total = weight_sum = 0.0
        for component, weight, target in zip(self.taste.components, self.weights, self.targets, strict=True):
            value = component.score(features, prompt, target)
            if value is not None:
                total, weight_sum = total + weight * value, weight_sum + weight
        return total / weight_sum if weight_sum else 0.5

    def rate(self, features: Features, prompt: str, image_key: str) -> int:
        """1..5 stars; the noise is a pure function of (user, image)."""
        r = self.taste.rating
        raw = r["offset"] + r["scale"] * self.score(features, prompt) + self.bias \
            + r["noise_sd"] * unit_normal(self.taste.name, self.name, "noise", image_key)
        return int(min(5, max(1, round(raw))))
