CREATE TABLE containers (
    id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL UNIQUE,
    -- prost-encoded berth.containers.v1.ContainerSpec
    spec BLOB NOT NULL,
    created TEXT NOT NULL,
    state TEXT NOT NULL,
    pid INTEGER NOT NULL DEFAULT 0,
    exit_code INTEGER NOT NULL DEFAULT 0,
    started_at TEXT NOT NULL DEFAULT '',
    finished_at TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    restart_count INTEGER NOT NULL DEFAULT 0,
    -- 1 while a shim may exist for this container (started and not yet shut down)
    has_shim INTEGER NOT NULL DEFAULT 0
);
