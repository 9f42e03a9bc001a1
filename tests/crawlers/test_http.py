"""The shared HTTP layer against the loopback sample site: retries, Retry-After, rate limit,
conditional requests, User-Agent, byte cap."""


import pytest

from crawlers.http import FetchError, HttpClient, TooLarge
from crawlers.sample_site import SampleSite


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
    client = HttpClient("Sleeve-test/0 ( tests@example.invalid )", rate_per_host=10.0, max_workers=8)
    with SampleSite(catalogue, hosts=2) as site:
        urls = [site.urls["melon"] + "/robots.txt", site.urls["melon_cdn"] + "/robots.txt"] * 8
        results = list(client.map(client.get, urls))
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


