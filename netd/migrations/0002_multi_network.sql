-- A container may join several networks: one endpoint per (container, network), each
-- with its own interface in the container's namespace. The namespace itself belongs to a
-- sandbox row, so a container disconnected from every network keeps it.
CREATE TABLE endpoints_v2 (
    container_id   TEXT NOT NULL,
    network_id     TEXT NOT NULL REFERENCES networks(id),
    endpoint_id    TEXT NOT NULL,
    ip             TEXT,
    prefix_len     INTEGER NOT NULL DEFAULT 0,
    mac            TEXT NOT NULL DEFAULT '',
    host_veth      TEXT NOT NULL DEFAULT '',
    netns_path     TEXT NOT NULL DEFAULT '',
    created        TEXT NOT NULL,
    ifname         TEXT NOT NULL DEFAULT 'eth0',
    aliases        TEXT NOT NULL DEFAULT '[]',  -- JSON array
    PRIMARY KEY (container_id, network_id)
);
INSERT INTO endpoints_v2 (container_id, network_id, endpoint_id, ip, prefix_len, mac, host_veth, netns_path, created)
    SELECT container_id, network_id, endpoint_id, ip, prefix_len, mac, host_veth, netns_path, created FROM endpoints;
DROP TABLE endpoints;
ALTER TABLE endpoints_v2 RENAME TO endpoints;
CREATE UNIQUE INDEX endpoints_network_ip ON endpoints(network_id, ip) WHERE ip IS NOT NULL;
CREATE UNIQUE INDEX endpoints_host_veth ON endpoints(host_veth) WHERE host_veth != '';
CREATE UNIQUE INDEX endpoints_ifname ON endpoints(container_id, ifname) WHERE ifname != '';

-- One per container with a network namespace (not for --network host).
CREATE TABLE sandboxes (
    container_id   TEXT PRIMARY KEY,
    container_name TEXT NOT NULL DEFAULT '',
    netns_path     TEXT NOT NULL,
    dns_servers    TEXT NOT NULL DEFAULT '[]',  -- JSON array of the container's --dns
    created        TEXT NOT NULL
);
INSERT INTO sandboxes (container_id, netns_path, created)
    SELECT container_id, netns_path, created FROM endpoints WHERE netns_path != '';

-- Published ports. The row is also the host port's reservation.
CREATE TABLE ports (
    container_id   TEXT NOT NULL,
    network_id     TEXT NOT NULL,
    protocol       TEXT NOT NULL,               -- tcp | udp | sctp
    host_ip        TEXT NOT NULL DEFAULT '',    -- '' = every host address
    host_port      INTEGER NOT NULL,
    container_port INTEGER NOT NULL,
    PRIMARY KEY (container_id, protocol, host_ip, host_port, container_port)
);
CREATE UNIQUE INDEX ports_host ON ports(protocol, host_ip, host_port);

ALTER TABLE networks ADD COLUMN ip_range TEXT NOT NULL DEFAULT '';
ALTER TABLE networks ADD COLUMN options TEXT NOT NULL DEFAULT '{}';
