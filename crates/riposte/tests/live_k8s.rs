//! The Kubernetes executor against a REAL cluster. Skipped unless `RIPOSTE_LIVE_K8S=1` and
//! `KUBECONFIG` are set. Also needs `RIPOSTE_LIVE_IMAGE`: a Riposte image the cluster can
//! pull (built from `Dockerfile`), whose init container installs the step wrapper.
//!
//! Each test works in a namespace of its own (`riposte-live-*`), deleted at the end. The
//! workflows are in `tests/live/`.
//!
//! A control plane without nodes (kube-apiserver + kube-controller-manager, no kubelet, as
//! `scripts/live-control-plane` starts) has nobody to run pods: with
//! `RIPOSTE_LIVE_PLAY_KUBELET=1` the test plays the kubelet through the real API: it runs
//! each pod's main command on this machine (this build's `riposte exec` as the wrapper) and
//! writes the pod's status (Running, then terminated with exit code and termination
//! message), as a kubelet would. Jobs, garbage collection and everything else are the real
//! controllers'. `RIPOSTE_LIVE_IMAGE` is then only written into the Jobs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

struct Live {
    image: String,
    namespace: String,
    client: kube::Client,
    runtime: tokio::runtime::Runtime,
}

impl Drop for Live {
    fn drop(&mut self) {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let ns = self.namespace.clone();
        // Best effort: a namespace left behind is visible by its name.
        let _ = self
            .runtime
            .block_on(async move { api.delete(&ns, &DeleteParams::background()).await });
    }
}

fn live(test: &str) -> Option<Live> {
    if std::env::var("RIPOSTE_LIVE_K8S").as_deref() != Ok("1")
        || std::env::var_os("KUBECONFIG").is_none()
    {
        eprintln!(
            "skipped: set RIPOSTE_LIVE_K8S=1, KUBECONFIG and RIPOSTE_LIVE_IMAGE to run against a real cluster"
        );
        return None;
    }
    let image = std::env::var("RIPOSTE_LIVE_IMAGE")
        .expect("RIPOSTE_LIVE_IMAGE: a Riposte image the cluster can pull");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let client = runtime
        .block_on(kube::Client::try_default())
        .expect("a client from KUBECONFIG");
    let namespace = format!("riposte-live-{test}-{}", std::process::id());
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": namespace}})).expect("ns");
    runtime
        .block_on(api.create(&PostParams::default(), &ns))
        .expect("create the test namespace");
    if std::env::var("RIPOSTE_LIVE_PLAY_KUBELET").as_deref() == Ok("1") {
        runtime.spawn(play_kubelet(client.clone(), namespace.clone()));
    }
    Some(Live {
        image,
        namespace,
        client,
        runtime,
    })
}

fn now() -> String {
    // RFC 3339 from the system clock via `date`, to need no date crate in a test.
    Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Everything a played pod started dies with it, as with a container.
struct ProcessGroup(i32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: signals the process group this test created for one pod.
            unsafe { libc::kill(-self.0, libc::SIGKILL) };
        }
    }
}

async fn set_status(pods: &Api<Pod>, name: &str, status: Value) {
    let patch = json!({"status": status});
    if let Err(e) = pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        eprintln!("playing the kubelet: status of pod {name}: {e}");
    }
}

/// Plays the kubelet for the pods of `namespace` (see the module doc).
async fn play_kubelet(client: kube::Client, namespace: String) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    let mut started = std::collections::BTreeSet::new();
    let mut events = watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(Ok(pod)) = events.next().await {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if !(phase.is_empty() || phase == "Pending") || !started.insert(name.clone()) {
            continue;
        }
        let pods = pods.clone();
        let client = client.clone();
        let namespace = namespace.clone();
        tokio::spawn(async move {
            let v = serde_json::to_value(&pod).unwrap_or_default();
            let main = v["spec"]["containers"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["name"] == "main").cloned())
                .unwrap_or_default();
            let argv: Vec<String> = main["command"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(main["args"].as_array().into_iter().flatten())
                .filter_map(|a| a.as_str())
                .map(|a| {
                    if a == "/var/run/riposte/riposte" {
                        env!("CARGO_BIN_EXE_riposte").to_string()
                    } else {
                        a.to_string()
                    }
                })
                .collect();
            let dir = std::env::temp_dir().join(format!("riposte-live-kubelet-{name}"));
            let _ = std::fs::create_dir_all(&dir);
            // Secret volumes (the callback token): fetched and written as the kubelet would;
            // environment values pointing into the mount point are pointed at the copy.
            let mut mounts: Vec<(String, PathBuf)> = Vec::new();
            let secrets: Api<k8s_openapi::api::core::v1::Secret> =
                Api::namespaced(client.clone(), &namespace);
            for vol in v["spec"]["volumes"].as_array().into_iter().flatten() {
                let Some(secret_name) = vol["secret"]["secretName"].as_str() else {
                    continue;
                };
                let mut secret = None;
                for _ in 0..50 {
                    if let Ok(Some(s)) = secrets.get_opt(secret_name).await {
                        secret = Some(s);
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                let vdir = dir.join(vol["name"].as_str().unwrap_or("secret"));
                let _ = std::fs::create_dir_all(&vdir);
                for (k, data) in secret.and_then(|s| s.data).unwrap_or_default() {
                    let _ = std::fs::write(vdir.join(k), data.0);
                }
                for m in main["volumeMounts"].as_array().into_iter().flatten() {
                    if m["name"] == vol["name"]
                        && let Some(p) = m["mountPath"].as_str()
                    {
                        mounts.push((p.to_string(), vdir.clone()));
                    }
                }
            }
            let host_path = |value: &str| -> String {
                mounts
                    .iter()
                    .find_map(|(m, d)| {
                        value
                            .strip_prefix(m.as_str())
                            .map(|r| format!("{}{r}", d.display()))
                    })
                    .unwrap_or_else(|| value.to_string())
            };
            let term = dir.join("termination-log");
            set_status(&pods, &name, json!({"phase": "Running", "startTime": now(), "containerStatuses": [
                {"name": "main", "image": main["image"], "imageID": "", "ready": true, "restartCount": 0,
                 "state": {"running": {"startedAt": now()}}}]}))
            .await;
            let Some((program, args)) = argv.split_first() else {
                return;
            };
            let mut cmd = tokio::process::Command::new(program);
            // Pod logs need a real kubelet; nothing here serves them.
            cmd.args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .current_dir(&dir)
                .env("RIPOSTE_TERMINATION_LOG", &term)
                .process_group(0)
                .kill_on_drop(true);
            for e in main["env"].as_array().into_iter().flatten() {
                if let (Some(k), Some(v)) = (e["name"].as_str(), e["value"].as_str()) {
                    cmd.env(k, host_path(v));
                }
            }
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(_) => return,
            };
            let _group = ProcessGroup(child.id().map(|p| p as i32).unwrap_or(0));
            // A pod deleted (its Job cancelled) is killed, as the kubelet would.
            let code = loop {
                tokio::select! {
                    s = child.wait() => break s.ok().and_then(|s| s.code()).unwrap_or(137),
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {
                        if pods.get_opt(&name).await.ok().flatten().is_none_or(|p| p.metadata.deletion_timestamp.is_some()) {
                            // SIGTERM (the wrapper passes it on), then the group goes.
                            if let Some(pid) = child.id() {
                                // SAFETY: signals a process this test started.
                                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                            }
                            let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                            return;
                        }
                    }
                }
            };
            let message = std::fs::read_to_string(&term).unwrap_or_default();
            set_status(&pods, &name, json!({"phase": if code == 0 { "Succeeded" } else { "Failed" }, "containerStatuses": [
                {"name": "main", "image": main["image"], "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": code, "reason": if code == 0 { "Completed" } else { "Error" },
                   "message": message, "startedAt": now(), "finishedAt": now()}}}]}))
            .await;
        });
    }
}

fn live_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/live")
        .join(name)
}

fn run(l: &Live, file: &str) -> Value {
    run_path(l, &live_file(file))
}

/// `riposte run --executor kubernetes` in the test's namespace; the workflow as JSON.
fn run_path(l: &Live, path: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["run", "--executor", "kubernetes", "--database-url", "none"])
        .args([
            "-o",
            "json",
            "--riposte-image",
            &l.image,
            "-n",
            &l.namespace,
        ])
        .arg(path)
        .output()
        .expect("riposte runs");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the workflow as JSON")
}

#[test]
fn live_dag_of_jobs_passes_parameters_and_retries() {
    let Some(l) = live("dag") else { return };
    let wf = run(&l, "dag-parameters-retry.yaml");
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf:#}");
    let failed = wf["status"]["nodes"]
        .as_object()
        .expect("nodes")
        .values()
        .filter(|n| n["type"] == "Pod" && n["phase"] == "Failed")
        .count();
    assert_eq!(failed, 1, "the flaky step failed once");
}

/// Job creation → result for a one-step `echo`, measured and printed (not asserted: a
/// benchmark, not a test of speed). Run three times so the node is warm; the result is taken
/// when the pod's `main` container terminates, not when the Job controller marks the Job.
#[test]
fn live_one_echo_step_job_to_result_time() {
    let Some(l) = live("echo") else { return };
    let jobs: Api<Job> = Api::namespaced(l.client.clone(), &l.namespace);
    let mut times = Vec::new();
    let mut walls = Vec::new();
    for _ in 0..3 {
        let t0 = Instant::now();
        let wf = run(&l, "one-echo.yaml");
        walls.push(t0.elapsed());
        assert_eq!(wf["status"]["phase"], "Succeeded", "{wf:#}");
        let node = wf["status"]["nodes"]
            .as_object()
            .and_then(|n| n.values().find(|n| n["type"] == "Pod").cloned())
            .expect("pod node");
        assert_eq!(node["outputs"]["result"], "hello");
        // The node's start and finish are second-resolution (Argo's format); the Job's
        // creation is too. Wall time of the step, from the engine's view:
        let started = node["startedAt"]
            .as_str()
            .and_then(expr::time::parse_rfc3339);
        let finished = node["finishedAt"]
            .as_str()
            .and_then(expr::time::parse_rfc3339);
        if let (Some(a), Some(b)) = (started, finished) {
            times.push(b - a);
        }
    }
    let listed = l
        .runtime
        .block_on(jobs.list(&ListParams::default()))
        .expect("jobs");
    assert_eq!(listed.items.len(), 3);
    eprintln!(
        "one-echo step: node start -> result {times:?} s (1 s resolution); whole `riposte run` (connect, Job, pod, result) {walls:?}"
    );
}

#[test]
fn live_deadline_cancels_and_deletes_the_job() {
    let Some(l) = live("cancel") else { return };
    let wf = run(&l, "cancel.yaml");
    assert_eq!(wf["status"]["phase"], "Failed", "{wf:#}");
    let jobs: Api<Job> = Api::namespaced(l.client.clone(), &l.namespace);
    let pods: Api<Pod> = Api::namespaced(l.client.clone(), &l.namespace);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (j, p) = l.runtime.block_on(async {
            (
                jobs.list(&ListParams::default())
                    .await
                    .map(|l| l.items.len()),
                pods.list(&ListParams::default())
                    .await
                    .map(|l| l.items.len()),
            )
        });
        if j.as_ref().is_ok_and(|n| *n == 0) && p.as_ref().is_ok_and(|n| *n == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "jobs {j:?}, pods {p:?} still there"
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

#[test]
fn live_resource_actions() {
    let Some(l) = live("resources") else { return };
    let wf = run(&l, "resource-actions.yaml");
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf:#}");
}

#[test]
fn live_isolate_pod_playbook() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let Some(l) = live("isolate") else { return };
    let pods: Api<Pod> = Api::namespaced(l.client.clone(), &l.namespace);
    let deployments: Api<Deployment> = Api::namespaced(l.client.clone(), &l.namespace);
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "web-1", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}),
    )
    .expect("pod");
    let deployment: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}, {"name": "sidecar", "image": "envoy:1.30"}]}}}}))
    .expect("deployment");
    l.runtime.block_on(async {
        create_pod(&pods, &pod).await;
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .expect("deployment");
    });
    let isolate =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/examples/isolate-pod.yaml");
    let wf = run_path(&l, &isolate);
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf:#}");
    let policies: Api<NetworkPolicy> = Api::namespaced(l.client.clone(), &l.namespace);
    let (pod, d, np) = l.runtime.block_on(async {
        (
            pods.get("web-1").await.expect("pod"),
            deployments.get("web").await.expect("deployment"),
            policies.get("quarantine-deny-all").await.expect("policy"),
        )
    });
    assert_eq!(
        pod.metadata
            .labels
            .unwrap_or_default()
            .get("riposte.dev/quarantine")
            .map(String::as_str),
        Some("true")
    );
    let spec = d.spec.and_then(|s| s.template.spec).expect("pod template");
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    assert_eq!(spec.containers.len(), 2, "strategic merge kept the sidecar");
    assert!(np.spec.is_some());
}

/// `riposte server --executor kubernetes`: results by callback, and a server killed while a
/// Job runs re-attaches to it after a restart (the Job is created once).
#[test]
fn live_server_callbacks_and_reattach_after_sigkill() {
    use std::io::{BufRead, BufReader};
    let Some(l) = live("server") else { return };
    let home = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    // Where step pods reach this server. Inside a pod 127.0.0.1 is the pod itself, so on a
    // cluster with real kubelets name an address of this machine that pods can reach
    // (RIPOSTE_LIVE_CALLBACK_HOST, e.g. the node's IP): the server then listens on all
    // addresses, which needs bearer-token auth. Without it only the test's own kubelet
    // (RIPOSTE_LIVE_PLAY_KUBELET) reaches the loopback address.
    let callback_host = std::env::var("RIPOSTE_LIVE_CALLBACK_HOST").ok();
    let token = "live-test-token-0123456789abcdef0123456789abcdef";
    let auth_file = home.path().join("auth.yaml");
    std::fs::write(
        &auth_file,
        format!(
            "identities:\n  - name: live-test\n    tokenSha256: {}\n    roles: {{{:?}: admin}}\n",
            server::auth::sha256_hex(token),
            l.namespace
        ),
    )
    .expect("auth file");
    // Both server processes sign callback tokens with the same key, as replicas do in
    // deploy/ (a Secret): a step started by the first reports to the second.
    let callback_key = home.path().join("callback.key");
    std::fs::write(&callback_key, "live-test-callback-key-0123456789").expect("key");
    let (listen, callback_base) = match &callback_host {
        Some(host) => (format!("0.0.0.0:{port}"), format!("http://{host}:{port}")),
        None => (format!("127.0.0.1:{port}"), base.clone()),
    };
    let start = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args(["server", "--listen", &listen, "--lease-seconds", "1"])
            .args([
                "--executor",
                "kubernetes",
                "--callback-url",
                &callback_base,
                "--riposte-image",
                &l.image,
            ])
            .args(["--auth-file".as_ref(), auth_file.as_os_str()])
            .args(["--callback-secret-file".as_ref(), callback_key.as_os_str()])
            .env("RIPOSTE_HOME", home.path())
            .env_remove("DATABASE_URL")
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("server");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        for line in lines.by_ref() {
            if line
                .expect("read")
                .starts_with("riposte server listening on")
            {
                break;
            }
        }
        std::thread::spawn(move || for _ in lines {});
        child
    };
    let mut first = start();
    let wf = home.path().join("slow.yaml");
    std::fs::write(
        &wf,
        format!("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {{name: slow, namespace: {ns}}}\nspec:\n  entrypoint: slow\n  templates:\n  - name: slow\n    container: {{image: busybox:1.36, command: [sh, -c], args: [\"sleep 4; echo survived\"]}}\n", ns = l.namespace),
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["submit", "-n", &l.namespace])
        .arg(&wf)
        .env("RIPOSTE_SERVER", &base)
        .env("RIPOSTE_TOKEN", token)
        .output()
        .expect("submit");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: Api<Job> = Api::namespaced(l.client.clone(), &l.namespace);
    let deadline = Instant::now() + Duration::from_secs(60);
    while l
        .runtime
        .block_on(jobs.list(&ListParams::default()))
        .map(|j| j.items.len())
        .unwrap_or(0)
        == 0
    {
        assert!(Instant::now() < deadline, "no Job created");
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(1));
    first.kill().expect("SIGKILL");
    let _ = first.wait();
    let mut second = start();
    let url = format!("{base}/api/v1/workflows/{}/slow", l.namespace);
    let wf = loop {
        let wf: Value = ureq::get(&url)
            .header("Authorization", &format!("Bearer {token}"))
            .call()
            .expect("GET")
            .body_mut()
            .read_json()
            .expect("json");
        if matches!(
            wf["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed" | "Error")
        ) {
            break wf;
        }
        assert!(Instant::now() < deadline, "still {}", wf["status"]["phase"]);
        std::thread::sleep(Duration::from_millis(300));
    };
    // The result came by callback, not only by the termination-message fallback.
    let metrics = ureq::get(&format!("{base}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf:#}");
    assert!(
        metrics.contains("riposte_step_results_total{via=\"callback\"} 1"),
        "the re-attached step's result did not come by callback:\n{metrics}"
    );
    let node = wf["status"]["nodes"]
        .as_object()
        .and_then(|n| n.values().find(|n| n["type"] == "Pod").cloned())
        .expect("pod node");
    assert_eq!(node["outputs"]["result"], "survived");
    let n = l
        .runtime
        .block_on(jobs.list(&ListParams::default()))
        .map(|j| j.items.len())
        .expect("jobs");
    assert_eq!(
        n, 1,
        "the restarted server re-attached instead of creating a second Job"
    );
    // The callback token lives in a Secret owned by the Job, not in the Job's spec.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(l.client.clone(), &l.namespace);
    let job = l
        .runtime
        .block_on(jobs.list(&ListParams::default()))
        .expect("jobs")
        .items
        .remove(0);
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let secret = l
        .runtime
        .block_on(secrets.get(&format!("{job_name}-riposte-token")))
        .expect("the token Secret");
    let owner = &secret.metadata.owner_references.unwrap_or_default()[0];
    assert_eq!(Some(owner.uid.clone()), job.metadata.uid);
    let spec = serde_json::to_string(&job.spec).expect("spec");
    assert!(
        !spec.contains("RIPOSTE_NODE_TOKEN\""),
        "no token in the Job spec"
    );
}

/// The `deploy/` RBAC is enough, and no more than needed: the isolate-pod playbook runs as
/// the `riposte` ServiceAccount bound to exactly `riposte-executor` + `riposte-responder`,
/// and something those roles do not grant (reading Secrets) is refused.
#[test]
fn live_deploy_rbac_is_exactly_enough_for_the_playbook() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
    let Some(l) = live("rbac") else { return };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let manifests = [
        "deploy/base/namespace.yaml",
        "deploy/base/serviceaccount.yaml",
        "deploy/base/rbac-base.yaml",
        "deploy/responder/rbac-responder.yaml",
    ];
    l.runtime.block_on(async {
        for file in manifests {
            let text = std::fs::read_to_string(root.join(file)).expect("manifest");
            for doc in spec::yaml::load_documents(&text).expect("yaml") {
                apply(&l.client, doc.value).await;
            }
        }
    });
    // A token for the ServiceAccount: since Kubernetes 1.24 none is created automatically,
    // so ask for one the way every version supports — a `service-account-token` Secret that
    // the token controller fills in.
    let sas: Api<ServiceAccount> = Api::namespaced(l.client.clone(), "riposte");
    let secrets: Api<Secret> = Api::namespaced(l.client.clone(), "riposte");
    l.runtime
        .block_on(sas.get("riposte"))
        .expect("service account");
    l.runtime.block_on(apply(
        &l.client,
        serde_json::json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "riposte-live-token", "namespace": "riposte",
                         "annotations": {"kubernetes.io/service-account.name": "riposte"}},
            "type": "kubernetes.io/service-account-token"}),
    ));
    let deadline = Instant::now() + Duration::from_secs(60);
    let token = loop {
        let secret = l
            .runtime
            .block_on(secrets.get("riposte-live-token"))
            .expect("token secret");
        if let Some(t) = secret.data.and_then(|d| d.get("token").cloned()) {
            break String::from_utf8(t.0).expect("utf-8 token");
        }
        assert!(
            Instant::now() < deadline,
            "the token controller did not fill in riposte-live-token"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    // The admin kubeconfig with the ServiceAccount's token instead of the admin's.
    let admin = std::fs::read_to_string(std::env::var("KUBECONFIG").expect("KUBECONFIG"))
        .expect("kubeconfig");
    let as_sa: String = admin
        .lines()
        .map(
            |line| match line.trim_start().strip_prefix("user: {token:") {
                Some(_) => format!("  user: {{token: {token}}}"),
                None => line.to_string(),
            },
        )
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        as_sa.contains(&token),
        "the kubeconfig this test rewrites has `user: {{token: ...}}`"
    );
    let home = tempfile::tempdir().expect("tmp");
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(&kubeconfig, as_sa).expect("write kubeconfig");

    let pods: Api<Pod> = Api::namespaced(l.client.clone(), &l.namespace);
    let deployments: Api<Deployment> = Api::namespaced(l.client.clone(), &l.namespace);
    l.runtime.block_on(async {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web-1"},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}})).expect("pod");
        create_pod(&pods, &pod).await;
        let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}})).expect("deployment");
        deployments.create(&PostParams::default(), &d).await.expect("deployment");
    });
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["run", "--executor", "kubernetes", "--database-url", "none"])
        .args([
            "-o",
            "json",
            "--riposte-image",
            &l.image,
            "-n",
            &l.namespace,
        ])
        .arg(root.join("workflows/examples/isolate-pod.yaml"))
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("riposte runs");
    let wf: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        wf["status"]["phase"],
        "Succeeded",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Beyond the roles: reading Secrets is forbidden to the same identity.
    let denied = root.join("tests/live/forbidden-secret-read.yaml");
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["run", "--executor", "kubernetes", "--database-url", "none"])
        .args(["-o", "json", "-n", &l.namespace])
        .arg(&denied)
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("riposte runs");
    let wf: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_ne!(wf["status"]["phase"], "Succeeded");
    let messages = wf["status"]["nodes"].to_string();
    assert!(messages.contains("forbidden"), "{messages}");
}

/// Creates a pod, retrying while the API asks to (a new namespace's `default`
/// ServiceAccount gets its token a moment after the namespace exists: 500 ServerTimeout).
async fn create_pod(pods: &Api<Pod>, pod: &Pod) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match pods.create(&PostParams::default(), pod).await {
            Ok(_) => return,
            Err(kube::Error::Api(s))
                if s.reason == "ServerTimeout" && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("creating the victim pod: {e}"),
        }
    }
}

/// Server-side apply of one manifest as the admin (for setting up the RBAC test).
async fn apply(client: &kube::Client, mut obj: Value) {
    use kube::api::{DynamicObject, GroupVersionKind};
    use kube::discovery::{self, Scope};
    let api_version = obj["apiVersion"].as_str().unwrap_or_default().to_string();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = GroupVersionKind::gvk(group, version, obj["kind"].as_str().unwrap_or_default());
    let (ar, caps) = discovery::pinned_kind(client, &gvk)
        .await
        .expect("discovery");
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &ar),
        Scope::Namespaced => {
            let ns = obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or("riposte")
                .to_string();
            obj["metadata"]["namespace"] = json!(ns);
            Api::namespaced_with(client.clone(), &ns, &ar)
        }
    };
    api.patch(
        &name,
        &PatchParams::apply("riposte-live-test").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap_or_else(|e| panic!("applying {} {name}: {e}", gvk.kind));
}

/// `riposte run` of a library action (a ClusterWorkflowTemplate of `workflows/library`) in
/// the test's namespace with `params`; the workflow as JSON.
fn run_action(l: &Live, template: &str, params: &[(&str, &str)]) -> Value {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("run.yaml");
    std::fs::write(
        &file,
        format!(
            "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: {template}-\nspec:\n  workflowTemplateRef:\n    name: {template}\n    clusterScope: true\n"
        ),
    )
    .expect("workflow file");
    let library = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/library");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riposte"));
    cmd.args([
        "run",
        "--executor",
        "kubernetes",
        "--database-url",
        "none",
        "-o",
        "json",
    ])
    .args([
        "--riposte-image",
        &l.image,
        "-n",
        &l.namespace,
        "--templates",
    ])
    .arg(&library)
    .arg(&file);
    for (k, v) in params {
        cmd.arg("-p").arg(format!("{k}={v}"));
    }
    let out = cmd.output().expect("riposte runs");
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("the workflow as JSON")
}

/// The response library's resource-step actions against a real API server, which checks
/// what the fake cannot: schema validation of every write, strategic merge, server-side
/// dry run (`dryRun=All` changes nothing), cluster-scoped Nodes and RBAC objects.
#[test]
fn live_library_actions_change_a_real_cluster_and_dry_runs_do_not() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Node;
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    let Some(l) = live("library") else { return };
    let ns = l.namespace.clone();
    let pods: Api<Pod> = Api::namespaced(l.client.clone(), &ns);
    let deployments: Api<Deployment> = Api::namespaced(l.client.clone(), &ns);
    let policies: Api<NetworkPolicy> = Api::namespaced(l.client.clone(), &ns);
    let nodes: Api<Node> = Api::all(l.client.clone());
    let node_name = format!("riposte-live-node-{}", std::process::id());
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "web-1", "labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}),
    )
    .expect("pod");
    let deployment: Deployment = serde_json::from_value(json!({"metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}}}))
    .expect("deployment");
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": node_name}})).expect("node");
    l.runtime.block_on(async {
        create_pod(&pods, &pod).await;
        deployments
            .create(&PostParams::default(), &deployment)
            .await
            .expect("deployment");
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("node");
        apply(
            &l.client,
            json!({"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": "gvisor"}, "handler": "runsc"}),
        )
        .await;
    });

    // A dry run validates with the API server and changes nothing.
    let wf = run_action(
        &l,
        "pod-isolate",
        &[("namespace", &ns), ("pod", "web-1"), ("dryRun", "true")],
    );
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf:#}");
    let (p, np) = l.runtime.block_on(async {
        (
            pods.get("web-1").await.expect("pod"),
            policies.list(&ListParams::default()).await.expect("list"),
        )
    });
    assert!(
        !p.metadata.labels.unwrap_or_default().contains_key("status"),
        "a dry run labelled the pod"
    );
    assert!(np.items.is_empty(), "a dry run created a policy");

    let wf = run_action(&l, "pod-isolate", &[("namespace", &ns), ("pod", "web-1")]);
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf:#}");
    let (p, np) = l.runtime.block_on(async {
        (
            pods.get("web-1").await.expect("pod"),
            policies.list(&ListParams::default()).await.expect("list"),
        )
    });
    assert_eq!(
        p.metadata
            .labels
            .unwrap_or_default()
            .get("status")
            .map(String::as_str),
        Some("compromised")
    );
    assert_eq!(np.items.len(), 1, "the deny-all policy");

    let wf = run_action(
        &l,
        "workload-sandbox",
        &[("namespace", &ns), ("kind", "Deployment"), ("name", "web")],
    );
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf:#}");
    let spec = l
        .runtime
        .block_on(deployments.get("web"))
        .expect("deployment")
        .spec
        .and_then(|s| s.template.spec)
        .expect("spec");
    assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    let wf = run_action(
        &l,
        "workload-unsandbox",
        &[("namespace", &ns), ("kind", "Deployment"), ("name", "web")],
    );
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf:#}");
    let spec = l
        .runtime
        .block_on(deployments.get("web"))
        .expect("deployment")
        .spec
        .and_then(|s| s.template.spec)
        .expect("spec");
    assert_eq!(spec.runtime_class_name, None);

    for (template, extra) in [
        ("node-cordon", vec![]),
        ("node-taint", vec![("key", "riposte.dev/compromised")]),
    ] {
        let mut params = vec![("node", node_name.as_str())];
        params.extend(extra);
        let wf = run_action(&l, template, &params);
        assert_eq!(wf["status"]["phase"], "Succeeded", "{template}: {wf:#}");
    }
    let n = l.runtime.block_on(nodes.get(&node_name)).expect("node");
    let _ = l
        .runtime
        .block_on(nodes.delete(&node_name, &DeleteParams::default()));
    let spec = n.spec.expect("node spec");
    assert_eq!(spec.unschedulable, Some(true));
    assert!(
        spec.taints
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == "riposte.dev/compromised")
    );

    let wf = run_action(
        &l,
        "pod-terminate",
        &[
            ("namespace", &ns),
            ("pod", "web-1"),
            ("gracePeriodSeconds", "0"),
        ],
    );
    assert_eq!(wf["status"]["phase"], "Succeeded", "{wf:#}");
}

/// Playbook 6 end to end on a real API server: the library installed into `riposte server`,
/// a SelfSubjectRulesReview by a ServiceAccount posted to the audit webhook, and the
/// account rotated by the real API: a new account bound by the same RoleBinding, the old
/// one deleted, and a PolicyReport written (its CRD installed here as a cluster would have).
#[test]
fn live_serviceaccount_probe_playbook_rotates_the_account() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    let Some(l) = live("probe") else { return };
    let ns = l.namespace.clone();
    l.runtime.block_on(async {
        apply(&l.client, json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "policyreports.wgpolicyk8s.io"},
            "spec": {"group": "wgpolicyk8s.io", "scope": "Namespaced",
                "names": {"kind": "PolicyReport", "plural": "policyreports", "singular": "policyreport", "listKind": "PolicyReportList"},
                "versions": [{"name": "v1alpha2", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})).await;
        apply(&l.client, json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "payments-api", "namespace": ns}})).await;
        apply(&l.client, json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "payments-api-view", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "ServiceAccount", "name": "payments-api", "namespace": ns}]})).await;
    });
    let home = tempfile::tempdir().expect("tmp");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("port")
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let mut server = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--executor", "kubernetes", "--riposte-image", &l.image])
        .env("RIPOSTE_HOME", home.path())
        .env_remove("DATABASE_URL")
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("server");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the server did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args([
            "library",
            "install",
            "--playbooks",
            "-n",
            &ns,
            "--server",
            &base,
        ])
        .output()
        .expect("library install");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let probe = json!({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [{
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request",
        "auditID": format!("live-{}", std::process::id()), "stage": "ResponseComplete",
        "requestURI": "/apis/authorization.k8s.io/v1/selfsubjectrulesreviews", "verb": "create",
        "user": {"username": format!("system:serviceaccount:{ns}:payments-api"),
                 "groups": ["system:serviceaccounts", "system:authenticated"]},
        "objectRef": {"resource": "selfsubjectrulesreviews", "apiGroup": "authorization.k8s.io", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 201},
        "requestReceivedTimestamp": "2026-12-03T12:06:10.220000Z", "stageTimestamp": "2026-12-03T12:06:10.224000Z"}]});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let status = agent
        .post(&format!("{base}/api/v1/webhooks/{ns}/k8s-audit/audit"))
        .send_json(&probe)
        .expect("post the audit event")
        .status()
        .as_u16();
    assert_eq!(status, 200);
    let accounts: Api<ServiceAccount> = Api::namespaced(l.client.clone(), &ns);
    let bindings: Api<RoleBinding> = Api::namespaced(l.client.clone(), &ns);
    let deadline = Instant::now() + Duration::from_secs(90);
    let (names, subject) = loop {
        let (names, subject) = l.runtime.block_on(async {
            let names: Vec<String> = accounts
                .list(&ListParams::default())
                .await
                .map(|l| {
                    l.items
                        .into_iter()
                        .filter_map(|a| a.metadata.name)
                        .collect()
                })
                .unwrap_or_default();
            let subject = bindings
                .get("payments-api-view")
                .await
                .ok()
                .and_then(|b| b.subjects)
                .and_then(|s| s.first().map(|s| s.name.clone()))
                .unwrap_or_default();
            (names, subject)
        });
        if !names.iter().any(|n| n == "payments-api") && subject != "payments-api" {
            break (names, subject);
        }
        if Instant::now() >= deadline {
            let wfs = agent
                .get(&format!("{base}/api/v1/workflows/{ns}"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .unwrap_or_default();
            let _ = server.kill();
            panic!("not rotated: accounts {names:?}, binding subject {subject}; workflows: {wfs}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("payments-api-") && *n == subject),
        "{names:?} {subject}"
    );
}
