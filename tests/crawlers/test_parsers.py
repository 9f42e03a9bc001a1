"""Parsers against Melon-shaped HTML (as Melon writes it) and MusicBrainz JSON."""

import json
from datetime import date

import pytest

from crawlers.catalogue import build_catalogue
from crawlers.parsers import (
    ParseError,
    clean_lyrics,
    melon_cover_url,
    parse_date,
    parse_mb_release,
    parse_mb_release_search,
    parse_melon_album,
    parse_melon_chart,
    parse_melon_song,
)
from crawlers.sample_site import mb_release, melon_album_html, melon_chart_html, melon_song_html

SONG_PAGE = """<!DOCTYPE html><html><head>
<meta property="og:image" content="https://cdnimg.melon.co.kr/cm2/album/images/111/22/333/11122333_20230501_500.jpg/melon/resize/282/quality/80/optimize">
</head><body><div class="wrap_info"><div class="thumb"><img src="x_500.jpg/melon/resize/282"></div>
<div class="entry"><div class="info"><div class="song_name"><strong class="none">곡명</strong>
  밤편지 </div><div class="artist"><a href="#" title="아이유 - 페이지 이동" class="artist_name"><span>아이유</span></a></div></div>
<div class="meta"><dl class="list"><dt>앨범</dt><dd><a href="javascript:melon.link.goAlbumDetail('10079439');">
Palette</a></dd><dt>발매일</dt><dd>2017.03.24</dd><dt>장르</dt><dd>발라드, 국내드라마</dd><dt>FLAC</dt><dd>16/24bit</dd>
</dl></div></div></div>
<div class="lyric" id="d_video_summary"><!-- height:auto; 로 변경시, 확장됨 -->이 밤 그날의 반딧불을<br>
당신의 창 가까이 보낼게요<br><br>사랑한다는 말이에요</div></body></html>"""


def test_melon_song_page_fields():
    record = parse_melon_song(SONG_PAGE, "30512671", source_url="https://www.melon.com/song/detail.htm?songId=1")
    assert (record.title, record.artist, record.album, record.album_id) == ("밤편지", "아이유", "Palette", "10079439")
    assert record.release_date == date(2017, 3, 24)
    assert record.genre == "발라드, 국내드라마"  # dt/dd pairing, not positional
    # <br> is the line break; the newline after it in the source is only HTML whitespace
    assert record.lyrics == "이 밤 그날의 반딧불을\n당신의 창 가까이 보낼게요\n\n사랑한다는 말이에요"
    assert record.cover_url == "https://cdnimg.melon.co.kr/cm2/album/images/111/22/333/11122333_20230501_500.jpg"


@pytest.mark.parametrize("placeholder", ["가사 준비중입니다.", "등록된 가사가 없습니다", "  No lyrics  "])
def test_no_lyrics_placeholders_become_empty(placeholder):
    page = SONG_PAGE.split('<div class="lyric"')[0] + f'<div id="d_video_summary">{placeholder}</div></body></html>'
    assert parse_melon_song(page, "1").lyrics == ""
    assert clean_lyrics(placeholder) == ""


def test_song_page_problems_are_named():
    with pytest.raises(ParseError) as err:
        parse_melon_song(SONG_PAGE[: len(SONG_PAGE) // 2], "1")
    assert err.value.reason == "malformed_page"
    with pytest.raises(ParseError) as err:
        parse_melon_song(SONG_PAGE.replace('class="song_name"', 'class="x"'), "7")
    assert err.value.reason == "missing_field" and "7" in err.value.detail
    with pytest.raises(ParseError, match="artist"):
        parse_melon_song(SONG_PAGE.replace("<span>아이유</span>", ""), "8")


def test_cover_resize_suffix_removed():
    assert melon_cover_url("https://c.net/a/x_500.jpg/melon/resize/120/quality/80/optimize") == "https://c.net/a/x_500.jpg"
    assert melon_cover_url("https://c.net/a/x_500.png?type=r282") == "https://c.net/a/x_500.png"
    assert melon_cover_url("https://c.net/a/x_500.jpg") == "https://c.net/a/x_500.jpg"


def test_chart_rows_and_album_ids():
    cat = build_catalogue(n_songs=6, seed=1, defects=False)
    entries = parse_melon_chart(melon_chart_html(cat.chart))
    assert [e.song_id for e in entries] == [s.melon_id for s in cat.chart]
    first = cat.chart[0]
    assert (entries[0].rank, entries[0].title, entries[0].artist, entries[0].album, entries[0].album_id) == (
        1, first.title, first.artist, first.album.title, first.album.melon_id)
    with pytest.raises(ParseError, match="no tr.lst50"):
        parse_melon_chart("<html><body><table></table></body></html>")


def test_album_page():
    album = build_catalogue(n_songs=4, seed=1, defects=False).albums[0]
    parsed = parse_melon_album(melon_album_html(album, "https://cdn"), album.melon_id)
    assert parsed["release_date"] == album.release_date and parsed["genre"] == album.genre
    assert parsed["cover_url"] == f"https://cdn/cm2/album/images/{album.melon_id}_500.{album.cover_ext}"


def test_sample_song_page_roundtrip_keeps_korean_lyrics():
    cat = build_catalogue(n_songs=6, seed=1, defects=False)
    song = next(s for s in cat.songs if s.lyrics and any("가" <= c <= "힣" for c in s.lyrics))
    record = parse_melon_song(melon_song_html(song, "https://cdn"), song.melon_id)
    assert record.lyrics == song.lyrics and record.title == song.title


def test_musicbrainz_release_and_search():
    cat = build_catalogue(n_songs=9, seed=2, defects=False)
    release = cat.releases[0]
    parsed = parse_mb_release(json.dumps(mb_release(release)), lambda rid: f"https://musicbrainz.org/recording/{rid}")
    records, bad = parsed.records, parsed.bad
    assert not bad
    assert [r.source_id for r in records] == [s.recording_id for s in release.songs]
    assert records[0].genre == release.genre and records[0].release_date == release.release_date
    assert records[0].lyrics == "" and records[0].album_id == release.release_id
    doc = mb_release(release)
    doc["media"][0]["tracks"][0]["title"] = ""
    doc["media"][0]["tracks"][0]["recording"]["title"] = ""
    parsed = parse_mb_release(json.dumps(doc))
    records, bad = parsed.records, parsed.bad
    assert len(records) == len(release.songs) - 1 and bad[0][1].reason == "missing_field"
    with pytest.raises(ParseError, match="not valid JSON"):
        parse_mb_release_search('{"releases": [')
    releases, total = parse_mb_release_search(json.dumps({"count": 3, "releases": [{"id": "a", "date": "2020"}]}))
    assert total == 3 and releases[0]["date"] == date(2020, 1, 1)


def test_parse_date_forms():
    assert parse_date("2023.05.01") == date(2023, 5, 1)
    assert parse_date("2023-05") == date(2023, 5, 1)
    assert parse_date("soon") is None and parse_date("2023.13.01") is None


def test_text_skips_comments_and_scripts_and_keeps_what_follows_the_label():
    page = SONG_PAGE.replace('<strong class="none">곡명</strong>\n  밤편지 ',
                             '<strong class="none">곡명</strong>밤<!-- x -->편<script>var t = 1;</script>지')
    assert parse_melon_song(page, "1").title == "밤편지"


def test_page_with_xml_declaration_parses():
    page = SONG_PAGE.replace("<!DOCTYPE html>", '<?xml version="1.0" encoding="utf-8"?>')
    assert parse_melon_song(page, "1").title == "밤편지"


@pytest.mark.parametrize("html", ["</html>", "  </HTML>  "])
def test_empty_documents_name_the_missing_part(html):
    with pytest.raises(ParseError, match="no div.song_name") as err:
        parse_melon_song(html, "5")
    assert err.value.reason == "missing_field"
    with pytest.raises(ParseError, match="no tr.lst50"):
        parse_melon_chart(html)
    assert parse_melon_album(html, "9") == {"album_id": "9", "title": None, "release_date": None,
                                            "genre": None, "cover_url": None}


def test_album_page_with_unclosed_label_still_reads_its_meta():
    """The title's hidden label is left open, so the parser nests the rest of the page in it."""
    album = build_catalogue(n_songs=4, seed=1, defects=False).albums[0]
    page = melon_album_html(album, "https://cdn").replace("</strong>", "")
    parsed = parse_melon_album(page, album.melon_id)
    assert parsed["title"] == "" and parsed["genre"] == album.genre
    assert parsed["release_date"] == album.release_date


def test_parsing_in_threads_gives_the_same_records():
    from concurrent.futures import ThreadPoolExecutor

    cat = build_catalogue(n_songs=12, seed=3, defects=False)
    pages = [(melon_song_html(s, "https://cdn"), s.melon_id) for s in cat.songs if s.album.shape == "melon"] * 8
    expected = [parse_melon_song(html, sid) for html, sid in pages]
    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(lambda p: parse_melon_song(*p), pages)) == expected
