-- covers.created_at is when a song's cover was first seen and never moves, so re-running an
-- earlier week builds the same snapshot; updated_at is when the cover (image, source or
-- attribution) last changed. songs already keeps first_seen_at / updated_at apart.
ALTER TABLE covers ADD COLUMN IF NOT EXISTS updated_at TIMESTAMP;
UPDATE covers SET updated_at = created_at WHERE updated_at IS NULL;
