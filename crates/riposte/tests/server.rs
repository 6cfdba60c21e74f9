//! End-to-end tests of `riposte server`: the REST API with Argo's paths and shapes, approvals,
//! and recovery after the server is killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Server, agent, call, phase, start_server};

/// Starts a server on a free port with its own SQLite database under `home`.
fn start(home: &Path) -> Server {
    start_with(home, &[])
}

fn start_with(home: &Path, extra: &[&str]) -> Server {
    start_with_env(home, extra, &[])
}

fn start_with_env(home: &Path, extra: &[&str], env: &[(&str, &Path)]) -> Server {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riposte"));
    cmd.args(["server", "--listen", "127.0.0.1:0"])
        .args(extra)
        .envs(env.iter().map(|(k, v)| (*k, *v)))
        .env("RIPOSTE_HOME", home)
        .env_remove("DATABASE_URL");
    start_server(cmd, |_| {})
}

/// Polls the workflow until `done` holds (a bounded wait on another process).
fn wait_for(base: &str, name: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, wf) = call(
            "GET",
            &format!("{base}/api/v1/workflows/default/{name}"),
            None,
        );
        if done(&wf) {
            return wf;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {name}: {wf}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `riposte replay NAME` on the database: the stored history reaches the stored state.
fn assert_replays(name: &str, database_url: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["replay", name, "--database-url", database_url])
        .output()
        .expect("replay");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn finished(wf: &Value) -> bool {
    matches!(phase(wf), "Succeeded" | "Failed" | "Error")
}

#[test]
fn templates_submit_parameters_and_errors() {
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let base = &s.base;
    let (code, v) = call("GET", &format!("{base}/api/v1/version"), None);
    assert_eq!(code, 200);
    assert!(v["version"].as_str().is_some_and(|v| v.starts_with('v')));

    let template = json!({"template": {
        "metadata": {"name": "greet"},
        "spec": {
            "entrypoint": "main",
            "arguments": {"parameters": [{"name": "who", "value": "world"}]},
            "templates": [{
                "name": "main",
                "inputs": {"parameters": [{"name": "who"}]},
                "container": {"image": "busybox", "command": ["sh", "-c", "echo hello {{inputs.parameters.who}} | tee /tmp/out"]},
                "outputs": {"parameters": [{"name": "greeting", "valueFrom": {"path": "/tmp/out"}, "globalName": "greeting"}]}
            }]
        }
    }});
    let (code, t) = call(
        "POST",
        &format!("{base}/api/v1/workflow-templates/default"),
        Some(template.clone()),
    );
    assert_eq!(code, 200, "{t}");
    assert_eq!(t["metadata"]["name"], "greet");
    let (code, e) = call(
        "POST",
        &format!("{base}/api/v1/workflow-templates/default"),
        Some(template),
    );
    assert_eq!((code, e["code"].as_u64()), (409, Some(6)), "{e}");
    let (_, list) = call(
        "GET",
        &format!("{base}/api/v1/workflow-templates/default"),
        None,
    );
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));

    let submit = json!({"resourceKind": "WorkflowTemplate", "resourceName": "greet", "submitOptions": {"parameters": ["who=riposte"]}});
    let (code, wf) = call(
        "POST",
        &format!("{base}/api/v1/workflows/default/submit"),
        Some(submit),
    );
    assert_eq!(code, 200, "{wf}");
    let name = wf["metadata"]["name"].as_str().expect("name").to_string();
    assert!(name.starts_with("greet-"), "{name}");
    let wf = wait_for(base, &name, finished);
    assert_eq!(phase(&wf), "Succeeded", "{wf}");
    assert_eq!(
        wf["status"]["outputs"]["parameters"][0],
        json!({"name": "greeting", "value": "hello riposte"})
    );
    let node = &wf["status"]["nodes"][&name];
    assert_eq!(node["outputs"]["result"], "hello riposte");

    let (_, list) = call(
        "GET",
        &format!(
            "{base}/api/v1/workflows/default?listOptions.labelSelector=workflows.argoproj.io/workflow-template%3Dgreet"
        ),
        None,
    );
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    // `argo list --status` filters with the phase label, which maps onto the phase column.
    for (phase, expected) in [("Succeeded", 1), ("Failed", 0)] {
        let (_, list) = call(
            "GET",
            &format!(
                "{base}/api/v1/workflows/default?listOptions.labelSelector=workflows.argoproj.io/phase%3D{phase}"
            ),
            None,
        );
        let n = list["items"].as_array().map(Vec::len).unwrap_or(0);
        assert_eq!(n, expected, "phase {phase}: {list}");
    }

    let (code, e) = call(
        "POST",
        &format!("{base}/api/v1/workflows/default/submit"),
        Some(
            json!({"resourceKind": "WorkflowTemplate", "resourceName": "greet", "submitOptions": {"parameters": ["nope=1"]}}),
        ),
    );
    assert_eq!((code, e["code"].as_u64()), (400, Some(3)), "{e}");
    let (code, e) = call(
        "GET",
        &format!("{base}/api/v1/workflows/default/missing"),
        None,
    );
    assert_eq!((code, e["code"].as_u64()), (404, Some(5)), "{e}");
    let bad = json!({"workflow": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "bad"}, "spec": {"entrypoint": "nope", "templates": [{"name": "main", "suspend": {}}]}}});
    let (code, e) = call(
        "POST",
        &format!("{base}/api/v1/workflows/default"),
        Some(bad),
    );
    assert_eq!(code, 400);
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("entrypoint \"nope\""),
        "{e}"
    );

    let (code, _) = call(
        "DELETE",
        &format!("{base}/api/v1/workflows/default/{name}"),
        None,
    );
    assert_eq!(code, 200);
    let (code, _) = call(
        "GET",
        &format!("{base}/api/v1/workflows/default/{name}"),
        None,
    );
    assert_eq!(code, 404);
}

/// `gate`: waits at the suspend step `approve` for a `decision`, then echoes it in `act`.
fn gate_workflow() -> Value {
    json!({"workflow": {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "gate"},
        "spec": {"entrypoint": "main", "templates": [
            {"name": "main", "steps": [
                [{"name": "approve", "template": "approve"}],
                [{"name": "act", "template": "act", "arguments": {"parameters": [{"name": "d", "value": "{{steps.approve.outputs.parameters.decision}}"}]}}]
            ]},
            {"name": "approve", "suspend": {}, "outputs": {"parameters": [{"name": "decision", "valueFrom": {"supplied": {}}}]}},
            {"name": "act", "inputs": {"parameters": [{"name": "d"}]}, "container": {"image": "busybox", "command": ["echo", "{{inputs.parameters.d}}"]}}
        ]}
    }})
}

#[test]
fn approvals_through_set_and_stop() {
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let base = &s.base;
    let wf = gate_workflow();
    let (code, v) = call(
        "POST",
        &format!("{base}/api/v1/workflows/default"),
        Some(wf),
    );
    assert_eq!(code, 200, "{v}");
    wait_for(base, "gate", |w| {
        w["status"]["nodes"].as_object().is_some_and(|n| {
            n.values()
                .any(|n| n["type"] == "Suspend" && n["phase"] == "Running")
        })
    });
    let set = json!({"nodeFieldSelector": "displayName=approve", "outputParameters": "{\"decision\": \"isolate\"}"});
    let (code, v) = call(
        "PUT",
        &format!("{base}/api/v1/workflows/default/gate/set"),
        Some(set),
    );
    assert_eq!(code, 200, "{v}");
    let wf = wait_for(base, "gate", finished);
    assert_eq!(phase(&wf), "Succeeded");
    let act = wf["status"]["nodes"]
        .as_object()
        .expect("nodes")
        .values()
        .find(|n| n["displayName"] == "act")
        .expect("act")
        .clone();
    assert_eq!(act["outputs"]["result"], "isolate");
    // Finished workflows cannot be resumed.
    let (code, e) = call(
        "PUT",
        &format!("{base}/api/v1/workflows/default/gate/resume"),
        None,
    );
    assert_eq!((code, e["code"].as_u64()), (400, Some(9)), "{e}");

    let long = json!({"workflow": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "long"},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "busybox", "command": ["sleep", "30"]}}]}}});
    call(
        "POST",
        &format!("{base}/api/v1/workflows/default"),
        Some(long),
    );
    wait_for(base, "long", |w| {
        w["status"]["nodes"]["long"]["phase"] == "Running"
    });
    let (code, _) = call(
        "PUT",
        &format!("{base}/api/v1/workflows/default/long/terminate"),
        None,
    );
    assert_eq!(code, 200);
    let wf = wait_for(base, "long", finished);
    assert_eq!(
        (phase(&wf), wf["status"]["message"].as_str()),
        ("Failed", Some("Stopped with strategy 'Terminate'"))
    );
}

/// The embedded default survives its own restart: a step running when the server is killed
/// with SIGKILL keeps running (detached under `riposte exec`), the restarted server re-attaches
/// to it and takes its report; no step runs twice, and no retryStrategy is needed.
#[test]
fn kill_9_then_restart_reattaches_to_the_running_step() {
    let home = tempfile::tempdir().expect("tempdir");
    let marker = home.path().join("runs.txt");
    let wf = json!({"workflow": {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "crash"},
        "spec": {"entrypoint": "main", "templates": [
            {"name": "main", "steps": [[{"name": "first", "template": "count"}], [{"name": "slow", "template": "slow"}], [{"name": "last", "template": "count"}]]},
            {"name": "count", "container": {"image": "busybox", "command": ["sh", "-c", format!("echo count >> {}", marker.display())]}},
            {"name": "slow", "container": {"image": "busybox", "command": ["sh", "-c", format!("echo slow >> {}; sleep 2; echo slow-result", marker.display())]}}
        ]}
    }});
    // Steps share the host filesystem here, so the marker file counts every run.
    {
        let mut s = start_with(home.path(), &["--no-isolation", "--lease-seconds", "1"]);
        let base = s.base.clone();
        let (code, v) = call(
            "POST",
            &format!("{base}/api/v1/workflows/default"),
            Some(wf),
        );
        assert_eq!(code, 200, "{v}");
        wait_for(&base, "crash", |w| {
            w["status"]["nodes"].as_object().is_some_and(|n| {
                n.values()
                    .any(|n| n["displayName"] == "slow" && n["phase"] == "Running")
            })
        });
        // SAFETY: SIGKILL to our own child: no cleanup, like a crash.
        unsafe {
            libc::kill(s.child.id() as i32, libc::SIGKILL);
        }
        s.child.wait().expect("wait for the killed server");
    }
    let s = start_with(home.path(), &["--no-isolation", "--lease-seconds", "1"]);
    let wf = wait_for(&s.base, "crash", finished);
    assert_eq!(phase(&wf), "Succeeded", "{wf}");
    let nodes = wf["status"]["nodes"].as_object().expect("nodes");
    let slow = nodes
        .values()
        .find(|n| n["displayName"] == "slow")
        .expect("slow");
    assert_eq!(slow["phase"], "Succeeded", "{slow}");
    assert_eq!(slow["outputs"]["result"], "slow-result", "{slow}");
    // Its log is whole and not doubled: the restarted server goes on from the stored lines.
    let (_, logs) = call(
        "GET",
        &format!("{}/api/v1/workflows/default/crash/log", s.base),
        None,
    );
    assert_eq!(logs.to_string().matches("slow-result").count(), 1, "{logs}");
    // Every step ran exactly once.
    assert_eq!(
        std::fs::read_to_string(&marker)
            .expect("marker")
            .lines()
            .collect::<Vec<_>>(),
        ["count", "slow", "count"]
    );
}

#[test]
/// Replicas on different machines (here: different homes and temporary directories) share
/// workflows through the database; a host step that ran on the dead replica's machine leaves
/// no trace on the survivor's, so it is "process lost" and retried, and finished steps never
/// run again.
fn two_replicas_share_postgres_and_take_over_after_a_crash() {
    let db = format!("riposte_replicas_{}", std::process::id());
    let psql = |sql: &str| common::psql("postgres", sql);
    psql(&format!("DROP DATABASE IF EXISTS {db}"));
    psql(&format!("CREATE DATABASE {db}"));
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let home_a = tempfile::tempdir().expect("tempdir");
    let home_b = tempfile::tempdir().expect("tempdir");
    let markers = tempfile::tempdir().expect("tempdir");
    let args = [
        "--no-isolation",
        "--lease-seconds",
        "1.5",
        "--database-url",
        url.as_str(),
    ];
    let mut a = start_with_env(home_a.path(), &args, &[("TMPDIR", home_a.path())]);
    let b = start_with_env(home_b.path(), &args, &[("TMPDIR", home_b.path())]);
    let names: Vec<String> = (0..4).map(|i| format!("wf{i}")).collect();
    for name in &names {
        let marker = markers.path().join(name);
        let wf = json!({"workflow": {
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": name},
            "spec": {"entrypoint": "main", "templates": [
                {"name": "main", "steps": [[{"name": "first", "template": "count"}], [{"name": "slow", "template": "slow"}]]},
                {"name": "count", "container": {"image": "busybox", "command": ["sh", "-c", format!("echo x >> {}", marker.display())]}},
                {"name": "slow", "retryStrategy": {"limit": 3, "retryPolicy": "Always"}, "container": {"image": "busybox", "command": ["sleep", "2"]}}
            ]}
        }});
        let (code, v) = call(
            "POST",
            &format!("{}/api/v1/workflows/default", a.base),
            Some(wf),
        );
        assert_eq!(code, 200, "{v}");
    }
    for name in &names {
        wait_for(&a.base, name, |w| {
            w["status"]["nodes"].as_object().is_some_and(|n| {
                n.values()
                    .any(|n| n["displayName"] == "slow(0)" && n["phase"] == "Running")
            })
        });
    }
    // SAFETY: SIGKILL to our own child, like a crashed replica.
    unsafe {
        libc::kill(a.child.id() as i32, libc::SIGKILL);
    }
    a.child.wait().expect("reap replica A");
    for name in &names {
        let wf = wait_for(&b.base, name, finished);
        assert_eq!(phase(&wf), "Succeeded", "{name}: {wf}");
        let lost = wf["status"]["nodes"]
            .as_object()
            .expect("nodes")
            .values()
            .find(|n| n["displayName"] == "slow(0)")
            .expect("attempt 0")
            .clone();
        assert!(
            lost["message"]
                .as_str()
                .unwrap_or("")
                .starts_with("process lost"),
            "{lost}"
        );
        let runs = std::fs::read_to_string(markers.path().join(name)).expect("marker");
        assert_eq!(
            runs.lines().count(),
            1,
            "{name}: the finished step ran again"
        );
    }
    drop(b);
    psql(&format!("DROP DATABASE {db} WITH (FORCE)"));
}

#[test]
fn postgres_connections_cut_mid_run_lose_nothing() {
    let db = format!("riposte_cut_{}", std::process::id());
    let psql = |sql: &str| common::psql("postgres", sql);
    psql(&format!("DROP DATABASE IF EXISTS {db}"));
    psql(&format!("CREATE DATABASE {db}"));
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start_with(
        home.path(),
        &["--lease-seconds", "1", "--database-url", url.as_str()],
    );
    let wf = json!({"workflow": {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "cut"},
        "spec": {"entrypoint": "main", "templates": [
            {"name": "main", "steps": [[{"name": "a", "template": "s"}], [{"name": "b", "template": "s"}], [{"name": "c", "template": "s"}]]},
            {"name": "s", "container": {"image": "busybox", "command": ["sleep", "0.4"]}}
        ]}
    }});
    let (code, v) = call(
        "POST",
        &format!("{}/api/v1/workflows/default", s.base),
        Some(wf),
    );
    assert_eq!(code, 200, "{v}");
    // Cut every connection of the server, several times, while the steps run.
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(100));
        psql(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{db}' AND pid <> pg_backend_pid()"
        ));
    }
    let wf = wait_for(&s.base, "cut", finished);
    assert_eq!(phase(&wf), "Succeeded", "{wf}");
    let steps: Vec<&str> = wf["status"]["nodes"]
        .as_object()
        .expect("nodes")
        .values()
        .filter(|n| n["type"] == "Pod")
        .map(|n| n["displayName"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(steps.len(), 3, "{steps:?}");
    // And what was recorded still replays to the stored state.
    assert_replays("cut", &url);
    drop(s);
    psql(&format!("DROP DATABASE {db} WITH (FORCE)"));
}

/// A step may print a NUL byte, which PostgreSQL's jsonb and text cannot hold: the workflow
/// still runs to the end (the byte is U+FFFD in its result, the next step's argument and the
/// log) and its history replays to the stored state.
#[test]
fn a_nul_byte_on_stdout_is_recorded_on_postgres() {
    let db = format!("riposte_nul_{}", std::process::id());
    let psql = |sql: &str| common::psql("postgres", sql);
    psql(&format!("DROP DATABASE IF EXISTS {db}"));
    psql(&format!("CREATE DATABASE {db}"));
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start_with(home.path(), &["--database-url", url.as_str()]);
    let wf = json!({"workflow": {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "nul"},
        "spec": {"entrypoint": "main", "templates": [
            {"name": "main", "steps": [
                [{"name": "a", "template": "nul"}],
                [{"name": "b", "template": "echo", "arguments": {"parameters": [
                    {"name": "m", "value": "{{steps.a.outputs.result}}"}]}}]]},
            {"name": "nul", "container": {"image": "busybox", "command": ["sh", "-c", "printf 'a\\000b\\n'"]}},
            {"name": "echo", "inputs": {"parameters": [{"name": "m"}]},
             "container": {"image": "busybox", "command": ["echo", "{{inputs.parameters.m}}"]}}
        ]}
    }});
    let (code, v) = call(
        "POST",
        &format!("{}/api/v1/workflows/default", s.base),
        Some(wf),
    );
    assert_eq!(code, 200, "{v}");
    let wf = wait_for(&s.base, "nul", finished);
    assert_eq!(phase(&wf), "Succeeded", "{wf}");
    let result_of = |name: &str| {
        wf["status"]["nodes"]
            .as_object()
            .expect("nodes")
            .values()
            .find(|n| n["displayName"] == name)
            .map(|n| n["outputs"]["result"].clone())
    };
    assert_eq!(result_of("a"), Some(json!("a\u{FFFD}b")), "{wf}");
    assert_eq!(result_of("b"), Some(json!("a\u{FFFD}b")), "{wf}");
    assert_replays("nul", &url);
    drop(s);
    psql(&format!("DROP DATABASE {db} WITH (FORCE)"));
}

#[test]
fn client_commands_drive_the_server() {
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args(args)
            .env("RIPOSTE_SERVER", &s.base)
            .env("RIPOSTE_HOME", home.path())
            .output()
            .expect("riposte client")
    };
    let file = home.path().join("t.yaml");
    std::fs::write(
        &file,
        "apiVersion: argoproj.io/v1alpha1\nkind: WorkflowTemplate\nmetadata: {name: isolate}\nspec:\n  entrypoint: main\n  arguments: {parameters: [{name: pod, value: none}]}\n  templates:\n  - name: main\n    inputs: {parameters: [{name: pod}]}\n    container: {image: busybox, command: [echo, 'isolating {{inputs.parameters.pod}}']}\n",
    )
    .expect("write template");
    let out = cli(&["template", "create", file.to_str().expect("path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["template", "list"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "isolate");
    let out = cli(&[
        "submit",
        "--from",
        "workflowtemplate/isolate",
        "-p",
        "pod=web-1",
        "--wait",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = text.lines().next().expect("name").to_string();
    assert!(text.contains("Status:      Succeeded"), "{text}");
    let out = cli(&["get", &name, "-o", "json"]);
    let wf: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        wf["status"]["nodes"][&name]["outputs"]["result"],
        "isolating web-1"
    );
    let out = cli(&["list"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&name));
    let out = cli(&["submit", "--from", "workflowtemplate/nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("HTTP 404"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["delete", &name]);
    assert_eq!(out.status.code(), Some(0));
}

/// Hera, the Python SDK for Argo Workflows, unmodified against `riposte server`.
#[test]
fn hera_sdk_creates_submits_and_reads_outputs() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/hera/e2e.py");
    let probe = Command::new("python3")
        .args(["-c", "import hera"])
        .output()
        .expect("python3");
    assert!(
        probe.status.success(),
        "hera is not installed: run scripts/test (it installs hera from PyPI) or pip install hera==7.1.0"
    );
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let out = Command::new("python3")
        .arg(&script)
        .arg(&s.base)
        .output()
        .expect("run the hera script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("hera e2e ok"), "{text}");
}

#[test]
fn watch_stream_and_logs() {
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let base = s.base.clone();
    // Subscribe first, then submit: every recorded step arrives as a MODIFIED event.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let watch_url = format!(
        "{base}/api/v1/workflow-events/default?listOptions.fieldSelector=metadata.name=logged"
    );
    let watcher = std::thread::spawn(move || {
        let mut resp = agent().get(&watch_url).call().expect("watch");
        ready_tx.send(()).expect("signal");
        let reader = BufReader::new(resp.body_mut().as_reader());
        let mut phases = Vec::new();
        for line in reader.lines() {
            let v: Value = serde_json::from_str(&line.expect("line")).expect("ndjson");
            assert_eq!(v["result"]["type"], "MODIFIED");
            let p = v["result"]["object"]["status"]["phase"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let done = p == "Succeeded";
            phases.push(p);
            if done {
                break;
            }
        }
        phases
    });
    ready_rx.recv().expect("watch started");
    let wf = json!({"workflow": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "logged"},
        "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "busybox", "command": ["sh", "-c", "echo one; echo two >&2; echo three"]}}]}}});
    let (code, v) = call(
        "POST",
        &format!("{base}/api/v1/workflows/default"),
        Some(wf),
    );
    assert_eq!(code, 200, "{v}");
    let phases = watcher.join().expect("watcher");
    assert_eq!(
        phases.first().map(String::as_str),
        Some("Running"),
        "{phases:?}"
    );
    assert_eq!(phases.last().map(String::as_str), Some("Succeeded"));
    let mut resp = agent()
        .get(&format!("{base}/api/v1/workflows/default/logged/log"))
        .call()
        .expect("log");
    let text = resp.body_mut().read_to_string().expect("body");
    let lines: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("ndjson")["result"]["content"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(sorted, vec!["one", "three", "two"], "{text}");
}

#[test]
fn cluster_templates_resubmit_and_archive() {
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let base = &s.base;
    let cwt = json!({"template": {"metadata": {"name": "notify"}, "spec": {"entrypoint": "main", "arguments": {"parameters": [{"name": "msg", "value": "x"}]},
        "templates": [{"name": "main", "inputs": {"parameters": [{"name": "msg"}]}, "container": {"image": "busybox", "command": ["echo", "{{inputs.parameters.msg}}"]}}]}}});
    let (code, t) = call(
        "POST",
        &format!("{base}/api/v1/cluster-workflow-templates"),
        Some(cwt),
    );
    assert_eq!(
        (code, t["kind"].as_str()),
        (200, Some("ClusterWorkflowTemplate")),
        "{t}"
    );
    let (_, list) = call(
        "GET",
        &format!("{base}/api/v1/cluster-workflow-templates"),
        None,
    );
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1));
    let submit = json!({"resourceKind": "ClusterWorkflowTemplate", "resourceName": "notify", "submitOptions": {"parameters": ["msg=hi"]}});
    let (code, wf) = call(
        "POST",
        &format!("{base}/api/v1/workflows/default/submit"),
        Some(submit),
    );
    assert_eq!(code, 200, "{wf}");
    let name = wf["metadata"]["name"].as_str().expect("name").to_string();
    let first = wait_for(base, &name, finished);
    assert_eq!(phase(&first), "Succeeded");
    let (code, again) = call(
        "PUT",
        &format!("{base}/api/v1/workflows/default/{name}/resubmit"),
        Some(json!({})),
    );
    assert_eq!(code, 200, "{again}");
    let again_name = again["metadata"]["name"]
        .as_str()
        .expect("name")
        .to_string();
    assert!(again_name.starts_with(&format!("{name}-")), "{again_name}");
    let second = wait_for(base, &again_name, finished);
    assert_eq!(
        second["status"]["nodes"][&again_name]["outputs"]["result"],
        "hi"
    );
    let uid = first["metadata"]["uid"].as_str().expect("uid").to_string();
    let (_, archived) = call(
        "GET",
        &format!("{base}/api/v1/archived-workflows?namespace=default"),
        None,
    );
    assert!(
        archived["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|w| w["metadata"]["uid"] == uid.as_str())
    );
    let (code, one) = call(
        "GET",
        &format!("{base}/api/v1/archived-workflows/{uid}"),
        None,
    );
    assert_eq!((code, phase(&one)), (200, "Succeeded"));
    let (code, _) = call(
        "DELETE",
        &format!("{base}/api/v1/archived-workflows/{uid}"),
        None,
    );
    assert_eq!(code, 200);
    let (code, _) = call(
        "GET",
        &format!("{base}/api/v1/workflows/default/{name}"),
        None,
    );
    assert_eq!(code, 404);
}

#[test]
fn cron_workflows_fire_on_schedule_and_respect_policy_and_suspend() {
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let base = &s.base;
    let cron = |name: &str, policy: &str, cmd: &[&str]| {
        json!({"cronWorkflow": {"metadata": {"name": name}, "spec": {
            "schedule": "@every 1s", "concurrencyPolicy": policy,
            "workflowSpec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "busybox", "command": cmd}}]}
        }}})
    };
    let (code, v) = call(
        "POST",
        &format!("{base}/api/v1/cron-workflows/default"),
        Some(cron("tick", "Allow", &["true"])),
    );
    assert_eq!(code, 200, "{v}");
    let (code, e) = call(
        "POST",
        &format!("{base}/api/v1/cron-workflows/default"),
        Some(
            json!({"cronWorkflow": {"metadata": {"name": "bad"}, "spec": {"schedule": "* * *", "workflowSpec": {"entrypoint": "main", "templates": [{"name": "main", "suspend": {}}]}}}}),
        ),
    );
    assert_eq!(code, 400, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("must have 5 fields"),
        "{e}"
    );
    // Forbid: a slow run blocks the next ones.
    let (code, v) = call(
        "POST",
        &format!("{base}/api/v1/cron-workflows/default"),
        Some(cron("slow", "Forbid", &["sleep", "3"])),
    );
    assert_eq!(code, 200, "{v}");
    let count = |label: &str| {
        let (_, list) = call(
            "GET",
            &format!(
                "{base}/api/v1/workflows/default?listOptions.labelSelector=workflows.argoproj.io/cron-workflow%3D{label}"
            ),
            None,
        );
        list["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|w| w["status"]["phase"] != "Pending")
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while count("tick") < 2 {
        assert!(Instant::now() < deadline, "the cron did not fire twice");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (_, c) = call(
        "GET",
        &format!("{base}/api/v1/cron-workflows/default/tick"),
        None,
    );
    assert!(c["status"]["lastScheduledTime"].as_str().is_some(), "{c}");
    assert_eq!(count("slow"), 1, "Forbid allows one run at a time");
    // Suspended: no more runs.
    let (code, _) = call(
        "PUT",
        &format!("{base}/api/v1/cron-workflows/default/tick/suspend"),
        None,
    );
    assert_eq!(code, 200);
    std::thread::sleep(Duration::from_millis(300));
    let before = count("tick");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(count("tick"), before, "a suspended cron fired");
}

#[test]
fn retry_reruns_only_what_failed() {
    let home = tempfile::tempdir().expect("tempdir");
    let s = start_with(home.path(), &["--no-isolation"]);
    let base = &s.base;
    let ready = home.path().join("ready");
    let count = home.path().join("count");
    let wf = json!({"workflow": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": {"name": "flaky"},
    "spec": {"entrypoint": "main", "templates": [
        {"name": "main", "steps": [[{"name": "first", "template": "first"}], [{"name": "gate", "template": "gate"}]]},
        {"name": "first", "container": {"image": "busybox", "command": ["sh", "-c", format!("echo x >> {}", count.display())]}},
        {"name": "gate", "container": {"image": "busybox", "command": ["sh", "-c", format!("test -e {}", ready.display())]}}
    ]}}});
    let (code, v) = call(
        "POST",
        &format!("{base}/api/v1/workflows/default"),
        Some(wf),
    );
    assert_eq!(code, 200, "{v}");
    assert_eq!(phase(&wait_for(base, "flaky", finished)), "Failed");
    std::fs::write(&ready, "").expect("marker");
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["retry", "flaky"])
        .env("RIPOSTE_SERVER", base)
        .output()
        .expect("riposte retry");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let wf = wait_for(base, "flaky", |w| {
        phase(w) == "Succeeded" || phase(w) == "Error"
    });
    assert_eq!(phase(&wf), "Succeeded", "{wf}");
    assert_eq!(
        std::fs::read_to_string(&count)
            .expect("count")
            .lines()
            .count(),
        1,
        "the succeeded step ran again"
    );
    let (code, e) = call(
        "PUT",
        &format!("{base}/api/v1/workflows/default/flaky/retry"),
        Some(json!({})),
    );
    assert_eq!(
        (code, e["code"].as_u64()),
        (400, Some(9)),
        "a succeeded workflow is not retried: {e}"
    );
    // The history, retry included, still replays to the stored state.
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["replay", "flaky"])
        .env("RIPOSTE_HOME", home.path())
        .env_remove("DATABASE_URL")
        .output()
        .expect("replay");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The retry is in the audit log (written with the step that records it).
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["audit", "list", "--workflow", "flaky", "--json"])
        .env("RIPOSTE_HOME", home.path())
        .env_remove("DATABASE_URL")
        .output()
        .expect("audit list");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.matches("\"workflow.retry\"").count(),
        1,
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn watch_logs_and_cron_commands() {
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args(args)
            .env("RIPOSTE_SERVER", &s.base)
            .output()
            .expect("riposte client")
    };
    let wf = home.path().join("wf.yaml");
    std::fs::write(&wf, "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    container: {image: busybox, command: [sh, -c, 'sleep 0.5; echo done-here']}\n").expect("write");
    let out = cli(&["submit", wf.to_str().expect("path")]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cli(&["watch", "w"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.lines().last().is_some_and(|l| l.contains("Succeeded")),
        "{text}"
    );
    // Logs of finished steps are served from the database, not from the replica's files.
    std::fs::remove_dir_all(home.path().join("server/runs/w/logs")).expect("remove log files");
    let out = cli(&["logs", "w"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": done-here"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let cron = home.path().join("cron.yaml");
    std::fs::write(&cron, "apiVersion: argoproj.io/v1alpha1\nkind: CronWorkflow\nmetadata: {name: nightly}\nspec:\n  schedule: '0 3 * * *'\n  timezone: Europe/Berlin\n  workflowSpec:\n    entrypoint: main\n    templates:\n    - name: main\n      container: {image: busybox, command: ['true']}\n").expect("write");
    assert_eq!(
        cli(&["cron", "create", cron.to_str().expect("path")])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(cli(&["cron", "suspend", "nightly"]).status.code(), Some(0));
    let out = cli(&["cron", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("nightly") && l.contains("0 3 * * *") && l.contains("true")),
        "{text}"
    );
    assert_eq!(cli(&["cron", "delete", "nightly"]).status.code(), Some(0));
}

#[test]
fn suspend_holds_new_steps_until_resume() {
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let cli = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args(args)
            .env("RIPOSTE_SERVER", &s.base)
            .output()
            .expect("riposte client")
    };
    let two = home.path().join("two.yaml");
    std::fs::write(&two, "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: two}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {name: a, template: s}\n    - - {name: b, template: s}\n  - name: s\n    container: {image: busybox, command: [sleep, '0.5']}\n").expect("write");
    assert_eq!(
        cli(&["submit", two.to_str().expect("path")]).status.code(),
        Some(0)
    );
    assert_eq!(cli(&["suspend", "two"]).status.code(), Some(0));
    std::thread::sleep(Duration::from_millis(1500));
    let (_, w) = call(
        "GET",
        &format!("{}/api/v1/workflows/default/two", s.base),
        None,
    );
    assert_eq!(phase(&w), "Running", "{w}");
    assert!(
        !w["status"]["nodes"]
            .as_object()
            .expect("nodes")
            .values()
            .any(|n| n["displayName"] == "b"),
        "b started while suspended"
    );
    assert_eq!(cli(&["resume", "two"]).status.code(), Some(0));
    assert_eq!(phase(&wait_for(&s.base, "two", finished)), "Succeeded");
}

#[test]
fn lint_endpoints_fields_and_submit_from_cron() {
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let base = &s.base;
    let bad = json!({"template": {"metadata": {"name": "t"}, "spec": {"templates": [{"name": "main", "dag": {"tasks": [{"name": "a", "template": "nope"}]}}]}}});
    let (code, e) = call(
        "POST",
        &format!("{base}/api/v1/workflow-templates/default/lint"),
        Some(bad),
    );
    assert_eq!(code, 400, "{e}");
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("template \"nope\" not found"),
        "{e}"
    );
    let cron = json!({"cronWorkflow": {"metadata": {"name": "c"}, "spec": {"schedule": "0 * * * *",
        "workflowSpec": {"entrypoint": "main", "arguments": {"parameters": [{"name": "m", "value": "x"}]},
            "templates": [{"name": "main", "inputs": {"parameters": [{"name": "m"}]}, "container": {"image": "busybox", "command": ["echo", "{{inputs.parameters.m}}"]}}]}}}});
    let (code, v) = call(
        "POST",
        &format!("{base}/api/v1/cron-workflows/default/lint"),
        Some(cron.clone()),
    );
    assert_eq!(code, 200, "{v}");
    let (code, v) = call(
        "POST",
        &format!("{base}/api/v1/cron-workflows/default"),
        Some(cron),
    );
    assert_eq!(code, 200, "{v}");
    let submit = json!({"resourceKind": "CronWorkflow", "resourceName": "c", "submitOptions": {"parameters": ["m=now"]}});
    let (code, wf) = call(
        "POST",
        &format!("{base}/api/v1/workflows/default/submit"),
        Some(submit),
    );
    assert_eq!(code, 200, "{wf}");
    let name = wf["metadata"]["name"].as_str().expect("name").to_string();
    let done = wait_for(base, &name, finished);
    assert_eq!(done["status"]["nodes"][&name]["outputs"]["result"], "now");
    let (_, list) = call(
        "GET",
        &format!("{base}/api/v1/workflows/default?fields=items.metadata.name,items.status.phase"),
        None,
    );
    assert_eq!(
        list["items"][0],
        json!({"metadata": {"name": name}, "status": {"phase": "Succeeded"}})
    );
}

/// Operability: Prometheus metrics scraped after real work, and JSON log lines carrying the
/// workflow's identity.
#[test]
fn metrics_and_json_logs() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riposte"));
    cmd.args([
        "server",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--no-isolation",
    ])
    .env("RIPOSTE_HOME", home.path())
    .env("RUST_LOG", "info")
    .env_remove("DATABASE_URL");
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let s = {
        let lines = lines.clone();
        start_server(cmd, move |l| {
            lines
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(l.to_string())
        })
    };
    let base = s.base.clone();
    let wf = json!({"workflow": {"metadata": {"name": "measured"},
        "spec": {"entrypoint": "main", "templates": [
            {"name": "main", "container": {"image": "busybox", "command": ["sh", "-c", "exit 3"]}}]}}});
    let (code, v) = call(
        "POST",
        &format!("{base}/api/v1/workflows/default"),
        Some(wf),
    );
    assert_eq!(code, 200, "{v}");
    wait_for(&base, "measured", finished);
    let (code, text) = call("GET", &format!("{base}/metrics"), None);
    assert_eq!(code, 200);
    let text = text.as_str().expect("text").to_string();
    for want in [
        "riposte_workflows_submitted_total 1",
        "riposte_workflows_finished_total{phase=\"Failed\"} 1",
        "riposte_node_transitions_total",
        "riposte_db_commit_seconds_bucket",
        "riposte_step_duration_seconds_count{phase=\"Failed\"} 1",
        "riposte_api_requests_total{route=\"/api/v1/workflows/{namespace}\",method=\"POST\",code=\"200\"} 1",
        "# TYPE riposte_workflows_running gauge",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    // The start line, as JSON, with what an operator needs to know.
    let logged = lines.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let start = logged
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "riposte server started")
        .unwrap_or_else(|| panic!("no JSON start line in {logged:#?}"));
    for field in ["version", "database", "executor", "listen", "auth"] {
        assert!(start[field].is_string(), "{field} in {start}");
    }
    drop(s);
}

/// A request with an optional bearer token: status, body text, the response headers.
fn request(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String, ureq::http::HeaderMap) {
    let a = agent();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = match body {
        Some(b) => a.run(
            req.header("content-type", "application/json")
                .body(b.to_string())
                .expect("request"),
        ),
        None => a.run(req.body(()).expect("request")),
    };
    let mut resp = resp.expect("the server answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    (status, text, headers)
}

/// Signed approval links: an approver mints them; a viewer cannot; anyone holding one sees
/// what it decides (GET decides nothing) and decides with its button (POST), once; an
/// altered link is refused; the decision is audited with the link as the actor.
#[test]
fn approval_links_decide_a_suspended_step_once_and_are_audited() {
    let home = tempfile::tempdir().expect("tempdir");
    let auth = home.path().join("auth.yaml");
    std::fs::write(
        &auth,
        format!(
            "identities:\n  - {{name: alice, tokenSha256: {}, roles: {{default: approver}}}}\n  - {{name: victor, tokenSha256: {}, roles: {{default: viewer}}}}\n",
            server::auth::sha256_hex("alice-token"),
            server::auth::sha256_hex("victor-token"),
        ),
    )
    .expect("auth file");
    let s = start_with(
        home.path(),
        &[
            "--auth-file",
            auth.to_str().unwrap(),
            "--external-url",
            "https://riposte.example.com/",
        ],
    );
    let base = &s.base;
    let wf = gate_workflow();
    let (code, text, _) = request(
        "POST",
        &format!("{base}/api/v1/workflows/default"),
        Some("alice-token"),
        Some(wf),
    );
    assert_eq!(code, 200, "{text}");
    let suspended = |w: &Value| {
        w["status"]["nodes"].as_object().is_some_and(|n| {
            n.values()
                .any(|n| n["type"] == "Suspend" && n["phase"] == "Running")
        })
    };
    let get = |name: &str| -> Value {
        let (_, text, _) = request(
            "GET",
            &format!("{base}/api/v1/workflows/default/{name}"),
            Some("alice-token"),
            None,
        );
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !suspended(&get("gate")) {
        assert!(
            Instant::now() < deadline,
            "never suspended: {}",
            get("gate")
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mint = json!({"node": "approve", "to": "#secops", "ttl": "30m", "decisions": [
        {"label": "terminate", "parameters": {"decision": "terminate"}},
        {"label": "keep", "parameters": {"decision": "keep"}}]});
    let links_url = format!("{base}/api/v1/workflows/default/gate/approval-links");
    let (code, text, _) = request("POST", &links_url, Some("victor-token"), Some(mint.clone()));
    assert_eq!(code, 403, "a viewer cannot hand out decisions: {text}");
    let (code, text, _) = request(
        "POST",
        &links_url,
        Some("alice-token"),
        Some(json!({"node": "approve", "ttl": "30d"})),
    );
    assert_eq!(code, 400, "{text}");
    assert!(text.contains("168h"), "{text}");
    let (code, text, _) = request("POST", &links_url, Some("alice-token"), Some(mint));
    assert_eq!(code, 200, "{text}");
    let links: Value = serde_json::from_str(&text).expect("json");
    let url = |i: usize| -> String {
        let u = links["links"][i]["url"].as_str().expect("url");
        assert!(
            u.starts_with("https://riposte.example.com/api/v1/riposte/approvals/"),
            "{u}"
        );
        u.replace("https://riposte.example.com", base)
    };
    assert_eq!(links["links"][0]["label"], "terminate");

    // Opening it (no token) shows the decision and decides nothing.
    let (code, page, headers) = request("GET", &url(0), None, None);
    assert_eq!(code, 200, "{page}");
    assert!(
        page.contains("<form method=\"post\">") && page.contains("terminate"),
        "{page}"
    );
    assert!(page.contains("#secops (minted by alice)"), "{page}");
    let csp = headers
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    assert!(
        csp.contains("default-src 'none'") && !csp.contains("script-src"),
        "{csp}"
    );
    assert_eq!(
        headers
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(suspended(&get("gate")), "a GET must not decide");

    // An altered link is refused, and decides nothing. The signature's first character is
    // altered: it carries six signature bits, whereas the last one of an unpadded base64url
    // HMAC carries padding bits too, and an altered padding bit is a malformed token (400).
    let genuine = url(0);
    let sig_at = genuine.rfind('.').expect("token body.signature") + 1;
    let first = genuine.as_bytes()[sig_at];
    let mut forged = genuine.clone();
    forged.replace_range(sig_at..sig_at + 1, if first == b'A' { "B" } else { "A" });
    let (code, page, _) = request("POST", &forged, None, None);
    assert_eq!(code, 403, "{page}");
    assert!(page.contains("signature does not match"), "{page}");

    // The button decides.
    let (code, page, _) = request("POST", &url(0), None, None);
    assert_eq!(code, 200, "{page}");
    assert!(page.contains("Recorded: terminate"), "{page}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let wf = loop {
        let wf = get("gate");
        if finished(&wf) {
            break wf;
        }
        assert!(Instant::now() < deadline, "{wf}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(phase(&wf), "Succeeded", "{wf}");
    let act = wf["status"]["nodes"]
        .as_object()
        .and_then(|n| n.values().find(|n| n["displayName"] == "act"))
        .expect("act")
        .clone();
    assert_eq!(act["outputs"]["result"], "terminate");

    // The other choice comes too late: the step is decided.
    let (code, page, _) = request("POST", &url(1), None, None);
    assert_eq!(code, 409, "{page}");

    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["audit", "list", "--workflow", "gate", "--json"])
        .env("RIPOSTE_HOME", home.path())
        .env_remove("DATABASE_URL")
        .output()
        .expect("audit list");
    let text = String::from_utf8_lossy(&out.stdout);
    let approvals: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["action"] == "workflow.approve")
        .collect();
    assert_eq!(approvals.len(), 1, "{text}");
    assert_eq!(
        approvals[0]["actor"],
        "approval link \"terminate\" sent to #secops (minted by alice)"
    );
    assert_eq!(approvals[0]["source"], "approval-link");
}
