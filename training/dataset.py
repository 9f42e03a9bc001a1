"""Training examples, image preprocessing and the content-keyed tensor caches.

An :class:`Example` is one (image, caption) pair. Images are read through ``open_uri`` so the
same code reads ``file://`` and ``gs://`` objects. :class:`TensorCache` stores latents and text
embeddings on local disk under a key derived from content (image sha256 / caption text + base
model + resolution), so next week's run reuses every latent of an image it has seen before.

DreamBooth (:mod:`training.dreambooth`) builds ``Example(..., is_prior=True)`` for class images
and passes them as ``class_examples`` to :func:`training.trainer.train_lora`.
"""

from __future__ import annotations

import io
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sleeve.ids import content_hash


@dataclass(frozen=True)
class Example:
    uri: str  # image URI (file:// or gs://) or a local path
    caption: str
    sha256: str = ""  # content hash of the image bytes; "" means "hash it when read"
    weight: float = 1.0  # per-sample loss weight (rating-weighted training); 1.0 = plain
    is_prior: bool = False  # DreamBooth class (prior-preservation) image

    @staticmethod
    def from_manifest(item: dict) -> Example:
        return Example(uri=item["uri"], caption=item.get("caption", ""), sha256=item.get("sha256", ""),
                       weight=float(item.get("weight", 1.0)), is_prior=bool(item.get("is_prior", False)))


def read_image_bytes(uri: str, store=None) -> bytes:
    """The bytes at a path or URI. Tasks pass the configured ``store`` so URIs are read with its
    client (see :func:`sleeve.store.open_uri`). A row with no URI raises ValueError."""
    if not uri:
        raise ValueError("no image URI recorded")
    if "://" not in uri:
        return Path(uri).read_bytes()
    from sleeve.store import open_uri

    src, key = open_uri(uri, store)
    return src.get_bytes(key)


def decode_image(data: bytes):
    """RGB PIL image with EXIF orientation applied; raises ValueError naming the problem."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except UnidentifiedImageError:
        raise ValueError("not a recognised image format") from None
    except OSError as exc:  # truncated or corrupt data
        raise ValueError(f"corrupt image data ({exc})") from None
    return ImageOps.exif_transpose(image).convert("RGB")


def preprocess(image, resolution: int):
    """Resize the short side to ``resolution``, centre-crop a square; returns (tensor in [-1, 1]
    CHW, SDXL time ids (orig_h, orig_w, crop_top, crop_left, target_h, target_w))."""
    import numpy as np
    import torch
    from PIL import Image

    w, h = image.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    image = image.resize((nw, nh), Image.Resampling.BICUBIC)
    top, left = (nh - resolution) // 2, (nw - resolution) // 2
    image = image.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).contiguous()
    return tensor, (h, w, top, left, resolution, resolution)


class TensorCache:
    """Dict-of-tensors files on local disk, keyed by a content hash; writes are atomic."""

    def __init__(self, directory: str | Path | None):
        self.directory = Path(directory) if directory else None
        self.memory: dict[str, dict] = {}
        self.hits = self.misses = 0

    @staticmethod
    def key(*parts: object) -> str:
        return content_hash([str(p) for p in parts])

    def get(self, key: str) -> dict | None:
        if key in self.memory:
            self.hits += 1
            return self.memory[key]
        if self.directory is not None:
            path = self.directory / key[:2] / f"{key}.pt"
            if path.exists():
                import torch

                value = torch.load(path, map_location="cpu", weights_only=True)
                self.memory[key] = value
                self.hits += 1
                return value
        self.misses += 1
        return None

    def put(self, key: str, value: dict) -> None:
        value = {k: v.detach().cpu() if hasattr(v, "detach") else v for k, v in value.items()}
        self.memory[key] = value
        if self.directory is None:
            return
        import torch

        path = self.directory / key[:2] / f"{key}.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".part")
        os.close(fd)
        torch.save(value, tmp)
        os.replace(tmp, path)
