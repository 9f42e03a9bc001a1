"""Background removal for product photos: decoded within bounds, cut out, checked.

    photo = load_photo(data)                        # bounded decode, upright, working size
    cutout = cut_out(photo, open_matter("opencv"))  # -> Cutout(rgb, alpha uint8 with feathered edges)

Backends (:class:`Matter`: ``alpha(rgb) -> float32 HxW in [0, 1]``):

- ``opencv`` (embedded default, :class:`PlainBackgroundMatter`): for product photos on a plain
  backdrop. The backdrop is modelled from the border (a smooth quadratic colour field, so light
  fall-off is fine), every pixel gets its colour distance to it (darker-than-backdrop counts
  less, so the product's own cast shadow stays background), and GrabCut refines the seeds. The
  binary mask is feathered by a Gaussian whose 0.5 level stays on the edge, so the feathering
  never grows the mask.
- ``rembg`` (production, :class:`RembgMatter`): a rembg session by model name (the file must
  already be in rembg's model folder) or a local / store ``.onnx`` file through rembg's custom
  session. Sleeve never downloads a model at run time; rembg is an optional extra, imported only
  when selected.

A photo whose PNG has real transparency is cut out by its own alpha, no model involved. A mask
that covers (almost) nothing or (almost) everything is an error: there is no separable product.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from sleeve.images import ImageDecodeError, open_image

log = logging.getLogger(__name__)

MIN_COVERAGE, MAX_COVERAGE = 0.005, 0.92  # share of the photo the product may cover
MAX_BACKDROP_NOISE = 8.0  # Lab units: a studio backdrop's grain is 1-3; more is a scene, not a backdrop


class MattingError(ValueError):
    """The photo cannot be cut out; the message says why and what to do."""


@dataclass(frozen=True)
class PhotoLimits:
    max_bytes: int = 25 * 1024 * 1024
    max_pixels: int = 40_000_000  # decompression-bomb guard, checked from the header
    min_side: int = 32
    work_side: int = 1024  # photos are cut out at most this large (the shot is smaller anyway)


@dataclass(frozen=True)
class Photo:
    rgb: np.ndarray  # HxWx3 uint8
    alpha: np.ndarray | None  # HxW uint8 when the upload had real transparency


def load_photo(data: bytes, limits: PhotoLimits = PhotoLimits()) -> Photo:
    """Decode an upload within ``limits`` (see :func:`sleeve.images.open_image`), upright, at
    most ``work_side`` px. Raises MattingError naming the problem."""
    from PIL import Image

    try:
        img = open_image(data, max_bytes=limits.max_bytes, max_pixels=limits.max_pixels)
    except ImageDecodeError as exc:
        raise MattingError(f"the photo {exc}") from None
    if min(img.size) < limits.min_side:
        raise MattingError(f"the photo is {img.width}x{img.height}; the short side must be at least {limits.min_side} px")
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    img = img.convert("RGBA" if has_alpha else "RGB")
    img.thumbnail((limits.work_side, limits.work_side), Image.Resampling.LANCZOS, reducing_gap=3.0)
    pixels = np.asarray(img)
    if has_alpha and pixels[..., 3].min() < 255:
        return Photo(np.ascontiguousarray(pixels[..., :3]), np.ascontiguousarray(pixels[..., 3]))
    return Photo(np.ascontiguousarray(pixels[..., :3]), None)


class Matter(Protocol):
    name: str
    version: str

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        """Foreground alpha of an HxWx3 uint8 photo, float32 in [0, 1]."""


@dataclass(frozen=True)
class Cutout:
    rgb: np.ndarray  # HxWx3 uint8, the photo
    alpha: np.ndarray  # HxW uint8, 255 = product
    source: str  # "alpha" (the upload's own transparency) or the matter's name@version

    @property
    def coverage(self) -> float:
        return float((self.alpha >= 128).mean())


def check_coverage(alpha: np.ndarray) -> float:
    """The product's share of the photo; MattingError when nothing or everything is product."""
    coverage = float((alpha >= 128).mean())
    if coverage < MIN_COVERAGE:
        raise MattingError(f"no separable product: the mask covers {coverage:.1%} of the photo (at least "
                           f"{MIN_COVERAGE:.1%} is needed); use a photo with the product in view")
    if coverage > MAX_COVERAGE:
        raise MattingError(f"no separable background: the mask covers {coverage:.1%} of the photo (at most "
                           f"{MAX_COVERAGE:.0%}); use a photo with space around the product, or a transparent PNG")
    return coverage


def cut_out(photo: Photo, matter: Matter) -> Cutout:
    """The product's alpha: the upload's own transparency if it has some, else the matter's."""
    if photo.alpha is not None:
        alpha, source = photo.alpha, "alpha"
    else:
        alpha = np.clip(np.rint(matter.alpha(photo.rgb) * 255), 0, 255).astype(np.uint8)
        source = f"{matter.name}@{matter.version}"
    check_coverage(alpha)
    return Cutout(photo.rgb, alpha, source)


def feather(binary: np.ndarray, sigma: float) -> np.ndarray:
    """Soft edges for a binary mask: a Gaussian blur, whose 0.5 level stays on the binary edge
    (so thresholding the result at 0.5 gives the mask back: no growth)."""
    import cv2

    soft = cv2.GaussianBlur(binary.astype(np.float32), (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
    return np.clip(soft, 0.0, 1.0)


# --- the embedded default: plain backdrop + GrabCut -------------------------------------------

def _lab(rgb: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(rgb.astype(np.float32) / 255.0, cv2.COLOR_RGB2Lab)  # L 0..100, a/b about -128..127


def _border(shape: tuple[int, int], width: int) -> np.ndarray:
    band = np.zeros(shape, bool)
    band[:width], band[-width:], band[:, :width], band[:, -width:] = True, True, True, True
    return band


def _quadratic_terms(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    x, y = x / max(w - 1, 1) * 2 - 1, y / max(h - 1, 1) * 2 - 1
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)


def backdrop_distance(rgb: np.ndarray, border_px: int = 0) -> tuple[np.ndarray, float, float]:
    """Per-pixel colour distance to the backdrop (a quadratic colour field fitted robustly to
    the photo's border), the border's noise level, and the share of the border that fits it.
    Pixels darker than the backdrop count 0.4x in lightness: a cast shadow is darker backdrop,
    not product."""
    h, w = rgb.shape[:2]
    lab = _lab(rgb)
    band = _border((h, w), border_px or max(2, round(0.02 * min(h, w))))
    terms = _quadratic_terms(h, w)
    a, b = terms[band], lab[band]
    keep = np.ones(len(a), bool)
    for _ in range(3):  # refit without the border pixels the product (or a prop) covers
        coef, *_ = np.linalg.lstsq(a[keep], b[keep], rcond=None)
        resid = np.linalg.norm(b - a @ coef, axis=1)
        noise = 1.4826 * float(np.median(resid[keep])) + 0.5
        keep = resid < max(6.0, 4 * noise)
    delta = lab - terms @ coef
    d_l = np.where(delta[..., 0] < 0, 0.4 * delta[..., 0], delta[..., 0])
    distance = np.sqrt(d_l ** 2 + delta[..., 1] ** 2 + delta[..., 2] ** 2)
    return distance, noise, float(keep.mean())


@dataclass
class PlainBackgroundMatter:
    """OpenCV GrabCut seeded from the photo's plain backdrop (see the module doc)."""

    grabcut_side: int = 512  # GrabCut runs at most this large; the edge is refined at full size
    iterations: int = 4
    name: str = "opencv"
    version: str = "grabcut-1"

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        return feather(self.mask(rgb), sigma=max(0.7, max(rgb.shape[:2]) / 900)).astype(np.float32)

    def mask(self, rgb: np.ndarray) -> np.ndarray:
        import cv2

        h, w = rgb.shape[:2]
        distance, noise, plain = backdrop_distance(rgb)
        if plain < 0.6 or noise > MAX_BACKDROP_NOISE:
            raise MattingError(f"the backdrop is not plain ({plain:.0%} of the border matches one smooth colour); "
                               "the embedded matting needs a plain background: use matting=rembg or a transparent PNG")
        low, high = max(5.0, 3 * noise), max(18.0, 7 * noise)
        if not (distance >= high).any():
            raise MattingError("no separable product: nothing in the photo stands out from its backdrop")
        scale = min(1.0, self.grabcut_side / max(h, w))
        small = (max(1, round(w * scale)), max(1, round(h * scale)))
        d_small = cv2.resize(distance, small, interpolation=cv2.INTER_AREA)
        seeds = np.full(d_small.shape, cv2.GC_PR_BGD, np.uint8)
        seeds[d_small >= (low + high) / 2] = cv2.GC_PR_FGD
        sure_fg = cv2.erode((d_small >= high).astype(np.uint8), np.ones((3, 3), np.uint8))
        seeds[sure_fg > 0] = cv2.GC_FGD
        seeds[(d_small < low) | _border(d_small.shape, 2)] = cv2.GC_BGD
        rgb_small = cv2.resize(rgb, small, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        if (seeds == cv2.GC_FGD).any() and ((seeds == cv2.GC_BGD) | (seeds == cv2.GC_PR_BGD)).any():
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.setRNGSeed(0)  # GrabCut's k-means starts from OpenCV's global RNG: same photo, same mask
            cv2.grabCut(np.ascontiguousarray(rgb_small), seeds, None, bgd, fgd, self.iterations,
                        cv2.GC_INIT_WITH_MASK)
        fg_small = ((seeds == cv2.GC_FGD) | (seeds == cv2.GC_PR_FGD)).astype(np.float32)
        if scale < 1:  # back to full size; where the upsampled edge is uncertain, colour decides
            prior = cv2.resize(fg_small, (w, h), interpolation=cv2.INTER_LINEAR)
            colour = np.clip((distance - low) / (high - low), 0, 1)
            edge = (prior > 0.02) & (prior < 0.98)
            fg = np.where(edge, 0.5 * prior + 0.5 * colour >= 0.5, prior >= 0.5)
        else:
            fg = fg_small > 0
        return _clean(fg, distance, (low + high) / 2)


def _clean(fg: np.ndarray, distance: np.ndarray, threshold: float) -> np.ndarray:
    """Drop specks (components under 5 % of the largest) and fill holes that look like product
    (a mug handle's hole shows backdrop, so it stays open)."""
    import cv2

    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(fg.shape, bool)
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(n, bool)
    keep[1:] = areas >= 0.05 * areas.max()
    fg = keep[labels]
    n, labels, stats, _ = cv2.connectedComponentsWithStats((~fg).astype(np.uint8), connectivity=4)
    h, w = fg.shape
    for i in range(1, n):
        x, y, bw, bh, _ = stats[i]
        touches_border = x == 0 or y == 0 or x + bw == w or y + bh == h
        if not touches_border and float(np.median(distance[labels == i])) >= threshold:
            fg[labels == i] = True
    return fg


# --- rembg (production backend) -----------------------------------------------------------------

class RembgMatter:
    """A rembg session: ``model`` is a rembg model name (its ``.onnx`` must already be in rembg's
    model folder) or a local ``.onnx`` file (rembg's ``u2net_custom`` session, U2-Net pre-processing).
    Store URIs are downloaded by the caller (:func:`open_matter`)."""

    name = "rembg"

    def __init__(self, model: str = "u2net"):
        try:
            import rembg
            from rembg.sessions import sessions
        except ImportError as exc:
            raise MattingError("matting=rembg needs the optional extra: pip install 'sleeve[rembg]'") from exc
        self._remove = rembg.remove
        if model.endswith(".onnx"):
            self.session = rembg.new_session("u2net_custom", model_path=str(_in_rembg_home(Path(model))))
            from sleeve.ids import sha256_bytes

            self.version = f"custom-{sha256_bytes(Path(model).read_bytes())[:12]}"
            return
        cls = sessions.get(model)
        if cls is None or model.endswith("_custom") or model == "sam" or not cls.is_local():
            raise MattingError(f"rembg has no local model named {model!r}; use one of "
                               f"{', '.join(sorted(n for n in sessions if not n.endswith('_custom')))} or a .onnx file")
        if cls.resolve_existing(f"{model}.onnx") is None:  # rembg would download it: never at run time
            raise MattingError(f"rembg model {model!r} is not installed ({cls.model_dir()}/{model}.onnx is missing); "
                               "put the file there when building the GPU image, or pass a local .onnx file")
        self.session = rembg.new_session(model)
        self.version = model

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image

        mask = self._remove(Image.fromarray(rgb), session=self.session, only_mask=True, post_process_mask=True)
        return np.asarray(mask.convert("L"), dtype=np.float32) / 255.0


def _in_rembg_home(path: Path) -> Path:
    """rembg only loads custom models from inside its home folder: link (or copy) the file there."""
    import shutil

    from rembg.sessions.base import BaseSession

    if not path.is_file():
        raise MattingError(f"rembg model file {path} does not exist")
    home = Path(BaseSession.rembg_home()).resolve()
    resolved = path.resolve()
    if resolved.is_relative_to(home):
        return resolved
    from sleeve.ids import sha256_bytes

    target = home / "models" / "sleeve" / f"{sha256_bytes(path.read_bytes())[:16]}-{path.name}"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    return target


def open_matter(backend: str = "opencv", model: str | None = None, *, cache_dir: Path | None = None) -> Matter:
    """The matting backend by name. A rembg ``model`` given as a store URI is downloaded to
    ``cache_dir`` first."""
    if backend == "opencv":
        return PlainBackgroundMatter()
    if backend == "rembg":
        model = model or "u2net"
        if model.startswith(("file://", "gs://")):
            from sleeve.ids import sha256_bytes
            from sleeve.store import open_uri

            store, key = open_uri(model)
            local = Path(cache_dir or Path.home() / ".cache" / "sleeve") / "matting" / sha256_bytes(model.encode())[:16]
            path = local / Path(key).name
            if not path.exists():
                store.download(key, path)
            model = str(path)
        return RembgMatter(model)
    raise MattingError(f"unknown matting backend {backend!r}; use opencv or rembg")
