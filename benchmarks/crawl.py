"""Crawl benchmark (`make bench`): the crawl at its politeness ceiling, the crawl against a
requests.Session + bs4 baseline, and parsing against bs4 with the lxml parser.

Every site is the loopback sample site with 50 ms latency per response, served from its own
process (the server's work does not share the crawler's interpreter lock). Sleeve's crawler
runs its full pipeline: parse and validate, cover validation and content-addressed storage,
DuckDB writes. Each figure is the median of ``ROUNDS`` rounds with min and max.

* **Ceiling**: with H hosts at ``RATE`` requests/s each the ceiling is H x RATE. The site
  carries H catalogues ("tenants"), each with its roles (Melon pages, Melon image CDN,
  MusicBrainz web service, Cover Art Archive) on 4 different hosts and every host carrying
  one role of each tenant, so every host has about the same work and the ceiling is reachable.
  ``crawl_ceiling_fraction`` = requests the server saw / crawl seconds / (H x RATE), the
  crawl seconds running from the start of the crawl (ledger read, planning) to its last
  response; the ``_with_final_write`` variant runs to the end of the crawl's last warehouse
  write. The server counts each host's requests in every sliding 1 s window; the most any host
  saw is reported next to the limit and must never exceed it. The tenants' catalogues differ a
  little, so the hosts' shares do too: the busiest host's requests over the mean is reported
  (a crawl cannot end before its busiest host, so the fraction stays below about 1 / that).
* **Crawl vs baseline**: one catalogue on 4 hosts, no defects. The baseline is what a competent
  requests + bs4 user writes: a ``requests.Session``, one request after another (which at 50 ms
  latency never exceeds the per-host limit), bs4 with the lxml parser, the same pages and
  covers, no validation or storage. Songs count only when stored (ours: new rows in
  ``songs``; the baseline: songs whose page it read); both must see the same songs.
* **Parsing**: song pages/s, every field of the record (title, artist, album, album id, date,
  genre, lyrics with ``<br>`` line breaks, cover URL) on both sides, checked equal; ours is
  lxml + compiled XPath, the baseline bs4 with the lxml parser and CSS selectors; both use the
  same clean-up helpers, so the ratio is the HTML work alone. Short alternating rounds.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import requests
from bs4 import BeautifulSoup

from crawlers.catalogue import build_catalogue
from crawlers.crawl import Crawler, CrawlRequest, sample_clients
from crawlers.http import HttpClient
from crawlers.musicbrainz import user_agent
from crawlers.parsers import clean_lyrics, melon_cover_url, parse_date, parse_melon_song
from crawlers.sample_site import SampleSiteProcess, melon_song_html

RATE = 20.0  # requests/s per host: a loopback setting (production MusicBrainz: 1 request/s)
LATENCY_S = 0.05
ROUNDS = 3
CEILING_HOSTS = (4, 16)
SONGS_PER_TENANT = 124  # ~190 requests per host: ~10 s at the ceiling
COMPARE_SONGS = 48
WORKERS_PER_HOST = 4
BREAK = "\ue000"  # a private-use character standing for <br> while whitespace is collapsed
INTERVAL = (datetime(2026, 1, 5, 3, tzinfo=UTC), datetime(2026, 1, 12, 3, tzinfo=UTC))


def rounded(values: list[float], digits: int = 3) -> list[float]:
    """The rounds' values (the runner reports median, min and max of them)."""
    return [round(v, digits) for v in values]


def prepare(home: Path):
    """A fresh warehouse + store (migrated before the clock starts)."""
    from sleeve.settings import load_settings
    from sleeve.store import open_store
    from sleeve.warehouse import open_warehouse

    settings = load_settings({"SLEEVE_HOME": str(home)})
    warehouse, store = open_warehouse(settings), open_store(settings.store_url)
    warehouse.migrate()
    return warehouse, store


def sleeve_crawl(tenant_urls: list[dict[str, str]], home: Path) -> dict:
    """Sleeve's crawler over every tenant of a site; seconds to the last response and to the
    end, and the songs it stored."""
    warehouse, store = prepare(home)
    http = HttpClient(user_agent("bench on loopback"), rate_per_host=RATE,
                      max_workers=WORKERS_PER_HOST * len({u for t in tenant_urls for u in t.values()}))
    last_response = [0.0]
    get = http.get

    def timed_get(*args, **kwargs):
        try:
            return get(*args, **kwargs)
        finally:
            last_response[0] = max(last_response[0], time.perf_counter())

    http.get = timed_get
    crawler = Crawler(warehouse, store, run_id="bench", stage="crawl:sample", interval=INTERVAL)
    request = CrawlRequest()
    plans = [crawler.plan(kind, client, request) for urls in tenant_urls for kind, client in sample_clients(http, urls)]
    started = time.perf_counter()
    crawler.run(http, plans)
    ended = time.perf_counter()
    http.close()
    return {"fetch_s": last_response[0] - started, "total_s": ended - started,
            "songs": warehouse.count("songs")}


def baseline_crawl(urls: dict[str, str]) -> int:
    """A competent requests + bs4 crawler: one Session, lxml parser, one request at a time."""
    songs, session = 0, requests.Session()
    chart = BeautifulSoup(session.get(urls["melon"] + "/chart/index.htm", timeout=30).content, "lxml")
    for row in chart.select("tr.lst50, tr.lst100"):
        page = BeautifulSoup(session.get(f"{urls['melon']}/song/detail.htm",
                                         params={"songId": row["data-song-no"]}, timeout=30).content, "lxml")
        if page.select_one("div.song_name") is None:
            continue
        fields = baseline_fields(page)
        session.get(fields["cover_url"], timeout=30).raise_for_status()
        songs += 1
    search = session.get(urls["musicbrainz"] + "/ws/2/release",
                         params={"query": "status:official", "fmt": "json", "limit": 100}, timeout=30).json()
    for release in search["releases"]:
        doc = session.get(f"{urls['musicbrainz']}/ws/2/release/{release['id']}",
                          params={"inc": "recordings artist-credits genres release-groups", "fmt": "json"},
                          timeout=30).json()
        session.get(f"{urls['coverart']}/release/{release['id']}/front-500", timeout=30).raise_for_status()
        songs += sum(len(m["tracks"]) for m in doc["media"])
    session.close()
    return songs


def _timed(fn, site_args: tuple, site_options: dict):
    with SampleSiteProcess(*site_args, **site_options) as site:
        started = time.perf_counter()
        result = fn(site)
        elapsed = time.perf_counter() - started
    return result, elapsed, site


def ceiling(hosts: int, rounds: int = ROUNDS) -> dict:
    tenants = [build_catalogue(n_songs=SONGS_PER_TENANT, seed=100 + t, defects=False, cover_size=128,
                               id_base=t * 100_000) for t in range(hosts)]
    fractions, with_write, peaks, songs, imbalance = [], [], [], [], []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(prefix="sleeve-bench-crawl-") as home:
            result, _, site = _timed(lambda s, h=home: sleeve_crawl(s.tenant_urls, Path(h)), (tenants,),
                                     {"hosts": hosts, "latency_s": LATENCY_S})
        limit = hosts * RATE
        fractions.append(len(site.hits) / result["fetch_s"] / limit)
        with_write.append(len(site.hits) / result["total_s"] / limit)
        peaks.append(max(site.max_rate(1.0).values()))
        songs.append(result["songs"])
        per_host = Counter(hit.host for hit in site.hits)  # the crawl lasts as long as the busiest host's share
        imbalance.append(max(per_host.values()) / (len(site.hits) / hosts))
    expected = sum(len(t.songs) for t in tenants)
    if set(songs) != {expected}:
        raise AssertionError(f"{hosts} hosts: stored {songs} songs per round, expected {expected}")
    if max(peaks) > RATE:
        raise AssertionError(f"{hosts} hosts: a host saw {max(peaks)} requests in 1 s, over its limit of {RATE:g}")
    return {"fraction": rounded(fractions), "with_final_write": rounded(with_write), "peak": max(peaks),
            "requests": len(site.hits), "songs": expected, "imbalance": rounded(imbalance)}


def compare(rounds: int = ROUNDS) -> dict:
    catalogue = build_catalogue(n_songs=COMPARE_SONGS, seed=11, defects=False)
    ours, base, base_peak = [], [], 0
    for _ in range(rounds):
        songs, base_s, site = _timed(lambda s: baseline_crawl(s.urls), (catalogue,), {"latency_s": LATENCY_S})
        if songs != len(catalogue.songs):
            raise AssertionError(f"baseline saw {songs} songs, the catalogue has {len(catalogue.songs)}")
        base.append(songs / base_s)
        base_peak = max(base_peak, *site.max_rate(1.0).values())
        with tempfile.TemporaryDirectory(prefix="sleeve-bench-crawl-") as home:
            result, _, site = _timed(lambda s, h=home: sleeve_crawl([s.urls], Path(h)), (catalogue,),
                                     {"latency_s": LATENCY_S})
        if result["songs"] != len(catalogue.songs) or max(site.max_rate(1.0).values()) > RATE:
            raise AssertionError(f"ours stored {result['songs']} songs, peak {site.max_rate(1.0)}")
        ours.append(result["songs"] / result["total_s"])
    return {"ours": rounded(ours, 1), "baseline": rounded(base, 1), "baseline_peak": base_peak,
            "ratio": rounded([o / b for o, b in zip(ours, base, strict=True)], 2)}


def baseline_fields(page: BeautifulSoup) -> dict:
    """The song record's fields, the bs4 way."""
    name = page.select_one("div.song_name")
    for label in name.select("strong, span.none"):
        label.decompose()
    meta = {_ws(dt.get_text()): dt.find_next_sibling("dd") for dt in page.select("dl.list dt")}
    album = meta.get("앨범")
    link = album.select_one("a") if album else None
    match = re.search(r"\(\s*'?(\d+)'?", link.get("href", "")) if link else None
    lyrics = page.select_one("div#d_video_summary")
    for br in lyrics.select("br"):  # <br> is the line break; source newlines are only whitespace
        br.replace_with(BREAK)
    og = page.select_one('meta[property="og:image"]')
    return {
        "title": _ws(name.get_text()),
        "artist": ", ".join(dict.fromkeys(_ws(a.get_text()) for a in page.select("div.artist a.artist_name"))),
        "album": _ws(album.get_text()) if album else None,
        "album_id": match.group(1) if match else None,
        "release_date": parse_date(meta["발매일"].get_text()) if "발매일" in meta else None,
        "genre": _ws(meta["장르"].get_text()) if "장르" in meta else None,
        "lyrics": clean_lyrics(_ws(lyrics.get_text(), strip=False).replace(BREAK, "\n")),
        "cover_url": melon_cover_url(og["content"]) if og else None,
    }


def _ws(text: str, strip: bool = True) -> str:
    text = re.sub(r"\s+", " ", text)
    return text.strip() if strip else text


def parse(rounds: int = 5, seconds: float = 0.6) -> dict:
    catalogue = build_catalogue(n_songs=COMPARE_SONGS, seed=11, defects=False)
    pages = [(melon_song_html(s, "https://cdn"), s.melon_id) for s in catalogue.songs if s.album.shape == "melon"]
    for html, song_id in pages:  # the same work: the same fields out of every page
        record = parse_melon_song(html, song_id)
        ours = {k: getattr(record, k) for k in ("title", "artist", "album", "album_id", "release_date", "genre",
                                                "lyrics", "cover_url")}
        theirs = baseline_fields(BeautifulSoup(html, "lxml"))
        if ours != theirs:
            raise AssertionError(f"the parsers disagree on song {song_id}: {ours} != {theirs}")
    contenders = (lambda html, song_id: parse_melon_song(html, song_id),
                  lambda html, song_id: baseline_fields(BeautifulSoup(html, "lxml")))
    rates = [[], []]
    for _ in range(rounds):
        for i, fn in enumerate(contenders):
            done, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds:
                fn(*pages[done % len(pages)])
                done += 1
            rates[i].append(done / (time.perf_counter() - started))
    return {"ours": rounded(rates[0], 0), "baseline": rounded(rates[1], 0),
            "ratio": rounded([o / b for o, b in zip(*rates, strict=True)], 2)}


DESCRIPTIONS = {
    "crawl_ceiling_fraction": (
        f"{max(CEILING_HOSTS)} loopback hosts at {RATE:g} req/s each, {int(LATENCY_S * 1000)} ms latency, full crawl "
        "pipeline (parse, validate, store covers, DuckDB writes): requests the server saw / seconds to the last "
        "response / (hosts x rate); no host ever saw more than its limit in any 1 s window"),
    f"crawl_ceiling_fraction_{min(CEILING_HOSTS)}_hosts": f"crawl_ceiling_fraction measured on {min(CEILING_HOSTS)} hosts",
    "crawl_speedup_vs_session_baseline": (
        f"{COMPARE_SONGS} songs on 4 hosts: Sleeve's stored songs/s vs a sequential requests.Session + bs4-lxml "
        "crawler of the same pages and covers with no validation or storage (same rounds, alternating)"),
    "parse_speedup_vs_bs4_lxml": ("song pages/s, every field checked equal on both sides: lxml + compiled XPath "
                                  "vs bs4 with the lxml parser and CSS selectors"),
}


def run() -> dict:
    limits = {hosts: ceiling(hosts) for hosts in CEILING_HOSTS}
    crawl, parsing = compare(), parse()
    widest = max(CEILING_HOSTS)
    values = {"crawl_ceiling_fraction": limits[widest]["fraction"],
              "crawl_latency_ms": LATENCY_S * 1000, "crawl_rate_limit_per_host": RATE}
    for hosts, result in limits.items():
        values |= {f"crawl_ceiling_fraction_{hosts}_hosts": result["fraction"],
                   f"crawl_ceiling_fraction_with_final_write_{hosts}_hosts": result["with_final_write"],
                   f"crawl_max_requests_in_1s_any_host_{hosts}_hosts": result["peak"],
                   f"crawl_requests_{hosts}_hosts": result["requests"],
                   f"crawl_busiest_host_requests_over_mean_{hosts}_hosts": result["imbalance"],
                   f"crawl_songs_stored_{hosts}_hosts": result["songs"]}
    return values | {
        "crawl_songs_per_s_ours": crawl["ours"], "crawl_songs_per_s_session_baseline": crawl["baseline"],
        "crawl_speedup_vs_session_baseline": crawl["ratio"], "crawl_songs_compared": COMPARE_SONGS,
        "crawl_session_baseline_max_requests_in_1s_any_host": crawl["baseline_peak"],
        "parse_pages_per_s_ours_lxml_xpath": parsing["ours"], "parse_pages_per_s_bs4_lxml": parsing["baseline"],
        "parse_speedup_vs_bs4_lxml": parsing["ratio"]}
