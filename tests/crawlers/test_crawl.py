"""End to end: the real clients crawl the loopback sample site into the warehouse and store."""

import json
import random
from datetime import date

import pytest

from crawlers.catalogue import build_catalogue, draw_cover
from crawlers.crawl import CrawlRequest, run_crawl
from crawlers.sample_site import SampleSite
from tests.crawlers.conftest import WEEK1, WEEK2

TABLES = {"songs": "song_id", "covers": "song_id", "quarantine": "quarantine_id", "crawl_items": "run_id, item_key"}


def snapshot(warehouse):
    return {t: warehouse.query(f"SELECT * FROM {t} ORDER BY {k}") for t, k in TABLES.items()}


def crawl(sleeve_env, warehouse, store, interval=WEEK1, catalogue=None, **kwargs):
    request = kwargs.pop("request", CrawlRequest())
    return run_crawl(request, settings=sleeve_env, warehouse=warehouse, store=store, interval=interval,
                     catalogue=catalogue or build_catalogue(n_songs=12, seed=3), **kwargs)


def test_sample_crawl_records_songs_covers_and_quarantine(sleeve_env, warehouse, store):
    stats = crawl(sleeve_env, warehouse, store)
    songs = warehouse.query("SELECT * FROM songs")
    covers = warehouse.query("SELECT * FROM covers")
    reasons = sorted(r["reason"] for r in warehouse.query("SELECT reason FROM quarantine"))
    # 12 songs: one page without a title; two songs of an album whose cover is HTML and a release
    # (two tracks) with a 32 px cover: those songs are kept, their covers quarantined; plus one
    # chart row listing a song twice
    assert reasons == ["cover_too_small", "duplicate", "missing_field", "not_image", "not_image"]
    assert stats["new"] == len(songs) == 11 and stats["quarantined"] == 5 and stats["errors"] == 0
    assert stats["status"] == "success"
    assert {s["source"] for s in songs} == {"sample"} and all(s["source_url"].startswith("sample://") for s in songs)
    assert any(s["lyrics"] and any("가" <= c <= "힣" for c in s["lyrics"]) for s in songs)
    assert len({s["genre"] for s in songs}) >= 3
    # every cover: content-addressed object, licence + attribution + source URL; albums share one object
    assert len(covers) == len(songs) - 4
    assert all(c["license"] and c["attribution"] and c["source_url"].startswith("sample://") for c in covers)
    assert all(store.exists(c["uri"].removeprefix(store.url + "/")) for c in covers)
    assert len(store.list("covers")) == len({c["sha256"] for c in covers}) < len(covers)
    stage = warehouse.query("SELECT * FROM stage_runs WHERE dag_id = 'crawl_songs'")
    assert len(stage) == 1 and stage[0]["stage"] == "crawl:sample" and stage[0]["status"] == "success"
    assert json.loads(stage[0]["stats"])["new"] == 11

    before = snapshot(warehouse)
    assert crawl(sleeve_env, warehouse, store) == stats  # same interval again: same state
    assert snapshot(warehouse) == before and warehouse.count("stage_runs") == 1

    week2 = crawl(sleeve_env, warehouse, store, WEEK2, build_catalogue(n_songs=12, seed=3, revision=1))
    assert week2["new"] == 0 and week2["updated"] >= 1 and week2["unchanged"] >= 1
    assert week2["updated"] + week2["unchanged"] == 11 and warehouse.count("songs") == 11


def test_crash_resumes_without_refetching_done_items(sleeve_env, warehouse, store):
    seen = []

    def crash_after_three(work, items):
        seen.append(work.key)
        if len(seen) == 3:
            raise KeyboardInterrupt("simulated crash")

    with pytest.raises(KeyboardInterrupt):
        crawl(sleeve_env, warehouse, store, on_item=crash_after_three, flush_every=1)
    done_before = {r["work_key"] for r in warehouse.query("SELECT DISTINCT work_key FROM crawl_items")}
    assert set(seen[:2]) <= done_before  # written item by item; the third was in flight

    resumed = []
    stats = crawl(sleeve_env, warehouse, store, on_item=lambda work, items: resumed.append(work.key))
    assert set(resumed) & done_before == {"melon:chart:top100"}  # planning runs again; what it planned does not
    assert stats["new"] == 11 and stats["quarantined"] == 5  # the same totals as an uninterrupted run


def test_faults_are_quarantined_or_retried(sleeve_env, warehouse, store):
    cat = build_catalogue(n_songs=12, seed=3)
    ok = [s for s in cat.chart if not s.defect and not s.album.defect]
    truncated, broken = (f"/song/detail.htm?songId={s.melon_id}" for s in ok[:2])
    faults = {truncated: ["truncate"], broken: ["500"] * 10, "/ws/2/release": ["429:0"]}
    stats = crawl(sleeve_env, warehouse, store, catalogue=cat, site_options={"faults": faults})
    assert stats["errors"] == 1 and stats["status"] == "partial"
    rows = warehouse.query("SELECT reason, item_key FROM quarantine WHERE reason = 'malformed_page'")
    assert rows == [{"reason": "malformed_page", "item_key": f"melon:song:{ok[0].melon_id}"}]

    again = crawl(sleeve_env, warehouse, store, catalogue=cat)  # the retry of the same run
    assert again["errors"] == 0 and again["status"] == "success"
    assert warehouse.query("SELECT COUNT(*) AS n FROM crawl_items WHERE outcome = 'error'")[0]["n"] == 0


def test_limit_and_since(sleeve_env, warehouse, store):
    stats = crawl(sleeve_env, warehouse, store, request=CrawlRequest(limit=2))
    # 2 chart songs, 2 releases of 2 tracks, the duplicate row, and at most 3 quarantined covers
    assert stats["fetched"] <= 2 + 2 * 2 + 1 + 3 and stats["new"] <= 2 + 2 * 2
    late = crawl(sleeve_env, warehouse, store, WEEK2, request=CrawlRequest(since=date(2030, 1, 1)))
    assert late["new"] == 0 and late["filtered"] >= 1


def test_bad_request_is_named():
    with pytest.raises(ValueError, match="source='spotify'"):
        CrawlRequest(source="spotify")
    with pytest.raises(ValueError, match="limit=0"):
        CrawlRequest(limit=0)


def _stage(warehouse):
    rows = warehouse.query("SELECT status, stats FROM stage_runs WHERE dag_id = 'crawl_songs'")
    assert len(rows) == 1
    return rows[0]["status"], json.loads(rows[0]["stats"] or "{}")


def test_search_answering_null_releases_spares_the_melon_half(sleeve_env, warehouse, store):
    faults = {"/ws/2/release": ['body:{"count": 3, "releases": null}']}
    stats = crawl(sleeve_env, warehouse, store, site_options={"faults": faults})
    quarantined = warehouse.query("SELECT item_key, reason, detail FROM quarantine WHERE item_key LIKE 'musicbrainz%'")
    assert quarantined == [{"item_key": "musicbrainz:search", "reason": "missing_field",
                            "detail": "release search: releases is missing (null)"}]
    assert {r["source_url"].split("/")[2] for r in warehouse.query("SELECT source_url FROM songs")} == {"melon"}
    assert stats["new"] == 7 and stats["errors"] == 0
    assert _stage(warehouse)[0] == "success"


def test_a_bug_closes_the_stage_row_as_failed_with_the_reason(sleeve_env, warehouse, store):
    def bug(work, items):
        raise RuntimeError("boom in on_item")

    with pytest.raises(RuntimeError, match="boom"):
        crawl(sleeve_env, warehouse, store, on_item=bug)
    status, stats = _stage(warehouse)
    assert status == "failed" and "RuntimeError: boom in on_item" in stats["reason"]


def test_malformed_release_json_is_quarantined_not_refetched(sleeve_env, warehouse, store):
    cat = build_catalogue(n_songs=12, seed=3)
    release = cat.releases[0]
    faults = {f"/ws/2/release/{release.release_id}": [json.dumps({"id": release.release_id, "media": 5})]}
    faults = {k: [f"body:{v[0]}"] for k, v in faults.items()}
    stats = crawl(sleeve_env, warehouse, store, catalogue=cat, site_options={"faults": faults})
    rows = warehouse.query("SELECT item_key, reason, detail FROM quarantine WHERE reason = 'bad_value'")
    assert rows == [{"item_key": f"musicbrainz:release:{release.release_id}", "reason": "bad_value",
                     "detail": f"release {release.release_id}: media is a int, not a list"}]
    assert stats["errors"] == 0 and stats["status"] == "success"


def test_a_looping_cover_does_not_sink_its_release(sleeve_env, warehouse, store):
    cat = build_catalogue(n_songs=12, seed=3)
    release = cat.releases[0]
    faults = {f"/release/{release.release_id}/front-500": ["loop"] * 100}
    stats = crawl(sleeve_env, warehouse, store, catalogue=cat, site_options={"faults": faults})
    stored = {r["source_id"] for r in warehouse.query("SELECT source_id FROM songs")}
    assert {s.recording_id for s in release.songs} <= stored
    cover = warehouse.query("SELECT item_key, reason FROM quarantine WHERE reason = 'bad_redirect'")
    assert cover == [{"item_key": f"musicbrainz:release:{release.release_id}:cover", "reason": "bad_redirect"}]
    assert stats["errors"] == 0


def test_a_cover_that_keeps_failing_is_an_error_retried_with_its_songs_kept(sleeve_env, warehouse, store):
    cat = build_catalogue(n_songs=12, seed=3)
    release = cat.releases[0]
    faults = {f"/img/{release.release_id}-500.{release.cover_ext}": ["reset"] * 10}  # the redirect's target
    stats = crawl(sleeve_env, warehouse, store, catalogue=cat, site_options={"faults": faults})
    ids = {s.recording_id for s in release.songs}
    assert ids <= {r["source_id"] for r in warehouse.query("SELECT source_id FROM songs")}
    assert stats["errors"] == 1 and stats["status"] == "partial"

    again = crawl(sleeve_env, warehouse, store, catalogue=cat)  # the retry fetches the cover
    assert again["errors"] == 0 and again["status"] == "success"
    covers = {r["source_url"] for r in warehouse.query("SELECT source_url FROM covers")}
    assert f"sample://coverart/release/{release.release_id}/front-500" in covers


def test_release_without_front_art_is_not_asked_for_one(sleeve_env, warehouse, store):
    cat = build_catalogue(n_songs=12, seed=3)
    release = cat.releases[0]
    release.cover = None  # the release says cover-art-archive.front = false
    with SampleSite(cat) as site:
        stats = run_crawl(CrawlRequest(), settings=sleeve_env, warehouse=warehouse, store=store, interval=WEEK1,
                          catalogue=cat, site=site)
        asked = [h.path for h in site.hits if release.release_id in h.path]
    assert asked == [f"/ws/2/release/{release.release_id}?inc=recordings+artist-credits+genres+release-groups&fmt=json"]
    songs = warehouse.query("SELECT s.song_id, c.song_id AS cover FROM songs s LEFT JOIN covers c USING (song_id) "
                            "WHERE s.album_id = @id", {"id": release.release_id})
    assert len(songs) == len(release.songs) and all(r["cover"] is None for r in songs)
    assert stats["errors"] == 0


def test_recrawl_keeps_first_seen_times(sleeve_env, warehouse, store):
    """A later crawl must not move covers.created_at (or songs.first_seen_at): re-running an
    earlier week would otherwise build a different snapshot."""
    crawl(sleeve_env, warehouse, store, WEEK1, build_catalogue(n_songs=12, seed=3))
    covers1 = {r["song_id"]: r for r in warehouse.query("SELECT * FROM covers")}
    songs1 = {r["song_id"]: r for r in warehouse.query("SELECT * FROM songs")}

    later = build_catalogue(n_songs=12, seed=3, revision=1)  # lyrics change: songs are updated
    redrawn = next(a for a in later.albums if a.shape == "melon" and not a.defect)
    redrawn.cover = draw_cover(random.Random(99), 256, "PNG")  # and one album gets a new cover
    redrawn.cover_ext = "png"
    week2 = crawl(sleeve_env, warehouse, store, WEEK2, later)
    assert week2["updated"] >= 2
    covers2 = {r["song_id"]: r for r in warehouse.query("SELECT * FROM covers")}
    songs2 = {r["song_id"]: r for r in warehouse.query("SELECT * FROM songs")}

    assert covers2.keys() == covers1.keys() and songs2.keys() == songs1.keys()
    assert {r["created_at"] for r in covers2.values()} == {WEEK1[1]}
    assert {r["first_seen_at"] for r in songs2.values()} == {WEEK1[1]}
    moved = {k for k in covers1 if covers2[k]["sha256"] != covers1[k]["sha256"]}
    assert len(moved) == len(redrawn.songs)
    assert {k: r["updated_at"] for k, r in covers2.items()} == {k: WEEK2[1] if k in moved else WEEK1[1]
                                                                for k in covers2}
    assert any(r["updated_at"] == WEEK2[1] for r in songs2.values())


def test_a_slow_warehouse_write_spaces_out_the_next_batch(warehouse, store):
    """A batch waits FLUSH_SHARE x as long as the last write took (writes take at most about
    1 / FLUSH_SHARE of the recording thread), never less than flush_interval_s."""
    import time

    from crawlers.crawl import FLUSH_SHARE, Crawler, Item

    class SlowWarehouse:
        def __init__(self, inner):
            self.inner = inner

        def upsert(self, table, rows):
            time.sleep(0.1)
            return self.inner.upsert(table, rows)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    crawler = Crawler(SlowWarehouse(warehouse), store, run_id="slow", stage="crawl:sample", interval=WEEK1,
                      flush_interval_s=0.05)
    assert crawler.flush_gap_s == 0.05
    crawler.record("melon:chart-row:1", [Item("melon:chart-row:1", None, outcome="quarantined", reason="duplicate")])
    started = time.monotonic()
    crawler.flush()  # a quarantine row and its ledger row: two slow upserts
    took = time.monotonic() - started
    assert took >= 0.2 and FLUSH_SHARE * took * 0.99 <= crawler.flush_gap_s <= FLUSH_SHARE * took
    assert warehouse.count("crawl_items") == warehouse.count("quarantine") == 1
    crawler.flush()  # nothing pending: no write, the spacing stays
    assert FLUSH_SHARE * took * 0.99 <= crawler.flush_gap_s


def test_songs_of_one_album_in_flight_at_once_fetch_its_cover_once(warehouse, store):
    """Many workers, 50 ms latency: several songs of an album reach their cover together; one
    fetches it, the others wait for it (a second request would spend the CDN's rate limit)."""
    from collections import Counter

    from crawlers.crawl import Crawler, sample_clients
    from crawlers.http import HttpClient

    catalogue = build_catalogue(n_songs=40, seed=5, defects=False)
    http = HttpClient("Sleeve-test/0 ( tests@example.invalid )", rate_per_host=50.0, max_workers=32)
    crawler = Crawler(warehouse, store, run_id="covers-once", stage="crawl:sample", interval=WEEK1)
    with SampleSite(catalogue, latency_s=0.05) as site:
        stats = crawler.run(http, [crawler.plan(kind, c, CrawlRequest()) for kind, c in sample_clients(http, site.urls)])
    http.close()
    covers = Counter(h.path for h in site.hits if h.path.startswith(("/cm2/", "/release/", "/img/")))
    shared = sum(1 for a in catalogue.albums if len(a.songs) > 1 and a.cover)
    assert stats["new"] == len(catalogue.songs) and shared >= 3  # albums whose songs share a cover
    assert covers and max(covers.values()) == 1, [p for p, n in covers.items() if n > 1]
    assert warehouse.query("SELECT COUNT(DISTINCT sha256) AS n FROM covers")[0]["n"] == len(store.list("covers"))
