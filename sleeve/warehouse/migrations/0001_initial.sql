-- Sleeve warehouse schema, BigQuery dialect (transpiled to DuckDB by sqlglot for the embedded
-- default). Every statement is re-runnable. JSON documents are stored as STRING for portability.
-- Time-keyed tables are partitioned by day in BigQuery (DuckDB ignores partitioning).

-- @key songs: song_id
CREATE TABLE IF NOT EXISTS songs (
  song_id STRING NOT NULL,          -- uuid5(source, source_id)
  source STRING NOT NULL,           -- musicbrainz | melon | sample
  source_id STRING NOT NULL,
  title STRING,
  artist STRING,
  album STRING,
  album_id STRING,
  release_date DATE,
  genre STRING,
  lyrics STRING,
  source_url STRING,
  content_hash STRING,              -- hash of the parsed record: changes mean "updated"
  crawl_run_id STRING,
  first_seen_at TIMESTAMP,
  updated_at TIMESTAMP
) PARTITION BY DATE(first_seen_at);

-- @key covers: song_id
CREATE TABLE IF NOT EXISTS covers (
  song_id STRING NOT NULL,
  sha256 STRING NOT NULL,           -- content address of the image bytes
  uri STRING NOT NULL,
  width INT64,
  height INT64,
  format STRING,
  size_bytes INT64,
  phash STRING,
  source_url STRING,
  license STRING,
  attribution STRING,
  created_at TIMESTAMP
) PARTITION BY DATE(created_at);

-- @key labels: song_id, labeller_version
CREATE TABLE IF NOT EXISTS labels (
  song_id STRING NOT NULL,
  labeller_version STRING NOT NULL, -- e.g. offline-1 or llm-<model>-p3
  labeller STRING,                  -- offline | llm
  labels STRING,                    -- JSON: moods, objects, palette, style, genre
  raw STRING,                       -- raw answer, kept for audit
  input_hash STRING,
  fallback_reason STRING,
  created_at TIMESTAMP
) PARTITION BY DATE(created_at);

-- @key prompts: prompt_id
CREATE TABLE IF NOT EXISTS prompts (
  prompt_id STRING NOT NULL,        -- uuid5(song_id, labeller_version, prompt_version)
  song_id STRING NOT NULL,
  labeller_version STRING,
  prompt_version STRING,
  positive STRING,
  negative STRING,
  captions STRING,                  -- JSON list of training caption variants
  created_at TIMESTAMP
) PARTITION BY DATE(created_at);

-- @key users: user_id
CREATE TABLE IF NOT EXISTS users (
  user_id STRING NOT NULL,          -- uuid5 of the email hash; never the email itself
  email_hash STRING,                -- HMAC-SHA256 keyed by SLEEVE_PII_KEY
  email_masked STRING,              -- a***@e***.com
  display_name STRING,
  is_demo BOOL,
  created_at TIMESTAMP
);

-- @key generation_requests: request_id
CREATE TABLE IF NOT EXISTS generation_requests (
  request_id STRING NOT NULL,
  song_id STRING,
  prompt_id STRING,
  user_id STRING,
  kind STRING,                      -- user | backfill | personalize | demo
  num_images INT64,
  model_version STRING,             -- NULL: the production model at generation time
  status STRING,                    -- pending | running | done | failed
  reason STRING,
  created_at TIMESTAMP,
  updated_at TIMESTAMP
) PARTITION BY DATE(created_at);

-- @key images: image_id
CREATE TABLE IF NOT EXISTS images (
  image_id STRING NOT NULL,         -- uuid5(request_id, image_index, model_version)
  request_id STRING NOT NULL,
  image_index INT64,
  uri STRING,
  thumb_uri STRING,
  sha256 STRING,
  prompt_id STRING,
  prompt_version STRING,
  seed INT64,
  model_version STRING,
  manifest_uri STRING,              -- the shard manifest that produced it
  width INT64,
  height INT64,
  steps INT64,
  created_at TIMESTAMP
) PARTITION BY DATE(created_at);

-- @key reviews: review_id
CREATE TABLE IF NOT EXISTS reviews (
  review_id STRING NOT NULL,
  image_id STRING NOT NULL,
  user_id STRING,
  rating INT64,                     -- 1..5
  comment STRING,
  created_at TIMESTAMP
) PARTITION BY DATE(created_at);

-- @key model_versions: version
CREATE TABLE IF NOT EXISTS model_versions (
  version STRING NOT NULL,
  kind STRING,                      -- style | dreambooth
  base_model STRING,
  adapter_uri STRING,
  manifest_uri STRING,
  metrics STRING,                   -- JSON
  status STRING,                    -- registered | promoted | rejected | archived
  alias STRING,                     -- production | candidate | archived | NULL
  user_id STRING,                   -- dreambooth adapters only
  training_run_id STRING,
  created_at TIMESTAMP,
  updated_at TIMESTAMP
);

-- @key training_runs: run_id
CREATE TABLE IF NOT EXISTS training_runs (
  run_id STRING NOT NULL,           -- uuid5(dag_id, data interval)
  dag_run_id STRING,
  kind STRING,                      -- style | dreambooth
  interval_start TIMESTAMP,
  interval_end TIMESTAMP,
  status STRING,                    -- running | trained | skipped | failed
  reason STRING,
  manifest_uri STRING,
  config STRING,                    -- JSON
  metrics STRING,                   -- JSON
  decision STRING,                  -- promote | keep
  decision_reasons STRING,          -- JSON list
  model_version STRING,
  gpu_seconds FLOAT64,
  started_at TIMESTAMP,
  finished_at TIMESTAMP
) PARTITION BY DATE(interval_start);

-- @key reports: week_start
CREATE TABLE IF NOT EXISTS reports (
  week_start DATE NOT NULL,
  week_end DATE,
  channel STRING,
  message_ts STRING,                -- Slack message timestamp: re-runs update, never re-post
  outbox_uri STRING,
  summary STRING,                   -- JSON of the numbers reported
  posted_at TIMESTAMP
);

-- Run bookkeeping for any stage: counts and state per (dag, stage, data interval).
-- @key stage_runs: dag_id, stage, interval_start
CREATE TABLE IF NOT EXISTS stage_runs (
  dag_id STRING NOT NULL,
  stage STRING NOT NULL,
  interval_start TIMESTAMP NOT NULL,
  interval_end TIMESTAMP,
  run_id STRING,
  status STRING,
  stats STRING,                     -- JSON counters
  started_at TIMESTAMP,
  finished_at TIMESTAMP
) PARTITION BY DATE(interval_start);
