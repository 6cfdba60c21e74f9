//! `dag` templates: `dependencies`/`depends`, targets, task groups and Argo's phase assessment.

use std::collections::{BTreeSet, HashMap, HashSet};
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
        // The parsed structure is built once per DAG node and kept while it runs.
        let rt = match self.dag_cache.remove(&id) {
            Some(rt) => rt,
            None => match self.build_dag_runtime(&id, node_name, tmpl, &inputs) {
                Ok(rt) => rt,
                Err(msg) => {
                    self.set_phase(&id, Phase::Error, Some(msg));
                    return Outcome::Node(id);
                }
            },
        };
        let mut rt = rt;
        // Tasks already started: re-evaluate them (nested templates, retries, exit hooks) and
        // retire the ones that are done.
        let active: Vec<usize> = rt.active.iter().copied().collect();
        for i in active {
            self.execute_dag_task(&dag.tasks, i, &rt, node_name, &id, tscope, &inputs);
            self.settle_task(&mut rt, i);
        }
        // Tasks whose dependencies are all done: start them. Starting one may finish it at once
        // (skipped, omitted, errored), which can make more tasks ready.
        loop {
            let ready: Vec<usize> = rt.ready.iter().copied().collect();
            let before = (rt.ready.len(), rt.active.len(), rt.done_count);
            for i in ready {
                self.execute_dag_task(&dag.tasks, i, &rt, node_name, &id, tscope, &inputs);
                self.settle_task(&mut rt, i);
            }
            if (rt.ready.len(), rt.active.len(), rt.done_count) == before {
                break;
            }
        }
        let fail_fast = dag.fail_fast.or(tmpl.fail_fast).unwrap_or(true);
        // While anything runs, the DAG runs: assess only when nothing is in flight.
        let phase = if rt.active.is_empty() {
            self.assess_dag(&id, &dag.tasks, &rt.targets, node_name, fail_fast)
        } else {
            Phase::Running
        };
        let siblings = rt.siblings.clone();
        let targets = rt.targets.clone();
        match phase {
            Phase::Running => {
                self.dag_cache.insert(id.clone(), rt);
            }
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

    /// Parses dependencies, resolves targets and orders the tasks a DAG node needs.
    fn build_dag_runtime(
        &self,
        id: &str,
        node_name: &str,
        tmpl: &Template,
        inputs: &[(String, String)],
    ) -> Result<DagRuntime, String> {
        let dag = tmpl.dag.as_ref().ok_or("internal: not a DAG template")?;
        let index: HashMap<String, usize> = dag
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.name.clone(), i))
            .collect();
        let siblings = Siblings::Dag {
            node_name: node_name.to_string(),
            tasks: Arc::new(dag.tasks.iter().map(|t| t.name.clone()).collect()),
        };
        let mut deps: Vec<Option<expr::Depends>> = Vec::with_capacity(dag.tasks.len());
        for t in &dag.tasks {
            deps.push(match &t.depends {
                Some(src) => Some(
                    expr::parse_depends(src)
                        .map_err(|e| format!("task {:?}: invalid depends {src:?}: {e}", t.name))?,
                ),
                None => expr::Depends::from_dependencies(&t.dependencies),
            });
        }
        let targets: Vec<usize> = match &dag.target {
            Some(t) => {
                let view = ScopeView {
                    wf: self,
                    siblings: &siblings,
                    inputs,
                    item: None,
                    extra: Vec::new(),
                };
                let t = expr::render(t, &view, Unresolved::Keep).unwrap_or_else(|_| t.clone());
                let mut out = Vec::new();
                for name in t.split_whitespace() {
                    out.push(
                        *index
                            .get(name)
                            .ok_or_else(|| format!("target {name:?} is not a task of this DAG"))?,
                    );
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
        let (order, parents) = dag_order(&dag.tasks, &deps, &index, &targets)?;
        let n = dag.tasks.len();
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n];
        let mut remaining = vec![0usize; n];
        for &i in &order {
            let mut ps = parents[i].clone();
            ps.sort_unstable();
            ps.dedup();
            remaining[i] = ps.len();
            for p in ps {
                children[p].push(i);
            }
        }
        let task_ids = dag
            .tasks
            .iter()
            .map(|t| node_id(&self.id.name, &format!("{node_name}.{}", t.name)))
            .collect();
        let mut rt = DagRuntime {
            task_ids,
            deps,
            index,
            targets,
            siblings,
            children,
            remaining,
            needed: vec![false; n],
            done: vec![false; n],
            done_count: 0,
            active: BTreeSet::new(),
            ready: BTreeSet::new(),
        };
        for &i in &order {
            rt.needed[i] = true;
            if rt.remaining[i] == 0 {
                rt.ready.insert(i);
            }
        }
        // Nodes may exist already (the runtime is derived state): account for them.
        for &i in &order {
            if self.nodes.get(&rt.task_ids[i]).is_some() {
                rt.ready.remove(&i);
                rt.active.insert(i);
            }
        }
        let _ = id;
        Ok(rt)
    }

    /// Moves task `i` between ready, active and done after it was looked at.
    fn settle_task(&self, rt: &mut DagRuntime, i: usize) {
        let tid = &rt.task_ids[i];
        if self.nodes.get(tid).is_none() {
            return;
        }
        rt.ready.remove(&i);
        if !self.step_fulfilled(tid) {
            rt.active.insert(i);
            return;
        }
        rt.active.remove(&i);
        if rt.done[i] {
            return;
        }
        rt.done[i] = true;
        rt.done_count += 1;
        for c in rt.children[i].clone() {
            rt.remaining[c] = rt.remaining[c].saturating_sub(1);
            if rt.remaining[c] == 0 && rt.needed[c] && !rt.done[c] && !rt.active.contains(&c) {
                rt.ready.insert(c);
            }
        }
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
        rt: &DagRuntime,
        dag_name: &str,
        dag_id: &str,
        tscope: &TemplateScope,
        inputs: &[(String, String)],
    ) {
        let (deps, index, siblings) = (&rt.deps, &rt.index, &rt.siblings);
        let task_id = rt.task_ids[i].clone();
        // A running leaf changes only through inputs: nothing below would look at it (its
        // dependencies were done when it started). Returning here keeps a step of a wide DAG
        // from costing a copy of every running task.
        if self
            .nodes
            .get(&task_id)
            .is_some_and(|n| n.node_type.is_leaf() && !n.phase.fulfilled())
        {
            return;
        }
        let task = &tasks[i];
        let task_name = format!("{dag_name}.{}", task.name);
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
                ) && !exists
                {
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
        let mut plan = match self.group_cache.remove(group_id) {
            Some(p) => p,
            None => {
                let Ok(Some(items)) = self.expand_items(step, inputs, siblings) else {
                    return;
                };
                GroupPlan::new(plan_entries(
                    &self.id.name,
                    0,
                    group_name,
                    &task.name,
                    Some(items),
                ))
            }
        };
        let mut not_started = false;
        for i in plan.pending.iter().copied().collect::<Vec<_>>() {
            let e = &plan.entries[i];
            let existed = self.nodes.get(&e.id).is_some();
            match self.run_step(
                step,
                &e.name,
                &e.display,
                e.item.as_ref(),
                tscope,
                inputs,
                siblings,
                boundary,
            ) {
                StepRun::Node(id) | StepRun::Errored(id) => {
                    if !existed {
                        self.add_child(group_id, &id);
                    }
                    if self.step_fulfilled(&id) {
                        plan.pending.remove(&i);
                    }
                }
                StepRun::NotStarted => not_started = true,
            }
        }
        let stopped = not_started && self.blocked_by_shutdown();
        let in_flight = plan
            .entries
            .iter()
            .any(|e| self.nodes.get(&e.id).is_some_and(|n| !n.phase.fulfilled()));
        if !(plan.pending.is_empty() || (stopped && !in_flight)) {
            self.group_cache.insert(group_id.to_string(), plan);
            return;
        }
        let mut phase = if stopped {
            Phase::Failed
        } else {
            Phase::Succeeded
        };
        for e in &plan.entries {
            let p = self.nodes.get(&e.id).map(|n| n.phase);
            if let Some(p) = p
                && p.failed_or_error()
            {
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
/// Returns the order and each task's parent indices.
pub(crate) fn dag_order(
    tasks: &[DagTask],
    deps: &[Option<expr::Depends>],
    index: &HashMap<String, usize>,
    targets: &[usize],
) -> Result<(Vec<usize>, Vec<Vec<usize>>), String> {
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
    Ok((order, parents))
}

/// What a running DAG node needs between walks: derived from the template and the nodes, so
/// it can always be rebuilt; it only saves re-parsing and re-visiting finished tasks.
#[derive(Debug, Clone)]
pub(crate) struct DagRuntime {
    /// Each task's node id (`node_id` of `<dag node name>.<task>`), computed once.
    task_ids: Vec<String>,
    deps: Vec<Option<expr::Depends>>,
    index: HashMap<String, usize>,
    targets: Vec<usize>,
    siblings: Siblings,
    children: Vec<Vec<usize>>,
    /// Dependencies of each task not yet done.
    remaining: Vec<usize>,
    /// Tasks the targets need.
    needed: Vec<bool>,
    done: Vec<bool>,
    done_count: usize,
    /// Tasks with a node that is not done yet.
    active: BTreeSet<usize>,
    /// Tasks whose dependencies are done and that have no node yet.
    ready: BTreeSet<usize>,
}
