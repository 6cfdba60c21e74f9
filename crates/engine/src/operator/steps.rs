//! `steps` templates: sequential groups of parallel steps, loops, `when`, and exit hooks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use expr::Unresolved;
use serde_json::Value;
use spec::{Arguments, Template, WorkflowStep};

use super::walk::*;
use crate::node::{NodeOutputs, NodeType, Phase, TemplateScope, node_id};
use crate::scope::{ScopeView, Siblings};
use crate::{Shutdown, Workflow};

/// Argo's loop child name suffix: `(i:value)`, maps as sorted `k:v` pairs.
pub(crate) fn item_label(i: usize, item: &Value) -> String {
    let v = match item {
        Value::String(s) => s.clone(),
        Value::Object(m) => {
            let mut parts: Vec<String> = m
                .iter()
                .map(|(k, v)| {
                    format!(
                        "{k}:{}",
                        match v {
                            Value::String(s) => s.clone(),
                            o => o.to_string(),
                        }
                    )
                })
                .collect();
            parts.sort();
            parts.join(",")
        }
        Value::Array(a) => {
            let parts: Vec<String> = a
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    o => o.to_string(),
                })
                .collect();
            format!("[{}]", parts.join(" "))
        }
        other => other.to_string(),
    };
    format!("({i}:{v})")
}

/// Go's `%0Nd`/`%d`/`%x`-style sequence formatting, the subset Argo users write.
pub(crate) fn format_sequence(format: Option<&str>, n: i64) -> String {
    let Some(f) = format else {
        return n.to_string();
    };
    let Some(pos) = f.find('%') else {
        return f.to_string();
    };
    let spec_end = f[pos + 1..]
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| pos + 1 + i);
    let Some(end) = spec_end else {
        return f.to_string();
    };
    let flags = &f[pos + 1..end];
    let width: usize = flags.trim_start_matches('0').parse().unwrap_or(0);
    let zero = flags.starts_with('0');
    let body = match &f[end..=end] {
        "x" => format!("{n:x}"),
        "X" => format!("{n:X}"),
        "o" => format!("{n:o}"),
        _ => n.to_string(),
    };
    let padded = if zero {
        format!("{body:0>width$}")
    } else {
        format!("{body:>width$}")
    };
    format!("{}{}{}", &f[..pos], padded, &f[end + 1..])
}

impl Workflow {
    pub(crate) fn execute_steps(
        &mut self,
        node_name: &str,
        display_name: &str,
        tmpl: &Arc<Template>,
        tscope: &TemplateScope,
        inputs: Vec<(String, String)>,
        boundary: &Option<String>,
    ) -> Outcome {
        let (id, _) = self.init_node(
            node_name,
            display_name,
            NodeType::Steps,
            tmpl,
            tscope,
            &inputs,
            boundary,
        );
        let steps = tmpl.steps.clone().unwrap_or_default();
        let mut groups = BTreeMap::new();
        for (g, group) in steps.iter().enumerate() {
            for s in group {
                groups.entry(s.name.clone()).or_insert(g);
            }
        }
        let siblings = Siblings::Steps {
            node_name: node_name.to_string(),
            groups,
        };
        for (i, group) in steps.iter().enumerate() {
            let sg_name = format!("{node_name}[{i}]");
            let sg_id = node_id(&self.id.name, &sg_name);
            if self.nodes.get(&sg_id).is_none() {
                if self.blocked_by_shutdown() {
                    let msg = self
                        .shutdown
                        .as_ref()
                        .map(Shutdown::message)
                        .unwrap_or_default();
                    self.set_phase(&id, Phase::Failed, Some(msg));
                    return Outcome::Node(id);
                }
                self.create_node(
                    &sg_name,
                    &format!("[{i}]"),
                    NodeType::StepGroup,
                    None,
                    tscope,
                    &Some(id.clone()),
                    Phase::Running,
                    "",
                );
                if i == 0 {
                    self.add_child(&id, &sg_id);
                } else {
                    let prev = node_id(&self.id.name, &format!("{node_name}[{}]", i - 1));
                    let prev_children = self
                        .nodes
                        .get(&prev)
                        .map(|n| n.children.clone())
                        .unwrap_or_default();
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
            let Some(sg) = self.nodes.get(&sg_id) else {
                return Outcome::Node(id);
            };
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

    pub(crate) fn update_outbound_steps(&mut self, id: &str, node_name: &str, n_groups: usize) {
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
    pub(crate) fn execute_step_group(
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
        // The expansion is computed once per group and kept until the group ends.
        let mut plan = match self.group_cache.remove(sg_id) {
            Some(p) => p,
            None => {
                let mut entries = Vec::new();
                for (step_idx, step) in group.iter().enumerate() {
                    let base = format!("{sg_name}.{}", step.name);
                    match self.expand_items(step, inputs, siblings) {
                        Ok(items) => entries.extend(plan_entries(
                            &self.id.name,
                            step_idx,
                            &base,
                            &step.name,
                            items,
                        )),
                        Err(msg) => {
                            self.set_phase(sg_id, Phase::Error, Some(msg));
                            return;
                        }
                    }
                }
                GroupPlan::new(entries)
            }
        };
        let mut not_started = false;
        for i in plan.pending.iter().copied().collect::<Vec<_>>() {
            let e = &plan.entries[i];
            let step = &group[e.step];
            if e.empty {
                if self.nodes.get(&e.id).is_none() {
                    self.create_node(
                        &e.name,
                        &e.display,
                        NodeType::Skipped,
                        None,
                        tscope,
                        &boundary,
                        Phase::Skipped,
                        "Skipped, empty params",
                    );
                    self.add_child(sg_id, &e.id);
                }
                plan.pending.remove(&i);
                continue;
            }
            let existed = self.nodes.get(&e.id).is_some();
            match self.run_step(
                step,
                &e.name,
                &e.display,
                e.item.as_ref(),
                tscope,
                inputs,
                siblings,
                &boundary,
            ) {
                StepRun::Node(id) => {
                    if !existed {
                        self.add_child(sg_id, &id);
                    }
                    if self.step_fulfilled(&id) {
                        plan.pending.remove(&i);
                    }
                }
                StepRun::NotStarted => not_started = true,
                StepRun::Errored(id) => {
                    if !existed {
                        self.add_child(sg_id, &id);
                    }
                    self.set_phase(sg_id, Phase::Error, Some(format!("child '{id}' errored")));
                    return;
                }
            }
        }
        if not_started {
            let started_all_done = plan
                .entries
                .iter()
                .all(|e| self.nodes.get(&e.id).is_none_or(|n| n.phase.fulfilled()));
            if self.blocked_by_shutdown() && started_all_done {
                let msg = self
                    .shutdown
                    .as_ref()
                    .map(Shutdown::message)
                    .unwrap_or_default();
                self.set_phase(sg_id, Phase::Failed, Some(msg));
                return;
            }
            self.group_cache.insert(sg_id.to_string(), plan);
            return;
        }
        if !plan.pending.is_empty() {
            self.group_cache.insert(sg_id.to_string(), plan);
            return;
        }
        for e in &plan.entries {
            let phase = self
                .nodes
                .get(&e.id)
                .map(|n| n.phase)
                .unwrap_or(Phase::Error);
            if !successful(phase) && !continues_on(&group[e.step].continue_on, phase) {
                self.set_phase(
                    sg_id,
                    Phase::Failed,
                    Some(format!("child '{}' failed", e.id)),
                );
                return;
            }
        }
        self.set_phase(sg_id, Phase::Succeeded, None);
    }

    /// A step or task is done when its node is fulfilled and so is its exit hook, if any.
    pub(crate) fn step_fulfilled(&self, id: &str) -> bool {
        let Some(n) = self.nodes.get(id) else {
            return false;
        };
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
    pub(crate) fn run_step(
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
        if let Some(n) = self.nodes.get(&id) {
            if n.phase.fulfilled() {
                self.run_exit_hook(step, &id, tscope, inputs, siblings, boundary);
                return StepRun::Node(id);
            }
            // A running leaf changes only through inputs; nothing to re-evaluate.
            if n.node_type.is_leaf() {
                return StepRun::Node(id);
            }
        }
        if self.nodes.get(&id).is_none()
            && let Some(when) = &step.when
        {
            let view = ScopeView {
                wf: self,
                siblings,
                inputs,
                item,
                extra: Vec::new(),
            };
            let rendered = expr::render(when, &view, Unresolved::Keep);
            let decision = rendered.and_then(|w| {
                let trimmed = w.trim().to_string();
                expr::eval_when(&trimmed).map(|b| (b, trimmed))
            });
            match decision {
                Ok((true, _)) => {}
                Ok((false, w)) => {
                    self.create_node(
                        child_name,
                        display,
                        NodeType::Skipped,
                        None,
                        tscope,
                        boundary,
                        Phase::Skipped,
                        &format!("when '{w}' evaluated false"),
                    );
                    self.set_skipped_output_defaults(&id, step, tscope);
                    return StepRun::Node(id);
                }
                Err(e) => {
                    self.create_node(
                        child_name,
                        display,
                        NodeType::Skipped,
                        None,
                        tscope,
                        boundary,
                        Phase::Error,
                        &format!("invalid 'when' expression {when:?}: {e}"),
                    );
                    return StepRun::Errored(id);
                }
            }
        }
        let args = {
            let view = ScopeView {
                wf: self,
                siblings,
                inputs,
                item,
                extra: Vec::new(),
            };
            let mut args = Vec::new();
            for p in &step.arguments.parameters {
                let raw = p.value.as_ref().map(|v| v.0.clone()).unwrap_or_default();
                match expr::render(&raw, &view, Unresolved::Keep) {
                    Ok(v) => args.push((p.name.clone(), v)),
                    Err(e) => {
                        return self.step_error(
                            child_name,
                            display,
                            tscope,
                            boundary,
                            format!("argument {:?}: {e}", p.name),
                        );
                    }
                }
            }
            args
        };
        let target = match (&step.template, item) {
            (Some(t), _) if t.contains("{{") => {
                let view = ScopeView {
                    wf: self,
                    siblings,
                    inputs,
                    item,
                    extra: Vec::new(),
                };
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

    pub(crate) fn step_error(
        &mut self,
        name: &str,
        display: &str,
        tscope: &TemplateScope,
        boundary: &Option<String>,
        msg: String,
    ) -> StepRun {
        let id = node_id(&self.id.name, name);
        if self.nodes.get(&id).is_none() {
            self.create_node(
                name,
                display,
                NodeType::Skipped,
                None,
                tscope,
                boundary,
                Phase::Error,
                &msg,
            );
        }
        StepRun::Errored(id)
    }

    /// A skipped step's output parameters that declare `valueFrom.default` still have a value.
    pub(crate) fn set_skipped_output_defaults(
        &mut self,
        id: &str,
        step: &WorkflowStep,
        tscope: &TemplateScope,
    ) {
        let target = target_of(&step.template, &step.template_ref, &step.inline);
        let Ok((tmpl, _)) = self.resolve(&target, tscope) else {
            return;
        };
        let params: Vec<(String, String)> = tmpl
            .outputs
            .parameters
            .iter()
            .filter_map(|p| {
                Some((
                    p.name.clone(),
                    p.value_from.as_ref()?.default.as_ref()?.0.clone(),
                ))
            })
            .collect();
        if !params.is_empty()
            && let Some(n) = self.nodes.get_mut(id)
        {
            n.outputs = Some(NodeOutputs {
                parameters: params,
                ..Default::default()
            });
        }
    }

    /// Step/task-level `onExit` or `hooks.exit`, run once the node is fulfilled.
    pub(crate) fn run_exit_hook(
        &mut self,
        step: &WorkflowStep,
        parent_id: &str,
        tscope: &TemplateScope,
        inputs: &[(String, String)],
        siblings: &Siblings,
        boundary: &Option<String>,
    ) {
        let (target, hook_args) = if let Some(h) = step.hooks.get("exit") {
            (
                target_of(&h.template, &h.template_ref, &None),
                h.arguments.clone(),
            )
        } else if let Some(t) = &step.on_exit {
            (Target::Name(t.clone()), Arguments::default())
        } else {
            return;
        };
        let Some(parent) = self.nodes.get(parent_id) else {
            return;
        };
        let name = format!("{}.onExit", parent.name);
        let args = {
            let view = ScopeView {
                wf: self,
                siblings,
                inputs,
                item: None,
                extra: Vec::new(),
            };
            hook_args
                .parameters
                .iter()
                .map(|p| {
                    let raw = p.value.as_ref().map(|v| v.0.clone()).unwrap_or_default();
                    (
                        p.name.clone(),
                        expr::render(&raw, &view, Unresolved::Keep).unwrap_or(raw),
                    )
                })
                .collect()
        };
        let existed = self.node_by_name(&name).is_some();
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
            if !existed {
                self.add_child(parent_id, &exit_id);
            }
            self.pending_exit_hooks.remove(parent_id);
        }
    }

    /// A loop may add at most [`crate::limits::MAX_LOOP_ITEMS`] nodes, and not take the
    /// workflow past [`crate::limits::MAX_NODES`].
    fn check_loop_size(&self, n: usize, what: &str) -> Result<(), String> {
        use crate::limits::MAX_LOOP_ITEMS;
        let max_nodes = self.node_limit;
        if n > MAX_LOOP_ITEMS {
            return Err(format!(
                "{what} has {n} items; a loop may have at most {MAX_LOOP_ITEMS} (split the work, or use several steps)"
            ));
        }
        if self.nodes.len().saturating_add(n) > max_nodes {
            return Err(format!(
                "{what} with {n} items would take the workflow past {max_nodes} nodes (it has {})",
                self.nodes.len()
            ));
        }
        Ok(())
    }

    /// `withItems`, `withParam` or `withSequence`, rendered with the scope; `None` for no loop.
    pub(crate) fn expand_items(
        &self,
        step: &WorkflowStep,
        inputs: &[(String, String)],
        siblings: &Siblings,
    ) -> Result<Option<Vec<Value>>, String> {
        let view = ScopeView {
            wf: self,
            siblings,
            inputs,
            item: None,
            extra: Vec::new(),
        };
        let render = |s: &str| expr::render(s, &view, Unresolved::Keep).map_err(|e| e.to_string());
        if let Some(items) = &step.with_items {
            self.check_loop_size(items.len(), "withItems")?;
            let mut out = Vec::with_capacity(items.len());
            for it in items {
                out.push(render_value(it, &render)?);
            }
            return Ok(Some(out));
        }
        if let Some(p) = &step.with_param {
            let s = render(p)?;
            let v: Value = serde_json::from_str(s.trim()).map_err(|_| {
                format!(
                    "withParam value could not be parsed as a JSON list: {}",
                    s.trim()
                )
            })?;
            return match v {
                Value::Array(a) => {
                    self.check_loop_size(a.len(), "withParam")?;
                    Ok(Some(a))
                }
                _ => Err(format!(
                    "withParam value could not be parsed as a JSON list: {}",
                    s.trim()
                )),
            };
        }
        if let Some(seq) = &step.with_sequence {
            let num = |v: &Option<spec::AnyString>, what: &str| -> Result<Option<i64>, String> {
                match v {
                    None => Ok(None),
                    Some(s) => {
                        let r = render(&s.0)?;
                        r.trim()
                            .parse::<i64>()
                            .map(Some)
                            .map_err(|_| format!("withSequence.{what} {r:?} is not an integer"))
                    }
                }
            };
            let (count, start, end) = (
                num(&seq.count, "count")?,
                num(&seq.start, "start")?,
                num(&seq.end, "end")?,
            );
            let start = start.unwrap_or(0);
            // The length first, with checked arithmetic: a hostile count must not allocate.
            let len = match (count, end) {
                (Some(_), Some(_)) => {
                    return Err("withSequence: use either count or end, not both".into());
                }
                (Some(c), None) if c < 0 => {
                    return Err(format!("withSequence.count {c} is negative"));
                }
                (Some(c), None) => start.checked_add(c).map(|_| c),
                (None, Some(e)) => e
                    .checked_sub(start)
                    .and_then(|d| d.checked_abs())
                    .and_then(|d| d.checked_add(1)),
                (None, None) => return Err("withSequence needs count or end".into()),
            };
            let len = len
                .and_then(|l| usize::try_from(l).ok())
                .ok_or("withSequence: the sequence does not fit in 64-bit integers")?;
            self.check_loop_size(len, "withSequence")?;
            let values: Vec<i64> = match (count, end) {
                (Some(c), None) => (start..start + c).collect(),
                (None, Some(e)) if e >= start => (start..=e).collect(),
                (None, Some(e)) => (e..=start).rev().collect(),
                _ => Vec::new(),
            };
            return Ok(Some(
                values
                    .into_iter()
                    .map(|n| Value::String(format_sequence(seq.format.as_deref(), n)))
                    .collect(),
            ));
        }
        Ok(None)
    }
}

#[derive(Debug)]
pub(crate) enum StepRun {
    Node(String),
    NotStarted,
    Errored(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(crate) fn labels_and_sequences() {
        assert_eq!(item_label(0, &serde_json::json!("a")), "(0:a)");
        assert_eq!(
            item_label(1, &serde_json::json!({"os": "debian", "version": 9.1})),
            "(1:os:debian,version:9.1)"
        );
        assert_eq!(item_label(2, &serde_json::json!(5)), "(2:5)");
        assert_eq!(format_sequence(Some("test%02d"), 3), "test03");
        assert_eq!(format_sequence(None, 7), "7");
    }
}

/// One child a step group or task group will run: a step, or one item of a loop.
#[derive(Debug, Clone)]
pub(crate) struct GroupEntry {
    /// Index of the step in its group (always 0 for a task group).
    pub step: usize,
    pub name: String,
    pub display: String,
    pub id: String,
    pub item: Option<Value>,
    /// A loop over an empty list: one Skipped node ("Skipped, empty params").
    pub empty: bool,
}

/// The expanded children of a group and which of them are not done yet. Derived state: built
/// from the template and scope the first time the group is walked.
#[derive(Debug, Clone)]
pub(crate) struct GroupPlan {
    pub entries: Vec<GroupEntry>,
    pub pending: BTreeSet<usize>,
}

impl GroupPlan {
    pub(crate) fn new(entries: Vec<GroupEntry>) -> GroupPlan {
        let pending = (0..entries.len()).collect();
        GroupPlan { entries, pending }
    }
}

/// The entries for one step: itself, one per loop item, or a single empty-loop entry.
pub(crate) fn plan_entries(
    wf_name: &str,
    step: usize,
    base: &str,
    step_name: &str,
    items: Option<Vec<Value>>,
) -> Vec<GroupEntry> {
    match items {
        None => vec![GroupEntry {
            step,
            name: base.to_string(),
            display: step_name.to_string(),
            id: node_id(wf_name, base),
            item: None,
            empty: false,
        }],
        Some(items) if items.is_empty() => {
            vec![GroupEntry {
                step,
                name: base.to_string(),
                display: step_name.to_string(),
                id: node_id(wf_name, base),
                item: None,
                empty: true,
            }]
        }
        Some(items) => items
            .into_iter()
            .enumerate()
            .map(|(i, item)| {
                let label = item_label(i, &item);
                let name = format!("{base}{label}");
                GroupEntry {
                    step,
                    id: node_id(wf_name, &name),
                    name,
                    display: format!("{step_name}{label}"),
                    item: Some(item),
                    empty: false,
                }
            })
            .collect(),
    }
}
