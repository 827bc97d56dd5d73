-- The data centre's first schema. Times are integer microseconds since the epoch (UTC);
-- *_date columns are YYYY-MM-DD in China time (UTC+8), the calendar of queries and statements.

CREATE TABLE documents (
    id                 INTEGER PRIMARY KEY,
    temporary_number   TEXT    NOT NULL UNIQUE,
    unified_number     TEXT    UNIQUE,
    entry_number       TEXT    UNIQUE,
    pre_entry_number   TEXT,
    status             INTEGER NOT NULL,
    document_json      TEXT    NOT NULL,
    document_type      TEXT    NOT NULL,
    direction          TEXT    NOT NULL,
    declaration_customs TEXT   NOT NULL,
    enterprise_code    TEXT    NOT NULL,
    client_reference   TEXT,
    saved_by_card      TEXT    NOT NULL,
    declared_by_card   TEXT    NOT NULL DEFAULT '',
    saved_at           INTEGER NOT NULL,
    save_date          TEXT    NOT NULL,
    modified_at        INTEGER NOT NULL,
    uploaded_at        INTEGER,
    declared_at        INTEGER,
    reviewed_at        INTEGER,
    declaration_count  INTEGER NOT NULL DEFAULT 0,
    fee_charged        INTEGER NOT NULL DEFAULT 0,
    reject_reason_code TEXT    NOT NULL DEFAULT '',
    reject_reason      TEXT    NOT NULL DEFAULT ''
);
-- Save is idempotent on the client's reference within an enterprise (NULLs never collide).
CREATE UNIQUE INDEX documents_client_reference ON documents (enterprise_code, client_reference);
CREATE INDEX documents_enterprise_date ON documents (enterprise_code, save_date);

-- Named counters for the numbers; read and bumped inside the write transaction.
CREATE TABLE sequences (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- Every nonce accepted, with its signing time, so old ones can be pruned once outside the
-- clock-skew window (a request that old is refused as stale anyway).
CREATE TABLE nonces (
    nonce     TEXT    PRIMARY KEY,
    signed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX nonces_signed_at ON nonces (signed_at);

-- AUTOINCREMENT: a sequence is never reused, so a client's "after" cursor stays valid.
CREATE TABLE receipts (
    sequence         INTEGER PRIMARY KEY AUTOINCREMENT,
    document_id      INTEGER NOT NULL REFERENCES documents (id),
    enterprise_code  TEXT    NOT NULL,
    kind             INTEGER NOT NULL,
    temporary_number TEXT    NOT NULL,
    unified_number   TEXT    NOT NULL DEFAULT '',
    entry_number     TEXT    NOT NULL DEFAULT '',
    pre_entry_number TEXT    NOT NULL DEFAULT '',
    reason_code      TEXT    NOT NULL DEFAULT '',
    reason           TEXT    NOT NULL DEFAULT '',
    time             INTEGER NOT NULL,
    message_zh       TEXT    NOT NULL,
    message_en       TEXT    NOT NULL
);
CREATE INDEX receipts_enterprise ON receipts (enterprise_code, sequence);

-- One row per charged entry: the primary key is what makes the fee "once per entry".
CREATE TABLE fees (
    document_id     INTEGER PRIMARY KEY REFERENCES documents (id),
    enterprise_code TEXT    NOT NULL,
    charged_at      INTEGER NOT NULL,
    charge_date     TEXT    NOT NULL,
    amount_fen      INTEGER NOT NULL
);
CREATE INDEX fees_enterprise_date ON fees (enterprise_code, charge_date);

-- Declarations waiting for the review stand-in; a restart resumes them.
CREATE TABLE reviews (
    document_id INTEGER PRIMARY KEY REFERENCES documents (id),
    due_at      INTEGER NOT NULL,
    declaration INTEGER NOT NULL
);
CREATE INDEX reviews_due ON reviews (due_at);
