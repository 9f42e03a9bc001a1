-- Labelling bookkeeping: which model answered, what it cost, whether the LLM cache
-- answered instead. Per-run totals go to stage_runs.stats; these columns let a backfill or an
-- audit trace the cost of one song's labels. The LLM answer cache itself lives in the object
-- store (immutable, content-addressed objects under llm-cache/), not in a table.
ALTER TABLE labels ADD COLUMN IF NOT EXISTS model STRING;
ALTER TABLE labels ADD COLUMN IF NOT EXISTS prompt_tokens INT64;
ALTER TABLE labels ADD COLUMN IF NOT EXISTS completion_tokens INT64;
ALTER TABLE labels ADD COLUMN IF NOT EXISTS cache_hit BOOL;
