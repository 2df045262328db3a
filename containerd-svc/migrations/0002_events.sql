-- The lifecycle events (create, start, die, destroy) in order, so a gateway that was down
-- when a container died still hears of it: it asks for everything after its last seq.
CREATE TABLE events (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    -- The ContainerEvent message, protobuf-encoded (its seq field unset).
    event BLOB NOT NULL
);
