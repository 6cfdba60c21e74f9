//! Applying inputs: results, resumes, stops. Only bookkeeping here; decisions happen in the walk.

use std::collections::BTreeMap;

use spec::Parameter;

use crate::node::{NodeOutputs, NodeType, Phase};
use crate::{Command, EngineError, ExecResult, Input, Pending, Shutdown, Workflow};

impl Workflow {
    pub(crate) fn apply(&mut self, input: &Input) -> Result<(), EngineError> {
        match input {
            Input::Start { now } => {
                if self.started_at.is_none() {
                    self.started_at = Some(*now);
                    self.phase = Phase::Running;
                    if let Some(ads) = self.resource.spec.active_deadline_seconds {
                        let at = now + ads * 1000;
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
                });
                self.finish_leaf(node_id, result, &pending.outputs);
            }
            Input::Tick { .. } => {}
            Input::Resume {
                node, parameters, ..
            } => {
                self.require_started("Resume")?;
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
        }
        Ok(())
    }

    pub(crate) fn require_started(&self, input: &'static str) -> Result<(), EngineError> {
        if self.started_at.is_none() {
            return Err(EngineError::NotStarted { input });
        }
        Ok(())
    }

    /// Fails every running leaf and suspend node (stop, terminate, deadline).
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
                if vf.path.is_none() {
                    continue;
                }
                match result.parameters.get(&p.name).cloned().flatten() {
                    Some(v) => out.parameters.push((p.name.clone(), v)),
                    None => match &vf.default {
                        Some(d) => out.parameters.push((p.name.clone(), d.0.clone())),
                        None => {
                            phase = Phase::Error;
                            message = format!(
                                "failed to read output parameter {:?} from {}: no such file; give it a valueFrom.default",
                                p.name,
                                vf.path.as_deref().unwrap_or("")
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
