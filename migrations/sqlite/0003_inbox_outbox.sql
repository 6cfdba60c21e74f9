-- Replicas share the work: outside inputs go through a durable per-workflow inbox, audit rows
-- are written in the transaction of the change they describe (an outbox the chain is sealed
-- from). See the PostgreSQL migration for the reasoning.

CREATE TABLE workflow_inbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    workflow_uid TEXT NOT NULL REFERENCES workflows (uid) ON DELETE CASCADE,
    input        TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    consumed_in  BIGINT
);
CREATE INDEX workflow_inbox_pending ON workflow_inbox (workflow_uid, id) WHERE consumed_in IS NULL;

CREATE TABLE audit_outbox (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    object       TEXT NOT NULL,
    source       TEXT NOT NULL,
    details      TEXT NOT NULL
);
