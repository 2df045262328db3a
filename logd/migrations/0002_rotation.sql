-- Set while a rotation moves files (json-file max-size): start-up finishes a rotation
-- that a crash cut short before trusting committed_size.
ALTER TABLE logs ADD COLUMN rotating INTEGER NOT NULL DEFAULT 0;
