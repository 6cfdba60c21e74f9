//! Durable state: workflows, the append-only history of engine inputs, the node projection,
//! and the tamper-evident audit log, on PostgreSQL (production) or SQLite (embedded default).
//!
//! # Brief overview
//! - [`Store::open`] connects by URL (`postgres://…`, `sqlite://PATH`, `sqlite::memory:`) and
//!   applies the migrations in `migrations/postgres` or `migrations/sqlite`.
//! - `workflows`: [`Store::record_step`] appends one batch of engine inputs and, in the same
//!   transaction, the nodes and workflow status it produced, the inbox entries it consumed and
//!   its audit rows: the projection never runs ahead of history. [`Store::history`] returns
//!   the batches in order, for replay.
//! - `shared`: what replicas share — [`Store::submit_workflow`] (workflow, lease, idempotency
//!   key, cron firing and audit row in one transaction), the inbox of outside inputs
//!   ([`Store::enqueue_input`]), change notifications ([`Notice`], PostgreSQL `NOTIFY`).
//! - `events`: events keyed by `(namespace, source, id)` ([`Store::append_events`]), sensors' decisions
//!   and dependency state, dedupe keys, and the Sensor/EventSource/WorkflowEventBinding objects.
//! - `objects`: one store of named objects ([`Collection`]: templates, cluster templates,
//!   cron workflows, event objects): put/get/list/delete, every change with its audit row in
//!   the same transaction; `templates` and `crons` are typed views over it, `leases` its own
//!   table.
//! - [`audit`]: the hash-chained audit log; rows are staged with the change they describe and
//!   sealed into the chain in batches ([`Store::audit_seal`], [`Store::audit_verify`]).
//!
//! No workflow semantics live here: rows in, rows out. Both backends run the same SQL
//! (`$N` placeholders; sqlx maps them for SQLite); JSON columns are JSONB on PostgreSQL and
//! TEXT on SQLite.

use std::str::FromStr;
use std::time::Duration;

use sqlx::{PgPool, SqlitePool};

pub use audit::{AuditEntry, AuditFilter, AuditRecord, ChainProblem};
pub use objects::{Collection, NamedObject};

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
    /// A setting the store reads from its environment is not valid.
    #[error("{0}")]
    Config(String),
    /// A shared write (group commit) failed for a reason that is not this caller's — the
    /// connection, the commit's acknowledgement —: retry, then look at what reached the
    /// database.
    #[error("{message}")]
    Transient { message: String },
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

/// A row that does not decode as `what` (a column missing or of the wrong type).
pub(crate) fn corrupt(what: &'static str) -> impl Fn(sqlx::Error) -> StoreError + Copy {
    move |e| StoreError::Corrupt {
        what,
        message: e.to_string(),
    }
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

/// A JSON value as PostgreSQL's jsonb can hold it: every U+0000 in a string or a key becomes
/// U+FFFD (jsonb rejects `\u0000`, and one such value would make its whole transaction fail:
/// a webhook body that can never be stored, a workflow whose next step cannot be recorded).
/// Applied on every backend, so a value reads the same whichever store holds it. Borrows
/// when there is nothing to replace, which is nearly always.
pub(crate) fn storable_json(v: &serde_json::Value) -> std::borrow::Cow<'_, serde_json::Value> {
    use serde_json::Value;
    fn has_nul(v: &Value) -> bool {
        match v {
            Value::String(s) => s.contains('\0'),
            Value::Array(a) => a.iter().any(has_nul),
            Value::Object(m) => m.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
            _ => false,
        }
    }
    fn clean(v: &Value) -> Value {
        let text = |s: &str| s.replace('\0', "\u{FFFD}");
        match v {
            Value::String(s) => Value::String(text(s)),
            Value::Array(a) => Value::Array(a.iter().map(clean).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (text(k), clean(v))).collect()),
            other => other.clone(),
        }
    }
    if has_nul(v) {
        std::borrow::Cow::Owned(clean(v))
    } else {
        std::borrow::Cow::Borrowed(v)
    }
}

pub mod audit;
mod crons;
mod events;
mod leases;
mod objects;
mod shared;
mod templates;
mod workflows;

pub use crons::CronRecord;
pub use events::{
    Appended, DecisionRecord, DecisionWrite, DefinitionsListener, DeliveryResolution,
    EventIdentity, EventObject, EventQuery, EventRecord, LatestDelivery, NewEvent,
    delivery_event_id, resolve_delivery,
};
pub use templates::TemplateRecord;
pub use workflows::{
    ListQuery, NewWorkflow, NodeLogLines, NodeRow, OwnedStep, StepRecord, WorkflowRecord,
    WorkflowState,
};

pub use shared::{InboxEntry, NOTIFY_CHANNEL, Notice, Submission, Submitted};

#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: Pool,
    /// Identifies this process's notifications (see [`Notice`]).
    pub(crate) origin: std::sync::Arc<str>,
    /// Wakes the task that seals staged audit rows into the chain.
    pub(crate) seal_wakeup: std::sync::Arc<tokio::sync::Notify>,
    /// On SQLite, this process's hot write transactions (steps, logs, audit sealing) take
    /// turns here instead of meeting on the database's write lock, where a collision costs
    /// a busy-handler sleep of 1 ms and more (measured: ~0.4 ms a step on a chain). Other
    /// processes on the same file still wait through the busy timeout.
    pub(crate) sqlite_writer: std::sync::Arc<tokio::sync::Mutex<()>>,
}

impl Store {
    /// This process's turn to write, on SQLite (see `sqlite_writer`); nothing on PostgreSQL.
    pub(crate) async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.pool {
            Pool::Sqlite(_) => Some(self.sqlite_writer.lock().await),
            Pool::Pg(_) => None,
        }
    }

    /// Connects and applies migrations.
    pub async fn open(url: &str) -> Result<Store> {
        let connect = |source| StoreError::Connect {
            url: redact(url),
            source,
        };
        let pool = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            // Webhook ingestion, sensor processing and workflow drivers share it; they wait on
            // round trips, not on the database's CPU. Two replicas stay well below
            // PostgreSQL's default of 100 connections.
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(24)
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
            sqlite_writer: std::sync::Arc::default(),
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
            .synchronous(sqlite_synchronous()?)
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

impl Store {
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
/// SQLite's `synchronous` setting: `normal` (the default) or `full`, from
/// `RIPOSTE_SQLITE_SYNCHRONOUS`. In WAL mode `normal` syncs at checkpoints, not at every
/// commit: a committed step survives the process being killed (`kill -9`, a crash), and after
/// a power loss or OS crash the last commits may be rolled back while the database stays
/// consistent. `full` syncs every commit, to survive power loss too, at a cost per step.
fn sqlite_synchronous() -> Result<sqlx::sqlite::SqliteSynchronous> {
    use sqlx::sqlite::SqliteSynchronous;
    match std::env::var("RIPOSTE_SQLITE_SYNCHRONOUS").as_deref() {
        Err(_) | Ok("") | Ok("normal") => Ok(SqliteSynchronous::Normal),
        Ok("full") => Ok(SqliteSynchronous::Full),
        Ok(other) => Err(StoreError::Config(format!(
            "RIPOSTE_SQLITE_SYNCHRONOUS={other:?}: expected normal (survives a process crash) or full (survives power loss too)"
        ))),
    }
}
