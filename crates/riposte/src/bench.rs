//! `riposte bench`: the documented performance workloads.
//!
//! - `engine --shape fanout --tasks N`: one DAG, a root task, N tasks after it and one task
//!   after all of them; a no-op executor answers every step at once.
//! - `engine --shape layered --tasks N`: N tasks in layers of 1,000, each depending on two
//!   tasks of the previous layer.
//! - `host --processes N`: N parallel `sh -c 'echo x'` steps through the host executor,
//!   against spawning the same N processes from a thread pool.
//!
//! Each prints one JSON line. Peak memory is the process's `VmHWM`, so run one workload per
//! process (the `scripts/bench` script does).

use std::io::Write;
use std::time::Instant;

use anyhow::{Context, Result};
use engine::{Command, ExecResult, Input, Workflow, WorkflowIdentity};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Shape {
    Fanout,
    Layered,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

const TASK_TEMPLATE: &str =
    "  - name: noop\n    container: {image: busybox, command: [sh, -c, 'echo x']}\n";

pub fn dag_yaml(shape: Shape, n: usize) -> String {
    let mut s = String::with_capacity(n * 64);
    s.push_str("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: bench}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n");
    match shape {
        Shape::Fanout => {
            s.push_str("      - {name: root, template: noop}\n");
            for i in 0..n {
                s.push_str(&format!(
                    "      - {{name: t{i}, template: noop, dependencies: [root]}}\n"
                ));
            }
            s.push_str("      - name: sink\n        template: noop\n        dependencies:\n");
            for i in 0..n {
                s.push_str(&format!("        - t{i}\n"));
            }
        }
        Shape::Layered => {
            let width = 1000.min(n.max(1));
            for i in 0..n {
                if i < width {
                    s.push_str(&format!("      - {{name: t{i}, template: noop}}\n"));
                } else {
                    // Two parents in the previous layer, spread deterministically.
                    let layer_start = (i / width - 1) * width;
                    let a = layer_start + (i * 7919) % width;
                    let b = layer_start + (i * 104_729 + 1) % width;
                    s.push_str(&format!(
                        "      - {{name: t{i}, template: noop, dependencies: [t{a}, t{b}]}}\n"
                    ));
                }
            }
        }
    }
    s.push_str(TASK_TEMPLATE);
    s
}

/// The engine with a no-op executor, recording every step in `store` (history, nodes,
/// workflow state and audit), as `riposte server` does.
pub async fn store(shape: Shape, tasks: usize, store: store::Store) -> Result<String> {
    let text = dag_yaml(shape, tasks);
    let (mut loaded, _) = spec::load("bench.yaml", &text);
    anyhow::ensure!(!loaded.is_empty(), "generated workflow is missing");
    let spec::Resource::Workflow(_, resource) = loaded.swap_remove(0).resource else {
        anyhow::bail!("generated document is not a Workflow");
    };
    let uid = format!("bench-{}", crate::generate_suffix());
    let id = WorkflowIdentity {
        name: uid.clone(),
        namespace: "bench".into(),
        uid: uid.clone(),
    };
    store
        .create_workflow(&store::NewWorkflow {
            uid: uid.clone(),
            namespace: "bench".into(),
            name: uid.clone(),
            labels: serde_json::json!({}),
            created_at: 0,
            definition: serde_json::json!({}),
        })
        .await?;
    let mut wf = Workflow::new(*resource, Default::default(), id, &[])?;
    let mut persist =
        server::driver::Persist::new(store.clone(), uid.clone(), format!("workflows/bench/{uid}"));
    let start = Instant::now();
    let mut record_time = std::time::Duration::ZERO;
    let mut now = 0i64;
    let mut batch = vec![Input::Start { now }];
    loop {
        let commands = wf.step(&batch)?;
        let t = Instant::now();
        persist.record(&batch, &[], &mut wf).await?;
        record_time += t.elapsed();
        if wf.is_finished() {
            break;
        }
        now += 1;
        batch = noop_executor(commands, now)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let transitions = wf.transitions();
    let line = serde_json::json!({
        "workload": "store",
        "backend": store.backend(),
        "tasks": tasks,
        "nodes": wf.nodes().len(),
        "steps": persist.next_seq,
        "transitions": transitions,
        "total_seconds": (secs * 1000.0).round() / 1000.0,
        "record_seconds": (record_time.as_secs_f64() * 1000.0).round() / 1000.0,
        "persisted_transitions_per_second": (transitions as f64 / record_time.as_secs_f64()).round(),
    });
    writeln!(std::io::stdout(), "{line}")?;
    let get_start = Instant::now();
    let nodes = store.nodes(&uid).await?;
    let get_ms = get_start.elapsed().as_secs_f64() * 1000.0;
    writeln!(
        std::io::stdout(),
        "{}",
        serde_json::json!({"workload": "store-read-nodes", "nodes": nodes.len(), "milliseconds": (get_ms * 10.0).round() / 10.0})
    )?;
    Ok(uid)
}

fn median_ms(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    (v[v.len() / 2] * 10.0).round() / 10.0
}

/// The REST API over HTTP on loopback: `get` of a 10,000-node workflow, and a page of the
/// `bench-list` namespace (fill it first; `scripts/bench` inserts 100,000 rows).
pub async fn api(store: store::Store, config: server::ControllerConfig) -> Result<()> {
    let uid = self::store(Shape::Fanout, 10_000, store.clone()).await?;
    let controller = server::Controller::new(store.clone(), config);
    let events = server::events::Events::start(
        controller.clone(),
        server::events::EventsConfig {
            run_sources: false,
            ..Default::default()
        },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(server::serve(
        listener,
        controller,
        events,
        None,
        None,
        std::future::pending(),
    ));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let timed = |url: String| {
        let agent = agent.clone();
        async move {
            tokio::task::spawn_blocking(move || -> Result<(f64, serde_json::Value)> {
                let t = Instant::now();
                let mut resp = agent.get(&url).call()?;
                let body = resp.body_mut().read_to_string()?;
                let ms = t.elapsed().as_secs_f64() * 1000.0;
                Ok((ms, serde_json::from_str(&body)?))
            })
            .await?
        }
    };
    let mut get_ms = Vec::new();
    let mut n_nodes = 0;
    for _ in 0..7 {
        let (ms, v) = timed(format!("{base}/api/v1/workflows/bench/{uid}")).await?;
        n_nodes = v["status"]["nodes"]
            .as_object()
            .map(|m| m.len())
            .unwrap_or(0);
        get_ms.push(ms);
    }
    let mut list_ms = Vec::new();
    let mut token = String::new();
    for _ in 0..7 {
        let (ms, v) = timed(format!(
            "{base}/api/v1/workflows/bench-list?listOptions.limit=50"
        ))
        .await?;
        token = v["metadata"]["continue"].as_str().unwrap_or("").to_string();
        list_ms.push(ms);
    }
    // A page deep in the list: continue from 90,000 rows further back (scripts/bench
    // creates the rows one second apart).
    let (t, u) = token.split_once(':').unwrap_or(("0", ""));
    let old = t.parse::<i64>().unwrap_or(0) - 90_000 * 1000;
    let mut deep_ms = Vec::new();
    for _ in 0..7 {
        let (ms, _) = timed(format!(
            "{base}/api/v1/workflows/bench-list?listOptions.limit=50&listOptions.continue={old}:{u}"
        ))
        .await?;
        deep_ms.push(ms);
    }
    // Filtered pages: by label (1 row in 10 matches) and by phase (1 in 3).
    let mut label_ms = Vec::new();
    let mut phase_ms = Vec::new();
    for _ in 0..7 {
        let (ms, _) = timed(format!(
            "{base}/api/v1/workflows/bench-list?listOptions.limit=50&listOptions.labelSelector=team%3Dt7"
        ))
        .await?;
        label_ms.push(ms);
        let (ms, _) = timed(format!(
            "{base}/api/v1/workflows/bench-list?listOptions.limit=50&listOptions.labelSelector=workflows.argoproj.io%2Fphase%3DFailed"
        ))
        .await?;
        phase_ms.push(ms);
    }
    let total = store
        .list_workflows(Some("bench-list"), 1_000_000)
        .await?
        .len();
    let line = serde_json::json!({
        "workload": "api",
        "backend": store.backend(),
        "get_nodes": n_nodes,
        "get_ms_median": median_ms(get_ms),
        "list_rows_in_namespace": total,
        "list_page_ms_median": median_ms(list_ms),
        "list_deep_page_ms_median": median_ms(deep_ms),
        "list_label_page_ms_median": median_ms(label_ms),
        "list_phase_page_ms_median": median_ms(phase_ms),
    });
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

/// Submit throughput through `Controller::submit` with idempotency keys. Each workflow is one
/// `suspend` step, so after its first recorded step its driver waits and costs nothing more.
pub async fn submit(
    store: store::Store,
    config: server::ControllerConfig,
    workflows: usize,
    concurrency: usize,
) -> Result<()> {
    let controller = server::Controller::new(store.clone(), config);
    let resource: spec::WorkflowResource = serde_json::from_value(serde_json::json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
        "metadata": {"generateName": "bench-submit-"},
        "spec": {"entrypoint": "wait", "templates": [{"name": "wait", "suspend": {}}]}
    }))?;
    let run = crate::generate_suffix();
    let pass = |keys_taken: bool| {
        let controller = controller.clone();
        let resource = resource.clone();
        let run = run.clone();
        async move {
            let started = Instant::now();
            let mut tasks = tokio::task::JoinSet::new();
            let concurrency = concurrency.max(1);
            for worker in 0..concurrency {
                let controller = controller.clone();
                let resource = resource.clone();
                let run = run.clone();
                tasks.spawn(async move {
                    let mut created = 0usize;
                    for i in (worker..workflows).step_by(concurrency) {
                        let mut req = server::SubmitRequest::new(
                            "bench-submit",
                            server::Origin::Inline(Box::new(resource.clone())),
                            "bench",
                            "local",
                        );
                        req.idempotency_key = Some(format!("{run}-{i}"));
                        if let server::SubmitOutcome::Created { .. } =
                            controller.submit(req).await?
                        {
                            created += 1;
                        }
                    }
                    anyhow::Ok(created)
                });
            }
            let mut created = 0;
            while let Some(r) = tasks.join_next().await {
                created += r??;
            }
            let secs = started.elapsed().as_secs_f64();
            anyhow::ensure!(
                created == if keys_taken { 0 } else { workflows },
                "{created} of {workflows} submissions created a workflow"
            );
            anyhow::Ok(secs)
        }
    };
    let first = pass(false).await?;
    let again = pass(true).await?;
    let line = serde_json::json!({
        "workload": "submit",
        "backend": store.backend(),
        "workflows": workflows,
        "concurrency": concurrency,
        "submits_per_second": (workflows as f64 / first).round(),
        "repeated_keys_per_second": (workflows as f64 / again).round(),
    });
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

pub fn engine(shape: Shape, tasks: usize) -> Result<()> {
    let text = dag_yaml(shape, tasks);
    let parse_start = Instant::now();
    let (mut loaded, diags) = spec::load("bench.yaml", &text);
    if let Some(d) = diags.first() {
        anyhow::bail!("generated workflow is invalid: {d}");
    }
    drop(text);
    // Keep only the resource: the YAML positions are for lint, not for running.
    anyhow::ensure!(!loaded.is_empty(), "generated workflow is missing");
    let spec::Resource::Workflow(_, resource) = loaded.swap_remove(0).resource else {
        anyhow::bail!("generated document is not a Workflow");
    };
    drop(loaded);
    let parse_ms = parse_start.elapsed().as_secs_f64() * 1000.0;
    let id = WorkflowIdentity {
        name: "bench".into(),
        namespace: "default".into(),
        uid: "bench".into(),
    };
    let peak_after_parse = peak_rss_mb();
    let mut wf = Workflow::new(*resource, Default::default(), id, &[])?;
    let start = Instant::now();
    let mut now = 0i64;
    let mut steps = 0usize;
    let mut commands = wf.step(&[Input::Start { now }])?;
    while !wf.is_finished() {
        now += 1;
        let batch = noop_executor(commands, now)?;
        commands = wf.step(&batch)?;
        steps += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let transitions = wf.transitions();
    let shape_name = match shape {
        Shape::Fanout => "fanout",
        Shape::Layered => "layered",
    };
    let line = serde_json::json!({
        "workload": format!("engine-{shape_name}"),
        "tasks": tasks,
        "nodes": wf.nodes().len(),
        "engine_steps": steps,
        "phase": wf.phase().as_str(),
        "parse_ms": (parse_ms * 10.0).round() / 10.0,
        "engine_seconds": (secs * 1000.0).round() / 1000.0,
        "transitions": transitions,
        "transitions_per_second": (transitions as f64 / secs).round(),
        "peak_rss_mb": (peak_rss_mb() * 10.0).round() / 10.0,
        "peak_rss_mb_after_parse": (peak_after_parse * 10.0).round() / 10.0,
        "rss_mb_at_end": (current_rss_mb() * 10.0).round() / 10.0,
    });
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

fn current_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Spawns `n` `sh -c 'echo x'` processes from `threads` threads and waits for all.
fn bare_spawn(n: usize, threads: usize) -> Result<f64> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<()> {
                    while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                        let out = std::process::Command::new("sh")
                            .args(["-c", "echo x"])
                            .output()?;
                        anyhow::ensure!(out.status.success(), "sh failed");
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| anyhow::anyhow!("spawn thread panicked"))??;
        }
        Ok(())
    })?;
    Ok(start.elapsed().as_secs_f64())
}

pub async fn host(
    processes: usize,
    threads: usize,
    exec: executor::HostExecutor,
    run_dir: std::path::PathBuf,
) -> Result<()> {
    let bare = tokio::task::spawn_blocking(move || bare_spawn(processes, threads)).await??;
    let yaml = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {{name: bench-host}}\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - {{name: t, template: noop, withSequence: {{count: '{processes}'}}}}\n{TASK_TEMPLATE}"
    );
    let (loaded, _) = spec::load("bench.yaml", &yaml);
    let spec::Resource::Workflow(_, wf) = &loaded.first().context("generated workflow")?.resource
    else {
        anyhow::bail!("generated document is not a Workflow");
    };
    let id = WorkflowIdentity {
        name: "bench-host".into(),
        namespace: "default".into(),
        uid: "bench".into(),
    };
    let wf = Workflow::new((**wf).clone(), Default::default(), id, &[])?;
    let isolated = matches!(exec.config().isolation, executor::Isolation::PrivateRoot);
    let start = Instant::now();
    let outcome = crate::run::run_workflow(
        wf,
        server::driver::StepExecutor::Host(exec),
        crate::run::RunConfig {
            run_dir,
            progress: crate::ui::Progress::silent(),
            persist: None,
        },
    )
    .await?;
    let secs = start.elapsed().as_secs_f64();
    let line = serde_json::json!({
        "workload": "host-executor",
        "processes": processes,
        "private_root": isolated,
        "phase": outcome.workflow.phase().as_str(),
        "riposte_seconds": (secs * 1000.0).round() / 1000.0,
        "bare_spawn_seconds": (bare * 1000.0).round() / 1000.0,
        "bare_spawn_threads": threads,
        "ratio": ((secs / bare) * 100.0).round() / 100.0,
        "engine_seconds": (outcome.engine_time.as_secs_f64() * 1000.0).round() / 1000.0,
        "engine_steps": outcome.engine_steps,
    });
    writeln!(std::io::stdout(), "{line}")?;
    Ok(())
}

/// The benchmarks' no-op executor: every node the engine asks for starts and succeeds at
/// `now`. An empty answer means the engine is stuck, which a benchmark must not hide.
fn noop_executor(commands: Vec<Command>, now: i64) -> Result<Vec<Input>> {
    let mut batch = Vec::new();
    for c in commands {
        if let Command::Execute(n) = c {
            batch.push(Input::NodeStarted {
                now,
                node_id: n.node_id.clone(),
            });
            batch.push(Input::NodeFinished {
                now,
                node_id: n.node_id.clone(),
                result: ExecResult::succeeded(0, "x"),
            });
        }
    }
    anyhow::ensure!(
        !batch.is_empty(),
        "no progress possible: the engine issued no work"
    );
    Ok(batch)
}

/// See `riposte bench events --help`. The namespace is fresh per run (`bench-events-<suffix>`),
/// so runs do not see each other's events.
pub async fn events(
    store: store::Store,
    config: server::ControllerConfig,
    bus: server::events::BusConfig,
    events: usize,
    concurrency: usize,
    rate: Option<f64>,
) -> Result<()> {
    use serde_json::json;
    let ns = format!("bench-events-{}", crate::generate_suffix());
    let bus_name = match &bus {
        server::events::BusConfig::Memory => "memory".to_string(),
        server::events::BusConfig::Nats { .. } => "nats".to_string(),
    };
    let controller = server::Controller::new(store.clone(), config);
    let hub = server::events::Events::start(
        controller.clone(),
        server::events::EventsConfig {
            bus,
            run_sources: false,
            ..Default::default()
        },
    )
    .await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(server::serve(
        listener,
        controller.clone(),
        hub.clone(),
        None,
        None,
        std::future::pending(),
    ));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let post = |path: String, body: serde_json::Value| {
        let agent = agent.clone();
        let base = base.clone();
        async move {
            tokio::task::spawn_blocking(move || -> Result<()> {
                let resp = agent.post(&format!("{base}{path}")).send_json(body)?;
                anyhow::ensure!(
                    resp.status().as_u16() == 200,
                    "POST {path}: {}",
                    resp.status()
                );
                Ok(())
            })
            .await?
        }
    };
    post(
        format!("/api/v1/workflow-templates/{ns}"),
        json!({"template": {"metadata": {"name": "isolate-pod"}, "spec": {
            "entrypoint": "wait", "arguments": {"parameters": [{"name": "pod"}, {"name": "namespace"}]},
            "templates": [{"name": "wait", "suspend": {}}]}}}),
    )
    .await?;
    post(
        format!("/api/v1/event-sources/{ns}"),
        json!({"eventSource": {"metadata": {"name": "falco"}, "spec": {"webhook": {"alerts": {
            "port": "12000", "endpoint": "/falco", "method": "POST"}}}}}),
    )
    .await?;
    let sensor_text = include_str!("../../../workflows/examples/falco-shell-sensor.yaml");
    let sensor = spec::yaml::load_documents(sensor_text)
        .map_err(|e| anyhow::anyhow!("the example sensor: {}", e.message))?
        .into_iter()
        .next()
        .map(|d| d.value)
        .ok_or_else(|| anyhow::anyhow!("the example sensor is empty"))?;
    post(format!("/api/v1/sensors/{ns}"), json!({"sensor": sensor})).await?;
    let alert: serde_json::Value = serde_json::from_str(include_str!(
        "../../../tests/fixtures/falco-terminal-shell.json"
    ))?;
    let epoch_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    // Producers: blocking HTTP clients on threads, each posting its share in turn. With a
    // rate, event i is due at `i / rate` seconds and its latency counts from then, not from
    // when a late producer got round to it (no coordinated omission: a backlog shows).
    let started = Instant::now();
    let started_ms = epoch_ms();
    let threads: Vec<_> = (0..concurrency.max(1))
        .map(|w| {
            let agent = agent.clone();
            let url = format!("{base}/api/v1/webhooks/{ns}/falco/alerts");
            let alert = alert.clone();
            std::thread::spawn(move || -> Result<Vec<(String, i64)>> {
                let mut sent = Vec::new();
                for i in (w..events).step_by(concurrency.max(1)) {
                    let mut a = alert.clone();
                    let id = format!("bench-{i}");
                    a["uuid"] = json!(id);
                    let t0 = match rate {
                        Some(r) => {
                            let due = std::time::Duration::from_secs_f64(i as f64 / r);
                            if let Some(wait) = due.checked_sub(started.elapsed()) {
                                std::thread::sleep(wait);
                            }
                            started_ms + due.as_millis() as i64
                        }
                        None => epoch_ms(),
                    };
                    let resp = agent.post(&url).send_json(a)?;
                    anyhow::ensure!(resp.status().as_u16() == 200, "webhook: {}", resp.status());
                    sent.push((id, t0));
                }
                Ok(sent)
            })
        })
        .collect();
    let mut sent_at = std::collections::HashMap::new();
    for t in threads {
        let sent = t
            .join()
            .map_err(|_| anyhow::anyhow!("a producer thread panicked"))??;
        sent_at.extend(sent);
    }
    let posted_secs = started.elapsed().as_secs_f64();
    // Wait for every workflow row.
    let deadline = Instant::now() + std::time::Duration::from_secs(600);
    // A count, not the rows: reading thousands of envelopes every few milliseconds would be
    // the benchmark's own load.
    loop {
        let (_, processed) = store.count_events(&ns).await?;
        if processed as usize >= events || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    let mut rows = Vec::with_capacity(events);
    let mut before = None;
    loop {
        let page = store
            .list_events(&store::EventQuery {
                namespace: Some(ns.clone()),
                event_source: None,
                before,
                limit: 10_000,
            })
            .await?;
        before = page.last().map(|e| e.seq);
        let last_page = page.len() < 10_000;
        rows.extend(page);
        if last_page {
            break;
        }
    }
    let mut latencies = Vec::new();
    // Until the event is marked processed: after the submission's commit, so an upper bound
    // of "request to committed workflow row" (the row's created_at is taken before it).
    let mut to_processed: Vec<f64> = rows
        .iter()
        .filter_map(|e| Some((e.processed_at? - sent_at.get(&e.event_id)?).max(0) as f64))
        .collect();
    to_processed.sort_by(|a, b| a.total_cmp(b));
    for e in &rows {
        let key = format!("{ns}/sensor:falco-shell/isolate/{}", e.seq);
        let Some((_, name)) = store.workflow_for_key(&key).await? else {
            continue;
        };
        let w = store.get_workflow(&ns, &name).await?;
        if let Some(t0) = sent_at.get(&e.event_id) {
            latencies.push((w.created_at - t0).max(0) as f64);
        }
    }
    anyhow::ensure!(
        latencies.len() == events,
        "{} of {events} alerts made a workflow",
        latencies.len()
    );
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct_of = |v: &[f64], p: f64| {
        v.get(((v.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    let pct = |p: f64| pct_of(&latencies, p);
    // The pure filter evaluation of the same sensor, on this core.
    let compiled = spec::sensor::compile_sensor(&sensor)?;
    let dependency = &compiled.dependencies[0];
    let event = events::Event::from_json(alert.clone());
    let n = 200_000;
    let t = Instant::now();
    let mut matched = 0;
    for _ in 0..n {
        matched += usize::from(events::evaluate_dependency(dependency, &event).matched);
    }
    let filter_rate = n as f64 / t.elapsed().as_secs_f64();
    anyhow::ensure!(matched == n, "the example filter must match the fixture");
    let line = json!({
        "workload": "events",
        "backend": store.backend(),
        "bus": bus_name,
        "events": events,
        "concurrency": concurrency,
        "offered_per_second": rate,
        "accepted_per_second": (events as f64 / posted_secs).round(),
        "workflows_per_second": (events as f64 / total_secs).round(),
        "latency_ms_p50": pct(0.5),
        "latency_ms_p99": pct(0.99),
        "latency_ms_max": pct(1.0),
        "processed_ms_p50": pct_of(&to_processed, 0.5),
        "processed_ms_p99": pct_of(&to_processed, 0.99),
        "filter_evaluations_per_second_one_core": filter_rate.round(),
    });
    writeln!(std::io::stdout(), "{line}")?;
    drop(hub);
    Ok(())
}

/// The end-to-end workloads of the performance issue, as a new user meets them.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum RunShape {
    /// W1: a chain of N steps, each `depends` on the previous.
    Chain,
    /// W2: 1 → N parallel → 1.
    Fanout,
    /// W3: layers × width, each task depending on two of the previous layer.
    Lattice,
}

/// The workflow of `shape` (every step `sh -c 'echo N'`) and its layers of step numbers, in
/// dependency order (what the floor spawns, layer by layer).
pub(crate) fn run_workload(shape: RunShape, n: usize, width: usize) -> (String, Vec<Vec<usize>>) {
    let mut tasks = String::new();
    let mut layers: Vec<Vec<usize>> = Vec::new();
    let mut task = |name: String, deps: &[String], i: usize| {
        tasks.push_str(&format!("      - name: {name}\n        template: echo\n"));
        if !deps.is_empty() {
            tasks.push_str(&format!("        depends: \"{}\"\n", deps.join(" && ")));
        }
        tasks.push_str(&format!(
            "        arguments: {{parameters: [{{name: n, value: \"{i}\"}}]}}\n"
        ));
    };
    match shape {
        RunShape::Chain => {
            for i in 0..n {
                let deps = if i == 0 {
                    vec![]
                } else {
                    vec![format!("t{}", i - 1)]
                };
                task(format!("t{i}"), &deps, i);
                layers.push(vec![i]);
            }
        }
        RunShape::Fanout => {
            task("first".into(), &[], 0);
            for i in 1..=n {
                task(format!("t{i}"), &["first".to_string()], i);
            }
            let all: Vec<String> = (1..=n).map(|i| format!("t{i}")).collect();
            task("last".into(), &all, n + 1);
            layers = vec![vec![0], (1..=n).collect(), vec![n + 1]];
        }
        RunShape::Lattice => {
            let width = width.max(2);
            let rows = n.div_ceil(width);
            for r in 0..rows {
                let mut layer = Vec::new();
                for c in 0..width {
                    let i = r * width + c;
                    let deps = if r == 0 {
                        vec![]
                    } else {
                        vec![
                            format!("t{}_{c}", r - 1),
                            format!("t{}_{}", r - 1, (c + 1) % width),
                        ]
                    };
                    task(format!("t{r}_{c}"), &deps, i);
                    layer.push(i);
                }
                layers.push(layer);
            }
        }
    }
    let yaml = format!(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: bench-\nspec:\n  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n{tasks}  - name: echo\n    inputs: {{parameters: [{{name: n}}]}}\n    container: {{image: busybox, command: [sh, -c], args: [\"echo {{{{inputs.parameters.n}}}}\"]}}\n"
    );
    (yaml, layers)
}

fn workload_name(shape: RunShape, tasks: usize, width: usize) -> String {
    match shape {
        RunShape::Chain => format!("W1 chain of {tasks}"),
        RunShape::Fanout => format!("W2 1 -> {tasks} -> 1"),
        RunShape::Lattice => format!("W3 lattice {} x {width}", tasks.div_ceil(width.max(2))),
    }
}

/// The floor: the same `sh -c 'echo N'` processes spawned directly, one layer after the
/// other, each layer's processes all at once.
fn spawn_floor(layers: &[Vec<usize>]) -> Result<f64> {
    let t0 = Instant::now();
    for layer in layers {
        let children: Vec<std::process::Child> = layer
            .iter()
            .map(|i| {
                std::process::Command::new("sh")
                    .args(["-c", &format!("echo {i}")])
                    .stdout(std::process::Stdio::null())
                    .spawn()
            })
            .collect::<std::io::Result<_>>()?;
        for mut c in children {
            c.wait()?;
        }
    }
    Ok(t0.elapsed().as_secs_f64())
}

/// `riposte bench run`: `riposte run` of the workload (a new user's default: SQLite and the
/// host executor with private roots, in a fresh home on disk) against the floor, measured in
/// the same run, best of `repeat` each; the ratio is what the performance issue tracks.
pub(crate) fn run_vs_floor(
    shape: RunShape,
    tasks: usize,
    width: usize,
    repeat: usize,
    extra: &[String],
) -> Result<()> {
    let (yaml, layers) = run_workload(shape, tasks, width);
    let base = std::env::var_os("HOME")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(".cache/riposte-bench");
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::tempdir_in(&base)?;
    let file = dir.path().join("workload.yaml");
    std::fs::write(&file, yaml)?;
    let me = std::env::current_exe()?;
    let mut floor = f64::INFINITY;
    let mut riposte = f64::INFINITY;
    let steps: usize = layers.iter().map(Vec::len).sum();
    for round in 0..repeat.max(1) {
        floor = floor.min(spawn_floor(&layers)?);
        let home = dir.path().join(format!("home-{round}"));
        let t0 = Instant::now();
        let out = std::process::Command::new(&me)
            .arg("run")
            .args(extra)
            .arg(&file)
            .env("RIPOSTE_HOME", &home)
            .env_remove("DATABASE_URL")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()?;
        let took = t0.elapsed().as_secs_f64();
        if !out.status.success() {
            anyhow::bail!(
                "riposte run of the workload failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        riposte = riposte.min(took);
    }
    let name = workload_name(shape, tasks, width);
    println!(
        "{}",
        serde_json::json!({"workload": name, "steps": steps, "floor_s": round3(floor), "riposte_run_s": round3(riposte),
               "ratio": round3(riposte / floor), "runs": repeat.max(1), "args": extra})
    );
    Ok(())
}

/// `riposte bench server`: the server path of the performance issue. A `riposte server`
/// process on `database_url` (host executor), the workload submitted through the API, timed
/// from the POST until the API lists it Succeeded; then `concurrent` copies submitted at
/// once, timed until all are. Both against the floor measured in the same run.
pub(crate) fn server_vs_floor(
    shape: RunShape,
    tasks: usize,
    width: usize,
    concurrent: usize,
    repeat: usize,
    database_url: &str,
    extra: &[String],
) -> Result<()> {
    use serde_json::json;
    let (yaml, layers) = run_workload(shape, tasks, width);
    let workflow = spec::yaml::load_documents(&yaml)
        .map_err(|e| anyhow::anyhow!("the generated workload: {}", e.message))?
        .into_iter()
        .next()
        .map(|d| d.value)
        .ok_or_else(|| anyhow::anyhow!("the generated workload is empty"))?;
    let dir = tempfile::tempdir()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let log_path = dir.path().join("server.log");
    let mut server = std::process::Command::new(std::env::current_exe()?)
        .args(["server", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", database_url])
        .args(extra)
        .env("RIPOSTE_HOME", dir.path().join("home"))
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()?;
    // Killed however this ends, so no server outlives the benchmark.
    struct KillOnDrop<'a>(&'a mut std::process::Child);
    impl Drop for KillOnDrop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let server = KillOnDrop(&mut server);
    let server_log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let ready_by = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if let Ok(r) = agent.get(&format!("{base}/readyz")).call()
            && r.status().as_u16() == 200
        {
            break;
        }
        if let Ok(Some(status)) = server.0.try_wait() {
            anyhow::bail!("riposte server exited ({status}):\n{}", server_log());
        }
        anyhow::ensure!(
            Instant::now() < ready_by,
            "riposte server not ready after 60 s:\n{}",
            server_log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let submit = |ns: &str| -> Result<()> {
        let mut resp = agent
            .post(&format!("{base}/api/v1/workflows/{ns}"))
            .send_json(json!({"workflow": workflow}))?;
        anyhow::ensure!(
            resp.status().as_u16() == 200,
            "POST /api/v1/workflows/{ns}: {} {}",
            resp.status(),
            resp.body_mut().read_to_string().unwrap_or_default()
        );
        Ok(())
    };
    // Polls the namespace's list (names and phases only) until `n` workflows have finished.
    let wait_all = |ns: &str, n: usize| -> Result<()> {
        let deadline = Instant::now() + std::time::Duration::from_secs(600);
        let url =
            format!("{base}/api/v1/workflows/{ns}?fields=items.metadata.name,items.status.phase");
        loop {
            let mut resp = agent.get(&url).call()?;
            let list: serde_json::Value = resp.body_mut().read_json()?;
            let items = list["items"].as_array().map(Vec::as_slice).unwrap_or(&[]);
            let phase =
                |i: &serde_json::Value| i["status"]["phase"].as_str().unwrap_or("").to_string();
            if let Some(bad) = items
                .iter()
                .find(|i| matches!(phase(i).as_str(), "Failed" | "Error"))
            {
                anyhow::bail!(
                    "workflow {ns}/{} ended {}:\n{}",
                    bad["metadata"]["name"],
                    phase(bad),
                    server_log()
                );
            }
            if items.iter().filter(|i| phase(i) == "Succeeded").count() >= n {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{ns}: not all {n} workflows finished in 600 s"
            );
            // Often enough to time one workflow; less often for many, whose list is longer
            // and whose polling would otherwise take CPU from the server it measures.
            std::thread::sleep(std::time::Duration::from_millis(if n > 1 { 25 } else { 2 }));
        }
    };
    let suffix = crate::generate_suffix();
    let (mut floor, mut one, mut many) = (f64::INFINITY, f64::INFINITY, f64::INFINITY);
    let mut many_floor = f64::INFINITY;
    for round in 0..repeat.max(1) {
        floor = floor.min(spawn_floor(&layers)?);
        let ns = format!("bench-one-{suffix}-{round}");
        let t0 = Instant::now();
        submit(&ns)?;
        wait_all(&ns, 1)?;
        one = one.min(t0.elapsed().as_secs_f64());
        if concurrent > 1 {
            // The same processes, `concurrent` copies of the workload at once: on a machine
            // with few cores the processes alone take many times one copy's time.
            let t0 = Instant::now();
            std::thread::scope(|s| -> Result<()> {
                let copies: Vec<_> = (0..concurrent)
                    .map(|_| s.spawn(|| spawn_floor(&layers)))
                    .collect();
                for c in copies {
                    c.join()
                        .map_err(|_| anyhow::anyhow!("a floor thread panicked"))??;
                }
                Ok(())
            })?;
            many_floor = many_floor.min(t0.elapsed().as_secs_f64());
            let ns = format!("bench-many-{suffix}-{round}");
            let t0 = Instant::now();
            std::thread::scope(|s| -> Result<()> {
                let posts: Vec<_> = (0..concurrent).map(|_| s.spawn(|| submit(&ns))).collect();
                for p in posts {
                    p.join()
                        .map_err(|_| anyhow::anyhow!("a submitter panicked"))??;
                }
                Ok(())
            })?;
            wait_all(&ns, concurrent)?;
            many = many.min(t0.elapsed().as_secs_f64());
        }
    }
    let name = workload_name(shape, tasks, width);
    let backend = database_url.split(':').next().unwrap_or("");
    let mut line = json!({"workload": format!("server {name}"), "database": backend,
        "steps": layers.iter().map(Vec::len).sum::<usize>(), "floor_s": round3(floor),
        "server_s": round3(one), "ratio": round3(one / floor), "runs": repeat.max(1)});
    if concurrent > 1 {
        line["concurrent"] = json!(concurrent);
        line["concurrent_s"] = json!(round3(many));
        line["concurrent_over_one"] = json!(round3(many / one));
        line["concurrent_floor_s"] = json!(round3(many_floor));
        line["concurrent_ratio"] = json!(round3(many / many_floor));
    }
    println!("{line}");
    Ok(())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_to_end_workloads_have_their_shapes_and_lint_clean() {
        for (shape, n, width, layers, steps) in [
            (RunShape::Chain, 200, 0, 200, 200),
            (RunShape::Fanout, 1000, 0, 3, 1002),
            (RunShape::Lattice, 1000, 50, 20, 1000),
        ] {
            let (yaml, l) = run_workload(shape, n, width);
            assert_eq!(l.len(), layers);
            assert_eq!(l.iter().map(Vec::len).sum::<usize>(), steps);
            let (loaded, diags) = spec::load("w.yaml", &yaml);
            let mut diags = diags;
            diags.extend(spec::lint(&loaded, &spec::Library::default()));
            let errors: Vec<String> = diags
                .iter()
                .filter(|d| d.severity == spec::Severity::Error)
                .map(|d| d.to_string())
                .collect();
            assert!(errors.is_empty(), "{errors:?}");
        }
        let (yaml, _) = run_workload(RunShape::Lattice, 4, 2);
        assert!(yaml.contains("depends: \"t0_0 && t0_1\""), "{yaml}");
    }
}
