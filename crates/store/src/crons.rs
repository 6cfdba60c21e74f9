//! CronWorkflows: their rows, suspension, and the claim of a scheduled firing.

use serde_json::Value;
use sqlx::FromRow;

use crate::shared::Arg;
use crate::{AuditEntry, Collection, NamedObject, Pool, Result, Store, StoreError, corrupt, q};

/// A stored CronWorkflow.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CronRecord {
    pub namespace: String,
    pub name: String,
    #[sqlx(json)]
    pub body: Value,
    pub suspended: bool,
    pub last_scheduled_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

const CRON_COLUMNS: &str =
    "namespace, name, body, suspended, last_scheduled_at, created_at, updated_at";

impl Store {
    /// Creates (`create = true`, failing if it exists) or replaces a cron workflow, with its
    /// audit row in the same transaction (`suspended` follows `spec.suspend`).
    pub async fn put_cron(
        &self,
        namespace: &str,
        name: &str,
        body: &Value,
        now: i64,
        create: bool,
        audit: &AuditEntry,
    ) -> Result<()> {
        let o = NamedObject {
            namespace: namespace.into(),
            name: name.into(),
            body: body.clone(),
            created_at: now,
            updated_at: now,
        };
        self.put_object(Collection::CronWorkflows, &o, create, audit)
            .await
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
            .map(|r| CronRecord::from_row(&r).map_err(corrupt("cron row")))
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
            rows.iter()
                .map(|r| CronRecord::from_row(r).map_err(corrupt("cron row")))
                .collect()
        })
    }

    /// Deletes a cron workflow (with its audit row). Returns whether it existed.
    pub async fn delete_cron(
        &self,
        namespace: &str,
        name: &str,
        audit: &AuditEntry,
    ) -> Result<bool> {
        self.delete_object(Collection::CronWorkflows, namespace, name, audit)
            .await
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
