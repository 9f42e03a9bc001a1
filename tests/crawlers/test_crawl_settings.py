"""Crawl settings: embedded defaults, and errors that name the setting and the fix."""

import pytest

from sleeve.settings import SettingsError, load_settings


def test_defaults_need_no_configuration():
    s = load_settings({"SLEEVE_HOME": "/tmp/x"})
    assert (s.crawl_source, s.crawl_rate, s.crawl_obey_robots) == ("sample", 1.0, True)
    assert s.musicbrainz_url == "https://musicbrainz.org"


@pytest.mark.parametrize(("env", "match"), [
    ({"SLEEVE_CRAWL_SOURCE": "musicbrainz"}, "SLEEVE_CRAWL_CONTACT"),
    ({"SLEEVE_CRAWL_SOURCE": "spotify"}, "SLEEVE_CRAWL_SOURCE"),
    ({"SLEEVE_CRAWL_SOURCE": "musicbrainz", "SLEEVE_CRAWL_CONTACT": "ops@example.com", "SLEEVE_CRAWL_RATE": "2"},
     "at most 1 request/s"),
    ({"SLEEVE_CRAWL_RATE": "fast"}, "SLEEVE_CRAWL_RATE"),
    ({"SLEEVE_MUSICBRAINZ_URL": "musicbrainz.org"}, "SLEEVE_MUSICBRAINZ_URL"),
    ({"SLEEVE_CRAWL_OBEY_ROBOTS": "maybe"}, "SLEEVE_CRAWL_OBEY_ROBOTS"),
])
def test_bad_settings_are_named(env, match):
    with pytest.raises(SettingsError, match=match):
        load_settings({"SLEEVE_HOME": "/tmp/x", **env})


def test_operator_opt_out_of_robots():
    assert load_settings({"SLEEVE_HOME": "/tmp/x", "SLEEVE_CRAWL_OBEY_ROBOTS": "false"}).crawl_obey_robots is False
