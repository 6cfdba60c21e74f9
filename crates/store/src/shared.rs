//! What replicas share through the database: the one submit transaction (workflow, lease,
//! idempotency key, cron firing, audit row), the per-workflow inbox of outside inputs, the
//! audit outbox the hash chain is sealed from, and change notifications (PostgreSQL
//! `NOTIFY`; SQLite serves one process, which notifies itself).

use serde_json::Value;
use sqlx::types::Json;
use sqlx::{FromRow, Row};

use crate::{AuditEntry, NewWorkflow, Pool, Result, Store, StoreError, corrupt, q};

/// The channel every replica `LISTEN`s on.
pub const NOTIFY_CHANNEL: &str = "riposte";

/// What [`Store::submit_workflow`] writes in one transaction.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    pub workflow: &'a NewWorkflow,
    /// The lease the submitting replica takes: `(holder, expires_at)`.
    pub lease: Option<(&'a str, i64)>,
    /// `namespace/key`: a second submission with the same key returns the first workflow.
    pub idempotency_key: Option<&'a str>,
    /// A CronWorkflow firing `(namespace, name, scheduled_at)` claimed with the workflow, so
    /// each scheduled time creates exactly one workflow across replicas and crashes.
    pub cron_firing: Option<(&'a str, &'a str, i64)>,
    pub audit: &'a AuditEntry,
}

/// How a submission ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    Created,
    /// The idempotency key was used before, by this workflow.
    Existing {
        uid: String,
        namespace: String,
        name: String,
    },
    /// Another replica (or an earlier run) already fired this scheduled time.
    CronFiringTaken,
}

/// A change another replica announced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "k", rename_all = "camelCase")]
pub enum Notice {
    /// A workflow was created or recorded a step.
    Changed {
        uid: String,
        ns: String,
        name: String,
        origin: String,
    },
    /// An input was put in a workflow's inbox.
    Inbox { uid: String, origin: String },
}

impl Notice {
    pub fn origin(&self) -> &str {
        match self {
            Notice::Changed { origin, .. } | Notice::Inbox { origin, .. } => origin,
        }
    }
}

/// An unconsumed inbox entry.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct InboxEntry {
    pub id: i64,
    #[sqlx(json)]
    pub input: Value,
}

/// `pg_notify` inside a transaction on PostgreSQL (delivered at commit, dropped at rollback);
/// nothing on SQLite.
macro_rules! notify {
    ($store:expr, $tx:expr, $notice:expr) => {{
        if matches!($store.pool, Pool::Pg(_)) {
            let payload = serde_json::to_string($notice).unwrap_or_default();
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(crate::shared::NOTIFY_CHANNEL)
                .bind(payload)
                .execute(&mut *$tx)
                .await
                .map_err(q("notifying other replicas"))?;
        }
    }};
}
pub(crate) use notify;

/// Writes audit outbox rows inside an open transaction; a macro because each backend has
/// its own transaction type. `stage_audit!(Pg, tx, rows)` takes them in one UNNEST statement
/// (a step can carry thousands of node transitions); `stage_audit!(tx, rows)` inserts one
/// prepared row at a time (any backend).
macro_rules! stage_audit {
    (Pg, $tx:expr, $entries:expr) => {{
        let entries: &[AuditEntry] = $entries;
        if !entries.is_empty() {
            let ats: Vec<i64> = entries.iter().map(|e| e.at).collect();
            let actors: Vec<&str> = entries.iter().map(|e| e.actor.as_str()).collect();
            let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
            let objects: Vec<&str> = entries.iter().map(|e| e.object.as_str()).collect();
            let sources: Vec<&str> = entries.iter().map(|e| e.source.as_str()).collect();
            let details: Vec<String> = entries.iter().map(|e| crate::storable_json(&e.details).to_string()).collect();
            sqlx::query(
                "INSERT INTO audit_outbox (at, actor, action, object, source, details) \
                 SELECT a, ac, act, o, so, d::jsonb FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[]) AS t(a, ac, act, o, so, d)",
            )
            .bind(&ats)
            .bind(&actors)
            .bind(&actions)
            .bind(&objects)
            .bind(&sources)
            .bind(&details)
            .execute(&mut *$tx)
            .await
            .map_err(q("staging audit entries"))?;
        }
    }};
    (Sqlite, $tx:expr, $entries:expr) => {
        crate::shared::stage_audit!($tx, $entries)
    };
    ($tx:expr, $entries:expr) => {{
        let entries: &[AuditEntry] = $entries;
        for e in entries {
            sqlx::query(
                "INSERT INTO audit_outbox (at, actor, action, object, source, details) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.object)
            .bind(&e.source)
            .bind(Json(crate::storable_json(&e.details)))
            .execute(&mut *$tx)
            .await
            .map_err(q("staging an audit entry"))?;
        }
    }};
}
pub(crate) use stage_audit;

/// The statements of one submission inside an open transaction (no commit): the cron firing
/// claim, the idempotency key, the workflow row, its lease and its audit row. Evaluates to
/// the outcome; on anything but `Created` the caller rolls back.
macro_rules! submit_in {
    ($tx:ident, $s:expr) => {
        async {
            let s: &Submission<'_> = $s;
            let w = s.workflow;
            if let Some((ns, name, at)) = s.cron_firing {
                let n = sqlx::query(
                    "UPDATE cron_workflows SET last_scheduled_at = $3 WHERE namespace = $1 AND name = $2 \
                     AND (last_scheduled_at IS NULL OR last_scheduled_at < $3)",
                )
                .bind(ns)
                .bind(name)
                .bind(at)
                .execute(&mut *$tx)
                .await
                .map_err(q("claiming a cron firing"))?
                .rows_affected();
                if n != 1 {
                    return Ok(Submitted::CronFiringTaken);
                }
            }
            if let Some(key) = s.idempotency_key {
                let inserted = sqlx::query(
                    "INSERT INTO idempotency_keys (key, workflow_uid, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (key) DO NOTHING RETURNING key",
                )
                .bind(key)
                .bind(&w.uid)
                .bind(w.created_at)
                .fetch_optional(&mut *$tx)
                .await
                .map_err(q("recording an idempotency key"))?;
                if inserted.is_none() {
                    let row = sqlx::query(
                        "SELECT w.uid, w.namespace, w.name FROM idempotency_keys k JOIN workflows w ON w.uid = k.workflow_uid WHERE k.key = $1",
                    )
                    .bind(key)
                    .fetch_optional(&mut *$tx)
                    .await
                    .map_err(q("reading an idempotency key"))?;
                    match row {
                        Some(row) => {
                            let get = |c: &str| -> Result<String> {
                                row.try_get::<String, _>(c).map_err(q("reading an idempotency key"))
                            };
                            return Ok(Submitted::Existing {
                                uid: get("uid")?,
                                namespace: get("namespace")?,
                                name: get("name")?,
                            });
                        }
                        // Its workflow was deleted: the key is free again.
                        None => {
                            sqlx::query("UPDATE idempotency_keys SET workflow_uid = $2, created_at = $3 WHERE key = $1")
                                .bind(key)
                                .bind(&w.uid)
                                .bind(w.created_at)
                                .execute(&mut *$tx)
                                .await
                                .map_err(q("recording an idempotency key"))?;
                        }
                    }
                }
            }
            let created = sqlx::query(
                "INSERT INTO workflows (uid, namespace, name, phase, labels, created_at, definition) VALUES ($1, $2, $3, 'Pending', $4, $5, $6)",
            )
            .bind(&w.uid)
            .bind(&w.namespace)
            .bind(&w.name)
            .bind(Json(crate::storable_json(&w.labels)))
            .bind(w.created_at)
            .bind(Json(crate::storable_json(&w.definition)))
            .execute(&mut *$tx)
            .await;
            match created {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    return Err(StoreError::AlreadyExists {
                        namespace: w.namespace.clone(),
                        name: w.name.clone(),
                    });
                }
                Err(e) => return Err(q("inserting a workflow")(e)),
            }
            if let Some((holder, expires_at)) = s.lease {
                sqlx::query("INSERT INTO leases (workflow_uid, holder, expires_at) VALUES ($1, $2, $3)")
                    .bind(&w.uid)
                    .bind(holder)
                    .bind(expires_at)
                    .execute(&mut *$tx)
                    .await
                    .map_err(q("taking the new workflow's lease"))?;
            }
            stage_audit!($tx, std::slice::from_ref(s.audit));
            // Watchers hear of it with its first recorded step, as on the submitting replica.
            Ok::<Submitted, StoreError>(Submitted::Created)
        }
        .await
    };
}

impl Store {
    /// Records a new workflow with everything that must happen with it, in one transaction:
    /// the cron firing claim, the idempotency key, the workflow row, the submitter's lease and
    /// the audit row. Nothing is written when any part says no.
    pub async fn submit_workflow(&self, s: &Submission<'_>) -> Result<Submitted> {
        macro_rules! submit_tx {
            ($p:expr) => {{
                let mut tx = $p.begin().await.map_err(q("starting a transaction"))?;
                let out = submit_in!(tx, s);
                // Anything but a new workflow leaves nothing behind.
                if matches!(out, Ok(Submitted::Created)) {
                    tx.commit().await.map_err(q("committing a submission"))?;
                }
                out
            }};
        }
        let out = match &self.pool {
            Pool::Pg(p) => submit_tx!(p),
            Pool::Sqlite(p) => submit_tx!(p),
        };
        if matches!(out, Ok(Submitted::Created)) {
            self.after_audit_staged().await;
        }
        out
    }

    /// Records several submissions in one transaction, each as [`Store::submit_workflow`]
    /// would (one savepoint each, so one that says no leaves nothing behind and the others go
    /// on). The outer error means nothing was committed; the inner ones are per submission.
    pub async fn submit_workflows(
        &self,
        subs: &[Submission<'_>],
    ) -> Result<Vec<Result<Submitted>>> {
        use sqlx::Acquire;
        macro_rules! submit_all {
            ($p:expr) => {{
                let mut tx = $p.begin().await.map_err(q("starting a transaction"))?;
                let mut out = Vec::with_capacity(subs.len());
                for s in subs {
                    let mut sp = tx.begin().await.map_err(q("starting a savepoint"))?;
                    let r = submit_in!(sp, s);
                    if matches!(r, Ok(Submitted::Created)) {
                        sp.commit().await.map_err(q("releasing a savepoint"))?;
                    } else {
                        sp.rollback().await.map_err(q("rolling back a savepoint"))?;
                    }
                    out.push(r);
                }
                tx.commit().await.map_err(q("committing submissions"))?;
                out
            }};
        }
        let out = match &self.pool {
            Pool::Pg(p) => submit_all!(p),
            Pool::Sqlite(p) => submit_all!(p),
        };
        if out.iter().any(|r| matches!(r, Ok(Submitted::Created))) {
            self.after_audit_staged().await;
        }
        Ok(out)
    }

    /// Puts an outside input in a workflow's inbox (with its audit row) and wakes the replica
    /// that drives it. Returns the entry's id. Fails with `NotFound` if the workflow is gone
    /// and `FailedPrecondition`-style `Finished` if it has finished.
    pub async fn enqueue_input(
        &self,
        uid: &str,
        input: &Value,
        created_at: i64,
        audit: &AuditEntry,
    ) -> Result<i64> {
        let notice = Notice::Inbox {
            uid: uid.to_string(),
            origin: self.origin.to_string(),
        };
        macro_rules! enqueue_tx {
            ($p:expr) => {{
                let mut tx = $p.begin().await.map_err(q("starting a transaction"))?;
                // Only while unfinished: an input for a finished workflow would never be read.
                let row = sqlx::query(
                    "INSERT INTO workflow_inbox (workflow_uid, input, created_at) \
                     SELECT uid, $2, $3 FROM workflows WHERE uid = $1 AND finished_at IS NULL RETURNING id",
                )
                .bind(uid)
                .bind(Json(crate::storable_json(input)))
                .bind(created_at)
                .fetch_optional(&mut *tx)
                .await
                .map_err(q("storing an input in the inbox"))?;
                let Some(row) = row else {
                    return Err(StoreError::Finished { uid: uid.to_string() });
                };
                let id: i64 = row.try_get("id").map_err(q("storing an input in the inbox"))?;
                stage_audit!(tx, std::slice::from_ref(audit));
                notify!(self, tx, &notice);
                tx.commit().await.map_err(q("committing an inbox entry"))?;
                Ok::<i64, StoreError>(id)
            }};
        }
        let id = match &self.pool {
            Pool::Pg(p) => enqueue_tx!(p)?,
            Pool::Sqlite(p) => enqueue_tx!(p)?,
        };
        self.after_audit_staged().await;
        Ok(id)
    }

    /// The inputs waiting in a workflow's inbox, oldest first.
    /// Workflows with unconsumed inbox entries: one query for a replica's fallback sweep
    /// (notifications wake drivers at once; this catches one that was missed).
    pub async fn workflows_with_pending_inputs(&self) -> Result<Vec<String>> {
        on_pool!(&self.pool, |p| {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT DISTINCT workflow_uid FROM workflow_inbox WHERE consumed_in IS NULL",
            )
            .fetch_all(p)
            .await
            .map_err(q("reading the inbox"))?;
            Ok(rows.into_iter().map(|(u,)| u).collect())
        })
    }

    pub async fn pending_inputs(&self, uid: &str) -> Result<Vec<InboxEntry>> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query(
                "SELECT id, input FROM workflow_inbox WHERE workflow_uid = $1 AND consumed_in IS NULL ORDER BY id",
            )
            .bind(uid)
            .fetch_all(p)
            .await
            .map_err(q("reading the inbox"))?;
            rows.iter()
                .map(|r| InboxEntry::from_row(r).map_err(corrupt("inbox row")))
                .collect()
        })
    }

    /// Moves staged audit entries into the hash chain, oldest first, in batches under the
    /// chain's lock. Returns how many were sealed.
    pub async fn audit_seal(&self) -> Result<usize> {
        let mut total = 0;
        loop {
            let n = self.audit_seal_batch(1000).await?;
            total += n;
            if n < 1000 {
                return Ok(total);
            }
        }
    }

    /// After a transaction staged audit rows: wake the sealer, which moves them into the
    /// chain in batches (one short lock for many rows, off the hot path). Readers of the log
    /// (`audit_list`, `audit_verify`) seal first, so they never miss a committed row.
    pub(crate) async fn after_audit_staged(&self) {
        self.seal_wakeup.notify_one();
    }

    /// Seals staged audit rows whenever woken (and every second), until the pool closes.
    pub(crate) async fn sealer(self) {
        loop {
            tokio::select! {
                _ = self.seal_wakeup.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
            if self.is_closed() {
                return;
            }
            // Let the rows of concurrent transactions gather into one batch.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if let Err(e) = self.audit_seal().await {
                if self.is_closed() {
                    return;
                }
                tracing::warn!(error = %crate::chain(&e), "sealing audit entries (they stay staged and are sealed later)");
            }
        }
    }

    fn is_closed(&self) -> bool {
        match &self.pool {
            Pool::Pg(p) => p.is_closed(),
            Pool::Sqlite(p) => p.is_closed(),
        }
    }

    /// Drops `holder`'s leases (a replica shutting down), so others take over at once.
    pub async fn release_leases(&self, holder: &str) -> Result<u64> {
        on_pool!(&self.pool, |p| {
            Ok(sqlx::query("DELETE FROM leases WHERE holder = $1")
                .bind(holder)
                .execute(p)
                .await
                .map_err(q("releasing leases"))?
                .rows_affected())
        })
    }

    /// Renews `holder`'s lease on one workflow; false when it lost it.
    pub async fn renew_lease(&self, uid: &str, holder: &str, expires_at: i64) -> Result<bool> {
        on_pool!(&self.pool, |p| {
            Ok(sqlx::query(
                "UPDATE leases SET expires_at = $3 WHERE workflow_uid = $1 AND holder = $2",
            )
            .bind(uid)
            .bind(holder)
            .bind(expires_at)
            .execute(p)
            .await
            .map_err(q("renewing a lease"))?
            .rows_affected()
                == 1)
        })
    }

    /// The notice for a changed workflow, from this store.
    pub(crate) fn notice_changed(&self, uid: &str, ns: &str, name: &str) -> Notice {
        Notice::Changed {
            uid: uid.to_string(),
            ns: ns.to_string(),
            name: name.to_string(),
            origin: self.origin.to_string(),
        }
    }

    /// This store's identity in notifications, so a replica can skip its own.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Notifications from every replica on this database (PostgreSQL); `None` on SQLite,
    /// where the one process notifies itself.
    pub async fn listen(&self) -> Result<Option<sqlx::postgres::PgListener>> {
        match &self.pool {
            Pool::Pg(p) => {
                let mut l = sqlx::postgres::PgListener::connect_with(p)
                    .await
                    .map_err(q("connecting a listener"))?;
                l.listen(NOTIFY_CHANNEL)
                    .await
                    .map_err(q("listening for notifications"))?;
                Ok(Some(l))
            }
            Pool::Sqlite(_) => Ok(None),
        }
    }
}

impl Store {
    /// Inbox entries not yet consumed, across all workflows (a queue-depth gauge).
    pub async fn inbox_pending_count(&self) -> Result<i64> {
        on_pool!(&self.pool, |p| {
            sqlx::query("SELECT COUNT(*) AS n FROM workflow_inbox WHERE consumed_in IS NULL")
                .fetch_one(p)
                .await
                .and_then(|r| r.try_get::<i64, _>("n"))
                .map_err(q("counting inbox entries"))
        })
    }
}

/// A bind parameter of [`Store::exec_audited`].
#[derive(Debug, Clone, Copy)]
pub enum Arg<'a> {
    Text(&'a str),
    Bool(bool),
    Int(i64),
    Json(&'a Value),
}

/// `query` with `args` bound in order.
pub(crate) fn bind_all<'q, DB>(
    mut query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>,
    args: &[Arg<'q>],
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments>
where
    DB: sqlx::Database,
    &'q str: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    Json<std::borrow::Cow<'q, Value>>: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    for a in args {
        query = match *a {
            Arg::Text(t) => query.bind(t),
            Arg::Bool(b) => query.bind(b),
            Arg::Int(i) => query.bind(i),
            Arg::Json(v) => query.bind(Json(crate::storable_json(v))),
        };
    }
    query
}

impl Store {
    /// Runs one statement and stages its audit row in the same transaction: the change and
    /// the record of who made it commit together or not at all. Returns the rows affected
    /// (an error from the statement itself, such as a unique violation, comes back as is).
    pub(crate) async fn exec_audited(
        &self,
        sql: impl sqlx::SqlSafeStr,
        args: &[Arg<'_>],
        audit: &AuditEntry,
    ) -> std::result::Result<u64, sqlx::Error> {
        let _turn = self.write_turn().await;
        macro_rules! audited_tx {
            ($p:expr) => {{
                let mut tx = $p.begin().await?;
                let n = bind_all(sqlx::query(sql), args)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if n > 0 {
                    sqlx::query(
                        "INSERT INTO audit_outbox (at, actor, action, object, source, details) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .bind(audit.at)
                    .bind(&audit.actor)
                    .bind(&audit.action)
                    .bind(&audit.object)
                    .bind(&audit.source)
                    .bind(Json(crate::storable_json(&audit.details)))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                n
            }};
        }
        let n = match &self.pool {
            Pool::Pg(p) => audited_tx!(p),
            Pool::Sqlite(p) => audited_tx!(p),
        };
        if n > 0 {
            self.after_audit_staged().await;
        }
        Ok(n)
    }
}
