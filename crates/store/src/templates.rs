//! WorkflowTemplates and ClusterWorkflowTemplates, as named objects ([`crate::objects`]).

use serde_json::Value;

use crate::{AuditEntry, Collection, NamedObject, Result, Store};

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

impl TemplateRecord {
    fn collection(cluster: bool) -> Collection<'static> {
        if cluster {
            Collection::ClusterWorkflowTemplates
        } else {
            Collection::WorkflowTemplates
        }
    }

    fn of(cluster: bool, o: NamedObject) -> TemplateRecord {
        TemplateRecord {
            cluster,
            namespace: o.namespace,
            name: o.name,
            body: o.body,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
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
        let o = NamedObject {
            namespace: t.namespace.clone(),
            name: t.name.clone(),
            body: t.body.clone(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        };
        self.put_object(TemplateRecord::collection(t.cluster), &o, create, audit)
            .await
    }

    pub async fn get_template(
        &self,
        cluster: bool,
        namespace: &str,
        name: &str,
    ) -> Result<TemplateRecord> {
        let o = self
            .get_object(TemplateRecord::collection(cluster), namespace, name)
            .await?;
        Ok(TemplateRecord::of(cluster, o))
    }

    /// Templates of a namespace (`cluster = false`) or all cluster templates.
    pub async fn list_templates(
        &self,
        cluster: bool,
        namespace: &str,
    ) -> Result<Vec<TemplateRecord>> {
        let all = self
            .list_objects(TemplateRecord::collection(cluster), Some(namespace))
            .await?;
        Ok(all
            .into_iter()
            .map(|o| TemplateRecord::of(cluster, o))
            .collect())
    }

    /// Deletes a template (with its audit row). Returns whether it existed.
    pub async fn delete_template(
        &self,
        cluster: bool,
        namespace: &str,
        name: &str,
        audit: &AuditEntry,
    ) -> Result<bool> {
        self.delete_object(TemplateRecord::collection(cluster), namespace, name, audit)
            .await
    }
}
