-- Events and sensors: every event is stored (keyed by namespace, CloudEvents source and id) before
-- its producer is acknowledged; each sensor's decision about it is stored with it; sensors,
-- event sources and workflow event bindings are stored objects like templates.

-- Nothing wrote the first `events` table; it was keyed by id alone.
DROP TABLE events;

CREATE TABLE events (
    seq           BIGSERIAL PRIMARY KEY,
    source        TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    namespace     TEXT NOT NULL,
    event_source  TEXT NOT NULL,
    event_name    TEXT NOT NULL,
    received_at   BIGINT NOT NULL,
    envelope      JSONB NOT NULL,
    -- Set once every armed sensor has decided about the event (a sweeper re-delivers the rest).
    processed_at  BIGINT,
    UNIQUE (namespace, source, event_id)
);
CREATE INDEX events_unprocessed ON events (seq) WHERE processed_at IS NULL;
CREATE INDEX events_namespace_seq ON events (namespace, seq);
CREATE INDEX events_received ON events (received_at);

-- What a sensor decided about an event: dependency verdicts with reasons, firings and the
-- workflows they created. Rewritten when the event is re-delivered.
CREATE TABLE event_decisions (
    event_seq     BIGINT NOT NULL REFERENCES events (seq) ON DELETE CASCADE,
    sensor        TEXT NOT NULL,
    at            BIGINT NOT NULL,
    decision      JSONB NOT NULL,
    PRIMARY KEY (event_seq, sensor)
);

-- The latest matching event per sensor dependency (trigger conditions combine them).
CREATE TABLE sensor_dependencies (
    sensor        TEXT NOT NULL,
    dependency    TEXT NOT NULL,
    event_seq     BIGINT NOT NULL,
    PRIMARY KEY (sensor, dependency)
);

-- A dedupe window: a key claimed until `expires_at` by one firing (its idempotency key)
-- makes other firings with it no-ops; the claiming firing may claim again (re-delivery).
CREATE TABLE sensor_dedupe (
    sensor        TEXT NOT NULL,
    key           TEXT NOT NULL,
    firing        TEXT NOT NULL,
    expires_at    BIGINT NOT NULL,
    PRIMARY KEY (sensor, key)
);

-- Sensor, EventSource and WorkflowEventBinding objects.
CREATE TABLE event_objects (
    kind          TEXT NOT NULL,
    namespace     TEXT NOT NULL,
    name          TEXT NOT NULL,
    body          JSONB NOT NULL,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    PRIMARY KEY (kind, namespace, name)
);
