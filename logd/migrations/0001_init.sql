-- One row per container log. committed_size is the length of the log file that is
-- durable and acknowledged: bytes past it were never acked and are cut off on start.
CREATE TABLE logs (
    container_id   TEXT PRIMARY KEY NOT NULL,
    driver         TEXT NOT NULL,
    log_path       TEXT NOT NULL,
    options        TEXT NOT NULL DEFAULT '{}',
    live           INTEGER NOT NULL DEFAULT 0,
    committed_size INTEGER NOT NULL DEFAULT 0,
    created_at     TEXT NOT NULL
);

-- The highest stored seq per (container, shim session): updated in the same
-- transaction as committed_size, so the cursor and the file always agree.
CREATE TABLE cursors (
    container_id TEXT NOT NULL REFERENCES logs(container_id) ON DELETE CASCADE,
    session      TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    PRIMARY KEY (container_id, session)
);
