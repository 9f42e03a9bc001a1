"""
### crawl_songs

Song metadata and covers for the model: **crawl** (plan → fetch → validate → record) →
Asset `songs` (consumed by `label_songs`).

* Sources (`source` param, default `SLEEVE_CRAWL_SOURCE`): `sample` (embedded default: a
  synthetic catalogue served on loopback in the Melon and MusicBrainz shapes, crawled over real
  HTTP with the production client code), `musicbrainz` (MusicBrainz + Cover Art Archive, ≤ 1
  request/s per host, User-Agent with `SLEEVE_CRAWL_CONTACT`), `melon` (chart → song → album
  pages; robots.txt obeyed unless the operator sets `SLEEVE_CRAWL_OBEY_ROBOTS=false`).
* Writes `songs` and `covers` idempotently (`song_id = uuid5(source, source_id)`; a content hash
  tells new / updated / unchanged); covers are stored content-addressed with source URL,
  licence and attribution. Bad input goes to `quarantine` with a reason; the rest continues.
* Weekly data interval; the run is keyed by it, so a re-run or a retry resumes the same crawl
  (items already recorded are skipped) and a backfill crawls once per week. Stats
  (fetched/new/updated/unchanged/quarantined/errors) go to `stage_runs` (`crawl:<source>`).
* Manual runs: `source`, `chart` (Melon), `limit` (chart songs / releases), `since` (skip songs
  released before this date).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task
from sleeve_airflow.assets import SONGS
from sleeve_airflow.dag_defaults import DEFAULT_ARGS, START_DATE, weekly_interval


@dag(
    dag_id="crawl_songs",
    schedule=weekly_interval(),
    start_date=START_DATE,
    catchup=False,
    max_active_runs=1,  # one crawler per source at a time keeps the per-host rate limit global
    default_args=DEFAULT_ARGS,
    params={
        "source": Param("default", enum=["default", "sample", "musicbrainz", "melon"],
                        description="Where to crawl; 'default' uses SLEEVE_CRAWL_SOURCE (sample if unset)"),
        "chart": Param("top100", enum=["top100", "day", "week", "month"], description="Melon chart to crawl"),
        "limit": Param(None, type=["null", "integer"], minimum=1, maximum=5000,
                       description="At most this many chart songs (Melon) or releases (MusicBrainz)"),
        "since": Param(None, type=["null", "string"], format="date",
                       description="Skip songs released before this date (YYYY-MM-DD)"),
    },
    tags=["sleeve", "crawl"],
    doc_md=__doc__,
)
def crawl_songs():
    @task(multiple_outputs=False, outlets=[SONGS])
    def crawl(**context) -> dict:
        """Crawl the source for this data interval; publish the stats with the Asset event."""
        from sleeve_airflow.context import data_interval, param_datetime
        from sleeve_airflow.hooks import ObjectStoreHook, WarehouseHook
        from sleeve_airflow.preflight import preflight

        from crawlers.crawl import CrawlRequest, run_crawl

        params, settings = context["params"], preflight("warehouse", "store")
        source = settings.crawl_source if params["source"] == "default" else params["source"]
        since = param_datetime(context, "since")
        request = CrawlRequest(source=source, chart=params["chart"], limit=params["limit"],
                               since=since.date() if since else None, obey_robots=settings.crawl_obey_robots)
        stats = run_crawl(request, settings=settings, warehouse=WarehouseHook().warehouse,
                          store=ObjectStoreHook().store, interval=data_interval(context))
        context["outlet_events"][SONGS].extra = {"source": source, **stats}
        return stats

    crawl()


crawl_songs()
