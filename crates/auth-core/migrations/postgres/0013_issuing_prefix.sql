-- The token prefixes the services sharing this database issue with,
-- recorded when a service builds its issuer, so that the admin command line
-- issues keys those services accept. One row per prefix; recorded_at is the
-- latest time a service recorded it.
CREATE TABLE issuing_prefixes (
    prefix      TEXT COLLATE "C" PRIMARY KEY,
    recorded_at TIMESTAMPTZ NOT NULL
);
