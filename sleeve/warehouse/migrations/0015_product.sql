-- Product shots: a product photo + its information -> cut-out, generated background,
-- composite. One row per product asked for (its state and prompt), one row per shot made.
-- Reviews of a shot go into reviews with the shot id as image_id (sleeve/reviews.py accepts
-- ids of images and of product_shots); shots have no images row, so they never reach the
-- album-cover snapshot or the cover grid.

-- @key product_requests: request_id
CREATE TABLE IF NOT EXISTS product_requests (
  request_id STRING NOT NULL,       -- uuid5 of the product as given + the settings that decide the pixels
  product_id STRING,                -- uuid5(photo sha256, product info): the same product across requests
  name STRING,
  info STRING,                      -- JSON: the validated product information (name, category, colour, ...)
  photo_uri STRING,                 -- the upload
  photo_sha256 STRING,
  placements STRING,                -- JSON list of {name, x, y, scale, requested_scale}
  variants INT64,                   -- backgrounds per product (each shot at every placement)
  model_version STRING,             -- background model: base or a registered version
  matting STRING,                   -- opencv | rembg
  prompt_source STRING,             -- offline | llm
  prompt_version STRING,            -- which prompter (e.g. product-offline-b1, product-llm-<model>-b1)
  fallback_reason STRING,           -- why the LLM's answer was not used, if it was not
  prompt STRING,                    -- JSON: scene, lighting, surface, palette, mood
  positive STRING,
  negative STRING,
  status STRING,                    -- pending | done | failed
  reason STRING,                    -- why it failed, in words
  shots INT64,
  created_at TIMESTAMP,
  updated_at TIMESTAMP
) PARTITION BY DATE(created_at);

-- @key product_shots: shot_id
CREATE TABLE IF NOT EXISTS product_shots (
  shot_id STRING NOT NULL,          -- uuid5(request_id, variant, placement); reviews.image_id for product shots
  request_id STRING NOT NULL,
  product_id STRING,
  name STRING,
  variant INT64,
  position STRING,                  -- centre | left | right | bottom | xy
  x FLOAT64,
  y FLOAT64,
  scale FLOAT64,                    -- the product's longer side as a share of the frame
  moved BOOL,                       -- the requested spot was moved to keep the product in frame
  uri STRING,                       -- the shot (PNG with prompt, seed and model in its metadata)
  thumb_uri STRING,
  sha256 STRING,
  width INT64,
  height INT64,
  upload_uri STRING,                -- lineage: the photo as uploaded,
  photo_uri STRING,                 -- the decoded, upright photo the cut-out was made from,
  mask_uri STRING,                  -- its alpha mask,
  matting STRING,                   -- which backend made it (opencv@grabcut-1, rembg@u2net, alpha),
  background_uri STRING,            -- the generated background,
  prompt STRING,                    -- and its prompt,
  negative STRING,
  prompt_version STRING,
  seed INT64,                       -- seed, and the model that drew it
  model_version STRING,
  base_model STRING,
  steps INT64,
  guidance_scale FLOAT64,
  harmonise FLOAT64,                -- img2img strength of the harmonisation pass (0 = none)
  fidelity_psnr_db FLOAT64,         -- lowest masked PSNR over the steps (100 = identical pixels)
  fidelity STRING,                  -- JSON: masked PSNR after each step
  manifest_uri STRING,
  created_at TIMESTAMP
) PARTITION BY DATE(created_at);
