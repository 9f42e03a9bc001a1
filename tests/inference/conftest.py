"""Fixtures for the labelling tests: a few songs in Korean and English, the fake LLM server."""

from __future__ import annotations

import pytest

from inference.labels import Song
from tests.inference.llm_server import FakeLLM

SONGS = [
    Song("s-ocean", "바다의 노래", "가수A", "여름", "발라드, 국내드라마",
         "푸른 바다에서 너를 그리워해\n파도 소리에 눈물이 나\n달빛 아래 우리 사랑"),
    Song("s-city", "Neon Night", "Band B", "City Lights", "Dance",
         "Dancing through the city lights tonight\nNeon on the rain, stars above the street\nI love the night"),
    Song("s-empty", "무제", "가수C", "", "랩/힙합", ""),
    Song("s-spring", "봄날", "가수D", "", "", "벚꽃이 흩날리는 봄날이 오면\n하얀 꽃잎 사이로 너를 기다려"),
]


def song_row(song: Song, **extra) -> dict:
    """A songs-table row, as the crawler writes it."""
    return {"song_id": song.song_id, "source": "sample", "source_id": song.song_id, "title": song.title,
            "artist": song.artist, "album": song.album, "genre": song.genre, "lyrics": song.lyrics, **extra}


@pytest.fixture
def fake_llm():
    with FakeLLM() as server:
        yield server


@pytest.fixture
def local_store(tmp_path):
    """A local object store without the (slower) migrated warehouse of ``sleeve_env``."""
    from sleeve.store import open_store

    return open_store(f"file://{tmp_path / 'store'}")
