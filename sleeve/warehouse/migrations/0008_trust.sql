-- Trust what the loop decides. Lineage: the adapters each generated image was made with
-- (JSON list of {version, kind, user_id}, from the shard manifest's model spec), so the style
-- snapshot leaves out every image a personal adapter made, whatever its version string.
-- Perceptual hashes stored once per image, so a weekly snapshot never re-reads old images
-- (covers.phash and covers.width/height exist since 0001).
ALTER TABLE images ADD COLUMN IF NOT EXISTS adapters STRING;
ALTER TABLE images ADD COLUMN IF NOT EXISTS phash STRING;
