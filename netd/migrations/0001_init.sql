-- Networks known to netd. The three Docker networks (bridge, host, none) are created on
-- first start; subnet/gateway/bridge are empty for host and none.
CREATE TABLE networks (
    id       TEXT PRIMARY KEY,          -- 64 hex
    name     TEXT NOT NULL UNIQUE,
    driver   TEXT NOT NULL,             -- bridge | host | null
    subnet   TEXT NOT NULL DEFAULT '',  -- e.g. 172.18.0.0/16
    gateway  TEXT NOT NULL DEFAULT '',  -- e.g. 172.18.0.1
    bridge   TEXT NOT NULL DEFAULT '',  -- kernel bridge name
    created  TEXT NOT NULL,             -- RFC 3339
    labels   TEXT NOT NULL DEFAULT '{}',-- JSON object
    internal INTEGER NOT NULL DEFAULT 0
);

-- One endpoint per container. The row is also the IPAM reservation: an address is in use
-- exactly while a row holds it.
CREATE TABLE endpoints (
    container_id TEXT PRIMARY KEY,
    network_id   TEXT NOT NULL REFERENCES networks(id),
    endpoint_id  TEXT NOT NULL,
    ip           TEXT,                  -- NULL for host/none
    prefix_len   INTEGER NOT NULL DEFAULT 0,
    mac          TEXT NOT NULL DEFAULT '',
    host_veth    TEXT NOT NULL DEFAULT '',
    netns_path   TEXT NOT NULL DEFAULT '',
    created      TEXT NOT NULL
);
CREATE UNIQUE INDEX endpoints_network_ip ON endpoints(network_id, ip) WHERE ip IS NOT NULL;
-- Veth names derive from the short container id; two ids sharing it must not collide.
CREATE UNIQUE INDEX endpoints_host_veth ON endpoints(host_veth) WHERE host_veth != '';
