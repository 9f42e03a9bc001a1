-- The canary: a challenger that passed the offline gate serves a share of the next week's
-- requests; the users' ratings of that week decide canary -> production | retired.
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS canary_of STRING;          -- production version it was compared with
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS canary_started_at TIMESTAMP;
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS decided_at TIMESTAMP;
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS decision_reason STRING;    -- why promoted or retired

-- @key canary_decisions: version
CREATE TABLE IF NOT EXISTS canary_decisions (
  version STRING NOT NULL,          -- the canary
  production_version STRING,        -- what it was compared with
  interval_start TIMESTAMP,         -- the week whose ratings decided
  interval_end TIMESTAMP,
  decision STRING,                  -- promote | retire
  reason STRING,
  evidence STRING,                  -- JSON: per-arm requests, means, the interval, the rule
  decided_at TIMESTAMP
);
