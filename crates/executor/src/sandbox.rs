//! A private filesystem view per node: a mount namespace whose root is a per-node directory
//! with the host's system directories bind-mounted read-only, and `/tmp` (plus the top-level
//! directories of output paths and the working directory) private and writable.
//!
//! Writes a step makes outside the system directories land in the node's own directory, where
//! the executor reads output parameters after the process exits. Where the OS does not permit
//! mount namespaces (not root, seccomp), [`Sandbox::probe`] says why and nodes run unisolated.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Top-level host directories that are never made private, even if an output path is inside.
const SYSTEM_DIRS: &[&str] = &[
    "usr", "bin", "sbin", "lib", "lib64", "lib32", "etc", "dev", "proc", "sys", "run", "var",
    "opt", "root", "home", "boot", "srv", "mnt", "media",
];
/// Mounted read-write: device nodes and kernel interfaces.
const WRITABLE_BINDS: &[&str] = &["dev", "proc", "sys"];

/// Whether nodes get a private root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Isolation {
    PrivateRoot,
    /// Unavailable; the reason is shown to the user once.
    None(String),
}

/// Paths prepared in the parent, before `fork`, so the child does not allocate.
pub(crate) struct MountPlan {
    pub root: PathBuf,
    binds: Vec<(CString, CString, bool)>,
    root_c: CString,
    workdir_c: CString,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

pub struct Sandbox;

impl Sandbox {
    /// Checks once whether mount namespaces work here.
    pub fn probe() -> Isolation {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Isolation::None(
                "not running as root, so no mount namespace; steps share the host /tmp".into(),
            );
        }
        use std::os::unix::process::CommandExt;
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg("true")
            .env_clear()
            .stdin(std::process::Stdio::null());
        // SAFETY: unshare is async-signal-safe; the closure allocates nothing.
        unsafe {
            cmd.pre_exec(|| {
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        match cmd.status() {
            Ok(s) if s.success() => Isolation::PrivateRoot,
            Ok(s) => Isolation::None(format!(
                "mount namespace probe exited with {s}; steps share the host /tmp"
            )),
            Err(e) => Isolation::None(format!(
                "mount namespaces are not permitted here ({e}); steps share the host /tmp"
            )),
        }
    }

    /// Lays out `node_dir/root` for a node and returns the plan its child applies.
    /// `private` are absolute paths whose top-level directory must be private to the node.
    pub(crate) fn prepare(
        node_dir: &Path,
        private: &[&str],
        workdir: &str,
        extra_files: &[(PathBuf, &str)],
    ) -> io::Result<MountPlan> {
        let root = node_dir.join("root");
        std::fs::create_dir_all(root.join("tmp"))?;
        set_mode(&root.join("tmp"), 0o1777)?;
        let mut private_top: Vec<String> = vec!["tmp".into()];
        for p in private.iter().copied().chain(std::iter::once(workdir)) {
            if let Some(top) = Path::new(p)
                .components()
                .nth(1)
                .and_then(|c| c.as_os_str().to_str())
                && !SYSTEM_DIRS.contains(&top)
                && !private_top.iter().any(|t| t == top)
            {
                private_top.push(top.to_string());
            }
        }
        for p in private.iter().copied().chain(std::iter::once(workdir)) {
            let rel = p.trim_start_matches('/');
            let target = root.join(rel);
            let top_private = Path::new(p)
                .components()
                .nth(1)
                .and_then(|c| c.as_os_str().to_str())
                .is_some_and(|t| private_top.iter().any(|x| x == t));
            if !top_private {
                continue;
            }
            // Output paths name files; the working directory names a directory.
            let dir = if p == workdir {
                target.as_path()
            } else {
                target.parent().unwrap_or(&root)
            };
            std::fs::create_dir_all(dir)?;
        }
        let mut binds = Vec::new();
        for entry in std::fs::read_dir("/")? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name_str) = name.to_str() else {
                continue;
            };
            if private_top.iter().any(|t| t == name_str) {
                continue;
            }
            let host = Path::new("/").join(&name);
            let inside = root.join(&name);
            let meta = std::fs::symlink_metadata(&host)?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&host)?;
                if std::fs::symlink_metadata(&inside).is_err() {
                    std::os::unix::fs::symlink(target, &inside)?;
                }
            } else if meta.is_dir() {
                std::fs::create_dir_all(&inside)?;
                let writable = WRITABLE_BINDS.contains(&name_str);
                binds.push((cstr(&host)?, cstr(&inside)?, !writable));
            }
        }
        for (host_file, inside_path) in extra_files {
            let inside = root.join(inside_path.trim_start_matches('/'));
            if let Some(parent) = inside.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&inside, b"")?;
            binds.push((cstr(host_file)?, cstr(&inside)?, true));
        }
        Ok(MountPlan {
            root_c: cstr(&root)?,
            workdir_c: CString::new(workdir).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "workingDir contains a NUL byte",
                )
            })?,
            root,
            binds,
        })
    }
}

fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

impl MountPlan {
    /// Runs in the forked child before `exec`: only async-signal-safe syscalls, no allocation.
    pub(crate) fn apply_in_child(&self) -> io::Result<()> {
        let err = || io::Error::last_os_error();
        // SAFETY: every pointer is a valid NUL-terminated string owned by `self`, which outlives
        // the call; these syscalls are async-signal-safe.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(err());
            }
            let slash = c"/".as_ptr();
            if libc::mount(
                std::ptr::null(),
                slash,
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) != 0
            {
                return Err(err());
            }
            for (src, dst, read_only) in &self.binds {
                if libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(err());
                }
                if *read_only {
                    let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
                    // Read-only is best effort: some bind sources refuse the remount.
                    libc::mount(
                        std::ptr::null(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        flags,
                        std::ptr::null(),
                    );
                }
            }
            if libc::chroot(self.root_c.as_ptr()) != 0 {
                return Err(err());
            }
            if libc::chdir(self.workdir_c.as_ptr()) != 0 {
                return Err(err());
            }
        }
        Ok(())
    }
}
