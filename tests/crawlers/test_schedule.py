"""The host-aware scheduler keeps every host busy: a long queue for a slow host never holds the
workers that another host's requests need, and the per-host limit holds as the server counts."""

import time

from crawlers.http import HttpClient, RateLimiter, host_of
from crawlers.sample_site import SampleSite
from crawlers.schedule import FollowUp, HostScheduler


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


def test_a_follow_up_waits_for_its_host_in_the_queue_not_in_a_worker():
    """A task whose next request goes to a slow host hands it back as a follow-up: the two
    workers go on with the fast host's work meanwhile, and the task's result is the follow-up's."""
    limiter = RateLimiter(2.0, overrides={"fast": 50.0})
    scheduler = HostScheduler(limiter, workers=2)

    def request(host):
        limiter.done(limiter.wait(host))
        return time.monotonic()

    def two_hosts(name):
        request("fast")
        return FollowUp(lambda: (name, request("slow")), "slow")

    started = time.monotonic()
    for i in range(6):  # six tasks that end on the slow host (2/s: ~2.5 s), queued first
        scheduler.submit(two_hosts, f"two-{i}", "fast")
    for i in range(10):
        scheduler.submit(lambda name: (name, request("fast")), f"fast-{i}", "fast")
    results = {}
    for _ in range(16):
        item, result, error = scheduler.get(timeout=30)
        assert error is None
        results[item] = result
    scheduler.close()
    assert all(results[f"two-{i}"][0] == f"two-{i}" for i in range(6))  # the follow-up's result, under its task
    assert max(results[f"fast-{i}"][1] - started for i in range(10)) < 1.0, results  # parked workers: ~2.5 s
    assert max(results[f"two-{i}"][1] - started for i in range(6)) >= 2.0


def test_follow_ups_go_ahead_of_new_work_on_their_host():
    limiter = RateLimiter(20.0)
    scheduler = HostScheduler(limiter, workers=1)
    order = []

    def task(name):
        limiter.done(limiter.wait("h"))
        order.append(name)
        if name.startswith("new"):
            return FollowUp(lambda: order.append(f"then-{name}") or name, "h")
        return name

    for name in ("new-a", "b", "c", "new-d"):
        scheduler.submit(task, name, "h")
    assert sorted(scheduler.get(timeout=30)[1] for _ in range(4)) == ["b", "c", "new-a", "new-d"]
    scheduler.close()
    assert order == ["new-a", "then-new-a", "b", "c", "new-d", "then-new-d"]
