//! Kubernetes resource entries: a watch on a group/version/resource (with label and field
//! selectors) that emits ADD, UPDATE and DELETE events keyed by the object's uid and
//! resourceVersion, so the re-list after a restart or a 410 Gone (kube's watcher does it) is
//! not a second event for an unchanged object. Which change is which event is pure
//! ([`ResourceTracker`]).

use std::collections::HashMap;

use futures_util::StreamExt;
use serde_json::{Value, json};
use spec::event_source::{Resource, ResourceEventType};

use super::{SourceCtx, SourceError, connection, ended};
use crate::driver::now_ms;

/// One change the watch reported, as far as the tracker needs it.
#[derive(Debug, Clone)]
struct Change {
    deleted: bool,
    uid: String,
    resource_version: String,
    created_ms: Option<i64>,
}

/// The objects seen so far and what each change means.
struct ResourceTracker {
    known: HashMap<String, String>,
    /// Inside a (re-)list: its objects existed before, or were missed while not watching.
    listing: bool,
    started_ms: i64,
}

impl ResourceTracker {
    fn new(started_ms: i64) -> ResourceTracker {
        ResourceTracker {
            known: HashMap::new(),
            listing: true,
            started_ms,
        }
    }

    /// The event a change is for this entry, or `None` (unchanged, not wanted, or an object
    /// that existed before the watch started when `afterStart` is set).
    fn observe(&mut self, cfg: &Resource, c: &Change) -> Option<ResourceEventType> {
        let kind = if c.deleted {
            self.known.remove(&c.uid);
            ResourceEventType::Delete
        } else {
            match self.known.insert(c.uid.clone(), c.resource_version.clone()) {
                Some(rv) if rv == c.resource_version => return None,
                Some(_) => ResourceEventType::Update,
                None => ResourceEventType::Add,
            }
        };
        if !cfg.wants(kind) {
            return None;
        }
        let old = self.listing || c.created_ms.is_some_and(|t| t < self.started_ms);
        if cfg.after_start && kind == ResourceEventType::Add && old {
            return None;
        }
        Some(kind)
    }
}

pub(super) async fn run(ctx: &SourceCtx, cfg: &Resource) -> Result<(), SourceError> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    use kube::runtime::watcher;
    let cluster = ctx
        .events
        .controller()
        .cluster()
        .ok_or_else(|| SourceError::Config("a resource event source needs the Kubernetes connection (riposte server --executor kubernetes)".into()))?
        .clone();
    let gvk = GroupVersionKind::gvk(&cfg.group, &cfg.version, "");
    let ar = ApiResource::from_gvk_with_plural(&gvk, &cfg.resource);
    let api: Api<DynamicObject> = if cfg.namespace.is_empty() {
        Api::all_with(cluster.client().clone(), &ar)
    } else {
        Api::namespaced_with(cluster.client().clone(), &cfg.namespace, &ar)
    };
    let mut config = watcher::Config::default();
    if let Some(labels) = &cfg.label_selector {
        config = config.labels(labels);
    }
    if let Some(fields) = &cfg.field_selector {
        config = config.fields(fields);
    }
    let what = format!("watching {}/{} {}", cfg.group, cfg.version, cfg.resource);
    let mut tracker = ResourceTracker::new(now_ms());
    let mut stream = watcher(api, config).boxed();
    while let Some(ev) = ctx.until_stopped(stream.next()).await {
        let Some(ev) = ev else {
            return Err(ended(&what));
        };
        let o = match ev.map_err(connection(what.clone()))? {
            watcher::Event::Init => {
                tracker.listing = true;
                continue;
            }
            watcher::Event::InitDone => {
                tracker.listing = false;
                continue;
            }
            watcher::Event::InitApply(o) | watcher::Event::Apply(o) => (false, o),
            watcher::Event::Delete(o) => (true, o),
        };
        let (deleted, o) = o;
        let change = Change {
            deleted,
            uid: o.metadata.uid.clone().unwrap_or_default(),
            resource_version: o.metadata.resource_version.clone().unwrap_or_default(),
            created_ms: o
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_millisecond()),
        };
        let Some(kind) = tracker.observe(cfg, &change) else {
            continue;
        };
        let kind = kind.name();
        let body = serde_json::to_value(&o).unwrap_or(Value::Null);
        let data = json!({"type": kind, "body": body, "group": cfg.group, "version": cfg.version, "resource": cfg.resource});
        let id = format!("{}/{}/{kind}", change.uid, change.resource_version);
        ctx.ingest(vec![ctx.event("resource", id, data)]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ResourceEventType::{Add, Delete, Update};

    fn cfg(types: &[ResourceEventType], after_start: bool) -> Resource {
        Resource {
            namespace: String::new(),
            group: String::new(),
            version: "v1".into(),
            resource: "pods".into(),
            event_types: types.to_vec(),
            label_selector: None,
            field_selector: None,
            after_start,
        }
    }

    /// `+uid@rv` applied (created at `t`), `-uid@rv` deleted, `|` the end of the list.
    fn run(cfg: &Resource, script: &str) -> Vec<String> {
        let mut t = ResourceTracker::new(100);
        let mut out = Vec::new();
        for step in script.split_whitespace() {
            if step == "|" {
                t.listing = false;
                continue;
            }
            let (deleted, rest) = (step.starts_with('-'), &step[1..]);
            let (uid, rest) = rest.split_once('@').expect("uid@rv");
            let (rv, created) = rest.split_once(':').unwrap_or((rest, "200"));
            let c = Change {
                deleted,
                uid: uid.into(),
                resource_version: rv.into(),
                created_ms: created.parse().ok(),
            };
            if let Some(k) = t.observe(cfg, &c) {
                out.push(format!("{}:{uid}", k.name()));
            }
        }
        out
    }

    #[test]
    fn adds_updates_deletes_and_after_start() {
        let all = cfg(&[], false);
        let table: &[(&Resource, &str, &[&str])] = &[
            (
                &all,
                "+a@1:50 | +a@2 -a@2",
                &["ADD:a", "UPDATE:a", "DELETE:a"],
            ),
            // The re-list after a 410 Gone repeats unchanged objects: no event.
            (&all, "+a@1 | +a@1 +a@1", &["ADD:a"]),
            (
                &cfg(&[Add], false),
                "+a@1 | +a@2 -a@2 +b@1",
                &["ADD:a", "ADD:b"],
            ),
            (
                &cfg(&[Update, Delete], false),
                "+a@1 | +a@2 -a@2",
                &["UPDATE:a", "DELETE:a"],
            ),
            // afterStart: objects listed at the start, or created before it, are not ADDs.
            (
                &cfg(&[], true),
                "+a@1:50 | +b@1:50 +c@1:150 +a@2",
                &["ADD:c", "UPDATE:a"],
            ),
            (&cfg(&[Add], true), "+a@1:150 |", &[]),
        ];
        for (cfg, script, want) in table {
            assert_eq!(run(cfg, script), *want, "{script}");
        }
    }
}
