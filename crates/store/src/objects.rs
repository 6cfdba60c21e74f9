//! Named objects — WorkflowTemplates, ClusterWorkflowTemplates, CronWorkflows, Sensors,
//! EventSources and WorkflowEventBindings — stored by one put (create failing with
//! already-exists, replace failing with not-found), get, list and delete, each write with its
//! audit row in the same transaction. A [`Collection`] says which table holds a kind and
//! how its rows are scoped; nothing here knows what the bodies mean.

use serde_json::Value;
use sqlx::FromRow;

use crate::shared::Arg;
use crate::{AuditEntry, Pool, Result, Store, StoreError, corrupt};

/// Where objects of one kind live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collection<'a> {
    WorkflowTemplates,
    ClusterWorkflowTemplates,
    CronWorkflows,
    /// Sensors, EventSources and WorkflowEventBindings, by their `kind`.
    Events(&'a str),
}

/// A stored object: its key, its body and when it was created and last replaced.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct NamedObject {
    pub namespace: String,
    pub name: String,
    #[sqlx(json)]
    pub body: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Collection<'_> {
    fn table(&self) -> &'static str {
        match self {
            Collection::WorkflowTemplates | Collection::ClusterWorkflowTemplates => {
                "workflow_templates"
            }
            Collection::CronWorkflows => "cron_workflows",
            Collection::Events(_) => "event_objects",
        }
    }

    /// The column (and its value) that tells this collection's rows from the others' in a
    /// shared table.
    fn scope(&self) -> Option<(&'static str, Arg<'_>)> {
        match self {
            Collection::WorkflowTemplates => Some(("cluster", Arg::Bool(false))),
            Collection::ClusterWorkflowTemplates => Some(("cluster", Arg::Bool(true))),
            Collection::CronWorkflows => None,
            Collection::Events(kind) => Some(("kind", Arg::Text(kind))),
        }
    }

    /// Columns derived from the body on every write (a CronWorkflow's `spec.suspend`, which
    /// the scheduler reads without parsing bodies).
    fn derived<'b>(&self, body: &'b Value) -> Vec<(&'static str, Arg<'b>)> {
        match self {
            Collection::CronWorkflows => vec![(
                "suspended",
                Arg::Bool(body["spec"]["suspend"].as_bool().unwrap_or(false)),
            )],
            _ => Vec::new(),
        }
    }

    /// What its errors say it was doing: storing, reading, listing, deleting.
    fn ops(&self) -> [&'static str; 4] {
        match self {
            Collection::WorkflowTemplates | Collection::ClusterWorkflowTemplates => [
                "storing a template",
                "reading a template",
                "listing templates",
                "deleting a template",
            ],
            Collection::CronWorkflows => [
                "storing a cron workflow",
                "reading a cron workflow",
                "listing cron workflows",
                "deleting a cron workflow",
            ],
            Collection::Events(_) => [
                "storing an event object",
                "reading an event object",
                "listing event objects",
                "deleting an event object",
            ],
        }
    }

    /// `scope = $1 AND namespace = $2 AND name = $3` (numbered from `first`) and its
    /// arguments.
    fn key<'b>(
        &'b self,
        namespace: &'b str,
        name: &'b str,
        first: usize,
    ) -> (String, Vec<Arg<'b>>) {
        let mut clause = Vec::new();
        let mut args = Vec::new();
        let mut n = first;
        if let Some((col, arg)) = self.scope() {
            clause.push(format!("{col} = ${n}"));
            args.push(arg);
            n += 1;
        }
        clause.push(format!("namespace = ${n} AND name = ${}", n + 1));
        args.push(Arg::Text(namespace));
        args.push(Arg::Text(name));
        (clause.join(" AND "), args)
    }
}

const COLUMNS: &str = "namespace, name, body, created_at, updated_at";

impl Store {
    /// Creates (`create`, failing with [`StoreError::AlreadyExists`]) or replaces (failing
    /// with [`StoreError::NotFound`]) an object, with its audit row in the same transaction.
    /// A replace keeps `created_at`.
    pub async fn put_object(
        &self,
        c: Collection<'_>,
        o: &NamedObject,
        create: bool,
        audit: &AuditEntry,
    ) -> Result<()> {
        let derived = c.derived(&o.body);
        let (sql, args) = if create {
            let mut cols: Vec<&str> = Vec::new();
            let mut args: Vec<Arg> = Vec::new();
            if let Some((col, arg)) = c.scope() {
                cols.push(col);
                args.push(arg);
            }
            cols.extend(["namespace", "name", "body", "created_at", "updated_at"]);
            args.extend([
                Arg::Text(&o.namespace),
                Arg::Text(&o.name),
                Arg::Json(&o.body),
                Arg::Int(o.created_at),
                Arg::Int(o.updated_at),
            ]);
            for (col, arg) in &derived {
                cols.push(col);
                args.push(*arg);
            }
            let params: Vec<String> = (1..=args.len()).map(|i| format!("${i}")).collect();
            (
                format!(
                    "INSERT INTO {} ({}) VALUES ({})",
                    c.table(),
                    cols.join(", "),
                    params.join(", ")
                ),
                args,
            )
        } else {
            let mut set = vec!["body = $1".to_string(), "updated_at = $2".to_string()];
            let mut args = vec![Arg::Json(&o.body), Arg::Int(o.updated_at)];
            for (col, arg) in &derived {
                args.push(*arg);
                set.push(format!("{col} = ${}", args.len()));
            }
            let (key, key_args) = c.key(&o.namespace, &o.name, args.len() + 1);
            args.extend(key_args);
            (
                format!("UPDATE {} SET {} WHERE {key}", c.table(), set.join(", ")),
                args,
            )
        };
        match self
            .exec_audited(sqlx::AssertSqlSafe(sql), &args, audit)
            .await
        {
            Ok(0) => Err(StoreError::NotFound {
                namespace: o.namespace.clone(),
                name: o.name.clone(),
            }),
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::AlreadyExists {
                    namespace: o.namespace.clone(),
                    name: o.name.clone(),
                })
            }
            Err(e) => Err(StoreError::Query {
                op: c.ops()[0],
                source: e,
            }),
        }
    }

    pub async fn get_object(
        &self,
        c: Collection<'_>,
        namespace: &str,
        name: &str,
    ) -> Result<NamedObject> {
        let (key, args) = c.key(namespace, name, 1);
        let sql = format!("SELECT {COLUMNS} FROM {} WHERE {key}", c.table());
        let row = on_pool!(&self.pool, |p| {
            crate::shared::bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), &args)
                .fetch_optional(p)
                .await
                .map_err(crate::q(c.ops()[1]))?
                .map(|r| NamedObject::from_row(&r).map_err(corrupt("object row")))
                .transpose()?
        });
        row.ok_or_else(|| StoreError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// Objects of a collection in a namespace, or in every namespace (`None`), by namespace
    /// and name.
    pub async fn list_objects(
        &self,
        c: Collection<'_>,
        namespace: Option<&str>,
    ) -> Result<Vec<NamedObject>> {
        let mut clause = Vec::new();
        let mut args = Vec::new();
        if let Some((col, arg)) = c.scope() {
            args.push(arg);
            clause.push(format!("{col} = ${}", args.len()));
        }
        if let Some(ns) = namespace {
            args.push(Arg::Text(ns));
            clause.push(format!("namespace = ${}", args.len()));
        }
        let filter = if clause.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clause.join(" AND "))
        };
        let sql = format!(
            "SELECT {COLUMNS} FROM {}{filter} ORDER BY namespace, name",
            c.table()
        );
        on_pool!(&self.pool, |p| {
            let rows = crate::shared::bind_all(sqlx::query(sqlx::AssertSqlSafe(sql)), &args)
                .fetch_all(p)
                .await
                .map_err(crate::q(c.ops()[2]))?;
            rows.iter()
                .map(|r| NamedObject::from_row(r).map_err(corrupt("object row")))
                .collect()
        })
    }

    /// Deletes an object (with its audit row). Returns whether it existed.
    pub async fn delete_object(
        &self,
        c: Collection<'_>,
        namespace: &str,
        name: &str,
        audit: &AuditEntry,
    ) -> Result<bool> {
        let (key, args) = c.key(namespace, name, 1);
        let sql = format!("DELETE FROM {} WHERE {key}", c.table());
        let n = self
            .exec_audited(sqlx::AssertSqlSafe(sql), &args, audit)
            .await
            .map_err(crate::q(c.ops()[3]))?;
        Ok(n > 0)
    }
}
