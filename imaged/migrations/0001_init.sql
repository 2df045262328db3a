-- Images are keyed by their ID: "sha256:<hex of the raw config blob>".
CREATE TABLE images (
    id              TEXT PRIMARY KEY,
    config          BLOB NOT NULL,
    manifest_digest TEXT NOT NULL,
    -- JSON array of diff IDs, bottom layer first.
    diff_ids        TEXT NOT NULL,
    size            INTEGER NOT NULL,
    created         TEXT NOT NULL,
    os              TEXT NOT NULL,
    architecture    TEXT NOT NULL,
    pulled_at       TEXT NOT NULL
);

-- Familiar form ("busybox:latest", "127.0.0.1:5000/busybox:latest"); one image per tag.
CREATE TABLE tags (
    repo_tag TEXT PRIMARY KEY,
    image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE INDEX tags_image ON tags(image_id);

-- Familiar form "<repo>@sha256:<manifest digest>".
CREATE TABLE repo_digests (
    repo_digest TEXT PRIMARY KEY,
    image_id    TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
);
CREATE INDEX repo_digests_image ON repo_digests(image_id);

-- Unpacked layers, by chain ID. A row exists only once the layer's directory was renamed
-- into place: a directory without a row is debris from a crash.
CREATE TABLE layers (
    chain_id  TEXT PRIMARY KEY,
    diff_id   TEXT NOT NULL,
    size      INTEGER NOT NULL,
    parent    TEXT
);

CREATE TABLE snapshots (
    container_id TEXT PRIMARY KEY,
    image_id     TEXT NOT NULL,
    rootfs_path  TEXT NOT NULL,
    upper_dir    TEXT NOT NULL,
    work_dir     TEXT NOT NULL,
    -- JSON array of the lower dirs as mounted, topmost first.
    lower_dirs   TEXT NOT NULL
);
