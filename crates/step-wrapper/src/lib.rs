//! The step wrapper, like Argo's emissary: `riposte exec` in a step's container on
//! Kubernetes, and the small `riposte-exec` binary the host executor starts for each detached
//! step (the server's steps outlive a restart of the server through it).
//!
//! It runs the user command, passes its stdout through (so pod logs stay useful) while keeping
//! up to [`RESULT_LIMIT`] bytes as `result`, reads the `valueFrom.path` output files, writes a
//! report — to a file (atomically) or to the termination message (Kubernetes keeps 4096 bytes
//! of it, so the result is cut there) — and, when `RIPOSTE_CALLBACK_URL` is set, POSTs the
//! whole report with the node's token. It exits with the command's exit code so the Job's
//! status agrees.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};

use serde_json::{Map, Value, json};

/// Argo caps `outputs.result` at 256 kB.
pub const RESULT_LIMIT: usize = 256 * 1024;

/// Why the wrapper could not run the step (a step that runs and fails is not an error: its
/// exit code is reported).
#[derive(Debug, thiserror::Error)]
pub enum WrapperError {
    #[error("writing the pid file {}: {source}", path.display())]
    PidFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--script-from-env {0}: the variable is not set")]
    ScriptVariableUnset(String),
    #[error("writing the script to {}: {source}", path.display())]
    WriteScript {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("--output {0:?} must be NAME=PATH")]
    BadOutput(String),
    #[error("no command given: put it after `--`")]
    NoCommand,
    #[error("reading the command's stdout: {0}")]
    ReadStdout(std::io::Error),
    #[error("waiting for the command: {0}")]
    Wait(std::io::Error),
}

/// Why the report did not reach the server (the report file or termination message remains).
#[derive(Debug, thiserror::Error)]
pub enum CallbackError {
    #[error("{0}")]
    Http(#[from] ureq::Error),
    #[error("no replica was waiting for this node after {0} tries")]
    NotDelivered(u32),
}

/// Kubernetes truncates a termination message to 4096 bytes.
const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// The wrapper's arguments: `riposte exec ARGS` and `riposte-exec ARGS`.
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// An output parameter to collect: NAME=PATH (repeatable).
    #[arg(long = "output", value_name = "NAME=PATH")]
    outputs: Vec<String>,
    /// Write the environment variable's content (a script template's source) to a file and
    /// append its path to the command.
    #[arg(long, value_name = "VAR")]
    script_from_env: Option<String>,
    /// Where the report goes for the kubelet to keep as the termination message.
    #[arg(
        long,
        env = "RIPOSTE_TERMINATION_LOG",
        default_value = "/dev/termination-log"
    )]
    termination_log: PathBuf,
    /// Write the whole report (not cut to a termination message) to this file, atomically,
    /// instead of the termination message: how the host executor's detached steps report.
    #[arg(long, value_name = "FILE")]
    report_file: Option<PathBuf>,
    /// Write `PID START_TIME` of this wrapper to this file before starting the command, so a
    /// restarted server can tell whether the step still runs.
    #[arg(long, value_name = "FILE")]
    pid_file: Option<PathBuf>,
    /// The command to run and its arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

/// Runs the step and reports how it ended; the exit code is the command's.
pub fn run(a: ExecArgs) -> Result<ExitCode, WrapperError> {
    if let Some(p) = &a.pid_file {
        let pid = std::process::id();
        let start = process_start_time(pid).unwrap_or_default();
        write_atomically(p, format!("{pid} {start}\n").as_bytes()).map_err(|source| {
            WrapperError::PidFile {
                path: p.clone(),
                source,
            }
        })?;
    }
    let mut argv = a.command.clone();
    let mut script_path = None;
    if let Some(var) = &a.script_from_env {
        let source =
            std::env::var(var).map_err(|_| WrapperError::ScriptVariableUnset(var.clone()))?;
        // Next to the wrapper: that emptyDir is writable even when the step's root
        // filesystem is read-only and has no /tmp mount. The pod is the step's alone, so a
        // name per process cannot collide.
        let name = format!("riposte-script-{}", std::process::id());
        let beside_wrapper = own_binary()
            .ok()
            .and_then(|b| b.parent().map(|d| d.join(&name)));
        let path = match beside_wrapper {
            Some(p) if std::fs::write(&p, &source).is_ok() => p,
            _ => {
                let p = std::env::temp_dir().join(&name);
                std::fs::write(&p, &source).map_err(|source| WrapperError::WriteScript {
                    path: p.clone(),
                    source,
                })?;
                p
            }
        };
        // Executable, as Argo writes it: `command: [sh, -c]` runs the file by its path.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|source| WrapperError::WriteScript {
                path: path.clone(),
                source,
            })?;
        argv.push(path.display().to_string());
        script_path = Some(path);
    }
    let outputs: Vec<(String, PathBuf)> = a
        .outputs
        .iter()
        .map(|o| match o.split_once('=') {
            Some((n, p)) if !n.is_empty() && !p.is_empty() => Ok((n.to_string(), p.into())),
            _ => Err(WrapperError::BadOutput(o.clone())),
        })
        .collect::<Result<_, _>>()?;

    let (program, args) = argv.split_first().ok_or(WrapperError::NoCommand)?;
    let spawned = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            // Like a shell: 127 when the program is missing, 126 when it cannot run.
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            // Argo's (Go's) words for a missing program; executor::report reads 127 as the
            // step's own failure.
            let message = if code == 127 {
                format!("exec: {program:?}: executable file not found in $PATH")
            } else {
                format!("cannot start {program:?}: {e}")
            };
            let mut report = build_report(b"", i32::from(code), &[]);
            report["error"] = json!(message);
            deliver(&a.termination_log, a.report_file.as_deref(), &report);
            eprintln!("error: {message}");
            return Ok(ExitCode::from(code));
        }
    };
    forward_signals_to(child.id());
    let mut result = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        let mut buf = [0u8; 8192];
        let mut stdout = std::io::stdout().lock();
        loop {
            let n = match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(WrapperError::ReadStdout(e)),
            };
            // Logs are best effort; a closed stdout must not kill the step.
            let _ = stdout.write_all(&buf[..n]);
            let room = RESULT_LIMIT.saturating_sub(result.len());
            result.extend_from_slice(&buf[..n.min(room)]);
        }
    }
    let status = child.wait().map_err(WrapperError::Wait)?;
    let exit_code = status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        128 + status.signal().unwrap_or(0)
    });
    if let Some(p) = script_path {
        // Best effort: the pod goes away anyway.
        let _ = std::fs::remove_file(p);
    }
    let report = build_report(&result, exit_code, &outputs);
    deliver(&a.termination_log, a.report_file.as_deref(), &report);
    Ok(ExitCode::from(exit_code.clamp(0, 255) as u8))
}

/// The step's process, for the signal handler.
static CHILD_PID: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD_PID.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // kill(2) is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

/// The wrapper is PID 1 of the step's container: the kubelet's SIGTERM (pod deletion, Job
/// deleted on stop/terminate) reaches it, not the step. Pass it on, as a shell does not, so
/// the step can stop cleanly within its grace period; its exit is then reported as usual.
fn forward_signals_to(pid: u32) {
    CHILD_PID.store(pid as i32, std::sync::atomic::Ordering::SeqCst);
    for sig in [
        libc::SIGTERM,
        libc::SIGINT,
        libc::SIGHUP,
        libc::SIGQUIT,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ] {
        // SAFETY: installs a handler that only reads an atomic and calls kill(2).
        unsafe { libc::signal(sig, forward as *const () as libc::sighandler_t) };
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a reader sees all of it
/// or nothing.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Field 22 of `/proc/PID/stat`: when the process started (clock ticks since boot). With the
/// pid it names one process, even after the pid is reused.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Writes the report (a file, or the termination message) and, when configured, calls back
/// the server.
fn deliver(termination_log: &Path, report_file: Option<&Path>, report: &Value) {
    if let Some(f) = report_file {
        if let Err(e) = write_atomically(f, report.to_string().as_bytes()) {
            eprintln!(
                "riposte exec: cannot write the report to {}: {e}",
                f.display()
            );
        }
    } else if let Err(e) = std::fs::write(termination_log, termination_message(report)) {
        eprintln!(
            "riposte exec: cannot write the termination message to {}: {e}",
            termination_log.display()
        );
    }
    if let Ok(url) = std::env::var("RIPOSTE_CALLBACK_URL") {
        // The token comes as a file (a Secret volume) or, for local use, the environment.
        let token = std::env::var("RIPOSTE_NODE_TOKEN_FILE")
            .ok()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|t| t.trim().to_string())
            .or_else(|| std::env::var("RIPOSTE_NODE_TOKEN").ok())
            .unwrap_or_default();
        if let Err(e) = post_report(&url, &token, report) {
            // The termination message is the fallback the executor reads instead.
            eprintln!("riposte exec: reporting to {url} failed: {e}");
        }
    }
}

/// What the executor needs from a finished step.
fn build_report(stdout: &[u8], exit_code: i32, outputs: &[(String, PathBuf)]) -> Value {
    let text = String::from_utf8_lossy(stdout);
    let result = text.strip_suffix('\n').unwrap_or(&text);
    let mut values = Map::new();
    let mut missing = Vec::new();
    for (name, path) in outputs {
        match std::fs::read_to_string(path) {
            Ok(v) => {
                values.insert(name.clone(), json!(v.trim_end_matches('\n')));
            }
            Err(e) => missing.push(json!({"name": name, "path": path, "error": e.to_string()})),
        }
    }
    json!({
        "exitCode": exit_code,
        "result": result,
        "outputs": values,
        "missingOutputs": missing,
        "nodeId": std::env::var("RIPOSTE_NODE_ID").unwrap_or_default(),
    })
}

/// The report cut to fit: the result is shortened (and marked) before anything else, keeping
/// as much of it as fits. The cut is measured on the encoded message, because JSON escaping
/// (newlines, quotes, control characters) makes the encoding longer than the text.
fn termination_message(report: &Value) -> String {
    let full = report.to_string();
    if full.len() <= TERMINATION_MESSAGE_LIMIT {
        return full;
    }
    let result = report["result"].as_str().unwrap_or("");
    let with = |keep: usize| -> String {
        let mut cut = report.clone();
        cut["result"] = json!(&result[..keep]);
        cut["resultTruncated"] = json!(true);
        cut.to_string()
    };
    // The longest prefix (on a character boundary) whose message fits: binary search.
    let (mut lo, mut hi) = (0usize, result.len());
    let mut best = None;
    while lo <= hi {
        let mut mid = lo + (hi - lo) / 2;
        while !result.is_char_boundary(mid) {
            mid -= 1;
        }
        let text = with(mid);
        if text.len() <= TERMINATION_MESSAGE_LIMIT {
            best = Some(text);
            lo = mid + 1;
        } else if mid == 0 {
            break;
        } else {
            hi = mid - 1;
        }
    }
    best.unwrap_or_else(|| {
        // Outputs alone are too large: keep what says how the step ended.
        json!({"exitCode": report["exitCode"], "nodeId": report["nodeId"], "truncated": true})
            .to_string()
    })
}

/// POSTs the report. Behind a Service with several replicas the request may reach one that
/// does not run this workflow (`{"delivered": false}`); a few more tries usually reach the
/// one that does. Either way the termination message remains the fallback.
fn post_report(url: &str, token: &str, report: &Value) -> Result<(), CallbackError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    for attempt in 0..CALLBACK_ATTEMPTS {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(100 * u64::from(attempt)));
        }
        let mut resp = agent
            .post(url)
            .header("Authorization", &format!("Bearer {token}"))
            .header("Content-Type", "application/json")
            .send(report.to_string())?;
        let answer: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
        if answer["delivered"] != false {
            return Ok(());
        }
    }
    Err(CallbackError::NotDelivered(CALLBACK_ATTEMPTS))
}

/// How often the wrapper offers its report before leaving it to the termination message.
const CALLBACK_ATTEMPTS: u32 = 5;

/// This binary: `/proc/self/exe`, or, where /proc is not mounted, `argv[0]` (searched on
/// PATH when it has no slash, as the shell found it).
pub fn own_binary() -> std::io::Result<PathBuf> {
    if let Ok(p) = std::env::current_exe() {
        return Ok(p);
    }
    let arg0 = PathBuf::from(
        std::env::args_os()
            .next()
            .ok_or_else(|| std::io::Error::other("no argv[0]"))?,
    );
    if arg0.components().count() > 1 {
        return Ok(arg0);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(&arg0))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            std::io::Error::other(format!(
                "{} is not on PATH and /proc is not mounted",
                arg0.display()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A replica that does not run the node answers `delivered: false`; the wrapper tries
    /// again (the Service sends the next try elsewhere) and stops at the first delivery.
    #[test]
    fn callbacks_are_offered_again_until_delivered() {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/cb", listener.local_addr().expect("addr"));
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for answer in ["false", "false", "true"] {
                let (mut conn, _) = listener.accept().expect("accept");
                let mut reader = BufReader::new(conn.try_clone().expect("clone"));
                let mut len = 0usize;
                let mut auth = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).expect("header");
                    let lower = line.to_ascii_lowercase();
                    if let Some(v) = lower.strip_prefix("content-length:") {
                        len = v.trim().parse().expect("length");
                    }
                    if lower.starts_with("authorization:") {
                        auth = line.trim().to_string();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).expect("body");
                seen.push((auth, String::from_utf8(body).expect("utf-8")));
                let reply = format!("{{\"delivered\": {answer}}}");
                write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                    reply.len()
                )
                .expect("reply");
            }
            seen
        });
        let report = build_report(b"ok\n", 0, &[]);
        post_report(&url, "tok", &report).expect("delivered on the third try");
        let seen = server.join().expect("server");
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|(auth, body)| {
            auth.eq_ignore_ascii_case("authorization: Bearer tok")
                && body.contains("\"result\":\"ok\"")
        }));
    }

    #[test]
    fn termination_message_fits_and_says_when_it_was_cut() {
        let small = build_report(b"ok\n", 0, &[]);
        assert_eq!(termination_message(&small), small.to_string());
        let big = build_report("x".repeat(100_000).as_bytes(), 2, &[]);
        let cut: Value = serde_json::from_str(&termination_message(&big)).expect("json");
        assert!(termination_message(&big).len() <= TERMINATION_MESSAGE_LIMIT);
        assert_eq!(cut["exitCode"], 2);
        assert_eq!(cut["resultTruncated"], true);
        assert!(cut["result"].as_str().expect("result").len() > 3000);
        // Text that JSON escapes (newlines, quotes, tabs) still fills the message: nearly all
        // of the 4096 bytes are used, not half of them.
        let escaped = "line \"one\"\n\ttab\u{1}é".repeat(2000);
        let report = build_report(escaped.as_bytes(), 0, &[]);
        let message = termination_message(&report);
        assert!(
            message.len() <= TERMINATION_MESSAGE_LIMIT,
            "{}",
            message.len()
        );
        assert!(
            message.len() > TERMINATION_MESSAGE_LIMIT - 16,
            "{}",
            message.len()
        );
        let cut: Value = serde_json::from_str(&message).expect("json");
        assert!(escaped.starts_with(cut["result"].as_str().expect("result")));
    }
}
