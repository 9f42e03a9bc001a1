"""The sample catalogue is deterministic and varied enough to exercise the crawler."""

import io

from PIL import Image

from crawlers.catalogue import build_catalogue


def test_deterministic_and_varied():
    a, b = build_catalogue(n_songs=12, seed=5), build_catalogue(n_songs=12, seed=5)
    assert [(s.title, s.lyrics, s.album.cover) for s in a.songs] == [(s.title, s.lyrics, s.album.cover) for s in b.songs]
    assert len(a.songs) == 12 and {al.shape for al in a.albums} == {"melon", "musicbrainz"}
    text = " ".join(s.title + s.lyrics for s in a.songs)
    assert any("가" <= c <= "힣" for c in text) and any(c.isascii() and c.isalpha() for c in text)
    assert len({al.genre for al in a.albums}) >= 3
    good = [al for al in a.albums if not al.defect]
    assert all(Image.open(io.BytesIO(al.cover)).size == (256, 256) for al in good)
    assert [s.lyrics for s in build_catalogue(n_songs=12, seed=5, revision=1).songs] != [s.lyrics for s in a.songs]
