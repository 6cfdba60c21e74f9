//! Re-evaluating the workflow from its root: Argo's operator, without IO.
//!
//! `operate` walks the template tree from the entrypoint the way Argo's `executeTemplate`
//! does: existing fulfilled nodes are returned at once, new nodes are created, leaf nodes turn
//! into `Execute` commands. The walk repeats until it changes nothing, so that nodes which
//! finish instantly (skipped, omitted, errored) unblock their dependents in the same step.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use expr::{Scope, Unresolved};
use serde_json::Value;
use spec::{ContinueOn, RetryStrategy, Template, TemplateRef, TemplateType};

use crate::node::{NodeOutputs, NodeType, Phase, TemplateScope, node_id, pod_name};
use crate::scope::{ScopeView, Siblings};
use crate::{Command, ExecuteNode, Pending, Shutdown, Workflow};

/// The most walks one step may take; only an unbounded retry of an instantly failing node
/// could need more, and it then continues at the next input.
pub(crate) const MAX_WALKS: usize = 1000;

/// The result of trying to run a template at a node name.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// Blocked by parallelism or shutdown; no node exists.
    NotStarted,
    Node(String),
}

/// Which template to run: by name in a scope, by reference, or inline.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Name(String),
    Ref(TemplateRef),
    Inline(Arc<Template>),
}

/// One call of `execute_template`.
#[derive(Debug, Clone)]
pub(crate) struct Invocation {
    pub(crate) node_name: String,
    pub(crate) display_name: String,
    pub(crate) target: Target,
    pub(crate) scope: TemplateScope,
    pub(crate) args: Vec<(String, String)>,
    pub(crate) boundary: Option<String>,
}

pub(crate) fn target_of(
    template: &Option<String>,
    template_ref: &Option<TemplateRef>,
    inline: &Option<Box<Template>>,
) -> Target {
    if let Some(r) = template_ref {
        return Target::Ref(r.clone());
    }
    if let Some(i) = inline {
        return Target::Inline(Arc::new((**i).clone()));
    }
    Target::Name(template.clone().unwrap_or_default())
}

pub(crate) fn continues_on(c: &Option<ContinueOn>, phase: Phase) -> bool {
    match c {
        Some(c) => (phase == Phase::Failed && c.failed) || (phase == Phase::Error && c.error),
        None => false,
    }
}

/// `Succeeded`, `Skipped` (and daemoned, which Riposte does not run) count as success.
pub(crate) fn successful(phase: Phase) -> bool {
    matches!(phase, Phase::Succeeded | Phase::Skipped)
}

impl Workflow {
    pub(crate) fn operate(&mut self) {
        for _ in 0..MAX_WALKS {
            let before = self.mutations;
            self.walk();
            if self.mutations == before || self.is_finished() || self.node_limit_hit.is_some() {
                break;
            }
        }
    }

    pub(crate) fn walk(&mut self) {
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
            Outcome::Node(id) => self
                .nodes
                .get(id)
                .map(|n| n.message.clone())
                .unwrap_or_default(),
            Outcome::NotStarted => self
                .shutdown
                .as_ref()
                .map(Shutdown::message)
                .unwrap_or_default(),
        };
        let status = match main_phase {
            Phase::Error => Phase::Error,
            p if p.failed_or_error() => p,
            _ => Phase::Succeeded,
        };
        let mut final_phase = status;
        let mut final_message = main_message;
        if let Some(Shutdown::Abort(m)) = &self.shutdown {
            final_phase = Phase::Error;
            final_message = m.clone();
        } else if let Some(Shutdown::Stop(m) | Shutdown::Terminate(m)) = &self.shutdown {
            final_phase = Phase::Failed;
            final_message = m.clone();
        } else if let Some(Shutdown::Deadline) = &self.shutdown {
            final_phase = Phase::Failed;
            final_message = "Step exceeded its deadline".into();
        }
        // The workflow-level exit handler runs unless terminated.
        if let Some(on_exit) = self.resource.spec.on_exit.clone()
            && !matches!(
                self.shutdown,
                Some(Shutdown::Terminate(_) | Shutdown::Abort(_))
            )
        {
            self.globals
                .insert("workflow.status".into(), status.as_str().to_string());
            self.globals
                .insert("workflow.failures".into(), self.failures_json());
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
            let Some(exit_node) = self.nodes.get(&exit_id) else {
                return;
            };
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
        self.globals
            .insert("workflow.status".into(), final_phase.as_str().to_string());
        self.finished_at = Some(self.now);
        self.wakeups.clear();
        self.mutations += 1;
    }

    /// `workflow.failures`: the failed nodes as Argo's JSON list.
    pub(crate) fn failures_json(&self) -> String {
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
    pub(crate) fn run_workflow_hooks(&mut self) {
        let hooks: Vec<(String, spec::LifecycleHook)> = self
            .resource
            .spec
            .hooks
            .iter()
            .filter(|(k, _)| k.as_str() != "exit")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, hook) in hooks {
            let name = format!("{}.hooks.{key}", self.id.name);
            if self.node_by_name(&name).is_none() {
                let Some(src) = &hook.expression else {
                    continue;
                };
                let siblings = Siblings::None;
                let view = ScopeView {
                    wf: self,
                    siblings: &siblings,
                    inputs: &[],
                    item: None,
                    extra: Vec::new(),
                };
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
                args: hook
                    .arguments
                    .parameters
                    .iter()
                    .filter_map(|p| Some((p.name.clone(), p.value.as_ref()?.0.clone())))
                    .collect(),
                boundary: None,
            });
        }
    }

    pub(crate) fn resolve(
        &self,
        target: &Target,
        scope: &TemplateScope,
    ) -> Result<(Arc<Template>, TemplateScope), String> {
        match target {
            Target::Inline(t) => Ok((t.clone(), scope.clone())),
            Target::Name(n) => self
                .templates
                .get(&(scope.clone(), n.clone()))
                .map(|t| (t.clone(), scope.clone()))
                .ok_or_else(|| format!("template {n:?} not found")),
            Target::Ref(r) => {
                let s = TemplateScope::Ref {
                    name: r.name.clone(),
                    cluster: r.cluster_scope,
                };
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

    pub(crate) fn retry_strategy(&self, t: &Template) -> Option<RetryStrategy> {
        t.retry_strategy
            .clone()
            .or_else(|| self.resource.spec.retry_strategy.clone())
    }

    /// Argo's `ProcessArgs` for inputs: defaults, then arguments, then enums.
    /// Template-level values and defaults may use workflow variables and expressions.
    pub(crate) fn process_inputs(
        &self,
        t: &Template,
        args: &[(String, String)],
    ) -> Result<Vec<(String, String)>, String> {
        let siblings = Siblings::None;
        let view = ScopeView {
            wf: self,
            siblings: &siblings,
            inputs: &[],
            item: None,
            extra: Vec::new(),
        };
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
                let unresolved = expr::tags(v)
                    .iter()
                    .any(|t| t.starts_with("steps.") || t.starts_with("tasks."));
                if !unresolved {
                    value = Some(v.clone());
                }
            }
            let Some(value) = value else {
                return Err(format!("inputs.parameters.{} was not supplied", p.name));
            };
            if !p.r#enum.is_empty() && !p.r#enum.iter().any(|e| e.0 == value) {
                let allowed: Vec<&str> = p.r#enum.iter().map(|e| e.as_str()).collect();
                return Err(format!(
                    "value '{value}' for inputs.parameters.{} is not one of [{}]",
                    p.name,
                    allowed.join(", ")
                ));
            }
            out.push((p.name.clone(), value));
        }
        Ok(out)
    }

    pub(crate) fn error_node(&mut self, inv: &Invocation, message: String) -> Outcome {
        let id = node_id(&self.id.name, &inv.node_name);
        if self.nodes.get(&id).is_none() {
            self.create_node(
                &inv.node_name,
                &inv.display_name,
                NodeType::Skipped,
                None,
                &inv.scope,
                &inv.boundary,
                Phase::Error,
                &message,
            );
        } else {
            self.set_phase(&id, Phase::Error, Some(message));
        }
        Outcome::Node(id)
    }

    /// Would starting a new node of `t` under `boundary` exceed a parallelism limit?
    pub(crate) fn parallelism_reached(&self, t: &Template, boundary: &Option<String>) -> bool {
        if t.is_leaf()
            && let Some(p) = self.resource.spec.parallelism
            && self.active_pods as i64 >= p
        {
            return true;
        }
        if let Some(b) = boundary
            && let Some(bn) = self.nodes.get(b)
            && let Some(bt) = bn
                .template_name
                .as_ref()
                .and_then(|n| self.templates.get(&(bn.template_scope.clone(), n.clone())))
            && let Some(p) = bt.parallelism
            && *self.active_by_boundary.get(b).unwrap_or(&0) as i64 >= p
        {
            return true;
        }
        false
    }

    pub(crate) fn execute_template(&mut self, inv: Invocation) -> Outcome {
        // Recursion can also grow in breadth (a DAG whose tasks call the DAG): the node limit
        // stops it where the depth limit alone would allow 2^depth nodes.
        if self.nodes.len() >= self.node_limit
            && self
                .nodes
                .get(&node_id(&self.id.name, &inv.node_name))
                .is_none()
        {
            self.node_limit_hit.get_or_insert_with(|| {
                format!(
                    "the workflow reached {} nodes, the most one workflow may have",
                    self.node_limit
                )
            });
            return Outcome::NotStarted;
        }
        if self.stack_depth >= crate::limits::MAX_STACK_DEPTH {
            return self.error_node(
                &inv,
                format!(
                    "Maximum recursion depth exceeded: templates nested more than {} deep",
                    crate::limits::MAX_STACK_DEPTH
                ),
            );
        }
        self.stack_depth += 1;
        let out = self.execute_template_at_depth(inv);
        self.stack_depth -= 1;
        out
    }

    fn execute_template_at_depth(&mut self, inv: Invocation) -> Outcome {
        let id = node_id(&self.id.name, &inv.node_name);
        let existing = self.nodes.get(&id).map(|n| n.phase);
        // Fulfilled nodes never change, and a running leaf changes only through inputs.
        if existing.is_some_and(Phase::fulfilled)
            || self.nodes.get(&id).is_some_and(|n| n.node_type.is_leaf())
        {
            return Outcome::Node(id);
        }
        let (tmpl, tscope) = match self.resolve(&inv.target, &inv.scope) {
            Ok(x) => x,
            Err(msg) => return self.error_node(&inv, msg),
        };
        if existing.is_none()
            && (self.blocked_by_shutdown() || (self.suspended && !self.in_exit_handler))
        {
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
        self.execute_body(
            &inv.node_name,
            &inv.display_name,
            &tmpl,
            &tscope,
            inputs,
            &inv.boundary,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn execute_body(
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
            Some(TemplateType::Steps) => {
                self.execute_steps(node_name, display_name, tmpl, tscope, inputs, boundary)
            }
            Some(TemplateType::Dag) => {
                self.execute_dag(node_name, display_name, tmpl, tscope, inputs, boundary)
            }
            Some(TemplateType::Suspend) => {
                self.execute_suspend(node_name, display_name, tmpl, tscope, inputs, boundary)
            }
            Some(_) => self.execute_leaf(
                node_name,
                display_name,
                tmpl,
                tscope,
                inputs,
                boundary,
                retry_attempt,
            ),
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

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn init_node(
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
        let phase = if node_type.is_leaf() {
            Phase::Pending
        } else {
            Phase::Running
        };
        self.create_node(
            node_name,
            display_name,
            node_type,
            Some(tmpl),
            tscope,
            boundary,
            phase,
            "",
        );
        if let Some(n) = self.nodes.get_mut(&id) {
            n.inputs = inputs.to_vec();
        }
        (id, true)
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn execute_leaf(
        &mut self,
        node_name: &str,
        display_name: &str,
        tmpl: &Arc<Template>,
        tscope: &TemplateScope,
        inputs: Vec<(String, String)>,
        boundary: &Option<String>,
        retry_attempt: Option<usize>,
    ) -> Outcome {
        let node_type = if tmpl.http.is_some() {
            NodeType::HTTP
        } else {
            NodeType::Pod
        };
        let (id, created) = self.init_node(
            node_name,
            display_name,
            node_type,
            tmpl,
            tscope,
            &inputs,
            boundary,
        );
        if !created {
            return Outcome::Node(id);
        }
        if let Some(TemplateType::Unsupported(kind)) = tmpl.template_type() {
            self.set_phase(
                &id,
                Phase::Error,
                Some(format!(
                    "template type `{kind}` is not supported by Riposte"
                )),
            );
            return Outcome::Node(id);
        }
        let pod = pod_name(&self.id.name, node_name, &tmpl.name);
        let mut extra = vec![
            ("pod.name".to_string(), pod.clone()),
            ("node.name".to_string(), node_name.to_string()),
        ];
        if let Some(a) = retry_attempt {
            extra.push(("retries".to_string(), a.to_string()));
        }
        let siblings = Siblings::None;
        let view = ScopeView {
            wf: self,
            siblings: &siblings,
            inputs: &inputs,
            item: None,
            extra,
        };
        let substituted = self.substitute_leaf(tmpl, &view);
        let substituted = match substituted {
            Ok(t) => self.with_pod_defaults(t),
            Err(msg) => {
                self.set_phase(&id, Phase::Error, Some(msg));
                return Outcome::Node(id);
            }
        };
        let deadline = leaf_deadline(&substituted).map(|ms| self.now.saturating_add(ms));
        let output_paths: Vec<(String, String)> = substituted
            .outputs
            .parameters
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.value_from.as_ref()?.path.clone()?)))
            .collect();
        if let Some(n) = self.nodes.get_mut(&id) {
            n.pod_name = Some(pod.clone());
        }
        let execute = Box::new(ExecuteNode {
            node_id: id.clone(),
            node_name: node_name.to_string(),
            pod_name: pod,
            workflow_name: self.id.name.clone(),
            namespace: self.id.namespace.clone(),
            template: substituted.clone(),
            deadline,
            output_paths,
        });
        self.pending.insert(
            id.clone(),
            Pending {
                outputs: substituted.outputs.parameters.clone(),
                execute: Some(execute.clone()),
            },
        );
        self.commands.push(Command::Execute(execute));
        Outcome::Node(id)
    }

    pub(crate) fn execute_suspend(
        &mut self,
        node_name: &str,
        display_name: &str,
        tmpl: &Arc<Template>,
        tscope: &TemplateScope,
        inputs: Vec<(String, String)>,
        boundary: &Option<String>,
    ) -> Outcome {
        let (id, created) = self.init_node(
            node_name,
            display_name,
            NodeType::Suspend,
            tmpl,
            tscope,
            &inputs,
            boundary,
        );
        if created {
            self.pending.insert(
                id.clone(),
                Pending {
                    outputs: tmpl.outputs.parameters.clone(),
                    execute: None,
                },
            );
            let siblings = Siblings::None;
            let view = ScopeView {
                wf: self,
                siblings: &siblings,
                inputs: &inputs,
                item: None,
                extra: Vec::new(),
            };
            let duration = tmpl
                .suspend
                .as_ref()
                .and_then(|s| s.duration.as_ref())
                .map(|d| {
                    expr::render(&d.0, &view, Unresolved::Keep).unwrap_or_else(|_| d.0.clone())
                });
            if let Some(d) = duration {
                match expr::time::parse_duration_millis(&d) {
                    Some(ms) => {
                        let at = self.now.saturating_add(ms);
                        if let Some(n) = self.nodes.get_mut(&id) {
                            n.wake_at = Some(at);
                        }
                        self.wake(at);
                    }
                    None => {
                        self.pending.remove(&id);
                        self.set_phase(
                            &id,
                            Phase::Error,
                            Some(format!(
                                "suspend duration {d:?} is not a duration like \"30s\""
                            )),
                        );
                        return Outcome::Node(id);
                    }
                }
            }
        }
        let wake_at = self
            .nodes
            .get(&id)
            .and_then(|n| if n.phase.fulfilled() { None } else { n.wake_at });
        if let Some(at) = wake_at
            && self.now >= at
        {
            self.resume_suspend(&id, &BTreeMap::new());
        }
        Outcome::Node(id)
    }

    /// Sets a steps/DAG node's outputs from its scope and marks it Succeeded (or Error when an
    /// output cannot be resolved).
    pub(crate) fn complete_with_outputs(
        &mut self,
        id: &str,
        tmpl: &Template,
        inputs: &[(String, String)],
        siblings: &Siblings,
    ) {
        let view = ScopeView {
            wf: self,
            siblings,
            inputs,
            item: None,
            extra: Vec::new(),
        };
        let mut out = NodeOutputs::default();
        let mut error = None;
        for p in &tmpl.outputs.parameters {
            let Some(vf) = &p.value_from else {
                if let Some(v) = &p.value {
                    out.parameters.push((
                        p.name.clone(),
                        expr::render(&v.0, &view, Unresolved::Keep).unwrap_or_else(|_| v.0.clone()),
                    ));
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
                None if error.is_none() => {
                    error = Some(format!("unable to resolve output parameter {:?}", p.name))
                }
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
}

pub(crate) fn render_value(
    v: &Value,
    render: &dyn Fn(&str) -> Result<String, String>,
) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) if s.contains("{{") => Value::String(render(s)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| render_value(x, render))
                .collect::<Result<_, _>>()?,
        ),
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
impl Workflow {
    /// The leaf template with variables substituted; shared as is when it has none.
    /// Argo's workflow-level pod settings (`serviceAccountName`, `nodeSelector`,
    /// `tolerations`, `affinity`, `securityContext`, `priorityClassName`,
    /// `imagePullSecrets`, `volumes`) as defaults of a container/script leaf: the template's
    /// own values win, node selectors merge, volumes are added by name. The host executor
    /// ignores them; the Kubernetes executor puts them in the step's pod.
    fn with_pod_defaults(&self, t: Arc<Template>) -> Arc<Template> {
        const POD_KEYS: [&str; 5] = [
            "tolerations",
            "affinity",
            "securityContext",
            "priorityClassName",
            "imagePullSecrets",
        ];
        let spec = &self.resource.spec;
        let applies = (t.container.is_some() || t.script.is_some())
            && (spec.service_account_name.is_some()
                || !spec.node_selector.is_empty()
                || spec.extra.contains_key("volumes")
                || POD_KEYS.iter().any(|k| spec.extra.contains_key(*k)));
        if !applies {
            return t;
        }
        let mut m = (*t).clone();
        if m.service_account_name.is_none() {
            m.service_account_name = spec.service_account_name.clone();
        }
        for (k, v) in &spec.node_selector {
            m.node_selector
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        for k in POD_KEYS {
            if let (false, Some(v)) = (m.extra.contains_key(k), spec.extra.get(k)) {
                m.extra.insert(k.to_string(), v.clone());
            }
        }
        if let Some(Value::Array(shared)) = spec.extra.get("volumes") {
            let mut volumes = match m.extra.get("volumes") {
                Some(Value::Array(v)) => v.clone(),
                _ => Vec::new(),
            };
            for v in shared {
                if !volumes.iter().any(|x| x.get("name") == v.get("name")) {
                    volumes.push(v.clone());
                }
            }
            m.extra.insert("volumes".to_string(), Value::Array(volumes));
        }
        Arc::new(m)
    }

    fn substitute_leaf(
        &self,
        t: &Arc<Template>,
        view: &ScopeView,
    ) -> Result<Arc<Template>, String> {
        let key = Arc::as_ptr(t) as usize;
        if self.template_tags.get(&key) == Some(&false) {
            return Ok(t.clone());
        }
        substitute_template(t, view).map(Arc::new)
    }
}

pub(crate) fn substitute_template(t: &Template, view: &ScopeView) -> Result<Template, String> {
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
    serde_json::from_value(rendered)
        .map_err(|e| format!("template after substitution is invalid: {e}"))
}

pub(crate) fn collect_unresolved(v: &Value, out: &mut HashSet<String>) {
    match v {
        Value::String(s) => {
            for t in expr::tags(s) {
                if [
                    "inputs.",
                    "steps.",
                    "tasks.",
                    "workflow.",
                    "item",
                    "pod.",
                    "retries",
                ]
                .iter()
                .any(|p| t.starts_with(p))
                {
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
pub(crate) fn leaf_deadline(t: &Template) -> Option<i64> {
    let a = t
        .active_deadline_seconds
        .as_ref()
        .and_then(|s| s.0.parse::<i64>().ok())
        .map(|s| s.saturating_mul(1000));
    let b = t
        .timeout
        .as_deref()
        .and_then(expr::time::parse_duration_millis);
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
