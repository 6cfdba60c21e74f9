//! `riposte run` and `riposte server` with `--executor kubernetes`, end to end against the
//! FAKE API server (`riposte-kube-fake`, real HTTP). The test plays the kubelet with
//! `HostKubelet`: each Job's pod runs its main container command on this machine, with
//! this build's `riposte exec` as the wrapper. No cluster is involved.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use kube_fake::{FakeApiServer, HostKubelet, ResourceType};

mod common;
use common::free_port;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../workflows/examples")
        .join(name)
}

/// `riposte run --executor kubernetes -o json FILE` against the cluster `kubeconfig` names;
/// it must exit 0. The final workflow, and what the run printed on stderr.
async fn run_on_kubernetes(file: &Path, kubeconfig: &Path, home: &Path) -> (Value, String) {
    let (code, wf, stderr) = run_on_kubernetes_exit(file, kubeconfig, home).await;
    assert_eq!(code, Some(0), "{stderr}");
    (wf, stderr)
}

/// [`run_on_kubernetes`] whatever the exit code: the code, the final workflow, stderr.
async fn run_on_kubernetes_exit(
    file: &Path,
    kubeconfig: &Path,
    home: &Path,
) -> (Option<i32>, Value, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args([
            "run",
            "--executor",
            "kubernetes",
            "-o",
            "json",
            "--database-url",
            "none",
        ])
        .arg(file)
        .env("KUBECONFIG", kubeconfig)
        .env("RIPOSTE_HOME", home)
        .output()
        .await
        .expect("riposte runs");
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let wf = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (out.status.code(), wf, stderr)
}

/// A fake cluster with the objects the isolate-pod playbook acts on.
async fn cluster_with_victim(dir: &Path, termination_messages: bool) -> (FakeApiServer, PathBuf) {
    let fake = FakeApiServer::start().await.expect("fake api server");
    fake.create(
        &ResourceType::new("", "v1", "Pod", "pods", true),
        "default",
        json!({"metadata": {"name": "web-1", "labels": {"app": "web"}},
               "spec": {"containers": [{"name": "web", "image": "nginx"}]}}),
    )
    .expect("pod");
    fake.create(
        &ResourceType::new("apps", "v1", "Deployment", "deployments", true),
        "default",
        json!({"metadata": {"name": "web"},
               "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}]}}}}),
    )
    .expect("deployment");
    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    HostKubelet {
        fake: fake.clone(),
        wrapper: PathBuf::from(env!("CARGO_BIN_EXE_riposte")),
        work_dir: dir.join("kubelet"),
        extra_env: vec![(
            "RIPOSTE_FLAKY_MARKER".into(),
            dir.join("flaky-marker").display().to_string(),
        )],
        termination_messages,
    }
    .spawn();
    (fake, kubeconfig)
}

fn assert_isolated(fake: &FakeApiServer) {
    let pod = fake.get("pods", "default", "web-1").expect("pod");
    assert_eq!(pod["metadata"]["labels"]["riposte.dev/quarantine"], "true");
    let np = fake
        .get("networkpolicies", "default", "quarantine-deny-all")
        .expect("network policy");
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    let d = fake
        .get("deployments", "default", "web")
        .expect("deployment");
    assert_eq!(d["spec"]["template"]["spec"]["runtimeClassName"], "gvisor");
    // triage, notify and notify's retry: three Jobs, each created once.
    let creates = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /apis/batch/v1/namespaces/default/jobs"))
        .count();
    assert_eq!(creates, 3, "{:#?}", fake.requests());
    for job in fake.list("jobs", "default") {
        assert_eq!(job["spec"]["backoffLimit"], 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn run_on_kubernetes_executes_the_playbook_dag_with_retries_and_parameters() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (fake, kubeconfig) = cluster_with_victim(tmp.path(), true).await;
    let (wf, stderr) =
        run_on_kubernetes(&example("isolate-pod.yaml"), &kubeconfig, tmp.path()).await;
    assert_eq!(wf["status"]["phase"], "Succeeded", "{stderr}");
    let pod_uid = fake
        .get("networkpolicies", "default", "quarantine-deny-all")
        .expect("np")["metadata"]["uid"]
        .as_str()
        .expect("uid")
        .to_string();
    let summary = wf["status"]["outputs"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "summary"))
        .expect("global output summary")["value"]
        .clone();
    assert_eq!(
        summary,
        json!(format!("isolated web-1 behind policy {pod_uid}"))
    );
    let nodes = wf["status"]["nodes"].as_object().expect("nodes");
    let failed_attempts = nodes
        .values()
        .filter(|n| n["phase"] == "Failed" && n["type"] == "Pod")
        .count();
    assert_eq!(
        failed_attempts, 1,
        "one notify attempt failed and was retried"
    );
    assert_isolated(&fake);
}

/// A container whose command cannot start: the pod's wrapper reports it, and the workflow
/// ends `Failed` with Argo's "executable file not found", as on the host executor.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_missing_command_fails_the_step_on_kubernetes_too() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_fake, kubeconfig) = cluster_with_victim(tmp.path(), true).await;
    let file = tmp.path().join("invalid.yaml");
    std::fs::write(
        &file,
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: invalid-\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    container: {image: alpine:3.20, command: [invalid]}\n",
    )
    .expect("write");
    let (code, wf, stderr) = run_on_kubernetes_exit(&file, &kubeconfig, tmp.path()).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(wf["status"]["phase"], "Failed", "{wf}");
    let name = wf["metadata"]["name"].as_str().expect("name");
    let node = &wf["status"]["nodes"][name];
    assert_eq!(node["phase"], "Failed", "{node}");
    assert!(
        node["message"]
            .as_str()
            .unwrap_or("")
            .contains("exec: \"invalid\": executable file not found in $PATH"),
        "{node}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn server_on_kubernetes_gets_results_by_callback_and_serves_pod_logs() {
    let tmp = tempfile::tempdir().expect("tmp");
    // The kubelet drops termination messages: every result must arrive by callback.
    let (fake, kubeconfig) = cluster_with_victim(tmp.path(), false).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start_server(tmp.path(), &kubeconfig, port).await;

    let text = std::fs::read_to_string(example("isolate-pod.yaml")).expect("example");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["submit", "--wait"])
        .arg(example("isolate-pod.yaml"))
        .env("RIPOSTE_SERVER", &base)
        .output()
        .await
        .expect("submit");
    assert!(!text.is_empty());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_isolated(&fake);

    // The name of the workflow, then its nodes and a step's log through the API.
    let client = reqwest_get(&format!("{base}/api/v1/workflows/default")).await;
    let wf = &client["items"][0];
    let name = wf["metadata"]["name"].as_str().expect("name").to_string();
    let full = reqwest_get(&format!("{base}/api/v1/workflows/default/{name}")).await;
    let triage = full["status"]["nodes"]
        .as_object()
        .expect("nodes")
        .values()
        .find(|n| n["displayName"] == "triage")
        .expect("triage node")
        .clone();
    assert_eq!(triage["outputs"]["result"], "web-1");
    let logs = tokio::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["logs", &name, "--node"])
        .arg(triage["id"].as_str().expect("id"))
        .env("RIPOSTE_SERVER", &base)
        .output()
        .await
        .expect("logs");
    let log_text = String::from_utf8_lossy(&logs.stdout);
    assert!(
        log_text.contains("web-1"),
        "{log_text}\n{}",
        String::from_utf8_lossy(&logs.stderr)
    );

    // A wrong token is refused.
    let uid = full["metadata"]["uid"].as_str().expect("uid");
    let status = tokio::task::spawn_blocking({
        let url = format!(
            "{base}/api/v1/riposte/callbacks/{uid}/{}",
            triage["id"].as_str().unwrap_or_default()
        );
        move || {
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .new_agent()
                .post(&url)
                .header("Authorization", "Bearer forged")
                .send_json(json!({"exitCode": 0, "result": "evil"}))
                .map(|r| r.status().as_u16())
        }
    })
    .await
    .expect("join")
    .expect("request");
    assert_eq!(status, 401);

    // The server counts how results arrived: here, all by callback.
    let metrics = tokio::task::spawn_blocking({
        let url = format!("{base}/metrics");
        move || {
            ureq::get(&url)
                .call()
                .expect("metrics")
                .body_mut()
                .read_to_string()
                .expect("text")
        }
    })
    .await
    .expect("join");
    assert!(
        metrics.contains("riposte_step_results_total{via=\"callback\"} 3"),
        "{metrics}"
    );
    assert!(!metrics.contains("via=\"job_condition\""), "{metrics}");

    // Deleting the workflow deletes its Jobs (and their pods) from the cluster.
    assert_eq!(fake.list("jobs", "default").len(), 3);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["delete", &name])
        .env("RIPOSTE_SERVER", &base)
        .output()
        .await
        .expect("delete");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(fake.list("jobs", "default").is_empty());
    assert!(
        fake.list("pods", "default")
            .iter()
            .all(|p| p["metadata"]["name"] == "web-1"),
        "only the victim pod is left"
    );
    assert!(
        fake.list("secrets", "default").is_empty(),
        "the token Secrets went with their Jobs"
    );
    let _ = server.kill().await;
}

async fn start_server(home: &Path, kubeconfig: &Path, port: u16) -> tokio::process::Child {
    let base = format!("http://127.0.0.1:{port}");
    let mut server = tokio::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--lease-seconds",
            "1",
        ])
        .args(["--executor", "kubernetes", "--callback-url", &base])
        .env("KUBECONFIG", kubeconfig)
        .env("RIPOSTE_HOME", home)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("server starts");
    let mut lines = BufReader::new(server.stderr.take().expect("stderr")).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("server starts in time")
            .expect("read")
            .expect("server exited before listening");
        if line.starts_with("riposte server listening on") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    server
}

/// The server is killed (SIGKILL) while a step's Job runs; the next server re-attaches to
/// that Job instead of creating it again, and takes its result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_server_reattaches_to_running_jobs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (fake, kubeconfig) = cluster_with_victim(tmp.path(), true).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut first = start_server(tmp.path(), &kubeconfig, port).await;
    let step = r#"{image: alpine:3.20, command: [sh, -c], args: ["sleep 3; echo survived"]}"#;
    submit_and_wait_running(&fake, tmp.path(), &base, "slow-step", step).await;
    first.kill().await.expect("SIGKILL the server");
    let _second = start_server(tmp.path(), &kubeconfig, port).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let wf = loop {
        let wf = reqwest_get(&format!("{base}/api/v1/workflows/default/slow-step")).await;
        if wf["status"]["phase"] == "Succeeded"
            || wf["status"]["phase"] == "Failed"
            || wf["status"]["phase"] == "Error"
        {
            break wf;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {}",
            wf["status"]["phase"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf:#}");
    let node = wf["status"]["nodes"]
        .as_object()
        .expect("nodes")
        .values()
        .find(|n| n["type"] == "Pod")
        .expect("pod node")
        .clone();
    assert_eq!(node["outputs"]["result"], "survived");
    let creates = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /apis/batch/v1/namespaces/default/jobs"))
        .count();
    assert_eq!(creates, 1, "re-attached, not created again");
}

/// Submits a one-step workflow `name` running `container` (YAML flow mapping) to the server
/// at `base` and waits until the step's pod runs.
async fn submit_and_wait_running(
    fake: &FakeApiServer,
    dir: &Path,
    base: &str,
    name: &str,
    container: &str,
) {
    let wf = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &wf,
        format!("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {{name: {name}}}\nspec:\n  entrypoint: step\n  templates:\n  - name: step\n    container: {container}\n"),
    )
    .expect("write");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .arg("submit")
        .arg(&wf)
        .env("RIPOSTE_SERVER", base)
        .output()
        .await
        .expect("submit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fake.wait_for("pods", "default", Duration::from_secs(20), |p| {
        p["status"]["phase"] == "Running"
    })
    .await
    .expect("the step's pod runs");
}

async fn reqwest_get(url: &str) -> Value {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .call()
            .expect("GET")
            .body_mut()
            .read_json::<Value>()
            .expect("json")
    })
    .await
    .expect("join")
}

/// `riposte logs --follow` streams a running step's pod log through the API and ends with
/// the workflow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn logs_follow_streams_a_running_step_until_the_workflow_ends() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (fake, kubeconfig) = cluster_with_victim(tmp.path(), true).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = start_server(tmp.path(), &kubeconfig, port).await;
    let step =
        r#"{image: alpine:3.20, command: [sh, -c], args: ["echo first; sleep 2; echo second"]}"#;
    submit_and_wait_running(&fake, tmp.path(), &base, "chatty", step).await;
    let follow = tokio::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["logs", "chatty", "--follow"])
        .env("RIPOSTE_SERVER", &base)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), follow)
        .await
        .expect("--follow ends when the workflow does")
        .expect("logs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].ends_with(": first") && lines[1].ends_with(": second"),
        "{text}"
    );
}

/// A `script` step on Kubernetes: the source travels in the pod's environment and the wrapper
/// writes it beside itself (a writable emptyDir even under a read-only root) and runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn script_steps_run_as_jobs() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (_fake, kubeconfig) = cluster_with_victim(tmp.path(), true).await;
    let wf = tmp.path().join("script.yaml");
    std::fs::write(
        &wf,
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: script-}\nspec:\n  entrypoint: s\n  templates:\n  - name: s\n    script:\n      image: alpine:3.20\n      command: [sh]\n      source: |\n        n=$((6 * 7))\n        echo \"answer $n\"\n",
    )
    .expect("write");
    let (wf, _) = run_on_kubernetes(&wf, &kubeconfig, tmp.path()).await;
    let node = wf["status"]["nodes"]
        .as_object()
        .and_then(|n| n.values().find(|n| n["type"] == "Pod").cloned())
        .expect("pod node");
    assert_eq!(node["outputs"]["result"], "answer 42");
    // `command: [sh, -c]` runs the script file by its path, so it must be executable (Argo
    // writes it 0755; without the bit, sh answers 126 "Permission denied").
    let by_path = tmp.path().join("script-c.yaml");
    std::fs::write(
        &by_path,
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {generateName: script-c-}\nspec:\n  entrypoint: s\n  templates:\n  - name: s\n    script:\n      image: alpine:3.20\n      command: [sh, -c]\n      source: |\n        #!/bin/sh\n        echo \"ran by path\"\n",
    )
    .expect("write");
    let (wf, _) = run_on_kubernetes(&by_path, &kubeconfig, tmp.path()).await;
    let node = wf["status"]["nodes"]
        .as_object()
        .and_then(|n| n.values().find(|n| n["type"] == "Pod").cloned())
        .expect("pod node");
    assert_eq!(node["outputs"]["result"], "ran by path", "{node}");
}

/// `/readyz` says ready only while the Kubernetes API answers too (a replica that cannot
/// reach it cannot run a step), and names what is unreachable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readiness_includes_the_kubernetes_api() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (fake, kubeconfig) = cluster_with_victim(tmp.path(), true).await;
    let port = free_port();
    let _server = start_server(tmp.path(), &kubeconfig, port).await;
    let url = format!("http://127.0.0.1:{port}/readyz");
    let get = |url: String| async move {
        tokio::task::spawn_blocking(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into();
            let mut r = agent.get(&url).call().expect("GET");
            (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
            )
        })
        .await
        .expect("join")
    };
    assert_eq!(get(url.clone()).await, (200, "ok".to_string()));
    // The client itself retries a 503 a few times; an API server that stays down fails.
    for _ in 0..10 {
        fake.fail_next("GET", "/version", 503, "ServiceUnavailable");
    }
    let (code, text) = get(url).await;
    let versions: Vec<String> = fake
        .requests()
        .into_iter()
        .filter(|r| r.contains("version"))
        .collect();
    assert_eq!(code, 503, "{text} {versions:?}");
    assert!(text.contains("Kubernetes API not reachable"), "{text}");
}

/// `riposte terminate` of a workflow whose step runs as a Job deletes that Job (and its pod).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminate_deletes_the_running_job() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (fake, kubeconfig) = cluster_with_victim(tmp.path(), true).await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _server = start_server(tmp.path(), &kubeconfig, port).await;
    submit_and_wait_running(
        &fake,
        tmp.path(),
        &base,
        "long",
        r#"{image: alpine:3.20, command: [sleep, "3600"]}"#,
    )
    .await;
    let riposte = |args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_riposte"));
        c.args(args).env("RIPOSTE_SERVER", &base);
        c
    };
    let out = riposte(&["terminate", "long"])
        .output()
        .await
        .expect("terminate");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !fake.list("jobs", "default").is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the Job is still there"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let wf = reqwest_get(&format!("{base}/api/v1/workflows/default/long")).await;
    assert_eq!(wf["status"]["phase"], "Failed", "{wf:#}");
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.starts_with("DELETE /apis/batch/v1/namespaces/default/jobs/")),
        "deleted through the API"
    );
}

/// A blocking JSON call (from async tests, on the blocking pool).
/// POST when there is a body, GET otherwise.
async fn api(url: String, body: Option<Value>) -> (u16, Value) {
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut resp = match body {
            Some(b) => agent.post(&url).send_json(b),
            None => agent.get(&url).call(),
        }
        .expect("request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    })
    .await
    .expect("blocking call")
}

async fn events_where(base: &str, source: &str) -> Vec<Value> {
    let (_, v) = api(
        format!("{base}/api/v1/riposte/events?namespace=default&eventSource={source}"),
        None,
    )
    .await;
    v["items"].as_array().cloned().unwrap_or_default()
}

/// A `resource` EventSource watches PolicyReports (a CRD) the way Kyverno publishes them; a
/// failing report fires a `k8s` trigger that labels the offending pod. A restarted server
/// re-lists the reports without making the same report a second event, and keeps watching.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resource_event_source_watches_policy_reports_and_k8s_trigger_patches_the_pod() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (fake, kubeconfig) = cluster_with_victim(tmp.path(), true).await;
    let reports = ResourceType::new(
        "wgpolicyk8s.io",
        "v1alpha2",
        "PolicyReport",
        "policyreports",
        true,
    );
    fake.add_resource(reports.clone());
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = start_server(tmp.path(), &kubeconfig, port).await;
    let (s, v) = api(
        format!("{base}/api/v1/event-sources/default"),
        Some(json!({"eventSource": {
            "metadata": {"name": "policy"},
            "spec": {"resource": {"reports": {
                "namespace": "default", "group": "wgpolicyk8s.io", "version": "v1alpha2",
                "resource": "policyreports", "eventTypes": ["ADD", "UPDATE"]
            }}}
        }})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api(format!("{base}/api/v1/sensors/default"), Some(json!({"sensor": {
        "metadata": {"name": "policy-fail"},
        "spec": {
            "dependencies": [{"name": "report", "eventSourceName": "policy", "eventName": "reports",
                "filters": {"data": [{"path": "body.summary.fail", "type": "number", "value": ["0"], "comparator": ">"}]}}],
            "triggers": [{"template": {"name": "label-pod", "k8s": {
                "operation": "patch",
                "source": {"resource": {"apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": "unknown", "namespace": "default", "labels": {"riposte.dev/policy": "failed"}}}},
                "parameters": [{"src": {"dependencyName": "report", "dataKey": "body.results.0.resources.0.name"}, "dest": "metadata.name"}]
            }}}]
        }
    }}))).await;
    assert_eq!(s, 200, "{v}");
    // Let the watch start (its initial list is empty).
    tokio::time::sleep(Duration::from_secs(2)).await;
    fake.create(&reports, "default", json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport",
        "metadata": {"name": "polr-web"},
        "summary": {"pass": 3, "fail": 1},
        "results": [{"policy": "disallow-privileged", "result": "fail",
                     "resources": [{"apiVersion": "v1", "kind": "Pod", "name": "web-1", "namespace": "default"}]}]
    })).expect("report");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let pod = fake.get("pods", "default", "web-1").expect("pod");
        if pod["metadata"]["labels"]["riposte.dev/policy"] == "failed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pod was not labelled: {:?}",
            events_where(&base, "policy").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(events_where(&base, "policy").await.len(), 1);

    // A restart re-lists: the unchanged report is not a second event.
    server.kill().await.expect("kill");
    let _server = start_server(tmp.path(), &kubeconfig, port).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let events = events_where(&base, "policy").await;
    assert_eq!(events.len(), 1, "{events:?}");

    // The restarted watch goes on: a new report is a new event.
    fake.create(&reports, "default", json!({"apiVersion": "wgpolicyk8s.io/v1alpha2", "kind": "PolicyReport", "metadata": {"name": "polr-other"}, "summary": {"fail": 0}})).expect("second report");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while events_where(&base, "policy").await.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "no event for the second report"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
