//! `cargo bench -p riposte-kube --bench jobs`: the Kubernetes executor's own overhead,
//! against the FAKE API server with a kubelet that finishes every pod at once.
//!
//! Workloads:
//! - `jobs`: N container nodes started together; each creates its Job, watches it, and reads
//!   its pod's termination message. Reports nodes/s and per-node latency (create → result).
//! - `resource`: N merge patches of one pod, one after another (discovery + PATCH each).
//!
//! Everything (fake API server, executor) shares this process and its cores, so the numbers
//! bound the executor's cost from above; a real API server adds its own latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::ExecuteNode;
use kube_fake::{FakeApiServer, ResourceType};
use riposte_kube::{Cluster, ClusterOptions};
use serde_json::json;

fn node(i: usize, template: serde_json::Value) -> ExecuteNode {
    ExecuteNode {
        node_id: format!("bench-{i}"),
        node_name: format!("bench.s{i}"),
        pod_name: format!("bench-s-{i}"),
        workflow_name: "bench".into(),
        namespace: "default".into(),
        template: Arc::new(serde_json::from_value(template).expect("template")),
        deadline: None,
        output_paths: Vec::new(),
    }
}

/// This process's peak resident memory (fake API server and executor together), from
/// `/proc/self/status` (`VmHWM`); 0 where that is not readable.
fn rss_mb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::var("RIPOSTE_BENCH_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let fake = FakeApiServer::start().await.expect("fake");
    // The kubelet: every new pod runs and exits 0 at once, leaving a wrapper report.
    let kubelet = {
        let fake = fake.clone();
        tokio::spawn(async move {
            let mut done = std::collections::BTreeSet::new();
            loop {
                for name in
                    fake.names_where("pods", "default", |p| p["status"]["phase"] == "Pending")
                {
                    if done.insert(name.clone()) {
                        let _ = fake.start_pod("default", &name);
                        let _ =
                            fake.finish_pod("default", &name, 0, r#"{"exitCode":0,"result":"ok"}"#);
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let uri: http::Uri = fake.url().parse().expect("uri");
    let client = kube::Client::try_from(kube::Config::new(uri)).expect("client");
    let cluster = Cluster::with_client(
        client,
        ClusterOptions {
            riposte_image: "riposte:bench".into(),
            riposte_image_pull_policy: "IfNotPresent".into(),
            ttl_seconds_after_finished: 600,
            job_namespace: None,
            callback_url: None,
            callback_secret: b"bench".to_vec(),
            image_pull_grace: Duration::from_secs(1),
        },
    );
    let exec = cluster.executor("bench-uid", None);

    let t0 = Instant::now();
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // Progress on stderr every 5 s: nodes done, pods by phase, Jobs complete, open watches.
    let progress = {
        let (fake, finished) = (fake.clone(), finished.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                let phase = |ph: &'static str| {
                    fake.names_where("pods", "default", |p| p["status"]["phase"] == ph)
                        .len()
                };
                let complete = fake
                    .names_where("jobs", "default", |j| {
                        j["status"]["conditions"]
                            .as_array()
                            .is_some_and(|c| c.iter().any(|c| c["type"] == "Complete"))
                    })
                    .len();
                eprintln!(
                    "{:>4.0}s: {} nodes done; pods pending {} running {} succeeded {}; jobs complete {}; watches {}",
                    t0.elapsed().as_secs_f64(),
                    finished.load(std::sync::atomic::Ordering::SeqCst),
                    phase("Pending"),
                    phase("Running"),
                    phase("Succeeded"),
                    complete,
                    fake.open_watches()
                );
            }
        })
    };
    let mut tasks = Vec::new();
    for i in 0..n {
        let exec = exec.clone();
        let finished = finished.clone();
        let nd = node(
            i,
            json!({"name": "s", "container": {"image": "alpine", "command": ["true"]}}),
        );
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            let (_tx, rx) = tokio::sync::watch::channel(false);
            let r = exec.run(&nd, rx, None, false).await;
            assert_eq!(r.result.as_deref(), Some("ok"), "{r:?}");
            finished.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            start.elapsed()
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.push(t.await.expect("join"));
    }
    let total = t0.elapsed();
    progress.abort();
    lat.sort();
    println!(
        "jobs: {n} nodes in {:.2} s = {:.0} nodes/s; latency p50 {:.0} ms, p99 {:.0} ms; watches open at most {}; RSS {} MB",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        percentile(&lat, 0.5).as_secs_f64() * 1000.0,
        percentile(&lat, 0.99).as_secs_f64() * 1000.0,
        fake.peak_watches(),
        rss_mb()
    );

    fake.create(
        &ResourceType::new("", "v1", "Pod", "pods", true),
        "default",
        json!({"metadata": {"name": "victim"}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}),
    )
    .expect("pod");
    let t0 = Instant::now();
    for i in 0..n {
        let nd = node(
            100_000 + i,
            json!({"name": "r", "resource": {"action": "patch", "mergeStrategy": "merge",
                "flags": ["pod", "victim"], "manifest": format!("metadata: {{labels: {{round: \"{i}\"}}}}")}}),
        );
        let (_tx, rx) = tokio::sync::watch::channel(false);
        let r = exec.run(&nd, rx, None, false).await;
        assert_eq!(r.phase, engine::Phase::Succeeded, "{r:?}");
    }
    let total = t0.elapsed();
    println!(
        "resource: {n} merge patches in {:.2} s = {:.0} actions/s ({:.1} ms each)",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64(),
        total.as_secs_f64() * 1000.0 / n as f64
    );
    kubelet.abort();
}
