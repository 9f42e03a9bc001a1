-- Registry history for one-command rollback: which production version a promotion replaced.
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS previous_version STRING;
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS promoted_at TIMESTAMP;
