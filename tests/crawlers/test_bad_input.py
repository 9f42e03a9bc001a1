"""Bad input at the crawler's boundaries: each test is an input that once broke it (pages past
libxml2's limits, wrong or undeclared charsets, JSON of the right outer type with the wrong
inside), and checks that it is parsed completely or refused with its true reason."""

import json
from datetime import date

import pytest

from crawlers.catalogue import build_catalogue
from crawlers.parsers import ParseError, parse_mb_release, parse_mb_release_search, parse_melon_song
from crawlers.sample_site import mb_release
from tests.crawlers.test_parsers import SONG_PAGE

MB = "\ufffd"


# -- pages beyond libxml2's default limits (10 MB text node, 256 levels) -------------------------
def test_lyrics_node_over_10_million_characters_is_refused_not_emptied():
    page = SONG_PAGE.replace("사랑한다는 말이에요", "사랑" * 5_500_000)  # an 11 M-character text node
    with pytest.raises(ParseError) as err:
        parse_melon_song(page, "1")
    assert err.value.reason == "bad_value" and "lyrics longer than" in err.value.detail


def test_10_mb_inline_script_before_the_body_keeps_the_title():
    page = SONG_PAGE.replace("</head>", "<script>" + "var x = 1;" * 1_100_000 + "</script></head>")
    record = parse_melon_song(page, "1")
    assert record.title == "밤편지" and record.lyrics.endswith("사랑한다는 말이에요")


def test_page_nested_past_the_parsers_depth_limit_names_the_limit():
    depth = 3000  # libxml2 stops at 2048 levels even with huge_tree and keeps the part it read
    page = SONG_PAGE.replace("<body>", "<body>" + "<div>" * depth).replace("</body>", "</div>" * depth + "</body>")
    with pytest.raises(ParseError) as err:
        parse_melon_song(page, "1")
    assert err.value.reason == "parser_limit" and "depth" in err.value.detail.lower()


# -- text that a decode damaged ------------------------------------------------------------------
def test_text_with_replacement_characters_is_refused():
    with pytest.raises(ParseError) as err:
        parse_melon_song(SONG_PAGE.replace("밤편지", f"{MB}{MB} {MB}{MB}"), "1")
    assert err.value.reason == "bad_encoding" and "title" in err.value.detail


def test_nul_characters_are_refused_not_turned_into_replacement_characters():
    with pytest.raises(ParseError) as err:
        parse_melon_song(SONG_PAGE.replace("밤편지", "밤\x00편지"), "1")
    assert err.value.reason == "bad_encoding" and "NUL" in err.value.detail


# -- MusicBrainz JSON of the right outer type ---------------------------------------------------
def _release(**changes):
    doc = mb_release(build_catalogue(n_songs=9, seed=2, defects=False).releases[0])
    for path, value in changes.items():
        target = doc
        *parents, last = path.split(".")
        for part in parents:
            target = target[int(part)] if isinstance(target, list) else target[part]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value
    return json.dumps(doc)


@pytest.mark.parametrize(("changes", "detail"), [
    ({"media": {"tracks": []}}, "media is a dict, not a list"),
    ({"media.0": "CD 1"}, "media[0] is a str, not an object"),
    ({"media.0.tracks": "1, 2"}, "tracks is a str, not a list"),
    ({"genres": [{"count": 3}]}, "genres[0] has no name"),
    ({"genres": [{"name": "pop", "count": "lots"}]}, "genres[0].count is a str, not a number"),
    ({"genres": "pop"}, "genres is a str, not a list"),
    ({"artist-credit": "Blue Hour"}, "artist-credit is a str, not a list"),
    ({"date": 2025}, "date is a int, not a string"),
    ({"title": ["A", "B"]}, "title is a list, not a string"),
    ({"cover-art-archive": True}, "cover-art-archive is a bool, not an object"),
    ({"release-group": "rg"}, "release-group is a str, not an object"),
])
def test_malformed_release_is_a_parse_error_with_the_path(changes, detail):
    with pytest.raises(ParseError) as err:
        parse_mb_release(_release(**changes))
    assert err.value.reason == "bad_value" and detail in err.value.detail


@pytest.mark.parametrize(("changes", "detail"), [
    ({"media.0.tracks.0": "track one"}, "track 1 of medium 1 is a str, not an object"),
    ({"media.0.tracks.0.recording": "r1"}, "recording is a str, not an object"),
    ({"media.0.tracks.0.title": 7}, "title is a int, not a string"),
    ({"media.0.tracks.0.artist-credit": {"name": "x"}}, "artist-credit is a dict, not a list"),
])
def test_a_malformed_track_fails_alone(changes, detail):
    release = parse_mb_release(_release(**changes))
    assert len(release.records) == 1 and len(release.bad) == 1
    assert release.bad[0][1].reason == "bad_value" and detail in release.bad[0][1].detail


@pytest.mark.parametrize(("doc", "detail"), [
    ({"releases": None}, "releases is missing"),
    ({"releases": {"id": "a"}}, "releases is a dict, not a list"),
    ({"releases": ["a"]}, "releases[0] is a str, not an object"),
    ({"releases": [{"id": 5}]}, "releases[0].id is a int, not a string"),
    ({"releases": [{"id": "a", "date": ["2020"]}]}, "releases[0].date is a list, not a string"),
    ({"count": "many", "releases": []}, "count is a str, not a number"),
])
def test_malformed_search_is_a_parse_error(doc, detail):
    with pytest.raises(ParseError) as err:
        parse_mb_release_search(json.dumps(doc))
    assert err.value.reason in ("bad_value", "missing_field") and detail in err.value.detail


def test_json_that_is_not_utf8_is_a_named_encoding_error():
    with pytest.raises(ParseError) as err:
        parse_mb_release_search(b'{"count": 1, "releases": [{"id": "\xb9\xe3"}]}')
    assert err.value.reason == "bad_encoding"


# -- MusicBrainz fields the crawler used to drop ------------------------------------------------
def test_empty_release_date_falls_back_to_the_release_groups_first_release_date():
    release = parse_mb_release(_release(**{"date": "", "release-group.first-release-date": "2019-04-12"}))
    assert {r.release_date for r in release.records} == {date(2019, 4, 12)}
    dated = parse_mb_release(_release(**{"date": "2020-01-02", "release-group.first-release-date": "2019"}))
    assert {r.release_date for r in dated.records} == {date(2020, 1, 2)}  # the release's own date wins


def test_release_says_whether_it_has_front_art():
    assert parse_mb_release(_release(**{"cover-art-archive.front": False})).front_cover is False
    assert parse_mb_release(_release()).front_cover is True
    assert parse_mb_release(_release(**{"cover-art-archive": None})).front_cover is None  # unknown: ask
