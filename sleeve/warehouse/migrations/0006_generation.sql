-- Batch generation. Per-request overrides of the generation settings (NULL: the
-- DAG's defaults) and the data interval of the batch_generate run that generated the request:
-- a re-run of that interval selects the same requests again (and finds their images stored),
-- while other intervals leave them alone.
ALTER TABLE generation_requests ADD COLUMN IF NOT EXISTS seed INT64;
ALTER TABLE generation_requests ADD COLUMN IF NOT EXISTS width INT64;
ALTER TABLE generation_requests ADD COLUMN IF NOT EXISTS height INT64;
ALTER TABLE generation_requests ADD COLUMN IF NOT EXISTS steps INT64;
ALTER TABLE generation_requests ADD COLUMN IF NOT EXISTS batch_interval_start TIMESTAMP;
