"""Synthetic product photos, drawn procedurally, with their true masks: the demo's, the
benchmark's and the tests' products (no real product, brand or person).

Each photo shows one simple shaded object (a mug with a handle, a glass bottle, a cream jar, a
ball) on a plain studio backdrop with light fall-off, sensor noise and the object's own soft
cast shadow (which is backdrop, not product: a matte that takes it in has grown). Drawn at 4x
and averaged down, so edges are anti-aliased like a camera's and the true alpha is known.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

SS = 4  # supersampling factor


@dataclass(frozen=True)
class SampleProduct:
    key: str
    info: dict
    photo: bytes  # the upload's bytes (JPEG or PNG)
    truth: np.ndarray  # HxW float32 alpha of the object in [0, 1]
    format: str


def _grid(size: int):
    n = size * SS
    y, x = np.mgrid[0:n, 0:n].astype(np.float32)
    return (x + 0.5) / n, (y + 0.5) / n


def _down(a: np.ndarray) -> np.ndarray:
    n = a.shape[0] // SS
    return a.reshape(n, SS, n, SS, *a.shape[2:]).mean(axis=(1, 3))


def _cylinder_shade(x, left, right, light=0.35):
    """Lambert-ish shading across a vertical cylinder lit from the upper left."""
    t = np.clip((x - left) / max(right - left, 1e-6), 0, 1) * 2 - 1  # -1 .. 1 across the body
    normal = np.sqrt(np.clip(1 - t * t, 0, 1))
    shade = 0.55 + 0.45 * np.clip(normal * 0.85 - t * light, 0, 1)
    return shade + 0.35 * np.exp(-((t + 0.45) / 0.08) ** 2)  # a specular streak


def _mug(x, y):
    body = (np.abs(x - 0.47) < 0.17) & (y > 0.3) & (y < 0.74)
    body |= (((x - 0.47) / 0.17) ** 2 + ((y - 0.74) / 0.035) ** 2 < 1)  # rounded base
    ring = ((x - 0.66) / 0.1) ** 2 + ((y - 0.5) / 0.12) ** 2
    handle = (ring < 1) & (ring > 0.45) & (x > 0.62)
    shade = np.where(body, _cylinder_shade(x, 0.3, 0.64), 0.75 + 0.2 * (y < 0.5))
    rim = body & (y < 0.33)
    return body | handle, np.where(rim, shade * 0.8, shade)


def _bottle(x, y):
    body = (np.abs(x - 0.5) < 0.12) & (y > 0.38) & (y < 0.82)
    shoulder = (((x - 0.5) / 0.12) ** 2 + ((y - 0.38) / 0.1) ** 2 < 1) & (y <= 0.38)
    neck = (np.abs(x - 0.5) < 0.045) & (y > 0.16) & (y <= 0.32)
    cap = (np.abs(x - 0.5) < 0.055) & (y > 0.11) & (y <= 0.17)
    mask = body | shoulder | neck | cap
    shade = _cylinder_shade(x, 0.38, 0.62, light=0.5)
    return mask, np.where(cap, 0.45, shade)


def _jar(x, y):
    body = (np.abs(x - 0.5) < 0.22) & (y > 0.5) & (y < 0.76)
    lid = (np.abs(x - 0.5) < 0.235) & (y > 0.4) & (y <= 0.5)
    base = ((x - 0.5) / 0.22) ** 2 + ((y - 0.76) / 0.04) ** 2 < 1
    mask = body | lid | base
    shade = _cylinder_shade(x, 0.28, 0.72)
    return mask, np.where(lid, shade * 1.08, shade)


def _ball(x, y):
    r2 = ((x - 0.5) ** 2 + (y - 0.55) ** 2) / 0.2 ** 2
    mask = r2 < 1
    nz = np.sqrt(np.clip(1 - r2, 0, 1))
    lx, ly = (x - 0.5) / 0.2, (y - 0.55) / 0.2
    shade = 0.35 + 0.65 * np.clip(nz * 0.8 - 0.35 * lx - 0.35 * ly, 0, 1) + 0.4 * np.exp(-((lx + 0.4) ** 2 + (ly + 0.4) ** 2) / 0.03)
    return mask, shade


SHAPES = {"mug": _mug, "bottle": _bottle, "jar": _jar, "ball": _ball}


def draw(shape: str, colour: tuple[int, int, int], backdrop: tuple[int, int, int], size: int = 384,
         seed: int = 0, shadow: float = 0.35) -> tuple[np.ndarray, np.ndarray]:
    """(photo HxWx3 uint8, true alpha HxW float32) of one object on a plain backdrop."""
    rng = np.random.default_rng(seed)
    x, y = _grid(size)
    mask, shade = SHAPES[shape](x, y)
    ys = np.nonzero(mask.any(axis=1))[0]
    xs = np.nonzero(mask.any(axis=0))[0]
    bottom, cx = (ys.max() + 0.5) / (size * SS), (xs.min() + xs.max()) / 2 / (size * SS)
    half = (xs.max() - xs.min()) / 2 / (size * SS)
    falloff = 1.0 - 0.12 * ((x - 0.4) ** 2 + (y - 0.3) ** 2)  # the studio light is upper left
    cast = shadow * np.exp(-(((x - cx - 0.05) / (half * 1.2)) ** 2 + ((y - bottom) / 0.025) ** 2))
    back = np.asarray(backdrop, np.float32) * (falloff * (1 - cast))[..., None]
    obj = np.asarray(colour, np.float32) * shade[..., None]
    image = np.where(mask[..., None], obj, back)
    photo = _down(image) + rng.normal(0, 1.8, (size, size, 3))
    return np.clip(np.rint(photo), 0, 255).astype(np.uint8), _down(mask.astype(np.float32))


def encode(rgb: np.ndarray, fmt: str, alpha: np.ndarray | None = None) -> bytes:
    from PIL import Image

    img = Image.fromarray(rgb)
    if alpha is not None:
        img = img.convert("RGBA")
        img.putalpha(Image.fromarray(np.clip(np.rint(alpha * 255), 0, 255).astype(np.uint8)))
    buf = io.BytesIO()
    img.save(buf, format=fmt, **({"quality": 92} if fmt == "JPEG" else {}))
    return buf.getvalue()


# The demo set: two Korean and two English products, JPEG and PNG uploads.
CATALOGUE = [
    ("mug", {"name": "하늘색 세라믹 머그컵", "category": "머그컵", "colour": "하늘색", "material": "세라믹",
             "mood": "따뜻하고 포근한"}, (120, 175, 225), (236, 232, 224), "JPEG"),
    ("bottle", {"name": "Glass water bottle", "category": "bottle", "colour": "green", "material": "glass",
                "mood": "fresh"}, (70, 150, 95), (214, 218, 222), "JPEG"),
    ("jar", {"name": "장미 수분 크림", "category": "화장품", "colour": "분홍", "material": "유리",
             "mood": "고급스러운"}, (225, 140, 160), (228, 236, 244), "PNG"),
    ("ball", {"name": "Red rubber ball", "category": "toy", "colour": "red", "material": "rubber",
              "mood": "playful"}, (205, 45, 40), (240, 236, 218), "PNG"),
]


def sample_products(size: int = 384, keys: tuple[str, ...] | None = None) -> list[SampleProduct]:
    out = []
    for i, (shape, info, colour, backdrop, fmt) in enumerate(CATALOGUE):
        if keys is not None and shape not in keys:
            continue
        rgb, truth = draw(shape, colour, backdrop, size=size, seed=i)
        out.append(SampleProduct(shape, info, encode(rgb, fmt), truth, fmt))
    return out


def upload_samples(store, size: int = 384, keys: tuple[str, ...] | None = None) -> list[dict]:
    """Put the sample photos in the store as a shop's uploads (content-addressed) and return
    the ``products`` param of the product_shots DAG for them."""
    from sleeve.ids import sha256_bytes

    products = []
    for sample in sample_products(size, keys):
        ext = "jpg" if sample.format == "JPEG" else "png"
        key = f"uploads/products/{sha256_bytes(sample.photo)}.{ext}"
        store.put_bytes(key, sample.photo, content_type=f"image/{'jpeg' if ext == 'jpg' else 'png'}",
                        create_only=True)
        products.append({"product": sample.info, "photo_uri": store.uri(key)})
    return products
