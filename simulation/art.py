"""Procedurally drawn, text-free album covers that follow their labels: the base model's teacher.

``draw_cover(labels, rng)`` paints a cover from the same labels the offline labeller gives a song
(objects, moods, palette, style, genre): the palette's colours make the background gradient and
the subject, the first object picks the subject's motif (a sun disc, a skyline, waves, peaks,
a road, rain, flowers, scattered stars, a framed object), a second object adds a smaller motif,
the moods set brightness, saturation and contrast, the style adds grain, softness or glow.
What the labels leave open varies from picture to picture, as it does between photographers:
where the subject sits (centred or not) and how big it is, how bright, vivid and contrasty the
whole picture is, and which palette colour plays which role. That spread is what a model trained
on these covers can later be steered within by its users' ratings.

``random_labels(rng)`` draws labels from the offline labeller's vocabulary, so the prompts the
base model learns (``inference.prompts.build_prompt``) are exactly the production prompt format.
"""

from __future__ import annotations

import colorsys
import math
import random

from PIL import Image, ImageDraw, ImageFilter

from simulation.palette import COLOURS, MOODS

SUPERSAMPLE = 2  # draw at 2x and downscale: smooth edges at 64 px

MOTIFS = {
    "disc": ("sun", "moon", "planet", "earth", "sunset", "dawn", "sunlight", "moonlight", "clock", "morning",
             "balloons", "candle", "fire", "coffee", "crown", "diamonds"),
    "stars": ("stars", "starlight", "night sky", "fireflies", "snowflakes", "snow", "city lights", "party lights",
              "neon lights", "fireworks", "outer space", "night", "winter", "snowman"),
    "skyline": ("city", "street", "alley", "rooftop", "city rooftop at night", "city skyline at dusk", "neon city",
                "empty street at dusk", "bridge", "stairs", "cafe", "late-night bar", "dim lounge", "classroom",
                "room", "quiet bedroom window", "quiet room with a window", "window", "stage", "pastel stage",
                "dance floor", "amusement park", "playground", "airport", "bus stop"),
    "waves": ("ocean", "waves", "moonlit sea", "river", "lake", "beach", "island", "seaside harbour", "sand",
              "summer"),
    "peaks": ("mountains", "storm over mountains", "trees", "forest", "lone tree on a hill", "vast landscape",
              "desert", "field of tall grass", "autumn", "spring"),
    "road": ("road", "highway", "open road", "open highway", "country road", "car", "bus", "train", "bicycle",
             "airplane"),
    "rain": ("rain", "rain shower", "tears", "umbrella", "wind", "fog", "smoke", "clouds", "sky", "shadow"),
    "flowers": ("flowers", "roses", "petals", "cherry blossoms", "butterfly", "bird", "rainbow"),
}
MOTIF_OF = {word: motif for motif, words in MOTIFS.items() for word in words}
DEFAULT_MOTIF = "frame"  # anything else (guitar, letter, cat, mirror ...): a framed object in the middle

GRAINY = ("grainy", "film", "gritty", "risograph", "etching", "vintage")
SOFT = ("soft-focus", "dreamy", "ethereal", "watercolor", "matte", "anime")
GLOW = ("neon", "glossy", "high-contrast", "vivid", "synthwave", "pop art")

# Words the random labels draw from (the offline labeller's vocabulary, see inference.lexicon).
OBJECT_WORDS = sorted(MOTIF_OF) + ["guitar", "piano", "letter", "photograph", "mirror", "cat", "dog", "puppy",
                                   "bed", "glass", "earth"]


def motif_for(objects: list[str]) -> str:
    for word in objects:
        if word in MOTIF_OF:
            return MOTIF_OF[word]
    return DEFAULT_MOTIF


def mood_effect(moods: list[str]) -> tuple[float, float, float]:
    """(brightness, saturation, contrast) factors of the moods, combined multiplicatively."""
    b = s = c = 1.0
    for mood in moods:
        mb, ms, mc = MOODS.get(mood, (1.0, 1.0, 1.0))
        b, s, c = b * mb, s * ms, c * mc
    return b, s, c


def _palette(names: list[str]) -> list[tuple[int, int, int]]:
    colours = [COLOURS[n] for n in names if n in COLOURS]
    return colours or [COLOURS["muted teal"], COLOURS["warm beige"]]


def _shade(rgb, factor: float) -> tuple[int, int, int]:
    return tuple(max(0, min(255, int(v * factor))) for v in rgb)


def _gradient(size: int, top, bottom, radial: bool) -> Image.Image:
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    if radial:
        image.paste(bottom, (0, 0, size, size))
        steps = 24
        for i in range(steps):
            t = i / (steps - 1)
            r = size * 0.75 * (1 - t)
            colour = tuple(int(b + (a - b) * t) for a, b in zip(top, bottom, strict=True))
            draw.ellipse([size / 2 - r, size / 2 - r, size / 2 + r, size / 2 + r], fill=colour)
        return image.filter(ImageFilter.GaussianBlur(size / 24))
    for y in range(size):
        t = y / (size - 1)
        draw.line([(0, y), (size, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    return image


def _draw_motif(draw: ImageDraw.ImageDraw, motif: str, cx: float, cy: float, r: float, colour, size: int,
                rng: random.Random, small: bool = False) -> None:
    if motif == "disc":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=colour)
    elif motif == "stars":
        for _ in range(6 if small else 14):
            x, y = rng.gauss(cx, r * 1.1), rng.gauss(cy, r * 1.1)
            s = rng.uniform(0.03, 0.07) * size
            draw.polygon([(x, y - s), (x + s / 3, y), (x, y + s), (x - s / 3, y)], fill=colour)
            draw.polygon([(x - s, y), (x, y - s / 3), (x + s, y), (x, y + s / 3)], fill=colour)
    elif motif == "skyline":
        x, base = cx - r * 1.3, cy + r
        while x < cx + r * 1.3:
            w = rng.uniform(0.22, 0.4) * r
            h = rng.uniform(0.6, 1.9) * r
            draw.rectangle([x, base - h, x + w, base], fill=colour)
            x += w * 1.08
        draw.rectangle([cx - r * 1.35, base, cx + r * 1.35, base + r * 0.12], fill=colour)
    elif motif == "waves":
        for k in range(3 if small else 5):
            y0 = cy - r * 0.6 + k * r * 0.38
            points = [(cx - r * 1.5 + t * r * 0.15, y0 + math.sin(t * 0.9 + k) * r * 0.12) for t in range(21)]
            draw.line(points, fill=colour, width=max(2, int(r * 0.16)))
    elif motif == "peaks":
        for k in range(2 if small else 3):
            px = cx + (k - 1) * r * 0.8
            h = r * rng.uniform(1.0, 1.7)
            draw.polygon([(px - r * 0.9, cy + r), (px, cy + r - h), (px + r * 0.9, cy + r)], fill=colour)
    elif motif == "road":
        draw.polygon([(cx - r * 0.12, cy - r), (cx + r * 0.12, cy - r), (cx + r * 1.1, cy + r), (cx - r * 1.1, cy + r)],
                     fill=colour)
    elif motif == "rain":
        for _ in range(10 if small else 22):
            x, y = rng.uniform(cx - r * 1.4, cx + r * 1.4), rng.uniform(cy - r * 1.2, cy + r * 1.2)
            draw.line([(x, y), (x - r * 0.12, y + r * 0.35)], fill=colour, width=max(1, int(r * 0.06)))
    elif motif == "flowers":
        for _ in range(3 if small else 5):
            fx, fy = rng.gauss(cx, r * 0.45), rng.gauss(cy, r * 0.45)
            pr = r * rng.uniform(0.18, 0.3)
            for a in range(5):
                ang = a * 2 * math.pi / 5
                px, py = fx + math.cos(ang) * pr, fy + math.sin(ang) * pr
                draw.ellipse([px - pr * 0.7, py - pr * 0.7, px + pr * 0.7, py + pr * 0.7], fill=colour)
    else:  # frame: a framed object
        draw.rectangle([cx - r * 0.8, cy - r, cx + r * 0.8, cy + r], outline=colour, width=max(2, int(r * 0.15)))
        draw.ellipse([cx - r * 0.4, cy - r * 0.4, cx + r * 0.4, cy + r * 0.4], fill=colour)


def _adjust(image: Image.Image, brightness: float, saturation: float, contrast: float) -> Image.Image:
    import numpy as np

    rgb = np.asarray(image, dtype=np.float32) / 255.0
    mean = rgb.mean(axis=(0, 1), keepdims=True)
    grey = rgb.mean(axis=2, keepdims=True)
    rgb = grey + (rgb - grey) * saturation
    rgb = mean + (rgb - mean) * contrast
    rgb = rgb * brightness
    return Image.fromarray((np.clip(rgb, 0, 1) * 255).astype("uint8"))


def draw_cover(labels: dict, rng: random.Random, size: int = 64) -> Image.Image:
    """A cover for ``labels`` (``objects``, ``moods``, ``palette``, ``style``; see module doc)."""
    big = size * SUPERSAMPLE
    colours = _palette(labels.get("palette", []))
    roles = list(colours)
    if len(roles) > 1 and rng.random() < 0.3:
        roles = roles[1:] + roles[:1]  # another palette colour leads
    top = roles[0]
    bottom = roles[1] if len(roles) > 1 else _shade(roles[0], 0.45)
    subject = roles[2] if len(roles) > 2 else _shade(roles[-1], 1.6 if sum(roles[-1]) < 380 else 0.4)
    image = _gradient(big, top, _shade(bottom, rng.uniform(0.55, 0.9)), radial=rng.random() < 0.3)
    draw = ImageDraw.Draw(image)
    objects = labels.get("objects", [])
    style = labels.get("style", "")
    minimal = "minimal" in style
    centred = rng.random() < 0.5
    cx = big / 2 if centred else big / 2 + rng.choice((-1, 1)) * rng.uniform(0.18, 0.3) * big
    cy = big / 2 if centred else big / 2 + rng.choice((-1, 1)) * rng.uniform(0.12, 0.26) * big
    radius = big * rng.uniform(0.16, 0.3)
    if len(objects) > 1 and not minimal:
        second = motif_for(objects[1:2])
        _draw_motif(draw, second, rng.uniform(0.25, 0.75) * big, rng.uniform(0.2, 0.5) * big, big * 0.12,
                    _shade(subject, 0.75), big, rng, small=True)
    _draw_motif(draw, motif_for(objects), cx, cy, radius, subject, big, rng)
    image = image.resize((size, size), Image.Resampling.LANCZOS)

    b, s, c = mood_effect(labels.get("moods", []))
    if any(w in style for w in GLOW):
        s, c = s * 1.15, c * 1.15
    if any(w in style for w in SOFT):
        image = image.filter(ImageFilter.GaussianBlur(size / 64))
        c *= 0.85
    # What the prompt leaves open: each picture is lit a little differently.
    b *= rng.uniform(0.7, 1.3)
    s *= rng.uniform(0.5, 1.4)
    c *= rng.uniform(0.7, 1.3)
    image = _adjust(image, b, s, c)
    if any(w in style for w in GRAINY):
        import numpy as np

        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 6, (size, size, 1))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) + noise, 0, 255).astype("uint8"))
    return image


def random_labels(rng: random.Random) -> dict:
    """Labels like the offline labeller's: 1-3 objects, 1-2 moods, 1-3 colours, a style, a genre."""
    from inference import lexicon

    styles = sorted(set(lexicon.GENRE_STYLE.items()))
    genre, style = rng.choice(styles)
    if rng.random() < 0.15:
        genre, style = rng.choice(sorted(set(lexicon.GENRES.values()))), lexicon.DEFAULT_STYLE
    return {"objects": rng.sample(OBJECT_WORDS, rng.randint(1, 3)),
            "moods": rng.sample(sorted(MOODS), rng.randint(1, 2)),
            "palette": rng.sample(sorted(COLOURS), rng.randint(1, 3)),
            "style": style, "genre": genre}


def colour_hue(rgb) -> float:
    return colorsys.rgb_to_hsv(*(v / 255 for v in rgb))[0]
