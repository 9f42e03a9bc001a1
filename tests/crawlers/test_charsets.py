"""Pages are decoded by their declared charset (Content-Type header, then <meta>), else detected;
text a decode would damage is quarantined with the reason, never stored with U+FFFD."""

import pytest

from crawlers.catalogue import build_catalogue
from crawlers.crawl import CrawlRequest, run_crawl
from tests.crawlers.conftest import WEEK1

KOREAN = "<html><head>{meta}<title>밤편지</title></head><body><p>이 밤 그날의 반딧불을 당신의 창 가까이 보낼게요. " \
         "사랑한다는 말이에요. 나 우리의 첫 입맞춤을 떠올려 그럼 언제든 눈을 감고 가장 먼 곳으로 가요.</p></body></html>"


def _melon_songs(warehouse):
    return {r["source_id"]: r for r in warehouse.query("SELECT * FROM songs WHERE source_url LIKE 'sample://melon/%'")}


@pytest.mark.parametrize("declare", [("header",), ("meta",), ("http-equiv",), ()])
def test_euc_kr_pages_are_stored_correctly(sleeve_env, warehouse, store, declare):
    cat = build_catalogue(n_songs=12, seed=3)
    stats = run_crawl(CrawlRequest(), settings=sleeve_env, warehouse=warehouse, store=store, interval=WEEK1,
                      catalogue=cat, site_options={"charset": "euc-kr", "declare": declare})
    songs = _melon_songs(warehouse)
    expected = {s.melon_id: s for s in cat.songs if s.album.shape == "melon" and not s.defect}
    assert songs.keys() == expected.keys() and stats["errors"] == 0
    for song_id, row in songs.items():
        assert (row["title"], row["artist"], row["lyrics"] or "") == (
            expected[song_id].title, expected[song_id].artist, expected[song_id].lyrics)
    assert any("가" <= c <= "힣" for row in songs.values() for c in row["title"] + (row["lyrics"] or ""))


def test_pages_that_lie_about_their_charset_are_quarantined(sleeve_env, warehouse, store):
    """EUC-KR bytes declared as UTF-8 (header and meta): refused with the reason, nothing stored
    with replacement characters; the MusicBrainz half (JSON, UTF-8) is unaffected."""
    cat = build_catalogue(n_songs=12, seed=3)

    stats = run_crawl(CrawlRequest(), settings=sleeve_env, warehouse=warehouse, store=store, interval=WEEK1,
                      catalogue=cat, site_options={"charset": "euc-kr", "declared_charset": "utf-8"})
    rows = warehouse.query("SELECT title, artist, album, genre, lyrics FROM songs")
    assert not any("\ufffd" in (v or "") for row in rows for v in row.values())
    reasons = {r["reason"] for r in warehouse.query("SELECT reason FROM quarantine")}
    assert "bad_encoding" in reasons and stats["errors"] == 0
    detail = warehouse.query("SELECT detail FROM quarantine WHERE reason = 'bad_encoding' LIMIT 1")[0]["detail"]
    assert "utf-8" in detail.lower()
    assert not _melon_songs(warehouse) and warehouse.count("songs") > 0


def test_decode_follows_header_then_meta_then_detection():
    from crawlers.charsets import decode_html

    euc = KOREAN.format(meta="").encode("euc-kr")
    assert decode_html(euc, "text/html; charset=EUC-KR") == KOREAN.format(meta="")
    meta = KOREAN.format(meta='<meta charset="euc-kr">')
    assert decode_html(meta.encode("euc-kr"), "text/html") == meta
    assert decode_html(meta.encode("euc-kr"), None) == meta
    assert decode_html(euc, "text/html") == KOREAN.format(meta="")  # detected
    # the header wins over the meta, as in browsers
    both = KOREAN.format(meta='<meta charset="utf-8">')
    assert decode_html(both.encode("euc-kr"), "text/html; charset=euc-kr") == both
    # a UTF-8 byte-order mark wins over everything
    assert decode_html(b"\xef\xbb\xbf" + KOREAN.format(meta="").encode(), "text/html; charset=euc-kr") == \
        KOREAN.format(meta="")
    # euc-kr as labelled on the web means its superset cp949 (e.g. '똠' is not in KS X 1001)
    assert decode_html("똠방각하".encode("cp949"), "text/html; charset=euc-kr") == "똠방각하"


@pytest.mark.parametrize(("body", "ctype", "detail"), [
    (KOREAN.format(meta="").encode("euc-kr"), "text/html; charset=utf-8", "not valid utf-8 (Content-Type header)"),
    (KOREAN.format(meta='<meta charset="utf-8">').encode("euc-kr"), "text/html", "not valid utf-8 (<meta>)"),
    (b"<html>\x00<\x00b\x00o\x00d\x00y\x00>", "text/html; charset=windows-1252", "NUL"),
])
def test_undecodable_pages_name_the_problem(body, ctype, detail):
    from crawlers.charsets import decode_html
    from crawlers.parsers import ParseError

    with pytest.raises(ParseError) as err:
        decode_html(body, ctype)
    assert err.value.reason == "bad_encoding" and detail in err.value.detail


def test_unknown_charset_label_falls_through_to_the_next_source():
    from crawlers.charsets import decode_html

    page = KOREAN.format(meta='<meta charset="euc-kr">')
    assert decode_html(page.encode("euc-kr"), "text/html; charset=x-klingon") == page
