//! Starting a step's process without copying this process: `clone(CLONE_VM | CLONE_VFORK)`,
//! as `posix_spawn` does, but with the private-root set-up (a mount namespace, bind mounts,
//! `chroot`) done in the child before `execve`.
//!
//! `fork` copies the page tables of the whole controller (and then faults on every page
//! either side writes until the child execs): for a short step that costs more than the
//! step. The child here shares the parent's memory until `execve`, so it may only make
//! system calls on data prepared before the clone — no allocation, no locks — while the
//! calling thread waits (`CLONE_VFORK`). Its exit is awaited through a pidfd.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;

use crate::sandbox::MountPlan;

/// What to start: the candidates for the program's path (tried in order, as `execvp` tries
/// `PATH`), its `argv` and environment, its standard streams and its private root.
pub(crate) struct SpawnRequest {
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// The working directory when there is no private root (which sets its own).
    pub cwd: Option<CString>,
    pub mounts: Option<Arc<MountPlan>>,
}

/// Which part of starting the process failed, as the child reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpawnStage {
    /// Standard streams, process group, working directory.
    Setup,
    /// The private root.
    PrivateRoot,
    /// Changing to the working directory (without a private root).
    WorkingDir,
    /// `execve`.
    Exec,
}

#[derive(Debug)]
pub(crate) struct SpawnError {
    pub stage: SpawnStage,
    pub error: io::Error,
}

impl std::fmt::Display for SpawnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.stage {
            SpawnStage::Setup => write!(f, "setting up the process: {}", self.error),
            SpawnStage::PrivateRoot => write!(f, "setting up its private root: {}", self.error),
            SpawnStage::WorkingDir => write!(f, "changing to its workingDir: {}", self.error),
            SpawnStage::Exec => write!(f, "{}", self.error),
        }
    }
}

/// A started process, in its own process group. Unless it was reaped or started with
/// `kill_on_drop` off (a detached step), dropping the handle kills the group.
pub(crate) struct StepChild {
    pid: libc::pid_t,
    pidfd: Option<tokio::io::unix::AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    kill_on_drop: bool,
}

/// Everything the child touches, laid out before the clone (the child must not allocate).
struct ChildArgs<'a> {
    candidates: Vec<*const libc::c_char>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
    fds: [RawFd; 3],
    cwd: Option<&'a CString>,
    mounts: Option<&'a MountPlan>,
    report: RawFd,
}

const CHILD_STACK: usize = 256 * 1024;

/// Starts the process. Returns once it has exec'd (or failed to: then nothing runs).
pub(crate) fn spawn(req: &SpawnRequest, kill_on_drop: bool) -> Result<StepChild, SpawnError> {
    let setup = |error| SpawnError {
        stage: SpawnStage::Setup,
        error,
    };
    if req.candidates.is_empty() || req.argv.is_empty() {
        return Err(setup(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no program to run",
        )));
    }
    let nul_terminated = |v: &[CString]| {
        let mut p: Vec<*const libc::c_char> = v.iter().map(|s| s.as_ptr()).collect();
        p.push(std::ptr::null());
        p
    };
    // The child reports a failure here (stage and errno); a successful exec closes it.
    let (report_read, report_write) = pipe().map_err(setup)?;
    let args = ChildArgs {
        candidates: req.candidates.iter().map(|s| s.as_ptr()).collect(),
        argv: nul_terminated(&req.argv),
        envp: nul_terminated(&req.env),
        fds: [
            req.stdin.as_raw_fd(),
            req.stdout.as_raw_fd(),
            req.stderr.as_raw_fd(),
        ],
        cwd: req.cwd.as_ref(),
        mounts: req.mounts.as_deref(),
        report: report_write.as_raw_fd(),
    };
    let mut stack = vec![0u8; CHILD_STACK];
    // SAFETY: the stack grows down on every Linux architecture Rust supports; the top is
    // aligned down to 16 bytes.
    let stack_top = unsafe { stack.as_mut_ptr().add(CHILD_STACK) } as usize & !15;
    // No signal handler of ours may run in the child (it shares our memory): block them all
    // around the clone; the child resets handlers before unblocking.
    let mut all: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: plain libc calls on valid, owned sigsets; `child_main` only reads `args`,
    // which outlives the clone (CLONE_VFORK: we resume after the child exec'd or exited).
    let pid = unsafe {
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            stack_top as *mut libc::c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        pid
    };
    drop(stack);
    if pid < 0 {
        return Err(setup(io::Error::last_os_error()));
    }
    drop(report_write);
    let mut report = [0u8; 8];
    let n = read_full(report_read.as_raw_fd(), &mut report);
    if n == report.len() {
        let stage = match report[0] {
            0 => SpawnStage::Setup,
            1 => SpawnStage::PrivateRoot,
            3 => SpawnStage::WorkingDir,
            _ => SpawnStage::Exec,
        };
        let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        let mut status = 0;
        // SAFETY: reaps the child that just failed and exited.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        return Err(SpawnError {
            stage,
            error: io::Error::from_raw_os_error(errno),
        });
    }
    let pidfd = pidfd_open(pid).ok().and_then(|fd| {
        // SAFETY: the AsyncFd owns the pidfd, which stays open until it is dropped.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .ok()
    });
    Ok(StepChild {
        pid,
        pidfd,
        status: None,
        kill_on_drop,
    })
}

impl StepChild {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Waits for the process to exit and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let status = match &self.pidfd {
            Some(fd) => loop {
                let mut ready = fd.readable().await?;
                if let Some(s) = try_reap(self.pid)? {
                    break s;
                }
                ready.clear_ready();
            },
            // No pidfd (an old kernel): a blocking wait on a thread of its own.
            None => {
                let pid = self.pid;
                tokio::task::spawn_blocking(move || blocking_reap(pid))
                    .await
                    .map_err(io::Error::other)??
            }
        };
        self.status = Some(status);
        Ok(status)
    }
}

impl Drop for StepChild {
    fn drop(&mut self) {
        if self.status.is_some() || !self.kill_on_drop {
            return;
        }
        let pid = self.pid;
        // SAFETY: the child is ours and not reaped, so the pid (and its group) is still ours.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
        // Reaped off the caller's thread, so no zombie is left behind.
        let _ = std::thread::Builder::new()
            .name("riposte-reap".into())
            .spawn(move || blocking_reap(pid));
    }
}

fn try_reap(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid status pointer.
    match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
        0 => Ok(None),
        p if p == pid => Ok(Some(ExitStatus::from_raw(status))),
        _ => Err(io::Error::last_os_error()),
    }
}

fn blocking_reap(pid: libc::pid_t) -> io::Result<ExitStatus> {
    loop {
        let mut status = 0;
        // SAFETY: as in `try_reap`.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(ExitStatus::from_raw(status));
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both are fresh fds that nothing else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pipe for a process's stdout: (read end for us, write end for it).
pub(crate) fn stdout_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    pipe()
}

fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns (pidfds are close-on-exec).
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn read_full(fd: RawFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reads into the unfilled rest of `buf`.
        let n = unsafe { libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got) };
        if n > 0 {
            got += n as usize;
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    got
}

/// The child, between clone and exec: system calls only, on `ChildArgs` prepared before.
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` the parent keeps alive while it waits for us.
    let args = unsafe { &*(arg as *const ChildArgs) };
    let fail = |stage: u8| -> libc::c_int {
        let errno = io::Error::last_os_error().raw_os_error().unwrap_or(0);
        let mut msg = [0u8; 8];
        msg[0] = stage;
        msg[4..].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: write and _exit are async-signal-safe.
        unsafe {
            libc::write(args.report, msg.as_ptr().cast(), msg.len());
            libc::_exit(127)
        }
    };
    // SAFETY: async-signal-safe calls only, on fds and strings the parent owns.
    unsafe {
        // Handlers are the parent's code: back to the defaults (SIGPIPE too, which Rust
        // ignores) before anything can be delivered here.
        for sig in 1..=libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut current: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut current) == 0
                && (current.sa_sigaction != libc::SIG_DFL || sig == libc::SIGPIPE)
                && (current.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        for (target, &fd) in args.fds.iter().enumerate() {
            let target = target as RawFd;
            if fd == target {
                // dup2 onto itself keeps close-on-exec: clear it instead.
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return fail(0);
                }
            } else if libc::dup2(fd, target) < 0 {
                return fail(0);
            }
        }
        // Its own process group, so cancellation reaches everything the step started.
        if libc::setpgid(0, 0) != 0 {
            return fail(0);
        }
        match args.mounts {
            Some(plan) => {
                if plan.apply_in_child().is_err() {
                    return fail(1);
                }
            }
            None => {
                if let Some(cwd) = args.cwd
                    && libc::chdir(cwd.as_ptr()) != 0
                {
                    return fail(3);
                }
            }
        }
        let empty: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // As `execvp`: the first candidate that exists; a permission error is reported
        // only if no later candidate runs.
        let mut denied = false;
        for &path in &args.candidates {
            libc::execve(path, args.argv.as_ptr(), args.envp.as_ptr());
            let errno = *libc::__errno_location();
            if errno == libc::EACCES {
                denied = true;
            } else if errno != libc::ENOENT && errno != libc::ENOTDIR {
                return fail(2);
            }
        }
        if denied {
            *libc::__errno_location() = libc::EACCES;
        }
        fail(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn c(s: &str) -> CString {
        CString::new(s).expect("no NUL")
    }

    /// Runs `argv` (candidates as given) and returns its stdout and exit status.
    async fn run(
        candidates: &[&str],
        argv: &[&str],
        env: &[&str],
    ) -> Result<(String, ExitStatus), SpawnError> {
        let (read, write) = stdout_pipe().expect("pipe");
        let null = |_| OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"));
        let req = SpawnRequest {
            candidates: candidates.iter().map(|s| c(s)).collect(),
            argv: argv.iter().map(|s| c(s)).collect(),
            env: env.iter().map(|s| c(s)).collect(),
            stdin: null(()),
            stdout: write,
            stderr: null(()),
            cwd: Some(c("/")),
            mounts: None,
        };
        let mut child = spawn(&req, true)?;
        drop(req);
        let mut out = String::new();
        tokio::net::unix::pipe::Receiver::from_owned_fd(read)
            .expect("receiver")
            .read_to_string(&mut out)
            .await
            .expect("read");
        let status = child.wait().await.expect("wait");
        Ok((out, status))
    }

    #[tokio::test]
    async fn a_process_gets_its_argv_env_and_streams_and_its_exit_status_is_seen() {
        let (out, status) = run(
            &["/nonexistent/sh", "/bin/sh"],
            &["sh", "-c", "echo \"$0 $X $(pwd)\"; exit 3"],
            &["X=y z"],
        )
        .await
        .expect("spawn");
        assert_eq!(out, "sh y z /\n");
        assert_eq!(status.code(), Some(3));
    }

    #[tokio::test]
    async fn a_missing_program_is_an_exec_error_and_nothing_runs() {
        let e = run(&["/nonexistent/a", "/nonexistent/b"], &["a"], &[])
            .await
            .expect_err("missing program");
        assert_eq!(e.stage, SpawnStage::Exec);
        assert_eq!(e.error.kind(), io::ErrorKind::NotFound);
    }

    #[tokio::test]
    async fn the_child_starts_with_no_blocked_or_ignored_signals_from_us() {
        // The test harness (Rust) ignores SIGPIPE, and spawn blocks every signal around the
        // clone: neither may leak into the step.
        let (out, _) = run(
            &["/bin/sh"],
            &["sh", "-c", "grep -E '^Sig(Blk|Ign)' /proc/self/status"],
            &[],
        )
        .await
        .expect("spawn");
        for line in out.lines() {
            let mask = u64::from_str_radix(line.split_whitespace().nth(1).expect("mask"), 16)
                .expect("hex");
            assert_eq!(mask & (1 << (libc::SIGPIPE - 1)), 0, "{line}");
            if line.starts_with("SigBlk") {
                assert_eq!(mask, 0, "{line}");
            }
        }
    }

    #[tokio::test]
    async fn dropping_an_unreaped_child_kills_its_process_group() {
        let null = || OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"));
        let req = SpawnRequest {
            candidates: vec![c("/bin/sh")],
            argv: vec![c("sh"), c("-c"), c("sleep 30 & sleep 30")],
            env: Vec::new(),
            stdin: null(),
            stdout: null(),
            stderr: null(),
            cwd: None,
            mounts: None,
        };
        let child = spawn(&req, true).expect("spawn");
        let pgid = child.id() as libc::pid_t;
        drop(child);
        // Every member of the group is gone shortly (killed, then reaped off-thread).
        for _ in 0..500 {
            // SAFETY: signal 0 only checks whether the group has members.
            if unsafe { libc::kill(-pgid, 0) } != 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("process group {pgid} still alive 5 s after its handle was dropped");
    }
}
