//! Argo's documented behaviour, case by case: node names, ids, types, phases and messages.

mod support;

use std::collections::BTreeMap;

use riposte_engine::{ExecResult, Input, NodeType, Phase, fnv32a};
use support::{nodes, shell_like, simulate, workflow};

const HEAD: &str =
    "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: wf\nspec:\n";

fn run_yaml(body: &str) -> support::Run {
    let wf = workflow(&format!("{HEAD}{body}"), &[]);
    simulate(wf, &shell_like(BTreeMap::new()), 1000, Vec::new())
}

fn check(body: &str, want_phase: Phase, want_nodes: &[(&str, Phase, &str)]) -> support::Run {
    let run = run_yaml(body);
    let got = nodes(&run.wf);
    assert_eq!(run.wf.phase(), want_phase, "{:#?}", got);
    for (name, phase, msg) in want_nodes {
        let (p, m) = got
            .get(*name)
            .unwrap_or_else(|| panic!("no node {name:?} in {:#?}", got.keys()));
        assert_eq!((p, m.as_str()), (phase, *msg), "node {name}");
    }
    run
}

const STEPS: &str = r#"
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: a, template: ok}
    - - {name: b, template: fail}
      - {name: c, template: ok}
    - - {name: d, template: ok}
  - name: ok
    container: {image: busybox, command: [sh, -c, "exit 0"]}
  - name: fail
    container: {image: busybox, command: [sh, -c, "exit 1"]}
"#;

#[test]
fn steps_names_ids_and_failure_messages() {
    let b_id = format!("wf-{}", fnv32a("wf[1].b"));
    let run = check(
        STEPS,
        Phase::Failed,
        &[
            ("wf", Phase::Failed, &format!("child '{b_id}' failed")),
            ("wf[0]", Phase::Succeeded, ""),
            ("wf[0].a", Phase::Succeeded, ""),
            ("wf[1]", Phase::Failed, &format!("child '{b_id}' failed")),
            ("wf[1].b", Phase::Failed, "main: Error (exit code 1)"),
            ("wf[1].c", Phase::Succeeded, ""),
        ],
    );
    assert!(
        !nodes(&run.wf).contains_key("wf[2].d"),
        "a failed step group stops the steps"
    );
    let b = run
        .wf
        .nodes()
        .get(&b_id)
        .expect("node id is wf-fnv32a(name)");
    assert_eq!(b.node_type, NodeType::Pod);
    assert_eq!(run.wf.message(), format!("child '{b_id}' failed"));
    let json = run.wf.to_argo_json();
    assert_eq!(json["status"]["nodes"]["wf"]["type"], "Steps");
    assert_eq!(json["status"]["nodes"][&b_id]["displayName"], "b");
    assert_eq!(json["status"]["progress"], "2/3");
}

#[test]
fn continue_on_failed_lets_steps_go_on() {
    let body = STEPS.replace(
        "{name: b, template: fail}",
        "{name: b, template: fail, continueOn: {failed: true}}",
    );
    check(
        &body,
        Phase::Succeeded,
        &[
            ("wf[2].d", Phase::Succeeded, ""),
            ("wf[1].b", Phase::Failed, "main: Error (exit code 1)"),
        ],
    );
}

#[test]
fn when_false_skips_with_argos_message() {
    let body = r#"
  entrypoint: main
  arguments: {parameters: [{name: coin, value: tails}]}
  templates:
  - name: main
    steps:
    - - {name: heads, template: ok, when: "{{workflow.parameters.coin}} == heads"}
      - {name: tails, template: ok, when: "{{workflow.parameters.coin}} == tails"}
  - name: ok
    container: {image: busybox, command: [sh, -c, "exit 0"]}
"#;
    let run = check(
        body,
        Phase::Succeeded,
        &[
            (
                "wf[0].heads",
                Phase::Skipped,
                "when 'tails == heads' evaluated false",
            ),
            ("wf[0].tails", Phase::Succeeded, ""),
        ],
    );
    let heads = run
        .wf
        .nodes()
        .iter()
        .find(|n| n.name == "wf[0].heads")
        .expect("skipped node exists");
    assert_eq!(heads.node_type, NodeType::Skipped);
}

const DIAMOND: &str = r#"
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: A, template: ok}
      - {name: B, template: ok, depends: A}
      - {name: C, template: fail, depends: A}
      - {name: D, template: ok, depends: "B && C"}
      - {name: E, template: ok, depends: "A && (C.Succeeded || C.Failed)"}
      - {name: F, template: ok, depends: "B || C"}
  - name: ok
    container: {image: busybox, command: [sh, -c, "exit 0"]}
  - name: fail
    container: {image: busybox, command: [sh, -c, "exit 1"]}
"#;

#[test]
fn dag_depends_omits_and_inherits_failure() {
    // D is omitted, so it inherits C's failure as a target: the DAG fails.
    check(
        DIAMOND,
        Phase::Failed,
        &[
            ("wf.A", Phase::Succeeded, ""),
            ("wf.C", Phase::Failed, "main: Error (exit code 1)"),
            ("wf.D", Phase::Omitted, "omitted: depends condition not met"),
            ("wf.E", Phase::Succeeded, ""),
            ("wf.F", Phase::Succeeded, ""),
            ("wf", Phase::Failed, ""),
        ],
    );
}

#[test]
fn dag_targets_run_only_what_they_need() {
    let body = DIAMOND.replace("    dag:\n", "    dag:\n      target: B\n");
    let run = check(
        &body,
        Phase::Succeeded,
        &[
            ("wf.A", Phase::Succeeded, ""),
            ("wf.B", Phase::Succeeded, ""),
        ],
    );
    assert!(!nodes(&run.wf).contains_key("wf.C"));
}

#[test]
fn dependencies_list_with_continue_on() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: A, template: fail, continueOn: {failed: true}}
      - {name: B, template: ok, dependencies: [A]}
  - name: ok
    container: {image: busybox, command: [sh, -c, "exit 0"]}
  - name: fail
    container: {image: busybox, command: [sh, -c, "exit 1"]}
"#;
    check(
        body,
        Phase::Succeeded,
        &[
            ("wf.A", Phase::Failed, "main: Error (exit code 1)"),
            ("wf.B", Phase::Succeeded, ""),
        ],
    );
}

#[test]
fn loops_name_children_and_aggregate_outputs() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: gen, template: echo, arguments: {parameters: [{name: m, value: "{{item}}"}]}, withItems: [a, b]}
      - {name: maps, template: echo, arguments: {parameters: [{name: m, value: "{{item.os}}"}]}, withItems: [{os: debian, v: 9}]}
      - {name: seq, template: echo, arguments: {parameters: [{name: m, value: "{{item}}"}]}, withSequence: {count: "2", format: "n%02d"}}
    - - {name: use, template: echo, arguments: {parameters: [{name: m, value: "{{steps.gen.outputs.result}}"}]}}
    - - {name: fan, template: echo, arguments: {parameters: [{name: m, value: "{{item}}"}]}, withParam: "{{steps.gen.outputs.result}}"}
  - name: echo
    inputs: {parameters: [{name: m}]}
    container: {image: busybox, command: [echo, "{{inputs.parameters.m}}"]}
"#;
    let run = check(
        body,
        Phase::Succeeded,
        &[
            ("wf[0].gen(0:a)", Phase::Succeeded, ""),
            ("wf[0].gen(1:b)", Phase::Succeeded, ""),
            ("wf[0].maps(0:os:debian,v:9)", Phase::Succeeded, ""),
            ("wf[0].seq(1:n01)", Phase::Succeeded, ""),
            ("wf[2].fan(1:b)", Phase::Succeeded, ""),
        ],
    );
    let use_node = run
        .wf
        .nodes()
        .iter()
        .find(|n| n.name == "wf[1].use")
        .expect("use ran");
    assert_eq!(
        use_node.inputs,
        vec![("m".to_string(), r#"["a","b"]"#.to_string())]
    );
}

#[test]
fn retries_name_attempts_and_give_up() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    retryStrategy: {limit: "2", backoff: {duration: "10s", factor: "2"}}
    container: {image: busybox, command: [sh, -c, "exit 3"]}
"#;
    let run = check(
        body,
        Phase::Failed,
        &[
            ("wf", Phase::Failed, "No more retries left"),
            ("wf(0)", Phase::Failed, "main: Error (exit code 3)"),
            ("wf(2)", Phase::Failed, "main: Error (exit code 3)"),
        ],
    );
    assert_eq!(run.executed.len(), 3);
    let root = run.wf.nodes().get("wf").expect("retry node");
    assert_eq!(root.node_type, NodeType::Retry);
    // Backoff: attempt 1 starts 10s after attempt 0 ends, attempt 2 20s after attempt 1.
    let started: Vec<i64> = ["wf(0)", "wf(1)", "wf(2)"]
        .iter()
        .map(|n| {
            run.wf
                .nodes()
                .iter()
                .find(|x| x.name == *n)
                .expect("attempt")
                .started_at
        })
        .collect();
    assert_eq!(started[1] - started[0], 1000 + 10_000);
    assert_eq!(started[2] - started[1], 1000 + 20_000);
}

#[test]
fn retry_policy_on_error_does_not_retry_failures() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    retryStrategy: {limit: 3, retryPolicy: OnError}
    container: {image: busybox, command: [sh, -c, "exit 1"]}
"#;
    let run = check(
        body,
        Phase::Failed,
        &[("wf", Phase::Failed, "main: Error (exit code 1)")],
    );
    assert_eq!(run.executed.len(), 1);
}

#[test]
fn retry_expression_reads_last_retry() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    retryStrategy: {limit: 5, expression: "asInt(lastRetry.exitCode) > 1"}
    container: {image: busybox, command: [sh, -c, "exit 1"]}
"#;
    let run = check(
        body,
        Phase::Failed,
        &[(
            "wf",
            Phase::Failed,
            "retryStrategy.expression evaluated to false",
        )],
    );
    assert_eq!(run.executed.len(), 1);
}

#[test]
fn exit_handler_sees_workflow_status() {
    let body = r#"
  entrypoint: main
  onExit: bye
  templates:
  - name: main
    container: {image: busybox, command: [sh, -c, "exit 1"]}
  - name: bye
    steps:
    - - {name: cry, template: ok, when: "{{workflow.status}} == Failed"}
      - {name: cheer, template: ok, when: "{{workflow.status}} == Succeeded"}
  - name: ok
    container: {image: busybox, command: [sh, -c, "exit 0"]}
"#;
    check(
        body,
        Phase::Failed,
        &[
            ("wf.onExit[0].cry", Phase::Succeeded, ""),
            (
                "wf.onExit[0].cheer",
                Phase::Skipped,
                "when 'Failed == Succeeded' evaluated false",
            ),
        ],
    );
}

#[test]
fn step_level_exit_hook_runs_after_the_step() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: a, template: ok, onExit: ok}
    - - {name: b, template: ok, hooks: {exit: {template: ok}}}
  - name: ok
    container: {image: busybox, command: [sh, -c, "exit 0"]}
"#;
    let run = check(
        body,
        Phase::Succeeded,
        &[
            ("wf[0].a.onExit", Phase::Succeeded, ""),
            ("wf[1].b.onExit", Phase::Succeeded, ""),
        ],
    );
    let order: Vec<&str> = run.executed.iter().map(|e| e.node_name.as_str()).collect();
    assert_eq!(
        order,
        vec!["wf[0].a", "wf[0].a.onExit", "wf[1].b", "wf[1].b.onExit"]
    );
}

#[test]
fn parallelism_limits_running_pods() {
    let body = r#"
  entrypoint: main
  parallelism: 2
  templates:
  - name: main
    steps:
    - - {name: s, template: ok, withSequence: {count: "7"}}
  - name: ok
    container: {image: busybox, command: [sh, -c, "exit 0"]}
"#;
    let run = check(body, Phase::Succeeded, &[]);
    assert_eq!(run.executed.len(), 7);
    assert_eq!(run.max_concurrent, 2);
}

#[test]
fn template_parallelism_limits_children() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    parallelism: 3
    dag:
      tasks:
      - {name: t, template: ok, withItems: [1, 2, 3, 4, 5, 6, 7, 8]}
  - name: ok
    container: {image: busybox, command: [sh, -c, "exit 0"]}
"#;
    let run = check(body, Phase::Succeeded, &[("wf.t", Phase::Succeeded, "")]);
    assert_eq!(run.max_concurrent, 3);
    assert_eq!(
        run.wf
            .nodes()
            .iter()
            .find(|n| n.name == "wf.t")
            .map(|n| n.node_type),
        Some(NodeType::TaskGroup)
    );
}

#[test]
fn outputs_parameters_defaults_and_global_outputs() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: gen, template: gen}
    - - {name: use, template: echo, arguments: {parameters: [{name: m, value: "{{steps.gen.outputs.parameters.p}}-{{steps.gen.outputs.parameters.q}}"}]}}
  - name: gen
    container: {image: busybox, command: [sh, -c, "exit 0"]}
    outputs:
      parameters:
      - {name: p, valueFrom: {path: /tmp/p}, globalName: gp}
      - {name: q, valueFrom: {path: /tmp/missing, default: dflt}}
  - name: echo
    inputs: {parameters: [{name: m}]}
    container: {image: busybox, command: [echo, "{{inputs.parameters.m}}"]}
"#;
    let wf = workflow(&format!("{HEAD}{body}"), &[]);
    let run = simulate(
        wf,
        &shell_like([("p".to_string(), "hello".to_string())].into()),
        1000,
        Vec::new(),
    );
    assert_eq!(run.wf.phase(), Phase::Succeeded);
    let use_node = run
        .wf
        .nodes()
        .iter()
        .find(|n| n.name == "wf[1].use")
        .expect("use ran");
    assert_eq!(use_node.inputs[0].1, "hello-dflt");
    assert_eq!(
        run.wf.global_outputs(),
        vec![("gp".to_string(), "hello".to_string())]
    );
}

#[test]
fn missing_output_file_without_default_is_an_error() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    container: {image: busybox, command: [sh, -c, "exit 0"]}
    outputs: {parameters: [{name: p, valueFrom: {path: /tmp/p}}]}
"#;
    let run = run_yaml(body);
    assert_eq!(run.wf.phase(), Phase::Error);
    assert!(
        run.wf
            .message()
            .contains("failed to read output parameter \"p\""),
        "{}",
        run.wf.message()
    );
}

#[test]
fn input_enum_and_missing_inputs_are_errors() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: a, template: t, arguments: {parameters: [{name: x, value: "nope"}]}}
  - name: t
    inputs: {parameters: [{name: x, enum: [yes-please, ok]}]}
    container: {image: busybox, command: [sh, -c, "exit 0"]}
"#;
    let run = run_yaml(body);
    assert_eq!(run.wf.phase(), Phase::Failed);
    let (p, m) = &nodes(&run.wf)["wf[0].a"];
    assert_eq!(*p, Phase::Error);
    assert!(
        m.contains("value 'nope' for inputs.parameters.x is not one of [yes-please, ok]"),
        "{m}"
    );
}

#[test]
fn suspend_waits_for_resume_and_takes_supplied_outputs() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: approve, template: approve}
    - - {name: act, template: echo, arguments: {parameters: [{name: m, value: "{{steps.approve.outputs.parameters.ok}}"}]}}
  - name: approve
    suspend: {}
    outputs: {parameters: [{name: ok, valueFrom: {supplied: {}}}]}
  - name: echo
    inputs: {parameters: [{name: m}]}
    container: {image: busybox, command: [echo, "{{inputs.parameters.m}}"]}
"#;
    let wf = workflow(&format!("{HEAD}{body}"), &[]);
    let resume = Input::Resume {
        now: 1_060_000,
        node: Some("approve".into()),
        parameters: [("ok".to_string(), "YES".to_string())].into(),
    };
    let run = simulate(wf, &shell_like(BTreeMap::new()), 1000, vec![resume]);
    assert_eq!(run.wf.phase(), Phase::Succeeded);
    let approve = run
        .wf
        .nodes()
        .iter()
        .find(|n| n.name == "wf[0].approve")
        .expect("suspend node");
    assert_eq!(approve.node_type, NodeType::Suspend);
    assert_eq!(
        approve.finished_at,
        Some(1_060_000),
        "finishes when resumed, not before"
    );
    assert_eq!(
        run.executed[0]
            .template
            .container
            .as_ref()
            .map(|c| c.command[1].0.clone()),
        Some("YES".to_string())
    );
}

#[test]
fn suspend_duration_resumes_by_itself() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    suspend: {duration: "30s"}
"#;
    let run = run_yaml(body);
    assert_eq!(run.wf.phase(), Phase::Succeeded);
    let n = run.wf.nodes().get("wf").expect("root");
    assert_eq!(n.finished_at.map(|f| f - n.started_at), Some(30_000));
}

#[test]
fn workflow_deadline_fails_running_steps() {
    let body = r#"
  entrypoint: main
  activeDeadlineSeconds: 5
  templates:
  - name: main
    container: {image: busybox, command: [sh, -c, "exit 0"]}
"#;
    let wf = workflow(&format!("{HEAD}{body}"), &[]);
    let run = simulate(wf, &shell_like(BTreeMap::new()), 60_000, Vec::new());
    assert_eq!(run.wf.phase(), Phase::Failed);
    assert_eq!(run.wf.message(), "Step exceeded its deadline");
    assert_eq!(run.cancelled, vec!["wf".to_string()]);
}

#[test]
fn stop_runs_exit_handler_and_terminate_does_not() {
    let body = r#"
  entrypoint: main
  onExit: bye
  templates:
  - name: main
    container: {image: busybox, command: [sh, -c, "exit 0"]}
  - name: bye
    container: {image: busybox, command: [sh, -c, "exit 0"]}
"#;
    for (terminate, exit_runs) in [(false, true), (true, false)] {
        let wf = workflow(&format!("{HEAD}{body}"), &[]);
        let stop = Input::Stop {
            now: 1_000_500,
            terminate,
            message: None,
        };
        let run = simulate(wf, &shell_like(BTreeMap::new()), 60_000, vec![stop]);
        assert_eq!(run.wf.phase(), Phase::Failed);
        let strategy = if terminate { "Terminate" } else { "Stop" };
        assert_eq!(
            run.wf.message(),
            format!("Stopped with strategy '{strategy}'")
        );
        assert_eq!(
            nodes(&run.wf).contains_key("wf.onExit"),
            exit_runs,
            "terminate={terminate}"
        );
    }
}

#[test]
fn expression_tags_and_workflow_variables() {
    let body = r#"
  entrypoint: main
  arguments: {parameters: [{name: n, value: "4"}, {name: cfg, value: '{"a": {"b": 7}}'}]}
  templates:
  - name: main
    container:
      image: busybox
      command: [echo, "{{=asInt(workflow.parameters.n) * 10}} {{=jsonpath(workflow.parameters.cfg, '$.a.b')}} {{workflow.name}} {{workflow.namespace}}"]
"#;
    let run = run_yaml(body);
    assert_eq!(
        run.executed[0]
            .template
            .container
            .as_ref()
            .map(|c| c.command[1].0.clone()),
        Some("40 7 wf default".to_string())
    );
}

#[test]
fn unresolved_variables_error_the_node() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    container: {image: busybox, command: [echo, "{{workflow.parameters.nope}}"]}
"#;
    let run = run_yaml(body);
    assert_eq!(run.wf.phase(), Phase::Error);
    assert_eq!(
        run.wf.message(),
        "failed to resolve {{workflow.parameters.nope}}"
    );
}

#[test]
fn template_ref_resolves_in_its_own_scope() {
    let yaml = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {{name: lib}}\nspec:\n  templates:\n  - name: outer\n    steps:\n    - - {{name: in, template: inner}}\n  - name: inner\n    container: {{image: busybox, command: [sh, -c, 'exit 0']}}\n---\n{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: x, templateRef: {{name: lib, template: outer}}}}\n"
    );
    let wf = workflow(&yaml, &[]);
    let run = simulate(wf, &shell_like(BTreeMap::new()), 1000, Vec::new());
    assert_eq!(run.wf.phase(), Phase::Succeeded);
    let json = run.wf.to_argo_json();
    let inner = run
        .wf
        .nodes()
        .iter()
        .find(|n| n.name == "wf[0].x[0].in")
        .expect("inner step");
    assert_eq!(
        json["status"]["nodes"][&inner.id]["templateScope"],
        "namespaced/lib"
    );
}

#[test]
fn http_nodes_are_leaves_of_type_http() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    http: {url: "http://example.invalid/{{workflow.name}}"}
"#;
    let wf = workflow(&format!("{HEAD}{body}"), &[]);
    let ok = |_: &riposte_engine::ExecuteNode| ExecResult::succeeded(0, "body");
    let run = simulate(wf, &ok, 1000, Vec::new());
    assert_eq!(
        run.wf.nodes().get("wf").map(|n| n.node_type),
        Some(NodeType::HTTP)
    );
    assert_eq!(
        run.executed[0]
            .template
            .http
            .as_ref()
            .map(|h| h.url.clone()),
        Some("http://example.invalid/wf".to_string())
    );
}

#[test]
fn parameters_must_be_declared_and_enums_respected() {
    let yaml = format!(
        "{HEAD}  entrypoint: main\n  arguments: {{parameters: [{{name: a, value: x, enum: [x, y]}}]}}\n  templates:\n  - name: main\n    suspend: {{}}\n"
    );
    let (loaded, _) = spec::load("t.yaml", &yaml);
    let spec::Resource::Workflow(_, wf) = &loaded[0].resource else {
        panic!("workflow")
    };
    let id = || riposte_engine::WorkflowIdentity {
        name: "wf".into(),
        namespace: "ns".into(),
        uid: "u".into(),
    };
    let err = riposte_engine::Workflow::new(
        (**wf).clone(),
        Default::default(),
        id(),
        &[("b".into(), "1".into())],
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("parameter \"b\" is not declared"),
        "{err}"
    );
    let err = riposte_engine::Workflow::new(
        (**wf).clone(),
        Default::default(),
        id(),
        &[("a".into(), "z".into())],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("not one of its enum values [x, y]"),
        "{err}"
    );
}

#[test]
fn retry_reruns_failed_nodes_only_and_reopens_parents() {
    let body = r#"
  entrypoint: main
  onExit: bye
  templates:
  - name: main
    steps:
    - - {name: a, template: ok}
    - - {name: b, template: flaky}
    - - {name: c, template: ok}
  - name: ok
    container: {image: busybox, command: [sh, -c, "exit 0"]}
  - name: flaky
    container: {image: busybox, command: [sh, -c, "flaky"]}
  - name: bye
    container: {image: busybox, command: [sh, -c, "exit 0"]}
"#;
    let wf = workflow(&format!("{HEAD}{body}"), &[]);
    let fail_flaky = std::rc::Rc::new(std::cell::Cell::new(true));
    let fail = fail_flaky.clone();
    let behave = move |n: &riposte_engine::ExecuteNode| {
        let flaky = n.node_name.ends_with(".b");
        if flaky && fail.get() {
            ExecResult::exited(1, "")
        } else {
            ExecResult::succeeded(0, "")
        }
    };
    let first = simulate(wf, &behave, 1000, Vec::new());
    assert_eq!(first.wf.phase(), Phase::Failed);
    assert!(!nodes(&first.wf).contains_key("wf[2].c"));
    fail_flaky.set(false);
    let mut wf = first.wf;
    let _ = wf.take_deleted_nodes();
    let retry = Input::Retry {
        now: 5_000_000,
        restart_successful: false,
        node_selector: None,
        parameters: Vec::new(),
    };
    let second = support::simulate_from(wf, vec![retry], &behave, 1000, Vec::new());
    let got = nodes(&second.wf);
    assert_eq!(second.wf.phase(), Phase::Succeeded, "{got:#?}");
    assert_eq!(got["wf[1].b"].0, Phase::Succeeded);
    assert_eq!(got["wf[2].c"].0, Phase::Succeeded);
    // `a` succeeded before: it did not run again; the exit handler ran again.
    let ran: Vec<&str> = second
        .executed
        .iter()
        .map(|e| e.node_name.as_str())
        .collect();
    assert_eq!(ran, vec!["wf[1].b", "wf[2].c", "wf.onExit"]);
}

#[test]
fn suspending_the_workflow_holds_new_steps_until_resumed() {
    let body = r#"
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: a, template: ok}
    - - {name: b, template: ok}
  - name: ok
    container: {image: busybox, command: [sh, -c, "exit 0"]}
"#;
    let wf = workflow(&format!("{HEAD}{body}"), &[]);
    // Suspended while `a` runs (it finishes at +10s); resumed at +60s.
    let interventions = vec![
        Input::Suspend { now: 1_005_000 },
        Input::Resume {
            now: 1_060_000,
            node: None,
            parameters: Default::default(),
        },
    ];
    let run = simulate(wf, &shell_like(BTreeMap::new()), 10_000, interventions);
    assert_eq!(run.wf.phase(), Phase::Succeeded);
    let b = run
        .wf
        .nodes()
        .iter()
        .find(|n| n.name == "wf[1].b")
        .expect("b ran");
    assert_eq!(b.started_at, 1_060_000, "b started only when resumed");
}

/// Workflow-level pod settings reach every container/script leaf as defaults (Argo), so the
/// Kubernetes executor can put them in each step's pod; the template's own values win.
#[test]
fn workflow_pod_settings_are_defaults_of_each_leaf() {
    let mut wf = support::workflow(
        r#"
apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: podwide}
spec:
  entrypoint: s
  serviceAccountName: responder
  nodeSelector: {pool: general, zone: a}
  tolerations: [{key: quarantine, operator: Exists}]
  volumes: [{name: shared, emptyDir: {}}, {name: own, emptyDir: {}}]
  templates:
  - name: s
    nodeSelector: {pool: quarantine}
    volumes: [{name: own, configMap: {name: mine}}]
    container: {image: alpine, command: [sh, -c, "true"]}
"#,
        &[],
    );
    let cmds = wf
        .step(&[riposte_engine::Input::Start { now: 0 }])
        .expect("start");
    let run = cmds
        .iter()
        .find_map(|c| match c {
            riposte_engine::Command::Execute(n) => Some(n.clone()),
            _ => None,
        })
        .expect("an Execute");
    let t = &run.template;
    assert_eq!(t.service_account_name.as_deref(), Some("responder"));
    assert_eq!(
        t.node_selector["pool"], "quarantine",
        "the template's own value wins"
    );
    assert_eq!(t.node_selector["zone"], "a");
    assert_eq!(t.extra["tolerations"][0]["key"], "quarantine");
    let volumes = t.extra["volumes"].as_array().expect("volumes");
    assert_eq!(volumes.len(), 2);
    assert_eq!(
        volumes[0]["configMap"]["name"], "mine",
        "the template's volume of that name wins"
    );
    assert_eq!(volumes[1]["name"], "shared");
}

/// Loops have documented limits: a hostile `withSequence.count` errors at once instead of
/// allocating, as do sequences that overflow and `withItems` past the limit.
#[test]
fn loop_sizes_are_bounded() {
    let body = |seq: &str| {
        format!(
            r#"
  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: many
        template: ok
        withSequence: {seq}
  - name: ok
    container: {{image: busybox, command: [sh, -c, "exit 0"]}}
"#
        )
    };
    let cases: &[(&str, &str)] = &[
        ("{count: '10000000000'}", "a loop may have at most 100000"),
        ("{count: '-3'}", "is negative"),
        (
            "{start: '9223372036854775807', count: '2'}",
            "does not fit in 64-bit integers",
        ),
        (
            "{start: '-9223372036854775807', end: '9223372036854775807'}",
            "does not fit in 64-bit integers",
        ),
    ];
    for (seq, want) in cases {
        let started = std::time::Instant::now();
        let run = run_yaml(&body(seq));
        assert!(
            matches!(run.wf.phase(), Phase::Failed | Phase::Error),
            "{seq}: {:?}",
            run.wf.phase()
        );
        let got = nodes(&run.wf);
        let all: Vec<&String> = got.values().map(|(_, m)| m).collect();
        assert!(
            all.iter().any(|m| m.contains(want)) || run.wf.message().contains(want),
            "{seq}: {all:?} / {}",
            run.wf.message()
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{seq}"
        );
    }
}

/// A template that calls itself at once, forever, errors at a depth limit instead of
/// overflowing the controller's stack (which would abort every workflow, not fail one).
#[test]
fn unbounded_recursion_errors_instead_of_crashing() {
    for body in [
        r#"
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: again, template: main}
"#,
        r#"
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: again, template: main}
"#,
    ] {
        let run = run_yaml(body);
        assert!(
            matches!(run.wf.phase(), Phase::Failed | Phase::Error),
            "{:?}",
            run.wf.phase()
        );
        let got = nodes(&run.wf);
        assert!(
            got.values().any(|(_, m)| m.contains("nested")),
            "{:?}",
            got.values().map(|(_, m)| m).collect::<Vec<_>>()
        );
    }
}

/// Recursion in breadth: a DAG whose two tasks both call the DAG would make 2^100 nodes
/// under the depth limit alone (found by fuzzing the submit path). The node limit ends the
/// workflow as `Error` (here lowered to 2,000 to keep the test quick).
#[test]
fn recursion_in_breadth_stops_at_the_node_limit() {
    let mut wf = workflow(
        &format!(
            "{HEAD}{}",
            r#"
  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: a, template: main}
      - {name: b, template: main}
"#
        ),
        &[],
    );
    wf.set_node_limit(2_000);
    let run = simulate(wf, &shell_like(BTreeMap::new()), 1000, Vec::new());
    assert_eq!(run.wf.phase(), Phase::Error);
    assert!(
        run.wf.message().contains("reached 2000 nodes"),
        "{}",
        run.wf.message()
    );
    assert!(run.wf.nodes().len() <= 2_000);
}
