//! The workflow state machine: Argo's semantics as a pure, deterministic fold over inputs.
//!
//! # Brief overview
//! A [`Workflow`] is created from a resolved spec ([`Workflow::new`]), then driven with batches
//! of [`Input`]s ([`Workflow::step`]). Each step applies the inputs, re-evaluates the workflow
//! from its root the way Argo's operator does, and returns [`Command`]s for the shell to carry
//! out (run a leaf node, cancel one, wake the engine up at a time). Time comes in with every
//! input; ids and names are given at creation. The same inputs always give the same state, so
//! the history of inputs is the source of truth: replay is folding it again.
//!
//! **Architecture Invariant:** this crate does no IO, reads no clock, spawns nothing and uses
//! no randomness. It depends only on `spec` and `expr`.
//!
//! # Example
//! ```
//! use riposte_engine::{Workflow, Input, Command, ExecResult, Phase, WorkflowIdentity};
//! let text = "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: hello}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    container: {image: busybox, command: [echo, hi]}\n";
//! let (loaded, _) = spec::load("hello.yaml", text);
//! let spec::Resource::Workflow(_, wf) = &loaded[0].resource else { unreachable!() };
//! let id = WorkflowIdentity { name: "hello".into(), namespace: "default".into(), uid: "u1".into() };
//! let mut w = Workflow::new((**wf).clone(), Default::default(), id, &[]).unwrap();
//! let cmds = w.step(&[Input::Start { now: 0 }]).unwrap();
//! let Command::Execute(run) = &cmds[0] else { panic!() };
//! w.step(&[Input::NodeFinished { now: 10, node_id: run.node_id.clone(), result: ExecResult::succeeded(0, "hi\n") }]).unwrap();
//! assert_eq!(w.phase(), Phase::Succeeded);
//! ```

mod node;
mod operator;
mod render;
mod scope;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use spec::{Library, Parameter, Template, WorkflowResource};

/// Documented limits on what one workflow may make the controller do.
pub mod limits {
    /// Items of one loop (`withItems`, `withParam`, `withSequence`).
    pub const MAX_LOOP_ITEMS: usize = 100_000;
    /// Nodes of one workflow (a loop that would pass it errors instead).
    pub const MAX_NODES: usize = 250_000;
    /// Templates calling templates within one walk (Argo's `maxAllowedStackDepth`): a
    /// template that calls itself at once, forever, errors here instead of exhausting the
    /// stack.
    pub const MAX_STACK_DEPTH: usize = 100;
}

pub use node::{
    Node, NodeOutputs, NodeType, Nodes, Phase, TemplateScope, fnv32a, node_id, pod_name,
};

/// Who a workflow is: name (after `generateName`), namespace and uid, chosen by the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowIdentity {
    pub name: String,
    pub namespace: String,
    pub uid: String,
}

/// What an executor reports for a leaf node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResult {
    /// Succeeded, Failed (the step ran and failed) or Error (it could not run properly).
    pub phase: Phase,
    pub message: String,
    pub exit_code: Option<i32>,
    /// Standard output (capped by the executor), or the HTTP response body.
    pub result: Option<String>,
    /// Output parameter values read from `valueFrom.path`; `None` when the file was missing.
    pub parameters: BTreeMap<String, Option<String>>,
}

impl ExecResult {
    /// The result with every U+0000 written as U+FFFD. A step may print a NUL byte, but
    /// PostgreSQL's text and jsonb cannot hold one; the driver applies this before the
    /// result is both recorded and applied, so a replay from history reaches the same state
    /// as the run that recorded it.
    pub fn without_nul(mut self) -> ExecResult {
        fn clean(s: &mut String) {
            if s.contains('\0') {
                *s = s.replace('\0', "\u{FFFD}");
            }
        }
        clean(&mut self.message);
        if let Some(r) = &mut self.result {
            clean(r);
        }
        for v in self.parameters.values_mut().flatten() {
            clean(v);
        }
        self
    }

    pub fn succeeded(exit_code: i32, stdout: &str) -> ExecResult {
        ExecResult {
            phase: Phase::Succeeded,
            message: String::new(),
            exit_code: Some(exit_code),
            result: Some(stdout.to_string()),
            parameters: BTreeMap::new(),
        }
    }
    /// A process that exited non-zero, with Argo's message.
    pub fn exited(exit_code: i32, stdout: &str) -> ExecResult {
        if exit_code == 0 {
            return ExecResult::succeeded(0, stdout);
        }
        ExecResult {
            phase: Phase::Failed,
            message: format!("main: Error (exit code {exit_code})"),
            exit_code: Some(exit_code),
            result: Some(stdout.to_string()),
            parameters: BTreeMap::new(),
        }
    }
    pub fn error(message: impl Into<String>) -> ExecResult {
        ExecResult {
            phase: Phase::Error,
            message: message.into(),
            exit_code: None,
            result: None,
            parameters: BTreeMap::new(),
        }
    }
}

/// Everything that can happen to a workflow. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Input {
    Start {
        now: i64,
    },
    /// An executor began running a leaf node.
    NodeStarted {
        now: i64,
        node_id: String,
    },
    NodeFinished {
        now: i64,
        node_id: String,
        result: ExecResult,
    },
    /// Time passed (a requested wake-up).
    Tick {
        now: i64,
    },
    /// Resume suspended nodes: those whose name, display name or id equals `node` (all when
    /// `None`), setting supplied output parameters from `parameters`.
    Resume {
        now: i64,
        node: Option<String>,
        parameters: BTreeMap<String, String>,
    },
    /// `stop` (exit handlers still run) or `terminate` (they do not).
    Stop {
        now: i64,
        terminate: bool,
        message: Option<String>,
    },
    /// Argo's `suspend` of a whole workflow: nothing new starts until a `Resume`.
    Suspend {
        now: i64,
    },
    /// The controller cannot go on with this workflow (its driver panicked): running nodes
    /// are failed, exit handlers do not run, and the workflow ends `Error` with `message`.
    Abort {
        now: i64,
        message: String,
    },
    /// Argo's `retry` of a finished workflow: failed, errored and omitted nodes are removed
    /// (and, with `restart_successful`, succeeded ones matching `node_selector`), their
    /// parents reset to Running, the exit handler cleared, and the workflow runs again with
    /// `parameters` overriding workflow parameters.
    Retry {
        now: i64,
        restart_successful: bool,
        node_selector: Option<String>,
        parameters: Vec<(String, String)>,
    },
}

impl Input {
    pub fn now(&self) -> i64 {
        match self {
            Input::Start { now }
            | Input::NodeStarted { now, .. }
            | Input::NodeFinished { now, .. }
            | Input::Tick { now }
            | Input::Resume { now, .. }
            | Input::Stop { now, .. }
            | Input::Retry { now, .. }
            | Input::Suspend { now }
            | Input::Abort { now, .. } => *now,
        }
    }
}

/// A leaf node to run.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecuteNode {
    pub node_id: String,
    pub node_name: String,
    pub pod_name: String,
    pub workflow_name: String,
    pub namespace: String,
    /// The template with every variable substituted.
    pub template: Arc<Template>,
    /// Absolute deadline (unix ms) from `timeout`/`activeDeadlineSeconds`, if any.
    pub deadline: Option<i64>,
    /// Output parameters to collect: (name, path).
    pub output_paths: Vec<(String, String)>,
}

/// What the shell must do after a step.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Execute(Box<ExecuteNode>),
    /// Stop a running leaf node; its result, if it still arrives, is ignored.
    Cancel {
        node_id: String,
    },
    /// Call `step` with a `Tick` at (or after) this time.
    WakeAt {
        at: i64,
    },
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EngineError {
    #[error("invalid workflow: {0}")]
    Invalid(String),
    #[error("input for unknown node {0:?}")]
    UnknownNode(String),
    #[error("{input} received before the workflow started")]
    NotStarted { input: &'static str },
}

/// How the workflow is being shut down, if it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum Shutdown {
    Stop(String),
    Terminate(String),
    Deadline,
    /// The controller could not go on (a bug): like terminate, and the workflow ends `Error`.
    Abort(String),
}

impl Shutdown {
    fn message(&self) -> String {
        match self {
            Shutdown::Stop(m) | Shutdown::Terminate(m) | Shutdown::Abort(m) => m.clone(),
            Shutdown::Deadline => "Step exceeded its deadline".to_string(),
        }
    }
}

/// A leaf or suspend node waiting for its result, with what is needed to finish it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Pending {
    pub outputs: Vec<Parameter>,
    /// The command that started a leaf node, kept so that a restarted controller can
    /// re-attach to the work it describes (e.g. an existing Kubernetes Job).
    pub execute: Option<Box<ExecuteNode>>,
}

/// The state of one workflow. See the crate docs.
#[derive(Debug, Clone)]
pub struct Workflow {
    pub(crate) id: WorkflowIdentity,
    pub(crate) resource: WorkflowResource,
    pub(crate) library: Library,
    pub(crate) templates: HashMap<(TemplateScope, String), Arc<Template>>,
    pub(crate) local_templates: Vec<Arc<Template>>,
    /// Whether a template (by address of its shared copy) contains any `{{`; templates
    /// without one are sent to executors as they are, without a copy.
    pub(crate) template_tags: HashMap<usize, bool>,
    pub(crate) phase: Phase,
    pub(crate) message: String,
    pub(crate) started_at: Option<i64>,
    pub(crate) finished_at: Option<i64>,
    pub(crate) deadline: Option<i64>,
    pub(crate) nodes: Nodes,
    /// `workflow.*` variables.
    pub(crate) globals: BTreeMap<String, String>,
    pub(crate) now: i64,
    pub(crate) shutdown: Option<Shutdown>,
    /// While evaluating exit handlers, shutdown does not block new nodes.
    pub(crate) in_exit_handler: bool,
    /// `suspend`ed (or `spec.suspend: true`): no new nodes start until resumed.
    pub(crate) suspended: bool,
    pub(crate) pending: BTreeMap<String, Pending>,
    pub(crate) active_pods: usize,
    pub(crate) active_by_boundary: HashMap<String, usize>,
    pub(crate) mutations: u64,
    /// Nested `execute_template` calls in the walk now (bounded by
    /// [`limits::MAX_STACK_DEPTH`]).
    pub(crate) stack_depth: usize,
    /// The most nodes this workflow may have ([`limits::MAX_NODES`] unless set lower).
    pub(crate) node_limit: usize,
    /// Set by a walk that reached `node_limit`; the step then aborts the workflow.
    pub(crate) node_limit_hit: Option<String>,
    /// Node creations and phase changes, for metrics and benchmarks.
    pub(crate) transitions: u64,
    pub(crate) commands: Vec<Command>,
    pub(crate) wakeups: BTreeSet<i64>,
    /// Steps/tasks whose exit hook could not start yet (parallelism).
    pub(crate) pending_exit_hooks: BTreeSet<String>,
    /// Per running DAG node: parsed dependencies and which tasks are ready, running or done.
    pub(crate) dag_cache: HashMap<String, operator::DagRuntime>,
    /// Per running step group or task group: its expanded children and which are pending.
    pub(crate) group_cache: HashMap<String, operator::GroupPlan>,
    /// Nodes created or changed since the last `take_dirty_nodes`.
    pub(crate) dirty: BTreeSet<String>,
    /// Nodes removed since the last `take_deleted_nodes`.
    pub(crate) deleted: BTreeSet<String>,
}

impl Workflow {
    /// Validates and prepares a workflow. `overrides` are `-p name=value` parameters.
    pub fn new(
        resource: WorkflowResource,
        library: Library,
        id: WorkflowIdentity,
        overrides: &[(String, String)],
    ) -> Result<Workflow, EngineError> {
        let resource = library
            .resolve_workflow(&resource)
            .map_err(|e| EngineError::Invalid(e.to_string()))?;
        let mut resource = resource;
        // The workflow's own templates live once, shared: in `templates` for lookups and in
        // `local_templates` (declaration order) for rendering the spec.
        let local_templates: Vec<Arc<Template>> = std::mem::take(&mut resource.spec.templates)
            .into_iter()
            .map(Arc::new)
            .collect();
        let mut templates = HashMap::new();
        for t in &local_templates {
            templates.insert((TemplateScope::Local, t.name.clone()), t.clone());
        }
        for (cluster, map) in [
            (false, &library.templates),
            (true, &library.cluster_templates),
        ] {
            for (name, wt) in map {
                for t in &wt.spec.templates {
                    let scope = TemplateScope::Ref {
                        name: name.clone(),
                        cluster,
                    };
                    templates.insert((scope, t.name.clone()), Arc::new(t.clone()));
                }
            }
        }
        let template_tags: HashMap<usize, bool> = templates
            .values()
            .map(|t| {
                let has = serde_json::to_string(&**t)
                    .map(|s| s.contains("{{"))
                    .unwrap_or(true);
                (Arc::as_ptr(t) as usize, has)
            })
            .collect();
        let entry = resource
            .spec
            .entrypoint
            .clone()
            .ok_or_else(|| EngineError::Invalid("spec.entrypoint is not set".into()))?;
        if !templates.contains_key(&(TemplateScope::Local, entry.clone())) {
            return Err(EngineError::Invalid(format!(
                "entrypoint template {entry:?} not found"
            )));
        }
        for (name, _) in overrides {
            if !resource
                .spec
                .arguments
                .parameters
                .iter()
                .any(|p| &p.name == name)
            {
                let known: Vec<&str> = resource
                    .spec
                    .arguments
                    .parameters
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect();
                return Err(EngineError::Invalid(format!(
                    "parameter {name:?} is not declared in spec.arguments.parameters (declared: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                )));
            }
        }
        let mut globals = BTreeMap::new();
        globals.insert("workflow.name".into(), id.name.clone());
        globals.insert("workflow.namespace".into(), id.namespace.clone());
        globals.insert("workflow.uid".into(), id.uid.clone());
        globals.insert(
            "workflow.serviceAccountName".into(),
            resource
                .spec
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".into()),
        );
        globals.insert("workflow.status".into(), "Running".into());
        for (k, v) in &resource.metadata.labels {
            globals.insert(format!("workflow.labels.{k}"), v.0.clone());
        }
        for (k, v) in &resource.metadata.annotations {
            globals.insert(format!("workflow.annotations.{k}"), v.0.clone());
        }
        let mut params = Vec::new();
        for p in &resource.spec.arguments.parameters {
            let value = overrides
                .iter()
                .rev()
                .find(|(n, _)| n == &p.name)
                .map(|(_, v)| v.clone())
                .or_else(|| p.value.as_ref().map(|v| v.0.clone()))
                .or_else(|| p.default.as_ref().map(|v| v.0.clone()))
                .ok_or_else(|| {
                    EngineError::Invalid(format!(
                        "workflow parameter {:?} has no value; pass it with -p {}=VALUE",
                        p.name, p.name
                    ))
                })?;
            if !p.r#enum.is_empty() && !p.r#enum.iter().any(|e| e.0 == value) {
                let allowed: Vec<&str> = p.r#enum.iter().map(|e| e.as_str()).collect();
                return Err(EngineError::Invalid(format!(
                    "workflow parameter {:?} is {value:?}, which is not one of its enum values [{}]",
                    p.name,
                    allowed.join(", ")
                )));
            }
            params.push((p.name.clone(), value));
        }
        let params_json = serde_json::Value::Array(
            params
                .iter()
                .map(|(n, v)| serde_json::json!({"name": n, "value": v}))
                .collect(),
        );
        for (n, v) in &params {
            globals.insert(format!("workflow.parameters.{n}"), v.clone());
        }
        globals.insert("workflow.parameters.json".into(), params_json.to_string());
        for p in &mut resource.spec.arguments.parameters {
            if let Some((_, v)) = params.iter().find(|(n, _)| n == &p.name) {
                p.value = Some(spec::AnyString(v.clone()));
            }
        }
        Ok(Workflow {
            id,
            resource,
            library,
            templates,
            local_templates,
            template_tags,
            phase: Phase::Pending,
            message: String::new(),
            started_at: None,
            finished_at: None,
            deadline: None,
            nodes: Nodes::default(),
            globals,
            now: 0,
            shutdown: None,
            in_exit_handler: false,
            suspended: false,
            pending: BTreeMap::new(),
            active_pods: 0,
            active_by_boundary: HashMap::new(),
            mutations: 0,
            stack_depth: 0,
            node_limit: limits::MAX_NODES,
            node_limit_hit: None,
            transitions: 0,
            commands: Vec::new(),
            wakeups: BTreeSet::new(),
            pending_exit_hooks: BTreeSet::new(),
            dag_cache: HashMap::new(),
            group_cache: HashMap::new(),
            dirty: BTreeSet::new(),
            deleted: BTreeSet::new(),
        })
    }

    pub fn identity(&self) -> &WorkflowIdentity {
        &self.id
    }
    /// Lowers the most nodes this workflow may have (below [`limits::MAX_NODES`]): for
    /// embedders with tighter budgets, and tests.
    pub fn set_node_limit(&mut self, limit: usize) {
        self.node_limit = limit.min(limits::MAX_NODES);
    }

    /// Whether the whole workflow is suspended.
    pub fn is_suspended(&self) -> bool {
        self.suspended
    }
    pub fn phase(&self) -> Phase {
        self.phase
    }
    pub fn message(&self) -> &str {
        &self.message
    }
    pub fn nodes(&self) -> &Nodes {
        &self.nodes
    }
    /// The ids of nodes removed (by `Retry`) since the last call.
    pub fn take_deleted_nodes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.deleted).into_iter().collect()
    }

    /// The ids of nodes created or changed since the last call, for incremental persistence.
    pub fn take_dirty_nodes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// How many node creations and phase changes happened so far.
    pub fn transitions(&self) -> u64 {
        self.transitions
    }
    pub fn is_finished(&self) -> bool {
        self.finished_at.is_some()
    }
    pub fn started_at(&self) -> Option<i64> {
        self.started_at
    }
    pub fn finished_at(&self) -> Option<i64> {
        self.finished_at
    }
    /// `workflow.outputs.parameters.*` set by `globalName`.
    pub fn global_outputs(&self) -> Vec<(String, String)> {
        self.globals
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("workflow.outputs.parameters.")
                    .map(|n| (n.to_string(), v.clone()))
            })
            .collect()
    }
    /// Node ids with an `Execute` issued and no result yet.
    pub fn running_leaf_nodes(&self) -> impl Iterator<Item = &str> {
        self.pending
            .keys()
            .map(String::as_str)
            .filter(|id| self.nodes.get(id).is_some_and(|n| n.node_type.is_leaf()))
    }

    /// The `Execute` commands of the leaf nodes that are still running, for an executor that
    /// can re-attach to them after a restart instead of declaring them lost.
    pub fn running_leaf_executes(&self) -> Vec<ExecuteNode> {
        self.running_leaf_nodes()
            .filter_map(|id| self.pending.get(id)?.execute.as_deref().cloned())
            .collect()
    }

    /// Applies a batch of inputs and re-evaluates the workflow. Returns the commands to run.
    pub fn step(&mut self, inputs: &[Input]) -> Result<Vec<Command>, EngineError> {
        for input in inputs {
            // Time only moves forward, whatever order inputs arrive in.
            self.now = self.now.max(input.now());
            self.apply(input)?;
        }
        // A node that merely started changes nothing the walk decides on (unless a lifecycle
        // hook watches for running nodes), so a batch of such inputs needs no walk.
        let only_started = inputs
            .iter()
            .all(|i| matches!(i, Input::NodeStarted { .. }));
        let hooks_watch = self.resource.spec.hooks.keys().any(|k| k != "exit");
        let walk_needed = !only_started || hooks_watch;
        if walk_needed && self.started_at.is_some() && !self.is_finished() {
            self.operate();
            // The walk hit the node limit: the workflow cannot go on, so it ends `Error` like
            // an abort (running nodes are failed, exit handlers do not run). Decided from the
            // state alone, so replay agrees.
            if let Some(message) = self.node_limit_hit.take() {
                self.abort_now(&message);
            }
        }
        let mut commands = std::mem::take(&mut self.commands);
        // Ask to be woken for the earliest future timer only; earlier ones have fired.
        let now = self.now;
        self.wakeups.retain(|t| *t > now);
        if let Some(at) = self.wakeups.first() {
            commands.push(Command::WakeAt { at: *at });
        }
        Ok(commands)
    }
}
