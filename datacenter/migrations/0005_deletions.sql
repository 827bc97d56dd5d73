-- 删除 (QP FAQ §十三(一) Ctrl+D; bonded manual §2.3): an enterprise may delete a document it has
-- never declared. The row stays as a tombstone (status DELETED, its content cleared): its
-- numbers stay in the UNIQUE columns, so they are never given again, a receipt of an uploaded
-- document keeps its document, and the owner is told "deleted" rather than "unknown". What a
-- deleted document held for uniqueness is freed: the client reference (saving the same file
-- again makes a new document) and, for bonded verification, the 企业内部编号.
ALTER TABLE documents ADD COLUMN deleted_at INTEGER;
ALTER TABLE documents ADD COLUMN deleted_by_card TEXT NOT NULL DEFAULT '';
DROP INDEX documents_client_reference;
CREATE UNIQUE INDEX documents_client_reference ON documents (enterprise_code, client_reference)
    WHERE deleted_at IS NULL;

ALTER TABLE bonded_documents ADD COLUMN deleted_at INTEGER;
ALTER TABLE bonded_documents ADD COLUMN deleted_by_card TEXT NOT NULL DEFAULT '';
DROP INDEX bonded_internal_number;
CREATE UNIQUE INDEX bonded_internal_number ON bonded_documents (enterprise_code, internal_number)
    WHERE deleted_at IS NULL;
DROP INDEX bonded_client_reference;
CREATE UNIQUE INDEX bonded_client_reference ON bonded_documents (agent_code, client_reference)
    WHERE deleted_at IS NULL;

-- A grant to all operators is one record without a card number (e-book manual §4 1.3 说明1):
-- listed cards granted before on the same grant are covered by it and go.
DELETE FROM operator_grants
    WHERE operator_card_id != ''
      AND grant_id IN (SELECT grant_id FROM operator_grants WHERE operator_card_id = '');
