//! The host executor: runs a leaf node's container or script as a local process.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engine::{ExecResult, ExecuteNode};
use spec::{Container, TemplateType};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use crate::image::ImageTable;
use crate::sandbox::{Isolation, MountPlan, Sandbox, Skeleton};
use crate::spawn::{self, SpawnRequest};

pub use step_wrapper::RESULT_LIMIT;

/// Where the argosay shim appears inside a node's private root.
const ARGOSAY_INSIDE: &str = "/.riposte/bin/argosay";
/// Shims first on PATH inside a node: `argosay`, and `cowsay` (which argosay:v1 had).
const SHIM_DIR_INSIDE: &str = "/.riposte/bin";
const SHIMS: &[&str] = &["argosay", "cowsay"];
/// Where the step wrapper of a detached step appears inside a node's private root.
const WRAPPER_INSIDE: &str = "/.riposte/bin/riposte-exec";

#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Per-run directory: node roots and logs live below it.
    pub run_dir: PathBuf,
    pub images: ImageTable,
    /// The binary that implements `argosay` (this binary, with `argosay` as `argv[1]`).
    pub argosay_binary: PathBuf,
    pub isolation: Isolation,
    /// Keep node root directories after the node ends (for debugging).
    pub keep_node_dirs: bool,
    /// Run each step under `riposte exec` (this binary) in its own process group, writing its
    /// report into the node's directory, so that the step outlives this process and a
    /// restarted server re-attaches to it (`run` with `reattach`). `riposte run` does not
    /// need it; `riposte server` does.
    pub detach: bool,
    /// The step wrapper for detached steps: the small `riposte-exec` binary when it is
    /// installed beside `riposte` (a step then costs one short-lived process of ~1 ms more
    /// than the step itself), else `argosay_binary exec`, which loads the whole binary.
    pub wrapper_binary: Option<PathBuf>,
    /// The workflow's uid: detached steps leave a pointer to their directory under
    /// `$TMPDIR/riposte-steps/<uid>/<node id>`, so any server on this machine (another
    /// replica with another `RIPOSTE_HOME`) can re-attach to them.
    pub workflow_uid: Option<String>,
}

/// Where a detached step's pointer to its node directory lives (machine-local; gone at
/// reboot, like the step's process).
fn step_pointer(uid: &str, node_id: &str) -> PathBuf {
    std::env::temp_dir()
        .join("riposte-steps")
        .join(uid)
        .join(node_id)
}

/// Where a detached step's wrapper writes its report and pid file, as the step sees them.
const STEP_DIR_INSIDE: &str = "/.riposte-step";

pub use step_wrapper::process_start_time;

/// Where a detached node's report and pid file are on the host.
fn step_files(node_dir: &Path, isolated: bool) -> (PathBuf, PathBuf) {
    let dir = if isolated {
        Sandbox::host_path(node_dir, STEP_DIR_INSIDE)
    } else {
        node_dir.join("step")
    };
    (dir.join("report.json"), dir.join("pid"))
}

/// Runs leaf nodes as host processes. Cheap to clone.
#[derive(Clone)]
pub struct HostExecutor {
    config: Arc<HostConfig>,
    shim_dir: Arc<std::sync::OnceLock<Result<String, String>>>,
    skeleton: Arc<std::sync::OnceLock<Result<Skeleton, String>>>,
    /// Where each bare program name was found on the host `PATH` (they do not move during
    /// a run): a step's process is then started by its path, with no `execve` per `PATH`
    /// entry.
    programs: Arc<std::sync::Mutex<std::collections::HashMap<String, PathBuf>>>,
}

/// A node's log file, one per node, interleaving stdout and stderr lines as they arrive.
pub fn log_path(run_dir: &Path, node_id: &str) -> PathBuf {
    run_dir.join("logs").join(format!("{node_id}.log"))
}

impl HostExecutor {
    pub fn new(config: HostConfig) -> HostExecutor {
        HostExecutor {
            config: Arc::new(config),
            shim_dir: Arc::new(std::sync::OnceLock::new()),
            skeleton: Arc::new(std::sync::OnceLock::new()),
            programs: Arc::default(),
        }
    }

    /// The host path of bare program name `program` on `path_var`, remembered.
    fn find_on_path(&self, program: &str, path_var: &str) -> Option<PathBuf> {
        let mut known = self.programs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = known.get(program) {
            return Some(p.clone());
        }
        let found = find_executable(program, path_var)?;
        known.insert(program.to_string(), found.clone());
        Some(found)
    }

    pub fn config(&self) -> &HostConfig {
        &self.config
    }

    /// The shared root nodes chroot into, made on first use.
    fn skeleton(&self) -> Result<&Skeleton, String> {
        let shim_paths: Vec<String> = SHIMS
            .iter()
            .map(|s| format!("{SHIM_DIR_INSIDE}/{s}"))
            .chain(std::iter::once(WRAPPER_INSIDE.to_string()))
            .collect();
        let shim_paths: Vec<&str> = shim_paths.iter().map(String::as_str).collect();
        self.skeleton
            .get_or_init(|| {
                Sandbox::skeleton(&self.config.run_dir, &shim_paths).map_err(|e| {
                    format!(
                        "creating the skeleton root under {}: {e}",
                        self.config.run_dir.display()
                    )
                })
            })
            .as_ref()
            .map_err(|e| e.clone())
    }

    fn shared_shim_dir(&self) -> Result<String, String> {
        self.shim_dir
            .get_or_init(|| link_shims(&self.config.run_dir, &self.config.argosay_binary))
            .clone()
    }

    /// Runs the node to completion, or until `cancel` turns true or its deadline passes.
    /// `now_ms` gives the current time for the deadline.
    pub async fn run(
        &self,
        node: &ExecuteNode,
        mut cancel: watch::Receiver<bool>,
        deadline_in: Option<Duration>,
        reattach: bool,
    ) -> ExecResult {
        let t = &node.template;
        match t.template_type() {
            Some(TemplateType::Container) | Some(TemplateType::Script) => {}
            Some(TemplateType::Http) => {
                let http = t.http.clone().unwrap_or_default();
                let fut = crate::http::run(http);
                return tokio::select! {
                    r = fut => r,
                    _ = cancel.wait_for(|c| *c) => ExecResult::error("cancelled"),
                };
            }
            Some(TemplateType::Resource) => {
                return ExecResult::error(
                    "resource templates need the Kubernetes executor; the host executor cannot run them",
                );
            }
            other => {
                return ExecResult::error(format!(
                    "the host executor cannot run template type {other:?}"
                ));
            }
        }
        if reattach && self.config.detach {
            match self.reattach(node, &mut cancel, deadline_in).await {
                Reattached::Done(r) => return r,
                // It never started (the server stopped between recording the start and
                // spawning): start it now, once.
                Reattached::NeverStarted => {}
            }
        }
        match self.run_process(node, &mut cancel, deadline_in).await {
            Ok(r) => r,
            Err(e) => ExecResult::error(e),
        }
    }

    /// Waits again for a detached step an earlier server started: its report if it is there
    /// or when it comes, "process lost" only when its wrapper is gone without one.
    async fn reattach(
        &self,
        node: &ExecuteNode,
        cancel: &mut watch::Receiver<bool>,
        deadline_in: Option<Duration>,
    ) -> Reattached {
        let cfg = &self.config;
        let isolated = matches!(cfg.isolation, Isolation::PrivateRoot);
        let mut node_dir = cfg.run_dir.join("nodes").join(&node.node_id);
        // Started by another server on this machine (its own RIPOSTE_HOME): its pointer says
        // where the step's directory is.
        if !node_dir.exists()
            && let Some(uid) = &cfg.workflow_uid
            && let Ok(dir) = std::fs::read_to_string(step_pointer(uid, &node.node_id))
            && Path::new(dir.trim()).exists()
        {
            node_dir = PathBuf::from(dir.trim());
            // Its output still goes to the log file of the server that started it: read that
            // one under our name, so its lines keep reaching the store.
            let theirs = node_dir
                .parent()
                .and_then(Path::parent)
                .map(|run_dir| log_path(run_dir, &node.node_id));
            let ours = log_path(&cfg.run_dir, &node.node_id);
            if let Some(theirs) = theirs
                && theirs.exists()
                && std::fs::symlink_metadata(&ours).is_err()
            {
                if let Some(parent) = ours.parent() {
                    let _ = std::fs::create_dir_all(parent);
                }
                let _ = std::os::unix::fs::symlink(&theirs, &ours);
            }
        }
        let (report, pid_file) = step_files(&node_dir, isolated);
        let deadline = deadline_in.map(|d| tokio::time::Instant::now() + d);
        let started = tokio::time::Instant::now();
        let mut killed_at: Option<(tokio::time::Instant, ExecResult)> = None;
        loop {
            if let Some(r) = read_report(&report) {
                let res = match killed_at {
                    Some((_, why)) => why,
                    None => self.finish_detached(node, r, &node_dir, isolated),
                };
                self.cleanup(&node_dir);
                return Reattached::Done(res);
            }
            let wrapper = std::fs::read_to_string(&pid_file).ok().and_then(|t| {
                let mut it = t.split_whitespace();
                Some((
                    it.next()?.parse::<u32>().ok()?,
                    it.next()?.parse::<u64>().ok()?,
                ))
            });
            let alive = wrapper.is_some_and(|(pid, start)| {
                process_start_time(pid).is_some_and(|s| s == start || start == 0)
            });
            match wrapper {
                // No trace on this machine: it ran elsewhere, or never started. Running it
                // here could run it twice, so it is lost (and retried if its strategy says).
                None if !node_dir.exists() => {
                    return Reattached::Done(ExecResult::error(format!(
                        "process lost: no trace of node {} in {} (started by a server on another machine, or never started)",
                        node.node_id,
                        cfg.run_dir.display()
                    )));
                }
                // Its directory is here but its wrapper never wrote its pid (it writes it
                // first): the server stopped before spawning it. Start it now, once.
                None if started.elapsed() > Duration::from_secs(3) => {
                    return Reattached::NeverStarted;
                }
                None => {}
                Some(_) if !alive => {
                    // It may have written the report just before we looked at its pid.
                    if let Some(r) = read_report(&report) {
                        let res = self.finish_detached(node, r, &node_dir, isolated);
                        self.cleanup(&node_dir);
                        return Reattached::Done(res);
                    }
                    self.cleanup(&node_dir);
                    return Reattached::Done(match killed_at {
                        Some((_, why)) => why,
                        None => ExecResult::error(format!(
                            "process lost: the step's process (pid {}) ended without a report",
                            wrapper.map(|w| w.0).unwrap_or_default()
                        )),
                    });
                }
                Some((pid, _)) => {
                    let now = tokio::time::Instant::now();
                    let why = if *cancel.borrow() {
                        Some(ExecResult::error("cancelled"))
                    } else if deadline.is_some_and(|d| now >= d) {
                        Some(deadline_result(String::new()))
                    } else {
                        None
                    };
                    match (&killed_at, why) {
                        (None, Some(why)) => {
                            signal_group(pid, libc::SIGTERM);
                            killed_at = Some((now, why));
                        }
                        (Some((at, _)), _) if now.duration_since(*at) > KILL_GRACE => {
                            signal_group(pid, libc::SIGKILL);
                        }
                        _ => {}
                    }
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = cancel.changed() => {}
            }
        }
    }

    /// The engine's result from a detached step's report, with output parameters read from
    /// the node's files like an attached step's.
    fn finish_detached(
        &self,
        node: &ExecuteNode,
        report: crate::report::Report,
        node_dir: &Path,
        isolated: bool,
    ) -> ExecResult {
        let mut res = report.into_exec_result();
        if let Some(r) = &mut res.result {
            *r = r.trim_end_matches(['\n', '\r']).to_string();
        }
        res.parameters.clear();
        for (name, path) in &node.output_paths {
            let host = if isolated {
                Sandbox::host_path(node_dir, path)
            } else {
                PathBuf::from(path)
            };
            let value = std::fs::read_to_string(host).ok();
            res.parameters
                .insert(name.clone(), value.map(|v| v.trim().to_string()));
        }
        res
    }

    fn cleanup(&self, node_dir: &Path) {
        if !self.config.keep_node_dirs {
            // Best effort: a leftover directory under the run dir is harmless.
            let _ = std::fs::remove_dir_all(node_dir);
        }
        if let (Some(uid), Some(node_id)) = (&self.config.workflow_uid, node_dir.file_name()) {
            let _ = std::fs::remove_file(step_pointer(uid, &node_id.to_string_lossy()));
        }
    }

    async fn run_process(
        &self,
        node: &ExecuteNode,
        cancel: &mut watch::Receiver<bool>,
        deadline_in: Option<Duration>,
    ) -> Result<ExecResult, String> {
        let cfg = &self.config;
        let t = &node.template;
        let (container, script): (&Container, Option<&str>) = match (&t.container, &t.script) {
            (Some(c), _) => (c, None),
            (None, Some(s)) => (&s.container, Some(s.source.as_str())),
            (None, None) => return Err("template has neither container nor script".into()),
        };
        let node_dir = cfg.run_dir.join("nodes").join(&node.node_id);
        let isolated = matches!(cfg.isolation, Isolation::PrivateRoot);
        let detach = cfg.detach;
        // Without a private root, a node needs its own directory only for a script file or a
        // detached step's report.
        if isolated || script.is_some() || detach {
            std::fs::create_dir_all(&node_dir)
                .map_err(|e| format!("creating {}: {e}", node_dir.display()))?;
        }
        let workdir = container.working_dir.clone().unwrap_or_else(|| "/".into());
        let output_paths: Vec<&str> = node.output_paths.iter().map(|(_, p)| p.as_str()).collect();
        let mut private: Vec<&str> = output_paths.clone();
        // Where Argo's emissary puts script sources.
        let script_inside = "/argo/staging/script";
        if script.is_some() {
            private.push(script_inside);
        }
        let report_inside = format!("{STEP_DIR_INSIDE}/report.json");
        let pid_inside = format!("{STEP_DIR_INSIDE}/pid");
        if detach && isolated {
            private.push(&report_inside);
        }
        let (report_host, pid_host) = step_files(&node_dir, isolated);
        if detach {
            if let Some(d) = report_host.parent() {
                std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
            }
            // A report left by an earlier attempt of this node must not be taken for this one.
            let _ = std::fs::remove_file(&report_host);
            let _ = std::fs::remove_file(&pid_host);
            if let Some(uid) = &cfg.workflow_uid {
                let pointer = step_pointer(uid, &node.node_id);
                let written = pointer
                    .parent()
                    .map(std::fs::create_dir_all)
                    .transpose()
                    .and_then(|_| {
                        let abs = std::path::absolute(&node_dir)?;
                        std::fs::write(&pointer, abs.display().to_string())
                    });
                if let Err(e) = written {
                    // Only another server on this machine needs it; this one knows the way.
                    tracing::debug!(pointer = %pointer.display(), error = %e, "writing a step pointer");
                }
            }
        }
        let plan: Option<Arc<MountPlan>> = if isolated {
            let skeleton = self.skeleton()?;
            let wrapper = detach.then(|| {
                let binary = cfg.wrapper_binary.as_ref().unwrap_or(&cfg.argosay_binary);
                (binary.clone(), WRAPPER_INSIDE.to_string())
            });
            let shims: Vec<(PathBuf, String)> = SHIMS
                .iter()
                .map(|s| (cfg.argosay_binary.clone(), format!("{SHIM_DIR_INSIDE}/{s}")))
                .chain(wrapper)
                .collect();
            let shims: Vec<(PathBuf, &str)> =
                shims.iter().map(|(p, s)| (p.clone(), s.as_str())).collect();
            Some(Arc::new(
                Sandbox::prepare(skeleton, &node_dir, &private, &workdir, &shims).map_err(|e| {
                    format!("preparing the private root of node {}: {e}", node.node_name)
                })?,
            ))
        } else {
            None
        };
        // Host path of a path as the process sees it.
        let host_path = |p: &str| -> PathBuf {
            if isolated {
                Sandbox::host_path(&node_dir, p)
            } else {
                PathBuf::from(p)
            }
        };
        let command: Vec<String> = container.command.iter().map(|s| s.0.clone()).collect();
        let args: Vec<String> = container.args.iter().map(|s| s.0.clone()).collect();
        let argosay_path = if isolated {
            ARGOSAY_INSIDE.to_string()
        } else {
            cfg.argosay_binary.display().to_string()
        };
        let mut argv = cfg
            .images
            .argv(&container.image, &command, &args, &argosay_path)
            .map_err(|e| e.to_string())?;
        if let Some(source) = script {
            let path = if isolated {
                host_path(script_inside)
            } else {
                node_dir.join("script")
            };
            std::fs::write(&path, source).map_err(|e| format!("writing script source: {e}"))?;
            // Executable, so that `command: [sh, -c]` can run the file by its path, as in Argo.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| format!("making the script executable: {e}"))?;
            argv.push(if isolated {
                script_inside.to_string()
            } else {
                path.display().to_string()
            });
        }
        if argv.is_empty() {
            return Err(format!(
                "image {} with no command and no args has nothing to run",
                container.image
            ));
        }
        let runs_shim = argv.first() == Some(&argosay_path);
        if detach {
            // The wrapper waits for the step, writes its report, and outlives this process.
            let (report_seen, pid_seen) = if isolated {
                (report_inside.clone(), pid_inside.clone())
            } else {
                (
                    report_host.display().to_string(),
                    pid_host.display().to_string(),
                )
            };
            let mut wrapped = match (&cfg.wrapper_binary, isolated) {
                (Some(_), true) => vec![WRAPPER_INSIDE.to_string()],
                (Some(w), false) => vec![w.display().to_string()],
                (None, true) => vec![WRAPPER_INSIDE.to_string(), "exec".to_string()],
                (None, false) => vec![argosay_path.clone(), "exec".to_string()],
            };
            wrapped.extend([
                "--report-file".to_string(),
                report_seen,
                "--pid-file".to_string(),
                pid_seen,
                "--termination-log".to_string(),
                "/dev/null".to_string(),
                "--".to_string(),
            ]);
            wrapped.append(&mut argv);
            argv = wrapped;
        }
        let Some((program, rest)) = argv.split_first() else {
            return Err("internal: empty command".into());
        };
        let host_path_var =
            std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let shim_dir = if isolated {
            SHIM_DIR_INSIDE.to_string()
        } else {
            self.shared_shim_dir()?
        };
        // A bare name is looked up as the step's `PATH` would (shims first, then the host's),
        // unless the step sets its own `PATH`. Inside a private root the host's directories
        // are the same paths, except the ones the step has privately.
        let step_sets_path = container.env.iter().any(|e| e.name == "PATH");
        let resolved = if program.contains('/') || step_sets_path {
            None
        } else if SHIMS.contains(&program.as_str()) {
            Some(PathBuf::from(format!("{shim_dir}/{program}")))
        } else {
            self.find_on_path(program, &host_path_var).filter(|p| {
                let top = p.to_str().and_then(top_level_dir);
                !isolated
                    || top.is_some_and(|t| {
                        t != "tmp"
                            && !private
                                .iter()
                                .copied()
                                .chain(std::iter::once(workdir.as_str()))
                                .any(|q| top_level_dir(q) == Some(t))
                    })
            })
        };
        // The log is opened before the process starts: stderr goes straight into it (append
        // mode keeps stdout lines, copied in by `pump`, interleaved in arrival order).
        let log = log_path(&cfg.run_dir, &node.node_id);
        if let Some(parent) = log.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("creating log directory: {e}"))?;
        }
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|e| format!("creating {}: {e}", log.display()))?;
        let stderr_file = log_file
            .try_clone()
            .map_err(|e| format!("opening {}: {e}", log.display()))?;
        // The environment: ours, then the step's (which wins, as in a container).
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("PATH".into(), format!("{shim_dir}:{host_path_var}"));
        env.insert("HOME".into(), "/tmp".into());
        env.insert("LANG".into(), "C.UTF-8".into());
        env.insert("ARGO_POD_NAME".into(), node.pod_name.clone());
        env.insert("ARGO_NODE_ID".into(), node.node_id.clone());
        env.insert("ARGO_WORKFLOW_NAME".into(), node.workflow_name.clone());
        for e in &container.env {
            match &e.value {
                Some(v) => {
                    env.insert(e.name.clone(), v.0.clone());
                }
                None if e.value_from.is_some() => {
                    return Err(format!(
                        "env {}: valueFrom (secrets, configmaps, field refs) needs the Kubernetes executor",
                        e.name
                    ));
                }
                None => {
                    env.insert(e.name.clone(), String::new());
                }
            }
        }
        // Where the program may be, in order (`execvp`'s search, done here because the child
        // may not allocate).
        let candidates: Vec<String> = match &resolved {
            Some(p) => vec![p.display().to_string()],
            None if program.contains('/') => vec![program.clone()],
            None => env
                .get("PATH")
                .map(String::as_str)
                .unwrap_or_default()
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
                .collect(),
        };
        // What the process sees as its name: what the step said (`sh`, not `/usr/bin/sh`).
        let arg0 = if detach {
            "riposte"
        } else if runs_shim {
            "argosay"
        } else {
            program.as_str()
        };
        let cstring = |what: &str, s: &str| {
            CString::new(s).map_err(|_| format!("{what} {s:?} contains a NUL byte"))
        };
        let request = SpawnRequest {
            candidates: candidates
                .iter()
                .map(|c| cstring("the program path", c))
                .collect::<Result<_, _>>()?,
            argv: std::iter::once(arg0)
                .chain(rest.iter().map(String::as_str))
                .map(|a| cstring("an argument", a))
                .collect::<Result<_, _>>()?,
            env: env
                .iter()
                .map(|(k, v)| {
                    if k.is_empty() || k.contains('=') {
                        return Err(format!("env name {k:?} must be non-empty and have no '='"));
                    }
                    cstring("an env value", &format!("{k}={v}"))
                })
                .collect::<Result<_, _>>()?,
            stdin: std::fs::File::open("/dev/null")
                .map_err(|e| format!("opening /dev/null: {e}"))?
                .into(),
            stdout: OwnedFd::from(
                log_file
                    .try_clone()
                    .map_err(|e| format!("opening {}: {e}", log.display()))?,
            ),
            stderr: OwnedFd::from(stderr_file),
            cwd: (!isolated && container.working_dir.is_some())
                .then(|| cstring("workingDir", &workdir))
                .transpose()?,
            mounts: plan.clone(),
        };
        // The step's stdout comes through a pipe, to keep `result`; a detached step's wrapper
        // copies it into the log itself.
        let (stdout_read, request) = if detach {
            (None, request)
        } else {
            let (read, write) =
                spawn::stdout_pipe().map_err(|e| format!("creating a pipe for stdout: {e}"))?;
            (
                Some(read),
                SpawnRequest {
                    stdout: write,
                    ..request
                },
            )
        };
        // A detached step outlives this process (and this task, at shutdown).
        let spawned = spawn::spawn(&request, !detach);
        // The step's program is not there: the step's own failure, as in Argo (a detached
        // step's wrapper reports the same from inside, see `report`).
        if let Err(e) = &spawned
            && !detach
            && matches!(e.stage, spawn::SpawnStage::Exec)
            && e.error.kind() == std::io::ErrorKind::NotFound
        {
            let message = crate::report::not_found_message(program);
            let _ = std::io::Write::write_all(&mut &log_file, format!("{message}\n").as_bytes());
            let mut r = ExecResult::exited(crate::report::EXIT_NOT_FOUND, "");
            r.message = message;
            return Ok(r);
        }
        let mut child = spawned.map_err(|e| {
            let missing = match (&plan, e.stage) {
                (Some(p), spawn::SpawnStage::PrivateRoot) => p.missing_paths(),
                _ => Vec::new(),
            };
            if missing.is_empty() {
                format!("starting {program:?} for image {}: {e}", container.image)
            } else {
                format!(
                    "starting {program:?} for image {}: {e} (missing {})",
                    container.image,
                    missing.join(", ")
                )
            }
        })?;
        // Our copies of the child's ends: a pipe's reader sees EOF only once they are closed.
        drop(request);
        let pid = Some(child.id());
        let out_task = match stdout_read {
            Some(read) => {
                let stdout = tokio::net::unix::pipe::Receiver::from_owned_fd(read)
                    .map_err(|e| format!("reading the step's stdout: {e}"))?;
                tokio::spawn(pump(stdout, log_file))
            }
            None => tokio::spawn(async { Vec::new() }),
        };
        let deadline = async {
            match deadline_in {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        enum End {
            Exited(std::process::ExitStatus),
            Cancelled,
            Deadline,
        }
        let end = tokio::select! {
            s = child.wait() => End::Exited(s.map_err(|e| format!("waiting for the process: {e}"))?),
            _ = cancel.wait_for(|c| *c) => End::Cancelled,
            _ = deadline => End::Deadline,
        };
        if !matches!(end, End::Exited(_)) {
            kill_group(pid, &mut child).await;
        }
        let stdout = out_task.await.map_err(|e| format!("reading stdout: {e}"))?;
        let result = trim_result(stdout);
        if detach && let End::Exited(status) = &end {
            let res = match read_report(&report_host) {
                Some(r) => self.finish_detached(node, r, &node_dir, isolated),
                None => ExecResult::error(format!(
                    "the step wrapper ended ({status}) without writing its report {}",
                    report_host.display()
                )),
            };
            self.cleanup(&node_dir);
            return Ok(res);
        }
        let mut res = match end {
            End::Cancelled => ExecResult::error("cancelled"),
            End::Deadline => deadline_result(result),
            End::Exited(status) => {
                use std::os::unix::process::ExitStatusExt;
                let code = status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
                ExecResult::exited(code, &result)
            }
        };
        for (name, path) in &node.output_paths {
            let value = std::fs::read_to_string(host_path(path)).ok();
            // Argo trims whitespace around output parameters read from files.
            res.parameters
                .insert(name.clone(), value.map(|v| v.trim().to_string()));
        }
        if !cfg.keep_node_dirs {
            // Best effort: a leftover directory under the run dir is harmless.
            let _ = std::fs::remove_dir_all(&node_dir);
        }
        Ok(res)
    }
}

/// The first executable file named `program` in the directories of `path_var`.
fn find_executable(program: &str, path_var: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    path_var
        .split(':')
        .filter(|d| d.starts_with('/'))
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The top-level directory of an absolute path (`/usr/bin/sh` → `usr`).
fn top_level_dir(p: &str) -> Option<&str> {
    p.strip_prefix('/')?
        .split('/')
        .next()
        .filter(|t| !t.is_empty())
}

/// How a re-attachment ended.
enum Reattached {
    Done(ExecResult),
    NeverStarted,
}

/// How long a cancelled step has between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

fn deadline_result(result: String) -> ExecResult {
    ExecResult {
        phase: engine::Phase::Failed,
        message: "Pod was active on the node longer than the specified deadline".into(),
        exit_code: None,
        result: Some(result),
        parameters: BTreeMap::new(),
    }
}

fn signal_group(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = i32::try_from(pid)
        && pid > 1
    {
        // SAFETY: kill with a negative pid signals the process group the step runs in.
        unsafe {
            libc::kill(-pid, sig);
        }
    }
}

/// A detached step's report, once its wrapper has written it (atomically).
fn read_report(path: &Path) -> Option<crate::report::Report> {
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    crate::report::Report::from_json(&v)
}

/// Without a private root, the shims are symlinks in one directory per run.
fn link_shims(run_dir: &Path, binary: &Path) -> Result<String, String> {
    let dir = run_dir.join("bin");
    std::fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    for s in SHIMS {
        let link = dir.join(s);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(binary, &link)
                .map_err(|e| format!("linking {}: {e}", link.display()))?;
        }
    }
    Ok(dir.display().to_string())
}

/// SIGTERM the process group, then SIGKILL after a grace period.
async fn kill_group(pid: Option<u32>, child: &mut spawn::StepChild) {
    if let Some(pid) = pid {
        // SAFETY: kill with a negative pid signals the process group the step runs in.
        unsafe {
            libc::kill(-(pid as i32), libc::SIGTERM);
        }
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_err()
        {
            // SAFETY: as above.
            unsafe {
                libc::kill(-(pid as i32), libc::SIGKILL);
            }
        }
    }
    // The process is gone or being killed; its status no longer matters.
    let _ = child.wait().await;
}

/// Copies stdout into the log and keeps up to [`RESULT_LIMIT`] bytes of it.
async fn pump(stream: impl AsyncRead + Unpin, mut log: std::fs::File) -> Vec<u8> {
    let mut reader = BufReader::new(stream);
    let mut kept = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if kept.len() < RESULT_LIMIT {
                    let room = RESULT_LIMIT - kept.len();
                    kept.extend_from_slice(&line[..line.len().min(room)]);
                }
                // Logging is best effort; the result is what the engine needs. Appending a
                // line to the page cache is quicker than a blocking-pool round trip.
                let _ = std::io::Write::write_all(&mut log, &line);
            }
        }
    }
    kept
}

fn trim_result(stdout: Vec<u8>) -> String {
    let s = String::from_utf8_lossy(&stdout);
    s.trim_end_matches(['\n', '\r']).to_string()
}
