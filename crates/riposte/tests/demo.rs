//! `riposte demo` end to end, as a newcomer runs it: the binary alone, with an empty HOME.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn demo() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riposte"));
    c.arg("demo")
        .env_remove("DATABASE_URL")
        .env_remove("RIPOSTE_HOME")
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null());
    c
}

/// The whole story, decided by the demo's responder: the pod ends labelled and fenced in by a
/// NetworkPolicy, the approval is audited under the responder's name, and the time to contain
/// is measured.
#[test]
fn the_demo_isolates_the_pod_and_shows_every_step() {
    let home = tempfile::tempdir().expect("tempdir");
    let out = demo()
        .env("HOME", home.path())
        .output()
        .expect("riposte demo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for expected in [
        // The event, stored, and the sensor that matched it.
        "stored: falco.alert from runtime-alerts (id 6f1b0c2e-3d44-4f0e-9a51-2b7c1d9e8a10)",
        "sensor default/runtime-alert: dependency falco matched",
        "trigger respond-to-falco fired",
        // The steps, as they ran.
        "evidence            Succeeded",
        "isolate             Succeeded",
        "approve             waiting for a person",
        "decided by demo-responder through the API: keep",
        "notification at the local sink",
        // What the cluster holds now.
        "status: compromised",
        "kind: NetworkPolicy",
        "evidence: Secret forensics/",
        "workflow.approve",
        "RESULT: pod prod-payments/payments-api-7c9d4f8b7-k2x9q isolated",
    ] {
        assert!(
            stdout.contains(expected),
            "no {expected:?} in:\n{stdout}\n{stderr}"
        );
    }
    let secs: f64 = stdout
        .lines()
        .find_map(|l| {
            l.strip_prefix("time from the alert's arrival to the NetworkPolicy being applied: ")
        })
        .and_then(|s| s.trim_end_matches(" s").parse().ok())
        .unwrap_or_else(|| panic!("no time to contain in:\n{stdout}"));
    assert!(secs > 0.0, "{secs}");
    // It used nothing of the user's: no ~/.riposte, nothing left in HOME.
    assert!(
        std::fs::read_dir(home.path())
            .expect("home")
            .next()
            .is_none(),
        "the demo wrote into HOME"
    );
}

/// `--keep` leaves the server running for the console until Ctrl-C, which stops everything.
#[test]
fn ctrl_c_stops_a_kept_demo_and_leaves_nothing_running() {
    let mut child = demo()
        .arg("--keep")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("riposte demo --keep");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut console = None;
    let mut seen = Vec::new();
    loop {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .unwrap_or_else(|_| panic!("the demo never offered its console:\n{}", seen.join("\n")));
        if let Some(url) = line.trim().strip_prefix("console:") {
            console = Some(url.trim().to_string());
        }
        let done = line.contains("Press Ctrl-C");
        seen.push(line);
        if done {
            break;
        }
    }
    let console = console.expect("a console URL");
    let base = console
        .split("/workflows/")
        .next()
        .expect("base")
        .to_string();
    let addr = base.trim_start_matches("http://").to_string();
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "the kept server answers at {addr}"
    );
    // SAFETY: signals the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the demo did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(130));
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "the demo's server still listens at {addr} after Ctrl-C"
    );
}
