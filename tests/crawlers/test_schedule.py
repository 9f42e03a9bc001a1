"""The host-aware scheduler keeps every host busy: a long queue for a slow host never holds the
workers that another host's requests need, and the per-host limit holds as the server counts."""

import time

from crawlers.http import HttpClient, RateLimiter, host_of
from crawlers.sample_site import SampleSite
from crawlers.schedule import HostScheduler


def test_a_slow_hosts_queue_does_not_hold_the_workers_a_fast_host_needs():
    limiter = RateLimiter(2.0, overrides={"fast": 50.0})
    scheduler = HostScheduler(limiter, workers=2)

    def request(host):
        limiter.done(limiter.wait(host))
        return time.monotonic()

    started = time.monotonic()
    for host in ["slow"] * 10 + ["fast"] * 10:  # the slow host's work is queued first
        scheduler.submit(request, host, host)
    finished = {"slow": [], "fast": []}
    for _ in range(20):
        host, at, error = scheduler.get(timeout=30)
        assert error is None
        finished[host].append(at - started)
    scheduler.close()
    # 10 requests at 50/s take 0.2 s; with both workers parked on the slow host (2/s) they
    # would wait for most of its 4.5 s
    assert max(finished["fast"]) < 1.5, finished
    assert max(finished["slow"]) >= 4.0


def test_limit_holds_at_the_server_with_many_workers_and_hosts(catalogue):
    client = HttpClient("Sleeve-test/0 ( tests@example.invalid )", rate_per_host=8.0)
    scheduler = HostScheduler(client.limiter, workers=16)
    with SampleSite(catalogue, hosts=4, latency_s=0.02) as site:
        urls = [site.urls[role] + "/robots.txt" for role in ("melon", "melon_cdn", "musicbrainz", "coverart")] * 14
        for url in urls:
            scheduler.submit(client.get, url, host_of(url))
        results = [scheduler.get(timeout=30) for _ in urls]
        scheduler.close()
        rates = site.max_rate(1.0)
    assert all(error is None for _, _, error in results)
    assert len(rates) == 4 and max(rates.values()) == 8, rates  # at the limit, never over it


def test_limit_counts_from_responses_so_slow_responses_cannot_bunch_arrivals():
    """Request m may start only 1 s after request m - N answered: N + 1 arrivals can never fall in
    one second, however late the answers come back."""
    limiter = RateLimiter(4.0)
    tokens, starts = [], []
    for i in range(9):
        tokens.append(limiter.wait("h"))
        starts.append(time.monotonic())
        if i == 0:
            time.sleep(0.3)  # the first request answers late
        limiter.done(tokens[-1])
    done_first = tokens[0][1]
    assert starts[4] >= done_first + 1.0  # the 5th waits for the 1st answer + 1 s, not its start + 1 s
    assert all(b - a >= 0.9 * 0.25 for a, b in zip(starts, starts[1:], strict=False))
