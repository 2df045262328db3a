-- How far the gateway has recorded another service's event journal (containerd-svc's
-- container events), so events from while the gateway was down are recorded once.
CREATE TABLE cursors (
    source TEXT PRIMARY KEY,
    seq    INTEGER NOT NULL
);
