//! End-to-end tests of the `riposte` binary: lint output and exit codes, `run` with parameters,
//! output formats, private `/tmp`, HTTP steps, and Ctrl-C.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

mod common;

fn riposte() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_riposte"));
    c.env(
        "RIPOSTE_HOME",
        std::env::temp_dir().join("riposte-cli-tests"),
    );
    c
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).expect("write test file");
    p
}

fn run_json(file: &Path, extra: &[&str]) -> (Output, serde_json::Value) {
    let out = riposte()
        .arg("run")
        .arg(file)
        .args(["-o", "json"])
        .args(extra)
        .output()
        .expect("run riposte");
    let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, json)
}

const HEAD: &str =
    "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: t-\nspec:\n";

#[test]
fn lint_reports_positions_and_exit_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = write(
        dir.path(),
        "bad.yaml",
        &format!(
            "{HEAD}  entrypoint: main\n  podGC: {{strategy: OnPodSuccess}}\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - {{name: a, template: nope}}\n"
        ),
    );
    let out = riposte().arg("lint").arg(&bad).output().expect("lint");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let file = bad.display().to_string();
    assert!(
        stdout.contains(&format!("{file}:12:29: error: template \"nope\" not found")),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "{file}:7:10: warning: field `spec.podGC` is not implemented by Riposte"
        )),
        "{stdout}"
    );
    let quiet = riposte()
        .args(["lint", "-q"])
        .arg(&bad)
        .output()
        .expect("lint -q");
    assert!(!String::from_utf8_lossy(&quiet.stdout).contains("warning"));

    let syntax = write(dir.path(), "syntax.yaml", "a: [1,\n");
    let out = riposte().arg("lint").arg(&syntax).output().expect("lint");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("error: invalid YAML"));

    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    let out = riposte()
        .arg("lint")
        .arg(&examples)
        .output()
        .expect("lint examples");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn run_exit_codes_parameters_and_formats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(
        dir.path(),
        "wf.yaml",
        &format!(
            "{HEAD}  entrypoint: main\n  arguments: {{parameters: [{{name: code, value: '0'}}]}}\n  templates:\n  - name: main\n    container: {{image: busybox, command: [sh, -c, 'echo code={{{{workflow.parameters.code}}}}; exit {{{{workflow.parameters.code}}}}']}}\n  - name: other\n    container: {{image: alpine:3.23, command: [echo, other]}}\n"
        ),
    );
    let (out, json) = run_json(&wf, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(json["status"]["phase"], "Succeeded");
    let name = json["metadata"]["name"].as_str().expect("generated name");
    assert!(name.starts_with("t-") && name.len() == 7, "{name}");
    assert_eq!(json["status"]["nodes"][name]["outputs"]["result"], "code=0");

    let (out, json) = run_json(&wf, &["-p", "code=3"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json["status"]["phase"], "Failed");
    assert_eq!(json["status"]["message"], "main: Error (exit code 3)");

    let (out, json) = run_json(&wf, &["--entrypoint", "other"]);
    assert_eq!(out.status.code(), Some(0));
    let name = json["metadata"]["name"].as_str().expect("name");
    assert_eq!(json["status"]["nodes"][name]["templateName"], "other");

    let out = riposte()
        .arg("run")
        .arg(&wf)
        .args(["-p", "nope=1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("parameter \"nope\" is not declared"));

    let out = riposte()
        .arg("run")
        .arg(&wf)
        .args(["-o", "yaml"])
        .output()
        .expect("run yaml");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("apiVersion: argoproj.io/v1alpha1\nkind: Workflow\n"),
        "{text}"
    );
    assert!(text.contains("phase: Succeeded"));

    let invalid = write(
        dir.path(),
        "invalid.yaml",
        &format!(
            "{HEAD}  entrypoint: missing\n  templates:\n  - name: main\n    container: {{image: busybox}}\n"
        ),
    );
    let out = riposte()
        .arg("run")
        .arg(&invalid)
        .output()
        .expect("run invalid");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("entrypoint \"missing\" is not a template")
    );
}

#[test]
fn unknown_images_are_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(
        dir.path(),
        "wf.yaml",
        &format!(
            "{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    container: {{image: 'node:9.1-alpine', args: [hello, from, node]}}\n"
        ),
    );
    let (out, json) = run_json(&wf, &[]);
    assert_eq!(out.status.code(), Some(1));
    let msg = json["status"]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("image \"node:9.1-alpine\" has no host mapping")
            && msg.contains("--image node=PROGRAM"),
        "{msg}"
    );
    let (out, json) = run_json(&wf, &["--image", "node=/bin/echo"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let name = json["metadata"]["name"].as_str().expect("name");
    assert_eq!(
        json["status"]["nodes"][name]["outputs"]["result"],
        "hello from node"
    );
}

/// A step whose command cannot start ends `Failed` with Go's words, as Argo's does, with and
/// without the private root.
#[test]
fn a_missing_command_fails_the_step_as_in_argo() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(
        dir.path(),
        "wf.yaml",
        &format!(
            "{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    container: {{image: alpine:3.20, command: [invalid]}}\n"
        ),
    );
    for extra in [&[][..], &["--no-isolation"][..]] {
        let (out, json) = run_json(&wf, extra);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{extra:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(json["status"]["phase"], "Failed", "{extra:?}: {json}");
        let name = json["metadata"]["name"].as_str().expect("name");
        let node = &json["status"]["nodes"][name];
        assert_eq!(node["phase"], "Failed", "{extra:?}: {node}");
        let msg = node["message"].as_str().unwrap_or("");
        assert!(
            msg.contains("exec: \"invalid\": executable file not found in $PATH"),
            "{extra:?}: {msg}"
        );
        assert!(
            json["status"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("executable file not found"),
            "{extra:?}: {json}"
        );
    }
}

#[test]
fn each_step_has_a_private_tmp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(
        dir.path(),
        "wf.yaml",
        &format!(
            "{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: w, template: w, withItems: [a, b, c], arguments: {{parameters: [{{name: v, value: '{{{{item}}}}'}}]}}}}\n  - name: w\n    inputs: {{parameters: [{{name: v}}]}}\n    container: {{image: busybox, command: [sh, -c, 'test ! -e /tmp/shared && echo {{{{inputs.parameters.v}}}} > /tmp/shared && sleep 0.3 && cat /tmp/shared > /work/out']}}\n    outputs: {{parameters: [{{name: o, valueFrom: {{path: /work/out}}}}]}}\n"
        ),
    );
    let (out, json) = run_json(&wf, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("without a private root") {
        // Not root or no mount namespaces here: the note says so, and isolation cannot be tested.
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let mut outs: Vec<String> = json["status"]["nodes"]
        .as_object()
        .expect("nodes")
        .values()
        .filter_map(|n| {
            n["outputs"]["parameters"][0]["value"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    outs.sort();
    assert_eq!(outs, vec!["a", "b", "c"]);
    assert!(!Path::new("/work/out").exists() || std::fs::read_to_string("/work/out").is_err());
}

#[test]
fn http_steps_capture_the_body_and_judge_success() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().expect("accept");
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let body = if req.starts_with("POST /alert") {
                r#"{"accepted": true}"#
            } else {
                "nope"
            };
            let status = if req.starts_with("POST /alert") {
                "200 OK"
            } else {
                "404 Not Found"
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(resp.as_bytes()).expect("respond");
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(
        dir.path(),
        "wf.yaml",
        &format!(
            "{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: post, template: post}}\n    - - {{name: missing, template: missing, continueOn: {{failed: true}}}}\n  - name: post\n    http:\n      method: POST\n      url: http://127.0.0.1:{port}/alert\n      body: '{{\"pod\": \"web\"}}'\n      successCondition: 'response.statusCode == 200 && response.body contains \"accepted\"'\n  - name: missing\n    http: {{url: 'http://127.0.0.1:{port}/gone'}}\n"
        ),
    );
    let (out, json) = run_json(&wf, &[]);
    server.join().expect("server thread");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let nodes = json["status"]["nodes"].as_object().expect("nodes");
    let post = nodes
        .values()
        .find(|n| n["displayName"] == "post")
        .expect("post node");
    assert_eq!(post["type"], "HTTP");
    assert_eq!(post["outputs"]["result"], r#"{"accepted": true}"#);
    let missing = nodes
        .values()
        .find(|n| n["displayName"] == "missing")
        .expect("missing node");
    assert_eq!(missing["phase"], "Failed");
    assert_eq!(missing["message"], "received non-success response code 404");
}

#[test]
fn ctrl_c_terminates_running_steps() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A fractional sleep whose digits identify this test run's process.
    let marker = format!("60.{}", std::process::id());
    let wf = write(
        dir.path(),
        "wf.yaml",
        &format!(
            "{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    container: {{image: busybox, command: [sh, -c, 'exec sleep {marker}']}}\n"
        ),
    );
    let mut child = riposte()
        .arg("run")
        .arg(&wf)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut line = String::new();
    // Wait for the step to be running (the plain progress output says so).
    loop {
        line.clear();
        if stderr.read_line(&mut line).expect("read progress") == 0 {
            panic!("riposte exited before the step ran");
        }
        if line.contains("Running") && !line.contains("running t-") {
            break;
        }
    }
    // SAFETY: sending SIGINT to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let mut rest = String::new();
    stderr.read_to_string(&mut rest).expect("read rest");
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("interrupted"), "{rest}");
    // The step's process group is gone.
    let still_running = std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .any(|c| String::from_utf8_lossy(&c) == format!("sleep\u{0}{marker}\u{0}"));
    assert!(!still_running);
}

/// Runs `psql` against the test server's `postgres` database.
fn psql(sql: &str) {
    common::psql("postgres", sql);
}

fn persisted_run_replays_and_audits(db_url: &str, tamper: &dyn Fn(&str)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let wf = write(
        dir.path(),
        "wf.yaml",
        &format!(
            "{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: a, template: flaky}}\n    - - {{name: b, template: ok, withItems: [1, 2]}}\n  - name: flaky\n    retryStrategy: {{limit: 1}}\n    container: {{image: busybox, command: [sh, -c, 'test -e /tmp/x || exit 0']}}\n  - name: ok\n    container: {{image: alpine:3.23, command: [echo, ok]}}\n"
        ),
    );
    let out = riposte()
        .arg("run")
        .arg(&wf)
        .args(["-o", "json", "--database-url", db_url])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let name = json["metadata"]["name"].as_str().expect("name").to_string();

    let out = riposte()
        .args(["replay", &name, "--database-url", db_url])
        .output()
        .expect("replay");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("replay matches the stored state"), "{text}");

    let out = riposte()
        .args([
            "audit",
            "list",
            "--workflow",
            &name,
            "--json",
            "--database-url",
            db_url,
        ])
        .output()
        .expect("audit list");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert_eq!(lines[0]["action"], "workflow.create");
    assert!(
        lines
            .iter()
            .any(|l| l["action"] == "node.transition" && l["details"]["to"] == "Succeeded")
    );

    let out = riposte()
        .args(["audit", "verify", "--database-url", db_url])
        .output()
        .expect("verify");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    tamper("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2");
    let out = riposte()
        .args(["audit", "verify", "--database-url", db_url])
        .output()
        .expect("verify");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("TAMPERED row 2 was edited"), "{text}");
    // The projection was edited: replay notices.
    tamper(
        "UPDATE nodes SET phase = 'Failed', status = '{\"phase\": \"Failed\"}' WHERE name LIKE '%[0].a'",
    );
    let out = riposte()
        .args(["replay", &name, "--database-url", db_url])
        .output()
        .expect("replay");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISMATCH node"));
}

#[test]
fn sqlite_run_is_recorded_replayed_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("r.db");
    let url = format!("sqlite://{}", db.display());
    let tamper = |sql: &str| {
        let out = Command::new("python3")
            .args(["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute(sys.argv[2]); c.commit()"])
            .arg(&db)
            .arg(sql)
            .output()
            .expect("python3");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    persisted_run_replays_and_audits(&url, &tamper);
}

#[test]
fn postgres_run_is_recorded_replayed_and_audited() {
    let db = format!("riposte_cli_{}", std::process::id());
    psql(&format!("DROP DATABASE IF EXISTS {db}"));
    psql(&format!("CREATE DATABASE {db}"));
    let url = format!("postgres://postgres@127.0.0.1:5432/{db}");
    let tamper = |sql: &str| common::psql(&db, sql);
    persisted_run_replays_and_audits(&url, &tamper);
    psql(&format!("DROP DATABASE {db}"));
}

/// `run --executor kubernetes --dry-run` on Argo's examples and ours: every Job it prints
/// must pass the official Kubernetes 1.31 schemas (strict: no unknown fields).
#[test]
fn kubernetes_dry_run_jobs_pass_the_official_schemas() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = tmp.path();
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [
        "tests/conformance/argo-workflows/examples",
        "workflows/examples",
        "tests/live",
    ] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .expect("example directory")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
            .collect();
        entries.sort();
        files.extend(entries);
    }
    let mut manifests = Vec::new();
    for file in &files {
        let o = riposte()
            .args([
                "run",
                "--executor",
                "kubernetes",
                "--dry-run",
                "--database-url",
                "none",
            ])
            .arg(file)
            .output()
            .expect("riposte runs");
        let stderr = String::from_utf8_lossy(&o.stderr);
        // Files that are not runnable Workflows (templates needing --templates, CronWorkflows,
        // lint errors by design) must fail cleanly, never crash.
        assert!(
            o.status.success() || o.status.code() == Some(2),
            "{}: {:?}\n{stderr}",
            file.display(),
            o.status
        );
        if o.status.success() && !o.stdout.is_empty() {
            let name = file.file_name().expect("file name");
            let path = out.join(name);
            std::fs::write(&path, &o.stdout).expect("write manifest");
            manifests.push(path);
        }
    }
    assert!(
        manifests.len() >= 60,
        "only {} example files produced Jobs",
        manifests.len()
    );
    common::validate_kubernetes_manifests(&manifests, "Jobs");
}

/// `riposte exec` (the in-pod wrapper): exit code, result, output files and a missing one
/// reach both the termination message and the callback, with the node's token.
#[test]
fn exec_wrapper_reports_through_termination_message_and_callback() {
    use std::net::TcpListener;
    let dir = tempfile::tempdir().expect("tempdir");
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "http://{}/api/v1/nodes/report",
        listener.local_addr().expect("addr")
    );
    let server = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut reader = BufReader::new(conn.try_clone().expect("clone"));
        let mut head = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("length");
            }
            head.push_str(&line);
            if line == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
            .expect("answer");
        (head, String::from_utf8(body).expect("utf-8"))
    });
    let log = dir.path().join("termination-log");
    let verdict = dir.path().join("verdict");
    let o = riposte()
        .env("RIPOSTE_CALLBACK_URL", &url)
        .env("RIPOSTE_NODE_TOKEN", "node-secret")
        .env("RIPOSTE_NODE_ID", "wf-42")
        .arg("exec")
        .arg(format!("--termination-log={}", log.display()))
        .arg(format!("--output=verdict={}", verdict.display()))
        .arg("--output=gone=/nonexistent/riposte-output")
        .args(["--", "sh", "-c"])
        .arg(format!(
            "echo scanned; echo isolate > {}; exit 3",
            verdict.display()
        ))
        .output()
        .expect("riposte exec runs");
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "scanned\n");
    let (head, body) = server.join().expect("callback server");
    assert!(head.starts_with("POST /api/v1/nodes/report "), "{head}");
    assert!(head.contains("Bearer node-secret"), "{head}");
    let termination: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&log).expect("termination log"))
            .expect("json");
    let called: serde_json::Value = serde_json::from_str(&body).expect("json body");
    for report in [&termination, &called] {
        assert_eq!(report["exitCode"], 3, "{report}");
        assert_eq!(report["result"], "scanned");
        assert_eq!(report["nodeId"], "wf-42");
        assert_eq!(report["outputs"]["verdict"], "isolate");
        assert_eq!(report["missingOutputs"][0]["name"], "gone");
    }
}

/// `riposte-exec`, the small wrapper detached host steps run under: the same report as
/// `riposte exec`, written whole to `--report-file`, after `PID START_TIME` in `--pid-file`;
/// bad arguments are explained, not run.
#[test]
fn small_wrapper_writes_report_and_pid_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (report, pid) = (dir.path().join("report.json"), dir.path().join("pid"));
    let out = dir.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_riposte-exec"))
        .arg("--report-file")
        .arg(&report)
        .arg("--pid-file")
        .arg(&pid)
        .arg("--termination-log=/dev/null")
        .arg(format!("--output=o={}", out.display()))
        .args(["--", "sh", "-c"])
        .arg(format!(
            "echo -n quarantined > {}; echo done; cat {}; exit 4",
            out.display(),
            pid.display()
        ))
        .output()
        .expect("riposte-exec runs");
    assert_eq!(o.status.code(), Some(4), "{o:?}");
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    // The pid file was there (with the wrapper's pid and start time) before the step ran.
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("done"));
    let pid_line = lines.next().expect("pid line");
    let fields: Vec<u64> = pid_line
        .split_whitespace()
        .map(|f| f.parse().expect("number"))
        .collect();
    assert_eq!(fields.len(), 2, "{pid_line}");
    assert!(fields.iter().all(|f| *f > 0), "{pid_line}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(r["exitCode"], 4, "{r}");
    assert_eq!(r["outputs"]["o"], "quarantined", "{r}");
    assert!(
        r["result"].as_str().expect("result").starts_with("done\n"),
        "{r}"
    );
    // A missing program is 127, as in a shell, and still reported.
    let o = Command::new(env!("CARGO_BIN_EXE_riposte-exec"))
        .arg("--report-file")
        .arg(&report)
        .args(["--", "/nonexistent/program"])
        .output()
        .expect("riposte-exec runs");
    assert_eq!(o.status.code(), Some(127), "{o:?}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    assert_eq!(r["exitCode"], 127, "{r}");
    assert!(
        r["error"]
            .as_str()
            .expect("error")
            .contains("/nonexistent/program"),
        "{r}"
    );
    let o = Command::new(env!("CARGO_BIN_EXE_riposte-exec"))
        .args(["--output", "no-equals-sign", "--", "true"])
        .output()
        .expect("riposte-exec runs");
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("--output \"no-equals-sign\" must be NAME=PATH"),
        "{o:?}"
    );
}

/// Resource conditions, jsonPath and jqFilter are linted with positions; `{{...}}` waits.
#[test]
fn lint_checks_resource_conditions_and_output_queries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "isolate.yaml",
        r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: isolate
spec:
  entrypoint: main
  templates:
  - name: main
    inputs:
      parameters: [{name: n, value: "1"}]
    resource:
      action: get
      successCondition: status.succeeded > many
      failureCondition: status.failed > {{inputs.parameters.n}}
      manifest: |
        apiVersion: batch/v1
        kind: Job
        metadata: {name: scan}
    outputs:
      parameters:
      - name: name
        valueFrom: {jsonPath: "{.metadata.name"}
      - name: labels
        valueFrom: {jqFilter: ".metadata.labels |"}
      - name: ok
        valueFrom: {jqFilter: ".metadata.labels | keys"}
"#,
    );
    let o = riposte()
        .arg("lint")
        .arg(&file)
        .output()
        .expect("lint runs");
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("isolate.yaml:13:25: error: condition \"status.succeeded > many\""),
        "{text}"
    );
    assert!(text.contains("isolate.yaml:22:"), "{text}");
    assert!(
        text.contains("jsonPath \"{.metadata.name\": unclosed"),
        "{text}"
    );
    assert!(text.contains("isolate.yaml:24:"), "{text}");
    assert!(
        text.contains("3 error(s), 0 warning(s)")
            && text.contains("jqFilter \".metadata.labels |\": does not parse"),
        "{text}"
    );
    assert!(!text.contains("failureCondition"), "{text}");
}

/// The wrapper is PID 1 of a step's container: the kubelet's SIGTERM must reach the step,
/// which then exits on its own terms and is reported as usual.
#[test]
fn exec_forwards_sigterm_to_the_step() {
    let dir = tempfile::tempdir().expect("tmp");
    let term = dir.path().join("term");
    let mut wrapper = riposte()
        .args(["exec", "--termination-log"])
        .arg(&term)
        .args([
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 42' TERM; while true; do sleep 0.05; done",
        ])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("wrapper");
    std::thread::sleep(std::time::Duration::from_millis(500));
    // SAFETY: sends a signal to our own child.
    unsafe { libc::kill(wrapper.id() as i32, libc::SIGTERM) };
    let status = wrapper.wait().expect("wait");
    assert_eq!(status.code(), Some(42), "the step's own exit code");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&term).expect("report")).expect("json");
    assert_eq!(report["exitCode"], 42);
    assert_eq!(report["result"], "got-term");
}

/// `riposte run` and a `riposte server` on the same database: the run holds its workflow's
/// lease (renewed while it runs), so the server never adopts it mid-run, and the run's steps
/// each run once.
#[test]
fn a_local_server_does_not_adopt_a_running_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = format!("sqlite://{}", dir.path().join("shared.db").display());
    let count = dir.path().join("count.txt");
    let file = write(
        dir.path(),
        "chain.yaml",
        &format!(
            "{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - {{name: a, template: slow}}\n    - - {{name: b, template: slow}}\n  - name: slow\n    container:\n      image: busybox\n      command: [sh, -c, \"echo x >> {}; sleep 1.5\"]\n",
            count.display()
        ),
    );
    let mut server = riposte()
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--lease-seconds",
            "0.5",
        ])
        .args(["--database-url", &db])
        .env("RIPOSTE_HOME", dir.path().join("server-home"))
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("server");
    let (out, wf) = run_json(&file, &["--database-url", &db, "--no-isolation"]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(
        wf["status"]["phase"],
        "Succeeded",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&count)
            .expect("count")
            .lines()
            .count(),
        2,
        "each step ran once"
    );
}

/// `riposte lint` covers Argo Events' Sensors and EventSources with positions (they were
/// skipped silently before).
#[test]
fn lint_covers_sensors_and_event_sources() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "sensor.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Sensor\nmetadata: {name: s}\nspec:\n  dependencies:\n    - {name: a, eventSourceName: w, eventName: e, filters: {data: [{path: \"body..x\", type: string, value: [y]}]}}\n  triggers:\n    - template: {name: t, conditions: \"a && b\", log: {}}\n---\napiVersion: argoproj.io/v1alpha1\nkind: EventSource\nmetadata: {name: w}\nspec:\n  webhook:\n    e: {port: \"12000\", endpoint: hook}\n",
    );
    let out = riposte().arg("lint").arg(&file).output().expect("lint");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let f = file.display();
    for want in [
        format!("{f}:6:75: error: data path \"body..x\": segment 2 is empty"),
        format!("{f}:8:39: error: conditions \"a && b\": \"b\" is not a dependency"),
        format!("{f}:15:34: error: endpoint \"hook\" must start with `/`"),
    ] {
        assert!(text.contains(&want), "{want}\n{text}");
    }
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("2 resource(s): 3 error(s)"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `riposte sensor test`: a real Falco alert against the example sensor fires the trigger
/// with the pod and namespace taken from the alert; an Argo Events example sensor decides by
/// its data filter; the exit code says whether anything would fire.
#[test]
fn sensor_test_explains_what_would_fire() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let sensor = root.join("workflows/examples/falco-shell-sensor.yaml");
    let alert = root.join("tests/fixtures/falco-terminal-shell.json");
    let out = riposte()
        .args(["sensor", "test"])
        .arg(&sensor)
        .arg("--event")
        .arg(&alert)
        .arg("--json")
        .output()
        .expect("sensor test");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["dependencies"][0]["matched"], true, "{v:#}");
    let t = &v["triggers"][0];
    assert_eq!(t["fires"], true, "{v:#}");
    let params = &t["resource"]["spec"]["arguments"]["parameters"];
    assert_eq!(params[0]["value"], "payments-api-7c9d4f8b7-k2x9q");
    assert_eq!(params[1]["value"], "payments");

    // Argo Events' own example: fires for "hello", not for "bye".
    let example =
        root.join("tests/conformance/argo-events/examples/sensors/filter-with-data-simple-1.yaml");
    let dir = tempfile::tempdir().expect("tempdir");
    for (message, code) in [("hello there", 0), ("bye", 1)] {
        let event = write(
            dir.path(),
            "event.json",
            &format!("{{\"body\": {{\"message\": \"{message}\"}}}}"),
        );
        let out = riposte()
            .args(["sensor", "test"])
            .arg(&example)
            .arg("--event")
            .arg(&event)
            .output()
            .expect("sensor test");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(code), "{message}: {text}");
        assert!(text.contains("data body.message"), "{text}");
    }
}
