//! Variable resolution for `{{...}}`: a view over the workflow state that answers
//! `steps.X.outputs.result`, `tasks.X.outputs.parameters.y`, `inputs.parameters.z`, `item`,
//! `workflow.*` lazily, so a 10,000-task DAG does not rebuild a map on every evaluation.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::node::{Node, NodeType, Phase};
use crate::{Workflow, node_id};

/// Where `steps.X` / `tasks.X` names are looked up.
#[derive(Debug, Clone)]
pub(crate) enum Siblings {
    None,
    /// A steps template node: step name -> group index.
    Steps {
        node_name: String,
        groups: BTreeMap<String, usize>,
    },
    /// A DAG template node.
    Dag {
        node_name: String,
        tasks: std::sync::Arc<Vec<String>>,
    },
}

pub(crate) struct ScopeView<'a> {
    pub wf: &'a Workflow,
    pub siblings: &'a Siblings,
    pub inputs: &'a [(String, String)],
    pub item: Option<&'a Value>,
    /// Extra variables (`retries`, `pod.name`, `lastRetry.*`, `workflow.status`, ...).
    pub extra: Vec<(String, String)>,
}

fn item_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A value as a scope string: strings bare, everything else as JSON.
fn json_string(v: &Value) -> String {
    item_string(v)
}

impl ScopeView<'_> {
    fn sibling_node(&self, prefix: &str, name: &str) -> Option<SiblingRef<'_>> {
        let wf = self.wf;
        match (prefix, self.siblings) {
            ("steps", Siblings::Steps { node_name, groups }) => {
                let g = groups.get(name)?;
                let child = format!("{node_name}[{g}].{name}");
                if let Some(n) = wf.nodes.get(&node_id(&wf.id.name, &child)) {
                    return Some(SiblingRef::Single(n));
                }
                // Expanded step: the step group's children named `child(i:...)`.
                let sg = wf
                    .nodes
                    .get(&node_id(&wf.id.name, &format!("{node_name}[{g}]")))?;
                let p = format!("{child}(");
                let items: Vec<&Node> = sg
                    .children
                    .iter()
                    .filter_map(|c| wf.nodes.get(c))
                    .filter(|n| n.name.starts_with(&p))
                    .collect();
                if items.is_empty() {
                    None
                } else {
                    Some(SiblingRef::Aggregate(items, sg))
                }
            }
            ("tasks", Siblings::Dag { node_name, .. }) => {
                let n = wf
                    .nodes
                    .get(&node_id(&wf.id.name, &format!("{node_name}.{name}")))?;
                if n.node_type == NodeType::TaskGroup {
                    let items: Vec<&Node> = n
                        .children
                        .iter()
                        .filter_map(|c| wf.nodes.get(c))
                        .filter(|c| c.name.starts_with(&format!("{}(", n.name)))
                        .collect();
                    return Some(SiblingRef::Aggregate(items, n));
                }
                Some(SiblingRef::Single(n))
            }
            _ => None,
        }
    }

    fn sibling_field(&self, prefix: &str, rest: &str) -> Option<String> {
        // Names may contain dots only in the field part: `steps.NAME.field...`.
        let (name, field) = rest.split_once('.')?;
        let r = self.sibling_node(prefix, name)?;
        match r {
            SiblingRef::Single(n) => node_field(n, field),
            SiblingRef::Aggregate(items, group) => aggregate_field(&items, group, field),
        }
    }
}

enum SiblingRef<'a> {
    Single(&'a Node),
    Aggregate(Vec<&'a Node>, &'a Node),
}

fn node_field(n: &Node, field: &str) -> Option<String> {
    let outputs = n.outputs.as_ref();
    match field {
        "status" => Some(n.phase.as_str().to_string()),
        "id" => Some(n.id.clone()),
        "startedAt" => Some(expr::time::rfc3339(n.started_at)),
        "finishedAt" => n.finished_at.map(expr::time::rfc3339),
        "exitCode" | "outputs.exitCode" => outputs?.exit_code.clone(),
        "outputs.result" => outputs?.result.clone(),
        "outputs.parameters" => {
            let o = outputs?;
            let m: serde_json::Map<String, Value> = o
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            Some(Value::Object(m).to_string())
        }
        _ => {
            let p = field.strip_prefix("outputs.parameters.")?;
            outputs?.parameter(p).map(str::to_string)
        }
    }
}

/// Argo's aggregated outputs of an expanded step or task: JSON lists.
fn aggregate_field(items: &[&Node], group: &Node, field: &str) -> Option<String> {
    let ok: Vec<&&Node> = items
        .iter()
        .filter(|n| n.phase == Phase::Succeeded)
        .collect();
    match field {
        "status" => Some(group.phase.as_str().to_string()),
        "id" => Some(group.id.clone()),
        "outputs.result" => {
            let list: Vec<Value> = ok
                .iter()
                .filter_map(|n| n.outputs.as_ref()?.result.as_ref())
                .map(|r| {
                    serde_json::from_str::<Value>(r).unwrap_or_else(|_| Value::String(r.clone()))
                })
                .collect();
            Some(Value::Array(list).to_string())
        }
        "outputs.parameters" => {
            let list: Vec<Value> = ok
                .iter()
                .filter_map(|n| n.outputs.as_ref())
                .filter(|o| !o.parameters.is_empty())
                .map(|o| {
                    Value::Object(
                        o.parameters
                            .iter()
                            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                            .collect(),
                    )
                })
                .collect();
            Some(Value::Array(list).to_string())
        }
        _ => {
            let p = field.strip_prefix("outputs.parameters.")?;
            let list: Vec<Value> = ok
                .iter()
                .filter_map(|n| n.outputs.as_ref()?.parameter(p))
                .map(|v| {
                    serde_json::from_str::<Value>(v)
                        .unwrap_or_else(|_| Value::String(v.to_string()))
                })
                .collect();
            Some(Value::Array(list).to_string())
        }
    }
}

impl expr::Scope for ScopeView<'_> {
    fn lookup(&self, name: &str) -> Option<String> {
        if let Some((_, v)) = self.extra.iter().rev().find(|(k, _)| k == name) {
            return Some(v.clone());
        }
        if name == "item" {
            return self.item.map(item_string);
        }
        if let Some(field) = name.strip_prefix("item.") {
            let mut cur = self.item?;
            for part in field.split('.') {
                cur = cur.get(part)?;
            }
            return Some(json_string(cur));
        }
        if let Some(p) = name.strip_prefix("inputs.parameters.") {
            return self
                .inputs
                .iter()
                .find(|(k, _)| k == p)
                .map(|(_, v)| v.clone());
        }
        if name == "inputs.parameters" {
            let m: serde_json::Map<String, Value> = self
                .inputs
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            return Some(Value::Object(m).to_string());
        }
        if name.starts_with("workflow.") {
            if name == "workflow.creationTimestamp" || name == "workflow.creationTimestamp.RFC3339"
            {
                return self.wf.started_at.map(expr::time::rfc3339);
            }
            // Argo's strftime forms: `.s` seconds since the epoch, `.Y` `.m` `.d` `.H` `.M`
            // `.S` the UTC fields of the RFC 3339 time.
            if let Some(f) = name.strip_prefix("workflow.creationTimestamp.") {
                let ts = self.wf.started_at?;
                let t = expr::time::rfc3339(ts);
                let field = |from: usize, to: usize| t.get(from..to).map(str::to_string);
                return match f {
                    "s" => Some(ts.div_euclid(1000).to_string()),
                    "Y" => field(0, 4),
                    "m" => field(5, 7),
                    "d" => field(8, 10),
                    "H" => field(11, 13),
                    "M" => field(14, 16),
                    "S" => field(17, 19),
                    _ => None,
                };
            }
            if name == "workflow.duration" {
                return self
                    .wf
                    .started_at
                    .map(|s| format!("{}", (self.wf.now - s) as f64 / 1000.0));
            }
            return self.wf.globals.get(name).cloned();
        }
        if let Some(rest) = name.strip_prefix("steps.") {
            return self.sibling_field("steps", rest);
        }
        if let Some(rest) = name.strip_prefix("tasks.") {
            return self.sibling_field("tasks", rest);
        }
        None
    }

    fn env(&self) -> Value {
        let mut flat: Vec<(String, String)> = Vec::new();
        for (k, v) in &self.wf.globals {
            flat.push((k.clone(), v.clone()));
        }
        if let Some(ts) = self.wf.started_at {
            flat.push(("workflow.creationTimestamp".into(), expr::time::rfc3339(ts)));
        }
        for (k, v) in self.inputs {
            flat.push((format!("inputs.parameters.{k}"), v.clone()));
        }
        let mut names: Vec<(&str, String)> = Vec::new();
        match self.siblings {
            Siblings::Steps { groups, .. } => {
                names.extend(groups.keys().map(|n| ("steps", n.clone())))
            }
            Siblings::Dag { tasks, .. } => names.extend(tasks.iter().map(|n| ("tasks", n.clone()))),
            Siblings::None => {}
        }
        for (prefix, n) in names {
            for field in [
                "status",
                "id",
                "exitCode",
                "outputs.result",
                "startedAt",
                "finishedAt",
            ] {
                if let Some(v) = self.sibling_field(prefix, &format!("{n}.{field}")) {
                    flat.push((format!("{prefix}.{n}.{field}"), v));
                }
            }
            if let Some(SiblingRef::Single(node)) = self.sibling_node(prefix, &n)
                && let Some(o) = &node.outputs
            {
                for (k, v) in &o.parameters {
                    flat.push((format!("{prefix}.{n}.outputs.parameters.{k}"), v.clone()));
                }
            }
        }
        for (k, v) in &self.extra {
            flat.push((k.clone(), v.clone()));
        }
        let mut env = expr::env_from_flat(flat.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        if let (Some(item), Value::Object(m)) = (self.item, &mut env) {
            m.insert("item".into(), item.clone());
        }
        // Argo exposes `workflow.parameters` as a map in expressions.
        env
    }
}
