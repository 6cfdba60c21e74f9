-- Riposte schema (PostgreSQL). Times are unix milliseconds (BIGINT) so both backends agree.

CREATE TABLE workflows (
    uid          TEXT PRIMARY KEY,
    namespace    TEXT NOT NULL,
    name         TEXT NOT NULL,
    phase        TEXT NOT NULL,
    message      TEXT NOT NULL DEFAULT '',
    labels       JSONB NOT NULL DEFAULT '{}',
    created_at   BIGINT NOT NULL,
    started_at   BIGINT,
    finished_at  BIGINT,
    -- Everything the engine was created from: resource, library, identity, parameters.
    definition   JSONB NOT NULL,
    -- The latest Argo status without nodes (phase, progress, message, outputs).
    status       JSONB NOT NULL DEFAULT '{}',
    history_len  BIGINT NOT NULL DEFAULT 0,
    UNIQUE (namespace, name)
);
CREATE INDEX workflows_ns_created ON workflows (namespace, created_at DESC, uid);
CREATE INDEX workflows_ns_phase_created ON workflows (namespace, phase, created_at DESC, uid);
CREATE INDEX workflows_created ON workflows (created_at DESC, uid);
CREATE INDEX workflows_labels ON workflows USING GIN (labels jsonb_path_ops);

-- Append-only: every batch of engine inputs, in order. State is a fold over these rows.
CREATE TABLE workflow_history (
    workflow_uid TEXT NOT NULL REFERENCES workflows (uid) ON DELETE CASCADE,
    seq          BIGINT NOT NULL,
    inputs       JSONB NOT NULL,
    recorded_at  BIGINT NOT NULL,
    PRIMARY KEY (workflow_uid, seq)
);

-- A projection of the engine's nodes for fast reads; rebuilt by replaying history.
CREATE TABLE nodes (
    workflow_uid TEXT NOT NULL REFERENCES workflows (uid) ON DELETE CASCADE,
    node_id      TEXT NOT NULL,
    name         TEXT NOT NULL,
    phase        TEXT NOT NULL,
    status       JSONB NOT NULL,
    PRIMARY KEY (workflow_uid, node_id)
);

CREATE TABLE node_logs (
    workflow_uid TEXT NOT NULL REFERENCES workflows (uid) ON DELETE CASCADE,
    node_id      TEXT NOT NULL,
    seq          BIGINT NOT NULL,
    at           BIGINT NOT NULL,
    line         TEXT NOT NULL,
    PRIMARY KEY (workflow_uid, node_id, seq)
);

-- WorkflowTemplates (cluster = false) and ClusterWorkflowTemplates (cluster = true, namespace '').
CREATE TABLE workflow_templates (
    cluster      BOOLEAN NOT NULL,
    namespace    TEXT NOT NULL,
    name         TEXT NOT NULL,
    body         JSONB NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (cluster, namespace, name)
);

CREATE TABLE cron_workflows (
    namespace    TEXT NOT NULL,
    name         TEXT NOT NULL,
    body         JSONB NOT NULL,
    suspended    BOOLEAN NOT NULL DEFAULT FALSE,
    last_scheduled_at BIGINT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (namespace, name)
);

-- Events received from sources, stored before they are acknowledged.
CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    source       TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    body         JSONB NOT NULL
);
CREATE INDEX events_source_received ON events (source, received_at);

-- An effect keyed here happens once (sensor + trigger + event id, or an API request key).
CREATE TABLE idempotency_keys (
    key          TEXT PRIMARY KEY,
    workflow_uid TEXT,
    created_at   BIGINT NOT NULL
);

-- Which replica drives which workflow, until when.
CREATE TABLE leases (
    workflow_uid TEXT PRIMARY KEY REFERENCES workflows (uid) ON DELETE CASCADE,
    holder       TEXT NOT NULL,
    expires_at   BIGINT NOT NULL
);

-- Append-only audit log; each row carries the hash of the previous one.
CREATE TABLE audit_log (
    seq          BIGINT PRIMARY KEY,
    at           BIGINT NOT NULL,
    actor        TEXT NOT NULL,
    action       TEXT NOT NULL,
    object       TEXT NOT NULL,
    source       TEXT NOT NULL,
    details      JSONB NOT NULL,
    prev_hash    TEXT NOT NULL,
    hash         TEXT NOT NULL
);
CREATE INDEX audit_log_object ON audit_log (object, seq);
CREATE INDEX audit_log_actor ON audit_log (actor, seq);
CREATE INDEX audit_log_at ON audit_log (at);

-- The chain's head, so that deleting the newest rows is detected too.
CREATE TABLE audit_head (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    seq          BIGINT NOT NULL,
    hash         TEXT NOT NULL
);
