-- Volumes (local driver). mountpoint = <data-root>/volumed/volumes/<name>/_data.
CREATE TABLE volumes (
    name       TEXT PRIMARY KEY NOT NULL,
    driver     TEXT NOT NULL DEFAULT 'local',
    mountpoint TEXT NOT NULL,
    created_at TEXT NOT NULL,
    labels     TEXT NOT NULL DEFAULT '{}',
    options    TEXT NOT NULL DEFAULT '{}',
    anonymous  INTEGER NOT NULL DEFAULT 0
);

-- Which container uses which volume where. volume_name is NULL for the one row that
-- records a container attached with no volumes at all.
CREATE TABLE usage (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    container_id TEXT NOT NULL,
    volume_name  TEXT REFERENCES volumes(name),
    destination  TEXT NOT NULL DEFAULT '',
    read_only    INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX usage_container ON usage(container_id);
CREATE INDEX usage_volume ON usage(volume_name);
