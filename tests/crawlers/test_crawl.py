"""End to end: the real clients crawl the loopback sample site into the warehouse and store."""

import json
from datetime import date

import pytest

from crawlers.catalogue import build_catalogue
from crawlers.crawl import CrawlRequest, run_crawl
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
    # 12 songs: one page without a title, two songs of an album whose cover is HTML, two of a
    # release with a 32 px cover, plus one chart row listing a song twice
    assert reasons == ["cover_too_small", "cover_too_small", "duplicate", "missing_field", "not_image", "not_image"]
    assert stats["new"] == len(songs) == 7 and stats["quarantined"] == 6 and stats["errors"] == 0
    assert stats["status"] == "done"
    assert {s["source"] for s in songs} == {"sample"} and all(s["source_url"].startswith("sample://") for s in songs)
    assert any(s["lyrics"] and any("가" <= c <= "힣" for c in s["lyrics"]) for s in songs)
    assert len({s["genre"] for s in songs}) >= 3
    # every cover: content-addressed object, licence + attribution + source URL; albums share one object
    assert len(covers) == len(songs)
    assert all(c["license"] and c["attribution"] and c["source_url"].startswith("sample://") for c in covers)
    assert all(store.exists(c["uri"].removeprefix(store.url + "/")) for c in covers)
    assert len(store.list("covers")) == len({c["sha256"] for c in covers}) < len(covers)
    stage = warehouse.query("SELECT * FROM stage_runs WHERE dag_id = 'crawl_songs'")
    assert len(stage) == 1 and stage[0]["stage"] == "crawl:sample" and stage[0]["status"] == "done"
    assert json.loads(stage[0]["stats"])["new"] == 7

    before = snapshot(warehouse)
    assert crawl(sleeve_env, warehouse, store) == stats  # same interval again: same state
    assert snapshot(warehouse) == before and warehouse.count("stage_runs") == 1

    week2 = crawl(sleeve_env, warehouse, store, WEEK2, build_catalogue(n_songs=12, seed=3, revision=1))
    assert week2["new"] == 0 and week2["updated"] >= 1 and week2["unchanged"] >= 1
    assert week2["updated"] + week2["unchanged"] == 7 and warehouse.count("songs") == 7


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
    assert not set(resumed) & done_before
    assert stats["new"] == 7 and stats["quarantined"] == 6  # the same totals as an uninterrupted run


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
    assert again["errors"] == 0 and again["status"] == "done"
    assert warehouse.query("SELECT COUNT(*) AS n FROM crawl_items WHERE outcome = 'error'")[0]["n"] == 0


def test_limit_and_since(sleeve_env, warehouse, store):
    stats = crawl(sleeve_env, warehouse, store, request=CrawlRequest(limit=2))
    assert stats["fetched"] <= 2 + 2 * 2 + 1  # 2 chart songs, 2 releases of 2 tracks, the duplicate row
    late = crawl(sleeve_env, warehouse, store, WEEK2, request=CrawlRequest(since=date(2030, 1, 1)))
    assert late["new"] == 0 and late["filtered"] >= 1


def test_bad_request_is_named():
    with pytest.raises(ValueError, match="source='spotify'"):
        CrawlRequest(source="spotify")
    with pytest.raises(ValueError, match="limit=0"):
        CrawlRequest(limit=0)
