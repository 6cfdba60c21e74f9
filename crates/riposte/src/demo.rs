//! `riposte demo`: one whole response on this machine, shown as it happens.
//!
//! Nothing outside this process is needed: a FAKE Kubernetes API (`riposte-kube-fake`, in
//! process) holds a small application (a Deployment, its ReplicaSet and two pods in
//! `prod-payments`); a `riposte server` child process (SQLite in a temporary directory,
//! `--executor kubernetes` against the fake, bearer tokens) gets the shipped library and
//! playbooks; a local kubelet stand-in runs the step pods' commands as host processes; a local
//! webhook sink receives the notification. The shipped Falco "Terminal shell in container"
//! alert is then posted as falcosidekick's CloudEvents output does, and the demo follows the
//! event, the sensor's decision, the workflow's steps and the approval, then prints what the
//! cluster now holds, the audit trail and the time from the alert to the NetworkPolicy.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use kube_fake::{FakeApiServer, HostKubelet, ResourceType};
use serde_json::{Value, json};

use crate::client::Client;

/// The application namespace. Its name starts with `prod`, so the runtime-alert playbook
/// isolates and asks (a dev namespace's pod would be terminated at once).
const APP_NAMESPACE: &str = "prod-payments";
/// The pod the shipped alert names.
const POD: &str = "payments-api-7c9d4f8b7-k2x9q";
const SIBLING: &str = "payments-api-7c9d4f8b7-m4p7w";
/// Where workflows, sensors and templates live.
const NAMESPACE: &str = "default";
/// The shipped alert (falcosidekick's payload of Falco's rule).
const ALERT: &str = include_str!("../../../tests/fixtures/falco-terminal-shell.json");
/// Who decides the approval in the demo (an identity of the demo's token file).
const RESPONDER: &str = "demo-responder";
/// How long the response may take before the demo gives up and says where it stopped.
const RESPONSE_DEADLINE: Duration = Duration::from_secs(120);

pub(crate) struct DemoOptions {
    pub keep: bool,
    pub interactive: bool,
}

/// Runs the demo; exit 0 when the pod ended isolated.
pub(crate) fn main(opts: DemoOptions) -> Result<ExitCode> {
    let dir = tempfile::Builder::new()
        .prefix("riposte-demo-")
        .tempdir()
        .context("creating the demo's temporary directory")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let interrupted = Arc::new(AtomicBool::new(false));
    {
        let flag = interrupted.clone();
        rt.spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                flag.store(true, Ordering::SeqCst);
            }
        });
    }
    let mut server: Option<Child> = None;
    let outcome = run(&opts, dir.path(), &rt, &interrupted, &mut server);
    // Whatever happened: the server stops, the kubelet's pods are killed with the runtime,
    // the temporary directory goes.
    if let Some(child) = server.as_mut() {
        stop_child(child);
    }
    rt.shutdown_timeout(Duration::from_secs(2));
    if interrupted.load(Ordering::SeqCst) {
        eprintln!("\ninterrupted: the demo's server, cluster and steps are stopped");
        return Ok(ExitCode::from(130));
    }
    outcome
}

/// What the demo's server needs to be reached.
struct Demo {
    base: String,
    admin: Client,
    admin_token: String,
    responder: Client,
    responder_token: String,
    fake: FakeApiServer,
    started: Instant,
}

fn run(
    opts: &DemoOptions,
    dir: &Path,
    rt: &tokio::runtime::Runtime,
    interrupted: &AtomicBool,
    server: &mut Option<Child>,
) -> Result<ExitCode> {
    let started = Instant::now();
    println!("Riposte demo: a Falco alert answered end to end, on this machine only");
    println!(
        "  (no cluster, no broker, no services: a fake Kubernetes API, SQLite in {})\n",
        dir.display()
    );

    // The cluster and its application.
    let _enter = rt.enter();
    let fake = rt
        .block_on(FakeApiServer::start())
        .context("starting the fake Kubernetes API")?;
    populate(&fake)?;
    let kubeconfig = dir.join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig)
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    step(
        started,
        &format!(
            "fake Kubernetes API at {}: Deployment {APP_NAMESPACE}/payments-api, pods {POD} and {SIBLING}",
            fake.url()
        ),
    );

    // Two identities: the demo sets up as an admin and decides as a responder.
    let admin_token = random_token();
    let responder_token = random_token();
    let auth_file = dir.join("auth.yaml");
    std::fs::write(
        &auth_file,
        format!(
            "identities:\n  - name: demo-admin\n    tokenSha256: {}\n    roles: {{\"*\": admin}}\n  - name: {RESPONDER}\n    tokenSha256: {}\n    roles: {{\"*\": approver}}\n",
            server::auth::sha256_hex(&admin_token),
            server::auth::sha256_hex(&responder_token)
        ),
    )
    .with_context(|| format!("writing {}", auth_file.display()))?;

    // The server.
    let port = free_port()?;
    let base = format!("http://127.0.0.1:{port}");
    let log_path = dir.join("server.log");
    *server = Some(start_server(
        dir,
        &kubeconfig,
        &auth_file,
        &base,
        &log_path,
    )?);
    let admin = Client::new(&base, Some(admin_token.clone()));
    wait_ready(&admin, server, &log_path, interrupted)?;
    step(
        started,
        &format!(
            "riposte server at {base} (SQLite, steps as Jobs; log {})",
            log_path.display()
        ),
    );

    // A kubelet stand-in: each step's pod runs its command on this machine, with this binary
    // as the step wrapper and as the `riposte` the library's steps call.
    let exe = std::env::current_exe().context("finding the riposte binary")?;
    let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    HostKubelet {
        fake: fake.clone(),
        wrapper: exe.clone(),
        work_dir: dir.join("kubelet"),
        extra_env: vec![
            (
                "PATH".into(),
                format!(
                    "{}:{}",
                    bin_dir.display(),
                    std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".into())
                ),
            ),
            ("KUBECONFIG".into(), kubeconfig.display().to_string()),
        ],
        termination_messages: true,
    }
    .spawn();

    // Notifications go to a local sink.
    let sink = rt
        .block_on(start_sink())
        .context("starting the notification sink")?;

    let demo = Demo {
        base: base.clone(),
        responder: Client::new(&base, Some(responder_token.clone())),
        admin,
        admin_token,
        responder_token,
        fake: fake.clone(),
        started,
    };
    install(&demo, &sink.url)?;

    // The NetworkPolicy's arrival, seen from the cluster's side.
    let isolated_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    {
        let fake = fake.clone();
        let at = isolated_at.clone();
        rt.spawn(async move {
            // The policy that fences in this pod by its labels (the new-namespace playbook's
            // default-deny, made when the namespace appeared, is not the response's).
            let pod_labels = {
                let fake = fake.clone();
                move || {
                    fake.get("pods", APP_NAMESPACE, POD)
                        .map(|p| p["metadata"]["labels"].clone())
                        .unwrap_or(Value::Null)
                }
            };
            if fake
                .wait_for(
                    "networkpolicies",
                    APP_NAMESPACE,
                    Duration::from_secs(86_400),
                    |np| fences_in(np, &pod_labels()),
                )
                .await
                .is_some()
                && let Ok(mut at) = at.lock()
            {
                *at = Some(Instant::now());
            }
        });
    }

    // The alert.
    let alert = alert()?;
    println!();
    step(
        started,
        &format!(
            "falcosidekick posts {:?} ({}) for {APP_NAMESPACE}/{POD} as a CloudEvent",
            alert["rule"].as_str().unwrap_or(""),
            alert["priority"].as_str().unwrap_or("")
        ),
    );
    let alert_at = Instant::now();
    post_cloudevent(&demo, &alert)?;

    let alert_id = alert["uuid"].as_str().unwrap_or("demo").to_string();
    let finished = follow(&demo, opts, &sink, &alert_id, alert_at, interrupted)?;
    let Some(workflow) = finished else {
        return Ok(ExitCode::from(1));
    };
    let isolated_at = isolated_at.lock().ok().and_then(|a| *a);
    let contained = summary(&demo, &workflow, alert_at, isolated_at)?;

    if opts.keep && !interrupted.load(Ordering::SeqCst) {
        println!("\nThe demo keeps running (--keep): explore the same run in the console.");
        println!(
            "  console:  {base}/workflows/{NAMESPACE}/{}",
            workflow["metadata"]["name"].as_str().unwrap_or("")
        );
        println!(
            "  sign in with the responder's token: {}",
            demo.responder_token
        );
        println!(
            "  CLI:      RIPOSTE_SERVER={base} RIPOSTE_TOKEN={} riposte event list",
            demo.responder_token
        );
        println!("Press Ctrl-C to stop it; nothing is left running.");
        while !interrupted.load(Ordering::SeqCst) {
            if let Some(child) = server.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!(
                    "the demo's server stopped ({status}); its log: {}",
                    log_path.display()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    Ok(if contained {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The application: a Deployment with its ReplicaSet and two running pods, a forensic
/// namespace for the evidence.
fn populate(fake: &FakeApiServer) -> Result<()> {
    let rt = |g: &str, v: &str, k: &str, p: &str| ResourceType::new(g, v, k, p, true);
    fake.create_namespace(APP_NAMESPACE);
    fake.create_namespace("forensics");
    let labels = json!({"app": "payments-api", "pod-template-hash": "7c9d4f8b7"});
    let container = json!({"name": "payments-api", "image": "registry.example.com/payments-api:1.8.2",
        "ports": [{"containerPort": 8080}]});
    let create = |t: &ResourceType, obj: Value| {
        fake.create(t, APP_NAMESPACE, obj)
            .map_err(|e| anyhow::anyhow!("creating the demo's {}: {}", t.kind, e.message))
    };
    let deployment = create(
        &rt("apps", "v1", "Deployment", "deployments"),
        json!({"metadata": {"name": "payments-api", "labels": {"app": "payments-api"}},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "payments-api"}},
                        "template": {"metadata": {"labels": {"app": "payments-api"}},
                                     "spec": {"serviceAccountName": "payments-api", "containers": [container.clone()]}}},
               "status": {"replicas": 2, "readyReplicas": 2, "availableReplicas": 2}}),
    )?;
    let rs = create(
        &rt("apps", "v1", "ReplicaSet", "replicasets"),
        json!({"metadata": {"name": "payments-api-7c9d4f8b7", "labels": labels,
                            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments-api",
                                                 "uid": deployment["metadata"]["uid"], "controller": true}]},
               "spec": {"replicas": 2, "selector": {"matchLabels": labels}},
               "status": {"replicas": 2, "readyReplicas": 2}}),
    )?;
    for (i, name) in [POD, SIBLING].into_iter().enumerate() {
        create(
            &rt("", "v1", "Pod", "pods"),
            json!({"metadata": {"name": name, "labels": labels,
                                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "payments-api-7c9d4f8b7",
                                                     "uid": rs["metadata"]["uid"], "controller": true}]},
                   "spec": {"serviceAccountName": "payments-api", "nodeName": format!("worker-{}", i + 2),
                            "containers": [container.clone()]},
                   "status": {"phase": "Running", "podIP": format!("10.244.{}.17", i + 2),
                              "conditions": [{"type": "Ready", "status": "True"}]}}),
        )?;
        fake.append_log(
            APP_NAMESPACE,
            name,
            "payments-api 1.8.2 listening on :8080\nGET /healthz 200 0.4ms\nPOST /v1/charges 201 12.1ms\n",
        );
    }
    Ok(())
}

/// The library and playbooks, and the notification wiring: the playbook's `notifyKind`
/// set to `webhook` and the Secret `riposte-notify` pointing at the local sink.
fn install(demo: &Demo, sink_url: &str) -> Result<()> {
    let v = demo.admin.call(
        "POST",
        &format!("/api/v1/riposte/library/{NAMESPACE}"),
        Some(&json!({"playbooks": true})),
    )?;
    let items = v["items"].as_array().cloned().unwrap_or_default();
    let count = |kind: &str| items.iter().filter(|i| i["kind"] == kind).count();
    step(
        demo.started,
        &format!(
            "library installed: {} actions (ClusterWorkflowTemplates), {} playbooks, {} sensors, {} event sources",
            count("ClusterWorkflowTemplate"),
            count("WorkflowTemplate"),
            count("Sensor"),
            count("EventSource")
        ),
    );
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "riposte-notify"},
        "type": "Opaque",
        "data": {"url": base64::engine::general_purpose::STANDARD.encode(sink_url)}});
    demo.fake
        .create(
            &ResourceType::new("", "v1", "Secret", "secrets", true),
            NAMESPACE,
            secret,
        )
        .map_err(|e| anyhow::anyhow!("creating Secret riposte-notify: {}", e.message))?;
    let path = format!("/api/v1/workflow-templates/{NAMESPACE}/respond-runtime-alert");
    let mut template = demo.admin.call("GET", &path, None)?;
    let params = template["spec"]["arguments"]["parameters"]
        .as_array_mut()
        .context("the shipped respond-runtime-alert template has no parameters")?;
    let kind = params
        .iter_mut()
        .find(|p| p["name"] == "notifyKind")
        .context("the shipped respond-runtime-alert template has no notifyKind parameter")?;
    kind["value"] = json!("webhook");
    demo.admin
        .call("PUT", &path, Some(&json!({"template": template})))?;
    step(
        demo.started,
        &format!(
            "playbook respond-runtime-alert set to notify a webhook: the local sink {sink_url}"
        ),
    );
    Ok(())
}

/// The shipped alert, about the demo's application namespace.
fn alert() -> Result<Value> {
    let mut alert: Value = serde_json::from_str(ALERT).context("the shipped Falco alert")?;
    alert["output_fields"]["k8s.ns.name"] = json!(APP_NAMESPACE);
    if let Some(out) = alert["output"].as_str() {
        alert["output"] = json!(out.replace("k8s.ns=payments", &format!("k8s.ns={APP_NAMESPACE}")));
    }
    Ok(alert)
}

/// Posts the alert as falcosidekick's CloudEvents output does (binary mode: attributes in
/// `ce-` headers, the Falco payload as the body) to the runtime-alerts EventSource.
fn post_cloudevent(demo: &Demo, alert: &Value) -> Result<()> {
    let url = format!(
        "{}/api/v1/webhooks/{NAMESPACE}/runtime-alerts/falco",
        demo.base
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = agent
        .post(&url)
        .header("Authorization", format!("Bearer {}", demo.admin_token))
        .header("Content-Type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", alert["uuid"].as_str().unwrap_or("demo"))
        .header("ce-source", "https://falco.org")
        .header("ce-type", "falco.rule.output.v1")
        .header("ce-time", alert["time"].as_str().unwrap_or(""))
        .send(alert.to_string())
        .with_context(|| format!("posting the alert to {url}"))?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().unwrap_or_default();
    if status != 200 {
        bail!("the webhook answered {status}: {body}");
    }
    Ok(())
}

/// Follows the event, the decision and the workflow until it ends; the final workflow, or
/// `None` (interrupted, or it did not end in time: what it waits for is printed).
fn follow(
    demo: &Demo,
    opts: &DemoOptions,
    sink: &Sink,
    alert_id: &str,
    alert_at: Instant,
    interrupted: &AtomicBool,
) -> Result<Option<Value>> {
    let mut seq: Option<i64> = None;
    let mut decided = false;
    let mut name: Option<String> = None;
    let mut phases: BTreeMap<String, String> = BTreeMap::new();
    let mut notified = 0;
    let mut approval_asked = false;
    let mut approved = false;
    let mut last = Value::Null;
    while !interrupted.load(Ordering::SeqCst) {
        if seq.is_none() {
            let events = demo.admin.call(
                "GET",
                &format!("/api/v1/riposte/events?namespace={NAMESPACE}"),
                None,
            )?;
            // Other sources have events too (the new-namespace playbook sees namespaces).
            let ours = events["items"]
                .as_array()
                .and_then(|i| i.iter().find(|e| e["envelope"]["id"] == alert_id));
            if let Some(e) = ours {
                seq = e["seq"].as_i64();
                timed(
                    alert_at,
                    &format!(
                        "event #{} stored: {} from {} (id {})",
                        e["seq"],
                        e["envelope"]["type"].as_str().unwrap_or(""),
                        e["eventSource"].as_str().unwrap_or(""),
                        e["envelope"]["id"].as_str().unwrap_or("")
                    ),
                );
            }
        }
        if let (Some(s), false) = (seq, decided) {
            let ev = demo
                .admin
                .call("GET", &format!("/api/v1/riposte/events/{s}"), None)?;
            for sensor in ev["sensors"].as_array().into_iter().flatten() {
                decided = true;
                for d in sensor["dependencies"].as_array().into_iter().flatten() {
                    timed(
                        alert_at,
                        &format!(
                            "sensor {}: dependency {} {}",
                            sensor["sensor"].as_str().unwrap_or(""),
                            d["name"].as_str().unwrap_or(""),
                            if d["matched"] == true {
                                "matched"
                            } else {
                                "did not match"
                            }
                        ),
                    );
                }
                for t in sensor["triggers"].as_array().into_iter().flatten() {
                    if t["fired"] == true {
                        timed(
                            alert_at,
                            &format!(
                                "sensor {}: trigger {} fired → {}",
                                sensor["sensor"].as_str().unwrap_or(""),
                                t["trigger"].as_str().unwrap_or(""),
                                t["effect"].as_str().unwrap_or("")
                            ),
                        );
                    }
                }
            }
        }
        if name.is_none() {
            let list = demo.admin.call(
                "GET",
                &format!(
                    "/api/v1/workflows/{NAMESPACE}?listOptions.labelSelector=events.argoproj.io/sensor%3Druntime-alert"
                ),
                None,
            )?;
            if let Some(w) = list["items"].as_array().and_then(|i| i.first()) {
                let n = w["metadata"]["name"].as_str().unwrap_or("").to_string();
                timed(
                    alert_at,
                    &format!("workflow {n} created from WorkflowTemplate respond-runtime-alert"),
                );
                name = Some(n);
            }
        }
        if let Some(n) = &name {
            let wf = demo
                .admin
                .call("GET", &format!("/api/v1/workflows/{NAMESPACE}/{n}"), None)?;
            for (task, node, findings) in playbook_tasks(&wf) {
                let phase = node["phase"].as_str().unwrap_or("").to_string();
                if phases.get(&task) == Some(&phase) {
                    continue;
                }
                phases.insert(task.clone(), phase.clone());
                let message = node["message"].as_str().unwrap_or("");
                let what = describe(&task, &phase, message, &findings);
                timed(alert_at, &format!("  {task:<19} {phase:<10} {what}"));
                if task == "approve" && phase == "Running" && !approval_asked {
                    approval_asked = true;
                    timed(
                        alert_at,
                        "  approve             waiting for a person: terminate the pod, or keep it isolated?",
                    );
                }
            }
            let received = sink.received();
            for note in received.iter().skip(notified) {
                timed(
                    alert_at,
                    &format!(
                        "  notification at the local sink: {:?} ({} signed approval link(s))",
                        note["title"]
                            .as_str()
                            .or(note["text"].as_str())
                            .unwrap_or("(message)"),
                        approval_urls(note).len()
                    ),
                );
            }
            notified = received.len();
            // Decided once the question is out: the notification arrived, or its step ended.
            let asked_people = notified > 0
                || phases
                    .get("ask")
                    .is_some_and(|p| p != "Running" && p != "Pending");
            if approval_asked && !approved && asked_people {
                if opts.interactive {
                    print_how_to_decide(demo, n, &received);
                    approved = true; // asked once; the person decides
                } else {
                    // The demo's responder decides: keep the pod isolated for forensics.
                    let body = json!({"nodeFieldSelector": "displayName=approve",
                                      "outputParameters": json!({"decision": "keep"}).to_string()});
                    demo.responder.call(
                        "PUT",
                        &format!("/api/v1/workflows/{NAMESPACE}/{n}/set"),
                        Some(&body),
                    )?;
                    timed(
                        alert_at,
                        &format!(
                            "  approve             decided by {RESPONDER} through the API: keep (the pod stays isolated for forensics)"
                        ),
                    );
                    approved = true;
                }
            }
            let phase = wf["status"]["phase"].as_str().unwrap_or("");
            if matches!(phase, "Succeeded" | "Failed" | "Error") {
                timed(alert_at, &format!("workflow {n} {phase}"));
                return Ok(Some(wf));
            }
            last = wf;
        }
        if alert_at.elapsed() > RESPONSE_DEADLINE && !(opts.interactive && approval_asked) {
            eprintln!(
                "\nthe response did not finish within {}s; where it stands:\n{}",
                RESPONSE_DEADLINE.as_secs(),
                crate::yaml_out::to_yaml(&last["status"])
            );
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(None)
}

/// The playbook's own tasks (the nodes whose boundary is the workflow's root DAG), in the
/// order they started, each with what it found or changed.
fn playbook_tasks(wf: &Value) -> Vec<(String, Value, Vec<String>)> {
    let root = wf["metadata"]["name"].as_str().unwrap_or("");
    let Some(nodes) = wf["status"]["nodes"].as_object() else {
        return Vec::new();
    };
    let mut tasks: Vec<(i64, String, Value, Vec<String>)> = nodes
        .values()
        .filter(|n| n["boundaryID"] == root)
        .map(|n| {
            let started = n["startedAt"]
                .as_str()
                .and_then(expr::time::parse_rfc3339)
                .unwrap_or(i64::MAX);
            let findings = within(nodes, n)
                .into_iter()
                .filter_map(|inner| inner["outputs"]["result"].as_str())
                .filter_map(result_summary)
                .collect();
            (
                started,
                n["displayName"].as_str().unwrap_or("").to_string(),
                n.clone(),
                findings,
            )
        })
        .collect();
    tasks.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    tasks.into_iter().map(|(_, n, v, f)| (n, v, f)).collect()
}

/// A node and every node inside it (by boundary), in no particular order.
fn within<'a>(nodes: &'a serde_json::Map<String, Value>, node: &'a Value) -> Vec<&'a Value> {
    let mut out = vec![node];
    let mut i = 0;
    while i < out.len() {
        let id = out[i]["id"].clone();
        out.extend(nodes.values().filter(|n| n["boundaryID"] == id));
        i += 1;
    }
    out
}

/// What a library step's JSON result says it did, in a few words.
fn result_summary(result: &str) -> Option<String> {
    let v: Value = serde_json::from_str(result).ok()?;
    if let (Some(secret), Some(items)) = (v["secret"].as_str(), v["items"].as_array()) {
        return Some(format!(
            "saved {} items (each with its SHA-256) into Secret {}/{secret}",
            items.len(),
            v["namespace"].as_str().unwrap_or("")
        ));
    }
    let action = v["action"].as_str()?;
    let objects: Vec<&str> = match v["object"].as_str() {
        Some(o) => vec![o],
        None => v["objects"]
            .as_array()?
            .iter()
            .filter_map(Value::as_str)
            .collect(),
    };
    if objects.is_empty() {
        return None;
    }
    let objects = objects.join(", ");
    Some(if v["dryRun"] == true {
        format!("would {action} {objects} (dry run)")
    } else if v["created"] == true {
        format!("created {objects}")
    } else {
        let changes: Vec<&str> = v["changes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if changes.is_empty() {
            format!("{action} {objects}")
        } else {
            format!("{action} {objects}: {}", changes.join("; "))
        }
    })
}

/// What a playbook task does, in a few words, while it runs; what it did once it has.
fn describe(task: &str, phase: &str, message: &str, findings: &[String]) -> String {
    let what = match task {
        "evidence" => "pod manifests and logs into a Secret of namespace forensics",
        "isolate" => "label status=compromised + deny-all NetworkPolicy",
        "propose" => "what terminating would do, asked of the API server as a dry run",
        "approve" => "a person decides: terminate or keep",
        "ask" => "notify with signed approval links",
        "terminate" => "terminate (dev namespaces only)",
        "terminate-approved" => "terminate, if approved",
        "report" => "a PolicyReport result for the pod",
        _ => "",
    };
    match phase {
        "Running" | "Pending" => what.to_string(),
        _ if !findings.is_empty() => findings.join("; "),
        _ => message.to_string(),
    }
}

fn print_how_to_decide(demo: &Demo, name: &str, notes: &[Value]) {
    println!("\n  The approval is yours (--interactive). Decide in any of these ways:");
    println!(
        "    RIPOSTE_SERVER={} RIPOSTE_TOKEN={} riposte resume {name} --set decision=keep      # or decision=terminate",
        demo.base, demo.responder_token
    );
    println!(
        "    the console's inbox: {}/approvals (sign in with the token above)",
        demo.base
    );
    for note in notes {
        for url in approval_urls(note) {
            println!("    a signed link from the notification: {url}");
        }
    }
    println!("  Waiting for the decision...\n");
}

fn approval_urls(note: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let text = note.to_string();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("http") {
        let tail = &rest[i..];
        let end = tail.find(['"', ')', ' ', '\\']).unwrap_or(tail.len());
        let url = &tail[..end];
        if url.contains("/api/v1/riposte/approvals/") && !out.iter().any(|u| u == url) {
            out.push(url.to_string());
        }
        rest = &tail[end..];
    }
    out
}

/// What the cluster holds now, the audit trail, and the time to contain. Returns whether
/// the pod ended isolated.
fn summary(
    demo: &Demo,
    workflow: &Value,
    alert_at: Instant,
    isolated_at: Option<Instant>,
) -> Result<bool> {
    let name = workflow["metadata"]["name"].as_str().unwrap_or("");
    let pod = demo.fake.get("pods", APP_NAMESPACE, POD);
    let policies = demo.fake.list("networkpolicies", APP_NAMESPACE);
    println!("\n── What the cluster holds now ──\n");
    match &pod {
        Some(p) => {
            println!("$ kubectl -n {APP_NAMESPACE} get pod {POD} -o yaml   # its labels");
            print!(
                "{}",
                indent(&crate::yaml_out::to_yaml(
                    &json!({"metadata": {"name": POD, "namespace": APP_NAMESPACE, "labels": p["metadata"]["labels"]}})
                ))
            );
        }
        None => println!("pod {APP_NAMESPACE}/{POD}: deleted"),
    }
    let labels = pod
        .as_ref()
        .map(|p| p["metadata"]["labels"].clone())
        .unwrap_or(Value::Null);
    let (fencing, others): (Vec<&Value>, Vec<&Value>) =
        policies.iter().partition(|np| fences_in(np, &labels));
    for np in &others {
        println!(
            "\n(NetworkPolicy {} is the new-namespace playbook's, made when the namespace appeared)",
            np["metadata"]["name"].as_str().unwrap_or("")
        );
    }
    for np in &fencing {
        println!(
            "\n$ kubectl -n {APP_NAMESPACE} get networkpolicy {} -o yaml",
            np["metadata"]["name"].as_str().unwrap_or("")
        );
        print!("{}", indent(&crate::yaml_out::to_yaml(np)));
    }
    let evidence = demo.fake.list("secrets", "forensics");
    for s in &evidence {
        let keys: Vec<&str> = s["data"]
            .as_object()
            .map(|d| d.keys().map(String::as_str).collect())
            .unwrap_or_default();
        println!(
            "\nevidence: Secret forensics/{} ({})",
            s["metadata"]["name"].as_str().unwrap_or(""),
            keys.join(", ")
        );
    }

    println!("\n── The audit trail of {name} ──\n");
    let audit = demo.admin.call(
        "GET",
        &format!("/api/v1/riposte/audit?workflow={NAMESPACE}/{name}&limit=200"),
        None,
    )?;
    let mut rows: Vec<Value> = audit["items"].as_array().cloned().unwrap_or_default();
    rows.reverse();
    // Who asked and who decided, and every step that changed or collected something.
    let mut shown = 0;
    for r in &rows {
        let action = r["action"].as_str().unwrap_or("");
        let what = if action == "node.transition" {
            let d = &r["details"];
            match d["result"].as_str().and_then(result_summary) {
                Some(s) if d["to"] == "Succeeded" => {
                    format!("{} Succeeded: {s}", d["name"].as_str().unwrap_or(""))
                }
                _ => continue,
            }
        } else {
            format!("{action} {}", r["object"].as_str().unwrap_or(""))
        };
        shown += 1;
        println!(
            "  #{:<4} {} {:<36} {what}",
            r["seq"],
            r["at"].as_str().unwrap_or(""),
            r["actor"].as_str().unwrap_or("")
        );
    }
    println!(
        "  ({shown} shown of {} entries, every node transition included; `riposte audit verify` checks the chain)",
        rows.len()
    );

    let labelled = pod
        .as_ref()
        .is_some_and(|p| p["metadata"]["labels"]["status"] == "compromised");
    let fenced = !fencing.is_empty();
    let contained = labelled && fenced;
    println!();
    match isolated_at {
        Some(at) => {
            let secs = at.duration_since(alert_at).as_secs_f64();
            println!(
                "time from the alert's arrival to the NetworkPolicy being applied: {secs:.3} s"
            );
        }
        None => println!("no NetworkPolicy was applied"),
    }
    let phase = workflow["status"]["phase"].as_str().unwrap_or("");
    if contained {
        println!(
            "RESULT: pod {APP_NAMESPACE}/{POD} isolated (label status=compromised, NetworkPolicy {}); workflow {name} {phase}",
            fencing[0]["metadata"]["name"].as_str().unwrap_or("")
        );
    } else {
        println!(
            "RESULT: pod {APP_NAMESPACE}/{POD} NOT isolated (labelled: {labelled}, NetworkPolicy: {fenced}); workflow {name} {phase}"
        );
    }
    Ok(contained)
}

/// Whether NetworkPolicy `np` selects a pod with `labels` by some of them (a policy for all
/// pods, `podSelector: {}`, does not count: it is not the response's).
fn fences_in(np: &Value, labels: &Value) -> bool {
    match np["spec"]["podSelector"]["matchLabels"].as_object() {
        Some(m) if !m.is_empty() => m.iter().all(|(k, v)| &labels[k] == v),
        _ => false,
    }
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

fn step(started: Instant, what: &str) {
    println!("  ✓ [{:>6.2}s] {what}", started.elapsed().as_secs_f64());
    let _ = std::io::stdout().flush();
}

/// A line of the response, timed from the alert's arrival.
fn timed(alert_at: Instant, what: &str) {
    println!("  [+{:>6.3}s] {what}", alert_at.elapsed().as_secs_f64());
    let _ = std::io::stdout().flush();
}

fn random_token() -> String {
    server::ids::random_bytes::<32>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

fn start_server(
    dir: &Path,
    kubeconfig: &Path,
    auth_file: &Path,
    base: &str,
    log_path: &Path,
) -> Result<Child> {
    let exe = std::env::current_exe().context("finding the riposte binary")?;
    let log = std::fs::File::create(log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let mut cmd = Command::new(exe);
    // The user's own Riposte settings must not leak into the demo's server.
    for (k, _) in std::env::vars_os() {
        if k.to_str()
            .is_some_and(|k| k.starts_with("RIPOSTE_") || k == "DATABASE_URL")
        {
            cmd.env_remove(k);
        }
    }
    let listen = base.trim_start_matches("http://");
    cmd.args(["server", "--executor", "kubernetes", "--listen", listen])
        .arg("--auth-file")
        .arg(auth_file)
        .args(["--external-url", base, "--callback-url", base])
        .env("RIPOSTE_HOME", dir.join("home"))
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    cmd.spawn()
        .context("starting `riposte server` for the demo")
}

fn wait_ready(
    client: &Client,
    server: &mut Option<Child>,
    log_path: &Path,
    interrupted: &AtomicBool,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client.call("GET", "/api/v1/version", None).is_ok() {
            return Ok(());
        }
        if let Some(child) = server.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            let log = std::fs::read_to_string(log_path).unwrap_or_default();
            bail!("the demo's server exited ({status}) before it was ready:\n{log}");
        }
        if interrupted.load(Ordering::SeqCst) {
            bail!("interrupted");
        }
        if Instant::now() > deadline {
            bail!(
                "the demo's server did not answer within 60 s; its log: {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// SIGTERM (the server releases its leases and stops), SIGKILL after 5 s.
fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: signals the child process this function's caller started and still owns.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A local webhook receiver standing in for Slack & co.
struct Sink {
    url: String,
    received: Arc<Mutex<Vec<Value>>>,
}

impl Sink {
    fn received(&self) -> Vec<Value> {
        self.received.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

async fn start_sink() -> Result<Sink> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/notify", listener.local_addr()?);
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let store = received.clone();
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                let v = serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
                if let Ok(mut r) = store.lock() {
                    r.push(v);
                }
                "ok"
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(Sink { url, received })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_alert_is_the_shipped_one_about_the_demo_namespace() {
        let a = alert().expect("alert");
        assert_eq!(a["rule"], "Terminal shell in container");
        assert_eq!(a["output_fields"]["k8s.ns.name"], APP_NAMESPACE);
        assert_eq!(a["output_fields"]["k8s.pod.name"], POD);
        assert!(
            a["output"]
                .as_str()
                .unwrap_or("")
                .contains("k8s.ns=prod-payments")
        );
    }

    #[test]
    fn only_a_policy_that_selects_the_pod_by_its_labels_fences_it_in() {
        let labels = json!({"app": "payments-api", "status": "compromised"});
        let np = |sel: Value| json!({"spec": {"podSelector": sel}});
        for (selector, fences) in [
            (json!({"matchLabels": {"status": "compromised"}}), true),
            (
                json!({"matchLabels": {"status": "compromised", "app": "payments-api"}}),
                true,
            ),
            (json!({"matchLabels": {"status": "quarantined"}}), false),
            (json!({"matchLabels": {}}), false),
            (json!({}), false),
        ] {
            assert_eq!(
                fences_in(&np(selector.clone()), &labels),
                fences,
                "{selector}"
            );
        }
        assert!(!fences_in(
            &np(json!({"matchLabels": {"status": "compromised"}})),
            &Value::Null
        ));
    }

    #[test]
    fn library_results_read_as_what_they_did() {
        for (result, said) in [
            (
                r#"{"action":"apply","dryRun":false,"object":"networkpolicy/x","created":true,"changes":[]}"#,
                Some("created networkpolicy/x"),
            ),
            (
                r#"{"action":"delete","dryRun":true,"objects":["pod/p"]}"#,
                Some("would delete pod/p (dry run)"),
            ),
            (
                r#"{"action":"patch","dryRun":false,"object":"pod/p","created":false,"changes":["a: 1 → 2"]}"#,
                Some("patch pod/p: a: 1 → 2"),
            ),
            (
                r#"{"secret":"e","namespace":"forensics","items":[{},{}]}"#,
                Some("saved 2 items (each with its SHA-256) into Secret forensics/e"),
            ),
            ("notified webhook", None),
            (r#"{"action":"patch","objects":[]}"#, None),
        ] {
            assert_eq!(result_summary(result).as_deref(), said, "{result}");
        }
    }

    #[test]
    fn approval_links_are_found_in_any_message_shape() {
        let note = json!({"text": "Decide: [terminate](http://127.0.0.1:1/api/v1/riposte/approvals/a.b) [keep](http://127.0.0.1:1/api/v1/riposte/approvals/c.d)",
                          "link": "http://127.0.0.1:1/workflows/x"});
        assert_eq!(
            approval_urls(&note),
            vec![
                "http://127.0.0.1:1/api/v1/riposte/approvals/a.b",
                "http://127.0.0.1:1/api/v1/riposte/approvals/c.d"
            ]
        );
    }
}
