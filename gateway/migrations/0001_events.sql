-- `docker events`: what happened, in order, kept so `--since` replays across restarts.
CREATE TABLE events (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    time_nano  INTEGER NOT NULL,
    type       TEXT NOT NULL,             -- container | image | network | volume
    action     TEXT NOT NULL,             -- create, start, die, pull, connect, ...
    actor_id   TEXT NOT NULL,
    attributes TEXT NOT NULL DEFAULT '{}' -- JSON object of strings
);
CREATE INDEX events_time ON events(time_nano);
