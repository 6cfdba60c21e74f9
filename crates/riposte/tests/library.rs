//! The response library (`workflows/library/`), each action run as a user runs it —
//! `riposte run --executor kubernetes --templates workflows/library` of a Workflow that
//! references the ClusterWorkflowTemplate — against the FAKE API server, checking what it
//! changed in the cluster, and that `dryRun` changes nothing.

use std::path::{Path, PathBuf};

use kube_fake::{FakeApiServer, ResourceType};
use serde_json::{Value, json};

fn library() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows/library")
}

fn rt(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> ResourceType {
    ResourceType::new(group, version, kind, plural, namespaced)
}

fn pods() -> ResourceType {
    rt("", "v1", "Pod", "pods", true)
}

struct Cluster {
    fake: FakeApiServer,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

async fn cluster() -> Cluster {
    let fake = FakeApiServer::start().await.expect("fake api server");
    let dir = tempfile::tempdir().expect("tmp");
    let kubeconfig = dir.path().join("kubeconfig");
    fake.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    Cluster {
        fake,
        dir,
        kubeconfig,
    }
}

impl Cluster {
    fn create(&self, t: &ResourceType, ns: &str, obj: Value) {
        self.fake.create(t, ns, obj).expect("create fixture");
    }

    /// Runs ClusterWorkflowTemplate `template` with `params`; the final workflow (JSON).
    async fn run(&self, template: &str, params: &[(&str, &str)]) -> Value {
        let file = self.dir.path().join(format!("{template}-run.yaml"));
        std::fs::write(
            &file,
            format!(
                "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: {template}-\nspec:\n  workflowTemplateRef:\n    name: {template}\n    clusterScope: true\n"
            ),
        )
        .expect("write workflow");
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_riposte"));
        cmd.args(["run", "--executor", "kubernetes", "-o", "json"])
            .args(["--database-url", "none", "--templates"])
            .arg(library())
            .arg(&file)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RIPOSTE_HOME", self.dir.path());
        for (k, v) in params {
            cmd.arg("-p").arg(format!("{k}={v}"));
        }
        let out = cmd.output().await.expect("riposte runs");
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let wf: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{template}: no workflow JSON ({e}); stderr:\n{stderr}"));
        wf
    }

    fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.fake.get(plural, ns, name)
    }
}

fn phase(wf: &Value) -> &str {
    wf["status"]["phase"].as_str().unwrap_or("")
}

/// The node whose display name is `name`.
fn node<'a>(wf: &'a Value, name: &str) -> &'a Value {
    wf["status"]["nodes"]
        .as_object()
        .and_then(|ns| ns.values().find(|n| n["displayName"] == name))
        .unwrap_or_else(|| panic!("no node {name} in {:#}", wf["status"]["nodes"]))
}

/// An output parameter of the workflow's entrypoint (its root node).
fn output<'a>(wf: &'a Value, name: &str) -> &'a str {
    let root = wf["metadata"]["name"].as_str().unwrap_or("");
    wf["status"]["nodes"][root]["outputs"]["parameters"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .and_then(|p| p["value"].as_str())
        .unwrap_or_else(|| panic!("no output {name}: {:#}", wf["status"]))
}

fn explain(wf: &Value) -> String {
    let mut lines = vec![format!("phase {} {}", phase(wf), wf["status"]["message"])];
    for n in wf["status"]["nodes"].as_object().into_iter().flatten() {
        lines.push(format!(
            "  {} {} {}",
            n.1["displayName"], n.1["phase"], n.1["message"]
        ));
    }
    lines.join("\n")
}

/// The run's phase, message or a node's message says `text`.
fn assert_explains(wf: &Value, text: &str) {
    let e = explain(wf);
    assert!(e.contains(text), "expected {text:?} in:\n{e}");
}

fn web_pod(name: &str, owner: Option<(&str, &str)>, labels: Value) -> Value {
    let mut pod = json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "web", "image": "nginx"}], "serviceAccountName": "web"},
    });
    if let Some((kind, owner)) = owner {
        pod["metadata"]["ownerReferences"] = json!([{
            "apiVersion": "apps/v1", "kind": kind, "name": owner, "uid": "u-1", "controller": true
        }]);
    }
    pod
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_label_sets_labels_and_a_dry_run_changes_nothing() {
    let c = cluster().await;
    c.create(
        &pods(),
        "default",
        web_pod("web-1", None, json!({"app": "web"})),
    );

    let wf = c
        .run(
            "pod-label",
            &[
                ("pod", "web-1"),
                ("labels", r#"{"status":"compromised"}"#),
                ("dryRun", "true"),
            ],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let msg = node(&wf, wf["metadata"]["name"].as_str().unwrap_or(""))["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(
        msg.contains(r#"would patch pod/web-1: metadata.labels.status: (unset) → "compromised""#),
        "{msg}"
    );
    assert!(
        c.get("pods", "default", "web-1").expect("pod")["metadata"]["labels"]["status"].is_null(),
        "a dry run wrote the label"
    );

    let wf = c
        .run(
            "pod-label",
            &[
                ("pod", "web-1"),
                ("labels", r#"{"status":"compromised","app":null}"#),
            ],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let labels = &c.get("pods", "default", "web-1").expect("pod")["metadata"]["labels"];
    assert_eq!(labels, &json!({"status": "compromised"}));
    assert_eq!(
        serde_json::from_str::<Value>(output(&wf, "labels")).expect("labels output"),
        json!({"status": "compromised"})
    );

    let wf = c.run("pod-label", &[("pod", "missing")]).await;
    assert!(matches!(phase(&wf), "Failed" | "Error"), "{}", explain(&wf));
    assert_explains(&wf, "does not exist, and a patch never creates it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_isolate_labels_and_fences_in_each_flavour() {
    let c = cluster().await;
    c.fake.add_resource(rt(
        "projectcalico.org",
        "v3",
        "NetworkPolicy",
        "networkpolicies",
        true,
    ));
    c.fake.add_resource(rt(
        "cilium.io",
        "v2",
        "CiliumNetworkPolicy",
        "ciliumnetworkpolicies",
        true,
    ));
    c.create(
        &pods(),
        "default",
        web_pod("web-1", None, json!({"app": "web"})),
    );

    // Dry run first: nothing is labelled, no policy exists.
    let wf = c
        .run("pod-isolate", &[("pod", "web-1"), ("dryRun", "true")])
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert!(c.fake.list("networkpolicies", "default").is_empty());
    assert!(
        c.get("pods", "default", "web-1").expect("pod")["metadata"]["labels"]["status"].is_null()
    );
    assert_explains(&wf, "would apply networkpolicy/riposte-isolate-compromised");

    let wf = c
        .run(
            "pod-isolate",
            &[("pod", "web-1"), ("allowedCIDRs", r#"["10.0.0.5/32"]"#)],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let pod = c.get("pods", "default", "web-1").expect("pod");
    assert_eq!(pod["metadata"]["labels"]["status"], "compromised");
    let np = c
        .get("networkpolicies", "default", "riposte-isolate-compromised")
        .expect("policy");
    assert_eq!(np["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(
        np["spec"]["podSelector"],
        json!({"matchLabels": {"status": "compromised"}})
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["ingress"], json!([]));
    assert_eq!(
        np["spec"]["egress"],
        json!([{"to": [{"ipBlock": {"cidr": "10.0.0.5/32"}}]}])
    );
    assert_eq!(node(&wf, "calico")["phase"], "Skipped");

    let wf = c
        .run("pod-isolate", &[("pod", "web-1"), ("flavour", "cilium")])
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let cnp = c
        .fake
        .list("ciliumnetworkpolicies", "default")
        .into_iter()
        .next()
        .expect("cilium policy");
    assert_eq!(cnp["apiVersion"], "cilium.io/v2");
    assert_eq!(
        cnp["spec"]["enableDefaultDeny"],
        json!({"ingress": true, "egress": true})
    );
    assert_eq!(cnp["spec"]["egress"], json!([]));

    let wf = c
        .run(
            "pod-isolate",
            &[
                ("pod", "web-1"),
                ("flavour", "calico"),
                ("allowedCIDRs", r#"["10.1.0.0/16"]"#),
            ],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let calico = c
        .fake
        .list("networkpolicies", "default")
        .into_iter()
        .find(|p| p["apiVersion"] == "projectcalico.org/v3")
        .expect("calico policy");
    assert_eq!(calico["spec"]["selector"], "status == 'compromised'");
    assert_eq!(
        calico["spec"]["egress"],
        json!([{"action": "Allow", "destination": {"nets": ["10.1.0.0/16"]}}])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_terminate_spares_guarded_pods_and_deletes_the_rest() {
    let c = cluster().await;
    let rs = rt("apps", "v1", "ReplicaSet", "replicasets", true);
    c.create(
        &rs,
        "default",
        json!({"metadata": {"name": "web-7c9d4f8b7"}, "spec": {}, "status": {"readyReplicas": 2}}),
    );
    c.create(
        &pods(),
        "default",
        web_pod(
            "web-7c9d4f8b7-a",
            Some(("ReplicaSet", "web-7c9d4f8b7")),
            json!({}),
        ),
    );
    c.create(
        &rt("apps", "v1", "DaemonSet", "daemonsets", true),
        "default",
        json!({"metadata": {"name": "agent"}, "spec": {}, "status": {"numberReady": 3}}),
    );
    c.create(
        &pods(),
        "default",
        web_pod("agent-x", Some(("DaemonSet", "agent")), json!({})),
    );
    c.create(&pods(), "default", web_pod("bare", None, json!({})));

    // Two ready replicas and at least two must stay: spared.
    let wf = c
        .run(
            "pod-terminate",
            &[("pod", "web-7c9d4f8b7-a"), ("minHealthyReplicas", "2")],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert_eq!(node(&wf, "delete")["phase"], "Skipped", "{}", explain(&wf));
    assert!(
        output(&wf, "verdict").contains("only 2 ready"),
        "{}",
        output(&wf, "verdict")
    );
    assert!(c.get("pods", "default", "web-7c9d4f8b7-a").is_some());

    // A DaemonSet pod is spared by default.
    let wf = c.run("pod-terminate", &[("pod", "agent-x")]).await;
    assert_eq!(node(&wf, "delete")["phase"], "Skipped", "{}", explain(&wf));
    assert!(c.get("pods", "default", "agent-x").is_some());

    // A dry run deletes nothing; then the real one does.
    let wf = c
        .run(
            "pod-terminate",
            &[
                ("pod", "web-7c9d4f8b7-a"),
                ("minHealthyReplicas", "1"),
                ("dryRun", "true"),
            ],
        )
        .await;
    assert_eq!(
        node(&wf, "delete")["phase"],
        "Succeeded",
        "{}",
        explain(&wf)
    );
    assert_explains(&wf, "would delete pod/web-7c9d4f8b7-a");
    assert!(c.get("pods", "default", "web-7c9d4f8b7-a").is_some());
    let wf = c
        .run(
            "pod-terminate",
            &[("pod", "web-7c9d4f8b7-a"), ("minHealthyReplicas", "1")],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert!(c.get("pods", "default", "web-7c9d4f8b7-a").is_none());
    assert_eq!(output(&wf, "owner"), "replicaset/web-7c9d4f8b7");

    let wf = c.run("pod-terminate", &[("pod", "bare")]).await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert!(c.get("pods", "default", "bare").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_sandbox_moves_the_pods_deployment_and_unsandbox_restores_it() {
    let c = cluster().await;
    let deploy = rt("apps", "v1", "Deployment", "deployments", true);
    c.create(
        &deploy,
        "default",
        json!({"metadata": {"name": "web"},
               "spec": {"template": {"spec": {
                   "containers": [{"name": "web", "image": "nginx"}],
                   "nodeSelector": {"pool": "general"}}}}}),
    );
    c.create(
        &pods(),
        "default",
        web_pod(
            "web-7c9d4f8b7-a",
            Some(("ReplicaSet", "web-7c9d4f8b7")),
            json!({"pod-template-hash": "7c9d4f8b7"}),
        ),
    );

    // The RuntimeClass does not exist: fails before changing anything.
    let wf = c
        .run("workload-sandbox", &[("name", "web-7c9d4f8b7-a")])
        .await;
    assert!(matches!(phase(&wf), "Failed" | "Error"), "{}", explain(&wf));
    assert_explains(&wf, "runtimeclass/gvisor");
    let d = c.get("deployments", "default", "web").expect("deployment");
    assert!(d["spec"]["template"]["spec"]["runtimeClassName"].is_null());

    c.create(
        &rt("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", false),
        "",
        json!({"metadata": {"name": "gvisor"}, "handler": "runsc"}),
    );
    let wf = c
        .run("workload-sandbox", &[("name", "web-7c9d4f8b7-a")])
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert_eq!(output(&wf, "workload"), "deployment/web");
    let spec =
        c.get("deployments", "default", "web").expect("deployment")["spec"]["template"]["spec"]
            .clone();
    assert_eq!(spec["runtimeClassName"], "gvisor");
    assert_eq!(
        spec["nodeSelector"],
        json!({"pool": "general", "example.com.node-restriction.kubernetes.io/type": "isolator"})
    );
    assert_eq!(spec["tolerations"][0]["value"], "isolator");

    let wf = c
        .run(
            "workload-unsandbox",
            &[("kind", "Deployment"), ("name", "web")],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let d = c.get("deployments", "default", "web").expect("deployment");
    let spec = &d["spec"]["template"]["spec"];
    assert!(spec["runtimeClassName"].is_null(), "{spec}");
    assert_eq!(spec["nodeSelector"], json!({"pool": "general"}));
    assert!(spec["tolerations"].is_null(), "{spec}");
    assert!(d["metadata"]["annotations"]["riposte.dev/sandbox-undo"].is_null());

    // Not sandboxed any more: undo says so.
    let wf = c
        .run(
            "workload-unsandbox",
            &[("kind", "Deployment"), ("name", "web")],
        )
        .await;
    assert!(matches!(phase(&wf), "Failed" | "Error"), "{}", explain(&wf));
    assert_explains(&wf, "was not sandboxed by Riposte");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serviceaccount_rotate_moves_bindings_and_workloads_then_revokes_the_old_account() {
    let c = cluster().await;
    let sa = rt("", "v1", "ServiceAccount", "serviceaccounts", true);
    let rb = rt(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        true,
    );
    let crb = rt(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        false,
    );
    let deploy = rt("apps", "v1", "Deployment", "deployments", true);
    let secrets = rt("", "v1", "Secret", "secrets", true);
    c.fake.create_namespace("payments");
    c.create(
        &sa,
        "payments",
        json!({"metadata": {"name": "payments-api"}}),
    );
    c.create(&sa, "payments", json!({"metadata": {"name": "other"}}));
    let subject =
        json!({"kind": "ServiceAccount", "name": "payments-api", "namespace": "payments"});
    let other = json!({"kind": "ServiceAccount", "name": "other", "namespace": "payments"});
    c.create(
        &rb,
        "payments",
        json!({"metadata": {"name": "api-reader"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [subject, other]}),
    );
    c.create(
        &rb,
        "payments",
        json!({"metadata": {"name": "unrelated"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "reader"},
        "subjects": [other]}),
    );
    c.create(&crb, "", json!({"metadata": {"name": "api-metrics"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "metrics"},
        "subjects": [subject]}));
    c.create(
        &deploy,
        "payments",
        json!({"metadata": {"name": "payments-api"},
        "spec": {"template": {"spec": {"serviceAccountName": "payments-api",
            "containers": [{"name": "api", "image": "api"}]}}}}),
    );
    c.create(
        &secrets,
        "payments",
        json!({"metadata": {"name": "payments-api-token",
        "annotations": {"kubernetes.io/service-account.name": "payments-api"}},
        "type": "kubernetes.io/service-account-token"}),
    );

    let wf = c
        .run(
            "serviceaccount-rotate",
            &[
                ("namespace", "payments"),
                ("serviceAccount", "payments-api"),
                ("dryRun", "true"),
            ],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert_eq!(
        c.fake.list("serviceaccounts", "payments").len(),
        2,
        "a dry run created an account"
    );
    assert!(
        c.get("serviceaccounts", "payments", "payments-api")
            .is_some()
    );
    assert!(c.get("secrets", "payments", "payments-api-token").is_some());
    assert_eq!(
        c.get("rolebindings", "payments", "api-reader").expect("rb")["subjects"][0]["name"],
        "payments-api"
    );

    let wf = c
        .run(
            "serviceaccount-rotate",
            &[
                ("namespace", "payments"),
                ("serviceAccount", "payments-api"),
            ],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let new = output(&wf, "new").to_string();
    assert!(new.starts_with("payments-api-"), "{new}");
    let created = c
        .get("serviceaccounts", "payments", &new)
        .expect("new account");
    assert_eq!(
        created["metadata"]["labels"]["riposte.dev/rotated-from"],
        "payments-api"
    );
    assert!(
        c.get("serviceaccounts", "payments", "payments-api")
            .is_none(),
        "old account kept"
    );
    assert!(
        c.get("secrets", "payments", "payments-api-token").is_none(),
        "old token kept"
    );
    assert!(c.get("serviceaccounts", "payments", "other").is_some());
    assert_eq!(
        c.get("rolebindings", "payments", "api-reader").expect("rb")["subjects"],
        json!([{"kind": "ServiceAccount", "name": new, "namespace": "payments"}, other])
    );
    assert_eq!(
        c.get("rolebindings", "payments", "unrelated").expect("rb")["subjects"],
        json!([other])
    );
    assert_eq!(
        c.get("clusterrolebindings", "", "api-metrics")
            .expect("crb")["subjects"][0]["name"],
        json!(new)
    );
    assert_eq!(
        c.get("deployments", "payments", "payments-api")
            .expect("deploy")["spec"]["template"]["spec"]["serviceAccountName"],
        json!(new)
    );
    let undo: Value = serde_json::from_str(output(&wf, "undo")).expect("undo is JSON");
    assert_eq!(undo["old"], "payments-api");
    assert_eq!(undo["roleBindings"], json!(["api-reader"]));
    assert_eq!(undo["clusterRoleBindings"], json!(["api-metrics"]));
    assert_eq!(undo["workloads"]["deployments"], json!(["payments-api"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_actions_cordon_taint_and_label() {
    let c = cluster().await;
    c.create(
        &rt("", "v1", "Node", "nodes", false),
        "",
        json!({"metadata": {"name": "worker-2", "labels": {"zone": "a"}},
               "spec": {"taints": [{"key": "gpu", "value": "true", "effect": "NoSchedule"}]}}),
    );
    let wf = c.run("node-cordon", &[("node", "worker-2")]).await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let wf = c
        .run(
            "node-taint",
            &[("node", "worker-2"), ("effect", "NoExecute")],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let wf = c.run("node-label", &[("node", "worker-2")]).await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let n = c.get("nodes", "", "worker-2").expect("node");
    assert_eq!(n["spec"]["unschedulable"], true);
    assert_eq!(
        n["spec"]["taints"],
        json!([{"key": "gpu", "value": "true", "effect": "NoSchedule"},
               {"key": "riposte.dev/compromised", "value": "true", "effect": "NoExecute"}])
    );
    assert_eq!(n["metadata"]["labels"]["riposte.dev/investigation"], "open");
    assert_eq!(n["metadata"]["labels"]["zone"], "a");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_default_deny_skips_excluded_namespaces_and_policyreport_records() {
    let c = cluster().await;
    c.fake.create_namespace("shop");
    let wf = c
        .run("namespace-default-deny", &[("namespace", "kube-system")])
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert_eq!(node(&wf, "policy")["phase"], "Skipped", "{}", explain(&wf));
    assert!(c.fake.list("networkpolicies", "kube-system").is_empty());

    let wf = c
        .run("namespace-default-deny", &[("namespace", "shop")])
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let np = c
        .get("networkpolicies", "shop", "riposte-default-deny")
        .expect("policy");
    assert_eq!(np["spec"]["podSelector"], json!({}));
    assert_eq!(np["spec"]["egress"][0]["ports"][0]["port"], 53);

    let wf = c
        .run(
            "policyreport-result",
            &[
                ("namespace", "shop"),
                ("name", "web-1"),
                ("policy", "pod-isolate"),
                ("message", "isolated \"web-1\""),
            ],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let report = c
        .fake
        .list("policyreports", "shop")
        .into_iter()
        .next()
        .expect("report");
    assert_eq!(report["scope"]["name"], "web-1");
    assert_eq!(report["summary"]["warn"], 1);
    assert_eq!(report["results"][0]["source"], "riposte");
    assert_eq!(report["results"][0]["message"], "isolated \"web-1\"");
    assert!(
        report["results"][0]["timestamp"]["seconds"]
            .as_i64()
            .unwrap_or(0)
            > 1_700_000_000
    );
}

mod common;

/// A `riposte server` on the fake cluster (embedded SQLite in `home`), with the library and
/// the playbooks installed in `default` by `riposte library install --playbooks`.
/// Container steps (pod-evidence, notify, gitops) run on this machine as the fake's kubelet,
/// with this build as `riposte` and the fake as their cluster.
fn host_kubelet(c: &Cluster) -> tokio::task::JoinHandle<()> {
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_riposte"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    kube_fake::HostKubelet {
        fake: c.fake.clone(),
        wrapper: PathBuf::from(env!("CARGO_BIN_EXE_riposte")),
        work_dir: c.dir.path().join("kubelet"),
        extra_env: vec![
            ("PATH".into(), path),
            ("KUBECONFIG".into(), c.kubeconfig.display().to_string()),
        ],
        termination_messages: true,
    }
    .spawn()
}

fn server_with_playbooks(c: &Cluster) -> common::Server {
    server_with_playbooks_and(c, &["--listen", "127.0.0.1:0"])
}

fn server_with_playbooks_and(c: &Cluster, args: &[&str]) -> common::Server {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"));
    cmd.args(["server", "--executor", "kubernetes"])
        .args(args)
        .env("KUBECONFIG", &c.kubeconfig)
        .env("RIPOSTE_HOME", c.dir.path())
        .env_remove("DATABASE_URL");
    let s = common::start_server(cmd, |_| {});
    host_kubelet(c);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["library", "install", "--playbooks", "--server", &s.base])
        .output()
        .expect("riposte library install");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ClusterWorkflowTemplate pod-isolate created"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Sensor default/runtime-alert created"),
        "{stdout}"
    );
    s
}

fn post_webhook(base: &str, source: &str, name: &str, body: &str) {
    let mut resp = common::agent()
        .post(&format!("{base}/api/v1/webhooks/default/{source}/{name}"))
        .header("content-type", "application/json")
        .send(body)
        .expect("post");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().unwrap_or_default();
    assert_eq!(status, 200, "{text}");
}

/// The workflows the server holds whose name starts with `prefix`, once `done` says so.
fn wait_workflows(base: &str, prefix: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, v) = common::call("GET", &format!("{base}/api/v1/workflows/default"), None);
        let wfs: Vec<Value> = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| {
                w["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(prefix))
            })
            .cloned()
            .collect();
        if done(&wfs) {
            return wfs;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "workflows {prefix}*:\n{}",
            wfs.iter()
                .map(|w| explain(&full(base, w)))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn full(base: &str, wf: &Value) -> Value {
    let name = wf["metadata"]["name"].as_str().unwrap_or("");
    common::call(
        "GET",
        &format!("{base}/api/v1/workflows/default/{name}"),
        None,
    )
    .1
}

/// Playbook 4 end to end: the Falco fixture (a shell in a pod of `payments`, not a prod
/// namespace) terminates the pod; a second post of the same alert is one response; the same
/// alert in a prod namespace isolates the pod and waits for a person, who approves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_alert_playbook_terminates_in_dev_and_isolates_then_asks_in_prod() {
    let c = cluster().await;
    c.fake.create_namespace("forensics");
    for ns in ["payments", "prod-payments"] {
        c.fake.create_namespace(ns);
        c.create(
            &pods(),
            ns,
            web_pod(
                "payments-api-7c9d4f8b7-k2x9q",
                None,
                json!({"app": "payments-api"}),
            ),
        );
    }
    let s = tokio::task::block_in_place(|| server_with_playbooks(&c));
    let alert = common::payload_text("falco-terminal-shell.json");
    tokio::task::block_in_place(|| {
        post_webhook(&s.base, "runtime-alerts", "falco", &alert);
        post_webhook(&s.base, "runtime-alerts", "falco", &alert);
        let wfs = wait_workflows(&s.base, "runtime-alert-", |w| {
            w.len() == 1 && common::phase(&w[0]) == "Succeeded"
        });
        let wf = full(&s.base, &wfs[0]);
        assert_eq!(node(&wf, "isolate")["phase"], "Skipped", "{}", explain(&wf));
    });
    assert!(
        c.get("pods", "payments", "payments-api-7c9d4f8b7-k2x9q")
            .is_none(),
        "the dev pod was not terminated"
    );
    // Its manifests and logs were saved first.
    let evidence = c.fake.list("secrets", "forensics");
    assert_eq!(evidence.len(), 1, "{evidence:#?}");
    assert_eq!(
        evidence[0]["metadata"]["annotations"]["riposte.dev/evidence-source"],
        "payments/payments-api-7c9d4f8b7-k2x9q"
    );
    assert_eq!(c.fake.list("policyreports", "payments").len(), 1);

    let prod_alert = alert
        .replace(
            "6f1b0c2e-3d44-4f0e-9a51-2b7c1d9e8a10",
            "11111111-3d44-4f0e-9a51-2b7c1d9e8a10",
        )
        .replace(
            "\"k8s.ns.name\":\"payments\"",
            "\"k8s.ns.name\":\"prod-payments\"",
        );
    tokio::task::block_in_place(|| {
        post_webhook(&s.base, "runtime-alerts", "falco", &prod_alert);
        let wfs = wait_workflows(&s.base, "runtime-alert-", |w| {
            w.iter().any(|wf| {
                full(&s.base, wf)["status"]["nodes"]
                    .as_object()
                    .is_some_and(|ns| {
                        ns.values()
                            .any(|n| n["type"] == "Suspend" && n["phase"] == "Running")
                    })
            })
        });
        let waiting = wfs
            .iter()
            .find(|w| common::phase(w) == "Running")
            .expect("the prod response waits");
        // The proposed change is shown before anyone approves it.
        let proposal = explain(&full(&s.base, waiting));
        assert!(
            proposal.contains("would delete pod/payments-api-7c9d4f8b7-k2x9q"),
            "{proposal}"
        );
        let pod = c
            .get("pods", "prod-payments", "payments-api-7c9d4f8b7-k2x9q")
            .expect("the prod pod is kept");
        assert_eq!(pod["metadata"]["labels"]["status"], "compromised");
        assert!(
            c.get(
                "networkpolicies",
                "prod-payments",
                "riposte-isolate-compromised"
            )
            .is_some()
        );
        let name = waiting["metadata"]["name"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args([
                "resume",
                &name,
                "--set",
                "decision=terminate",
                "--server",
                &s.base,
            ])
            .output()
            .expect("riposte resume");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_workflows(&s.base, &name, |w| {
            w.len() == 1 && common::phase(&w[0]) == "Succeeded"
        });
    });
    assert!(
        c.get("pods", "prod-payments", "payments-api-7c9d4f8b7-k2x9q")
            .is_none()
    );

    // Playbook 3: a namespace created now gets the default-deny policy; kube-system did not.
    c.fake.create_namespace("team-a");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while c
        .get("networkpolicies", "team-a", "riposte-default-deny")
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "team-a got no default-deny policy"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(c.fake.list("networkpolicies", "kube-system").is_empty());
}

/// Playbooks 6 and 1 end to end from one audit batch (the fixture: five events). The two
/// self-reviews by `payments/payments-api` rotate that account once; the two execs into the
/// payments pod (kubectl's `get` by a person and `create` by a CI account) mark the pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_playbooks_rotate_a_probing_account_once_and_mark_exec_targets() {
    let c = cluster().await;
    c.fake.create_namespace("payments");
    c.create(
        &pods(),
        "payments",
        web_pod(
            "payments-api-7c9d4f8b7-k2x9q",
            None,
            json!({"app": "payments-api"}),
        ),
    );
    let sa = rt("", "v1", "ServiceAccount", "serviceaccounts", true);
    c.create(
        &sa,
        "payments",
        json!({"metadata": {"name": "payments-api"}}),
    );
    let s = tokio::task::block_in_place(|| server_with_playbooks(&c));
    tokio::task::block_in_place(|| {
        post_webhook(
            &s.base,
            "k8s-audit",
            "audit",
            &common::payload_text("k8s-audit-eventlist.json"),
        );
        let wfs = wait_workflows(&s.base, "serviceaccount-probe-", |w| {
            !w.is_empty() && w.iter().all(|wf| common::phase(wf) == "Succeeded")
        });
        assert_eq!(
            wfs.len(),
            1,
            "two probes by one account within the window are one rotation"
        );
        wait_workflows(&s.base, "pod-exec-", |w| {
            w.len() == 2 && w.iter().all(|wf| common::phase(wf) == "Succeeded")
        });
    });
    let pod = c
        .get("pods", "payments", "payments-api-7c9d4f8b7-k2x9q")
        .expect("pod");
    assert_eq!(pod["metadata"]["labels"]["riposte.dev/exec-seen"], "true");
    let by = pod["metadata"]["annotations"]["riposte.dev/exec-by"]
        .as_str()
        .unwrap_or("");
    assert!(
        by == "alice@example.com" || by == "system:serviceaccount:ci:deployer",
        "{by}"
    );
    let accounts = c.fake.list("serviceaccounts", "payments");
    assert_eq!(accounts.len(), 1, "{accounts:#?}");
    assert!(
        accounts[0]["metadata"]["name"]
            .as_str()
            .is_some_and(|n| n.starts_with("payments-api-")),
        "{accounts:#?}"
    );
    let reports = c.fake.list("policyreports", "payments");
    let kinds: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["scope"]["kind"].as_str())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "ServiceAccount").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "Pod").count(),
        2,
        "{kinds:?}"
    );
}

/// Playbook 5 end to end: Trivy's VulnerabilityReport fixture (critical, on a ReplicaSet)
/// appears in the cluster; the watch turns it into an event and the sensor sandboxes the
/// ReplicaSet's Deployment; the rescan that reports no critical finding undoes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vulnerable_workload_playbook_sandboxes_until_the_report_clears() {
    let c = cluster().await;
    let reports = rt(
        "aquasecurity.github.io",
        "v1alpha1",
        "VulnerabilityReport",
        "vulnerabilityreports",
        true,
    );
    c.fake.add_resource(reports.clone());
    c.fake.create_namespace("payments");
    c.create(
        &rt("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", false),
        "",
        json!({"metadata": {"name": "gvisor"}, "handler": "runsc"}),
    );
    c.create(
        &rt("apps", "v1", "Deployment", "deployments", true),
        "payments",
        json!({"metadata": {"name": "payments-api"},
               "spec": {"template": {"spec": {"containers": [{"name": "api", "image": "api"}]}}}}),
    );
    c.create(
        &rt("apps", "v1", "ReplicaSet", "replicasets", true),
        "payments",
        json!({"metadata": {"name": "payments-api-7c9d4f8b7", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "payments-api", "uid": "d-1", "controller": true}]},
               "spec": {}}),
    );
    let s = tokio::task::block_in_place(|| server_with_playbooks(&c));
    // The watch lists first; let it start.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let text = common::payload_text("vulnerabilityreport-critical.yaml");
    let report = spec::yaml::load_documents(&text).expect("yaml")[0]
        .value
        .clone();
    c.create(&reports, "payments", report);
    let sandboxed = |c: &Cluster| {
        c.get("deployments", "payments", "payments-api")
            .expect("deployment")["spec"]["template"]["spec"]["runtimeClassName"]
            == "gvisor"
    };
    tokio::task::block_in_place(|| {
        wait_workflows(&s.base, "vulnerable-workload-", |w| {
            w.len() == 1 && common::phase(&w[0]) == "Succeeded"
        })
    });
    assert!(sandboxed(&c));

    // The rescan after the fix: same report, no critical finding.
    let url = format!(
        "{}/apis/aquasecurity.github.io/v1alpha1/namespaces/payments/vulnerabilityreports/replicaset-payments-api-7c9d4f8b7-api",
        c.fake.url()
    );
    let mut fixed = c
        .get(
            "vulnerabilityreports",
            "payments",
            "replicaset-payments-api-7c9d4f8b7-api",
        )
        .expect("report");
    fixed["report"]["summary"]["criticalCount"] = json!(0);
    tokio::task::block_in_place(|| {
        let (status, body) = common::call("PUT", &url, Some(fixed));
        assert_eq!(status, 200, "{body}");
        wait_workflows(&s.base, "vulnerable-workload-fixed-", |w| {
            w.len() == 1 && common::phase(&w[0]) == "Succeeded"
        })
    });
    assert!(!sandboxed(&c));
    let ours = c
        .fake
        .list("policyreports", "payments")
        .into_iter()
        .filter(|r| r["results"][0]["policy"] == "respond-vulnerable-workload")
        .count();
    assert_eq!(ours, 2);
    // Playbook 2 saw the Deployment without runAsNonRoot and reported it.
    tokio::task::block_in_place(|| {
        wait_workflows(&s.base, "insecure-workload-", |w| {
            w.len() == 1 && common::phase(&w[0]) == "Succeeded"
        })
    });
    assert!(
        c.fake
            .list("policyreports", "payments")
            .iter()
            .any(
                |r| r["results"][0]["policy"] == "restricted-security-context"
                    && r["results"][0]["result"] == "fail"
            ),
        "{:#?}",
        c.fake.list("policyreports", "payments")
    );
}

/// A one-shot HTTP listener: answers the statuses in turn, returns the bodies it received.
fn chat_webhook(statuses: Vec<u16>) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/services/T0/B0/secret",
        listener.local_addr().expect("addr")
    );
    let handle = std::thread::spawn(move || {
        let mut bodies = Vec::new();
        for status in statuses {
            let (stream, _) = listener.accept().expect("accept");
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).expect("header");
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).expect("body");
            bodies.push(String::from_utf8_lossy(&body).to_string());
            let mut s = stream;
            write!(
                s,
                "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
            )
            .expect("answer");
        }
        bodies
    });
    (url, handle)
}

#[test]
fn notify_posts_the_services_shape_and_retries_a_5xx() {
    let (url, hook) = chat_webhook(vec![503, 200]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args([
            "notify",
            "--kind",
            "slack",
            "--title",
            "Pod payments/api isolated",
        ])
        .args(["--field", "rule=Terminal shell in container"])
        .args(["--fields-json", r#"{"workflow":"runtime-alert-x1"}"#])
        .env("RIPOSTE_NOTIFY_URL", &url)
        .output()
        .expect("riposte notify");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("secret"),
        "the URL's secret part was printed: {stdout}"
    );
    let bodies = hook.join().expect("hook");
    assert_eq!(bodies.len(), 2, "one retry after the 503");
    let body: Value = serde_json::from_str(&bodies[1]).expect("json");
    let text = body["text"].as_str().expect("text");
    assert!(text.starts_with("*Pod payments/api isolated*"), "{text}");
    assert!(
        text.contains("• *rule*: Terminal shell in container"),
        "{text}"
    );
    assert!(text.contains("• *workflow*: runtime-alert-x1"), "{text}");

    // A 4xx other than 429 is the caller's mistake: no retry, a clear error.
    let (url, hook) = chat_webhook(vec![404]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["notify", "--kind", "teams", "--title", "t"])
        .env("RIPOSTE_NOTIFY_URL", &url)
        .output()
        .expect("riposte notify");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("answered 404"), "{stderr}");
    assert!(!stderr.contains("secret"), "{stderr}");
    assert_eq!(hook.join().expect("hook").len(), 1);
}

/// The notify action's Job takes the URL from the Secret and runs this version's image.
#[test]
fn notify_template_job_reads_the_url_from_a_secret() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("notify-run.yaml");
    std::fs::write(
        &file,
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: notify-\nspec:\n  workflowTemplateRef:\n    name: notify\n    clusterScope: true\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args([
            "run",
            "--executor",
            "kubernetes",
            "--dry-run",
            "-o",
            "json",
            "--templates",
        ])
        .arg(library())
        .arg(&file)
        .args(["-p", "title=Pod isolated", "-p", "secretName=chat"])
        .output()
        .expect("riposte run --dry-run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs: Value = serde_json::from_slice(&out.stdout).expect("json");
    let container = &jobs["items"][0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["image"],
        format!("ghcr.io/riposte/riposte:v{}", env!("CARGO_PKG_VERSION"))
    );
    let env = container["env"].as_array().expect("env");
    let url = env
        .iter()
        .find(|e| e["name"] == "RIPOSTE_NOTIFY_URL")
        .expect("RIPOSTE_NOTIFY_URL");
    assert_eq!(
        url["valueFrom"]["secretKeyRef"],
        json!({"name": "chat", "key": "url"})
    );
}

/// `riposte evidence` (what pod-evidence runs): the pod and its owners' manifests and both
/// logs of a restarted container land in one Secret of the forensic namespace, each item
/// with its SHA-256; a missing forensic namespace is a clear error; a dry run stores nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evidence_saves_manifests_and_logs_into_a_forensic_secret() {
    let c = cluster().await;
    c.fake.create_namespace("payments");
    c.create(
        &rt("apps", "v1", "Deployment", "deployments", true),
        "payments",
        json!({"metadata": {"name": "api"}, "spec": {}}),
    );
    c.create(
        &rt("apps", "v1", "ReplicaSet", "replicasets", true),
        "payments",
        json!({"metadata": {"name": "api-7c9d4f8b7", "ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api", "uid": "d-1", "controller": true}]},
               "spec": {}}),
    );
    let mut pod = web_pod(
        "api-7c9d4f8b7-k2x9q",
        Some(("ReplicaSet", "api-7c9d4f8b7")),
        json!({}),
    );
    pod["status"] = json!({"phase": "Running", "containerStatuses": [
        {"name": "web", "restartCount": 1, "ready": true, "image": "nginx", "imageID": "", "started": true}]});
    c.create(&pods(), "payments", pod);
    c.fake.append_log(
        "payments",
        "api-7c9d4f8b7-k2x9q",
        "GET /health 200\nsh -c uptime\n",
    );
    c.fake
        .append_previous_log("payments", "api-7c9d4f8b7-k2x9q", "panic: crashed\n");
    let evidence = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args(["evidence", "-n", "payments", "--pod", "api-7c9d4f8b7-k2x9q"])
            .args(args)
            .env("KUBECONFIG", &c.kubeconfig)
            .output()
            .expect("riposte evidence");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };

    let (ok, _, stderr) = tokio::task::block_in_place(|| evidence(&[]));
    assert!(!ok);
    assert!(
        stderr.contains("the forensic namespace forensics does not exist"),
        "{stderr}"
    );

    c.fake.create_namespace("forensics");
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| evidence(&["--dry-run"]));
    assert!(ok, "{stderr}");
    assert!(
        c.fake.list("secrets", "forensics").is_empty(),
        "a dry run stored evidence"
    );
    let report: Value = serde_json::from_str(&stdout).expect("report");
    assert_eq!(report["dryRun"], true);

    let (ok, stdout, stderr) = tokio::task::block_in_place(|| evidence(&[]));
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("report");
    let name = report["secret"].as_str().expect("secret name");
    let secret = c
        .get("secrets", "forensics", name)
        .expect("evidence secret");
    assert_eq!(
        secret["metadata"]["labels"]["riposte.dev/evidence-pod"],
        "api-7c9d4f8b7-k2x9q"
    );
    let item = |key: &str| {
        String::from_utf8(kube_fake::base64_decode(
            secret["data"][key]
                .as_str()
                .unwrap_or_else(|| panic!("no {key}: {secret:#}")),
        ))
        .expect("utf-8")
    };
    assert!(item("logs-web.txt").contains("sh -c uptime"));
    assert!(item("logs-web-previous.txt").contains("panic: crashed"));
    let pod: Value = serde_json::from_str(&item("pod.json")).expect("pod.json");
    assert_eq!(pod["metadata"]["name"], "api-7c9d4f8b7-k2x9q");
    let rs: Value =
        serde_json::from_str(&item("owner-0-replicaset-api-7c9d4f8b7.json")).expect("rs");
    assert_eq!(rs["kind"], "ReplicaSet");
    assert!(
        secret["data"]["owner-1-deployment-api.json"].is_string(),
        "{secret:#}"
    );
    let index: Value = serde_json::from_str(&item("index.json")).expect("index");
    let logs = index["items"]
        .as_array()
        .and_then(|is| is.iter().find(|i| i["item"] == "logs-web.txt"))
        .expect("log indexed");
    assert_eq!(logs["sha256"].as_str().map(str::len), Some(64));
}

/// `riposte drain` (what node-drain runs): the node is cordoned, its pods evicted through the
/// Eviction API, a refused eviction (a PodDisruptionBudget's 429) retried, DaemonSet and
/// static pods left; pods of other nodes untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_cordons_and_evicts_respecting_refusals() {
    let c = cluster().await;
    c.create(
        &rt("", "v1", "Node", "nodes", false),
        "",
        json!({"metadata": {"name": "worker-2"}, "spec": {}}),
    );
    let on = |name: &str, node: &str, owner: Option<(&str, &str)>| {
        let mut p = web_pod(name, owner, json!({}));
        p["spec"]["nodeName"] = json!(node);
        p
    };
    c.create(
        &pods(),
        "default",
        on("web-a", "worker-2", Some(("ReplicaSet", "web-1"))),
    );
    c.create(
        &pods(),
        "default",
        on("web-b", "worker-2", Some(("ReplicaSet", "web-1"))),
    );
    c.create(
        &pods(),
        "default",
        on("agent", "worker-2", Some(("DaemonSet", "agent"))),
    );
    let mut mirror = on("etcd-worker-2", "worker-2", None);
    mirror["metadata"]["annotations"] = json!({"kubernetes.io/config.mirror": "abc"});
    c.create(&pods(), "default", mirror);
    c.create(&pods(), "default", on("elsewhere", "worker-1", None));
    // A budget refuses web-b's eviction once.
    c.fake.fail_next(
        "POST",
        "/api/v1/namespaces/default/pods/web-b/eviction",
        429,
        "TooManyRequests",
    );
    let drain = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args(["drain", "worker-2", "--timeout", "20"])
            .args(args)
            .env("KUBECONFIG", &c.kubeconfig)
            .output()
            .expect("riposte drain");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout).expect("report")
    };
    let report = tokio::task::block_in_place(|| drain(&["--dry-run"]));
    assert_eq!(report["dryRun"], true);
    assert!(
        c.get("pods", "default", "web-a").is_some(),
        "a dry run evicted"
    );
    assert!(c.get("nodes", "", "worker-2").expect("node")["spec"]["unschedulable"].is_null());

    let report = tokio::task::block_in_place(|| drain(&[]));
    assert_eq!(
        report["evicted"],
        json!(["default/web-a", "default/web-b"]),
        "{report:#}"
    );
    assert_eq!(
        c.get("nodes", "", "worker-2").expect("node")["spec"]["unschedulable"],
        true
    );
    for gone in ["web-a", "web-b"] {
        assert!(
            c.get("pods", "default", gone).is_none(),
            "{gone} still there"
        );
    }
    for kept in ["agent", "etcd-worker-2", "elsewhere"] {
        assert!(c.get("pods", "default", kept).is_some(), "{kept} evicted");
    }
    let skipped: Vec<&str> = report["skipped"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["why"].as_str())
        .collect();
    assert_eq!(skipped, vec!["DaemonSet pod", "static (mirror) pod"]);
    // The refused eviction was asked again: once refused, once done (after the dry run's).
    let asked = c
        .fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /api/v1/namespaces/default/pods/web-b/eviction"))
        .count();
    assert_eq!(asked, 3, "{:#?}", c.fake.requests());
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Reviewer",
            "-c",
            "user.email=reviewer@example.com",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare GitOps repository with `main`, and a reviewer's clone of it.
fn gitops_repo(root: &Path) -> (PathBuf, PathBuf) {
    let bare = root.join("ops.git");
    let clone = root.join("reviewer");
    git(root, &["init", "-q", "--bare", "-b", "main", "ops.git"]);
    git(root, &["clone", "-q", bare.to_str().unwrap(), "reviewer"]);
    git(&clone, &["checkout", "-q", "-b", "main"]);
    std::fs::write(clone.join("README"), "cluster state\n").unwrap();
    git(&clone, &["add", "."]);
    git(&clone, &["commit", "-q", "-m", "initial"]);
    git(&clone, &["push", "-q", "origin", "main"]);
    (bare, clone)
}

/// Waits for `branch` to appear in the bare repository; its commit, or `None` after a
/// minute (the run's own outcome then says why).
async fn proposed(bare: &Path, branch: &str) -> Option<String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        let heads = git(
            bare,
            &["for-each-ref", "--format=%(refname:short) %(objectname)"],
        );
        if let Some(line) = heads.lines().find(|l| l.starts_with(&format!("{branch} "))) {
            return Some(line.split(' ').nth(1).unwrap_or("").to_string());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    None
}

/// GitOps mode: the change is a commit on a branch; the run waits for a person; merged, it
/// waits for the GitOps tool (played here) to apply it; a deleted branch is a rejection that
/// applies nothing; a dry run pushes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gitops_change_waits_for_a_merge_then_for_the_cluster_and_a_deleted_branch_rejects() {
    let c = cluster().await;
    c.fake.create_namespace("payments");
    let _kubelet = host_kubelet(&c);
    let (bare, clone) = gitops_repo(c.dir.path());
    let netpol = rt(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
    );
    let manifest = json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "isolate-web", "namespace": "payments", "resourceVersion": "12"},
        "spec": {"podSelector": {"matchLabels": {"status": "compromised"}},
                 "policyTypes": ["Ingress", "Egress"]}
    })
    .to_string();
    let repo = bare.display().to_string();
    let params = |branch: &'static str, dir: &'static str, dry: &'static str| {
        vec![
            ("repo", repo.clone()),
            ("branch", branch.to_string()),
            ("dir", dir.to_string()),
            ("manifests", manifest.clone()),
            ("title", "Isolate payments/web".to_string()),
            (
                "alert",
                r#"{"rule":"Terminal shell in container"}"#.to_string(),
            ),
            ("namespace", "payments".to_string()),
            ("pollInterval", "200ms".to_string()),
            ("reviewTimeout", "60s".to_string()),
            ("verifyTimeout", "30s".to_string()),
            ("dryRun", dry.to_string()),
        ]
    };

    // Merged: the run proposes, waits; the reviewer merges; "Argo CD" applies; the run ends.
    let p = params("riposte/isolate-web", "clusters/prod/responses", "false");
    let p_refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reviewer = async {
        let commit = proposed(&bare, "riposte/isolate-web").await?;
        let file = git(
            &bare,
            &[
                "show",
                "riposte/isolate-web:clusters/prod/responses/networkpolicy-payments-isolate-web.yaml",
            ],
        );
        assert!(
            file.contains("kind: NetworkPolicy") && !file.contains("resourceVersion"),
            "{file}"
        );
        let message = git(&bare, &["log", "-1", "--format=%B", &commit]);
        assert!(
            message.contains("Isolate payments/web")
                && message.contains("Terminal shell in container")
                && message.contains("Run: default/gitops-change-"),
            "{message}"
        );
        // Not merged yet: the cluster must not have it (Riposte applies nothing itself).
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        assert!(
            c.get("networkpolicies", "payments", "isolate-web")
                .is_none()
        );
        git(&clone, &["fetch", "-q", "origin"]);
        git(
            &clone,
            &[
                "merge",
                "-q",
                "--no-ff",
                "-m",
                "Merge riposte/isolate-web",
                "origin/riposte/isolate-web",
            ],
        );
        git(&clone, &["push", "-q", "origin", "main"]);
        // The GitOps tool syncs a moment later.
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        let applied = std::fs::read_to_string(
            clone.join("clusters/prod/responses/networkpolicy-payments-isolate-web.yaml"),
        )
        .expect("merged file");
        assert!(applied.contains("compromised"));
        let mut obj: Value = serde_json::from_str(&manifest).unwrap();
        obj["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("resourceVersion");
        c.create(&netpol, "payments", obj);
        Some(commit)
    };
    let (wf, commit) = tokio::join!(c.run("gitops-change", &p_refs), reviewer);
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert_eq!(output(&wf, "decision"), "merged");
    assert_eq!(Some(output(&wf, "commit").to_string()), commit);
    assert_eq!(
        node(&wf, "verify")["phase"],
        "Succeeded",
        "{}",
        explain(&wf)
    );

    // The same change again (a second alert): main already holds it, so no branch, no
    // review; the cluster is checked at once.
    let p = params(
        "riposte/isolate-web-again",
        "clusters/prod/responses",
        "false",
    );
    let p_refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let wf = c.run("gitops-change", &p_refs).await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert_eq!(output(&wf, "decision"), "merged");
    assert!(
        output(&wf, "reason").contains("already held"),
        "{}",
        explain(&wf)
    );
    assert!(git(&bare, &["branch", "--list", "riposte/isolate-web-again"]).is_empty());

    // Rejected: the reviewer deletes the branch; nothing is verified or applied.
    let p = params("riposte/isolate-api", "clusters/staging/responses", "false");
    let p_refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let reviewer = async {
        if proposed(&bare, "riposte/isolate-api").await.is_some() {
            git(
                &clone,
                &["push", "-q", "origin", "--delete", "riposte/isolate-api"],
            );
        }
    };
    let (wf, ()) = tokio::join!(c.run("gitops-change", &p_refs), reviewer);
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert_eq!(output(&wf, "decision"), "rejected");
    assert!(output(&wf, "reason").contains("deleted without being merged"));
    assert_eq!(node(&wf, "verify")["phase"], "Skipped", "{}", explain(&wf));

    // A dry run: the commit it would make, no branch.
    let p = params("riposte/dry", "clusters/dev/responses", "true");
    let p_refs: Vec<(&str, &str)> = p.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let wf = c.run("gitops-change", &p_refs).await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert_eq!(output(&wf, "decision"), "dry-run");
    assert_eq!(output(&wf, "commit").len(), 40);
    assert!(git(&bare, &["branch", "--list", "riposte/dry"]).is_empty());
}

/// Playbook 4 in prod with a notification: the notify step asks its server for signed links
/// (with its node token), the message carries one per decision, and a person who opens the
/// "terminate" link and confirms it terminates the isolated pod, with no Riposte token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_alert_notification_carries_links_that_decide_the_approval() {
    let c = cluster().await;
    for ns in ["forensics", "prod-payments"] {
        c.fake.create_namespace(ns);
    }
    c.create(
        &pods(),
        "prod-payments",
        web_pod("api-7c9d4f8b7-k2x9q", None, json!({"app": "api"})),
    );
    let (chat_url, chat) = chat_webhook(vec![200]);
    c.create(
        &rt("", "v1", "Secret", "secrets", true),
        "default",
        json!({"metadata": {"name": "riposte-notify"}, "stringData": {"url": chat_url}}),
    );
    let port = common::free_port();
    let base = format!("http://127.0.0.1:{port}");
    let listen = format!("127.0.0.1:{port}");
    let s = tokio::task::block_in_place(|| {
        server_with_playbooks_and(
            &c,
            &[
                "--listen",
                &listen,
                "--callback-url",
                &base,
                "--external-url",
                &base,
            ],
        )
    });
    let submit = json!({"resourceKind": "WorkflowTemplate", "resourceName": "respond-runtime-alert",
        "submitOptions": {"parameters": ["namespace=prod-payments", "pod=api-7c9d4f8b7-k2x9q",
            "rule=Terminal shell in container", "priority=Notice", "notifyKind=webhook"]}});
    let (code, wf) = tokio::task::block_in_place(|| {
        common::call(
            "POST",
            &format!("{}/api/v1/workflows/default/submit", s.base),
            Some(submit),
        )
    });
    assert_eq!(code, 200, "{wf}");
    let name = wf["metadata"]["name"].as_str().expect("name").to_string();

    let bodies = tokio::task::block_in_place(|| chat.join().expect("chat listener"));
    let message: Value = serde_json::from_str(&bodies[0]).expect("json message");
    assert!(
        message["title"]
            .as_str()
            .unwrap_or("")
            .contains("prod-payments/api-7c9d4f8b7-k2x9q"),
        "{message}"
    );
    let links = message["approvals"]
        .as_array()
        .expect("approval links")
        .clone();
    assert_eq!(links.len(), 2, "{message}");
    assert_eq!(links[0]["label"], "terminate");
    let terminate = links[0]["url"].as_str().expect("url").to_string();
    assert!(
        terminate.starts_with(&format!("{base}/api/v1/riposte/approvals/")),
        "{terminate}"
    );
    assert!(
        c.get("pods", "prod-payments", "api-7c9d4f8b7-k2x9q")
            .is_some(),
        "nothing is terminated before someone decides"
    );

    let (status, page) = tokio::task::block_in_place(|| {
        let mut resp = common::agent()
            .post(&terminate)
            .send_empty()
            .expect("post link");
        (
            resp.status().as_u16(),
            resp.body_mut().read_to_string().unwrap_or_default(),
        )
    });
    assert_eq!(status, 200, "{page}");
    tokio::task::block_in_place(|| {
        let wfs = wait_workflows(&s.base, &name, |w| {
            w.len() == 1 && matches!(common::phase(&w[0]), "Succeeded" | "Failed" | "Error")
        });
        let wf = full(&s.base, &wfs[0]);
        assert_eq!(common::phase(&wf), "Succeeded", "{}", explain(&wf));
        assert_eq!(
            node(&wf, "terminate-approved")["phase"],
            "Succeeded",
            "{}",
            explain(&wf)
        );
        assert_eq!(node(&wf, "ask")["phase"], "Succeeded", "{}", explain(&wf));
    });
    assert!(
        c.get("pods", "prod-payments", "api-7c9d4f8b7-k2x9q")
            .is_none(),
        "the approved termination happened"
    );
}

/// A minimal SMTP server on loopback: answers each session's commands, with `first_rcpt`
/// as the reply to the first RCPT of each session in turn (then 250), and returns each
/// session's DATA.
fn smtp_server(first_rcpt: Vec<&'static str>) -> (u16, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = std::thread::spawn(move || {
        let mut mails = Vec::new();
        for reply in first_rcpt {
            let (stream, _) = listener.accept().expect("accept");
            let mut out = stream.try_clone().expect("clone");
            let mut reader = BufReader::new(stream);
            write!(out, "220 test ESMTP\r\n").expect("greet");
            let mut rcpt_seen = false;
            let mut data = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let cmd = line.trim_end().to_ascii_uppercase();
                let answer = if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                    "250-test\r\n250 8BITMIME".to_string()
                } else if cmd.starts_with("RCPT") && !rcpt_seen {
                    rcpt_seen = true;
                    reply.to_string()
                } else if cmd.starts_with("DATA") {
                    write!(out, "354 go on\r\n").expect("354");
                    loop {
                        let mut l = String::new();
                        if reader.read_line(&mut l).unwrap_or(0) == 0 || l == ".\r\n" {
                            break;
                        }
                        data.push_str(&l);
                    }
                    "250 queued".to_string()
                } else if cmd.starts_with("QUIT") {
                    let _ = write!(out, "221 bye\r\n");
                    break;
                } else {
                    "250 ok".to_string()
                };
                if write!(out, "{answer}\r\n").is_err() {
                    break;
                }
            }
            mails.push(data);
        }
        mails
    });
    (port, handle)
}

/// `riposte notify --kind email` over SMTP: subject, recipients and the facts arrive; a
/// temporary refusal (451) is retried, a permanent one (550) fails at once.
#[test]
fn notify_sends_email_and_retries_only_temporary_refusals() {
    let (port, server) = smtp_server(vec!["451 try later", "250 ok", "550 no such user"]);
    let notify = |to: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args([
                "notify",
                "--kind",
                "email",
                "--title",
                "Pod payments/api isolated",
            ])
            .args([
                "--text",
                "Falco saw a shell.",
                "--field",
                "rule=Terminal shell in container",
            ])
            .args(["--from", "Riposte <riposte@example.com>", "--to", to])
            .env("RIPOSTE_NOTIFY_URL", format!("smtp://127.0.0.1:{port}"))
            .output()
            .expect("riposte notify")
    };
    let out = notify("secops@example.com,oncall@example.com");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("2 recipient(s)"), "{stdout}");
    let out = notify("nobody@example.com");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refused the email") && stderr.contains("550"),
        "{stderr}"
    );
    let mails = server.join().expect("smtp server");
    assert_eq!(
        mails.len(),
        3,
        "a retry after 451, then the 550 session, not retried"
    );
    let mail = &mails[1];
    for needle in [
        "Subject: Pod payments/api isolated",
        "secops@example.com",
        "oncall@example.com",
        "From: Riposte <riposte@example.com>",
        "rule: Terminal shell in container",
        "Falco saw a shell.",
    ] {
        assert!(mail.contains(needle), "{needle:?} not in:\n{mail}");
    }
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["notify", "--kind", "email", "--title", "t"])
        .env("RIPOSTE_NOTIFY_URL", format!("smtp://127.0.0.1:{port}"))
        .output()
        .expect("riposte notify");
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs --to"));
}

fn riposte_with(c: &Cluster, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(args)
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .expect("riposte runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Plays the kubelet for a capture: once the pod has an ephemeral container, "runs" it with
/// `log` as its output; returns that container's spec.
fn play_capture(c: &Cluster, ns: &str, pod: &str, log: String) -> tokio::task::JoinHandle<Value> {
    let fake = c.fake.clone();
    let (ns, pod) = (ns.to_string(), pod.to_string());
    tokio::spawn(async move {
        let found = fake
            .wait_for("pods", &ns, std::time::Duration::from_secs(60), |p| {
                p["metadata"]["name"] == pod.as_str() && p["spec"]["ephemeralContainers"].is_array()
            })
            .await
            .expect("an ephemeral container");
        let spec = found["spec"]["ephemeralContainers"][0].clone();
        let name = spec["name"].as_str().unwrap_or_default().to_string();
        fake.finish_ephemeral(&ns, &pod, &name, 0, &log)
            .expect("finish the container");
        spec
    })
}

/// `riposte capture`: an ephemeral container with tcpdump is added to the pod (the filter as
/// tcpdump's own arguments, not shell), its base64 output (played here as the kubelet) is
/// decoded and stored as capture.pcap with its digest; output that is not a capture is an
/// error that says what to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_adds_a_tcpdump_container_and_stores_the_pcap() {
    let c = cluster().await;
    for ns in ["payments", "forensics"] {
        c.fake.create_namespace(ns);
    }
    let mut pod = web_pod("api-1", None, json!({}));
    pod["status"] = json!({"phase": "Running"});
    c.create(&pods(), "payments", pod);
    let args = [
        "capture",
        "-n",
        "payments",
        "--pod",
        "api-1",
        "--seconds",
        "5",
        "--filter",
        "port 443; rm -rf /",
    ];

    let (ok, stdout, stderr) =
        tokio::task::block_in_place(|| riposte_with(&c, &[&args[..], &["--dry-run"]].concat()));
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("report");
    assert_eq!(
        report["wouldAdd"]["securityContext"]["capabilities"]["add"][0],
        "NET_RAW"
    );
    let argv = report["wouldAdd"]["args"].as_array().expect("args").clone();
    assert!(
        argv.contains(&json!("443;")) && argv.contains(&json!("rm")),
        "{argv:?}"
    );
    assert!(c.get("pods", "payments", "api-1").unwrap()["spec"]["ephemeralContainers"].is_null());

    // The kubelet: when the container appears, it "captures" these bytes.
    let pcap: Vec<u8> = [0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0]
        .iter()
        .copied()
        .cycle()
        .take(3000)
        .collect();
    let encoded = {
        use std::io::Write;
        let mut child = std::process::Command::new("base64")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("base64");
        child.stdin.take().unwrap().write_all(&pcap).unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout).unwrap()
    };
    let kubelet = play_capture(&c, "payments", "api-1", encoded.clone());
    let (ok, stdout, stderr) = tokio::task::block_in_place(|| riposte_with(&c, &args));
    kubelet.await.unwrap();
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("report");
    let secret = c
        .get("secrets", "forensics", report["secret"].as_str().unwrap())
        .expect("capture secret");
    assert_eq!(
        kube_fake::base64_decode(secret["data"]["capture.pcap"].as_str().unwrap()),
        pcap
    );
    assert_eq!(report["items"][0]["bytes"], 3000);
    assert_eq!(report["items"][0]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(
        secret["metadata"]["labels"]["riposte.dev/evidence-pod"],
        "api-1"
    );
}

/// `riposte checkpoint`: the kubelet's answer (the archive's path) is the report; a kubelet
/// without the feature is a clear error; an unscheduled pod or a wrong container too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_asks_the_kubelet_and_explains_when_it_cannot() {
    let c = cluster().await;
    c.fake.create_namespace("payments");
    c.create(
        &rt("", "v1", "Node", "nodes", false),
        "",
        json!({"metadata": {"name": "worker-1"}}),
    );
    c.create(&pods(), "payments", web_pod("unscheduled", None, json!({})));
    let mut pod = web_pod("api-1", None, json!({}));
    pod["spec"]["nodeName"] = json!("worker-1");
    c.create(&pods(), "payments", pod);
    let run = |pod: &str, extra: &[&str]| {
        tokio::task::block_in_place(|| {
            riposte_with(
                &c,
                &[&["checkpoint", "-n", "payments", "--pod", pod][..], extra].concat(),
            )
        })
    };

    let (ok, _, stderr) = run("api-1", &[]);
    assert!(!ok);
    assert!(
        stderr.contains("ContainerCheckpoint feature gate"),
        "{stderr}"
    );
    let (ok, _, stderr) = run("unscheduled", &[]);
    assert!(
        !ok && stderr.contains("not scheduled on a node"),
        "{stderr}"
    );
    let (ok, _, stderr) = run("api-1", &["--container", "nope"]);
    assert!(
        !ok && stderr.contains("has no container \"nope\" (it has web)"),
        "{stderr}"
    );

    c.fake.enable_checkpoints();
    let (ok, stdout, stderr) = run("api-1", &[]);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("report");
    assert_eq!(report["node"], "worker-1");
    assert_eq!(report["container"], "web");
    assert!(
        report["archives"][0]
            .as_str()
            .unwrap()
            .starts_with("/var/lib/kubelet/checkpoints/checkpoint-payments_api-1_web"),
        "{report}"
    );
}

/// `riposte pod-command` over pods/exec (the fake runs the command on this machine): the
/// output and exit code are the report; a failing command fails the step with its stderr
/// unless allowed; a wrong container is the API server's clear refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_command_runs_in_the_container_and_reports_its_output() {
    let c = cluster().await;
    c.fake.create_namespace("payments");
    let mut pod = web_pod("api-1", None, json!({}));
    pod["status"] = json!({"phase": "Running"});
    c.create(&pods(), "payments", pod);
    let run = |extra: &[&str]| {
        tokio::task::block_in_place(|| {
            riposte_with(
                &c,
                &[
                    &["pod-command", "-n", "payments", "--pod", "api-1"][..],
                    extra,
                ]
                .concat(),
            )
        })
    };
    let (ok, stdout, stderr) = run(&["--script", "echo listening on 4444; echo warn >&2"]);
    assert!(ok, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).expect("report");
    assert_eq!(report["exitCode"], 0);
    assert_eq!(report["stdout"], "listening on 4444\n");
    assert_eq!(report["stderr"], "warn\n");
    assert!(
        c.fake.requests().iter().any(|r| r
            .starts_with("EXEC /api/v1/namespaces/payments/pods/api-1/exec?")
            && r.contains("command=sh&command=-c&command=echo")),
        "{:?}",
        c.fake.requests()
    );

    let (ok, _, stderr) = run(&["--", "sh", "-c", "echo nope >&2; exit 3"]);
    assert!(!ok);
    assert!(
        stderr.contains("the command exited 3") && stderr.contains("nope"),
        "{stderr}"
    );
    let (ok, stdout, _) = run(&["--allow-failure", "--", "sh", "-c", "exit 3"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["exitCode"],
        3
    );

    let (ok, _, stderr) = run(&["--container", "sidecar", "--", "true"]);
    assert!(
        !ok && stderr.contains("container sidecar is not valid"),
        "{stderr}"
    );
    let (ok, stdout, _) = run(&["--dry-run", "--", "kill", "1"]);
    assert!(ok && stdout.contains("wouldRun"), "{stdout}");
}

/// The forensic actions as users run them, workflows whose container steps run as Jobs:
/// pod-command's output is the step's result, pod-checkpoint names the archive, pod-capture
/// stores the pcap, and notify's dry run shows the message without sending it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forensic_actions_and_a_notify_dry_run_run_as_workflows() {
    let c = cluster().await;
    for ns in ["payments", "forensics"] {
        c.fake.create_namespace(ns);
    }
    let _kubelet = host_kubelet(&c);
    c.create(
        &rt("", "v1", "Node", "nodes", false),
        "",
        json!({"metadata": {"name": "worker-1"}}),
    );
    let mut pod = web_pod("api-1", None, json!({}));
    pod["spec"]["nodeName"] = json!("worker-1");
    pod["status"] = json!({"phase": "Running"});
    c.create(&pods(), "payments", pod);
    // Each action's one step is the workflow's root node: its result.
    let result = |wf: &Value, _action: &str| -> Value {
        let root = wf["metadata"]["name"].as_str().unwrap_or("");
        serde_json::from_str(
            wf["status"]["nodes"][root]["outputs"]["result"]
                .as_str()
                .unwrap_or("null"),
        )
        .unwrap_or(Value::Null)
    };

    let wf = c
        .run(
            "pod-command",
            &[
                ("namespace", "payments"),
                ("pod", "api-1"),
                ("script", "echo $((6 * 7))"),
            ],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert_eq!(
        result(&wf, "pod-command")["stdout"],
        "42\n",
        "{}",
        explain(&wf)
    );

    c.fake.enable_checkpoints();
    let wf = c
        .run(
            "pod-checkpoint",
            &[("namespace", "payments"), ("pod", "api-1")],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    assert_eq!(result(&wf, "pod-checkpoint")["node"], "worker-1");

    // base64 of "pcap-bytes"
    let player = play_capture(&c, "payments", "api-1", "cGNhcC1ieXRlcw==\n".into());
    let wf = c
        .run(
            "pod-capture",
            &[
                ("namespace", "payments"),
                ("pod", "api-1"),
                ("seconds", "1"),
                ("filter", "port 53"),
            ],
        )
        .await;
    let spec = player.await.unwrap();
    assert_eq!(spec["args"][6], "port", "the filter is tcpdump's arguments");
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let secret = result(&wf, "pod-capture")["secret"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let stored = c
        .get("secrets", "forensics", &secret)
        .expect("capture secret");
    assert_eq!(
        kube_fake::base64_decode(stored["data"]["capture.pcap"].as_str().unwrap()),
        b"pcap-bytes"
    );

    // No Secret with a URL: a dry run needs none, and sends nothing.
    c.create(
        &rt("", "v1", "Secret", "secrets", true),
        "default",
        json!({"metadata": {"name": "riposte-notify"}, "stringData": {"url": "http://127.0.0.1:9/never"}}),
    );
    let wf = c
        .run(
            "notify",
            &[
                ("kind", "slack"),
                ("title", "Pod isolated"),
                ("dryRun", "true"),
                ("approvalNode", "approve"),
                ("approvalChoices", "terminate,keep"),
            ],
        )
        .await;
    assert_eq!(phase(&wf), "Succeeded", "{}", explain(&wf));
    let would = result(&wf, "notify");
    assert_eq!(would["dryRun"], true);
    let text = would["wouldSend"]["text"].as_str().unwrap_or("");
    assert!(
        text.contains("*Pod isolated*") && text.contains("minted when sent"),
        "{would}"
    );
}
