-- The EndpointSettings a client gave (IPAMConfig, Links, DriverOpts, ...), shown back
-- in inspect as given; and a MAC address the client chose (else derived from the IP).
ALTER TABLE endpoints ADD COLUMN settings TEXT NOT NULL DEFAULT '';

-- The IPAM object a client gave at create (Driver, Options, Config with its
-- AuxiliaryAddresses), shown back as given; auxiliary addresses are never allocated.
ALTER TABLE networks ADD COLUMN ipam TEXT NOT NULL DEFAULT '';
