//! The workflow as Argo's `Workflow` JSON object, `status.nodes` included.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::Workflow;
use crate::node::{Node, NodeType, Phase};

fn params_json(params: &[(String, String)]) -> Value {
    Value::Array(
        params
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect(),
    )
}

impl Workflow {
    /// Leaf progress per node: (succeeded, total) over leaf nodes in its boundary subtree.
    fn progress(&self) -> HashMap<&str, (usize, usize)> {
        let mut progress: HashMap<&str, (usize, usize)> = HashMap::new();
        for n in self.nodes.iter().filter(|n| n.node_type.is_leaf()) {
            let done = usize::from(n.phase == Phase::Succeeded);
            let e = progress.entry(n.id.as_str()).or_insert((0, 0));
            *e = (done, 1);
            // Credit every enclosing boundary (steps/DAG node) up to the root.
            let mut b = n.boundary_id.as_deref();
            let mut guard = 0;
            while let Some(bid) = b {
                let e = progress.entry(bid).or_insert((0, 0));
                e.0 += done;
                e.1 += 1;
                b = self.nodes.get(bid).and_then(|x| x.boundary_id.as_deref());
                guard += 1;
                if guard > 10_000 {
                    break;
                }
            }
        }
        progress
    }

    /// `N/M`: succeeded leaf nodes over all leaf nodes.
    pub fn progress_string(&self) -> String {
        let leaves = self.nodes.iter().filter(|n| n.node_type.is_leaf());
        let (mut done, mut total) = (0, 0);
        for n in leaves {
            total += 1;
            if n.phase == Phase::Succeeded {
                done += 1;
            }
        }
        format!("{done}/{total}")
    }

    fn node_json(&self, n: &Node, progress: &HashMap<&str, (usize, usize)>) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(n.id));
        m.insert("name".into(), json!(n.name));
        m.insert("displayName".into(), json!(n.display_name));
        m.insert("type".into(), json!(n.node_type));
        if let Some(t) = &n.template_name {
            m.insert("templateName".into(), json!(t));
        }
        if let Some(r) = &n.template_ref {
            m.insert(
                "templateRef".into(),
                serde_json::to_value(r).unwrap_or(Value::Null),
            );
        }
        m.insert("templateScope".into(), json!(n.template_scope.argo()));
        m.insert("phase".into(), json!(n.phase.as_str()));
        if let Some(b) = &n.boundary_id {
            m.insert("boundaryID".into(), json!(b));
        }
        if !n.message.is_empty() {
            m.insert("message".into(), json!(n.message));
        }
        m.insert("startedAt".into(), json!(expr::time::rfc3339(n.started_at)));
        m.insert(
            "finishedAt".into(),
            n.finished_at
                .map(|t| json!(expr::time::rfc3339(t)))
                .unwrap_or(Value::Null),
        );
        let (done, total) = match n.node_type {
            NodeType::Retry => n
                .children
                .last()
                .and_then(|c| progress.get(c.as_str()))
                .copied()
                .unwrap_or((0, 0)),
            NodeType::StepGroup | NodeType::TaskGroup => n
                .children
                .iter()
                .filter_map(|c| progress.get(c.as_str()))
                .fold((0, 0), |a, p| (a.0 + p.0, a.1 + p.1)),
            _ => progress.get(n.id.as_str()).copied().unwrap_or((0, 0)),
        };
        m.insert("progress".into(), json!(format!("{done}/{total}")));
        if !n.inputs.is_empty() {
            m.insert(
                "inputs".into(),
                json!({"parameters": params_json(&n.inputs)}),
            );
        }
        if let Some(o) = &n.outputs {
            let mut om = Map::new();
            if !o.parameters.is_empty() {
                om.insert("parameters".into(), params_json(&o.parameters));
            }
            if let Some(r) = &o.result {
                om.insert("result".into(), json!(r.trim_end_matches('\n')));
            }
            if let Some(c) = &o.exit_code {
                om.insert("exitCode".into(), json!(c));
            }
            m.insert("outputs".into(), Value::Object(om));
        }
        if !n.children.is_empty() {
            m.insert("children".into(), json!(n.children));
        }
        if !n.outbound_nodes.is_empty() {
            m.insert("outboundNodes".into(), json!(n.outbound_nodes));
        }
        if n.node_type.is_leaf() {
            m.insert("hostNodeName".into(), json!("localhost"));
        }
        Value::Object(m)
    }

    fn spec_json(&self) -> Value {
        let mut spec = serde_json::to_value(&self.resource.spec).unwrap_or(Value::Null);
        if let Value::Object(m) = &mut spec {
            let templates: Vec<Value> = self
                .local_templates
                .iter()
                .map(|t| serde_json::to_value(&**t).unwrap_or(Value::Null))
                .collect();
            m.insert("templates".into(), Value::Array(templates));
        }
        spec
    }

    /// Argo's `NodeStatus` JSON of the given nodes (for the store's projection).
    pub fn nodes_json(&self, ids: &[String]) -> Vec<(String, Value)> {
        let progress = self.progress();
        ids.iter()
            .filter_map(|id| {
                self.nodes
                    .get(id)
                    .map(|n| (id.clone(), self.node_json(n, &progress)))
            })
            .collect()
    }

    /// Argo's workflow `status` without `nodes`.
    pub fn status_json(&self) -> Value {
        // Built alone: the spec (every task of a large DAG) is not rendered on every step.
        Value::Object(self.status_map(None))
    }

    /// The final (or current) workflow as Argo's JSON, with `status.nodes` keyed by node id.
    pub fn to_argo_json(&self) -> Value {
        self.to_argo_json_with_nodes(true)
    }

    fn to_argo_json_with_nodes(&self, with_nodes: bool) -> Value {
        let progress = if with_nodes {
            self.progress()
        } else {
            HashMap::new()
        };
        let nodes: Map<String, Value> = if with_nodes {
            self.nodes
                .iter()
                .map(|n| (n.id.clone(), self.node_json(n, &progress)))
                .collect()
        } else {
            Map::new()
        };
        let mut metadata = serde_json::to_value(&self.resource.metadata).unwrap_or(json!({}));
        if let Value::Object(m) = &mut metadata {
            m.insert("name".into(), json!(self.id.name));
            m.insert("namespace".into(), json!(self.id.namespace));
            m.insert("uid".into(), json!(self.id.uid));
            if let Some(s) = self.started_at {
                m.insert("creationTimestamp".into(), json!(expr::time::rfc3339(s)));
            }
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Value::Object(l) = labels {
                l.insert(
                    "workflows.argoproj.io/phase".into(),
                    json!(self.phase.as_str()),
                );
                if self.is_finished() {
                    l.insert("workflows.argoproj.io/completed".into(), json!("true"));
                }
            }
        }
        json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": metadata,
            "spec": self.spec_json(),
            "status": Value::Object(self.status_map(with_nodes.then_some(nodes))),
        })
    }

    /// `status` without `nodes` unless they are given.
    fn status_map(&self, nodes: Option<Map<String, Value>>) -> Map<String, Value> {
        let mut status = Map::new();
        status.insert("phase".into(), json!(self.phase.as_str()));
        if let Some(s) = self.started_at {
            status.insert("startedAt".into(), json!(expr::time::rfc3339(s)));
        }
        status.insert(
            "finishedAt".into(),
            self.finished_at
                .map(|t| json!(expr::time::rfc3339(t)))
                .unwrap_or(Value::Null),
        );
        status.insert("progress".into(), json!(self.progress_string()));
        if !self.message.is_empty() {
            status.insert("message".into(), json!(self.message));
        }
        if let Some(nodes) = nodes {
            status.insert("nodes".into(), Value::Object(nodes));
        }
        let outputs = self.global_outputs();
        if !outputs.is_empty() {
            status.insert(
                "outputs".into(),
                json!({"parameters": params_json(&outputs)}),
            );
        }
        status
    }
}
