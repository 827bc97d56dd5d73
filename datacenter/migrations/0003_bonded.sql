-- Bonded verification (保税核查, bonded manual): its documents, their pending reviews, the e-book
-- records their items are checked against, and receipts shared with the customs declarations.

-- One row per bonded verification document. enterprise_code is the enterprise verified (核查
-- 企业, the principal); agent_code the enterprise of the card that first saved it (itself or
-- an agent acting under grants). Dates of the document are YYYYMMDD as the bonded manual writes them.
CREATE TABLE bonded_documents (
    id                 INTEGER PRIMARY KEY,
    temporary_number   TEXT    NOT NULL UNIQUE,
    unified_number     TEXT    UNIQUE,
    status             INTEGER NOT NULL,
    document_json      TEXT    NOT NULL,
    internal_number    TEXT    NOT NULL,
    enterprise_code    TEXT    NOT NULL,
    enterprise_name    TEXT    NOT NULL DEFAULT '',
    management_mode    TEXT    NOT NULL DEFAULT '',
    agent_code         TEXT    NOT NULL,
    client_reference   TEXT,
    saved_by_card      TEXT    NOT NULL,
    declared_by_card   TEXT    NOT NULL DEFAULT '',
    stocktaking_date   TEXT    NOT NULL DEFAULT '',
    declaration_date   TEXT    NOT NULL DEFAULT '',
    saved_at           INTEGER NOT NULL,
    modified_at        INTEGER NOT NULL,
    declared_at        INTEGER,
    reviewed_at        INTEGER,
    declaration_count  INTEGER NOT NULL DEFAULT 0,
    redeclared         INTEGER NOT NULL DEFAULT 0,
    reject_reason_code TEXT    NOT NULL DEFAULT '',
    reject_reason      TEXT    NOT NULL DEFAULT ''
);
-- 企业内部编号 不允许重复 (bonded manual §2.2.1.2), per verified enterprise.
CREATE UNIQUE INDEX bonded_internal_number ON bonded_documents (enterprise_code, internal_number);
-- SaveBonded is idempotent on the saving enterprise's client reference (NULLs never collide).
CREATE UNIQUE INDEX bonded_client_reference ON bonded_documents (agent_code, client_reference);
CREATE INDEX bonded_agent ON bonded_documents (agent_code);
CREATE INDEX bonded_declaration_date ON bonded_documents (declaration_date);

-- Declarations waiting for the review stand-in, as `reviews` for the customs documents.
CREATE TABLE bonded_reviews (
    bonded_document_id INTEGER PRIMARY KEY REFERENCES bonded_documents (id),
    due_at             INTEGER NOT NULL,
    declaration        INTEGER NOT NULL
);
CREATE INDEX bonded_reviews_due ON bonded_reviews (due_at);

-- E-books (电子账册) and their record items (备案序号), imported with `eport-datacenter ebook
-- import`: items of e-book management modes must match them (bonded manual §2.2.1.3).
CREATE TABLE ebooks (
    ebook_number    TEXT    PRIMARY KEY,
    enterprise_code TEXT    NOT NULL,
    imported_at     INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE ebook_items (
    ebook_number       TEXT NOT NULL REFERENCES ebooks (ebook_number) ON DELETE CASCADE,
    record_item_number TEXT NOT NULL,
    hs_code            TEXT NOT NULL,
    name               TEXT NOT NULL,
    specification      TEXT NOT NULL DEFAULT '',
    unit               TEXT NOT NULL,
    PRIMARY KEY (ebook_number, record_item_number)
) WITHOUT ROWID;

-- Receipts of both subsystems in one table, so one sequence orders them and one ListReceipts /
-- WatchReceipts stream shows both. SQLite cannot relax document_id's NOT NULL in place, so the
-- table is rebuilt: the rows keep their sequences, and the AUTOINCREMENT high-water mark is
-- carried over so that no sequence is ever given twice (a client's "after" cursor stays valid).
CREATE TABLE receipts_new (
    sequence           INTEGER PRIMARY KEY AUTOINCREMENT,
    subsystem          TEXT    NOT NULL DEFAULT 'customs',
    document_id        INTEGER REFERENCES documents (id),
    bonded_document_id INTEGER REFERENCES bonded_documents (id),
    enterprise_code    TEXT    NOT NULL,
    kind               INTEGER NOT NULL,
    temporary_number   TEXT    NOT NULL,
    unified_number     TEXT    NOT NULL DEFAULT '',
    entry_number       TEXT    NOT NULL DEFAULT '',
    pre_entry_number   TEXT    NOT NULL DEFAULT '',
    reason_code        TEXT    NOT NULL DEFAULT '',
    reason             TEXT    NOT NULL DEFAULT '',
    time               INTEGER NOT NULL,
    message_zh         TEXT    NOT NULL,
    message_en         TEXT    NOT NULL,
    CHECK ((subsystem = 'customs' AND document_id IS NOT NULL AND bonded_document_id IS NULL)
        OR (subsystem = 'bonded' AND bonded_document_id IS NOT NULL AND document_id IS NULL))
);
INSERT INTO receipts_new (sequence, subsystem, document_id, enterprise_code, kind,
                          temporary_number, unified_number, entry_number, pre_entry_number,
                          reason_code, reason, time, message_zh, message_en)
    SELECT sequence, 'customs', document_id, enterprise_code, kind, temporary_number,
           unified_number, entry_number, pre_entry_number, reason_code, reason, time,
           message_zh, message_en
    FROM receipts;
-- only: sqlite
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'receipts_new', seq FROM sqlite_sequence WHERE name = 'receipts'
    AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'receipts_new');
-- only: sqlite
UPDATE sqlite_sequence
    SET seq = MAX(seq, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'receipts'), 0))
    WHERE name = 'receipts_new';
-- PostgreSQL: the copied rows named their sequences; the new identity starts past the old
-- one's high-water mark (as sqlite_sequence above).
-- only: postgresql
SELECT setval(pg_get_serial_sequence('receipts_new', 'sequence'), GREATEST(
    COALESCE(pg_sequence_last_value(pg_get_serial_sequence('receipts', 'sequence')::regclass), 0),
    (SELECT COALESCE(MAX(sequence), 0) FROM receipts_new)) + 1, false);
DROP TABLE receipts;
ALTER TABLE receipts_new RENAME TO receipts;
CREATE INDEX receipts_enterprise ON receipts (enterprise_code, sequence);
CREATE INDEX receipts_bonded_document ON receipts (bonded_document_id);
