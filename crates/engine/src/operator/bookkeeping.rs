//! Creating nodes and changing their phases, with the counters parallelism needs.

use spec::Template;

use crate::Workflow;
use crate::node::{Node, NodeType, Phase, TemplateScope, node_id};

impl Workflow {
    pub(crate) fn counts_as_active_child(t: NodeType) -> bool {
        matches!(
            t,
            NodeType::Pod | NodeType::HTTP | NodeType::Steps | NodeType::DAG
        )
    }

    pub(crate) fn track_active(
        &mut self,
        node_type: NodeType,
        boundary: &Option<String>,
        delta: isize,
    ) {
        if node_type.is_leaf() {
            self.active_pods = (self.active_pods as isize + delta).max(0) as usize;
        }
        if Self::counts_as_active_child(node_type) {
            let key = boundary.clone().unwrap_or_default();
            let e = self.active_by_boundary.entry(key).or_insert(0);
            *e = (*e as isize + delta).max(0) as usize;
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn create_node(
        &mut self,
        name: &str,
        display_name: &str,
        node_type: NodeType,
        template: Option<&Template>,
        scope: &TemplateScope,
        boundary: &Option<String>,
        phase: Phase,
        message: &str,
    ) -> String {
        let id = node_id(&self.id.name, name);
        let node = Node {
            id: id.clone(),
            name: name.to_string(),
            display_name: display_name.to_string(),
            node_type,
            template_name: template.map(|t| t.name.clone()).filter(|n| !n.is_empty()),
            template_ref: None,
            template_scope: scope.clone(),
            phase,
            boundary_id: boundary.clone(),
            message: message.to_string(),
            started_at: self.now,
            finished_at: if phase.fulfilled() {
                Some(self.now)
            } else {
                None
            },
            inputs: Vec::new(),
            outputs: None,
            children: Vec::new(),
            outbound_nodes: Vec::new(),
            pod_name: None,
            wake_at: None,
        };
        if !phase.fulfilled() {
            self.track_active(node_type, boundary, 1);
        }
        self.dirty.insert(id.clone());
        self.nodes.insert(node);
        self.mutations += 1;
        self.transitions += 1;
        id
    }

    pub(crate) fn set_phase(&mut self, id: &str, phase: Phase, message: Option<String>) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(id) else {
            return;
        };
        if n.phase == phase && message.as_ref().is_none_or(|m| m == &n.message) {
            return;
        }
        self.dirty.insert(id.to_string());
        let was_active = !n.phase.fulfilled();
        let changed_phase = n.phase != phase;
        n.phase = phase;
        if let Some(m) = message {
            n.message = m;
        }
        if phase.fulfilled() && n.finished_at.is_none() {
            n.finished_at = Some(now);
        }
        let (node_type, boundary) = (n.node_type, n.boundary_id.clone());
        self.mutations += 1;
        if changed_phase {
            self.transitions += 1;
        }
        if was_active && phase.fulfilled() {
            self.track_active(node_type, &boundary, -1);
        }
    }

    /// Recomputes the running-node counters from the nodes (after `Retry` removed some).
    pub(crate) fn recount_active(&mut self) {
        self.active_pods = 0;
        self.active_by_boundary.clear();
        let active: Vec<(NodeType, Option<String>)> = self
            .nodes
            .iter()
            .filter(|n| !n.phase.fulfilled())
            .map(|n| (n.node_type, n.boundary_id.clone()))
            .collect();
        for (t, b) in active {
            self.track_active(t, &b, 1);
        }
    }

    /// Links a child; callers link each pair once, when the child is created.
    pub(crate) fn add_child(&mut self, parent_id: &str, child_id: &str) {
        if let Some(p) = self.nodes.get_mut(parent_id)
            && p.children.last().is_none_or(|c| c != child_id)
        {
            p.children.push(child_id.to_string());
            self.dirty.insert(parent_id.to_string());
            self.mutations += 1;
        }
    }

    pub(crate) fn node_by_name(&self, name: &str) -> Option<&Node> {
        self.nodes.get(&node_id(&self.id.name, name))
    }

    pub(crate) fn wake(&mut self, at: i64) {
        if at > self.now {
            self.wakeups.insert(at);
        }
    }

    pub(crate) fn blocked_by_shutdown(&self) -> bool {
        self.shutdown.is_some() && !self.in_exit_handler
    }

    /// Argo's `getOutboundNodes`: where a following node attaches.
    pub(crate) fn outbound_of(&self, id: &str) -> Vec<String> {
        let Some(n) = self.nodes.get(id) else {
            return Vec::new();
        };
        match n.node_type {
            NodeType::Pod | NodeType::Skipped | NodeType::Suspend | NodeType::HTTP => {
                vec![id.to_string()]
            }
            NodeType::Retry => match n.children.last() {
                Some(last) => self.outbound_of(last),
                None => vec![id.to_string()],
            },
            NodeType::TaskGroup => {
                let out: Vec<String> = n
                    .children
                    .iter()
                    .flat_map(|c| self.outbound_of(c))
                    .collect();
                if out.is_empty() {
                    vec![id.to_string()]
                } else {
                    out
                }
            }
            _ => {
                if n.outbound_nodes.is_empty() {
                    vec![id.to_string()]
                } else {
                    n.outbound_nodes.clone()
                }
            }
        }
    }
}
