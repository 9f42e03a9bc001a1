-- Personalised covers: one row per DreamBooth request, its state visible in the
-- warehouse, and an append-only audit of "forget me" deletions.

-- @key personalization_requests: request_id
CREATE TABLE IF NOT EXISTS personalization_requests (
  request_id STRING NOT NULL,       -- uuid5(user_id, photo hashes, class noun, prompts, count)
  user_id STRING NOT NULL,
  class_noun STRING,                -- woman | man | person | dog | ...
  token STRING,                     -- the user's rare identifier, e.g. "zvkt"
  photo_count INT64,
  photo_uris STRING,                -- JSON list of normalised, EXIF-free photos (users/<id>/photos/...)
  prompt_ids STRING,                -- JSON list of prompts to render (or NULL)
  song_ids STRING,                  -- JSON list of songs whose latest prompt is rendered (or NULL)
  num_images INT64,                 -- images per prompt
  status STRING,                    -- pending | trained | done | failed
  reason STRING,                    -- why it failed, in words (never a photo or an email)
  model_version STRING,             -- the per-user adapter in model_versions
  generation_request_ids STRING,    -- JSON list: generation_requests rows (kind personalize), one per prompt
  images INT64,
  gpu_seconds FLOAT64,
  created_at TIMESTAMP,
  updated_at TIMESTAMP
) PARTITION BY DATE(created_at);

-- @key deletion_audit: audit_id
CREATE TABLE IF NOT EXISTS deletion_audit (
  audit_id STRING NOT NULL,
  user_id STRING NOT NULL,
  requested_by STRING,              -- operator / CLI / DAG
  objects_deleted INT64,
  rows_deleted STRING,              -- JSON {table: rows}
  status STRING,                    -- done | failed
  reason STRING,
  deleted_at TIMESTAMP
) PARTITION BY DATE(deleted_at);
