//! Two `riposte server` replicas on one PostgreSQL behind a round-robin proxy, the way
//! `deploy/` runs them: submit, approve, watch and follow logs through the proxy, kill -9 or
//! SIGTERM the replica driving a workflow mid-step. Every workflow finishes, no step runs
//! twice (each appends a line to a file outside the server), every approval lands.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Server as Replica, agent, call, database, free_port, phase, query, start_server};

fn start(home: &Path, db_url: &str, port: u16) -> Replica {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riposte"));
    cmd.args(["server", "--no-isolation", "--lease-seconds", "2"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--database-url", db_url])
        .env("RIPOSTE_HOME", home)
        .env("RUST_LOG", "warn");
    start_server(cmd, move |l| eprintln!("[replica {port}] {l}"))
}

/// A round-robin TCP proxy (a Service): each connection goes to the next backend that
/// accepts it. Returns its base URL.
fn proxy(backends: Vec<u16>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
    let addr = listener.local_addr().expect("proxy address");
    let next = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let start = next.fetch_add(1, Ordering::SeqCst);
            let upstream = (0..backends.len()).find_map(|i| {
                let port = backends[(start + i) % backends.len()];
                TcpStream::connect(("127.0.0.1", port)).ok()
            });
            let Some(upstream) = upstream else { continue };
            pipe(client, upstream);
        }
    });
    format!("http://{addr}")
}

fn pipe(a: TcpStream, b: TcpStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let copy = |mut from: TcpStream, mut to: TcpStream| {
        std::thread::spawn(move || {
            let mut buf = [0u8; 16384];
            loop {
                match from.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = to.shutdown(std::net::Shutdown::Both);
        });
    };
    copy(a, b2);
    copy(b, a2);
}

fn wait_for(base: &str, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
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
            "timed out waiting for {name} ({what}): {wf}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn node_phase(wf: &Value, display: &str) -> String {
    wf["status"]["nodes"]
        .as_object()
        .and_then(|m| m.values().find(|n| n["displayName"] == display))
        .and_then(|n| n["phase"].as_str())
        .unwrap_or("")
        .to_string()
}

/// prepare → approve (suspend with an output) → slow step → report; each step appends its
/// name to `count`.
fn playbook(count: &Path) -> Value {
    let append = |what: &str| format!("echo {what} >> {}; echo {what}-output", count.display());
    json!({"workflow": {
        "metadata": {"generateName": "replicated-"},
        "spec": {
            "entrypoint": "main",
            "templates": [
                {"name": "main", "steps": [
                    [{"name": "prepare", "template": "prepare"}],
                    [{"name": "approve", "template": "approve"}],
                    [{"name": "isolate", "template": "isolate",
                      "arguments": {"parameters": [{"name": "decision", "value": "{{steps.approve.outputs.parameters.decision}}"}]}}],
                    [{"name": "report", "template": "report"}]
                ]},
                {"name": "prepare", "container": {"image": "busybox", "command": ["sh", "-c", append("prepare")]}},
                {"name": "approve", "suspend": {},
                 "outputs": {"parameters": [{"name": "decision", "valueFrom": {"supplied": {}}}]}},
                {"name": "isolate", "inputs": {"parameters": [{"name": "decision"}]},
                 "container": {"image": "busybox", "command": ["sh", "-c",
                    format!("echo isolate-{{{{inputs.parameters.decision}}}} >> {}; for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done", count.display())]}},
                {"name": "report", "container": {"image": "busybox", "command": ["sh", "-c", append("report")]}}
            ]
        }
    }})
}

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The replica that holds `name`'s lease.
fn holder(db: &str, name: &str) -> String {
    query(
        db,
        &format!(
            "SELECT l.holder FROM leases l JOIN workflows w ON w.uid = l.workflow_uid WHERE w.name = '{name}'"
        ),
    )
}

/// Which of the replicas has `pid` in its holder name.
fn replica_index(replicas: &[Replica], holder: &str) -> usize {
    replicas
        .iter()
        .position(|r| holder.contains(&format!("-{}-", r.child.id())))
        .unwrap_or_else(|| panic!("no replica holds {holder:?}"))
}

struct Setup {
    _home: tempfile::TempDir,
    db: String,
    replicas: Vec<Replica>,
    ports: Vec<u16>,
    base: String,
    count: PathBuf,
}

fn setup(tag: &str) -> Setup {
    let home = tempfile::tempdir().expect("tempdir");
    let db = database("replicas", tag);
    let ports = vec![free_port(), free_port()];
    // Two replicas on one machine, each with its own RIPOSTE_HOME: a detached host step that
    // one started is re-attached by the other through its machine-local pointer. (On
    // Kubernetes, Jobs play that part.)
    let replicas: Vec<Replica> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| start(&home.path().join(format!("home-{i}")), &db, *p))
        .collect();
    let base = proxy(ports.clone());
    let count = home.path().join("count.txt");
    Setup {
        _home: home,
        db,
        replicas,
        ports,
        base,
        count,
    }
}

#[test]
fn approvals_watch_and_logs_through_any_replica_and_kill_9_mid_step() {
    let mut s = setup("kill");
    let base = s.base.clone();
    let (code, wf) = call(
        "POST",
        &format!("{base}/api/v1/workflows/default"),
        Some(playbook(&s.count)),
    );
    assert_eq!(code, 200, "{wf}");
    let name = wf["metadata"]["name"].as_str().expect("name").to_string();

    // A watch through the proxy, on whichever replica it lands.
    let watch_url = format!(
        "{base}/api/v1/workflow-events/default?listOptions.fieldSelector=metadata.name={name}"
    );
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            let mut resp = agent().get(&watch_url).call().expect("watch");
            let reader = BufReader::new(resp.body_mut().as_reader());
            for line in reader.lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let p = phase(&v["result"]["object"]).to_string();
                    seen.lock().unwrap_or_else(|p| p.into_inner()).push(p);
                }
            }
        });
    }

    wait_for(&base, &name, "approval pending", |wf| {
        node_phase(wf, "approve") == "Running"
    });
    // A resume naming no suspended node is refused, from either replica.
    for _ in 0..2 {
        let (code, v) = call(
            "PUT",
            &format!("{base}/api/v1/workflows/default/{name}/resume"),
            Some(json!({"nodeFieldSelector": "displayName=nope"})),
        );
        assert_eq!(code, 400, "{v}");
        assert!(
            v["message"]
                .as_str()
                .is_some_and(|m| m.contains("no suspended node \"nope\"")),
            "{v}"
        );
    }
    // The approval, through the proxy: it lands whichever replica answers.
    let (code, v) = call(
        "PUT",
        &format!("{base}/api/v1/workflows/default/{name}/set"),
        Some(json!({"nodeFieldSelector": "displayName=approve",
                    "outputParameters": "{\"decision\": \"yes\"}"})),
    );
    assert_eq!(code, 200, "{v}");

    // Logs followed through the proxy while `isolate` runs (its lines come from the store).
    let wf = wait_for(&base, &name, "isolate running", |wf| {
        node_phase(wf, "isolate") == "Running"
    });
    assert_eq!(phase(&wf), "Running");
    let follow = {
        let url = format!("{base}/api/v1/workflows/default/{name}/log?logOptions.follow=true");
        std::thread::spawn(move || {
            let mut resp = agent().get(&url).call().expect("logs");
            let mut text = String::new();
            let _ = resp.body_mut().as_reader().read_to_string(&mut text);
            text
        })
    };
    std::thread::sleep(Duration::from_millis(1200));
    // Kill -9 the replica driving it, mid-step.
    let h = holder(&s.db, &name);
    let victim = replica_index(&s.replicas, &h);
    let _ = s.replicas[victim].child.kill();
    let _ = s.replicas[victim].child.wait();

    let survivor = &s.replicas[1 - victim].base;
    let wf = wait_for(survivor, &name, "finished", |wf| {
        matches!(phase(wf), "Succeeded" | "Failed" | "Error")
    });
    assert_eq!(phase(&wf), "Succeeded", "{wf}");
    assert_eq!(
        lines(&s.count),
        ["prepare", "isolate-yes", "report"],
        "each step ran exactly once"
    );
    assert_ne!(
        holder(&s.db, &name),
        h,
        "the survivor took the workflow over"
    );

    // The watch saw it through to the end, whichever replica it was on (a watch on the
    // killed replica ends with it; then it saw at least the run up to the kill).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if seen.last().map(String::as_str) == Some("Succeeded")
            || (!seen.is_empty() && Instant::now() > deadline)
        {
            assert!(seen.contains(&"Running".to_string()), "{seen:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the watch saw nothing: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // The follow stream showed the running step's lines (as far as its replica lived).
    let text = follow.join().expect("follow thread");
    assert!(text.contains("tick 1"), "{text}");
    // Afterwards, from any replica, the whole log is there.
    let (_, logs) = call(
        "GET",
        &format!("{survivor}/api/v1/workflows/default/{name}/log"),
        None,
    );
    let logs = logs.to_string();
    assert!(
        logs.contains("tick 6") && logs.contains("report-output"),
        "{logs}"
    );
    // Each line once: the survivor goes on from what the dead replica had stored.
    for line in ["prepare-output", "tick 1", "tick 2", "tick 6"] {
        assert_eq!(
            logs.matches(&format!("\\\"{line}\\\"")).count(),
            1,
            "{line}: {logs}"
        );
    }
    // And the audit trail has the approval and every transition, chained.
    let approvals = query(
        &s.db,
        "SELECT count(*) FROM audit_log WHERE action = 'workflow.approve'",
    );
    assert_eq!(approvals, "1");
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["audit", "verify", "--database-url", &s.db])
        .output()
        .expect("audit verify");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = &s.ports;
}

#[test]
fn sigterm_releases_leases_so_the_other_replica_continues_at_once() {
    let mut s = setup("term");
    let base = s.base.clone();
    let (code, wf) = call(
        "POST",
        &format!("{base}/api/v1/workflows/default"),
        Some(playbook(&s.count)),
    );
    assert_eq!(code, 200, "{wf}");
    let name = wf["metadata"]["name"].as_str().expect("name").to_string();
    wait_for(&base, &name, "approval pending", |wf| {
        node_phase(wf, "approve") == "Running"
    });
    let (code, v) = call(
        "PUT",
        &format!("{base}/api/v1/workflows/default/{name}/set"),
        Some(json!({"nodeFieldSelector": "displayName=approve",
                    "outputParameters": "{\"decision\": \"no\"}"})),
    );
    assert_eq!(code, 200, "{v}");
    wait_for(&base, &name, "isolate running", |wf| {
        node_phase(wf, "isolate") == "Running"
    });
    let h = holder(&s.db, &name);
    let victim = replica_index(&s.replicas, &h);
    let pid = s.replicas[victim].child.id();
    let t0 = Instant::now();
    // SAFETY: signals a child process this test started.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let status = s.replicas[victim].child.wait().expect("wait");
    let stopped_in = t0.elapsed();
    assert!(status.success(), "exit status {status}");
    // The lease is gone at once, not after it expires...
    assert_ne!(holder(&s.db, &name), h);
    let survivor = s.replicas[1 - victim].base.clone();
    let wf = wait_for(&survivor, &name, "finished", |wf| {
        matches!(phase(wf), "Succeeded" | "Failed" | "Error")
    });
    assert_eq!(phase(&wf), "Succeeded", "{wf}");
    assert_eq!(lines(&s.count), ["prepare", "isolate-no", "report"]);
    eprintln!("SIGTERM to exit: {stopped_in:?}");
}

#[test]
fn idempotency_keys_make_one_workflow_across_replicas() {
    let s = setup("idem");
    let body = json!({"workflow": {
        "metadata": {"generateName": "keyed-", "annotations": {"riposte.dev/idempotency-key": "falco-event-42"}},
        "spec": {"entrypoint": "main", "templates": [
            {"name": "main", "container": {"image": "busybox", "command": ["sh", "-c", "echo hi"]}}]}
    }});
    // Sixteen submissions at once, spread over both replicas.
    let handles: Vec<_> = (0..16)
        .map(|_| {
            let url = format!("{}/api/v1/workflows/default", s.base);
            let body = body.clone();
            std::thread::spawn(move || call("POST", &url, Some(body)))
        })
        .collect();
    let mut names: Vec<String> = handles
        .into_iter()
        .map(|h| {
            let (code, wf) = h.join().expect("thread");
            assert_eq!(code, 200, "{wf}");
            wf["metadata"]["name"].as_str().expect("name").to_string()
        })
        .collect();
    names.dedup();
    assert_eq!(names.len(), 1, "one workflow for one key: {names:?}");
    assert_eq!(
        query(&s.db, "SELECT count(*) FROM workflows"),
        "1",
        "exactly one row"
    );
    // Through Argo's submit from a template, with the key in submitOptions.annotations.
    let (code, v) = call(
        "POST",
        &format!("{}/api/v1/workflow-templates/default", s.base),
        Some(json!({"template": {"metadata": {"name": "t"}, "spec": body["workflow"]["spec"]}})),
    );
    assert_eq!(code, 200, "{v}");
    let submit = json!({"resourceKind": "WorkflowTemplate", "resourceName": "t",
                        "submitOptions": {"annotations": "riposte.dev/idempotency-key=k2"}});
    let (c1, a) = call(
        "POST",
        &format!("{}/api/v1/workflows/default/submit", s.base),
        Some(submit.clone()),
    );
    let (c2, b) = call(
        "POST",
        &format!("{}/api/v1/workflows/default/submit", s.base),
        Some(submit),
    );
    assert_eq!((c1, c2), (200, 200), "{a} {b}");
    assert_eq!(a["metadata"]["name"], b["metadata"]["name"]);
}
