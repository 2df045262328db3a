-- The compressed blob a layer was pulled as, kept beside its diff dir
-- (layers/<chain>/blob) so it can be pushed and saved byte for byte. Empty for layers
-- pulled before blobs were kept.
ALTER TABLE layers ADD COLUMN blob_digest TEXT NOT NULL DEFAULT '';
ALTER TABLE layers ADD COLUMN blob_media_type TEXT NOT NULL DEFAULT '';
ALTER TABLE layers ADD COLUMN blob_size INTEGER NOT NULL DEFAULT 0;
