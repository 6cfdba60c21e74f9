//! Nodes of a running workflow, with Argo's ids, names, types and phases.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use spec::TemplateRef;

/// Argo's node types, as they appear in `status.nodes[].type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeType {
    Pod,
    Steps,
    StepGroup,
    DAG,
    TaskGroup,
    Retry,
    Skipped,
    Suspend,
    HTTP,
}

impl NodeType {
    /// Nodes that do work themselves (a process, a request); everything else groups others.
    pub fn is_leaf(self) -> bool {
        matches!(self, NodeType::Pod | NodeType::HTTP)
    }
}

/// Node and workflow phases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, PartialOrd, Ord, Hash)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
    Error,
    Skipped,
    Omitted,
}

impl Phase {
    /// Ran to an end: Succeeded, Failed or Error.
    pub fn completed(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Error)
    }
    /// Will not change again: completed, skipped or omitted.
    pub fn fulfilled(self) -> bool {
        self.completed() || matches!(self, Phase::Skipped | Phase::Omitted)
    }
    pub fn failed_or_error(self) -> bool {
        matches!(self, Phase::Failed | Phase::Error)
    }
    /// The phase a stored or rendered `phase` string names.
    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "Pending" => Phase::Pending,
            "Running" => Phase::Running,
            "Succeeded" => Phase::Succeeded,
            "Failed" => Phase::Failed,
            "Error" => Phase::Error,
            "Skipped" => Phase::Skipped,
            "Omitted" => Phase::Omitted,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
            Phase::Error => "Error",
            Phase::Skipped => "Skipped",
            Phase::Omitted => "Omitted",
        }
    }
}

/// Where a template was resolved from, which decides how its own `template:` references resolve.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum TemplateScope {
    /// The workflow's own templates.
    #[default]
    Local,
    /// A WorkflowTemplate (`cluster == false`) or ClusterWorkflowTemplate.
    Ref { name: String, cluster: bool },
}

impl TemplateScope {
    /// Argo's `templateScope` string.
    pub fn argo(&self) -> String {
        match self {
            TemplateScope::Local => "local/".to_string(),
            TemplateScope::Ref {
                name,
                cluster: false,
            } => format!("namespaced/{name}"),
            TemplateScope::Ref {
                name,
                cluster: true,
            } => format!("cluster/{name}"),
        }
    }
}

/// What a finished node produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeOutputs {
    /// Output parameters in declaration order.
    pub parameters: Vec<(String, String)>,
    pub result: Option<String>,
    pub exit_code: Option<String>,
}

impl NodeOutputs {
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.parameters
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn is_empty(&self) -> bool {
        self.parameters.is_empty() && self.result.is_none() && self.exit_code.is_none()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub id: String,
    pub name: String,
    pub display_name: String,
    pub node_type: NodeType,
    pub template_name: Option<String>,
    pub template_ref: Option<TemplateRef>,
    pub template_scope: TemplateScope,
    pub phase: Phase,
    pub boundary_id: Option<String>,
    pub message: String,
    /// Unix milliseconds.
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub inputs: Vec<(String, String)>,
    pub outputs: Option<NodeOutputs>,
    pub children: Vec<String>,
    pub outbound_nodes: Vec<String>,
    /// For leaf nodes: Argo's pod name.
    pub pod_name: Option<String>,
    /// When a waiting node (suspend with duration, retry backoff) should be looked at again.
    pub wake_at: Option<i64>,
}

/// Argo's `fnv32a` hash.
pub fn fnv32a(s: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in s.as_bytes() {
        h ^= *b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Argo's node id: the workflow name for the root node, else `<wf>-<fnv32a(nodeName)>`.
pub fn node_id(workflow_name: &str, node_name: &str) -> String {
    if node_name == workflow_name {
        return workflow_name.to_string();
    }
    format!("{workflow_name}-{}", fnv32a(node_name))
}

/// Argo's v2 pod name: `<wf>-<template>-<fnv32a(nodeName)>`, truncated to fit 63 characters.
pub fn pod_name(workflow_name: &str, node_name: &str, template_name: &str) -> String {
    if workflow_name == node_name {
        return workflow_name.to_string();
    }
    let mut prefix = format!("{workflow_name}-{template_name}");
    // 63 = Kubernetes name limit; 10 for the hash and 1 for the dash.
    let max = 63 - 10 - 1;
    if prefix.len() > max {
        let mut cut = max;
        while !prefix.is_char_boundary(cut) {
            cut -= 1;
        }
        prefix.truncate(cut);
    }
    format!("{prefix}-{}", fnv32a(node_name))
}

/// Nodes keyed by id, with an index by name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Nodes {
    by_id: BTreeMap<String, Node>,
}

impl Nodes {
    pub fn get(&self, id: &str) -> Option<&Node> {
        self.by_id.get(id)
    }
    pub fn get_mut(&mut self, id: &str) -> Option<&mut Node> {
        self.by_id.get_mut(id)
    }
    pub fn remove(&mut self, id: &str) -> Option<Node> {
        self.by_id.remove(id)
    }
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Node> {
        self.by_id.values_mut()
    }
    pub fn insert(&mut self, node: Node) {
        self.by_id.insert(node.id.clone(), node);
    }
    pub fn iter(&self) -> impl Iterator<Item = &Node> {
        self.by_id.values()
    }
    pub fn len(&self) -> usize {
        self.by_id.len()
    }
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_argo() {
        // Values computed with Go's hash/fnv New32a.
        assert_eq!(fnv32a(""), 0x811c9dc5);
        assert_eq!(fnv32a("a"), 0xe40c292c);
        assert_eq!(node_id("wf", "wf"), "wf");
        assert_eq!(
            node_id("wf", "wf[0].a"),
            format!("wf-{}", fnv32a("wf[0].a"))
        );
        let long = "x".repeat(80);
        assert!(pod_name("wf", "wf.a", &long).len() <= 63);
    }
}
