-- The token prefixes the services sharing this file issue with, recorded
-- when a service builds its issuer, so that the admin command line issues
-- keys those services accept. One row per prefix; recorded_at (unix µs) is
-- the latest time a service recorded it.
CREATE TABLE issuing_prefixes (
    prefix      TEXT    NOT NULL PRIMARY KEY,
    recorded_at INTEGER NOT NULL
) STRICT;
