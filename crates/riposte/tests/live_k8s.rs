//! The Kubernetes executor against a REAL cluster. Skipped unless `RIPOSTE_LIVE_K8S=1` and
//! `KUBECONFIG` are set. Also needs `RIPOSTE_LIVE_IMAGE`: a Riposte image the cluster can
//! pull (built from `Dockerfile`), whose init container installs the step wrapper.
//!
//! Each test works in a namespace of its own (`riposte-live-*`), deleted at the end. The
//! workflows are in `tests/live/`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
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
    Some(Live {
        image,
        namespace,
        client,
        runtime,
    })
}

fn live_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/live")
        .join(name)
}

fn run(l: &Live, file: &str) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args([
            "run",
            "--executor",
            "kubernetes",
            "--database-url",
            "none",
            "-o",
            "json",
        ])
        .args(["--riposte-image", &l.image, "-n", &l.namespace])
        .arg(live_file(file))
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
