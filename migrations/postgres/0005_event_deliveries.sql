-- Events whose producer gives no stable id (MQTT, AMQP without message-id) are keyed by a
-- digest of the delivery: the n-th first delivery with a digest is stored as `<digest>#<n>`,
-- and a broker's re-delivery resolves to the latest of them unless a first delivery with the
-- same digest was received after it (`delivery_superseded`; see store::resolve_delivery).
ALTER TABLE events ADD COLUMN delivery_digest TEXT;
ALTER TABLE events ADD COLUMN delivery_seq BIGINT;
ALTER TABLE events ADD COLUMN delivery_superseded BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX events_delivery ON events (namespace, source, delivery_digest, delivery_seq)
    WHERE delivery_digest IS NOT NULL;
-- An entry's latest event (a calendar's last firing, for its catch-up).
CREATE INDEX events_entry_seq ON events (namespace, event_source, event_name, seq);
