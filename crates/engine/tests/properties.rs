//! Properties of the engine over random DAGs: every node reaches a terminal phase exactly once,
//! no task runs before its dependencies finished, and the same inputs give the same state
//! (replaying the recorded history reproduces it).

mod support;

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use riposte_engine::{ExecResult, Input, Phase, Workflow};

/// A random DAG: task i may depend on tasks before it; each task fails or not.
#[derive(Debug, Clone)]
struct Dag {
    deps: Vec<Vec<usize>>,
    fails: Vec<bool>,
    fail_fast: bool,
    enhanced: bool,
}

fn dag_strategy() -> impl Strategy<Value = Dag> {
    (1usize..14, any::<bool>(), any::<bool>()).prop_flat_map(|(n, fail_fast, enhanced)| {
        let deps = (0..n)
            .map(|i| {
                if i == 0 {
                    Just(Vec::new()).boxed()
                } else {
                    proptest::sample::subsequence((0..i).collect::<Vec<_>>(), 0..=i.min(3)).boxed()
                }
            })
            .collect::<Vec<_>>();
        (
            deps,
            proptest::collection::vec(proptest::bool::weighted(0.2), n),
        )
            .prop_map(move |(deps, fails)| Dag {
                deps,
                fails,
                fail_fast,
                enhanced,
            })
    })
}

fn yaml(d: &Dag) -> String {
    let mut s = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {{name: wf}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      failFast: {}\n      tasks:\n",
        d.fail_fast
    );
    for (i, deps) in d.deps.iter().enumerate() {
        let template = if d.fails[i] { "fail" } else { "ok" };
        s.push_str(&format!(
            "      - name: t{i}\n        template: {template}\n"
        ));
        if !deps.is_empty() {
            let names: Vec<String> = deps.iter().map(|j| format!("t{j}")).collect();
            if d.enhanced {
                // Run after the dependencies whatever their outcome.
                let expr: Vec<String> = names
                    .iter()
                    .map(|n| format!("({n}.Succeeded || {n}.Failed || {n}.Omitted)"))
                    .collect();
                s.push_str(&format!("        depends: \"{}\"\n", expr.join(" && ")));
            } else {
                s.push_str(&format!("        dependencies: [{}]\n", names.join(", ")));
            }
        }
    }
    s.push_str("  - name: ok\n    container: {image: busybox, command: [sh, -c, 'exit 0']}\n");
    s.push_str("  - name: fail\n    container: {image: busybox, command: [sh, -c, 'exit 1']}\n");
    s
}

/// Steps a workflow with its history batch by batch, checking invariants after each step.
fn replay_checked(mut wf: Workflow, history: &[Vec<Input>], d: &Dag) -> Workflow {
    let mut terminal: HashMap<String, Phase> = HashMap::new();
    let mut finished_tasks: Vec<bool> = vec![false; d.deps.len()];
    for batch in history {
        for input in batch {
            if let Input::NodeFinished { node_id, .. } = input
                && let Some(n) = wf.nodes().get(node_id)
                && let Some(i) = n
                    .display_name
                    .strip_prefix('t')
                    .and_then(|x| x.parse::<usize>().ok())
            {
                finished_tasks[i] = true;
            }
        }
        let commands = wf.step(batch).expect("engine accepts recorded history");
        for c in &commands {
            if let riposte_engine::Command::Execute(e) = c {
                let i: usize = e
                    .node_name
                    .trim_start_matches("wf.t")
                    .parse()
                    .expect("task node name");
                for &dep in &d.deps[i] {
                    assert!(
                        finished_tasks[dep],
                        "t{i} started before its dependency t{dep} finished"
                    );
                }
            }
        }
        for n in wf.nodes().iter() {
            if let Some(p) = terminal.get(&n.id) {
                assert_eq!(*p, n.phase, "node {} left its terminal phase {p:?}", n.name);
            } else if n.phase.fulfilled() {
                terminal.insert(n.id.clone(), n.phase);
            }
        }
    }
    wf
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, .. ProptestConfig::default() })]

    #[test]
    fn random_dags_finish_deterministically(d in dag_strategy()) {
        let text = yaml(&d);
        let behave = support::shell_like(BTreeMap::new());
        let run = support::simulate(support::workflow(&text, &[]), &behave, 1000, Vec::new());
        prop_assert!(run.wf.is_finished());
        for n in run.wf.nodes().iter() {
            prop_assert!(n.phase.fulfilled(), "node {} ended {:?}", n.name, n.phase);
        }
        // The workflow fails exactly when some task failed and nothing tolerated it.
        let any_fail = run.wf.nodes().iter().any(|n| n.phase == Phase::Failed && n.name != "wf");
        if !any_fail {
            prop_assert_eq!(run.wf.phase(), Phase::Succeeded);
        }
        // Same history, fresh workflow: same state, and the invariants hold at every step.
        let replayed = replay_checked(support::workflow(&text, &[]), &run.history, &d);
        prop_assert_eq!(replayed.to_argo_json(), run.wf.to_argo_json());
        // And a second independent run gives the same history.
        let again = support::simulate(support::workflow(&text, &[]), &behave, 1000, Vec::new());
        prop_assert_eq!(again.history, run.history);
    }
}

#[test]
fn results_for_unknown_nodes_are_rejected() {
    let d = Dag {
        deps: vec![vec![]],
        fails: vec![false],
        fail_fast: true,
        enhanced: false,
    };
    let mut wf = support::workflow(&yaml(&d), &[]);
    wf.step(&[Input::Start { now: 0 }]).expect("start");
    let err = wf
        .step(&[Input::NodeFinished {
            now: 1,
            node_id: "nope".into(),
            result: ExecResult::succeeded(0, ""),
        }])
        .unwrap_err();
    assert_eq!(err.to_string(), "input for unknown node \"nope\"");
}
