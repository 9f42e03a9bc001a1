-- Weekly report: task failures recorded by the failure callback (Airflow 3 tasks
-- cannot read Airflow's metadata DB), and what the notifier delivered per week.

-- @key task_failures: dag_id, task_id, run_id, try_number
CREATE TABLE IF NOT EXISTS task_failures (
  dag_id STRING NOT NULL,
  task_id STRING NOT NULL,
  run_id STRING NOT NULL,
  try_number INT64 NOT NULL,
  interval_start TIMESTAMP,
  interval_end TIMESTAMP,
  error STRING,                     -- exception class only: messages may quote personal data
  failed_at TIMESTAMP
) PARTITION BY DATE(failed_at);

-- Which Slack files belong to a week's report ({name: {id, sha256}}), so a re-run replaces
-- only images that changed instead of uploading them again.
ALTER TABLE reports ADD COLUMN IF NOT EXISTS files STRING;
ALTER TABLE reports ADD COLUMN IF NOT EXISTS transport STRING;
