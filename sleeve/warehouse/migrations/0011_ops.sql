-- Outbox first: a week's report row is written (pending) before the post and marked delivered
-- after it, so an outage delays a report but never loses it; a later delivery sends what is pending.
ALTER TABLE reports ADD COLUMN IF NOT EXISTS status STRING;        -- pending | delivered (NULL: delivered before 0011)
ALTER TABLE reports ADD COLUMN IF NOT EXISTS delivered_at TIMESTAMP;
