//! Applying inputs: results, resumes, stops. Only bookkeeping here; decisions happen in the walk.

use std::collections::{BTreeMap, BTreeSet};

use spec::Parameter;

use crate::node::{Node, NodeOutputs, NodeType, Phase};
use crate::{Command, EngineError, ExecResult, Input, Pending, Shutdown, Workflow};

impl Workflow {
    pub(crate) fn apply(&mut self, input: &Input) -> Result<(), EngineError> {
        match input {
            Input::Start { now } => {
                if self.started_at.is_none() {
                    self.started_at = Some(*now);
                    self.phase = Phase::Running;
                    self.suspended = self.resource.spec.suspend.unwrap_or(false);
                    if let Some(ads) = self.resource.spec.active_deadline_seconds {
                        let at = now.saturating_add(ads.saturating_mul(1000));
                        self.deadline = Some(at);
                        self.wakeups.insert(at);
                    }
                }
            }
            Input::NodeStarted { node_id, .. } => {
                self.require_started("NodeStarted")?;
                let node = self
                    .nodes
                    .get(node_id)
                    .ok_or_else(|| EngineError::UnknownNode(node_id.clone()))?;
                if node.phase == Phase::Pending {
                    self.set_phase(node_id, Phase::Running, None);
                }
            }
            Input::NodeFinished {
                node_id, result, ..
            } => {
                self.require_started("NodeFinished")?;
                let node = self
                    .nodes
                    .get(node_id)
                    .ok_or_else(|| EngineError::UnknownNode(node_id.clone()))?;
                // A node already ended (stopped, timed out) keeps its phase: results are idempotent.
                if node.phase.fulfilled() {
                    self.pending.remove(node_id);
                    return Ok(());
                }
                let pending = self.pending.remove(node_id).unwrap_or(Pending {
                    outputs: Vec::new(),
                    execute: None,
                });
                self.finish_leaf(node_id, result, &pending.outputs);
            }
            Input::Tick { .. } => {}
            Input::Resume {
                node, parameters, ..
            } => {
                self.require_started("Resume")?;
                // Resuming the workflow (no node named) lifts a whole-workflow suspend.
                if node.is_none() {
                    self.suspended = false;
                }
                let ids: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| n.node_type == NodeType::Suspend && !n.phase.fulfilled())
                    .filter(|n| {
                        node.as_ref().is_none_or(|sel| {
                            &n.name == sel || &n.display_name == sel || &n.id == sel
                        })
                    })
                    .map(|n| n.id.clone())
                    .collect();
                for id in ids {
                    self.resume_suspend(&id, parameters);
                }
            }
            Input::Suspend { .. } => {
                self.require_started("Suspend")?;
                self.suspended = true;
            }
            Input::Retry {
                restart_successful,
                node_selector,
                parameters,
                ..
            } => {
                self.require_started("Retry")?;
                if !self.is_finished() || self.phase == Phase::Succeeded && !restart_successful {
                    return Err(EngineError::Invalid(format!(
                        "only a finished workflow that did not succeed can be retried (phase {})",
                        self.phase.as_str()
                    )));
                }
                self.retry(*restart_successful, node_selector.as_deref(), parameters)?;
            }
            Input::Stop {
                terminate, message, ..
            } => {
                self.require_started("Stop")?;
                if self.shutdown.is_none() {
                    let strategy = if *terminate { "Terminate" } else { "Stop" };
                    let msg = message
                        .clone()
                        .unwrap_or_else(|| format!("Stopped with strategy '{strategy}'"));
                    self.shutdown = Some(if *terminate {
                        Shutdown::Terminate(msg.clone())
                    } else {
                        Shutdown::Stop(msg.clone())
                    });
                    self.fail_active(&msg);
                }
            }
            Input::Abort { message, .. } => {
                self.require_started("Abort")?;
                if !matches!(self.shutdown, Some(Shutdown::Abort(_))) {
                    self.shutdown = Some(Shutdown::Abort(message.clone()));
                    self.fail_active(message);
                }
            }
        }
        Ok(())
    }

    /// Removes what must run again and reopens everything above it (see `Input::Retry`).
    fn retry(
        &mut self,
        restart_successful: bool,
        selector: Option<&str>,
        parameters: &[(String, String)],
    ) -> Result<(), EngineError> {
        for (name, value) in parameters {
            if !self
                .resource
                .spec
                .arguments
                .parameters
                .iter()
                .any(|p| &p.name == name)
            {
                return Err(EngineError::Invalid(format!(
                    "parameter {name:?} is not declared in spec.arguments.parameters"
                )));
            }
            self.globals
                .insert(format!("workflow.parameters.{name}"), value.clone());
            if let Some(p) = self
                .resource
                .spec
                .arguments
                .parameters
                .iter_mut()
                .find(|p| &p.name == name)
            {
                p.value = Some(spec::AnyString(value.clone()));
            }
        }
        let grouping = |t: NodeType| {
            matches!(
                t,
                NodeType::Steps
                    | NodeType::DAG
                    | NodeType::StepGroup
                    | NodeType::TaskGroup
                    | NodeType::Retry
            )
        };
        let matches_selector = |n: &Node| {
            selector.is_none_or(|s| {
                n.name == s
                    || n.display_name == s
                    || n.id == s
                    || n.template_name.as_deref() == Some(s)
            })
        };
        let exit_prefix = format!("{}.onExit", self.id.name);
        let mut remove: BTreeSet<String> = BTreeSet::new();
        for n in self.nodes.iter() {
            let in_exit_handler = n.name == exit_prefix
                || n.name.starts_with(&format!("{exit_prefix}."))
                || n.name.starts_with(&format!("{exit_prefix}["));
            let failed_leaf = !grouping(n.node_type)
                && matches!(n.phase, Phase::Failed | Phase::Error | Phase::Omitted);
            let restarted = restart_successful
                && !grouping(n.node_type)
                && n.phase == Phase::Succeeded
                && matches_selector(n);
            if in_exit_handler || failed_leaf || restarted {
                remove.insert(n.id.clone());
            }
        }
        // Whatever lives inside a removed node's boundary goes too.
        loop {
            let more: Vec<String> = self
                .nodes
                .iter()
                .filter(|n| {
                    !remove.contains(&n.id)
                        && n.boundary_id.as_ref().is_some_and(|b| remove.contains(b))
                })
                .map(|n| n.id.clone())
                .collect();
            if more.is_empty() {
                break;
            }
            remove.extend(more);
        }
        // Reopen: grouping nodes that did not succeed, those that lose a child, and every
        // boundary above a reopened or removed node.
        let mut reopen: BTreeSet<String> = self
            .nodes
            .iter()
            .filter(|n| !remove.contains(&n.id))
            .filter(|n| {
                grouping(n.node_type)
                    && (n.phase != Phase::Succeeded
                        || n.children.iter().any(|c| remove.contains(c)))
            })
            .map(|n| n.id.clone())
            .collect();
        let mut frontier: Vec<Option<String>> = remove
            .iter()
            .chain(reopen.iter())
            .map(|id| self.nodes.get(id).and_then(|n| n.boundary_id.clone()))
            .collect();
        while let Some(b) = frontier.pop() {
            if let Some(b) = b
                && !remove.contains(&b)
                && reopen.insert(b.clone())
            {
                frontier.push(self.nodes.get(&b).and_then(|n| n.boundary_id.clone()));
            }
        }
        for id in &remove {
            self.nodes.remove(id);
            self.pending.remove(id);
            self.dirty.remove(id);
            self.deleted.insert(id.clone());
        }
        for n in self.nodes.iter_mut() {
            n.children.retain(|c| !remove.contains(c));
            n.outbound_nodes.retain(|c| !remove.contains(c));
            if reopen.contains(&n.id) {
                n.phase = Phase::Running;
                n.finished_at = None;
                n.message.clear();
                self.dirty.insert(n.id.clone());
            }
        }
        self.recount_active();
        self.dag_cache.clear();
        self.group_cache.clear();
        self.pending_exit_hooks.clear();
        self.phase = Phase::Running;
        self.message.clear();
        self.finished_at = None;
        self.shutdown = None;
        self.globals
            .insert("workflow.status".into(), "Running".into());
        self.globals.remove("workflow.failures");
        self.mutations += 1;
        Ok(())
    }

    pub(crate) fn require_started(&self, input: &'static str) -> Result<(), EngineError> {
        if self.started_at.is_none() {
            return Err(EngineError::NotStarted { input });
        }
        Ok(())
    }

    /// Fails every running leaf and suspend node (stop, terminate, deadline).
    /// Ends the workflow at once, without walking it again: every unfinished node becomes
    /// `Error` with `message` (running leaves are cancelled) and so does the workflow; exit
    /// handlers do not run. For a workflow past its node limit, where another walk of it is
    /// the work that cannot be afforded.
    pub(crate) fn abort_now(&mut self, message: &str) {
        self.shutdown = Some(Shutdown::Abort(message.to_string()));
        let ids: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.phase.fulfilled())
            .map(|n| n.id.clone())
            .collect();
        for id in ids {
            if self.pending.remove(&id).is_some()
                && self.nodes.get(&id).is_some_and(|n| n.node_type.is_leaf())
            {
                self.commands.push(Command::Cancel {
                    node_id: id.clone(),
                });
            }
            self.set_phase(&id, Phase::Error, Some(message.to_string()));
        }
        self.phase = Phase::Error;
        self.message = message.to_string();
        self.globals
            .insert("workflow.status".into(), Phase::Error.as_str().to_string());
        self.finished_at = Some(self.now);
        self.wakeups.clear();
    }

    pub(crate) fn fail_active(&mut self, message: &str) {
        let ids: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| {
                !n.phase.fulfilled() && (n.node_type.is_leaf() || n.node_type == NodeType::Suspend)
            })
            .map(|n| n.id.clone())
            .collect();
        for id in ids {
            if self.pending.remove(&id).is_some()
                && self.nodes.get(&id).is_some_and(|n| n.node_type.is_leaf())
            {
                self.commands.push(Command::Cancel {
                    node_id: id.clone(),
                });
            }
            self.set_phase(&id, Phase::Failed, Some(message.to_string()));
        }
    }

    pub(crate) fn finish_leaf(&mut self, id: &str, result: &ExecResult, outputs: &[Parameter]) {
        let mut out = NodeOutputs {
            parameters: Vec::new(),
            result: result.result.clone(),
            exit_code: result.exit_code.map(|c| c.to_string()),
        };
        let mut phase = result.phase;
        let mut message = result.message.clone();
        if phase == Phase::Succeeded {
            for p in outputs {
                let Some(vf) = &p.value_from else {
                    if let Some(v) = &p.value {
                        out.parameters.push((p.name.clone(), v.0.clone()));
                    }
                    continue;
                };
                // Values the executor reads: a file (`path`) or, for resource templates, the
                // object (`jsonPath`, `jqFilter`).
                let source = match (&vf.path, &vf.json_path, &vf.jq_filter) {
                    (Some(path), _, _) => format!("{path}: no such file"),
                    (None, Some(jp), _) => format!("jsonPath {jp}"),
                    (None, None, Some(jq)) => format!("jqFilter {jq}"),
                    (None, None, None) => continue,
                };
                match result.parameters.get(&p.name).cloned().flatten() {
                    Some(v) => out.parameters.push((p.name.clone(), v)),
                    None => match &vf.default {
                        Some(d) => out.parameters.push((p.name.clone(), d.0.clone())),
                        None => {
                            phase = Phase::Error;
                            message = format!(
                                "failed to read output parameter {:?} from {source}; give it a valueFrom.default",
                                p.name,
                            );
                        }
                    },
                }
            }
        }
        self.set_global_outputs(outputs, &out);
        if let Some(n) = self.nodes.get_mut(id) {
            n.outputs = if out.is_empty() { None } else { Some(out) };
        }
        self.set_phase(id, phase, Some(message));
    }

    pub(crate) fn set_global_outputs(&mut self, decl: &[Parameter], out: &NodeOutputs) {
        for p in decl {
            if let (Some(g), Some(v)) = (&p.global_name, out.parameter(&p.name)) {
                self.globals
                    .insert(format!("workflow.outputs.parameters.{g}"), v.to_string());
            }
        }
    }

    pub(crate) fn resume_suspend(&mut self, id: &str, supplied: &BTreeMap<String, String>) {
        let decl = self
            .pending
            .remove(id)
            .map(|p| p.outputs)
            .unwrap_or_default();
        let mut out = NodeOutputs::default();
        for p in &decl {
            let from_input = supplied.get(&p.name).cloned();
            let default = p
                .value_from
                .as_ref()
                .and_then(|v| v.default.clone())
                .map(|d| d.0);
            match from_input
                .or(default)
                .or_else(|| p.value.as_ref().map(|v| v.0.clone()))
            {
                Some(v) => out.parameters.push((p.name.clone(), v)),
                None => {
                    self.set_phase(
                        id,
                        Phase::Error,
                        Some(format!(
                            "output parameter {:?} was not supplied on resume",
                            p.name
                        )),
                    );
                    return;
                }
            }
        }
        self.set_global_outputs(&decl, &out);
        if let Some(n) = self.nodes.get_mut(id) {
            n.outputs = if out.is_empty() { None } else { Some(out) };
            n.wake_at = None;
        }
        self.set_phase(id, Phase::Succeeded, None);
    }
}
