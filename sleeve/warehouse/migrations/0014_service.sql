-- The web service (service/): accounts and the inputs behind each user request.

-- Sign-in secrets live apart from `users`, whose columns other stages and reports read: a
-- password hash (argon2id, salted) never leaves this table.
-- @key service_accounts: user_id
CREATE TABLE IF NOT EXISTS service_accounts (
  user_id STRING NOT NULL,          -- users.user_id (uuid5 of the email hash)
  password_hash STRING NOT NULL,    -- argon2id, with its own salt and parameters
  created_at TIMESTAMP,
  updated_at TIMESTAMP
);

-- What the user typed into the create form, kept with the request it produced, so every
-- cover opens the inputs it was made from (the prompt built from them is in `prompts`).
-- @key cover_inputs: request_id
CREATE TABLE IF NOT EXISTS cover_inputs (
  request_id STRING NOT NULL,       -- generation_requests.request_id
  user_id STRING NOT NULL,
  title STRING,
  artist STRING,
  genre STRING,
  lyrics STRING,
  keywords STRING,                  -- JSON list
  style STRING,
  colors STRING,                    -- JSON list
  include_person BOOL,
  created_at TIMESTAMP
) PARTITION BY DATE(created_at);
