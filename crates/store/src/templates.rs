//! WorkflowTemplates and ClusterWorkflowTemplates.

use serde_json::Value;
use sqlx::FromRow;

use crate::shared::Arg;
use crate::{AuditEntry, Pool, Result, Store, StoreError, corrupt, q};

/// A stored WorkflowTemplate or ClusterWorkflowTemplate.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TemplateRecord {
    pub cluster: bool,
    pub namespace: String,
    pub name: String,
    #[sqlx(json)]
    pub body: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Store {
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
                .map(|r| TemplateRecord::from_row(&r).map_err(corrupt("template row")))
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
            rows.iter()
                .map(|r| TemplateRecord::from_row(r).map_err(corrupt("template row")))
                .collect()
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
