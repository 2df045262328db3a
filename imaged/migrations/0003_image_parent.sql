-- The local image an image was made from (docker commit, build): Docker's `Parent`,
-- local metadata that is not part of the config. '' when pulled or loaded.
ALTER TABLE images ADD COLUMN parent TEXT NOT NULL DEFAULT '';
