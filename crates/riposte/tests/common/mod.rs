//! Helpers shared by the integration test files. (Each test binary uses some of them.)
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Validates manifests against the official Kubernetes 1.31 schemas (strict: unknown fields
/// are errors) with `kubernetes-validate`. Without the tool the check is skipped with a
/// message, unless `RIPOSTE_REQUIRE_K8S_VALIDATE` is set (scripts/test sets it).
pub fn validate_kubernetes_manifests(manifests: &[PathBuf], what: &str) {
    let validator = Command::new("kubernetes-validate")
        .args(["--strict", "--quiet", "-k", "1.31.0"])
        .args(manifests)
        .output();
    match validator {
        Ok(v) => assert!(
            v.status.success(),
            "kubernetes-validate rejected {what}:\n{}{}",
            String::from_utf8_lossy(&v.stdout),
            String::from_utf8_lossy(&v.stderr)
        ),
        Err(e) if std::env::var_os("RIPOSTE_REQUIRE_K8S_VALIDATE").is_some() => {
            panic!("kubernetes-validate is required (pip install kubernetes-validate): {e}")
        }
        Err(e) => eprintln!(
            "skipping schema validation of {} {what}: kubernetes-validate not found ({e}); scripts/test installs it",
            manifests.len()
        ),
    }
}

/// Runs one SQL statement with `psql` in `database` on the local PostgreSQL (scripts/test
/// starts it); any error fails the test with psql's message.
pub fn psql(database: &str, sql: &str) {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-d", database])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("psql is installed (scripts/test starts PostgreSQL)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A fresh PostgreSQL database `riposte_<suite>_<tag>_<pid>` for one test; its URL.
pub fn database(suite: &str, tag: &str) -> String {
    let name = format!("riposte_{suite}_{tag}_{}", std::process::id());
    psql("postgres", &format!("DROP DATABASE IF EXISTS {name}"));
    psql("postgres", &format!("CREATE DATABASE {name}"));
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// One SQL query with `psql` against `db_url`: its unaligned, trimmed output.
pub fn query(db_url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([db_url, "-tAc", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// An HTTP agent that returns error statuses as responses, for asserting on them.
pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// One API call: the status and the body (JSON, or the text as a JSON string).
pub fn call(method: &str, url: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
    let a = agent();
    let resp = match (method, body) {
        ("GET", _) => a.get(url).call(),
        ("DELETE", _) => a.delete(url).call(),
        ("POST", Some(b)) => a.post(url).send_json(b),
        ("PUT", Some(b)) => a.put(url).send_json(b),
        ("PUT", None) => a.put(url).send_empty(),
        (m, _) => panic!("unsupported {m}"),
    };
    let mut resp = resp.expect("request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// A workflow's phase from its JSON.
pub fn phase(wf: &serde_json::Value) -> &str {
    wf["status"]["phase"].as_str().unwrap_or("")
}

/// A `riposte server` process, killed and reaped when dropped (whatever the test did).
pub struct Server {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The test is over; a server that already exited is fine.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` (a `riposte server ... --listen ...` command) and waits until it says where it
/// listens. Every stderr line, before and after, goes to `on_line`, on a thread that keeps
/// reading so the server never blocks on a full pipe.
pub fn start_server(mut cmd: Command, mut on_line: impl FnMut(&str) + Send + 'static) -> Server {
    use std::io::BufRead;
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start riposte server");
    let stderr = child.stderr.take().expect("stderr");
    // Owned from here on, so the process is killed and reaped whatever happens.
    let mut server = Server {
        child,
        base: String::new(),
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(rest) = line.strip_prefix("riposte server listening on ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
            // RIPOSTE_TEST_SERVER_LOG=1 shows the servers' logs in the test's output.
            if std::env::var_os("RIPOSTE_TEST_SERVER_LOG").is_some() {
                eprintln!("[server] {line}");
            }
            on_line(&line);
        }
    });
    server.base = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("the server says where it listens (it exited, or took over a minute)");
    server
}

/// A payload from the repository's fixtures (`tests/fixtures/payloads`: Falco, Tracee,
/// audit, PolicyReport and Trivy samples), as text.
pub fn payload_text(name: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/payloads")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("payload {}: {e}", p.display()))
}
