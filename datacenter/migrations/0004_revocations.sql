-- The data centre's own deny-list (eport-datacenter revoke / unrevoke / revoked): a card
-- certificate by its number (lower-case hex without leading zeros, as the serial), or every
-- certificate of a card by its card id. The CAs' own lists are the CRL files of the trust
-- directory; this table is for what the data centre refuses on its own account (a lost card
-- reported before its CA lists it).
CREATE TABLE revocations (
    kind       TEXT    NOT NULL CHECK (kind IN ('certificate', 'card')),
    value      TEXT    NOT NULL,
    reason     TEXT    NOT NULL DEFAULT '',
    revoked_at INTEGER NOT NULL,
    PRIMARY KEY (kind, value)
) WITHOUT ROWID;
