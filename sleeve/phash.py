"""Perceptual hashes of images and a near-duplicate index over them, shared by the crawler
(which can hash a cover once, when it is fetched) and the weekly snapshot (which dedupes).

    phash_hex(image) -> "c3e1..." (16 hex digits: imagehash's 64-bit DCT phash)
    near_duplicates([h0, h1, ...], max_distance=4) -> [None, 0, None, ...]  # kept, or its kept twin

The search is multi-index hashing: two 64-bit hashes within ``d`` bits of each other agree
exactly on at least one of ``d + 1`` disjoint bands of their bits (pigeonhole), so only pairs
sharing a band value are compared (found by sorting each band, in numpy), not every pair of the
catalogue.
"""

from __future__ import annotations

BITS = 64


def phash_hex(image) -> str:
    """The perceptual hash of a PIL image (EXIF orientation applied, RGB) as 16 hex digits.
    Crawlers call it on each new cover: ``row["phash"] = phash_hex(image)``."""
    import imagehash
    from PIL import ImageOps

    return str(imagehash.phash(ImageOps.exif_transpose(image).convert("RGB")))


def parse_phash(text: str) -> int:
    """A stored hash as an int; raises ValueError for anything but 16 hex digits."""
    if not isinstance(text, str) or len(text) != BITS // 4:
        raise ValueError(f"a perceptual hash is {BITS // 4} hex digits, got {text!r}")
    return int(text, 16)


def distance(a: int, b: int) -> int:
    """Hamming distance of two hashes."""
    return (a ^ b).bit_count()


def near_duplicates(values: list[int], max_distance: int) -> list[int | None]:
    """For each hash in order: None when it is kept (no kept hash before it lies within
    ``max_distance`` bits), else the index of a kept earlier hash within that distance -- what a
    scan of every pair gives, at the cost of the pairs that share a band."""
    import numpy as np

    if not 0 <= max_distance < BITS:
        raise ValueError(f"max_distance must be between 0 and {BITS - 1}, got {max_distance}")
    n = len(values)
    hashes = np.array(values, dtype=np.uint64)
    bands = max_distance + 1
    edges = [round(i * BITS / bands) for i in range(bands + 1)]
    close: set[tuple[int, int]] = set()
    for lo, hi in zip(edges, edges[1:], strict=False):
        keys = (hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(keys, kind="stable")
        ordered = keys[order]
        positions = np.arange(n)
        offset = 1
        while positions.size:  # pair each position with the one `offset` further in its bucket
            positions = positions[positions + offset < n]
            positions = positions[ordered[positions] == ordered[positions + offset]]
            a, b = order[positions], order[positions + offset]
            near = np.bitwise_count(hashes[a] ^ hashes[b]) <= max_distance
            close.update(zip(np.minimum(a, b)[near].tolist(), np.maximum(a, b)[near].tolist(), strict=True))
            offset += 1
    earlier: dict[int, list[int]] = {}
    for i, j in close:
        earlier.setdefault(j, []).append(i)
    twin: list[int | None] = [None] * n
    for j in range(n):
        twin[j] = next((i for i in sorted(earlier.get(j, ())) if twin[i] is None), None)
    return twin
