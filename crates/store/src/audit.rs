//! The audit log: append-only rows, each carrying the SHA-256 of the previous row, plus a
//! head row with the newest sequence number and hash.
//!
//! `hash(row) = sha256(prev_hash | seq | at | actor | action | object | source | details)`
//! over a canonical encoding. [`Store::audit_verify`] recomputes the chain and names the
//! first row that was edited, the rows that were deleted (a gap, a broken link, or a head
//! that points past the last row), so a change is detected unless the whole chain and its
//! head are rewritten consistently (tamper-evident, not tamper-proof).

use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::Row;
use sqlx::types::Json;

use crate::{Pool, Result, Store, StoreError, corrupt, q};

/// The hash before the first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened, by whom, from where, on what.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    pub at: i64,
    /// The token identity, or `system` / `cli:<user>` for local actions.
    pub actor: String,
    /// `workflow.create`, `node.transition`, `workflow.resume`, `trigger.decision`, ...
    pub action: String,
    /// `workflows/<namespace>/<name>` and the like.
    pub object: String,
    /// Client address or `local`.
    pub source: String,
    pub details: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord {
    pub seq: i64,
    pub entry: AuditEntry,
    pub prev_hash: String,
    pub hash: String,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Rows whose object is exactly this, or starts with it followed by `/`.
    pub object: Option<String>,
    pub actor: Option<String>,
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Rows before this sequence number (the next page of a newest-first listing).
    pub before_seq: Option<i64>,
    /// Newest first (the console's timeline) instead of in chain order.
    pub newest_first: bool,
    pub limit: i64,
}

/// A break in the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainProblem {
    #[error("row {seq} was edited: its hash does not match its contents")]
    Edited { seq: i64 },
    #[error("rows {from}..={to} were deleted: the sequence jumps from {before} to {after}")]
    Gap {
        before: i64,
        after: i64,
        from: i64,
        to: i64,
    },
    #[error("row {seq} does not follow row {prev}: a row was deleted or replaced")]
    BrokenLink { seq: i64, prev: i64 },
    #[error(
        "the newest rows were deleted: the head points at row {head_seq} but the log ends at row {last_seq}"
    )]
    Truncated { head_seq: i64, last_seq: i64 },
    #[error("the head does not match row {seq}")]
    HeadMismatch { seq: i64 },
}

fn canonical(seq: i64, prev_hash: &str, e: &AuditEntry) -> String {
    // serde_json with sorted keys (no `preserve_order` on values built by `json!` ... here we
    // serialize fields explicitly so the encoding never depends on map order).
    // As stored: a NUL in the details is stored as U+FFFD, so it is hashed as U+FFFD.
    let details = canonical_json(&crate::storable_json(&e.details));
    format!(
        "{prev_hash}|{seq}|{}|{}|{}|{}|{}|{details}",
        e.at,
        serde_json::to_string(&e.actor).unwrap_or_default(),
        serde_json::to_string(&e.action).unwrap_or_default(),
        serde_json::to_string(&e.object).unwrap_or_default(),
        serde_json::to_string(&e.source).unwrap_or_default(),
    )
}

/// JSON with object keys sorted, so the hash does not depend on storage order (JSONB
/// reorders keys).
fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| {
                    format!(
                        "{}:{}",
                        serde_json::to_string(k).unwrap_or_default(),
                        canonical_json(&m[*k])
                    )
                })
                .collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_json).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

pub fn row_hash(seq: i64, prev_hash: &str, e: &AuditEntry) -> String {
    let digest = Sha256::digest(canonical(seq, prev_hash, e).as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

macro_rules! audit_row {
    ($r:expr) => {{
        let r = $r;
        let bad = corrupt("audit row");
        Ok::<_, StoreError>(AuditRecord {
            seq: r.try_get("seq").map_err(bad)?,
            entry: AuditEntry {
                at: r.try_get("at").map_err(bad)?,
                actor: r.try_get("actor").map_err(bad)?,
                action: r.try_get("action").map_err(bad)?,
                object: r.try_get("object").map_err(bad)?,
                source: r.try_get("source").map_err(bad)?,
                details: r.try_get::<Json<Value>, _>("details").map_err(bad)?.0,
            },
            prev_hash: r.try_get("prev_hash").map_err(bad)?,
            hash: r.try_get("hash").map_err(bad)?,
        })
    }};
}

/// Appends to the chain in one transaction: lock the chain, take the entries (`$entries`
/// may read them inside the transaction), hash them in order after the head, insert them (one
/// UNNEST statement on PostgreSQL, a prepared insert per row on SQLite), delete the staged
/// rows they came from, move the head, commit.
macro_rules! chain_tx {
    ($p:expr, $lock:expr, |$tx:ident| $entries:expr, $backend:ident) => {async {
        let mut $tx = $p.begin().await.map_err(q("starting an audit transaction"))?;
        sqlx::query($lock).execute(&mut *$tx).await.map_err(q("locking the audit chain"))?;
        let (entries, staged_ids): (Vec<AuditEntry>, Vec<i64>) = $entries?;
        if entries.is_empty() {
            return Ok::<Vec<i64>, StoreError>(Vec::new());
        }
        let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(&mut *$tx)
            .await
            .map_err(q("reading the audit head"))?;
        let (mut seq, mut prev): (i64, String) = match head {
            Some(r) => (r.try_get("seq").map_err(q("reading the audit head"))?, r.try_get("hash").map_err(q("reading the audit head"))?),
            None => (0, GENESIS.to_string()),
        };
        let mut rows: Vec<(i64, &AuditEntry, String, String)> = Vec::with_capacity(entries.len());
        for e in &entries {
            seq += 1;
            let hash = row_hash(seq, &prev, e);
            rows.push((seq, e, std::mem::replace(&mut prev, hash.clone()), hash));
        }
        chain_insert!($backend, $tx, rows);
        chain_unstage!($backend, $tx, staged_ids);
        sqlx::query("INSERT INTO audit_head (id, seq, hash) VALUES (1, $1, $2) ON CONFLICT (id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash")
            .bind(seq)
            .bind(&prev)
            .execute(&mut *$tx)
            .await
            .map_err(q("moving the audit head"))?;
        $tx.commit().await.map_err(q("committing audit entries"))?;
        Ok::<Vec<i64>, StoreError>(rows.iter().map(|r| r.0).collect())
    }.await};
}

/// Removes sealed rows from the outbox (by id: rows of transactions still open have ids in
/// between and must stay).
macro_rules! chain_unstage {
    (Pg, $tx:ident, $ids:ident) => {{
        if !$ids.is_empty() {
            sqlx::query("DELETE FROM audit_outbox WHERE id = ANY($1)")
                .bind(&$ids)
                .execute(&mut *$tx)
                .await
                .map_err(q("removing sealed audit entries"))?;
        }
    }};
    (Sqlite, $tx:ident, $ids:ident) => {{
        for id in &$ids {
            sqlx::query("DELETE FROM audit_outbox WHERE id = $1")
                .bind(id)
                .execute(&mut *$tx)
                .await
                .map_err(q("removing sealed audit entries"))?;
        }
    }};
}

macro_rules! chain_insert {
    (Pg, $tx:ident, $rows:ident) => {{
        let seqs: Vec<i64> = $rows.iter().map(|r| r.0).collect();
        let ats: Vec<i64> = $rows.iter().map(|r| r.1.at).collect();
        let actors: Vec<&str> = $rows.iter().map(|r| r.1.actor.as_str()).collect();
        let actions: Vec<&str> = $rows.iter().map(|r| r.1.action.as_str()).collect();
        let objects: Vec<&str> = $rows.iter().map(|r| r.1.object.as_str()).collect();
        let sources: Vec<&str> = $rows.iter().map(|r| r.1.source.as_str()).collect();
        let details: Vec<String> = $rows.iter().map(|r| crate::storable_json(&r.1.details).to_string()).collect();
        let prevs: Vec<&str> = $rows.iter().map(|r| r.2.as_str()).collect();
        let hashes: Vec<&str> = $rows.iter().map(|r| r.3.as_str()).collect();
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor, action, object, source, details, prev_hash, hash) \
             SELECT s, a, ac, act, o, so, d::jsonb, p, h FROM UNNEST($1::bigint[], $2::bigint[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) AS t(s, a, ac, act, o, so, d, p, h)",
        )
        .bind(&seqs)
        .bind(&ats)
        .bind(&actors)
        .bind(&actions)
        .bind(&objects)
        .bind(&sources)
        .bind(&details)
        .bind(&prevs)
        .bind(&hashes)
        .execute(&mut *$tx)
        .await
        .map_err(q("appending to the audit log"))?;
    }};
    (Sqlite, $tx:ident, $rows:ident) => {{
        for (seq, e, prev_hash, hash) in &$rows {
            sqlx::query(
                "INSERT INTO audit_log (seq, at, actor, action, object, source, details, prev_hash, hash) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(*seq)
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.action)
            .bind(&e.object)
            .bind(&e.source)
            .bind(Json(crate::storable_json(&e.details)))
            .bind(prev_hash)
            .bind(hash)
            .execute(&mut *$tx)
            .await
            .map_err(q("appending to the audit log"))?;
        }
    }};
}

/// Appends are serialized with an advisory lock on PostgreSQL (readers are not blocked); on
/// SQLite, taking the write lock before reading the head serializes them.
const PG_LOCK: &str = "SELECT pg_advisory_xact_lock(7352911)";
const SQLITE_LOCK: &str = "UPDATE audit_head SET seq = seq WHERE id = 1";

impl Store {
    /// Appends entries to the chain in one transaction and returns their sequence numbers.
    pub async fn audit_append(&self, entries: &[AuditEntry]) -> Result<Vec<i64>> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let entries = entries.to_vec();
        let _turn = self.write_turn().await;
        match &self.pool {
            Pool::Pg(p) => chain_tx!(
                p,
                PG_LOCK,
                |_tx| Ok::<_, StoreError>((entries, Vec::new())),
                Pg
            ),
            Pool::Sqlite(p) => chain_tx!(
                p,
                SQLITE_LOCK,
                |_tx| Ok::<_, StoreError>((entries, Vec::new())),
                Sqlite
            ),
        }
    }

    /// Seals up to `limit` staged entries (the outbox) into the chain, oldest first, and
    /// removes them from the outbox in the same transaction. Returns how many.
    pub(crate) async fn audit_seal_batch(&self, limit: i64) -> Result<usize> {
        macro_rules! staged {
            ($tx:ident) => {{
                let rows = sqlx::query(
                    "SELECT id, at, actor, action, object, source, details FROM audit_outbox ORDER BY id LIMIT $1",
                )
                .bind(limit)
                .fetch_all(&mut *$tx)
                .await
                .map_err(q("reading staged audit entries"))?;
                let bad = corrupt("staged audit entry");
                let mut entries = Vec::with_capacity(rows.len());
                let mut ids: Vec<i64> = Vec::with_capacity(rows.len());
                for r in &rows {
                    ids.push(r.try_get("id").map_err(bad)?);
                    entries.push(AuditEntry {
                        at: r.try_get("at").map_err(bad)?,
                        actor: r.try_get("actor").map_err(bad)?,
                        action: r.try_get("action").map_err(bad)?,
                        object: r.try_get("object").map_err(bad)?,
                        source: r.try_get("source").map_err(bad)?,
                        details: r.try_get::<Json<Value>, _>("details").map_err(bad)?.0,
                    });
                }
                Ok::<_, StoreError>((entries, ids))
            }};
        }
        let turn = self.write_turn().await;
        let seqs = match &self.pool {
            Pool::Pg(p) => chain_tx!(p, PG_LOCK, |tx| staged!(tx), Pg)?,
            Pool::Sqlite(p) => chain_tx!(p, SQLITE_LOCK, |tx| staged!(tx), Sqlite)?,
        };
        drop(turn);
        Ok(seqs.len())
    }

    /// Recomputes the chain; returns the number of rows checked and every problem found.
    pub async fn audit_verify(&self) -> Result<(i64, Vec<ChainProblem>)> {
        self.audit_seal().await?;
        let (rows, head) = on_pool!(&self.pool, |p| {
            let rows = sqlx::query("SELECT seq, at, actor, action, object, source, details, prev_hash, hash FROM audit_log ORDER BY seq")
                .fetch_all(p)
                .await
                .map_err(q("reading the audit log"))?;
            let rows: Vec<AuditRecord> =
                rows.iter().map(|r| audit_row!(r)).collect::<Result<_>>()?;
            let head = sqlx::query("SELECT seq, hash FROM audit_head WHERE id = 1")
                .fetch_optional(p)
                .await
                .map_err(q("reading the audit head"))?;
            let head: Option<(i64, String)> = match head {
                Some(r) => Some((
                    r.try_get("seq").map_err(q("reading the audit head"))?,
                    r.try_get("hash").map_err(q("reading the audit head"))?,
                )),
                None => None,
            };
            (rows, head)
        });
        let mut problems = Vec::new();
        let mut prev_seq = 0i64;
        let mut prev_hash = GENESIS.to_string();
        for r in &rows {
            if r.seq != prev_seq + 1 {
                problems.push(ChainProblem::Gap {
                    before: prev_seq,
                    after: r.seq,
                    from: prev_seq + 1,
                    to: r.seq - 1,
                });
            } else if r.prev_hash != prev_hash {
                problems.push(ChainProblem::BrokenLink {
                    seq: r.seq,
                    prev: prev_seq,
                });
            }
            if row_hash(r.seq, &r.prev_hash, &r.entry) != r.hash {
                problems.push(ChainProblem::Edited { seq: r.seq });
            }
            prev_seq = r.seq;
            prev_hash = r.hash.clone();
        }
        if let Some((head_seq, head_hash)) = head {
            if head_seq > prev_seq {
                problems.push(ChainProblem::Truncated {
                    head_seq,
                    last_seq: prev_seq,
                });
            } else if head_seq == prev_seq && head_hash != prev_hash {
                problems.push(ChainProblem::HeadMismatch { seq: head_seq });
            }
        }
        Ok((rows.len() as i64, problems))
    }

    /// Audit rows matching `filter`, oldest first.
    pub async fn audit_list(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>> {
        self.audit_seal().await?;
        let object_prefix = f.object.as_ref().map(|o| format!("{o}/%"));
        let limit = if f.limit > 0 { f.limit } else { 1000 };
        let sql = if f.newest_first {
            "SELECT seq, at, actor, action, object, source, details, prev_hash, hash FROM audit_log \
             WHERE ($1 IS NULL OR object = $1 OR object LIKE $2) AND ($3 IS NULL OR actor = $3) \
             AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at <= $5) AND ($6 IS NULL OR seq < $6) \
             ORDER BY seq DESC LIMIT $7"
        } else {
            "SELECT seq, at, actor, action, object, source, details, prev_hash, hash FROM audit_log \
             WHERE ($1 IS NULL OR object = $1 OR object LIKE $2) AND ($3 IS NULL OR actor = $3) \
             AND ($4 IS NULL OR at >= $4) AND ($5 IS NULL OR at <= $5) AND ($6 IS NULL OR seq < $6) \
             ORDER BY seq LIMIT $7"
        };
        on_pool!(&self.pool, |p| {
            let rows = sqlx::query(sql)
                .bind(f.object.as_deref())
                .bind(object_prefix.as_deref())
                .bind(f.actor.as_deref())
                .bind(f.since)
                .bind(f.until)
                .bind(f.before_seq)
                .bind(limit)
                .fetch_all(p)
                .await
                .map_err(q("listing the audit log"))?;
            rows.iter().map(|r| audit_row!(r)).collect()
        })
    }
}
