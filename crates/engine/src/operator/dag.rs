//! `dag` templates: `dependencies`/`depends`, targets, task groups and Argo's phase assessment.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use expr::Unresolved;
use spec::{ContinueOn, DagTask, Template, WorkflowStep};

use super::steps::*;
use super::walk::*;
use crate::Workflow;
use crate::node::{Node, NodeType, Phase, TemplateScope, node_id};
use crate::scope::{ScopeView, Siblings};

impl Workflow {
    pub(crate) fn execute_dag(
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
            NodeType::DAG,
            tmpl,
            tscope,
            &inputs,
            boundary,
        );
        let Some(dag) = &tmpl.dag else {
            return Outcome::Node(id);
        };
        let siblings = Siblings::Dag {
            node_name: node_name.to_string(),
            tasks: dag.tasks.iter().map(|t| t.name.clone()).collect(),
        };
        let index: HashMap<&str, usize> = dag
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.as_str(), i))
            .collect();
        let mut deps: Vec<Option<expr::Depends>> = Vec::with_capacity(dag.tasks.len());
        for t in &dag.tasks {
            let d = match &t.depends {
                Some(src) => match expr::parse_depends(src) {
                    Ok(d) => Some(d),
                    Err(e) => {
                        self.set_phase(
                            &id,
                            Phase::Error,
                            Some(format!("task {:?}: invalid depends {src:?}: {e}", t.name)),
                        );
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
                let view = ScopeView {
                    wf: self,
                    siblings: &siblings,
                    inputs: &inputs,
                    item: None,
                    extra: Vec::new(),
                };
                let t = expr::render(t, &view, Unresolved::Keep).unwrap_or_else(|_| t.clone());
                let mut out = Vec::new();
                for name in t.split_whitespace() {
                    match index.get(name) {
                        Some(i) => out.push(*i),
                        None => {
                            self.set_phase(
                                &id,
                                Phase::Error,
                                Some(format!("target {name:?} is not a task of this DAG")),
                            );
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
            self.execute_dag_task(
                &dag.tasks, i, &deps, &index, node_name, &id, tscope, &inputs, &siblings,
            );
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

    pub(crate) fn dag_outbound(
        &mut self,
        id: &str,
        node_name: &str,
        tasks: &[DagTask],
        targets: &[usize],
    ) {
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
    pub(crate) fn assess_dag(
        &self,
        dag_id: &str,
        tasks: &[DagTask],
        targets: &[usize],
        dag_name: &str,
        fail_fast: bool,
    ) -> Phase {
        let target_ids: HashMap<String, usize> = targets
            .iter()
            .map(|&t| {
                (
                    node_id(&self.id.name, &format!("{dag_name}.{}", tasks[t].name)),
                    t,
                )
            })
            .collect();
        let mut target_phase: HashMap<usize, Phase> = HashMap::new();
        // Unique per (node, branch phase), so a node reached from a failed branch is looked at
        // again even if a successful branch reached it first.
        let mut seen: HashSet<(String, Phase)> = HashSet::new();
        let mut queue: std::collections::VecDeque<(String, Phase)> =
            std::collections::VecDeque::new();
        let push = |queue: &mut std::collections::VecDeque<(String, Phase)>,
                    seen: &mut HashSet<(String, Phase)>,
                    ids: &[String],
                    p: Phase| {
            for id in ids {
                if seen.insert((id.clone(), p)) {
                    queue.push_back((id.clone(), p));
                }
            }
        };
        let Some(dag) = self.nodes.get(dag_id) else {
            return Phase::Running;
        };
        push(&mut queue, &mut seen, &dag.children, Phase::Succeeded);
        while let Some((id, mut branch)) = queue.pop_front() {
            let Some(n) = self.nodes.get(&id) else {
                continue;
            };
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
    pub(crate) fn execute_dag_task(
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
                self.execute_task_group(
                    task, &step, &task_name, &task_id, tscope, inputs, siblings, &boundary,
                );
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
        if !exists && let Some(d) = &deps[i] {
            let test = |name: &str, r: expr::TaskResult| -> bool {
                let Some(j) = index.get(name) else {
                    return false;
                };
                let Some(n) = self.node_by_name(&format!("{dag_name}.{name}")) else {
                    return false;
                };
                let co = &tasks[*j].continue_on;
                task_result(self, n, r, co)
            };
            if !d.eval(&test) {
                self.create_node(
                    &task_name,
                    &task.name,
                    NodeType::Skipped,
                    None,
                    tscope,
                    &boundary,
                    Phase::Omitted,
                    "omitted: depends condition not met",
                );
                self.link_task(&task_id, dag_id, &dep_ids);
                return;
            }
        }
        let items = match self.expand_items(&step, inputs, siblings) {
            Ok(items) => items,
            Err(msg) => {
                if !exists {
                    self.create_node(
                        &task_name,
                        &task.name,
                        NodeType::Skipped,
                        None,
                        tscope,
                        &boundary,
                        Phase::Error,
                        &msg,
                    );
                    self.link_task(&task_id, dag_id, &dep_ids);
                }
                return;
            }
        };
        match items {
            None => {
                if let StepRun::Node(id) | StepRun::Errored(id) = self.run_step(
                    &step, &task_name, &task.name, None, tscope, inputs, siblings, &boundary,
                ) {
                    self.link_task(&id, dag_id, &dep_ids);
                }
            }
            Some(items) if items.is_empty() => {
                if !exists {
                    self.create_node(
                        &task_name,
                        &task.name,
                        NodeType::Skipped,
                        None,
                        tscope,
                        &boundary,
                        Phase::Skipped,
                        "Skipped, empty params",
                    );
                    self.link_task(&task_id, dag_id, &dep_ids);
                }
            }
            Some(_) => {
                if !exists {
                    self.create_node(
                        &task_name,
                        &task.name,
                        NodeType::TaskGroup,
                        None,
                        tscope,
                        &boundary,
                        Phase::Running,
                        "",
                    );
                    self.link_task(&task_id, dag_id, &dep_ids);
                }
                self.execute_task_group(
                    task, &step, &task_name, &task_id, tscope, inputs, siblings, &boundary,
                );
            }
        }
    }

    pub(crate) fn link_task(&mut self, task_id: &str, dag_id: &str, dep_ids: &[String]) {
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
    pub(crate) fn execute_task_group(
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
        let Ok(Some(items)) = self.expand_items(step, inputs, siblings) else {
            return;
        };
        let mut children = Vec::new();
        let mut not_started = false;
        for (i, item) in items.iter().enumerate() {
            let label = item_label(i, item);
            let name = format!("{group_name}{label}");
            let display = format!("{}{label}", task.name);
            match self.run_step(
                step,
                &name,
                &display,
                Some(item),
                tscope,
                inputs,
                siblings,
                boundary,
            ) {
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
pub(crate) fn task_result(
    wf: &Workflow,
    n: &Node,
    r: expr::TaskResult,
    continue_on: &Option<ContinueOn>,
) -> bool {
    use expr::TaskResult as R;
    let phase = n.phase;
    let children = || {
        n.children
            .iter()
            .filter_map(|c| wf.nodes.get(c))
            .filter(|c| c.name.starts_with(&format!("{}(", n.name)))
    };
    match r {
        R::Succeeded => phase == Phase::Succeeded,
        R::Skipped => phase == Phase::Skipped,
        R::ContinuedOn => continues_on(continue_on, phase),
        R::Failed => phase == Phase::Failed,
        R::Errored => phase == Phase::Error,
        R::Omitted => phase == Phase::Omitted,
        R::Daemoned => false,
        R::AnySucceeded => {
            n.node_type == NodeType::TaskGroup && children().any(|c| c.phase == Phase::Succeeded)
        }
        R::AllFailed => {
            n.node_type == NodeType::TaskGroup && {
                let mut it = children().peekable();
                it.peek().is_some() && it.all(|c| c.phase == Phase::Failed)
            }
        }
    }
}

/// The tasks needed for `targets` (their ancestors), in a topological order (Kahn).
pub(crate) fn dag_order(
    tasks: &[DagTask],
    deps: &[Option<expr::Depends>],
    index: &HashMap<&str, usize>,
    targets: &[usize],
) -> Result<Vec<usize>, String> {
    let n = tasks.len();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        if let Some(d) = d {
            for t in d.tasks() {
                match index.get(t) {
                    Some(j) => parents[i].push(*j),
                    None => {
                        return Err(format!(
                            "task {:?} depends on unknown task {t:?}",
                            tasks[i].name
                        ));
                    }
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
    let mut queue: std::collections::VecDeque<usize> =
        (0..n).filter(|i| needed[*i] && indegree[*i] == 0).collect();
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
