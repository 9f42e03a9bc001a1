-- Crawl bookkeeping: a per-item ledger that makes crawls resumable and their stats
-- exact, and a quarantine for bad input. BigQuery dialect; re-runnable.

-- One row per item of a crawl run: what happened to it. A work item (a Melon song, a
-- MusicBrainz release) is done once its rows are here, so a resumed run skips it.
-- @key crawl_items: run_id, item_key
CREATE TABLE IF NOT EXISTS crawl_items (
  run_id STRING NOT NULL,           -- uuid5(dag_id, source, data interval)
  work_key STRING NOT NULL,         -- the unit fetched: melon:song:<id> | musicbrainz:release:<mbid>
  item_key STRING NOT NULL,         -- the song (or page) the outcome is about
  source STRING,
  song_id STRING,
  outcome STRING,                   -- new | updated | unchanged | quarantined | filtered | blocked | error
  reason STRING,
  url STRING,
  interval_start TIMESTAMP,
  updated_at TIMESTAMP
) PARTITION BY DATE(interval_start);

-- Bad input with the reason, kept for inspection; nothing bad reaches songs/covers.
-- @key quarantine: quarantine_id
CREATE TABLE IF NOT EXISTS quarantine (
  quarantine_id STRING NOT NULL,    -- uuid5(run_id, item_key)
  dag_id STRING,
  stage STRING,                     -- e.g. crawl:melon
  run_id STRING,
  item_key STRING,
  url STRING,
  reason STRING,                    -- malformed_page | missing_field | bad_value | not_image | cover_too_large |
                                    -- cover_too_small | bad_aspect | not_found | duplicate
  detail STRING,
  created_at TIMESTAMP
) PARTITION BY DATE(created_at);
