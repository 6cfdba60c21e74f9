//! A deterministic simulator for engine tests: a fake clock and an executor that answers each
//! `Execute` with a result chosen by the test.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};

use riposte_engine::{Command, ExecResult, ExecuteNode, Input, Phase, Workflow, WorkflowIdentity};

pub type Behaviour = dyn Fn(&ExecuteNode) -> ExecResult;

pub fn workflow(yaml: &str, params: &[(&str, &str)]) -> Workflow {
    let (loaded, diags) = spec::load("test.yaml", yaml);
    assert!(
        diags.iter().all(|d| d.severity != spec::Severity::Error),
        "{diags:?}"
    );
    let mut library = spec::Library::default();
    loaded.iter().for_each(|l| library.add(l));
    let wf = loaded
        .iter()
        .find_map(|l| match &l.resource {
            spec::Resource::Workflow(spec::Kind::Workflow, w) => Some((**w).clone()),
            _ => None,
        })
        .expect("a Workflow in the test YAML");
    let id = WorkflowIdentity {
        name: "wf".into(),
        namespace: "default".into(),
        uid: "uid-1".into(),
    };
    let params: Vec<(String, String)> = params
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Workflow::new(wf, library, id, &params).expect("valid workflow")
}

/// Interprets a leaf like a tiny shell: `exit N` anywhere in command/args gives exit code N,
/// `echo X` prints X; output parameters named in `outputs` are produced.
pub fn shell_like(outputs: BTreeMap<String, String>) -> impl Fn(&ExecuteNode) -> ExecResult {
    move |n: &ExecuteNode| {
        let c = n
            .template
            .container
            .clone()
            .or_else(|| n.template.script.clone().map(|s| s.container))
            .unwrap_or_default();
        let words: Vec<String> = c
            .command
            .iter()
            .chain(c.args.iter())
            .map(|s| s.0.clone())
            .collect();
        let text = words.join(" ");
        let code = text
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .find(|w| w[0] == "exit")
            .and_then(|w| {
                w[1].trim_matches(|c: char| !c.is_ascii_digit())
                    .parse::<i32>()
                    .ok()
            })
            .unwrap_or(0);
        let stdout = text
            .split_once("echo ")
            .map(|(_, rest)| rest.to_string())
            .unwrap_or_default();
        let mut r = ExecResult::exited(code, &stdout);
        for (name, _) in &n.output_paths {
            r.parameters
                .insert(name.clone(), outputs.get(name).cloned());
        }
        r
    }
}

/// Everything a simulated run produced.
pub struct Run {
    pub wf: Workflow,
    pub history: Vec<Vec<Input>>,
    /// Execute commands in the order they were issued.
    pub executed: Vec<ExecuteNode>,
    pub cancelled: Vec<String>,
    pub max_concurrent: usize,
}

/// Runs to completion: every Execute takes `step_ms`, results come back in issue order, and
/// wake-ups advance the clock. `interventions` are extra inputs delivered when the clock
/// reaches their time (resume, stop).
pub fn simulate(
    wf: Workflow,
    behaviour: &Behaviour,
    step_ms: i64,
    interventions: Vec<Input>,
) -> Run {
    simulate_from(
        wf,
        vec![Input::Start { now: 1_000_000 }],
        behaviour,
        step_ms,
        interventions,
    )
}

/// Like [`simulate`], starting with `first` (e.g. a `Retry` of a finished workflow).
pub fn simulate_from(
    mut wf: Workflow,
    first: Vec<Input>,
    behaviour: &Behaviour,
    step_ms: i64,
    mut interventions: Vec<Input>,
) -> Run {
    let mut now = first.iter().map(Input::now).max().unwrap_or(1_000_000);
    let mut history = vec![first];
    let mut commands = wf.step(&history[0]).expect("start");
    let mut running: Vec<(i64, ExecuteNode)> = Vec::new();
    let mut executed = Vec::new();
    let mut cancelled = Vec::new();
    let mut wake: Option<i64> = None;
    let mut max_concurrent = 0;
    interventions.sort_by_key(|i| i.now());
    let mut interventions = std::collections::VecDeque::from(interventions);
    for _ in 0..100_000 {
        for c in commands.drain(..) {
            match c {
                Command::Execute(n) => {
                    executed.push((*n).clone());
                    running.push((now + step_ms, *n));
                }
                Command::Cancel { node_id } => {
                    running.retain(|(_, n)| n.node_id != node_id);
                    cancelled.push(node_id);
                }
                Command::WakeAt { at } => wake = Some(wake.map_or(at, |w: i64| w.min(at))),
            }
        }
        max_concurrent = max_concurrent.max(running.len());
        if wf.is_finished() {
            break;
        }
        // The next event: a finishing node, a wake-up or an intervention, whichever is first.
        let next_finish = running.iter().map(|(t, _)| *t).min();
        let next_int = interventions.front().map(Input::now);
        let Some(t) = [next_finish, wake, next_int].into_iter().flatten().min() else {
            panic!(
                "workflow is stuck: nothing running, no timer, phase {:?}\n{}",
                wf.phase(),
                serde_json::to_string_pretty(&wf.to_argo_json()).unwrap_or_default()
            );
        };
        now = now.max(t);
        let mut batch = Vec::new();
        if wake.is_some_and(|w| w <= now) {
            wake = None;
            batch.push(Input::Tick { now });
        }
        while interventions.front().is_some_and(|i| i.now() <= now) {
            batch.push(interventions.pop_front().expect("checked non-empty"));
        }
        let (done, still): (Vec<_>, Vec<_>) = running.into_iter().partition(|(t, _)| *t <= now);
        running = still;
        for (_, n) in done {
            batch.push(Input::NodeStarted {
                now,
                node_id: n.node_id.clone(),
            });
            batch.push(Input::NodeFinished {
                now,
                node_id: n.node_id.clone(),
                result: behaviour(&n),
            });
        }
        commands = wf.step(&batch).expect("engine accepts the batch");
        history.push(batch);
    }
    assert!(wf.is_finished(), "did not finish");
    Run {
        wf,
        history,
        executed,
        cancelled,
        max_concurrent,
    }
}

/// Node phase and message by node name.
pub fn nodes(wf: &Workflow) -> HashMap<String, (Phase, String)> {
    wf.nodes()
        .iter()
        .map(|n| (n.name.clone(), (n.phase, n.message.clone())))
        .collect()
}
