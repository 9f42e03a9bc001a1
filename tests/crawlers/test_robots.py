"""robots.txt is obeyed by default; ignoring it takes an explicit opt-out that is logged."""

import logging

from crawlers.melon import Blocked, MelonClient
from crawlers.sample_site import SampleSite


def test_robots_disallow_is_obeyed_and_opt_out_warns(catalogue, http, caplog):
    with SampleSite(catalogue, robots_txt="User-agent: *\nDisallow: /\n") as site:
        client = MelonClient(http, site.urls["melon"])
        try:
            client.chart()
            raise AssertionError("robots.txt was not obeyed")
        except Blocked as exc:
            assert "robots.txt disallows" in str(exc)
        assert [h.path for h in site.hits] == ["/robots.txt"]  # the chart itself was never requested

        caplog.set_level(logging.WARNING)
        entries = MelonClient(http, site.urls["melon"], obey_robots=False).chart()
    assert len(entries) == len(catalogue.chart)
    assert any("IGNORED by explicit operator opt-out" in r.message for r in caplog.records)


def test_partial_disallow_and_browser_headers(catalogue, http):
    with SampleSite(catalogue, robots_txt="User-agent: *\nDisallow: /album/\n") as site:
        client = MelonClient(http, site.urls["melon"])
        entries = client.chart()
        record = client.song(entries[0])  # the song page has everything: no album page needed
        assert record.title and record.cover_url
        ua = {h.user_agent for h in site.hits if h.path.startswith("/chart")}
    assert record.album_id == entries[0].album_id
    assert all(u.startswith("Mozilla/5.0") for u in ua)


def test_threads_asking_at_once_share_one_robots_fetch(catalogue):
    import threading

    from crawlers.http import HttpClient
    from crawlers.robots import RobotsPolicy
    from crawlers.sample_site import SampleSite

    http = HttpClient("Sleeve-test/0 ( tests@example.invalid )", rate_per_host=100.0)
    policy = RobotsPolicy(http, "Sleeve-test")
    with SampleSite(catalogue, latency_s=0.1) as site:
        answers, start = [], threading.Barrier(6)

        def ask():
            start.wait()
            answers.append(policy.allowed(site.urls["melon"] + "/song/detail.htm"))

        threads = [threading.Thread(target=ask) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    http.close()
    assert answers == [True] * 6 and [h.path for h in site.hits] == ["/robots.txt"]
