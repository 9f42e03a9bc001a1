"""The shared HTTP layer against the loopback sample site: retries, Retry-After, rate limit,
conditional requests, User-Agent, byte cap."""


import pytest

from crawlers.http import FetchError, HttpClient, TooLarge, host_of
from crawlers.sample_site import SampleSite
from crawlers.schedule import HostScheduler


def test_429_retry_after_is_honoured(catalogue, http):
    with SampleSite(catalogue, faults={"/chart/index.htm": ["429:1", "500"]}) as site:
        resp = http.get(site.urls["melon"] + "/chart/index.htm")
        hits = [h for h in site.hits if h.path == "/chart/index.htm"]
    assert resp.status == 200 and [h.status for h in hits] == [429, 500, 200]
    assert hits[1].at - hits[0].at >= 0.95  # waited for Retry-After: 1, not the 10 ms backoff
    assert http.stats["retries"] == 2


def test_503_backs_off_then_gives_up_with_a_clear_error(catalogue, http):
    with SampleSite(catalogue, faults={"/ws/2/release": ["503"] * 10}) as site:
        with pytest.raises(FetchError, match="HTTP 503 after 3 retries") as err:
            http.get(site.urls["musicbrainz"] + "/ws/2/release")
        gaps = [b.at - a.at for a, b in zip(site.hits, site.hits[1:], strict=False)]
    assert err.value.status == 503 and len(site.hits) == 4
    assert gaps == sorted(gaps)  # exponential backoff: every wait longer than the one before


def test_404_is_not_retried(site, http):
    with pytest.raises(FetchError) as err:
        http.get(site.urls["melon"] + "/song/detail.htm?songId=999")
    assert err.value.status == 404 and len(site.hits) == 1


def test_per_host_rate_limit_holds_under_concurrency(catalogue):
    client = HttpClient("Sleeve-test/0 ( tests@example.invalid )", rate_per_host=10.0)
    scheduler = HostScheduler(client.limiter, workers=8)
    with SampleSite(catalogue, hosts=2) as site:
        urls = [site.urls["melon"] + "/robots.txt", site.urls["melon_cdn"] + "/robots.txt"] * 12
        for url in urls:
            scheduler.submit(client.get, url, host_of(url))
        results = [scheduler.get(timeout=30) for _ in urls]
        scheduler.close()
        rates = site.max_rate(1.0)
    assert all(err is None for _, _, err in results)
    assert len(rates) == 2 and max(rates.values()) <= 10, rates
    assert {h.user_agent for h in site.hits} == {"Sleeve-test/0 ( tests@example.invalid )"}


def test_conditional_requests_use_the_cache(site, tmp_path):
    client = HttpClient("t ( x@example.invalid )", rate_per_host=100.0, cache_dir=tmp_path)
    url = site.urls["melon"] + "/chart/index.htm"
    first, second = client.get(url), client.get(url)
    assert not first.from_cache and second.from_cache and first.content == second.content
    assert [h.status for h in site.hits] == [200, 304] and client.stats["not_modified"] == 1


def test_body_cap(site):
    client = HttpClient("t ( x@example.invalid )", rate_per_host=100.0, max_bytes=1000)
    with pytest.raises(TooLarge):
        client.get(site.urls["melon"] + "/chart/index.htm")


def test_connection_reset_mid_body_is_retried(catalogue, http):
    with SampleSite(catalogue, faults={"/chart/index.htm": ["reset"]}) as site:
        resp = http.get(site.urls["melon"] + "/chart/index.htm")
        hits = [h for h in site.hits if h.path == "/chart/index.htm"]
    assert resp.status == 200 and resp.content.endswith(b"</html>\n") and len(hits) == 2
    assert http.stats["retries"] == 1


def test_connection_reset_every_time_is_a_transient_fetch_error(catalogue, http):
    with SampleSite(catalogue, faults={"/chart/index.htm": ["reset"] * 10}) as site:
        with pytest.raises(FetchError, match="after 3 retries") as err:
            http.get(site.urls["melon"] + "/chart/index.htm")
    assert not err.value.permanent and len(site.hits) == 4


def test_redirect_loop_hops_are_rate_limited_and_end_in_a_fetch_error(catalogue):
    client = HttpClient("t ( x@example.invalid )", rate_per_host=10.0)
    with SampleSite(catalogue, faults={"/loop": ["loop"] * 100}) as site:
        with pytest.raises(FetchError, match="redirects") as err:
            client.get(site.urls["melon"] + "/loop")
        hits = list(site.hits)
        rates = site.max_rate(1.0)
    assert err.value.kind == "redirect" and err.value.permanent
    assert len(hits) == client.max_redirects + 1 and max(rates.values()) <= 10
    assert hits[-1].at - hits[0].at >= client.max_redirects / 10.0


def test_redirects_are_followed_and_relative_locations_resolved(catalogue, http):
    release = catalogue.releases[0]
    with SampleSite(catalogue) as site:
        resp = http.get(f"{site.urls['coverart']}/release/{release.release_id}/front-500")
        paths = [h.path for h in site.hits]
    assert resp.content == release.cover and resp.url.endswith(f"/img/{release.release_id}-500.{release.cover_ext}")
    assert paths == [f"/release/{release.release_id}/front-500", f"/img/{release.release_id}-500.{release.cover_ext}"]


@pytest.mark.parametrize("fault", ["trickle:0.1", "trickle_headers:0.05"])
def test_a_trickling_server_meets_the_request_deadline(catalogue, fault):
    import time

    client = HttpClient("t ( x@example.invalid )", rate_per_host=100.0, max_retries=0, deadline_s=1.0)
    with SampleSite(catalogue, faults={"/robots.txt": [fault]}) as site:
        started = time.monotonic()
        with pytest.raises(FetchError, match="deadline of 1") as err:
            client.get(site.urls["melon"] + "/robots.txt")  # ~50 bytes at 10 bytes/s: 5 s without a deadline
        took = time.monotonic() - started
        assert client.get(site.urls["melon"] + "/robots.txt").status == 200  # the client still works
    assert err.value.kind == "deadline" and not err.value.permanent and 0.9 < took < 2.0


def test_bad_urls_are_permanent_fetch_errors(http):
    for url in ("javascript:void(0)", "http://", "ftp://example.invalid/x.jpg"):
        with pytest.raises(FetchError) as err:
            http.get(url)
        assert err.value.permanent and err.value.kind == "bad_url"


def test_proxies_come_from_the_environment_once_per_host(site, monkeypatch):
    """The environment is read once per host, not per request, but still obeyed: HTTP_PROXY
    carries the request (the sample site stands in for the proxy), NO_PROXY exempts a host."""
    monkeypatch.setenv("HTTP_PROXY", site.urls["melon"])
    monkeypatch.setenv("NO_PROXY", "direct.invalid")
    client = HttpClient("Sleeve-test/0 ( tests@example.invalid )", max_retries=0)
    assert client.get("http://via-proxy.invalid/robots.txt").status == 200  # resolvable only by the proxy
    assert [h.path for h in site.hits] == ["http://via-proxy.invalid/robots.txt"]
    with pytest.raises(FetchError, match="ConnectionError"):
        client.get("http://direct.invalid/robots.txt")
    monkeypatch.delenv("HTTP_PROXY")
    assert client.get("http://via-proxy.invalid/robots.txt").status == 200  # read once for this host


def test_a_refused_connection_is_a_transient_network_error(http):
    import socket

    with socket.socket() as probe:  # a loopback port that nothing listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError, match="ConnectionError .* after 3 retries") as err:
        http.get(f"http://127.0.0.1:{port}/robots.txt")
    assert err.value.kind == "network" and not err.value.permanent and http.stats["retries"] == 3


def test_headers_the_server_sees_and_connections_are_kept_alive(site):
    client = HttpClient("Sleeve-test/0 ( tests@example.invalid )", rate_per_host=200.0, max_retries=0,
                        headers={"X-Extra": "1"})
    for _ in range(5):
        assert client.get(site.urls["melon"] + "/robots.txt").status == 200
    pool = client.pools.connection_from_url(site.urls["melon"])
    assert pool.num_connections == 1 and pool.num_requests == 5  # one keep-alive connection for all five
    assert {h.user_agent for h in site.hits} == {"Sleeve-test/0 ( tests@example.invalid )"}
    client.close()
