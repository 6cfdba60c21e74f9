//! Events, sensors' decisions about them, sensor state, and the event objects (Sensor,
//! EventSource, WorkflowEventBinding).
//!
//! An event is keyed by its namespace and CloudEvents `(source, id)`: appending one that exists returns
//! the stored one (a producer's retry is one event). `processed_at` is set once every armed
//! sensor has decided about the event; events without it are re-delivered by a sweeper, so a
//! crash between commit and processing loses nothing.

use serde_json::Value;
use sqlx::FromRow;
use sqlx::types::Json;

use crate::{AuditEntry, Collection, NamedObject, Pool, Result, Store, StoreError, corrupt, q};

/// What makes a delivery the same event again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventIdentity {
    /// An id from the producer or the broker (CloudEvents `id`, JetStream stream sequence,
    /// Redis stream entry id, AMQP `message-id`): the same id again is the same event.
    Id(String),
    /// No stable id (MQTT, AMQP without `message-id`): a digest of the delivery (its payload,
    /// topic and what else the broker preserves across re-delivery). A first delivery is always
    /// a new event, stored as `<digest>#<n>` with `n` one more than the last; a re-delivery
    /// (MQTT `DUP`, AMQP `redelivered`) is the latest event stored with that digest, or a new
    /// one when none is.
    Delivery { digest: String, redelivered: bool },
}

/// How a delivery keyed by digest resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryResolution {
    /// The event stored as `<digest>#n` (a re-delivery of what was stored).
    Stored(i64),
    /// A new event, to store as `<digest>#n`.
    New(i64),
}

/// The latest event stored with a digest: its `n`, and whether a first delivery with the same
/// digest arrived after it (marked, and committed, before that delivery is stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LatestDelivery {
    pub n: i64,
    pub superseded: bool,
}

/// A first delivery is new whatever was stored (two alerts with one payload are two alerts).
/// A re-delivery is the latest event stored with its digest, since the broker re-sends what it
/// has not seen acknowledged and Riposte acknowledges only after the commit — unless a first
/// delivery came after that event: the broker only sends it once the latest is acknowledged
/// (one in flight per digest), so what is re-sent is that newer delivery, which a crash kept
/// from being stored.
pub fn resolve_delivery(redelivered: bool, latest: Option<LatestDelivery>) -> DeliveryResolution {
    match latest {
        Some(l) if redelivered && !l.superseded => DeliveryResolution::Stored(l.n),
        Some(l) => DeliveryResolution::New(l.n + 1),
        None => DeliveryResolution::New(1),
    }
}

/// The event id of the `n`-th event stored with `digest`.
pub fn delivery_event_id(digest: &str, n: i64) -> String {
    format!("{digest}#{n}")
}

const DEFINITIONS_CHANNEL: &str = "riposte_definitions";

/// A connection that hears definition changes from every replica.
pub struct DefinitionsListener(sqlx::postgres::PgListener);

impl DefinitionsListener {
    /// Waits for the next change. `Ok(true)`: a replica changed something; `Ok(false)`: the
    /// connection was lost and is back, so changes in between may have been missed.
    pub async fn changed(&mut self) -> Result<bool> {
        self.0
            .try_recv()
            .await
            .map(|n| n.is_some())
            .map_err(q("waiting for definition changes"))
    }
}

/// An event to store.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub source: String,
    pub identity: EventIdentity,
    pub namespace: String,
    pub event_source: String,
    pub event_name: String,
    pub received_at: i64,
    /// The CloudEvents envelope (JSON format).
    pub envelope: Value,
}

/// What appending an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub seq: i64,
    /// The event was stored before (same namespace, source and id): nothing new was written.
    pub duplicate: bool,
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct EventRecord {
    pub seq: i64,
    pub source: String,
    pub event_id: String,
    pub namespace: String,
    pub event_source: String,
    pub event_name: String,
    pub received_at: i64,
    #[sqlx(json)]
    pub envelope: Value,
    pub processed_at: Option<i64>,
}

/// One sensor's decision about one event.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct DecisionRecord {
    pub event_seq: i64,
    pub sensor: String,
    pub at: i64,
    #[sqlx(json)]
    pub decision: Value,
}

/// A decision to record, with the sensor state it leaves and whether it finishes its event.
#[derive(Debug, Clone, PartialEq)]
pub struct DecisionWrite {
    pub decision: DecisionRecord,
    /// `(trigger\u{1f}dependency, latest matching event)`; `None` clears the entry.
    pub dependencies: Vec<(String, Option<i64>)>,
    pub processed_at: Option<i64>,
}

/// Which events to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub namespace: Option<String>,
    pub event_source: Option<String>,
    /// Only events with a smaller seq (paging).
    pub before: Option<i64>,
    pub limit: i64,
}

/// A stored Sensor, EventSource or WorkflowEventBinding.
#[derive(Debug, Clone, PartialEq)]
pub struct EventObject {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub body: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

impl EventObject {
    fn of(kind: &str, o: NamedObject) -> EventObject {
        EventObject {
            kind: kind.to_string(),
            namespace: o.namespace,
            name: o.name,
            body: o.body,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

impl Store {
    /// Stores events in one transaction (an audit batch is split into many events and is
    /// stored whole or not at all). An event whose identity is stored already (same namespace,
    /// source and id; for a re-delivery keyed by digest, the latest event with that digest) is
    /// not written again; its stored seq is returned with `duplicate`.
    pub async fn append_events(&self, events: &[NewEvent]) -> Result<Vec<Appended>> {
        macro_rules! append {
            (@insert $tx:ident, $e:ident, $id:expr, $delivery:expr) => {{
                let delivery: Option<(&str, i64)> = $delivery;
                let mut envelope = crate::storable_json(&$e.envelope).into_owned();
                if delivery.is_some()
                    && let Some(o) = envelope.as_object_mut()
                {
                    o.insert("id".into(), Value::String($id.to_string()));
                }
                let inserted: Option<(i64,)> = sqlx::query_as(
                    "INSERT INTO events (source, event_id, namespace, event_source, event_name, received_at, envelope, delivery_digest, delivery_seq) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (namespace, source, event_id) DO NOTHING RETURNING seq",
                )
                .bind(&$e.source)
                .bind($id)
                .bind(&$e.namespace)
                .bind(&$e.event_source)
                .bind(&$e.event_name)
                .bind($e.received_at)
                .bind(Json(envelope))
                .bind(delivery.map(|d| d.0))
                .bind(delivery.map(|d| d.1))
                .fetch_optional(&mut *$tx)
                .await
                .map_err(q("storing an event"))?;
                inserted
            }};
            (@seq $tx:ident, $e:ident, $id:expr) => {{
                let (seq,): (i64,) = sqlx::query_as(
                    "SELECT seq FROM events WHERE namespace = $1 AND source = $2 AND event_id = $3",
                )
                .bind(&$e.namespace)
                .bind(&$e.source)
                .bind($id)
                .fetch_one(&mut *$tx)
                .await
                .map_err(q("reading a stored event"))?;
                seq
            }};
            ($p:expr) => {{
                // A first delivery with a stored digest marks the latest as superseded, and
                // commits the mark before the delivery is stored: if a crash then keeps it from
                // being stored, its re-delivery is recognised as new (see `resolve_delivery`).
                for e in events {
                    if let EventIdentity::Delivery { digest, redelivered: false } = &e.identity {
                        self.mark_delivery_superseded(&e.namespace, &e.source, digest).await?;
                    }
                }
                let mut tx = $p.begin().await.map_err(q("starting a transaction"))?;
                let mut out = Vec::with_capacity(events.len());
                for e in events {
                    let appended = match &e.identity {
                        EventIdentity::Id(id) => {
                            let inserted = append!(@insert tx, e, id, None::<(&str, i64)>);
                            match inserted {
                                Some((seq,)) => Appended { seq, duplicate: false },
                                None => Appended { seq: append!(@seq tx, e, id), duplicate: true },
                            }
                        }
                        EventIdentity::Delivery { digest, redelivered } => {
                            // A concurrent writer (another replica on a shared queue) may take
                            // the next `n` first; a first delivery then tries the one after.
                            let mut attempts = 0;
                            loop {
                                attempts += 1;
                                let latest: Option<(i64, bool)> = sqlx::query_as(
                                    "SELECT delivery_seq, delivery_superseded FROM events WHERE namespace = $1 AND source = $2 AND delivery_digest = $3 \
                                     ORDER BY delivery_seq DESC LIMIT 1",
                                )
                                .bind(&e.namespace)
                                .bind(&e.source)
                                .bind(digest)
                                .fetch_optional(&mut *tx)
                                .await
                                .map_err(q("reading the deliveries of a digest"))?;
                                let latest = latest.map(|(n, superseded)| LatestDelivery { n, superseded });
                                match resolve_delivery(*redelivered, latest) {
                                    DeliveryResolution::Stored(n) => {
                                        let id = delivery_event_id(digest, n);
                                        break Appended { seq: append!(@seq tx, e, &id), duplicate: true };
                                    }
                                    DeliveryResolution::New(n) => {
                                        let id = delivery_event_id(digest, n);
                                        if let Some((seq,)) = append!(@insert tx, e, &id, Some((digest.as_str(), n))) {
                                            break Appended { seq, duplicate: false };
                                        }
                                        if attempts >= 100 {
                                            return Err(StoreError::Transient { message: format!(
                                                "event {id} of {}/{}: 100 concurrent writers took the next delivery number; retry",
                                                e.namespace, e.source
                                            ) });
                                        }
                                    }
                                }
                            }
                        }
                    };
                    out.push(appended);
                }
                tx.commit().await.map_err(q("committing events"))?;
                out
            }};
        }
        Ok(on_pool!(&self.pool, |p| append!(p)))
    }

    /// Tells every replica that Sensors, EventSources or bindings changed (PostgreSQL
    /// `NOTIFY`; nothing to tell on SQLite, which one process owns).
    pub async fn notify_definitions_changed(&self) -> Result<()> {
        if let Pool::Pg(p) = &self.pool {
            sqlx::query("SELECT pg_notify($1, '')")
                .bind(DEFINITIONS_CHANNEL)
                .execute(p)
                .await
                .map_err(q("notifying the replicas of a definition change"))?;
        }
        Ok(())
    }

    /// Listens for [`Store::notify_definitions_changed`] from any replica; `None` on SQLite.
    pub async fn listen_definitions(&self) -> Result<Option<DefinitionsListener>> {
        let Pool::Pg(p) = &self.pool else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(p)
            .await
            .map_err(q("connecting to listen for definition changes"))?;
        listener
            .listen(DEFINITIONS_CHANNEL)
            .await
            .map_err(q("listening for definition changes"))?;
        Ok(Some(DefinitionsListener(listener)))
    }

    /// Marks the latest event stored with `digest` as superseded by a first delivery that is
    /// about to be stored (committed on its own, before it). True if there was one to mark.
    pub async fn mark_delivery_superseded(
        &self,
        namespace: &str,
        source: &str,
        digest: &str,
    ) -> Result<bool> {
        on_pool!(&self.pool, |p| {
            let done = sqlx::query(
                "UPDATE events SET delivery_superseded = TRUE WHERE namespace = $1 AND source = $2 AND delivery_digest = $3 \
                 AND delivery_seq = (SELECT MAX(delivery_seq) FROM events WHERE namespace = $1 AND source = $2 AND delivery_digest = $3)",
            )
            .bind(namespace)
            .bind(source)
            .bind(digest)
            .execute(p)
            .await
            .map_err(q("marking a digest's latest delivery"))?;
            Ok(done.rows_affected() > 0)
        })
    }

    pub async fn get_event(&self, seq: i64) -> Result<EventRecord> {
        let row = on_pool!(&self.pool, |p| {
            sqlx::query("SELECT seq, source, event_id, namespace, event_source, event_name, received_at, envelope, processed_at FROM events WHERE seq = $1")
                .bind(seq)
                .fetch_optional(p)
                .await
                .map_err(q("reading an event"))?
                .map(|r| EventRecord::from_row(&r).map_err(corrupt("event row")))
                .transpose()?
        });
        row.ok_or_else(|| StoreError::NotFound {
            namespace: "events".into(),
            name: seq.to_string(),
        })
    }

    /// The id of the latest event stored for one entry of an EventSource (a calendar's last
    /// firing), whatever its siblings stored since.
    pub async fn last_event_id(
        &self,
        namespace: &str,
        event_source: &str,
        event_name: &str,
    ) -> Result<Option<String>> {
        on_pool!(&self.pool, |p| {
            let row: Option<(String,)> = sqlx::query_as(
                "SELECT event_id FROM events WHERE namespace = $1 AND event_source = $2 AND event_name = $3 \
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(namespace)
            .bind(event_source)
            .bind(event_name)
            .fetch_optional(p)
            .await
            .map_err(q("reading an entry's latest event"))?;
            Ok(row.map(|(id,)| id))
        })
    }

    /// Events, newest first.
    pub async fn list_events(&self, query: &EventQuery) -> Result<Vec<EventRecord>> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query(
                "SELECT seq, source, event_id, namespace, event_source, event_name, received_at, envelope, processed_at FROM events WHERE ($1 = '' OR namespace = $1) AND ($2 = '' OR event_source = $2) \
                 AND seq < $3 ORDER BY seq DESC LIMIT $4",
            )
                .bind(query.namespace.as_deref().unwrap_or(""))
                .bind(query.event_source.as_deref().unwrap_or(""))
                .bind(query.before.unwrap_or(i64::MAX))
                .bind(query.limit.clamp(1, 10_000))
                .fetch_all(p)
                .await
                .map_err(q("listing events"))?;
            rows.iter()
                .map(|r| EventRecord::from_row(r).map_err(corrupt("event row")))
                .collect()
        })
    }

    /// Events no sensor pass has finished, received before `received_before`, oldest first.
    pub async fn unprocessed_events(&self, received_before: i64, limit: i64) -> Result<Vec<i64>> {
        on_pool!(&self.pool, |p| {
            let rows: Vec<(i64,)> = sqlx::query_as(
                "SELECT seq FROM events WHERE processed_at IS NULL AND received_at < $1 ORDER BY seq LIMIT $2",
            )
            .bind(received_before)
            .bind(limit)
            .fetch_all(p)
            .await
            .map_err(q("listing unprocessed events"))?;
            Ok(rows.into_iter().map(|(s,)| s).collect())
        })
    }

    /// How many events of `namespace` are stored, and how many of them are processed.
    pub async fn count_events(&self, namespace: &str) -> Result<(i64, i64)> {
        on_pool!(&self.pool, |p| {
            let (total, processed): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), COUNT(processed_at) FROM events WHERE namespace = $1",
            )
            .bind(namespace)
            .fetch_one(p)
            .await
            .map_err(q("counting events"))?;
            Ok((total, processed))
        })
    }

    /// Marks an event processed (`Some(at)`) or due for re-delivery (`None`).
    pub async fn set_event_processed(&self, seq: i64, at: Option<i64>) -> Result<()> {
        on_pool!(&self.pool, |p| {
            sqlx::query("UPDATE events SET processed_at = $2 WHERE seq = $1")
                .bind(seq)
                .bind(at)
                .execute(p)
                .await
                .map_err(q("marking an event processed"))?;
        });
        Ok(())
    }

    /// Deletes events received before `before` (and their decisions). Returns how many.
    pub async fn prune_events(&self, before: i64) -> Result<u64> {
        Ok(on_pool!(&self.pool, |p| {
            sqlx::query("DELETE FROM events WHERE received_at < $1 AND processed_at IS NOT NULL")
                .bind(before)
                .execute(p)
                .await
                .map_err(q("pruning events"))?
                .rows_affected()
        }))
    }

    /// Records sensor decisions in one transaction: each decision (replacing an earlier one
    /// of the same sensor about the same event), the dependency state it leaves (`None`
    /// clears an entry) and, with `processed_at`, marks its event processed.
    pub async fn record_decisions(&self, writes: &[DecisionWrite]) -> Result<()> {
        macro_rules! record {
            ($p:expr) => {{
                let mut tx = $p.begin().await.map_err(q("starting a transaction"))?;
                for w in writes {
                    let d = &w.decision;
                    sqlx::query(
                        "INSERT INTO event_decisions (event_seq, sensor, at, decision) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (event_seq, sensor) DO UPDATE SET at = excluded.at, decision = excluded.decision",
                    )
                    .bind(d.event_seq)
                    .bind(&d.sensor)
                    .bind(d.at)
                    .bind(Json(crate::storable_json(&d.decision)))
                    .execute(&mut *tx)
                    .await
                    .map_err(q("recording a sensor decision"))?;
                    for (dep, seq) in &w.dependencies {
                        match seq {
                            Some(seq) => sqlx::query(
                                "INSERT INTO sensor_dependencies (sensor, dependency, event_seq) VALUES ($1, $2, $3) \
                                 ON CONFLICT (sensor, dependency) DO UPDATE SET event_seq = excluded.event_seq",
                            )
                            .bind(&d.sensor)
                            .bind(dep)
                            .bind(seq),
                            None => sqlx::query(
                                "DELETE FROM sensor_dependencies WHERE sensor = $1 AND dependency = $2",
                            )
                            .bind(&d.sensor)
                            .bind(dep),
                        }
                        .execute(&mut *tx)
                        .await
                        .map_err(q("recording sensor state"))?;
                    }
                    if let Some(at) = w.processed_at {
                        sqlx::query("UPDATE events SET processed_at = $2 WHERE seq = $1")
                            .bind(d.event_seq)
                            .bind(at)
                            .execute(&mut *tx)
                            .await
                            .map_err(q("marking an event processed"))?;
                    }
                }
                tx.commit().await.map_err(q("committing sensor decisions"))?;
            }};
        }
        if writes.is_empty() {
            return Ok(());
        }
        on_pool!(&self.pool, |p| record!(p));
        Ok(())
    }

    /// Every sensor's decision about an event.
    pub async fn event_decisions(&self, seq: i64) -> Result<Vec<DecisionRecord>> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query(
                "SELECT event_seq, sensor, at, decision FROM event_decisions WHERE event_seq = $1 ORDER BY sensor",
            )
            .bind(seq)
            .fetch_all(p)
            .await
            .map_err(q("reading sensor decisions"))?;
            rows.iter()
                .map(|r| DecisionRecord::from_row(r).map_err(corrupt("decision row")))
                .collect()
        })
    }

    /// A sensor's latest matching event per dependency.
    pub async fn sensor_dependencies(&self, sensor: &str) -> Result<Vec<(String, i64)>> {
        on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT dependency, event_seq FROM sensor_dependencies WHERE sensor = $1 ORDER BY dependency",
            )
            .bind(sensor)
            .fetch_all(p)
            .await
            .map_err(q("reading sensor state"))
        })
    }

    /// Clears a sensor's dependency state (`conditionsReset`, or the sensor was replaced).
    pub async fn reset_sensor_dependencies(&self, sensor: &str) -> Result<()> {
        on_pool!(&self.pool, |p| {
            sqlx::query("DELETE FROM sensor_dependencies WHERE sensor = $1")
                .bind(sensor)
                .execute(p)
                .await
                .map_err(q("resetting sensor state"))?;
        });
        Ok(())
    }

    /// Claims a dedupe key for `firing` until `expires_at`: true when it was free, its window
    /// had passed at `now`, or `firing` holds it already; false when another firing holds it.
    /// One statement, so replicas agree.
    pub async fn claim_dedupe(
        &self,
        sensor: &str,
        key: &str,
        firing: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool> {
        on_pool!(&self.pool, |p| {
            let row: Option<(String,)> = sqlx::query_as(
                "INSERT INTO sensor_dedupe (sensor, key, firing, expires_at) VALUES ($1, $2, $5, $4) \
                 ON CONFLICT (sensor, key) DO UPDATE SET expires_at = excluded.expires_at, firing = excluded.firing \
                 WHERE sensor_dedupe.expires_at <= $3 OR sensor_dedupe.firing = $5 RETURNING key",
            )
            .bind(sensor)
            .bind(key)
            .bind(now)
            .bind(expires_at)
            .bind(firing)
            .fetch_optional(p)
            .await
            .map_err(q("claiming a dedupe key"))?;
            Ok(row.is_some())
        })
    }

    /// Creates (`create`, failing if it exists) or replaces an event object, with its audit
    /// row in the same transaction.
    pub async fn put_event_object(
        &self,
        o: &EventObject,
        create: bool,
        audit: &AuditEntry,
    ) -> Result<()> {
        let named = NamedObject {
            namespace: o.namespace.clone(),
            name: o.name.clone(),
            body: o.body.clone(),
            created_at: o.created_at,
            updated_at: o.updated_at,
        };
        self.put_object(Collection::Events(&o.kind), &named, create, audit)
            .await
    }

    pub async fn get_event_object(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
    ) -> Result<EventObject> {
        let o = self
            .get_object(Collection::Events(kind), namespace, name)
            .await?;
        Ok(EventObject::of(kind, o))
    }

    /// Objects of a kind in a namespace, or in every namespace when `namespace` is `None`.
    pub async fn list_event_objects(
        &self,
        kind: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<EventObject>> {
        let all = self
            .list_objects(
                Collection::Events(kind),
                namespace.filter(|n| !n.is_empty()),
            )
            .await?;
        Ok(all.into_iter().map(|o| EventObject::of(kind, o)).collect())
    }

    /// Deletes an event object (with its audit row). Returns whether it existed.
    pub async fn delete_event_object(
        &self,
        kind: &str,
        namespace: &str,
        name: &str,
        audit: &AuditEntry,
    ) -> Result<bool> {
        self.delete_object(Collection::Events(kind), namespace, name, audit)
            .await
    }

    /// The workflow (namespace, name) an idempotency key (`namespace/key`, as submit stores
    /// it) created, if it still exists.
    pub async fn workflow_for_key(&self, key: &str) -> Result<Option<(String, String)>> {
        on_pool!(&self.pool, |p| {
            sqlx::query_as(
                "SELECT w.namespace, w.name FROM idempotency_keys k JOIN workflows w ON w.uid = k.workflow_uid WHERE k.key = $1",
            )
            .bind(key)
            .fetch_optional(p)
            .await
            .map_err(q("reading an idempotency key"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_resolve_first_as_new_and_redelivered_as_latest() {
        use DeliveryResolution::*;
        let latest = |n, superseded| Some(LatestDelivery { n, superseded });
        let table = [
            (false, None, New(1)),
            (false, latest(3, false), New(4)),
            (false, latest(3, true), New(4)),
            (true, None, New(1)),
            (true, latest(3, false), Stored(3)),
            (true, latest(3, true), New(4)),
        ];
        for (redelivered, latest, want) in table {
            assert_eq!(
                resolve_delivery(redelivered, latest),
                want,
                "redelivered {redelivered}, latest {latest:?}"
            );
        }
        assert_eq!(delivery_event_id("ab12", 7), "ab12#7");
    }
}
