"""A small synthetic song catalogue for tests, the demo and the benchmark.

Deterministic for a given seed: Korean and English titles and lyrics, several genres, covers
drawn procedurally with Pillow. Two thirds of the songs are "chart" songs (served in Melon's
HTML shape), the rest are releases (served in the MusicBrainz/Cover Art Archive JSON shape).
With ``defects=True`` a few items are deliberately bad, so the crawler's quarantine path runs
in every demo: a song page without a title, an album whose "cover" is HTML, a release with a
thumbnail-sized cover, and a chart listing one song twice. ``revision`` changes some lyrics, so
a later crawl sees updates.
"""

from __future__ import annotations

import io
import random
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta

from PIL import Image, ImageDraw

KO_WORDS = ["밤", "바다", "별", "비", "여름", "기억", "꿈", "도시", "사랑", "봄", "눈", "바람", "하늘", "달빛", "노을", "거리"]
EN_WORDS = ["Midnight", "Ocean", "Stars", "Rain", "Summer", "Memory", "Dream", "City", "Love", "Spring", "Snow",
            "Wind", "Sky", "Moonlight", "Sunset", "Street"]
KO_LINES = ["{w} 아래서 너를 기다려", "{w}처럼 빛나는 우리", "오늘 밤 {w}을 걸어", "{w} 속에 숨겨둔 말",
            "다시 {w}이 오면", "너와 나 {w}의 끝에서"]
EN_LINES = ["I wait for you beneath the {w}", "we shine like {w}", "walking through the {w} tonight",
            "the words I hid inside the {w}", "when the {w} comes back again", "you and me at the end of the {w}"]
KO_ARTISTS = ["하늘소년", "별빛밴드", "루나", "새벽세시", "파란노을", "달의 정원"]
EN_ARTISTS = ["Neon Tides", "Blue Hour", "Paper Lanterns", "Velvet Orbit"]
MELON_GENRES = ["발라드", "댄스", "힙합", "R&B/Soul", "인디음악", "록/메탈"]
MB_GENRES = ["pop", "rock", "hip hop", "jazz", "electronic"]
PALETTES = [((20, 24, 82), (255, 120, 90)), ((250, 220, 120), (40, 90, 160)), ((10, 10, 10), (200, 30, 60)),
            ((120, 200, 180), (250, 250, 240)), ((60, 20, 90), (240, 180, 40)), ((200, 90, 40), (30, 40, 40))]
NAMESPACE = uuid.UUID("0b7c6f1e-2d4a-4f7e-9a63-5a1c2e3d4b5f")


@dataclass
class SampleSong:
    melon_id: str
    recording_id: str
    title: str
    artist: str
    lyrics: str
    track_no: int
    album: SampleAlbum = field(repr=False, default=None)
    defect: str | None = None  # "missing_title"


@dataclass
class SampleAlbum:
    shape: str  # melon | musicbrainz
    melon_id: str
    release_id: str
    title: str
    artist: str
    release_date: date
    genre: str
    cover: bytes | None
    cover_ext: str
    songs: list[SampleSong] = field(default_factory=list)
    defect: str | None = None  # "not_image" | "tiny_cover"


@dataclass
class Catalogue:
    albums: list[SampleAlbum]
    chart: list[SampleSong]  # Melon chart order; may list a song twice (a defect)

    @property
    def songs(self) -> list[SampleSong]:
        return [s for a in self.albums for s in a.songs]

    def album_by_melon_id(self, album_id: str) -> SampleAlbum | None:
        return next((a for a in self.albums if a.melon_id == album_id and a.shape == "melon"), None)

    def song_by_melon_id(self, song_id: str) -> SampleSong | None:
        return next((s for s in self.songs if s.melon_id == song_id and s.album.shape == "melon"), None)

    def release(self, mbid: str) -> SampleAlbum | None:
        return next((a for a in self.albums if a.release_id == mbid and a.shape == "musicbrainz"), None)

    @property
    def releases(self) -> list[SampleAlbum]:
        return [a for a in self.albums if a.shape == "musicbrainz"]


def draw_cover(rng: random.Random, size: int = 256, fmt: str = "PNG") -> bytes:
    """A cover-like picture: a two-colour gradient with a few shapes."""
    top, bottom = rng.choice(PALETTES)
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    for y in range(size):
        t = y / (size - 1)
        draw.line([(0, y), (size, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)))
    for _ in range(rng.randint(2, 5)):
        x, y, r = rng.randint(0, size), rng.randint(0, size), rng.randint(size // 12, size // 3)
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        if rng.random() < 0.5:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour)
        else:
            draw.polygon([(x, y - r), (x + r, y + r), (x - r, y + r)], fill=colour)
    out = io.BytesIO()
    image.save(out, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return out.getvalue()


def _lyrics(rng: random.Random, korean: bool, words: list[str]) -> str:
    lines = KO_LINES if korean else EN_LINES
    verse = [rng.choice(lines).format(w=rng.choice(words)) for _ in range(4)]
    chorus = [rng.choice(lines).format(w=rng.choice(words)) for _ in range(2)]
    return "\n".join(verse + [""] + chorus * 2)


def build_catalogue(n_songs: int = 24, seed: int = 7, *, defects: bool = True, revision: int = 0,
                    cover_size: int = 256, id_base: int = 0) -> Catalogue:
    """``id_base`` shifts the Melon ids, so that several catalogues can be crawled together."""
    rng = random.Random(seed)
    n_melon = max(2, round(n_songs * 2 / 3))
    albums: list[SampleAlbum] = []
    base_day = date(2025, 6, 2)
    made = 0
    while made < n_songs:
        shape = "melon" if made < n_melon else "musicbrainz"
        index = len(albums)
        korean = shape == "melon" and index % 4 != 3  # some English songs on the Korean chart too
        word_ko, word_en = rng.choice(KO_WORDS), rng.choice(EN_WORDS)
        fmt = "JPEG" if index % 3 == 0 else "PNG"
        album = SampleAlbum(
            shape=shape,
            melon_id=str(11_000_000 + id_base + index * 37),
            release_id=str(uuid.uuid5(NAMESPACE, f"release-{seed}-{index}")),
            title=f"{word_ko}의 {word_en}" if korean else f"{word_en} Sessions",
            artist=rng.choice(KO_ARTISTS if korean else EN_ARTISTS),
            release_date=base_day + timedelta(days=9 * index),
            genre=rng.choice(MELON_GENRES if shape == "melon" else MB_GENRES),
            cover=draw_cover(rng, cover_size, fmt),
            cover_ext="jpg" if fmt == "JPEG" else "png",
        )
        for track in range(1, min(2, n_songs - made) + 1):
            korean_song = korean and track % 2 == 1
            words = KO_WORDS if korean_song else [w.lower() for w in EN_WORDS]
            title = f"{rng.choice(KO_WORDS)} {rng.choice(KO_WORDS)}" if korean_song else \
                f"{rng.choice(EN_WORDS)} {rng.choice(EN_WORDS)}"
            lyrics = _lyrics(rng, korean_song, words)
            if shape == "melon" and (made % 7 == 6):
                lyrics = ""  # served as Melon's "가사 준비중입니다." placeholder
            if revision and made % 5 == 0 and lyrics:
                lyrics += f"\n(개정 {revision} / revision {revision})"
            song = SampleSong(melon_id=str(30_000_000 + id_base + made * 113),
                              recording_id=str(uuid.uuid5(NAMESPACE, f"recording-{seed}-{made}")),
                              title=title, artist=album.artist, lyrics=lyrics, track_no=track, album=album)
            album.songs.append(song)
            made += 1
        albums.append(album)

    chart = [s for a in albums if a.shape == "melon" for s in a.songs]
    rng.shuffle(chart)
    if defects:
        melon_albums = [a for a in albums if a.shape == "melon"]
        releases = [a for a in albums if a.shape == "musicbrainz"]
        melon_albums[1].songs[0].defect = "missing_title"
        if len(melon_albums) > 3:
            melon_albums[3].defect = "not_image"
            melon_albums[3].cover = b"<html><body>403 Forbidden</body></html>"
        if releases:
            releases[-1].defect = "tiny_cover"
            releases[-1].cover = draw_cover(rng, 32, "PNG")
        chart.insert(len(chart) // 2, chart[0])  # the same song listed twice
    return Catalogue(albums=albums, chart=chart)
