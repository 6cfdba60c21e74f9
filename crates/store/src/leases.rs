//! Leases: which replica drives which workflow, until when.

use sqlx::Row;

use crate::{Pool, Result, Store, q};

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
}
