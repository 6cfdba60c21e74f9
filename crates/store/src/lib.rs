//! Durable state: workflows, the append-only history of engine inputs, the node projection,
//! and the tamper-evident audit log, on PostgreSQL (production) or SQLite (embedded default).
//!
//! # Brief overview
//! - [`Store::open`] connects by URL (`postgres://…`, `sqlite://PATH`, `sqlite::memory:`) and
//!   applies the migrations in `migrations/postgres` or `migrations/sqlite`.
//! - [`Store::create_workflow`] records a workflow and what the engine was created from.
//! - [`Store::append_step`] appends one batch of engine inputs and, in the same transaction,
//!   the nodes and workflow status it produced: the projection never runs ahead of history.
//! - [`Store::history`] returns the batches in order, for replay.
//! - [`audit`]: the hash-chained audit log ([`Store::audit_append`], [`Store::audit_verify`]).
//!
//! No workflow semantics live here: rows in, rows out. Both backends run the same SQL
//! (`$N` placeholders; sqlx maps them for SQLite); JSON columns are JSONB on PostgreSQL and
//! TEXT on SQLite.

use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgPool, Row, SqlitePool};

pub use audit::{AuditEntry, AuditFilter, AuditRecord, ChainProblem};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use postgres://USER@HOST/DB or sqlite://PATH")]
    BadUrl(String),
    #[error("connecting to {url}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("applying migrations")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error("{op}")]
    Query {
        op: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("workflow {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("workflow {namespace}/{name} already exists")]
    AlreadyExists { namespace: String, name: String },
    #[error("stored {what} is not valid: {message}")]
    Corrupt { what: &'static str, message: String },
    #[error("workflow {uid} has finished")]
    Finished { uid: String },
}

/// An error with its causes, `outer: inner: innermost`, for logs and messages.
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !out.ends_with(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = c.source();
    }
    out
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

pub(crate) fn q(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { op, source }
}

/// The connection pool of one backend.
#[derive(Clone, Debug)]
pub(crate) enum Pool {
    Pg(PgPool),
    Sqlite(SqlitePool),
}

/// Runs the same tokens against whichever backend the store uses. The SQL is identical for
/// both; only the executor type differs.
macro_rules! on_pool {
    ($pool:expr, |$p:ident| $body:expr) => {
        match $pool {
            Pool::Pg($p) => $body,
            Pool::Sqlite($p) => $body,
        }
    };
}

pub mod audit;
mod shared;

use shared::Arg;
pub use shared::{InboxEntry, NOTIFY_CHANNEL, Notice, Submission, Submitted};

#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: Pool,
    /// Identifies this process's notifications (see [`Notice`]).
    pub(crate) origin: std::sync::Arc<str>,
    /// Wakes the task that seals staged audit rows into the chain.
    pub(crate) seal_wakeup: std::sync::Arc<tokio::sync::Notify>,
}

/// One engine step to record; see [`Store::record_step`].
#[derive(Debug, Clone, Copy)]
pub struct StepRecord<'a> {
    pub uid: &'a str,
    pub seq: i64,
    pub inputs: &'a Value,
    pub recorded_at: i64,
    pub nodes: &'a [NodeRow],
    pub removed: &'a [String],
    pub state: &'a WorkflowState,
    /// Inbox entry ids whose inputs are part of this batch.
    pub consumed_inbox: &'a [i64],
    /// Audit rows (node transitions) written with the step.
    pub audit: &'a [AuditEntry],
    /// `(namespace, name)` to announce to other replicas (watch streams, log followers).
    pub notify: Option<(&'a str, &'a str)>,
}

/// A new workflow row.
#[derive(Debug, Clone)]
pub struct NewWorkflow {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: Value,
    pub created_at: i64,
    pub definition: Value,
}

/// A node of the projection.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeRow {
    pub id: String,
    pub name: String,
    pub phase: String,
    pub status: Value,
}

/// The workflow's state after a step.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkflowState {
    pub phase: String,
    pub message: String,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub status: Value,
}

/// A stored workflow.
#[derive(Debug, Clone)]
pub struct WorkflowRecord {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub phase: String,
    pub message: String,
    pub labels: Value,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub definition: Value,
    pub status: Value,
    pub history_len: i64,
}

const WORKFLOW_COLUMNS: &str = "uid, namespace, name, phase, message, labels, created_at, started_at, finished_at, definition, status, history_len";

/// Reads a workflow row; a macro because each backend has its own row type.
macro_rules! workflow_row {
    ($row:expr) => {{
        let row = $row;
        let get = |e: sqlx::Error| StoreError::Corrupt {
            what: "workflow row",
            message: e.to_string(),
        };
        Ok::<_, StoreError>(WorkflowRecord {
            uid: row.try_get("uid").map_err(get)?,
            namespace: row.try_get("namespace").map_err(get)?,
            name: row.try_get("name").map_err(get)?,
            phase: row.try_get("phase").map_err(get)?,
            message: row.try_get("message").map_err(get)?,
            labels: row.try_get::<Json<Value>, _>("labels").map_err(get)?.0,
            created_at: row.try_get("created_at").map_err(get)?,
            started_at: row.try_get("started_at").map_err(get)?,
            finished_at: row.try_get("finished_at").map_err(get)?,
            definition: row.try_get::<Json<Value>, _>("definition").map_err(get)?.0,
            status: row.try_get::<Json<Value>, _>("status").map_err(get)?.0,
            history_len: row.try_get("history_len").map_err(get)?,
        })
    }};
}

impl Store {
    /// Connects and applies migrations.
    pub async fn open(url: &str) -> Result<Store> {
        let connect = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(10)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(connect)?;
            sqlx::migrate!("../../migrations/postgres")
                .run(&pool)
                .await
                .map_err(StoreError::Migrate)?;
            Pool::Pg(pool)
        } else if url.starts_with("sqlite:") {
            // Several `riposte` processes may open the embedded database at once; switching
            // to WAL and migrating need the write lock, so a busy database is retried.
            let mut attempt = 0u32;
            loop {
                match Self::open_sqlite(url).await {
                    Ok(pool) => break Pool::Sqlite(pool),
                    Err(e) if attempt < 40 && is_busy(&e) => {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt.min(20))))
                            .await;
                    }
                    Err(e) => return Err(e),
                }
            }
        } else {
            return Err(StoreError::BadUrl(redact(url)));
        };
        let store = Store {
            pool,
            origin: uuid::Uuid::new_v4().to_string().into(),
            seal_wakeup: std::sync::Arc::new(tokio::sync::Notify::new()),
        };
        tokio::spawn(store.clone().sealer());
        Ok(store)
    }

    async fn open_sqlite(url: &str) -> Result<SqlitePool> {
        let connect = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        let opts = sqlx::sqlite::SqliteConnectOptions::from_str(url)
            .map_err(connect)?
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10))
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .foreign_keys(true);
        // An in-memory database lives in one connection.
        let max = if url.contains(":memory:") { 1 } else { 4 };
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(opts)
            .await
            .map_err(connect)?;
        sqlx::migrate!("../../migrations/sqlite")
            .run(&pool)
            .await
            .map_err(StoreError::Migrate)?;
        Ok(pool)
    }

    /// Closes every connection (waits for them to be returned).
    pub async fn close(&self) {
        on_pool!(&self.pool, |p| p.close().await)
    }

    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Pg(_) => "postgres",
            Pool::Sqlite(_) => "sqlite",
        }
    }

    pub async fn create_workflow(&self, w: &NewWorkflow) -> Result<()> {
        let res = on_pool!(&self.pool, |p| {
            sqlx::query(
                "INSERT INTO workflows (uid, namespace, name, phase, labels, created_at, definition) VALUES ($1, $2, $3, 'Pending', $4, $5, $6)",
            )
            .bind(&w.uid)
            .bind(&w.namespace)
            .bind(&w.name)
            .bind(Json(&w.labels))
            .bind(w.created_at)
            .bind(Json(&w.definition))
            .execute(p)
            .await
            .map(|_| ())
        });
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::AlreadyExists {
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                })
            }
            Err(e) => Err(StoreError::Query {
                op: "inserting a workflow",
                source: e,
            }),
        }
    }

    /// Appends batch `seq` of inputs and, atomically with it, the nodes that changed and the
    /// workflow's new state. `seq` must be the next one (0, 1, 2, ...): a duplicate fails, so
    /// a step is never recorded twice.
    pub async fn append_step(
        &self,
        uid: &str,
        seq: i64,
        inputs: &Value,
        recorded_at: i64,
        nodes: &[NodeRow],
        state: &WorkflowState,
    ) -> Result<()> {
        self.record_step(&StepRecord {
            uid,
            seq,
            inputs,
            recorded_at,
            nodes,
            removed: &[],
            state,
            consumed_inbox: &[],
            audit: &[],
            notify: None,
        })
        .await
    }

    /// Records one engine step in one transaction: the history batch, the nodes it changed
    /// (and removed), the workflow's state, the inbox entries it consumed, its audit rows (node
    /// transitions) and a notification for the other replicas. Guarded by `history_len`, so a
    /// replica that lost its lease (or a duplicate) cannot append.
    pub async fn record_step(&self, r: &StepRecord<'_>) -> Result<()> {
        let &StepRecord {
            uid,
            seq,
            inputs,
            recorded_at,
            nodes,
            removed,
            state,
            consumed_inbox,
            audit,
            notify,
        } = r;
        let notice = notify.map(|(ns, name)| self.notice_changed(uid, ns, name));
        // The same transaction on both backends; only the node upsert differs (one UNNEST
        // statement on PostgreSQL, a prepared statement per node on SQLite).
        macro_rules! step_tx {
            ($backend:ident, $p:expr, |$tx:ident| $upsert:expr) => {{
                let mut $tx = $p.begin().await.map_err(q("starting a transaction"))?;
                sqlx::query("INSERT INTO workflow_history (workflow_uid, seq, inputs, recorded_at) VALUES ($1, $2, $3, $4)")
                    .bind(uid)
                    .bind(seq)
                    .bind(Json(inputs))
                    .bind(recorded_at)
                    .execute(&mut *$tx)
                    .await
                    .map_err(q("appending history"))?;
                for id in removed {
                    sqlx::query("DELETE FROM nodes WHERE workflow_uid = $1 AND node_id = $2")
                        .bind(uid)
                        .bind(id)
                        .execute(&mut *$tx)
                        .await
                        .map_err(q("removing retried nodes"))?;
                }
                $upsert;
                let updated = sqlx::query(
                    "UPDATE workflows SET phase = $2, message = $3, started_at = $4, finished_at = $5, status = $6, history_len = $7 WHERE uid = $1 AND history_len = $8",
                )
                .bind(uid)
                .bind(&state.phase)
                .bind(&state.message)
                .bind(state.started_at)
                .bind(state.finished_at)
                .bind(Json(&state.status))
                .bind(seq + 1)
                .bind(seq)
                .execute(&mut *$tx)
                .await
                .map_err(q("updating the workflow"))?;
                if updated.rows_affected() != 1 {
                    return Err(StoreError::Corrupt {
                        what: "history",
                        message: format!("workflow {uid}: batch {seq} is not the next one (another writer?)"),
                    });
                }
                for id in consumed_inbox {
                    let n = sqlx::query("UPDATE workflow_inbox SET consumed_in = $3 WHERE workflow_uid = $1 AND id = $2 AND consumed_in IS NULL")
                        .bind(uid)
                        .bind(id)
                        .bind(seq)
                        .execute(&mut *$tx)
                        .await
                        .map_err(q("marking inbox entries consumed"))?
                        .rows_affected();
                    if n != 1 {
                        return Err(StoreError::Corrupt {
                            what: "inbox",
                            message: format!("workflow {uid}: inbox entry {id} was consumed already (another writer?)"),
                        });
                    }
                }
                shared::stage_audit!($backend, $tx, audit);
                if let Some(notice) = &notice {
                    shared::notify!(self, $tx, notice);
                }
                $tx.commit().await.map_err(q("committing a step"))?;
                Ok::<(), StoreError>(())
            }};
        }
        match &self.pool {
            Pool::Pg(p) => step_tx!(Pg, p, |tx| if !nodes.is_empty() {
                let ids: Vec<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
                let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
                let phases: Vec<&str> = nodes.iter().map(|n| n.phase.as_str()).collect();
                let statuses: Vec<Json<&Value>> = nodes.iter().map(|n| Json(&n.status)).collect();
                sqlx::query(
                    "INSERT INTO nodes (workflow_uid, node_id, name, phase, status) \
                     SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::jsonb[]) \
                     ON CONFLICT (workflow_uid, node_id) DO UPDATE SET phase = excluded.phase, status = excluded.status",
                )
                .bind(uid)
                .bind(&ids)
                .bind(&names)
                .bind(&phases)
                .bind(&statuses)
                .execute(&mut *tx)
                .await
                .map_err(q("updating nodes"))?;
            })?,
            Pool::Sqlite(p) => step_tx!(Sqlite, p, |tx| for n in nodes {
                sqlx::query(
                    "INSERT INTO nodes (workflow_uid, node_id, name, phase, status) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (workflow_uid, node_id) DO UPDATE SET phase = excluded.phase, status = excluded.status",
                )
                .bind(uid)
                .bind(&n.id)
                .bind(&n.name)
                .bind(&n.phase)
                .bind(Json(&n.status))
                .execute(&mut *tx)
                .await
                .map_err(q("updating nodes"))?;
            })?,
        }
        if !audit.is_empty() {
            self.after_audit_staged().await;
        }
        Ok(())
    }

    pub async fn get_workflow(&self, namespace: &str, name: &str) -> Result<WorkflowRecord> {
        let row = on_pool!(&self.pool, |p| {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE namespace = $1 AND name = $2"
            )))
            .bind(namespace)
            .bind(name)
            .fetch_optional(p)
            .await
            .map_err(q("reading a workflow"))?
            .map(|r| workflow_row!(&r))
            .transpose()?
        });
        row.ok_or_else(|| StoreError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// Workflows, newest first (`namespace` None: all namespaces).
    pub async fn list_workflows(
        &self,
        namespace: Option<&str>,
        limit: i64,
    ) -> Result<Vec<WorkflowRecord>> {
        self.list_workflows_page(&ListQuery {
            namespace: namespace.map(str::to_string),
            limit,
            ..Default::default()
        })
        .await
    }

    /// One page of workflows, newest first, filtered by namespace, phase and labels, after
    /// `after` (keyset pagination on `(created_at, uid)`, so a page costs the same at any
    /// depth). Label filters use the GIN index on PostgreSQL.
    pub async fn list_workflows_page(&self, lq: &ListQuery) -> Result<Vec<WorkflowRecord>> {
        let mut sql = format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if lq.namespace.is_some() {
            sql.push_str(&format!(" AND namespace = {}", next()));
        }
        if lq.phase.is_some() {
            sql.push_str(&format!(" AND phase = {}", next()));
        }
        let pg = matches!(self.pool, Pool::Pg(_));
        if !lq.labels.is_empty() {
            if pg {
                sql.push_str(&format!(" AND labels @> {}::jsonb", next()));
            } else {
                for _ in &lq.labels {
                    // The key is bound too: `json_extract(labels, '$."' || key || '"')`.
                    let (k, v) = (next(), next());
                    sql.push_str(&format!(
                        " AND json_extract(labels, '$.\"' || {k} || '\"') = {v}"
                    ));
                }
            }
        }
        if lq.after.is_some() {
            let (t, u) = (next(), next());
            // A row comparison, so the index range starts at the token (an `OR` of the two
            // cases is a filter over every newer row: 70 ms instead of 0.3 ms at 1M rows).
            sql.push_str(&format!(" AND (created_at, uid) < ({t}, {u})"));
        }
        sql.push_str(&format!(
            " ORDER BY created_at DESC, uid DESC LIMIT {}",
            next()
        ));
        let labels_json = Value::Object(
            lq.labels
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect(),
        )
        .to_string();
        on_pool!(&self.pool, |p| {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
            if let Some(ns) = &lq.namespace {
                query = query.bind(ns);
            }
            if let Some(ph) = &lq.phase {
                query = query.bind(ph);
            }
            if !lq.labels.is_empty() {
                if pg {
                    query = query.bind(&labels_json);
                } else {
                    for (k, v) in &lq.labels {
                        query = query.bind(k).bind(v);
                    }
                }
            }
            if let Some((t, u)) = &lq.after {
                query = query.bind(*t).bind(u);
            }
            let rows = query
                .bind(lq.limit)
                .fetch_all(p)
                .await
                .map_err(q("listing workflows"))?;
            rows.iter().map(|r| workflow_row!(r)).collect()
        })
    }

    /// The batches of inputs, in order.
    pub async fn history(&self, uid: &str) -> Result<Vec<Value>> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query(
                "SELECT inputs FROM workflow_history WHERE workflow_uid = $1 ORDER BY seq",
            )
            .bind(uid)
            .fetch_all(p)
            .await
            .map_err(q("reading history"))?;
            rows.iter()
                .map(|r| {
                    r.try_get::<Json<Value>, _>("inputs")
                        .map(|j| j.0)
                        .map_err(|e| StoreError::Corrupt {
                            what: "history",
                            message: e.to_string(),
                        })
                })
                .collect()
        })
    }

    /// Stores a finished node's log lines (appended after any already stored).
    pub async fn append_node_logs(
        &self,
        uid: &str,
        node_id: &str,
        at: i64,
        lines: &[String],
    ) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        on_pool!(&self.pool, |p| {
            let mut tx = p.begin().await.map_err(q("starting a transaction"))?;
            let start: i64 = sqlx::query("SELECT COALESCE(MAX(seq) + 1, 0) AS next FROM node_logs WHERE workflow_uid = $1 AND node_id = $2")
                .bind(uid)
                .bind(node_id)
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get("next"))
                .map_err(q("reading node logs"))?;
            for (i, line) in lines.iter().enumerate() {
                sqlx::query("INSERT INTO node_logs (workflow_uid, node_id, seq, at, line) VALUES ($1, $2, $3, $4, $5)")
                    .bind(uid)
                    .bind(node_id)
                    .bind(start + i as i64)
                    .bind(at)
                    .bind(line)
                    .execute(&mut *tx)
                    .await
                    .map_err(q("storing node logs"))?;
            }
            tx.commit().await.map_err(q("committing node logs"))?;
            Ok(())
        })
    }

    /// A workflow's stored log lines: (node id, line), by node then line order.
    pub async fn node_logs(&self, uid: &str) -> Result<Vec<(String, String)>> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query(
                "SELECT node_id, line FROM node_logs WHERE workflow_uid = $1 ORDER BY node_id, seq",
            )
            .bind(uid)
            .fetch_all(p)
            .await
            .map_err(q("reading node logs"))?;
            rows.iter()
                .map(|r| -> Result<(String, String)> {
                    let bad = |e: sqlx::Error| StoreError::Corrupt {
                        what: "log row",
                        message: e.to_string(),
                    };
                    Ok((
                        r.try_get("node_id").map_err(bad)?,
                        r.try_get("line").map_err(bad)?,
                    ))
                })
                .collect()
        })
    }

    /// The node projection as raw JSON text per node, for responses that only pass it on
    /// (no parse and re-serialize of 10,000 objects).
    pub async fn nodes_raw(&self, uid: &str) -> Result<Vec<(String, String)>> {
        let sql = match self.pool {
            Pool::Pg(_) => {
                "SELECT node_id, status::text AS status FROM nodes WHERE workflow_uid = $1 ORDER BY node_id"
            }
            Pool::Sqlite(_) => {
                "SELECT node_id, status FROM nodes WHERE workflow_uid = $1 ORDER BY node_id"
            }
        };
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query(sql)
                .bind(uid)
                .fetch_all(p)
                .await
                .map_err(q("reading nodes"))?;
            rows.iter()
                .map(|r| -> Result<(String, String)> {
                    let bad = |e: sqlx::Error| StoreError::Corrupt {
                        what: "node row",
                        message: e.to_string(),
                    };
                    Ok((
                        r.try_get("node_id").map_err(bad)?,
                        r.try_get("status").map_err(bad)?,
                    ))
                })
                .collect()
        })
    }

    /// The node projection, by node id.
    pub async fn nodes(&self, uid: &str) -> Result<Vec<NodeRow>> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query("SELECT node_id, name, phase, status FROM nodes WHERE workflow_uid = $1 ORDER BY node_id")
                .bind(uid)
                .fetch_all(p)
                .await
                .map_err(q("reading nodes"))?;
            rows.iter()
                .map(|r| -> Result<NodeRow> {
                    let bad = |e: sqlx::Error| StoreError::Corrupt {
                        what: "node row",
                        message: e.to_string(),
                    };
                    Ok(NodeRow {
                        id: r.try_get("node_id").map_err(bad)?,
                        name: r.try_get("name").map_err(bad)?,
                        phase: r.try_get("phase").map_err(bad)?,
                        status: r.try_get::<Json<Value>, _>("status").map_err(bad)?.0,
                    })
                })
                .collect()
        })
    }
}

/// A concurrent opener holds SQLite's lock (or just created what we were creating).
fn is_busy(e: &StoreError) -> bool {
    let text = match e {
        StoreError::Connect { source, .. } => source.to_string(),
        StoreError::Migrate(m) => m.to_string(),
        _ => return false,
    };
    text.contains("database is locked")
        || text.contains("already exists")
        || text.contains("UNIQUE constraint failed")
}

/// A stored CronWorkflow.
#[derive(Debug, Clone, PartialEq)]
pub struct CronRecord {
    pub namespace: String,
    pub name: String,
    pub body: Value,
    pub suspended: bool,
    pub last_scheduled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! cron_row {
    ($r:expr) => {{
        let r = $r;
        let bad = |e: sqlx::Error| StoreError::Corrupt {
            what: "cron row",
            message: e.to_string(),
        };
        Ok::<_, StoreError>(CronRecord {
            namespace: r.try_get("namespace").map_err(bad)?,
            name: r.try_get("name").map_err(bad)?,
            body: r.try_get::<Json<Value>, _>("body").map_err(bad)?.0,
            suspended: r.try_get("suspended").map_err(bad)?,
            last_scheduled_at: r.try_get("last_scheduled_at").map_err(bad)?,
            created_at: r.try_get("created_at").map_err(bad)?,
            updated_at: r.try_get("updated_at").map_err(bad)?,
        })
    }};
}

const CRON_COLUMNS: &str =
    "namespace, name, body, suspended, last_scheduled_at, created_at, updated_at";

impl Store {
    /// Creates (`create`, failing if it exists) or replaces a CronWorkflow's body.
    /// Creates (`create = true`, failing if it exists) or replaces a cron workflow, with its
    /// audit row in the same transaction.
    #[allow(clippy::too_many_arguments)]
    pub async fn put_cron(
        &self,
        namespace: &str,
        name: &str,
        body: &Value,
        now: i64,
        create: bool,
        audit: &AuditEntry,
    ) -> Result<()> {
        let sql = if create {
            "INSERT INTO cron_workflows (namespace, name, body, suspended, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $5)"
        } else {
            "UPDATE cron_workflows SET body = $3, suspended = $4, updated_at = $5 WHERE namespace = $1 AND name = $2"
        };
        let suspended = body["spec"]["suspend"].as_bool().unwrap_or(false);
        let res = self
            .exec_audited(
                sql,
                &[
                    Arg::Text(namespace),
                    Arg::Text(name),
                    Arg::Json(body),
                    Arg::Bool(suspended),
                    Arg::Int(now),
                ],
                audit,
            )
            .await;
        match res {
            Ok(0) => Err(StoreError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            }),
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::AlreadyExists {
                    namespace: namespace.into(),
                    name: name.into(),
                })
            }
            Err(e) => Err(StoreError::Query {
                op: "storing a cron workflow",
                source: e,
            }),
        }
    }

    pub async fn get_cron(&self, namespace: &str, name: &str) -> Result<CronRecord> {
        let row = on_pool!(&self.pool, |p| {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {CRON_COLUMNS} FROM cron_workflows WHERE namespace = $1 AND name = $2"
            )))
            .bind(namespace)
            .bind(name)
            .fetch_optional(p)
            .await
            .map_err(q("reading a cron workflow"))?
            .map(|r| cron_row!(&r))
            .transpose()?
        });
        row.ok_or_else(|| StoreError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// CronWorkflows of a namespace, or of all namespaces.
    pub async fn list_crons(&self, namespace: Option<&str>) -> Result<Vec<CronRecord>> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {CRON_COLUMNS} FROM cron_workflows WHERE ($1 IS NULL OR namespace = $1) ORDER BY namespace, name"
            )))
            .bind(namespace)
            .fetch_all(p)
            .await
            .map_err(q("listing cron workflows"))?;
            rows.iter().map(|r| cron_row!(r)).collect()
        })
    }

    /// Whether the database answers a trivial query (the server's readiness probe).
    pub async fn ping(&self) -> Result<()> {
        on_pool!(&self.pool, |p| {
            sqlx::query("SELECT 1")
                .execute(p)
                .await
                .map_err(q("pinging the database"))?
                .rows_affected()
        });
        Ok(())
    }

    /// Deletes a cron workflow (with its audit row). Returns whether it existed.
    pub async fn delete_cron(
        &self,
        namespace: &str,
        name: &str,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let n = self
            .exec_audited(
                "DELETE FROM cron_workflows WHERE namespace = $1 AND name = $2",
                &[Arg::Text(namespace), Arg::Text(name)],
                audit,
            )
            .await
            .map_err(q("deleting a cron workflow"))?;
        Ok(n > 0)
    }

    /// Suspends or resumes a cron workflow (with its audit row).
    pub async fn set_cron_suspended(
        &self,
        namespace: &str,
        name: &str,
        suspended: bool,
        now: i64,
        audit: &AuditEntry,
    ) -> Result<()> {
        let n = self
            .exec_audited(
                "UPDATE cron_workflows SET suspended = $3, updated_at = $4 WHERE namespace = $1 AND name = $2",
                &[
                    Arg::Text(namespace),
                    Arg::Text(name),
                    Arg::Bool(suspended),
                    Arg::Int(now),
                ],
                audit,
            )
            .await
            .map_err(q("suspending a cron workflow"))?;
        if n == 0 {
            return Err(StoreError::NotFound {
                namespace: namespace.into(),
                name: name.into(),
            });
        }
        Ok(())
    }

    /// Claims the firing at `at`: true for exactly one caller per scheduled time.
    pub async fn claim_cron_firing(&self, namespace: &str, name: &str, at: i64) -> Result<bool> {
        let n = on_pool!(&self.pool, |p| {
            sqlx::query(
                "UPDATE cron_workflows SET last_scheduled_at = $3 WHERE namespace = $1 AND name = $2 \
                 AND (last_scheduled_at IS NULL OR last_scheduled_at < $3)",
            )
            .bind(namespace)
            .bind(name)
            .bind(at)
            .execute(p)
            .await
            .map_err(q("claiming a cron firing"))?
            .rows_affected()
        });
        Ok(n == 1)
    }
}

/// What to list; see [`Store::list_workflows_page`].
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub namespace: Option<String>,
    pub phase: Option<String>,
    pub labels: Vec<(String, String)>,
    /// Continue after this `(created_at, uid)`.
    pub after: Option<(i64, String)>,
    pub limit: i64,
}

/// A stored WorkflowTemplate or ClusterWorkflowTemplate.
#[derive(Debug, Clone, PartialEq)]
pub struct TemplateRecord {
    pub cluster: bool,
    pub namespace: String,
    pub name: String,
    pub body: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

macro_rules! template_row {
    ($r:expr) => {{
        let r = $r;
        let bad = |e: sqlx::Error| StoreError::Corrupt {
            what: "template row",
            message: e.to_string(),
        };
        Ok::<_, StoreError>(TemplateRecord {
            cluster: r.try_get("cluster").map_err(bad)?,
            namespace: r.try_get("namespace").map_err(bad)?,
            name: r.try_get("name").map_err(bad)?,
            body: r.try_get::<Json<Value>, _>("body").map_err(bad)?.0,
            created_at: r.try_get("created_at").map_err(bad)?,
            updated_at: r.try_get("updated_at").map_err(bad)?,
        })
    }};
}

impl Store {
    /// Claims unfinished workflows for `holder` until `expires_at`: those with no lease, an
    /// expired lease, or already held by `holder` (which renews them). Returns their uids.
    /// On PostgreSQL the claim is one `INSERT ... ON CONFLICT DO UPDATE WHERE` statement, so
    /// two replicas never both win the same workflow.
    pub async fn claim_workflows(
        &self,
        holder: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<Vec<String>> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query(
                "INSERT INTO leases (workflow_uid, holder, expires_at) \
                 SELECT uid, $1, $2 FROM workflows WHERE finished_at IS NULL \
                 ON CONFLICT (workflow_uid) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE leases.expires_at < $3 OR leases.holder = $1 \
                 RETURNING workflow_uid",
            )
            .bind(holder)
            .bind(expires_at)
            .bind(now)
            .fetch_all(p)
            .await
            .map_err(q("claiming workflows"))?;
            rows.iter()
                .map(|r| {
                    r.try_get::<String, _>("workflow_uid")
                        .map_err(q("claiming workflows"))
                })
                .collect()
        })
    }

    /// Claims one (new) workflow for `holder`; false if another holder has a live lease.
    pub async fn claim_workflow(
        &self,
        uid: &str,
        holder: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<bool> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query(
                "INSERT INTO leases (workflow_uid, holder, expires_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (workflow_uid) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at \
                 WHERE leases.expires_at < $4 OR leases.holder = $2 \
                 RETURNING workflow_uid",
            )
            .bind(uid)
            .bind(holder)
            .bind(expires_at)
            .bind(now)
            .fetch_all(p)
            .await
            .map_err(q("claiming a workflow"))?;
            Ok(!rows.is_empty())
        })
    }

    /// Drops `holder`'s lease on a workflow (it finished).
    pub async fn release_workflow(&self, uid: &str, holder: &str) -> Result<()> {
        on_pool!(&self.pool, |p| {
            sqlx::query("DELETE FROM leases WHERE workflow_uid = $1 AND holder = $2")
                .bind(uid)
                .bind(holder)
                .execute(p)
                .await
                .map_err(q("releasing a lease"))?;
            Ok(())
        })
    }

    pub async fn get_workflow_by_uid(&self, uid: &str) -> Result<WorkflowRecord> {
        let row = on_pool!(&self.pool, |p| {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE uid = $1"
            )))
            .bind(uid)
            .fetch_optional(p)
            .await
            .map_err(q("reading a workflow"))?
            .map(|r| workflow_row!(&r))
            .transpose()?
        });
        row.ok_or_else(|| StoreError::NotFound {
            namespace: String::new(),
            name: uid.into(),
        })
    }

    /// Workflows that have not finished (for recovery after a restart).
    pub async fn unfinished_workflows(&self) -> Result<Vec<WorkflowRecord>> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE finished_at IS NULL ORDER BY created_at, uid"
            )))
            .fetch_all(p)
            .await
            .map_err(q("listing unfinished workflows"))?;
            rows.iter().map(|r| workflow_row!(r)).collect()
        })
    }

    /// Deletes a workflow with its history, nodes and inbox (with its audit row). Returns
    /// whether it existed. Its idempotency key, if any, is free again.
    pub async fn delete_workflow(
        &self,
        namespace: &str,
        name: &str,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let n = self
            .exec_audited(
                "DELETE FROM workflows WHERE namespace = $1 AND name = $2",
                &[Arg::Text(namespace), Arg::Text(name)],
                audit,
            )
            .await
            .map_err(q("deleting a workflow"))?;
        Ok(n > 0)
    }

    /// Creates (`create = true`, failing if it exists) or replaces a template, with its
    /// audit row in the same transaction.
    pub async fn put_template(
        &self,
        t: &TemplateRecord,
        create: bool,
        audit: &AuditEntry,
    ) -> Result<()> {
        let sql = if create {
            "INSERT INTO workflow_templates (cluster, namespace, name, body, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6)"
        } else {
            "UPDATE workflow_templates SET body = $4, updated_at = $6 WHERE cluster = $1 AND namespace = $2 AND name = $3"
        };
        let res = self
            .exec_audited(
                sql,
                &[
                    Arg::Bool(t.cluster),
                    Arg::Text(&t.namespace),
                    Arg::Text(&t.name),
                    Arg::Json(&t.body),
                    Arg::Int(t.created_at),
                    Arg::Int(t.updated_at),
                ],
                audit,
            )
            .await;
        match res {
            Ok(0) => Err(StoreError::NotFound {
                namespace: t.namespace.clone(),
                name: t.name.clone(),
            }),
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::AlreadyExists {
                    namespace: t.namespace.clone(),
                    name: t.name.clone(),
                })
            }
            Err(e) => Err(StoreError::Query {
                op: "storing a template",
                source: e,
            }),
        }
    }

    pub async fn get_template(
        &self,
        cluster: bool,
        namespace: &str,
        name: &str,
    ) -> Result<TemplateRecord> {
        let row = on_pool!(&self.pool, |p| {
            sqlx::query("SELECT cluster, namespace, name, body, created_at, updated_at FROM workflow_templates WHERE cluster = $1 AND namespace = $2 AND name = $3")
                .bind(cluster)
                .bind(namespace)
                .bind(name)
                .fetch_optional(p)
                .await
                .map_err(q("reading a template"))?
                .map(|r| template_row!(&r))
                .transpose()?
        });
        row.ok_or_else(|| StoreError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// Templates of a namespace (`cluster = false`) or all cluster templates.
    pub async fn list_templates(
        &self,
        cluster: bool,
        namespace: &str,
    ) -> Result<Vec<TemplateRecord>> {
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query("SELECT cluster, namespace, name, body, created_at, updated_at FROM workflow_templates WHERE cluster = $1 AND namespace = $2 ORDER BY name")
                .bind(cluster)
                .bind(namespace)
                .fetch_all(p)
                .await
                .map_err(q("listing templates"))?;
            rows.iter().map(|r| template_row!(r)).collect()
        })
    }

    /// Deletes a template (with its audit row). Returns whether it existed.
    pub async fn delete_template(
        &self,
        cluster: bool,
        namespace: &str,
        name: &str,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let n = self
            .exec_audited(
                "DELETE FROM workflow_templates WHERE cluster = $1 AND namespace = $2 AND name = $3",
                &[Arg::Bool(cluster), Arg::Text(namespace), Arg::Text(name)],
                audit,
            )
            .await
            .map_err(q("deleting a template"))?;
        Ok(n > 0)
    }
}

/// Hides the password of a database URL for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{}:***{}", &url[..s + 3], user, &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}
