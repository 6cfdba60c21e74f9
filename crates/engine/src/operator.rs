//! Applying inputs and re-evaluating the workflow from its root: Argo's operator, without IO.
//!
//! `operate` walks the template tree from the entrypoint the way Argo's `executeTemplate`
//! does: existing fulfilled nodes are returned at once, new nodes are created, leaf nodes turn
//! into `Execute` commands. The walk repeats until it changes nothing, so that nodes which
//! finish instantly (skipped, omitted, errored) unblock their dependents in the same step.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use expr::{Scope, Unresolved};
use serde_json::Value;
use spec::{Arguments, ContinueOn, DagTask, Parameter, RetryStrategy, Template, TemplateRef, TemplateType, WorkflowStep};

use crate::node::{Node, NodeOutputs, NodeType, Phase, TemplateScope, node_id, pod_name};
use crate::scope::{ScopeView, Siblings};
use crate::{Command, EngineError, ExecResult, ExecuteNode, Input, Pending, Shutdown, Workflow};

/// The most walks one step may take; only an unbounded retry of an instantly failing node
/// could need more, and it then continues at the next input.
const MAX_WALKS: usize = 1000;

/// The result of trying to run a template at a node name.
#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Blocked by parallelism or shutdown; no node exists.
    NotStarted,
    Node(String),
}

/// Which template to run: by name in a scope, by reference, or inline.
#[derive(Debug, Clone)]
enum Target {
    Name(String),
    Ref(TemplateRef),
    Inline(Arc<Template>),
}

/// One call of `execute_template`.
#[derive(Debug, Clone)]
struct Invocation {
    node_name: String,
    display_name: String,
    target: Target,
    scope: TemplateScope,
    args: Vec<(String, String)>,
    boundary: Option<String>,
}

fn target_of(template: &Option<String>, template_ref: &Option<TemplateRef>, inline: &Option<Box<Template>>) -> Target {
    if let Some(r) = template_ref {
        return Target::Ref(r.clone());
    }
    if let Some(i) = inline {
        return Target::Inline(Arc::new((**i).clone()));
    }
    Target::Name(template.clone().unwrap_or_default())
}

fn continues_on(c: &Option<ContinueOn>, phase: Phase) -> bool {
    match c {
        Some(c) => (phase == Phase::Failed && c.failed) || (phase == Phase::Error && c.error),
        None => false,
    }
}

/// `Succeeded`, `Skipped` (and daemoned, which Riposte does not run) count as success.
fn successful(phase: Phase) -> bool {
    matches!(phase, Phase::Succeeded | Phase::Skipped)
}

/// Argo's loop child name suffix: `(i:value)`, maps as sorted `k:v` pairs.
fn item_label(i: usize, item: &Value) -> String {
    let v = match item {
        Value::String(s) => s.clone(),
        Value::Object(m) => {
            let mut parts: Vec<String> = m
                .iter()
                .map(|(k, v)| format!("{k}:{}", match v { Value::String(s) => s.clone(), o => o.to_string() }))
                .collect();
            parts.sort();
            parts.join(",")
        }
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(|v| match v { Value::String(s) => s.clone(), o => o.to_string() }).collect();
            format!("[{}]", parts.join(" "))
        }
        other => other.to_string(),
    };
    format!("({i}:{v})")
}

/// Go's `%0Nd`/`%d`/`%x`-style sequence formatting, the subset Argo users write.
fn format_sequence(format: Option<&str>, n: i64) -> String {
    let Some(f) = format else { return n.to_string() };
    let Some(pos) = f.find('%') else { return f.to_string() };
    let spec_end = f[pos + 1..].find(|c: char| c.is_ascii_alphabetic()).map(|i| pos + 1 + i);
    let Some(end) = spec_end else { return f.to_string() };
    let flags = &f[pos + 1..end];
    let width: usize = flags.trim_start_matches('0').parse().unwrap_or(0);
    let zero = flags.starts_with('0');
    let body = match &f[end..=end] {
        "x" => format!("{n:x}"),
        "X" => format!("{n:X}"),
        "o" => format!("{n:o}"),
        _ => n.to_string(),
    };
    let padded = if zero { format!("{body:0>width$}") } else { format!("{body:>width$}") };
    format!("{}{}{}", &f[..pos], padded, &f[end + 1..])
}

impl Workflow {
    // ---------------------------------------------------------------- inputs

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
                let node = self.nodes.get(node_id).ok_or_else(|| EngineError::UnknownNode(node_id.clone()))?;
                if node.phase == Phase::Pending {
                    self.set_phase(node_id, Phase::Running, None);
                }
            }
            Input::NodeFinished { node_id, result, .. } => {
                self.require_started("NodeFinished")?;
                let node = self.nodes.get(node_id).ok_or_else(|| EngineError::UnknownNode(node_id.clone()))?;
                // A node already ended (stopped, timed out) keeps its phase: results are idempotent.
                if node.phase.fulfilled() {
                    self.pending.remove(node_id);
                    return Ok(());
                }
                let pending = self.pending.remove(node_id).unwrap_or(Pending { outputs: Vec::new() });
                self.finish_leaf(node_id, result, &pending.outputs);
            }
            Input::Tick { .. } => {}
            Input::Resume { node, parameters, .. } => {
                self.require_started("Resume")?;
                let ids: Vec<String> = self
                    .nodes
                    .iter()
                    .filter(|n| n.node_type == NodeType::Suspend && !n.phase.fulfilled())
                    .filter(|n| node.as_ref().is_none_or(|sel| &n.name == sel || &n.display_name == sel || &n.id == sel))
                    .map(|n| n.id.clone())
                    .collect();
                for id in ids {
                    self.resume_suspend(&id, parameters);
                }
            }
            Input::Stop { terminate, message, .. } => {
                self.require_started("Stop")?;
                if self.shutdown.is_none() {
                    let strategy = if *terminate { "Terminate" } else { "Stop" };
                    let msg = message.clone().unwrap_or_else(|| format!("Stopped with strategy '{strategy}'"));
                    self.shutdown = Some(if *terminate { Shutdown::Terminate(msg.clone()) } else { Shutdown::Stop(msg.clone()) });
                    self.fail_active(&msg);
                }
            }
        }
        Ok(())
    }

    fn require_started(&self, input: &'static str) -> Result<(), EngineError> {
        if self.started_at.is_none() {
            return Err(EngineError::NotStarted { input });
        }
        Ok(())
    }

    /// Fails every running leaf and suspend node (stop, terminate, deadline).
    fn fail_active(&mut self, message: &str) {
        let ids: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !n.phase.fulfilled() && (n.node_type.is_leaf() || n.node_type == NodeType::Suspend))
            .map(|n| n.id.clone())
            .collect();
        for id in ids {
            if self.pending.remove(&id).is_some() && self.nodes.get(&id).is_some_and(|n| n.node_type.is_leaf()) {
                self.commands.push(Command::Cancel { node_id: id.clone() });
            }
            self.set_phase(&id, Phase::Failed, Some(message.to_string()));
        }
    }

    fn finish_leaf(&mut self, id: &str, result: &ExecResult, outputs: &[Parameter]) {
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

    fn set_global_outputs(&mut self, decl: &[Parameter], out: &NodeOutputs) {
        for p in decl {
            if let (Some(g), Some(v)) = (&p.global_name, out.parameter(&p.name)) {
                self.globals.insert(format!("workflow.outputs.parameters.{g}"), v.to_string());
            }
        }
    }

    fn resume_suspend(&mut self, id: &str, supplied: &BTreeMap<String, String>) {
        let decl = self.pending.remove(id).map(|p| p.outputs).unwrap_or_default();
        let mut out = NodeOutputs::default();
        for p in &decl {
            let from_input = supplied.get(&p.name).cloned();
            let default = p.value_from.as_ref().and_then(|v| v.default.clone()).map(|d| d.0);
            match from_input.or(default).or_else(|| p.value.as_ref().map(|v| v.0.clone())) {
                Some(v) => out.parameters.push((p.name.clone(), v)),
                None => {
                    self.set_phase(id, Phase::Error, Some(format!("output parameter {:?} was not supplied on resume", p.name)));
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

    // ---------------------------------------------------------------- node bookkeeping

    fn counts_as_active_child(t: NodeType) -> bool {
        matches!(t, NodeType::Pod | NodeType::HTTP | NodeType::Steps | NodeType::DAG)
    }

    fn track_active(&mut self, node_type: NodeType, boundary: &Option<String>, delta: isize) {
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
    fn create_node(
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
            finished_at: if phase.fulfilled() { Some(self.now) } else { None },
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
        self.nodes.insert(node);
        self.mutations += 1;
        id
    }

    pub(crate) fn set_phase(&mut self, id: &str, phase: Phase, message: Option<String>) {
        let now = self.now;
        let Some(n) = self.nodes.get_mut(id) else { return };
        if n.phase == phase && message.as_ref().is_none_or(|m| m == &n.message) {
            return;
        }
        let was_active = !n.phase.fulfilled();
        n.phase = phase;
        if let Some(m) = message {
            n.message = m;
        }
        if phase.fulfilled() && n.finished_at.is_none() {
            n.finished_at = Some(now);
        }
        let (node_type, boundary) = (n.node_type, n.boundary_id.clone());
        self.mutations += 1;
        if was_active && phase.fulfilled() {
            self.track_active(node_type, &boundary, -1);
        }
    }

    fn add_child(&mut self, parent_id: &str, child_id: &str) {
        if let Some(p) = self.nodes.get_mut(parent_id)
            && !p.children.iter().any(|c| c == child_id)
        {
            p.children.push(child_id.to_string());
            self.mutations += 1;
        }
    }

    fn node_by_name(&self, name: &str) -> Option<&Node> {
        self.nodes.get(&node_id(&self.id.name, name))
    }

    fn wake(&mut self, at: i64) {
        if at > self.now {
            self.wakeups.insert(at);
        }
    }

    fn blocked_by_shutdown(&self) -> bool {
        self.shutdown.is_some() && !self.in_exit_handler
    }

    // ---------------------------------------------------------------- the walk

    pub(crate) fn operate(&mut self) {
        for _ in 0..MAX_WALKS {
            let before = self.mutations;
            self.walk();
            if self.mutations == before || self.is_finished() {
                break;
            }
        }
    }

    fn walk(&mut self) {
        if let Some(deadline) = self.deadline
            && self.now >= deadline
            && self.shutdown.is_none()
        {
            self.shutdown = Some(Shutdown::Deadline);
            self.fail_active("Step exceeded its deadline");
        }
        let wf_name = self.id.name.clone();
        let entry = self.resource.spec.entrypoint.clone().unwrap_or_default();
        let args: Vec<(String, String)> = self
            .resource
            .spec
            .arguments
            .parameters
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.value.as_ref()?.0.clone())))
            .collect();
        let main = self.execute_template(Invocation {
            node_name: wf_name.clone(),
            display_name: wf_name.clone(),
            target: Target::Name(entry),
            scope: TemplateScope::Local,
            args,
            boundary: None,
        });
        self.run_workflow_hooks();
        let main_phase = match &main {
            Outcome::Node(id) => self.nodes.get(id).map(|n| n.phase),
            Outcome::NotStarted => None,
        };
        let main_phase = match main_phase {
            Some(p) if p.fulfilled() => p,
            Some(_) => return,
            None if self.shutdown.is_some() => Phase::Failed,
            None => return,
        };
        let main_message = match &main {
            Outcome::Node(id) => self.nodes.get(id).map(|n| n.message.clone()).unwrap_or_default(),
            Outcome::NotStarted => self.shutdown.as_ref().map(Shutdown::message).unwrap_or_default(),
        };
        let status = match main_phase {
            Phase::Error => Phase::Error,
            p if p.failed_or_error() => p,
            _ => Phase::Succeeded,
        };
        let mut final_phase = status;
        let mut final_message = main_message;
        if let Some(Shutdown::Stop(m) | Shutdown::Terminate(m)) = &self.shutdown {
            final_phase = Phase::Failed;
            final_message = m.clone();
        } else if let Some(Shutdown::Deadline) = &self.shutdown {
            final_phase = Phase::Failed;
            final_message = "Step exceeded its deadline".into();
        }
        // The workflow-level exit handler runs unless terminated.
        if let Some(on_exit) = self.resource.spec.on_exit.clone()
            && !matches!(self.shutdown, Some(Shutdown::Terminate(_)))
        {
            self.globals.insert("workflow.status".into(), status.as_str().to_string());
            self.globals.insert("workflow.failures".into(), self.failures_json());
            self.in_exit_handler = true;
            let exit = self.execute_template(Invocation {
                node_name: format!("{wf_name}.onExit"),
                display_name: format!("{wf_name}.onExit"),
                target: Target::Name(on_exit),
                scope: TemplateScope::Local,
                args: Vec::new(),
                boundary: None,
            });
            self.in_exit_handler = false;
            let Outcome::Node(exit_id) = exit else { return };
            let Some(exit_node) = self.nodes.get(&exit_id) else { return };
            if !exit_node.phase.fulfilled() {
                return;
            }
            if exit_node.phase.failed_or_error() && final_phase == Phase::Succeeded {
                final_phase = exit_node.phase;
                final_message = exit_node.message.clone();
            }
        }
        self.phase = final_phase;
        self.message = final_message;
        self.globals.insert("workflow.status".into(), final_phase.as_str().to_string());
        self.finished_at = Some(self.now);
        self.wakeups.clear();
        self.mutations += 1;
    }

    /// `workflow.failures`: the failed nodes as Argo's JSON list.
    fn failures_json(&self) -> String {
        let list: Vec<Value> = self
            .nodes
            .iter()
            .filter(|n| n.phase.failed_or_error() && n.node_type.is_leaf())
            .map(|n| {
                serde_json::json!({
                    "displayName": n.display_name,
                    "message": n.message,
                    "templateName": n.template_name.clone().unwrap_or_default(),
                    "phase": n.phase.as_str(),
                    "podName": n.pod_name.clone().unwrap_or_default(),
                    "finishedAt": n.finished_at.map(expr::time::rfc3339).unwrap_or_default(),
                })
            })
            .collect();
        Value::Array(list).to_string()
    }

    /// Workflow-level lifecycle hooks other than `exit`: run once when their expression holds.
    fn run_workflow_hooks(&mut self) {
        let hooks: Vec<(String, spec::LifecycleHook)> =
            self.resource.spec.hooks.iter().filter(|(k, _)| k.as_str() != "exit").map(|(k, v)| (k.clone(), v.clone())).collect();
        for (key, hook) in hooks {
            let name = format!("{}.hooks.{key}", self.id.name);
            if self.node_by_name(&name).is_none() {
                let Some(src) = &hook.expression else { continue };
                let siblings = Siblings::None;
                let view = ScopeView { wf: self, siblings: &siblings, inputs: &[], item: None, extra: Vec::new() };
                let env = view.env();
                if !expr::eval_bool(src, &env).unwrap_or(false) {
                    continue;
                }
            }
            self.execute_template(Invocation {
                node_name: name.clone(),
                display_name: name,
                target: target_of(&hook.template, &hook.template_ref, &None),
                scope: TemplateScope::Local,
                args: hook.arguments.parameters.iter().filter_map(|p| Some((p.name.clone(), p.value.as_ref()?.0.clone()))).collect(),
                boundary: None,
            });
        }
    }

    fn resolve(&self, target: &Target, scope: &TemplateScope) -> Result<(Arc<Template>, TemplateScope), String> {
        match target {
            Target::Inline(t) => Ok((t.clone(), scope.clone())),
            Target::Name(n) => self
                .templates
                .get(&(scope.clone(), n.clone()))
                .map(|t| (t.clone(), scope.clone()))
                .ok_or_else(|| format!("template {n:?} not found")),
            Target::Ref(r) => {
                let s = TemplateScope::Ref { name: r.name.clone(), cluster: r.cluster_scope };
                self.templates
                    .get(&(s.clone(), r.template.clone()))
                    .map(|t| (t.clone(), s))
                    .ok_or_else(|| match self.library.get(&r.name, r.cluster_scope) {
                        Err(e) => e.to_string(),
                        Ok(_) => format!("template {:?} not found in {:?}", r.template, r.name),
                    })
            }
        }
    }

    fn retry_strategy(&self, t: &Template) -> Option<RetryStrategy> {
        t.retry_strategy.clone().or_else(|| self.resource.spec.retry_strategy.clone())
    }

    /// Argo's `ProcessArgs` for inputs: defaults, then arguments, then enums.
    /// Template-level values and defaults may use workflow variables and expressions.
    fn process_inputs(&self, t: &Template, args: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
        let siblings = Siblings::None;
        let view = ScopeView { wf: self, siblings: &siblings, inputs: &[], item: None, extra: Vec::new() };
        let render = |s: &str| expr::render(s, &view, Unresolved::Keep).map_err(|e| e.to_string());
        let mut out = Vec::new();
        for p in &t.inputs.parameters {
            let mut value = match &p.value {
                Some(v) => Some(render(&v.0)?),
                None => None,
            };
            if let Some(d) = &p.default {
                value = Some(render(&d.0)?);
            }
            if let Some((_, v)) = args.iter().find(|(n, _)| n == &p.name) {
                // A reference to an output that never existed (a skipped producer) is no value.
                let unresolved = expr::tags(v).iter().any(|t| t.starts_with("steps.") || t.starts_with("tasks."));
                if !unresolved {
                    value = Some(v.clone());
                }
            }
            let Some(value) = value else {
                return Err(format!("inputs.parameters.{} was not supplied", p.name));
            };
            if !p.r#enum.is_empty() && !p.r#enum.iter().any(|e| e.0 == value) {
                let allowed: Vec<&str> = p.r#enum.iter().map(|e| e.as_str()).collect();
                return Err(format!("value '{value}' for inputs.parameters.{} is not one of [{}]", p.name, allowed.join(", ")));
            }
            out.push((p.name.clone(), value));
        }
        Ok(out)
    }

    fn error_node(&mut self, inv: &Invocation, message: String) -> Outcome {
        let id = node_id(&self.id.name, &inv.node_name);
        if self.nodes.get(&id).is_none() {
            self.create_node(&inv.node_name, &inv.display_name, NodeType::Skipped, None, &inv.scope, &inv.boundary, Phase::Error, &message);
        } else {
            self.set_phase(&id, Phase::Error, Some(message));
        }
        Outcome::Node(id)
    }

    /// Would starting a new node of `t` under `boundary` exceed a parallelism limit?
    fn parallelism_reached(&self, t: &Template, boundary: &Option<String>) -> bool {
        if t.is_leaf()
            && let Some(p) = self.resource.spec.parallelism
            && self.active_pods as i64 >= p
        {
            return true;
        }
        if let Some(b) = boundary
            && let Some(bn) = self.nodes.get(b)
            && let Some(bt) = bn.template_name.as_ref().and_then(|n| self.templates.get(&(bn.template_scope.clone(), n.clone())))
            && let Some(p) = bt.parallelism
            && *self.active_by_boundary.get(b).unwrap_or(&0) as i64 >= p
        {
            return true;
        }
        false
    }

    fn execute_template(&mut self, inv: Invocation) -> Outcome {
        let id = node_id(&self.id.name, &inv.node_name);
        let existing = self.nodes.get(&id).map(|n| n.phase);
        if existing.is_some_and(Phase::fulfilled) {
            return Outcome::Node(id);
        }
        let (tmpl, tscope) = match self.resolve(&inv.target, &inv.scope) {
            Ok(x) => x,
            Err(msg) => return self.error_node(&inv, msg),
        };
        if existing.is_none() && self.blocked_by_shutdown() {
            return Outcome::NotStarted;
        }
        let inputs = match self.process_inputs(&tmpl, &inv.args) {
            Ok(i) => i,
            Err(msg) => return self.error_node(&inv, msg),
        };
        if existing.is_none() && self.parallelism_reached(&tmpl, &inv.boundary) {
            return Outcome::NotStarted;
        }
        if let Some(rs) = self.retry_strategy(&tmpl)
            && tmpl.suspend.is_none()
        {
            return self.execute_with_retries(inv, tmpl, tscope, inputs, rs);
        }
        self.execute_body(&inv.node_name, &inv.display_name, &tmpl, &tscope, inputs, &inv.boundary, None)
    }

    fn execute_with_retries(
        &mut self,
        inv: Invocation,
        tmpl: Arc<Template>,
        tscope: TemplateScope,
        inputs: Vec<(String, String)>,
        rs: RetryStrategy,
    ) -> Outcome {
        let retry_id = node_id(&self.id.name, &inv.node_name);
        if self.nodes.get(&retry_id).is_none() {
            self.create_node(&inv.node_name, &inv.display_name, NodeType::Retry, Some(&tmpl), &tscope, &inv.boundary, Phase::Running, "");
            if let Some(n) = self.nodes.get_mut(&retry_id) {
                n.inputs = inputs.clone();
            }
        }
        for _ in 0..2 {
            match self.process_retries(&retry_id, &rs, &inputs) {
                RetryDecision::Done | RetryDecision::Wait => return Outcome::Node(retry_id),
                RetryDecision::Continue => {}
            }
            let children = self.nodes.get(&retry_id).map(|n| n.children.clone()).unwrap_or_default();
            let last = children.last().and_then(|c| self.nodes.get(c)).map(|n| (n.name.clone(), n.phase));
            let (attempt_name, attempt) = match last {
                Some((name, phase)) if !phase.fulfilled() => (name, children.len() - 1),
                _ => (format!("{}({})", inv.node_name, children.len()), children.len()),
            };
            let display = format!("{}({attempt})", inv.display_name);
            let out = self.execute_body(&attempt_name, &display, &tmpl, &tscope, inputs.clone(), &inv.boundary, Some(attempt));
            let Outcome::Node(child) = out else { return Outcome::Node(retry_id) };
            self.add_child(&retry_id, &child);
            if !self.nodes.get(&child).is_some_and(|n| n.phase.fulfilled()) {
                return Outcome::Node(retry_id);
            }
            // The attempt ended at once: decide about the retry node in this walk too.
        }
        Outcome::Node(retry_id)
    }

    /// Argo's `processNodeRetries`.
    fn process_retries(&mut self, retry_id: &str, rs: &RetryStrategy, inputs: &[(String, String)]) -> RetryDecision {
        let Some(node) = self.nodes.get(retry_id) else { return RetryDecision::Done };
        if node.phase.fulfilled() {
            return RetryDecision::Done;
        }
        let Some(last_id) = node.children.last().cloned() else { return RetryDecision::Continue };
        let n_children = node.children.len();
        let first_started = node.children.first().and_then(|c| self.nodes.get(c)).map(|n| n.started_at).unwrap_or(self.now);
        let Some(last) = self.nodes.get(&last_id).cloned() else { return RetryDecision::Continue };
        if !last.phase.fulfilled() {
            return RetryDecision::Continue;
        }
        if !last.phase.failed_or_error() {
            if let Some(n) = self.nodes.get_mut(retry_id) {
                n.outputs = last.outputs.clone();
            }
            self.set_phase(retry_id, Phase::Succeeded, Some(String::new()));
            return RetryDecision::Done;
        }
        if let Some(s) = &self.shutdown
            && !self.in_exit_handler
        {
            let msg = s.message();
            self.set_phase(retry_id, last.phase, Some(msg));
            return RetryDecision::Done;
        }
        let siblings = Siblings::None;
        let render = |wf: &Workflow, s: &str| -> String {
            let view = ScopeView { wf, siblings: &siblings, inputs, item: None, extra: Vec::new() };
            expr::render(s, &view, Unresolved::Keep).unwrap_or_else(|_| s.to_string())
        };
        if let Some(b) = &rs.backoff {
            let mut max_deadline = None;
            if let Some(md) = &b.max_duration {
                let md = expr::time::parse_duration_millis(&render(self, &md.0)).unwrap_or(0);
                let deadline = first_started + md;
                if self.now >= deadline {
                    self.set_phase(retry_id, last.phase, Some("Max duration limit exceeded".into()));
                    return RetryDecision::Done;
                }
                max_deadline = Some(deadline);
            }
            let base = b.duration.as_ref().and_then(|d| expr::time::parse_duration_millis(&render(self, &d.0))).unwrap_or(0);
            let factor = b.factor.as_ref().and_then(|f| render(self, &f.0).parse::<f64>().ok()).unwrap_or(0.0);
            let mut wait = if factor > 0.0 { (base as f64 * factor.powi(n_children as i32 - 1)) as i64 } else { base };
            if let Some(cap) = b.cap.as_ref().and_then(|c| expr::time::parse_duration_millis(&c.0)) {
                wait = wait.min(cap);
            }
            let wait_until = last.finished_at.unwrap_or(self.now) + wait;
            if let Some(md) = max_deadline
                && wait_until > md
            {
                self.set_phase(retry_id, last.phase, Some("Backoff would exceed max duration limit".into()));
                return RetryDecision::Done;
            }
            let limit = rs.limit.as_ref().and_then(|l| render(self, &l.0).parse::<i64>().ok());
            if self.now < wait_until && limit.is_none_or(|l| n_children as i64 <= l) {
                if let Some(n) = self.nodes.get_mut(retry_id) {
                    n.message = format!("Backoff for {}", humanize_millis(wait));
                    n.wake_at = Some(wait_until);
                }
                self.wake(wait_until);
                return RetryDecision::Wait;
            }
            if let Some(n) = self.nodes.get_mut(retry_id) {
                n.message.clear();
                n.wake_at = None;
            }
        }
        let policy = rs.retry_policy.as_deref().unwrap_or("OnFailure");
        let (on_failed, on_error) = match policy {
            "Always" => (true, true),
            "OnError" | "OnTransientError" => (false, true),
            _ => (true, false),
        };
        if (last.phase == Phase::Failed && !on_failed) || (last.phase == Phase::Error && !on_error) {
            self.set_phase(retry_id, last.phase, Some(last.message.clone()));
            return RetryDecision::Done;
        }
        if let Some(src) = &rs.expression {
            let duration = (last.finished_at.unwrap_or(self.now) - last.started_at) / 1000;
            let extra = vec![
                ("lastRetry.exitCode".to_string(), last.outputs.as_ref().and_then(|o| o.exit_code.clone()).unwrap_or_else(|| "-1".into())),
                ("lastRetry.status".to_string(), last.phase.as_str().to_string()),
                ("lastRetry.duration".to_string(), duration.to_string()),
                ("lastRetry.message".to_string(), last.message.clone()),
            ];
            let view = ScopeView { wf: self, siblings: &siblings, inputs, item: None, extra };
            let rendered = expr::render(src, &view, Unresolved::Keep).unwrap_or_else(|_| src.clone());
            let env = view.env();
            match expr::eval_bool(&rendered, &env) {
                Ok(true) => {}
                Ok(false) => {
                    self.set_phase(retry_id, last.phase, Some("retryStrategy.expression evaluated to false".into()));
                    return RetryDecision::Done;
                }
                Err(e) => {
                    self.set_phase(retry_id, Phase::Error, Some(format!("retryStrategy.expression: {e}")));
                    return RetryDecision::Done;
                }
            }
        }
        let limit = match &rs.limit {
            None => None,
            Some(l) => match render(self, &l.0).parse::<i64>() {
                Ok(l) => Some(l),
                Err(_) => {
                    self.set_phase(retry_id, Phase::Error, Some(format!("retryStrategy.limit {:?} is not an integer", l.0)));
                    return RetryDecision::Done;
                }
            },
        };
        if let Some(l) = limit
            && l + 1 <= n_children as i64
        {
            self.set_phase(retry_id, last.phase, Some("No more retries left".into()));
            return RetryDecision::Done;
        }
        RetryDecision::Continue
    }

    #[allow(clippy::too_many_arguments)]
    fn execute_body(
        &mut self,
        node_name: &str,
        display_name: &str,
        tmpl: &Arc<Template>,
        tscope: &TemplateScope,
        inputs: Vec<(String, String)>,
        boundary: &Option<String>,
        retry_attempt: Option<usize>,
    ) -> Outcome {
        match tmpl.template_type() {
            Some(TemplateType::Steps) => self.execute_steps(node_name, display_name, tmpl, tscope, inputs, boundary),
            Some(TemplateType::Dag) => self.execute_dag(node_name, display_name, tmpl, tscope, inputs, boundary),
            Some(TemplateType::Suspend) => self.execute_suspend(node_name, display_name, tmpl, tscope, inputs, boundary),
            Some(_) => self.execute_leaf(node_name, display_name, tmpl, tscope, inputs, boundary, retry_attempt),
            None => {
                let inv = Invocation {
                    node_name: node_name.to_string(),
                    display_name: display_name.to_string(),
                    target: Target::Inline(tmpl.clone()),
                    scope: tscope.clone(),
                    args: Vec::new(),
                    boundary: boundary.clone(),
                };
                self.error_node(&inv, format!("template {:?} has no body", tmpl.name))
            }
        }
    }

    fn init_node(
        &mut self,
        node_name: &str,
        display_name: &str,
        node_type: NodeType,
        tmpl: &Template,
        tscope: &TemplateScope,
        inputs: &[(String, String)],
        boundary: &Option<String>,
    ) -> (String, bool) {
        let id = node_id(&self.id.name, node_name);
        if self.nodes.get(&id).is_some() {
            return (id, false);
        }
        let phase = if node_type.is_leaf() { Phase::Pending } else { Phase::Running };
        self.create_node(node_name, display_name, node_type, Some(tmpl), tscope, boundary, phase, "");
        if let Some(n) = self.nodes.get_mut(&id) {
            n.inputs = inputs.to_vec();
        }
        (id, true)
    }

    #[allow(clippy::too_many_arguments)]
    fn execute_leaf(
        &mut self,
        node_name: &str,
        display_name: &str,
        tmpl: &Arc<Template>,
        tscope: &TemplateScope,
        inputs: Vec<(String, String)>,
        boundary: &Option<String>,
        retry_attempt: Option<usize>,
    ) -> Outcome {
        let node_type = if tmpl.http.is_some() { NodeType::HTTP } else { NodeType::Pod };
        let (id, created) = self.init_node(node_name, display_name, node_type, tmpl, tscope, &inputs, boundary);
        if !created {
            return Outcome::Node(id);
        }
        if let Some(TemplateType::Unsupported(kind)) = tmpl.template_type() {
            self.set_phase(&id, Phase::Error, Some(format!("template type `{kind}` is not supported by Riposte")));
            return Outcome::Node(id);
        }
        let pod = pod_name(&self.id.name, node_name, &tmpl.name);
        let mut extra = vec![("pod.name".to_string(), pod.clone()), ("node.name".to_string(), node_name.to_string())];
        if let Some(a) = retry_attempt {
            extra.push(("retries".to_string(), a.to_string()));
        }
        let siblings = Siblings::None;
        let view = ScopeView { wf: self, siblings: &siblings, inputs: &inputs, item: None, extra };
        let substituted = substitute_template(tmpl, &view);
        let substituted = match substituted {
            Ok(t) => t,
            Err(msg) => {
                self.set_phase(&id, Phase::Error, Some(msg));
                return Outcome::Node(id);
            }
        };
        let deadline = leaf_deadline(&substituted).map(|ms| self.now + ms);
        let output_paths: Vec<(String, String)> = substituted
            .outputs
            .parameters
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.value_from.as_ref()?.path.clone()?)))
            .collect();
        if let Some(n) = self.nodes.get_mut(&id) {
            n.pod_name = Some(pod.clone());
        }
        self.pending.insert(id.clone(), Pending { outputs: substituted.outputs.parameters.clone() });
        self.commands.push(Command::Execute(Box::new(ExecuteNode {
            node_id: id.clone(),
            node_name: node_name.to_string(),
            pod_name: pod,
            workflow_name: self.id.name.clone(),
            namespace: self.id.namespace.clone(),
            template: Arc::new(substituted),
            deadline,
            output_paths,
        })));
        Outcome::Node(id)
    }

    fn execute_suspend(
        &mut self,
        node_name: &str,
        display_name: &str,
        tmpl: &Arc<Template>,
        tscope: &TemplateScope,
        inputs: Vec<(String, String)>,
        boundary: &Option<String>,
    ) -> Outcome {
        let (id, created) = self.init_node(node_name, display_name, NodeType::Suspend, tmpl, tscope, &inputs, boundary);
        if created {
            self.pending.insert(id.clone(), Pending { outputs: tmpl.outputs.parameters.clone() });
            let siblings = Siblings::None;
            let view = ScopeView { wf: self, siblings: &siblings, inputs: &inputs, item: None, extra: Vec::new() };
            let duration = tmpl
                .suspend
                .as_ref()
                .and_then(|s| s.duration.as_ref())
                .map(|d| expr::render(&d.0, &view, Unresolved::Keep).unwrap_or_else(|_| d.0.clone()));
            if let Some(d) = duration {
                match expr::time::parse_duration_millis(&d) {
                    Some(ms) => {
                        let at = self.now + ms;
                        if let Some(n) = self.nodes.get_mut(&id) {
                            n.wake_at = Some(at);
                        }
                        self.wake(at);
                    }
                    None => {
                        self.pending.remove(&id);
                        self.set_phase(&id, Phase::Error, Some(format!("suspend duration {d:?} is not a duration like \"30s\"")));
                        return Outcome::Node(id);
                    }
                }
            }
        }
        let wake_at = self.nodes.get(&id).and_then(|n| if n.phase.fulfilled() { None } else { n.wake_at });
        if let Some(at) = wake_at
            && self.now >= at
        {
            self.resume_suspend(&id, &BTreeMap::new());
        }
        Outcome::Node(id)
    }

    // ---------------------------------------------------------------- steps

    fn execute_steps(
        &mut self,
        node_name: &str,
        display_name: &str,
        tmpl: &Arc<Template>,
        tscope: &TemplateScope,
        inputs: Vec<(String, String)>,
        boundary: &Option<String>,
    ) -> Outcome {
        let (id, _) = self.init_node(node_name, display_name, NodeType::Steps, tmpl, tscope, &inputs, boundary);
        let steps = tmpl.steps.clone().unwrap_or_default();
        let mut groups = BTreeMap::new();
        for (g, group) in steps.iter().enumerate() {
            for s in group {
                groups.entry(s.name.clone()).or_insert(g);
            }
        }
        let siblings = Siblings::Steps { node_name: node_name.to_string(), groups };
        for (i, group) in steps.iter().enumerate() {
            let sg_name = format!("{node_name}[{i}]");
            let sg_id = node_id(&self.id.name, &sg_name);
            if self.nodes.get(&sg_id).is_none() {
                if self.blocked_by_shutdown() {
                    let msg = self.shutdown.as_ref().map(Shutdown::message).unwrap_or_default();
                    self.set_phase(&id, Phase::Failed, Some(msg));
                    return Outcome::Node(id);
                }
                self.create_node(&sg_name, &format!("[{i}]"), NodeType::StepGroup, None, tscope, &Some(id.clone()), Phase::Running, "");
                if i == 0 {
                    self.add_child(&id, &sg_id);
                } else {
                    let prev = node_id(&self.id.name, &format!("{node_name}[{}]", i - 1));
                    let prev_children = self.nodes.get(&prev).map(|n| n.children.clone()).unwrap_or_default();
                    if prev_children.is_empty() {
                        self.add_child(&prev, &sg_id);
                    }
                    for c in prev_children {
                        for o in self.outbound_of(&c) {
                            self.add_child(&o, &sg_id);
                        }
                    }
                }
            }
            self.execute_step_group(group, &sg_name, &sg_id, &id, tscope, &inputs, &siblings);
            let Some(sg) = self.nodes.get(&sg_id) else { return Outcome::Node(id) };
            if !sg.phase.fulfilled() {
                return Outcome::Node(id);
            }
            if !successful(sg.phase) {
                let msg = sg.message.clone();
                self.update_outbound_steps(&id, node_name, steps.len());
                self.set_phase(&id, Phase::Failed, Some(msg));
                return Outcome::Node(id);
            }
        }
        self.update_outbound_steps(&id, node_name, steps.len());
        self.complete_with_outputs(&id, tmpl, &inputs, &siblings);
        Outcome::Node(id)
    }

    /// Sets a steps/DAG node's outputs from its scope and marks it Succeeded (or Error when an
    /// output cannot be resolved).
    fn complete_with_outputs(&mut self, id: &str, tmpl: &Template, inputs: &[(String, String)], siblings: &Siblings) {
        let view = ScopeView { wf: self, siblings, inputs, item: None, extra: Vec::new() };
        let mut out = NodeOutputs::default();
        let mut error = None;
        for p in &tmpl.outputs.parameters {
            let Some(vf) = &p.value_from else {
                if let Some(v) = &p.value {
                    out.parameters.push((p.name.clone(), expr::render(&v.0, &view, Unresolved::Keep).unwrap_or_else(|_| v.0.clone())));
                }
                continue;
            };
            let value = if let Some(src) = &vf.parameter {
                match expr::render(src, &view, Unresolved::Fail) {
                    Ok(v) => Some(v),
                    Err(_) => vf.default.as_ref().map(|d| d.0.clone()),
                }
            } else if let Some(src) = &vf.expression {
                let env = view.env();
                match expr::parse(src, expr::Dialect::Expr).and_then(|a| expr::eval(&a, &env)) {
                    Ok(Value::Null) => vf.default.as_ref().map(|d| d.0.clone()),
                    Ok(v) => Some(expr::to_template_string(&v)),
                    Err(e) => {
                        error = Some(format!("output parameter {:?}: {e}", p.name));
                        None
                    }
                }
            } else {
                vf.default.as_ref().map(|d| d.0.clone())
            };
            match value {
                Some(v) => out.parameters.push((p.name.clone(), v)),
                None if error.is_none() => error = Some(format!("unable to resolve output parameter {:?}", p.name)),
                None => {}
            }
        }
        self.set_global_outputs(&tmpl.outputs.parameters, &out);
        if let Some(n) = self.nodes.get_mut(id) {
            n.outputs = if out.is_empty() { None } else { Some(out) };
        }
        match error {
            Some(e) => self.set_phase(id, Phase::Error, Some(e)),
            None => self.set_phase(id, Phase::Succeeded, None),
        }
    }

    /// Argo's `getOutboundNodes`: where a following node attaches.
    fn outbound_of(&self, id: &str) -> Vec<String> {
        let Some(n) = self.nodes.get(id) else { return Vec::new() };
        match n.node_type {
            NodeType::Pod | NodeType::Skipped | NodeType::Suspend | NodeType::HTTP => vec![id.to_string()],
            NodeType::Retry => match n.children.last() {
                Some(last) => self.outbound_of(last),
                None => vec![id.to_string()],
            },
            NodeType::TaskGroup => {
                let out: Vec<String> = n.children.iter().flat_map(|c| self.outbound_of(c)).collect();
                if out.is_empty() { vec![id.to_string()] } else { out }
            }
            _ => {
                if n.outbound_nodes.is_empty() { vec![id.to_string()] } else { n.outbound_nodes.clone() }
            }
        }
    }

    fn update_outbound_steps(&mut self, id: &str, node_name: &str, n_groups: usize) {
        let mut outbound = Vec::new();
        for i in (0..n_groups).rev() {
            if let Some(sg) = self.node_by_name(&format!("{node_name}[{i}]")) {
                for c in sg.children.clone() {
                    outbound.extend(self.outbound_of(&c));
                }
                break;
            }
        }
        if let Some(n) = self.nodes.get_mut(id) {
            n.outbound_nodes = outbound;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn execute_step_group(
        &mut self,
        group: &[WorkflowStep],
        sg_name: &str,
        sg_id: &str,
        boundary_id: &str,
        tscope: &TemplateScope,
        inputs: &[(String, String)],
        siblings: &Siblings,
    ) {
        if self.nodes.get(sg_id).is_some_and(|n| n.phase.fulfilled()) {
            return;
        }
        let boundary = Some(boundary_id.to_string());
        let mut children: Vec<(String, Option<ContinueOn>)> = Vec::new();
        let mut not_started = false;
        for step in group {
            let base = format!("{sg_name}.{}", step.name);
            let items = match self.expand_items(step, inputs, siblings) {
                Ok(items) => items,
                Err(msg) => {
                    self.set_phase(sg_id, Phase::Error, Some(msg));
                    return;
                }
            };
            let expanded: Vec<(String, String, Option<Value>)> = match items {
                None => vec![(base.clone(), step.name.clone(), None)],
                Some(items) if items.is_empty() => {
                    let id = node_id(&self.id.name, &base);
                    if self.nodes.get(&id).is_none() {
                        self.create_node(&base, &step.name, NodeType::Skipped, None, tscope, &boundary, Phase::Skipped, "Skipped, empty params");
                    }
                    self.add_child(sg_id, &id);
                    children.push((id, step.continue_on.clone()));
                    continue;
                }
                Some(items) => items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| {
                        let label = item_label(i, &item);
                        (format!("{base}{label}"), format!("{}{label}", step.name), Some(item))
                    })
                    .collect(),
            };
            for (child_name, display, item) in expanded {
                match self.run_step(step, &child_name, &display, item.as_ref(), tscope, inputs, siblings, &boundary) {
                    StepRun::Node(id) => {
                        self.add_child(sg_id, &id);
                        children.push((id, step.continue_on.clone()));
                    }
                    StepRun::NotStarted => not_started = true,
                    StepRun::Errored(id) => {
                        self.add_child(sg_id, &id);
                        self.set_phase(sg_id, Phase::Error, Some(format!("child '{id}' errored")));
                        return;
                    }
                }
            }
        }
        if not_started {
            if self.blocked_by_shutdown() && children.iter().all(|(c, _)| self.nodes.get(c).is_some_and(|n| n.phase.fulfilled())) {
                let msg = self.shutdown.as_ref().map(Shutdown::message).unwrap_or_default();
                self.set_phase(sg_id, Phase::Failed, Some(msg));
            }
            return;
        }
        for (c, _) in &children {
            if !self.step_fulfilled(c) {
                return;
            }
        }
        for (c, continue_on) in &children {
            let phase = self.nodes.get(c).map(|n| n.phase).unwrap_or(Phase::Error);
            if !successful(phase) && !continues_on(continue_on, phase) {
                self.set_phase(sg_id, Phase::Failed, Some(format!("child '{c}' failed")));
                return;
            }
        }
        self.set_phase(sg_id, Phase::Succeeded, None);
    }

    /// A step or task is done when its node is fulfilled and so is its exit hook, if any.
    fn step_fulfilled(&self, id: &str) -> bool {
        let Some(n) = self.nodes.get(id) else { return false };
        if !n.phase.fulfilled() {
            return false;
        }
        let exit = node_id(&self.id.name, &format!("{}.onExit", n.name));
        match self.nodes.get(&exit) {
            Some(e) => e.phase.fulfilled(),
            None => !self.pending_exit_hooks.contains(id),
        }
    }

    /// Runs one (possibly expanded) step or task: `when`, the template, and its exit hook.
    #[allow(clippy::too_many_arguments)]
    fn run_step(
        &mut self,
        step: &WorkflowStep,
        child_name: &str,
        display: &str,
        item: Option<&Value>,
        tscope: &TemplateScope,
        inputs: &[(String, String)],
        siblings: &Siblings,
        boundary: &Option<String>,
    ) -> StepRun {
        let id = node_id(&self.id.name, child_name);
        if let Some(n) = self.nodes.get(&id)
            && n.phase.fulfilled()
        {
            self.run_exit_hook(step, &id, tscope, inputs, siblings, boundary);
            return StepRun::Node(id);
        }
        if self.nodes.get(&id).is_none() {
            if let Some(when) = &step.when {
                let view = ScopeView { wf: self, siblings, inputs, item, extra: Vec::new() };
                let rendered = expr::render(when, &view, Unresolved::Keep);
                let decision = rendered.and_then(|w| {
                    let trimmed = w.trim().to_string();
                    expr::eval_when(&trimmed).map(|b| (b, trimmed))
                });
                match decision {
                    Ok((true, _)) => {}
                    Ok((false, w)) => {
                        self.create_node(child_name, display, NodeType::Skipped, None, tscope, boundary, Phase::Skipped, &format!("when '{w}' evaluated false"));
                        self.set_skipped_output_defaults(&id, step, tscope);
                        return StepRun::Node(id);
                    }
                    Err(e) => {
                        self.create_node(child_name, display, NodeType::Skipped, None, tscope, boundary, Phase::Error, &format!("invalid 'when' expression {when:?}: {e}"));
                        return StepRun::Errored(id);
                    }
                }
            }
        }
        let args = {
            let view = ScopeView { wf: self, siblings, inputs, item, extra: Vec::new() };
            let mut args = Vec::new();
            for p in &step.arguments.parameters {
                let raw = p.value.as_ref().map(|v| v.0.clone()).unwrap_or_default();
                match expr::render(&raw, &view, Unresolved::Keep) {
                    Ok(v) => args.push((p.name.clone(), v)),
                    Err(e) => return self.step_error(child_name, display, tscope, boundary, format!("argument {:?}: {e}", p.name)),
                }
            }
            args
        };
        let target = match (&step.template, item) {
            (Some(t), _) if t.contains("{{") => {
                let view = ScopeView { wf: self, siblings, inputs, item, extra: Vec::new() };
                Target::Name(expr::render(t, &view, Unresolved::Keep).unwrap_or_else(|_| t.clone()))
            }
            _ => target_of(&step.template, &step.template_ref, &step.inline),
        };
        let out = self.execute_template(Invocation {
            node_name: child_name.to_string(),
            display_name: display.to_string(),
            target,
            scope: tscope.clone(),
            args,
            boundary: boundary.clone(),
        });
        match out {
            Outcome::NotStarted => StepRun::NotStarted,
            Outcome::Node(id) => {
                if let Some(r) = &step.template_ref
                    && let Some(n) = self.nodes.get_mut(&id)
                    && n.template_ref.is_none()
                {
                    n.template_ref = Some(r.clone());
                }
                if self.nodes.get(&id).is_some_and(|n| n.phase.fulfilled()) {
                    self.run_exit_hook(step, &id, tscope, inputs, siblings, boundary);
                }
                StepRun::Node(id)
            }
        }
    }

    fn step_error(&mut self, name: &str, display: &str, tscope: &TemplateScope, boundary: &Option<String>, msg: String) -> StepRun {
        let id = node_id(&self.id.name, name);
        if self.nodes.get(&id).is_none() {
            self.create_node(name, display, NodeType::Skipped, None, tscope, boundary, Phase::Error, &msg);
        }
        StepRun::Errored(id)
    }

    /// A skipped step's output parameters that declare `valueFrom.default` still have a value.
    fn set_skipped_output_defaults(&mut self, id: &str, step: &WorkflowStep, tscope: &TemplateScope) {
        let target = target_of(&step.template, &step.template_ref, &step.inline);
        let Ok((tmpl, _)) = self.resolve(&target, tscope) else { return };
        let params: Vec<(String, String)> = tmpl
            .outputs
            .parameters
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.value_from.as_ref()?.default.as_ref()?.0.clone())))
            .collect();
        if !params.is_empty()
            && let Some(n) = self.nodes.get_mut(id)
        {
            n.outputs = Some(NodeOutputs { parameters: params, ..Default::default() });
        }
    }

    /// Step/task-level `onExit` or `hooks.exit`, run once the node is fulfilled.
    fn run_exit_hook(
        &mut self,
        step: &WorkflowStep,
        parent_id: &str,
        tscope: &TemplateScope,
        inputs: &[(String, String)],
        siblings: &Siblings,
        boundary: &Option<String>,
    ) {
        let (target, hook_args) = if let Some(h) = step.hooks.get("exit") {
            (target_of(&h.template, &h.template_ref, &None), h.arguments.clone())
        } else if let Some(t) = &step.on_exit {
            (Target::Name(t.clone()), Arguments::default())
        } else {
            return;
        };
        let Some(parent) = self.nodes.get(parent_id) else { return };
        let name = format!("{}.onExit", parent.name);
        let args = {
            let view = ScopeView { wf: self, siblings, inputs, item: None, extra: Vec::new() };
            hook_args
                .parameters
                .iter()
                .map(|p| {
                    let raw = p.value.as_ref().map(|v| v.0.clone()).unwrap_or_default();
                    (p.name.clone(), expr::render(&raw, &view, Unresolved::Keep).unwrap_or(raw))
                })
                .collect()
        };
        self.pending_exit_hooks.insert(parent_id.to_string());
        let was = self.in_exit_handler;
        self.in_exit_handler = true;
        let out = self.execute_template(Invocation {
            node_name: name.clone(),
            display_name: name,
            target,
            scope: tscope.clone(),
            args,
            boundary: boundary.clone(),
        });
        self.in_exit_handler = was;
        if let Outcome::Node(exit_id) = out {
            self.add_child(parent_id, &exit_id);
            self.pending_exit_hooks.remove(parent_id);
        }
    }

    /// `withItems`, `withParam` or `withSequence`, rendered with the scope; `None` for no loop.
    fn expand_items(&self, step: &WorkflowStep, inputs: &[(String, String)], siblings: &Siblings) -> Result<Option<Vec<Value>>, String> {
        let view = ScopeView { wf: self, siblings, inputs, item: None, extra: Vec::new() };
        let render = |s: &str| expr::render(s, &view, Unresolved::Keep).map_err(|e| e.to_string());
        if let Some(items) = &step.with_items {
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                out.push(render_value(it, &render)?);
            }
            return Ok(Some(out));
        }
        if let Some(p) = &step.with_param {
            let s = render(p)?;
            let v: Value = serde_json::from_str(s.trim())
                .map_err(|_| format!("withParam value could not be parsed as a JSON list: {}", s.trim()))?;
            return match v {
                Value::Array(a) => Ok(Some(a)),
                _ => Err(format!("withParam value could not be parsed as a JSON list: {}", s.trim())),
            };
        }
        if let Some(seq) = &step.with_sequence {
            let num = |v: &Option<spec::AnyString>, what: &str| -> Result<Option<i64>, String> {
                match v {
                    None => Ok(None),
                    Some(s) => {
                        let r = render(&s.0)?;
                        r.trim().parse::<i64>().map(Some).map_err(|_| format!("withSequence.{what} {r:?} is not an integer"))
                    }
                }
            };
            let (count, start, end) = (num(&seq.count, "count")?, num(&seq.start, "start")?, num(&seq.end, "end")?);
            let start = start.unwrap_or(0);
            let values: Vec<i64> = match (count, end) {
                (Some(_), Some(_)) => return Err("withSequence: use either count or end, not both".into()),
                (Some(c), None) => (start..start + c).collect(),
                (None, Some(e)) if e >= start => (start..=e).collect(),
                (None, Some(e)) => (e..=start).rev().collect(),
                (None, None) => return Err("withSequence needs count or end".into()),
            };
            return Ok(Some(values.into_iter().map(|n| Value::String(format_sequence(seq.format.as_deref(), n))).collect()));
        }
        Ok(None)
    }

    // ---------------------------------------------------------------- DAG

    fn execute_dag(
        &mut self,
        node_name: &str,
        display_name: &str,
        tmpl: &Arc<Template>,
        tscope: &TemplateScope,
        inputs: Vec<(String, String)>,
        boundary: &Option<String>,
    ) -> Outcome {
        let (id, _) = self.init_node(node_name, display_name, NodeType::DAG, tmpl, tscope, &inputs, boundary);
        let Some(dag) = &tmpl.dag else { return Outcome::Node(id) };
        let siblings = Siblings::Dag { node_name: node_name.to_string(), tasks: dag.tasks.iter().map(|t| t.name.clone()).collect() };
        let index: HashMap<&str, usize> = dag.tasks.iter().enumerate().map(|(i, t)| (t.name.as_str(), i)).collect();
        let mut deps: Vec<Option<expr::Depends>> = Vec::with_capacity(dag.tasks.len());
        for t in &dag.tasks {
            let d = match &t.depends {
                Some(src) => match expr::parse_depends(src) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.set_phase(&id, Phase::Error, Some(format!("task {:?}: invalid depends {src:?}: {e}", t.name)));
                        return Outcome::Node(id);
                    }
                },
                None => expr::Depends::from_dependencies(&t.dependencies),
            };
            deps.push(d);
        }
        // Targets: given, or every task no other task depends on.
        let targets: Vec<usize> = match &dag.target {
            Some(t) => {
                let view = ScopeView { wf: self, siblings: &siblings, inputs: &inputs, item: None, extra: Vec::new() };
                let t = expr::render(t, &view, Unresolved::Keep).unwrap_or_else(|_| t.clone());
                let mut out = Vec::new();
                for name in t.split_whitespace() {
                    match index.get(name) {
                        Some(i) => out.push(*i),
                        None => {
                            self.set_phase(&id, Phase::Error, Some(format!("target {name:?} is not a task of this DAG")));
                            return Outcome::Node(id);
                        }
                    }
                }
                out
            }
            None => {
                let mut depended = vec![false; dag.tasks.len()];
                for d in deps.iter().flatten() {
                    for t in d.tasks() {
                        if let Some(i) = index.get(t) {
                            depended[*i] = true;
                        }
                    }
                }
                (0..dag.tasks.len()).filter(|i| !depended[*i]).collect()
            }
        };
        let order = match dag_order(&dag.tasks, &deps, &index, &targets) {
            Ok(o) => o,
            Err(e) => {
                self.set_phase(&id, Phase::Error, Some(e));
                return Outcome::Node(id);
            }
        };
        let fail_fast = dag.fail_fast.or(tmpl.fail_fast).unwrap_or(true);
        for &i in &order {
            self.execute_dag_task(&dag.tasks, i, &deps, &index, node_name, &id, tscope, &inputs, &siblings);
        }
        if self.nodes.get(&id).is_some_and(|n| n.phase.fulfilled()) {
            return Outcome::Node(id);
        }
        let phase = self.assess_dag(&id, &dag.tasks, &targets, node_name, fail_fast);
        match phase {
            Phase::Running => {}
            Phase::Succeeded => {
                self.dag_outbound(&id, node_name, &dag.tasks, &targets);
                self.complete_with_outputs(&id, tmpl, &inputs, &siblings);
            }
            other => {
                self.dag_outbound(&id, node_name, &dag.tasks, &targets);
                self.set_phase(&id, other, None);
            }
        }
        Outcome::Node(id)
    }

    fn dag_outbound(&mut self, id: &str, node_name: &str, tasks: &[DagTask], targets: &[usize]) {
        let mut outbound = Vec::new();
        for &t in targets {
            let tid = node_id(&self.id.name, &format!("{node_name}.{}", tasks[t].name));
            if self.nodes.get(&tid).is_some() {
                outbound.extend(self.outbound_of(&tid));
            }
        }
        if let Some(n) = self.nodes.get_mut(id) {
            n.outbound_nodes = outbound;
        }
    }

    /// Argo's `assessDAGPhase`: a breadth-first walk from the DAG node's children carrying the
    /// phase of the last completed node on each branch, so that an omitted or skipped target
    /// inherits a failure above it.
    fn assess_dag(&self, dag_id: &str, tasks: &[DagTask], targets: &[usize], dag_name: &str, fail_fast: bool) -> Phase {
        let target_ids: HashMap<String, usize> =
            targets.iter().map(|&t| (node_id(&self.id.name, &format!("{dag_name}.{}", tasks[t].name)), t)).collect();
        let mut target_phase: HashMap<usize, Phase> = HashMap::new();
        // Unique per (node, branch phase), so a node reached from a failed branch is looked at
        // again even if a successful branch reached it first.
        let mut seen: HashSet<(String, Phase)> = HashSet::new();
        let mut queue: std::collections::VecDeque<(String, Phase)> = std::collections::VecDeque::new();
        let push = |queue: &mut std::collections::VecDeque<(String, Phase)>, seen: &mut HashSet<(String, Phase)>, ids: &[String], p: Phase| {
            for id in ids {
                if seen.insert((id.clone(), p)) {
                    queue.push_back((id.clone(), p));
                }
            }
        };
        let Some(dag) = self.nodes.get(dag_id) else { return Phase::Running };
        push(&mut queue, &mut seen, &dag.children, Phase::Succeeded);
        while let Some((id, mut branch)) = queue.pop_front() {
            let Some(n) = self.nodes.get(&id) else { continue };
            if !n.phase.fulfilled() {
                return Phase::Running;
            }
            if n.phase.completed() {
                branch = n.phase;
            }
            if let Some(&t) = target_ids.get(&id) {
                let prev = target_phase.get(&t).copied();
                if !prev.is_some_and(Phase::failed_or_error) {
                    target_phase.insert(t, branch);
                }
            }
            if n.node_type == NodeType::Retry {
                if let Some(last) = n.children.last().and_then(|c| self.nodes.get(c)) {
                    push(&mut queue, &mut seen, &last.children, branch);
                }
            } else {
                push(&mut queue, &mut seen, &n.children, branch);
            }
        }
        let mut result = Phase::Succeeded;
        for &t in targets {
            match target_phase.get(&t) {
                None => {
                    if self.blocked_by_shutdown() {
                        return Phase::Failed;
                    }
                    result = Phase::Running;
                    if !fail_fast {
                        break;
                    }
                }
                Some(p) if p.failed_or_error() => {
                    if continues_on(&tasks[t].continue_on, *p) {
                        continue;
                    }
                    result = *p;
                    if fail_fast {
                        break;
                    }
                }
                Some(_) => {}
            }
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    fn execute_dag_task(
        &mut self,
        tasks: &[DagTask],
        i: usize,
        deps: &[Option<expr::Depends>],
        index: &HashMap<&str, usize>,
        dag_name: &str,
        dag_id: &str,
        tscope: &TemplateScope,
        inputs: &[(String, String)],
        siblings: &Siblings,
    ) {
        let task = &tasks[i];
        let task_name = format!("{dag_name}.{}", task.name);
        let task_id = node_id(&self.id.name, &task_name);
        let step = task.as_step();
        let boundary = Some(dag_id.to_string());
        if let Some(n) = self.nodes.get(&task_id) {
            if n.phase.fulfilled() {
                if n.node_type != NodeType::TaskGroup {
                    self.run_exit_hook(&step, &task_id, tscope, inputs, siblings, &boundary);
                }
                return;
            }
            if n.node_type == NodeType::TaskGroup {
                self.execute_task_group(task, &step, &task_name, &task_id, tscope, inputs, siblings, &boundary);
                return;
            }
        }
        // Dependencies must be done (including their exit hooks) before anything is decided.
        let dep_names: Vec<&str> = deps[i].as_ref().map(|d| d.tasks()).unwrap_or_default();
        let mut dep_ids = Vec::new();
        for d in &dep_names {
            let did = node_id(&self.id.name, &format!("{dag_name}.{d}"));
            if !self.step_fulfilled(&did) {
                return;
            }
            dep_ids.push(did);
        }
        let exists = self.nodes.get(&task_id).is_some();
        if !exists {
            if let Some(d) = &deps[i] {
                let test = |name: &str, r: expr::TaskResult| -> bool {
                    let Some(j) = index.get(name) else { return false };
                    let Some(n) = self.node_by_name(&format!("{dag_name}.{name}")) else { return false };
                    let co = &tasks[*j].continue_on;
                    task_result(self, n, r, co)
                };
                let ok = match &task.depends {
                    Some(_) => d.eval(&test),
                    None => d.eval(&test),
                };
                if !ok {
                    self.create_node(&task_name, &task.name, NodeType::Skipped, None, tscope, &boundary, Phase::Omitted, "omitted: depends condition not met");
                    self.link_task(&task_id, dag_id, &dep_ids);
                    return;
                }
            }
        }
        let items = match self.expand_items(&step, inputs, siblings) {
            Ok(items) => items,
            Err(msg) => {
                if !exists {
                    self.create_node(&task_name, &task.name, NodeType::Skipped, None, tscope, &boundary, Phase::Error, &msg);
                    self.link_task(&task_id, dag_id, &dep_ids);
                }
                return;
            }
        };
        match items {
            None => {
                if let StepRun::Node(id) | StepRun::Errored(id) =
                    self.run_step(&step, &task_name, &task.name, None, tscope, inputs, siblings, &boundary)
                {
                    self.link_task(&id, dag_id, &dep_ids);
                }
            }
            Some(items) if items.is_empty() => {
                if !exists {
                    self.create_node(&task_name, &task.name, NodeType::Skipped, None, tscope, &boundary, Phase::Skipped, "Skipped, empty params");
                    self.link_task(&task_id, dag_id, &dep_ids);
                }
            }
            Some(_) => {
                if !exists {
                    self.create_node(&task_name, &task.name, NodeType::TaskGroup, None, tscope, &boundary, Phase::Running, "");
                    self.link_task(&task_id, dag_id, &dep_ids);
                }
                self.execute_task_group(task, &step, &task_name, &task_id, tscope, inputs, siblings, &boundary);
            }
        }
    }

    fn link_task(&mut self, task_id: &str, dag_id: &str, dep_ids: &[String]) {
        if dep_ids.is_empty() {
            self.add_child(dag_id, task_id);
            return;
        }
        for d in dep_ids {
            for o in self.outbound_of(d) {
                self.add_child(&o, task_id);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn execute_task_group(
        &mut self,
        task: &DagTask,
        step: &WorkflowStep,
        group_name: &str,
        group_id: &str,
        tscope: &TemplateScope,
        inputs: &[(String, String)],
        siblings: &Siblings,
        boundary: &Option<String>,
    ) {
        let Ok(Some(items)) = self.expand_items(step, inputs, siblings) else { return };
        let mut children = Vec::new();
        let mut not_started = false;
        for (i, item) in items.iter().enumerate() {
            let label = item_label(i, item);
            let name = format!("{group_name}{label}");
            let display = format!("{}{label}", task.name);
            match self.run_step(step, &name, &display, Some(item), tscope, inputs, siblings, boundary) {
                StepRun::Node(id) | StepRun::Errored(id) => {
                    self.add_child(group_id, &id);
                    children.push(id);
                }
                StepRun::NotStarted => not_started = true,
            }
        }
        if not_started && !self.blocked_by_shutdown() {
            return;
        }
        if children.iter().any(|c| !self.step_fulfilled(c)) {
            return;
        }
        let mut phase = Phase::Succeeded;
        if not_started {
            phase = Phase::Failed;
        }
        for c in &children {
            let p = self.nodes.get(c).map(|n| n.phase).unwrap_or(Phase::Error);
            if p.failed_or_error() {
                phase = p;
            }
        }
        self.set_phase(group_id, phase, None);
    }
}

/// Whether a dependency ended with `r`, for `depends`.
fn task_result(wf: &Workflow, n: &Node, r: expr::TaskResult, continue_on: &Option<ContinueOn>) -> bool {
    use expr::TaskResult as R;
    let phase = n.phase;
    let children = || n.children.iter().filter_map(|c| wf.nodes.get(c)).filter(|c| c.name.starts_with(&format!("{}(", n.name)));
    match r {
        R::Succeeded => phase == Phase::Succeeded,
        R::Skipped => phase == Phase::Skipped,
        R::ContinuedOn => continues_on(continue_on, phase),
        R::Failed => phase == Phase::Failed,
        R::Errored => phase == Phase::Error,
        R::Omitted => phase == Phase::Omitted,
        R::Daemoned => false,
        R::AnySucceeded => n.node_type == NodeType::TaskGroup && children().any(|c| c.phase == Phase::Succeeded),
        R::AllFailed => {
            n.node_type == NodeType::TaskGroup && {
                let mut it = children().peekable();
                it.peek().is_some() && it.all(|c| c.phase == Phase::Failed)
            }
        }
    }
}

/// The tasks needed for `targets` (their ancestors), in a topological order (Kahn).
fn dag_order(tasks: &[DagTask], deps: &[Option<expr::Depends>], index: &HashMap<&str, usize>, targets: &[usize]) -> Result<Vec<usize>, String> {
    let n = tasks.len();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        if let Some(d) = d {
            for t in d.tasks() {
                match index.get(t) {
                    Some(j) => parents[i].push(*j),
                    None => return Err(format!("task {:?} depends on unknown task {t:?}", tasks[i].name)),
                }
            }
        }
    }
    let mut needed = vec![false; n];
    let mut stack: Vec<usize> = targets.to_vec();
    while let Some(i) = stack.pop() {
        if !needed[i] {
            needed[i] = true;
            stack.extend(parents[i].iter().copied());
        }
    }
    let mut indegree = vec![0usize; n];
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
    for i in 0..n {
        if !needed[i] {
            continue;
        }
        for &p in &parents[i] {
            indegree[i] += 1;
            children[p].push(i);
        }
    }
    let mut queue: std::collections::VecDeque<usize> = (0..n).filter(|i| needed[*i] && indegree[*i] == 0).collect();
    let mut order = Vec::new();
    while let Some(i) = queue.pop_front() {
        order.push(i);
        for &c in &children[i] {
            indegree[c] -= 1;
            if indegree[c] == 0 {
                queue.push_back(c);
            }
        }
    }
    if order.len() != needed.iter().filter(|x| **x).count() {
        return Err("dependency cycle in DAG".into());
    }
    Ok(order)
}

#[derive(Debug)]
enum RetryDecision {
    Done,
    Wait,
    Continue,
}

#[derive(Debug)]
enum StepRun {
    Node(String),
    NotStarted,
    Errored(String),
}

fn humanize_millis(ms: i64) -> String {
    if ms % 1000 == 0 { format!("{}s", ms / 1000) } else { format!("{}ms", ms) }
}

fn render_value(v: &Value, render: &dyn Fn(&str) -> Result<String, String>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) if s.contains("{{") => Value::String(render(s)?),
        Value::Array(a) => Value::Array(a.iter().map(|x| render_value(x, render)).collect::<Result<_, _>>()?),
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                out.insert(k.clone(), render_value(x, render)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Substitutes every string in a leaf template; leftover references to inputs, steps, tasks,
/// items or the workflow are an error, as in Argo.
fn substitute_template(t: &Template, view: &ScopeView) -> Result<Template, String> {
    let raw = serde_json::to_value(t).map_err(|e| format!("internal: template to JSON: {e}"))?;
    let mut unresolved: HashSet<String> = HashSet::new();
    let render = |s: &str| -> Result<String, String> {
        let out = expr::render(s, view, Unresolved::Keep).map_err(|e| e.to_string())?;
        Ok(out)
    };
    let rendered = render_value(&raw, &render)?;
    collect_unresolved(&rendered, &mut unresolved);
    if let Some(u) = unresolved.into_iter().min() {
        return Err(format!("failed to resolve {{{{{u}}}}}"));
    }
    serde_json::from_value(rendered).map_err(|e| format!("template after substitution is invalid: {e}"))
}

fn collect_unresolved(v: &Value, out: &mut HashSet<String>) {
    match v {
        Value::String(s) => {
            for t in expr::tags(s) {
                if ["inputs.", "steps.", "tasks.", "workflow.", "item", "pod.", "retries"].iter().any(|p| t.starts_with(p)) {
                    out.insert(t.to_string());
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_unresolved(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_unresolved(x, out)),
        _ => {}
    }
}

/// A leaf's deadline in milliseconds from `timeout` or `activeDeadlineSeconds`, whichever is shorter.
fn leaf_deadline(t: &Template) -> Option<i64> {
    let a = t.active_deadline_seconds.as_ref().and_then(|s| s.0.parse::<i64>().ok()).map(|s| s * 1000);
    let b = t.timeout.as_deref().and_then(expr::time::parse_duration_millis);
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_sequences() {
        assert_eq!(item_label(0, &serde_json::json!("a")), "(0:a)");
        assert_eq!(item_label(1, &serde_json::json!({"os": "debian", "version": 9.1})), "(1:os:debian,version:9.1)");
        assert_eq!(item_label(2, &serde_json::json!(5)), "(2:5)");
        assert_eq!(format_sequence(Some("test%02d"), 3), "test03");
        assert_eq!(format_sequence(None, 7), "7");
    }
}
