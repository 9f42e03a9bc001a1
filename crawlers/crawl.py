"""Crawl orchestration: plan work items, fetch them on a host-aware scheduler, record each one.

A run is identified by (dag, source, data interval). Planning (a chart, a release search) and
the work it yields (a song page, a release) run on :class:`crawlers.schedule.HostScheduler`,
which keeps every host busy up to its rate limit; the main thread records finished items as
they come. Items are written in batches (cover object first, then songs/covers/quarantine rows,
then their ``crawl_items`` ledger rows), so a crash loses at most the unwritten batch, and a
re-run of the same interval skips every item already in the ledger. Stats are computed from
the ledger, so a resumed run reports the same totals as an uninterrupted one.

Bad input is quarantined with its reason, one item at a time: a bad cover costs only the cover
(its songs are kept), a bad track only the track, a bad search page only what follows it.
Failures that a later attempt may fix (network, 5xx after retries) are ``error`` items,
retried by the next attempt. The stage row is closed whatever happens: success, partial,
blocked, or failed with the reason.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from datetime import date, datetime

from crawlers.covers import CoverError, CoverLimits, store_cover, validate_cover
from crawlers.http import FetchError, HttpClient, host_of, rewrite_url
from crawlers.melon import Blocked, MelonClient
from crawlers.musicbrainz import MusicBrainzClient, user_agent
from crawlers.parsers import ParseError, SongRecord
from crawlers.schedule import FollowUp, HostScheduler
from sleeve.ids import content_hash, stable_id
from sleeve.stages import record_stage

log = logging.getLogger(__name__)

DAG_ID = "crawl_songs"
SOURCES = ("sample", "musicbrainz", "melon")
SAMPLE_RATE = 50.0  # req/s per host for the loopback sample site (our own server; not a real site's limit)
DEFAULT_MB_QUERY = "status:official"
SAMPLE_LICENCE = "CC0-1.0 (synthetic sample catalogue)"
COUNTED = ("new", "updated", "unchanged", "quarantined", "filtered", "blocked", "error")
# FetchError kinds that retrying cannot fix, as quarantine reasons
PERMANENT_REASONS = {"not_found": "not_found", "redirect": "bad_redirect", "bad_url": "bad_url",
                     "too_large": "too_large", "http": "http_error"}
FLUSH_SHARE = 4.0  # a batch waits at least this many times as long as the last write took
COVER_FIELDS = ("sha256", "uri", "width", "height", "format", "size_bytes", "phash", "source_url", "license",
                "attribution")


class CrawlError(RuntimeError):
    """The crawl could not do its job (nothing succeeded); stats are recorded."""


@dataclass(frozen=True)
class CrawlRequest:
    source: str = "sample"
    chart: str = "top100"
    limit: int | None = None  # Melon: chart songs; MusicBrainz: releases
    since: date | None = None  # skip songs released before this date
    obey_robots: bool = True
    query: str = DEFAULT_MB_QUERY

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ValueError(f"source={self.source!r} is not supported; use one of {', '.join(SOURCES)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit} must be at least 1 (or None for no limit)")


@dataclass
class Item:
    """The outcome of one song (or page, or cover) within a work item, before it is recorded."""

    item_key: str
    url: str | None
    record: SongRecord | None = None
    cover: dict | None = None  # covers-row fields (sha256, uri, ...) when the song has a cover
    outcome: str | None = None  # preset for quarantined / filtered / blocked / error
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Work:
    """One unit fetched: ``plan`` (a chart or a release search, yielding more work), ``melon``
    (a song) or ``musicbrainz`` (a release). ``url`` is its first request (its host's queue)."""

    key: str
    kind: str
    client: object = field(compare=False)
    payload: object = field(compare=False)
    url: str | None = None


@dataclass
class Plan:
    work: list[Work]
    items: list[Item]  # planning outcomes: duplicates in a chart, a blocked chart, a bad search page


def failure_item(key: str, exc: Exception, *, cover: bool = False) -> Item:
    """The outcome of an item whose fetch or parse failed: quarantined with a reason when
    retrying cannot help, an ``error`` (retried by the next attempt) when it might."""
    if isinstance(exc, Blocked):
        return Item(key, None, outcome="blocked", reason="robots_disallowed", detail=str(exc))
    if isinstance(exc, ParseError | CoverError):
        return Item(key, None, outcome="quarantined", reason=exc.reason, detail=exc.detail)
    if isinstance(exc, FetchError):
        if not exc.permanent:
            return Item(key, exc.url, outcome="error", reason="fetch_failed", detail=str(exc))
        reason = PERMANENT_REASONS.get(exc.kind, exc.kind)
        return Item(key, exc.url, outcome="quarantined", detail=exc.reason,
                    reason="cover_too_large" if cover and reason == "too_large" else reason)
    raise exc


class Crawler:
    def __init__(self, warehouse, store, *, run_id: str, stage: str, interval: tuple[datetime, datetime],
                 limits: CoverLimits | None = None, since: date | None = None, flush_every: int = 5000,
                 flush_interval_s: float = 2.0):
        self.warehouse, self.store, self.run_id, self.stage = warehouse, store, run_id, stage
        self.interval_start, self.ts = interval
        self.limits, self.since = limits or CoverLimits(), since
        # Each warehouse write has a fixed cost (a MERGE: on the embedded DuckDB of a busy machine
        # up to seconds, whatever the row count), so items are written in batches: what finished
        # within each flush_interval_s (at least FLUSH_SHARE x the last write's duration, so the
        # writes take at most a quarter of the recording thread, which at the politeness ceiling
        # shares two cores with the fetching), and at the latest every flush_every items. A crash
        # loses at most the unwritten batch (re-fetched on resume; covers are content-addressed,
        # so nothing is stored twice). flush_every=1 writes item by item.
        self.flush_every, self.flush_interval_s = max(1, flush_every), flush_interval_s
        self.flush_gap_s = flush_interval_s  # how long the next batch waits after the last write began
        self._pending: list[tuple[str, list[Item]]] = []
        self._errored: set[str] = set()
        self._cover_lock = threading.Lock()
        self._covers: dict[str, tuple] = {}  # cover URL -> ("ok", fields) | ("failed", exception) | ("none", None)
        self._fetching: dict[str, threading.Event] = {}  # cover URL -> set once its fetch has settled
        self._seen: dict[str, str] = {}  # song_id -> item_key recorded in this run
        self.first_error: str | None = None

    # -- planning (on the scheduler, like any work) --------------------------------------------
    def plan(self, kind: str, client, request: CrawlRequest) -> Work:
        """The planning work item for one source."""
        if kind == "melon":
            return Work(f"melon:chart:{request.chart}", "plan", client, request, client.chart_url(request.chart))
        return Work("musicbrainz:search", "plan", client, request, client.search_url())

    def _plan(self, work: Work) -> Plan:
        try:
            if isinstance(work.client, MelonClient):
                return self.plan_melon(work.client, work.payload)
            return self.plan_musicbrainz(work.client, work.payload)
        except (Blocked, ParseError, FetchError) as exc:
            if isinstance(exc, Blocked):
                log.warning("%s", exc)
            return Plan([], [failure_item(work.key, exc)])

    def plan_melon(self, client: MelonClient, request: CrawlRequest) -> Plan:
        entries = client.chart(request.chart)
        work, extra, seen = [], [], {}
        for entry in entries:
            if not entry.song_id:
                extra.append(Item(f"melon:chart-row:{entry.rank}", None, outcome="quarantined",
                                  reason="missing_field", detail=f"chart row {entry.rank} has no data-song-no"))
            elif entry.song_id in seen:
                extra.append(Item(f"melon:chart-row:{entry.rank}", None, outcome="quarantined", reason="duplicate",
                                  detail=f"song {entry.song_id} already listed at rank {seen[entry.song_id]}"))
            else:
                seen[entry.song_id] = entry.rank
                work.append(Work(f"melon:song:{entry.song_id}", "melon", client, entry, client.song_url(entry)))
        return Plan(work[: request.limit] if request.limit else work, extra)

    def plan_musicbrainz(self, client: MusicBrainzClient, request: CrawlRequest) -> Plan:
        query = request.query + (f" AND date:[{request.since.isoformat()} TO *]" if request.since else "")
        releases, stopped = client.search_releases(query, limit=request.limit, since=request.since)
        extra = [failure_item(f"musicbrainz:search:page-after:{len(releases)}", stopped)] if stopped else []
        return Plan([Work(f"musicbrainz:release:{r['id']}", "musicbrainz", client, r, client.release_url(r["id"]))
                     for r in releases], extra)

    # -- fetching (worker threads: network, parsing, cover validation and storage) ------------
    def fetch(self, work: Work) -> list[Item] | Plan | FollowUp:
        """A work item's outcomes; its cover, when not known yet, is fetched as a follow-up on
        the cover's host (the worker does not wait there for that host's slot)."""
        if work.kind == "plan":
            return self._plan(work)
        try:
            return self._fetch_melon(work) if work.kind == "melon" else self._fetch_musicbrainz(work)
        except (Blocked, ParseError, CoverError, FetchError) as exc:
            return self._finished(work, [failure_item(work.key, exc)])

    def _finished(self, work: Work, items: list[Item]) -> list[Item]:
        for item in items:  # the URL as recorded: the sample site's port changes every run
            item.url = item.url and rewrite_url(item.url, getattr(work.client, "rewrites", {}))
        return items

    def _fetch_melon(self, work: Work) -> list[Item] | FollowUp:
        client: MelonClient = work.client
        record = client.song(work.payload)
        item = Item(work.key, record.source_url, record=record)
        return self._then_cover(work, item, lambda failed: [item] + failed)

    def _fetch_musicbrainz(self, work: Work) -> list[Item] | FollowUp:
        client: MusicBrainzClient = work.client
        release = client.release(work.payload["id"])
        bad = [Item(f"musicbrainz:recording:{rid}", None, outcome="quarantined", reason=exc.reason,
                    detail=exc.detail) for rid, exc in release.bad]
        good = [Item(f"musicbrainz:recording:{r.source_id}", r.source_url, record=r) for r in release.records]
        if not good or release.front_cover is False:
            return self._finished(work, bad + good)

        def outcomes(failed: list[Item]) -> list[Item]:  # one cover per release, shared by its tracks
            for item in good[1:]:
                item.cover = good[0].cover
            return bad + failed + good

        return self._then_cover(work, good[0], outcomes)

    def _then_cover(self, work: Work, item: Item, outcomes) -> list[Item] | FollowUp:
        """``outcomes(cover failures)`` once ``item``'s cover is settled: at once when it is
        known (or there is none), else as a follow-up on the cover's host."""
        def settle() -> list[Item]:
            return self._finished(work, outcomes(self._with_cover(work, item, work.client)))

        url = work.client.cover_url(item.record)
        with self._cover_lock:
            known = url is None or self._cover_key(item) in self._covers
        return settle() if known else FollowUp(settle, host_of(url))

    @staticmethod
    def _cover_key(item: Item) -> str:
        return item.record.cover_url or f"{item.record.source}:{item.record.album_id}"

    def _with_cover(self, work: Work, item: Item, client) -> list[Item]:
        """Fetch, validate and store the song's cover (once per cover URL: songs of one album
        share it) and set ``item.cover``; a cover that fails is its own item, the song stays."""
        url = self._cover_key(item)
        while True:
            with self._cover_lock:
                known = self._covers.get(url)
                fetching = None if known else self._fetching.get(url)
                if known is None and fetching is None:
                    self._fetching[url] = claim = threading.Event()
            if known is not None:
                break
            if fetching is not None:  # another song of the album is fetching it: wait for that, never ask twice
                fetching.wait()
                continue
            try:
                known = self._fetch_cover(item, client)
            finally:
                with self._cover_lock:
                    if known is not None:
                        self._covers[url] = known
                    del self._fetching[url]
                claim.set()
        status, value = known
        if status == "none":
            return []
        if status == "failed":
            failed = failure_item(f"{work.key}:cover", value, cover=True)
            failed.url = failed.url or item.record.cover_url
            return [failed]
        item.cover = {**value, "license": client.licence(item.record), "attribution": client.attribution(item.record)}
        return []

    def _fetch_cover(self, item: Item, client) -> tuple:
        try:
            got = client.cover(item.record)
            if got is None:
                return ("none", None)
            data, source_url = got
            cover = validate_cover(data, self.limits)
            uri, _ = store_cover(self.store, data, cover)
            return ("ok", {"sha256": cover.sha256, "uri": uri, "width": cover.width, "height": cover.height,
                           "format": cover.format, "size_bytes": cover.size_bytes, "phash": cover.phash,
                           "source_url": source_url})
        except (Blocked, CoverError, FetchError) as exc:
            return ("failed", exc)

    # -- recording (main thread) -------------------------------------------------------------
    def done_work(self) -> set[str]:
        rows = self.warehouse.query(
            "SELECT work_key, item_key, song_id, outcome FROM crawl_items WHERE run_id = @run", {"run": self.run_id})
        for row in rows:
            if row["song_id"] and row["outcome"] != "quarantined":
                self._seen[row["song_id"]] = row["item_key"]
        self._errored = {r["work_key"] for r in rows if r["outcome"] == "error"}
        return {r["work_key"] for r in rows} - self._errored

    def record(self, work_key: str, items: list[Item]) -> None:
        """Queue a finished work item; written by the next :meth:`flush` (at once when
        ``flush_every`` items are waiting)."""
        self._pending.append((work_key, items))
        for item in items:
            if item.outcome == "error" and self.first_error is None:
                self.first_error = f"{item.item_key}: {item.detail or item.reason}"
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write queued items: songs/covers/quarantine rows first, the ledger last (an item
        counts as done only once its ledger rows exist)."""
        self._last_flush = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            self._write(pending)
        finally:
            self.flush_gap_s = max(self.flush_interval_s, FLUSH_SHARE * (time.monotonic() - self._last_flush))

    def _write(self, pending: list[tuple[str, list[Item]]]) -> None:
        ids = [stable_id(i.record.source, i.record.source_id) for _, items in pending for i in items if i.record]
        cover_columns = ", ".join(f"c.{c} AS cover_{c}" for c in (*COVER_FIELDS, "created_at"))
        previous = {r["song_id"]: r for r in self.warehouse.query(
            f"SELECT s.song_id, s.content_hash, s.crawl_run_id, s.first_seen_at, {cover_columns} FROM songs s "
            "LEFT JOIN covers c ON c.song_id = s.song_id WHERE s.song_id IN UNNEST(@ids)", {"ids": ids})} if ids else {}
        songs, covers, quarantine, ledger = [], [], [], []
        for work_key, items in pending:
            for item in items:
                song_id = None
                if item.record is not None:
                    song_id = stable_id(item.record.source, item.record.source_id)
                    self._classify(item, song_id, previous.get(song_id), songs, covers)
                if item.outcome == "quarantined":
                    quarantine.append({
                        "quarantine_id": stable_id(self.run_id, item.item_key), "dag_id": DAG_ID,
                        "stage": self.stage, "run_id": self.run_id, "item_key": item.item_key, "url": item.url,
                        "reason": item.reason, "detail": (item.detail or "")[:1000], "created_at": self.ts})
                    log.warning("quarantined %s: %s (%s)", item.item_key, item.reason, item.detail)
                ledger.append({
                    "run_id": self.run_id, "work_key": work_key, "item_key": item.item_key,
                    "source": self.stage.split(":", 1)[1], "song_id": song_id, "outcome": item.outcome,
                    "reason": item.reason, "url": item.url, "interval_start": self.interval_start,
                    "updated_at": self.ts})
        self.warehouse.upsert("songs", songs)
        self.warehouse.upsert("covers", covers)
        self.warehouse.upsert("quarantine", quarantine)
        retried = [work_key for work_key, _ in pending if work_key in self._errored]
        if retried:  # an item that failed before and succeeded now: drop its old error rows
            self.warehouse.execute("DELETE FROM crawl_items WHERE run_id = @run AND work_key IN UNNEST(@keys) "
                                   "AND outcome = 'error'", {"run": self.run_id, "keys": retried})
            self._errored -= set(retried)
        self.warehouse.upsert("crawl_items", ledger)

    def _classify(self, item: Item, song_id: str, prev: dict | None, songs: list, covers: list) -> None:
        record, since = item.record, self.since
        if since and record.release_date and record.release_date < since:
            item.outcome, item.reason = "filtered", f"released {record.release_date} before {since}"
            return
        if song_id in self._seen and self._seen[song_id] != item.item_key:
            item.outcome, item.reason = "quarantined", "duplicate"
            item.detail = f"song {song_id} was already recorded in this run as {self._seen[song_id]}"
            return
        self._seen[song_id] = item.item_key
        fields = record.fields()
        digest = content_hash({**fields, "cover_sha256": item.cover["sha256"] if item.cover else None})
        if prev is None:
            item.outcome = "new"
        elif prev["crawl_run_id"] == self.run_id:  # written by this run before a crash
            item.outcome = "new" if prev["first_seen_at"] == self.ts else "updated"
        else:
            item.outcome = "unchanged" if prev["content_hash"] == digest else "updated"
        if item.outcome == "unchanged":
            return
        songs.append({
            "song_id": song_id, "source": record.source, "source_id": record.source_id, "title": record.title,
            "artist": record.artist, "album": record.album, "album_id": record.album_id,
            "release_date": record.release_date, "genre": record.genre, "lyrics": record.lyrics,
            "source_url": record.source_url, "content_hash": digest, "crawl_run_id": self.run_id,
            "first_seen_at": prev["first_seen_at"] if prev else self.ts, "updated_at": self.ts})
        # First seen never moves (an earlier week's snapshot must not change); a changed cover
        # moves updated_at; an unchanged one is not rewritten.
        before = {f: prev[f"cover_{f}"] for f in COVER_FIELDS} if prev and prev["cover_sha256"] else None
        if item.cover and {f: item.cover.get(f) for f in COVER_FIELDS} != before:
            first_seen = prev["cover_created_at"] if before and prev["cover_created_at"] else self.ts
            covers.append({"song_id": song_id, **item.cover, "created_at": first_seen, "updated_at": self.ts})

    def stats(self) -> dict:
        rows = self.warehouse.query(
            "SELECT outcome, COUNT(*) AS n FROM crawl_items WHERE run_id = @run GROUP BY outcome", {"run": self.run_id})
        counts = {o: 0 for o in COUNTED} | {r["outcome"]: int(r["n"]) for r in rows}
        fetched = sum(counts[o] for o in ("new", "updated", "unchanged", "quarantined", "filtered"))
        return {"fetched": fetched, "new": counts["new"], "updated": counts["updated"],
                "unchanged": counts["unchanged"], "quarantined": counts["quarantined"], "errors": counts["error"],
                "filtered": counts["filtered"], "blocked": counts["blocked"]}

    # -- the loop ----------------------------------------------------------------------------
    def run(self, http: HttpClient, plans: list[Work], on_item=None) -> dict:
        """Plan and crawl on one scheduler: each plan's work is queued as soon as it is planned,
        so one source's pages are fetched while another is still being planned. The main thread
        records results as they come and writes them once per ``flush_interval_s`` (longer while
        writes are slow, see ``FLUSH_SHARE``), everything finished by then in one batch."""
        scheduler = HostScheduler(http.limiter, http.max_workers)
        try:
            for plan in plans:  # planning fetches go out while the ledger is read (it is needed
                scheduler.submit(self.fetch, plan, host_of(plan.url))  # only once a plan is in)
            done = self.done_work()
            self._last_flush = time.monotonic()
            while scheduler.outstanding:
                wait = max(0.0, self._last_flush + self.flush_gap_s - time.monotonic())
                try:
                    self._take(scheduler, *scheduler.get(timeout=wait if self._pending else None), done, on_item)
                except queue.Empty:
                    pass
                if self._pending and time.monotonic() - self._last_flush >= self.flush_gap_s:
                    while scheduler.pending_results():
                        self._take(scheduler, *scheduler.get(), done, on_item)
                    self.flush()
        finally:
            scheduler.close()
        self.flush()
        return self.stats()

    def _take(self, scheduler: HostScheduler, work: Work, result, exc, done: set[str], on_item) -> None:
        """Record one finished work item (queueing the work of a plan)."""
        if exc is not None:  # a bug, not bad input: record it, keep going, fail at the end
            log.error("crawling %s failed", work.key, exc_info=exc)
            result = [Item(work.key, None, outcome="error", reason=type(exc).__name__,
                           detail=f"{type(exc).__name__}: {exc}")]
        elif isinstance(result, Plan):
            self._queue_planned(scheduler, work, result, done)
            result = result.items
        if result or work.kind != "plan":  # a plan without outcomes of its own leaves no row
            self.record(work.key, result)
            if on_item:
                on_item(work, result)

    def _queue_planned(self, scheduler: HostScheduler, plan: Work, result: Plan, done: set[str]) -> None:
        if plan.key in self._errored and not any(i.outcome == "error" for i in result.items):
            # planning failed in an earlier attempt and works now: its error rows go
            self.warehouse.execute("DELETE FROM crawl_items WHERE run_id = @run AND work_key = @key "
                                   "AND outcome = 'error'", {"run": self.run_id, "key": plan.key})
            self._errored.discard(plan.key)
        todo = [w for w in result.work if w.key not in done]
        if len(todo) < len(result.work):
            log.info("resuming: %d of %d items of %s already done in run %s", len(result.work) - len(todo),
                     len(result.work), plan.key, self.run_id)
        for work in todo:
            scheduler.submit(self.fetch, work, host_of(work.url))


def build_crawler_clients(request: CrawlRequest, settings, urls: dict[str, str] | None = None):
    """(HttpClient, [(kind, client)]) for the request's source. ``urls`` are the sample site's."""
    if request.source == "sample":
        contact = settings.crawl_contact or "sample crawl on loopback"
        http = HttpClient(user_agent(contact), rate_per_host=SAMPLE_RATE, max_retries=3, backoff_base=0.05,
                          max_workers=settings.crawl_workers)
        return http, sample_clients(http, urls, obey_robots=request.obey_robots)
    http = HttpClient(user_agent(settings.crawl_contact), rate_per_host=settings.crawl_rate,
                      max_workers=settings.crawl_workers, cache_dir=settings.home / "cache" / "http")
    if request.source == "melon":
        return http, [("melon", MelonClient(http, settings.melon_url, obey_robots=request.obey_robots))]
    return http, [("musicbrainz", MusicBrainzClient(http, settings.musicbrainz_url, settings.coverart_url))]


def sample_clients(http: HttpClient, urls: dict[str, str], *, obey_robots: bool = True,
                   source: str = "sample") -> list[tuple[str, object]]:
    """The Melon and MusicBrainz clients for one tenant of the sample site, recording public
    ``sample://`` URLs."""
    rewrites = {urls["melon"]: "sample://melon", urls["melon_cdn"]: "sample://melon-cdn",
                urls["coverart"]: "sample://coverart", urls["musicbrainz"]: "sample://musicbrainz"}
    melon = MelonClient(http, urls["melon"], obey_robots=obey_robots, source=source, rewrites=rewrites)
    mb = MusicBrainzClient(http, urls["musicbrainz"], urls["coverart"], source=source, rewrites=rewrites,
                           public_web="sample://musicbrainz")
    for client in (melon, mb):
        client.licence = lambda record: SAMPLE_LICENCE
    return [("melon", melon), ("musicbrainz", mb)]


def run_crawl(request: CrawlRequest, *, settings, warehouse, store, interval: tuple[datetime, datetime],
              run_id: str | None = None, catalogue=None, site_options: dict | None = None, site=None,
              on_item=None, flush_every: int = 5000) -> dict:
    """Crawl one source for one data interval and record its stage_runs row; returns the stats.
    Source ``sample`` serves the synthetic catalogue on loopback for the duration of the crawl
    (``site_options``: latency / injected faults / charsets, see
    :class:`crawlers.sample_site.SampleSite`), or crawls the running ``site`` given."""
    from datetime import UTC

    started = datetime.now(UTC)  # bookkeeping only (durations); never a key or a window
    run_id = run_id or stable_id(DAG_ID, request.source, interval[0].isoformat(), interval[1].isoformat())
    stage = f"crawl:{request.source}"
    crawler = Crawler(warehouse, store, run_id=run_id, stage=stage, interval=interval, since=request.since,
                      flush_every=flush_every)
    record_stage(warehouse, DAG_ID, stage, interval, run_id=run_id, started_at=started, status="running")

    def crawl_with(urls=None):
        http, clients = build_crawler_clients(request, settings, urls)
        try:
            stats = crawler.run(http, [crawler.plan(kind, c, request) for kind, c in clients], on_item)
            return stats, dict(http.stats)
        finally:
            http.close()

    try:
        if request.source != "sample":
            stats, http_stats = crawl_with()
        elif site is not None:
            stats, http_stats = crawl_with(site.urls)
        else:
            from crawlers.catalogue import build_catalogue
            from crawlers.sample_site import SampleSite

            with SampleSite(catalogue or build_catalogue(), **(site_options or {})) as running:
                stats, http_stats = crawl_with(running.urls)
    except BaseException as exc:  # a bug, an interrupt, the warehouse gone: the row still closes
        _close_failed(warehouse, crawler, stage, interval, run_id, started, exc)
        raise
    done = stats["new"] + stats["updated"] + stats["unchanged"]
    status = "failed" if stats["errors"] and not done else "partial" if stats["errors"] else \
        "blocked" if stats["blocked"] and not done else "success"
    if status == "failed":
        stats["reason"] = f"no item succeeded; {stats['errors']} errors, the first: {crawler.first_error}"[:1000]
    record_stage(warehouse, DAG_ID, stage, interval, run_id=run_id, started_at=started, status=status, stats=stats,
                 finished_at=datetime.now(UTC))
    log.info("crawl %s %s: %s (http: %s)", stage, status, stats, http_stats)
    if status == "failed":
        raise CrawlError(f"{stage} failed for interval {interval[0]}..{interval[1]}: {stats['reason']}")
    return {**stats, "status": status, "run_id": run_id}


def _close_failed(warehouse, crawler: Crawler, stage, interval, run_id, started, exc: BaseException) -> None:
    from datetime import UTC

    try:
        stats = crawler.stats()
    except Exception:  # the warehouse itself may be what failed
        stats = {}
    stats["reason"] = f"{type(exc).__name__}: {exc}"[:1000]
    try:
        record_stage(warehouse, DAG_ID, stage, interval, run_id=run_id, started_at=started, status="failed",
                     stats=stats, finished_at=datetime.now(UTC))
    except Exception:
        log.exception("could not close the stage row of %s as failed", stage)
