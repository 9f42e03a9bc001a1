"""Fixtures for training tests: a small reviewed-images + covers world in the warehouse."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

WEEK_START = datetime(2026, 1, 5, 3, tzinfo=UTC)
WEEK_END = WEEK_START + timedelta(days=7)


def png(seed: int, size=(72, 64)) -> bytes:
    """A distinct random-pattern image (random patterns are far apart in perceptual hash)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(small).resize(size, Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


def seed_world(warehouse, store, *, generated=6, covers=3, when=WEEK_START + timedelta(days=1)) -> dict:
    """Generated images with ratings 5,4,3,5,2,4,... (every third below 4), covers with captions,
    plus one exact duplicate image and one unreadable cover."""
    from sleeve.ids import sha256_bytes

    images, reviews, prompts, cover_rows = [], [], [], []
    ratings = [5, 4, 3, 5, 2, 4, 5, 4, 3, 5]
    for i in range(generated):
        data = png(100 + i)
        key = f"images/{i}.png"
        store.put_bytes(key, data)
        prompts.append({"prompt_id": f"p{i}", "song_id": f"s{i}", "positive": f"album cover art of blue sea {i}",
                        "captions": json.dumps([f"blue sea {i}"]), "created_at": when - timedelta(days=3)})
        images.append({"image_id": f"img{i}", "request_id": f"r{i}", "image_index": 0, "uri": store.uri(key),
                       "sha256": sha256_bytes(data), "prompt_id": f"p{i}", "seed": i, "model_version": "base",
                       "created_at": when - timedelta(days=2)})
        reviews.append({"review_id": f"rv{i}", "image_id": f"img{i}", "user_id": "u1", "rating": ratings[i % 10],
                        "created_at": when})
    # an exact duplicate of image 0, rated 5
    store.put_bytes("images/dup.png", png(100))
    images.append({**images[0], "image_id": "imgdup", "uri": store.uri("images/dup.png")})
    reviews.append({"review_id": "rvdup", "image_id": "imgdup", "user_id": "u2", "rating": 5, "created_at": when})
    for j in range(covers):
        data = png(500 + j, (80, 80))
        key = f"covers/{j}.png"
        store.put_bytes(key, data)
        cover_rows.append({"song_id": f"c{j}", "sha256": sha256_bytes(data), "uri": store.uri(key),
                           "created_at": when - timedelta(days=10)})
        prompts.append({"prompt_id": f"pc{j}", "song_id": f"c{j}", "positive": f"cover {j}",
                        "captions": json.dumps([f"night city cover {j}", f"neon cover {j}"]),
                        "created_at": when - timedelta(days=10)})
    store.put_bytes("covers/broken.png", b"not an image")
    cover_rows.append({"song_id": "cbroken", "sha256": "x", "uri": store.uri("covers/broken.png"),
                       "created_at": when - timedelta(days=10)})
    prompts.append({"prompt_id": "pcb", "song_id": "cbroken", "positive": "broken",
                    "captions": json.dumps(["broken"]), "created_at": when - timedelta(days=10)})
    for table, rows in (("prompts", prompts), ("images", images), ("reviews", reviews), ("covers", cover_rows)):
        warehouse.upsert(table, rows)
    return {"passing_generated": sum(ratings[i % 10] >= 4 for i in range(generated)), "covers": covers}


@pytest.fixture
def world(warehouse, store):
    return seed_world(warehouse, store)


@pytest.fixture
def sample_examples(tmp_path):
    """Six local images as trainer Examples."""
    from training.dataset import Example

    out = []
    for i in range(6):
        path = tmp_path / f"ex{i}.png"
        path.write_bytes(png(i))
        out.append(Example(uri=str(path), caption=f"album cover {i} blue sea", sha256=f"h{i}"))
    return out


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """The tiny model's ops are too small for a thread pool on a shared 2-core box."""
    from sleeve.jobs import configure_cpu_threads

    configure_cpu_threads()
