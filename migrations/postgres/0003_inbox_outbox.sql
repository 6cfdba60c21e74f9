-- Replicas share the work: outside inputs go through a durable per-workflow inbox, audit rows
-- are written in the transaction of the change they describe (an outbox the chain is sealed
-- from), and idempotency keys say which workflow a key created.

-- Resume, set (approvals), suspend, stop, terminate: stored before the API answers, consumed
-- by the replica holding the workflow's lease in the same transaction as the history batch
-- they are part of (`consumed_in` = that batch's seq), so each lands exactly once.
CREATE TABLE workflow_inbox (
    id           BIGSERIAL PRIMARY KEY,
    workflow_uid TEXT NOT NULL REFERENCES workflows (uid) ON DELETE CASCADE,
    input        JSONB NOT NULL,
    created_at   BIGINT NOT NULL,
    consumed_in  BIGINT
);
CREATE INDEX workflow_inbox_pending ON workflow_inbox (workflow_uid, id) WHERE consumed_in IS NULL;

-- Audit entries written with the change they describe; `Store::audit_seal` moves them into
-- the hash chain (one short lock, many rows), so no change commits without its audit row and
-- no hot path serializes on the chain's head.
CREATE TABLE audit_outbox (
    id           BIGSERIAL PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    object       TEXT NOT NULL,
    source       TEXT NOT NULL,
    details      JSONB NOT NULL
);

-- The key's workflow is set in the submit transaction; `namespace/key` is the key.
DELETE FROM idempotency_keys;
ALTER TABLE idempotency_keys ALTER COLUMN workflow_uid SET NOT NULL;
