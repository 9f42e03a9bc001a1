"""Crawl orchestration: plan work items, fetch them with bounded concurrency, record each one.

A run is identified by (dag, source, data interval). Each finished work item is written at
once (cover object, songs/covers rows, quarantine rows, then its ``crawl_items`` ledger rows),
so a crash loses at most the items in flight, and a re-run of the same interval skips every
item already in the ledger. Stats are computed from the ledger, so a resumed run reports the
same totals as an uninterrupted one. Bad input is quarantined with its reason; network
failures that survive retries are ``error`` items, retried by the next attempt.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import date, datetime

from crawlers.covers import CoverError, CoverLimits, store_cover, validate_cover
from crawlers.http import FetchError, HttpClient, TooLarge
from crawlers.melon import Blocked, MelonClient
from crawlers.musicbrainz import MusicBrainzClient, user_agent
from crawlers.parsers import ParseError, SongRecord
from sleeve.ids import content_hash, stable_id
from sleeve.stages import record_stage

log = logging.getLogger(__name__)

DAG_ID = "crawl_songs"
SOURCES = ("sample", "musicbrainz", "melon")
SAMPLE_RATE = 50.0  # req/s per host for the loopback sample site (our own server; not a real site's limit)
DEFAULT_MB_QUERY = "status:official"
SAMPLE_LICENCE = "CC0-1.0 (synthetic sample catalogue)"
COUNTED = ("new", "updated", "unchanged", "quarantined", "filtered", "blocked", "error")


class CrawlError(RuntimeError):
    """The crawl could not do its job (nothing fetched, or planning failed); stats are recorded."""


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
    """The outcome of one song (or page) within a work item, before it is recorded."""

    item_key: str
    url: str | None
    record: SongRecord | None = None
    cover: dict | None = None  # covers-row fields (sha256, uri, ...) when the song has a cover
    outcome: str | None = None  # preset for quarantined / filtered / blocked / error
    reason: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class Work:
    key: str
    kind: str  # melon | musicbrainz
    client: object = field(compare=False)
    payload: object = field(compare=False)
    url: str | None = None


class Crawler:
    def __init__(self, warehouse, store, *, run_id: str, stage: str, interval: tuple[datetime, datetime],
                 limits: CoverLimits | None = None, since: date | None = None, flush_every: int = 8):
        self.warehouse, self.store, self.run_id, self.stage = warehouse, store, run_id, stage
        self.interval_start, self.ts = interval
        self.limits, self.since = limits or CoverLimits(), since
        # Items are written in small batches: each warehouse write has a fixed cost (a MERGE),
        # so a crash loses at most the unwritten batch (re-fetched on resume; covers are
        # content-addressed, so nothing is stored twice). flush_every=1 writes item by item.
        self.flush_every = max(1, flush_every)
        self._pending: list[tuple[str, list[Item]]] = []
        self._errored: set[str] = set()
        self._cover_lock = threading.Lock()
        self._covers: dict[str, tuple] = {}
        self._seen: dict[str, str] = {}  # song_id -> item_key recorded in this run

    # -- planning ----------------------------------------------------------------------------
    def plan_melon(self, client: MelonClient, request: CrawlRequest) -> tuple[list[Work], list[Item]]:
        key = f"melon:chart:{request.chart}"
        try:
            entries = client.chart(request.chart)
        except Blocked as exc:
            log.warning("%s", exc)
            return [], [Item(key, None, outcome="blocked", reason="robots_disallowed", detail=str(exc))]
        except ParseError as exc:
            return [], [Item(key, None, outcome="quarantined", reason=exc.reason, detail=exc.detail)]
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
                work.append(Work(f"melon:song:{entry.song_id}", "melon", client, entry))
        return work[: request.limit] if request.limit else work, extra

    def plan_musicbrainz(self, client: MusicBrainzClient, request: CrawlRequest) -> tuple[list[Work], list[Item]]:
        query = request.query + (f" AND date:[{request.since.isoformat()} TO *]" if request.since else "")
        try:
            releases = client.search_releases(query, limit=request.limit, since=request.since)
        except ParseError as exc:
            return [], [Item("musicbrainz:search", None, outcome="quarantined", reason=exc.reason, detail=exc.detail)]
        return [Work(f"musicbrainz:release:{r['id']}", "musicbrainz", client, r) for r in releases], []

    # -- fetching (worker threads: network, parsing, cover validation and storage) ------------
    def fetch(self, work: Work) -> list[Item]:
        try:
            return self._fetch_melon(work) if work.kind == "melon" else self._fetch_musicbrainz(work)
        except Blocked as exc:
            return [Item(work.key, None, outcome="blocked", reason="robots_disallowed", detail=str(exc))]
        except (ParseError, CoverError) as exc:
            return [Item(work.key, None, outcome="quarantined", reason=exc.reason, detail=exc.detail)]
        except TooLarge as exc:
            return [Item(work.key, exc.url, outcome="quarantined", reason="cover_too_large", detail=exc.reason)]
        except FetchError as exc:
            if exc.status in (404, 410):
                return [Item(work.key, exc.url, outcome="quarantined", reason="not_found", detail=exc.reason)]
            return [Item(work.key, exc.url, outcome="error", reason="fetch_failed", detail=exc.reason)]

    def _fetch_melon(self, work: Work) -> list[Item]:
        client: MelonClient = work.client
        record = client.song(work.payload)
        return [self._with_cover(Item(work.key, record.source_url, record=record), client)]

    def _fetch_musicbrainz(self, work: Work) -> list[Item]:
        client: MusicBrainzClient = work.client
        records, bad = client.release(work.payload["id"])
        items = [Item(f"musicbrainz:recording:{rid}", None, outcome="quarantined", reason=exc.reason,
                      detail=exc.detail) for rid, exc in bad]
        good = [Item(f"musicbrainz:recording:{r.source_id}", r.source_url, record=r) for r in records]
        if good:
            try:  # one cover per release, shared by its tracks
                self._with_cover(good[0], client)
            except (CoverError, TooLarge) as exc:
                reason = getattr(exc, "reason", "cover_too_large")
                reason = "cover_too_large" if isinstance(exc, TooLarge) else reason
                return items + [Item(i.item_key, i.url, outcome="quarantined", reason=reason, detail=str(exc))
                                for i in good]
            for item in good[1:]:
                item.cover = good[0].cover
        return items + good

    def _with_cover(self, item: Item, client) -> Item:
        url = item.record.cover_url or f"{item.record.source}:{item.record.album_id}"
        with self._cover_lock:
            known = self._covers.get(url)
        if known is None:  # songs of one album share the cover: fetch and validate it once
            got = client.cover(item.record)
            if got is None:
                return item
            data, source_url = got
            cover = validate_cover(data, self.limits)
            uri, _ = store_cover(self.store, data, cover)
            known = (cover, uri, source_url)
            with self._cover_lock:
                self._covers[url] = known
        cover, uri, source_url = known
        item.cover = {"sha256": cover.sha256, "uri": uri, "width": cover.width, "height": cover.height,
                      "format": cover.format, "size_bytes": cover.size_bytes, "phash": cover.phash,
                      "source_url": source_url, "license": client.licence(item.record),
                      "attribution": client.attribution(item.record)}
        return item

    # -- recording (main thread) -------------------------------------------------------------
    def done_work(self) -> set[str]:
        rows = self.warehouse.query(
            "SELECT work_key, COUNTIF(outcome = 'error') AS errors FROM crawl_items WHERE run_id = @run "
            "GROUP BY work_key", {"run": self.run_id})
        for row in self.warehouse.query("SELECT song_id, item_key FROM crawl_items WHERE run_id = @run AND "
                                        "song_id IS NOT NULL AND outcome != 'quarantined'", {"run": self.run_id}):
            self._seen[row["song_id"]] = row["item_key"]
        self._errored = {r["work_key"] for r in rows if r["errors"]}
        return {r["work_key"] for r in rows if not r["errors"]}

    def record(self, work_key: str, items: list[Item]) -> None:
        """Queue a finished work item; written by the next :meth:`flush`."""
        self._pending.append((work_key, items))
        if len(self._pending) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Write queued items: songs/covers/quarantine rows first, the ledger last (an item
        counts as done only once its ledger rows exist)."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        ids = [stable_id(i.record.source, i.record.source_id) for _, items in pending for i in items if i.record]
        previous = {r["song_id"]: r for r in self.warehouse.query(
            "SELECT song_id, content_hash, crawl_run_id, first_seen_at FROM songs WHERE song_id IN UNNEST(@ids)",
            {"ids": ids})} if ids else {}
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
        if item.cover:
            covers.append({"song_id": song_id, **item.cover, "created_at": self.ts})

    def stats(self) -> dict:
        rows = self.warehouse.query(
            "SELECT outcome, COUNT(*) AS n FROM crawl_items WHERE run_id = @run GROUP BY outcome", {"run": self.run_id})
        counts = {o: 0 for o in COUNTED} | {r["outcome"]: int(r["n"]) for r in rows}
        fetched = sum(counts[o] for o in ("new", "updated", "unchanged", "quarantined", "filtered"))
        return {"fetched": fetched, "new": counts["new"], "updated": counts["updated"],
                "unchanged": counts["unchanged"], "quarantined": counts["quarantined"], "errors": counts["error"],
                "filtered": counts["filtered"], "blocked": counts["blocked"]}

    # -- the loop ----------------------------------------------------------------------------
    def run(self, http: HttpClient, plans: list[tuple[list[Work], list[Item]]], on_item=None) -> dict:
        done = self.done_work()
        for work, extra in plans:
            for item in extra:  # planning outcomes (duplicates in a chart, a blocked chart, ...)
                self.record(item.item_key, [item])
            todo = [w for w in work if w.key not in done]
            if len(todo) < len(work):
                log.info("resuming: %d of %d items already done in run %s", len(work) - len(todo), len(work),
                         self.run_id)
            for work_item, items, exc in http.map(self.fetch, todo):
                if exc is not None:  # a bug, not bad input: record it, keep going, fail at the end
                    log.error("crawling %s failed", work_item.key, exc_info=exc)
                    items = [Item(work_item.key, None, outcome="error", reason=type(exc).__name__, detail=str(exc))]
                self.record(work_item.key, items)
                if on_item:
                    on_item(work_item, items)
        self.flush()
        return self.stats()


def build_crawler_clients(request: CrawlRequest, settings, urls: dict[str, str] | None = None):
    """(HttpClient, [(kind, client)]) for the request's source. ``urls`` are the sample site's."""
    if request.source == "sample":
        contact = settings.crawl_contact or "sample crawl on loopback"
        http = HttpClient(user_agent(contact), rate_per_host=SAMPLE_RATE, max_retries=3, backoff_base=0.05,
                          max_workers=settings.crawl_workers)
        rewrites = {urls["melon"]: "sample://melon", urls["melon_cdn"]: "sample://melon-cdn",
                    urls["coverart"]: "sample://coverart"}
        melon = MelonClient(http, urls["melon"], obey_robots=request.obey_robots, source="sample", rewrites=rewrites)
        mb = MusicBrainzClient(http, urls["musicbrainz"], urls["coverart"], source="sample", rewrites=rewrites,
                               public_web="sample://musicbrainz")
        for client in (melon, mb):
            client.licence = lambda record: SAMPLE_LICENCE
        return http, [("melon", melon), ("musicbrainz", mb)]
    http = HttpClient(user_agent(settings.crawl_contact), rate_per_host=settings.crawl_rate,
                      max_workers=settings.crawl_workers, cache_dir=settings.home / "cache" / "http")
    if request.source == "melon":
        return http, [("melon", MelonClient(http, settings.melon_url, obey_robots=request.obey_robots))]
    return http, [("musicbrainz", MusicBrainzClient(http, settings.musicbrainz_url, settings.coverart_url))]


def run_crawl(request: CrawlRequest, *, settings, warehouse, store, interval: tuple[datetime, datetime],
              run_id: str | None = None, catalogue=None, site_options: dict | None = None, on_item=None,
              flush_every: int = 8) -> dict:
    """Crawl one source for one data interval and record its stage_runs row; returns the stats.
    Source ``sample`` serves the synthetic catalogue on loopback for the duration of the crawl
    (``site_options``: latency / injected faults, see :class:`crawlers.sample_site.SampleSite`)."""
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
            plans = [crawler.plan_melon(c, request) if kind == "melon" else crawler.plan_musicbrainz(c, request)
                     for kind, c in clients]
            return crawler.run(http, plans, on_item), dict(http.stats)
        finally:
            http.close()

    failure = None
    try:
        if request.source == "sample":
            from crawlers.catalogue import build_catalogue
            from crawlers.sample_site import SampleSite

            with SampleSite(catalogue or build_catalogue(), **(site_options or {})) as site:
                stats, http_stats = crawl_with(site.urls)
        else:
            stats, http_stats = crawl_with()
    except FetchError as exc:  # planning itself failed (chart / search unreachable after retries)
        failure, stats, http_stats = exc, crawler.stats(), {}
        stats["errors"] += 1
    done = stats["new"] + stats["updated"] + stats["unchanged"]
    status = "failed" if failure or (stats["errors"] and not done) else "partial" if stats["errors"] else \
        "blocked" if stats["blocked"] and not done else "done"
    record_stage(warehouse, DAG_ID, stage, interval, run_id=run_id, started_at=started, status=status, stats=stats,
                 finished_at=datetime.now(UTC))
    log.info("crawl %s %s: %s (http: %s)", stage, status, stats, http_stats)
    if status == "failed":
        raise CrawlError(f"{stage} failed for interval {interval[0]}..{interval[1]}: {failure or stats}")
    return {**stats, "status": status, "run_id": run_id}
