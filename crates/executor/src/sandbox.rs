//! A private filesystem view per node: a mount namespace whose root is a shared skeleton
//! directory onto which the host's system directories are bind-mounted read-only, and the
//! node's own directories (`/tmp`, the top-level directories of its output paths and working
//! directory, `/argo` for scripts) are bind-mounted read-write.
//!
//! The skeleton (empty mount points and the host's top-level symlinks) is made once per run;
//! every mount happens inside the node's own namespace, so nodes never see each other's
//! files, and the host sees none of the mounts. Writes a step makes outside the read-only
//! system directories land in the node's directory, where the executor reads output
//! parameters after the process exits. Where mount namespaces are not permitted (not root,
//! seccomp), [`Sandbox::probe`] says why and nodes run unisolated.

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

/// The shared root directory nodes chroot into: mount points and symlinks only.
#[derive(Debug)]
pub(crate) struct Skeleton {
    root: PathBuf,
    /// Host top-level directories to bind into each node's view.
    host_dirs: Vec<String>,
}

/// Paths prepared in the parent, before `fork`, so the child does not allocate.
pub(crate) struct MountPlan {
    binds: Vec<(CString, CString, bool)>,
    root_c: CString,
    workdir_c: CString,
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// The top-level directory of an absolute path (`/work/out.txt` → `work`).
fn top_level(p: &str) -> Option<&str> {
    Path::new(p)
        .components()
        .nth(1)
        .and_then(|c| c.as_os_str().to_str())
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

    /// Builds the skeleton under `dir`: a mount point for every host top-level directory,
    /// the host's top-level symlinks, and mount points for `shim_files`.
    pub(crate) fn skeleton(dir: &Path, shim_files: &[&str]) -> io::Result<Skeleton> {
        let root = dir.join("root");
        std::fs::create_dir_all(&root)?;
        let mut host_dirs = Vec::new();
        for entry in std::fs::read_dir("/")? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let host = Path::new("/").join(name);
            let inside = root.join(name);
            let meta = std::fs::symlink_metadata(&host)?;
            if meta.file_type().is_symlink() {
                if std::fs::symlink_metadata(&inside).is_err() {
                    std::os::unix::fs::symlink(std::fs::read_link(&host)?, &inside)?;
                }
            } else if meta.is_dir() {
                std::fs::create_dir_all(&inside)?;
                if name != "tmp" {
                    host_dirs.push(name.to_string());
                }
            }
        }
        std::fs::create_dir_all(root.join("tmp"))?;
        for f in shim_files {
            let inside = root.join(f.trim_start_matches('/'));
            if let Some(parent) = inside.parent() {
                std::fs::create_dir_all(parent)?;
            }
            if !inside.exists() {
                std::fs::write(&inside, b"")?;
            }
        }
        host_dirs.sort();
        Ok(Skeleton { root, host_dirs })
    }

    /// Lays out a node's private directories under `node_dir` and returns the plan its child
    /// applies. `private` are absolute paths (output files) whose top-level directory must be
    /// private; `shim_files` are (host file, path inside) bind mounts.
    pub(crate) fn prepare(
        skeleton: &Skeleton,
        node_dir: &Path,
        private: &[&str],
        workdir: &str,
        shim_files: &[(PathBuf, &str)],
    ) -> io::Result<MountPlan> {
        let mut private_top: Vec<&str> = vec!["tmp"];
        // An output file directly under `/` (`/output`) is bound as a file of its own.
        let mut top_files: Vec<&str> = Vec::new();
        for p in private.iter().copied() {
            if Path::new(p).components().count() == 2
                && let Some(name) = top_level(p)
                && !SYSTEM_DIRS.contains(&name)
                && !top_files.contains(&name)
            {
                top_files.push(name);
            }
        }
        for name in &top_files {
            let mount_point = skeleton.root.join(name);
            if mount_point.is_dir() {
                return Err(io::Error::other(format!(
                    "output path /{name} is a file here but a directory for another step of this run"
                )));
            }
            if !mount_point.exists() {
                std::fs::write(&mount_point, b"")?;
            }
            std::fs::write(node_dir.join(name), b"")?;
        }
        for p in private.iter().copied().chain(std::iter::once(workdir)) {
            if let Some(top) = top_level(p)
                && !top_files.contains(&top)
                && !SYSTEM_DIRS.contains(&top)
                && !private_top.contains(&top)
            {
                private_top.push(top);
            }
        }
        for top in &private_top {
            if skeleton.root.join(top).is_file() {
                return Err(io::Error::other(format!(
                    "/{top} is a directory here but an output file for another step of this run"
                )));
            }
            std::fs::create_dir_all(node_dir.join(top))?;
            // A mount point in the shared skeleton for a directory the host does not have.
            std::fs::create_dir_all(skeleton.root.join(top))?;
        }
        set_mode(&node_dir.join("tmp"), 0o1777)?;
        for p in private.iter().copied().chain(std::iter::once(workdir)) {
            if !top_level(p).is_some_and(|t| private_top.contains(&t))
                || top_files.contains(&top_level(p).unwrap_or(""))
            {
                continue;
            }
            let target = node_dir.join(p.trim_start_matches('/'));
            // Output paths name files; the working directory names a directory.
            let dir = if p == workdir {
                target.as_path()
            } else {
                target.parent().unwrap_or(node_dir)
            };
            std::fs::create_dir_all(dir)?;
        }
        let mut binds = Vec::new();
        for d in &skeleton.host_dirs {
            if private_top.contains(&d.as_str()) || top_files.contains(&d.as_str()) {
                continue;
            }
            let writable = WRITABLE_BINDS.contains(&d.as_str());
            binds.push((
                cstr(&Path::new("/").join(d))?,
                cstr(&skeleton.root.join(d))?,
                !writable,
            ));
        }
        for top in &private_top {
            binds.push((
                cstr(&node_dir.join(top))?,
                cstr(&skeleton.root.join(top))?,
                false,
            ));
        }
        for (host_file, inside) in shim_files {
            binds.push((
                cstr(host_file)?,
                cstr(&skeleton.root.join(inside.trim_start_matches('/')))?,
                true,
            ));
        }
        Ok(MountPlan {
            root_c: cstr(&skeleton.root)?,
            workdir_c: CString::new(workdir).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "workingDir contains a NUL byte",
                )
            })?,
            binds,
        })
    }

    /// Where a path as the node sees it lives on the host, if it is in a private directory.
    pub(crate) fn host_path(node_dir: &Path, inside: &str) -> PathBuf {
        node_dir.join(inside.trim_start_matches('/'))
    }
}

fn set_mode(p: &Path, mode: u32) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
}

impl MountPlan {
    /// Runs in the forked child before `exec`: only async-signal-safe syscalls, no allocation.
    /// After a failed start: the mount sources and mount points that do not exist (now), to
    /// say which part of the private root was missing.
    pub(crate) fn missing_paths(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (src, dst, _) in &self.binds {
            for p in [src, dst] {
                let path = Path::new(std::ffi::OsStr::from_bytes(p.as_bytes()));
                if std::fs::symlink_metadata(path).is_err() {
                    out.push(path.display().to_string());
                }
            }
        }
        out
    }

    pub(crate) fn apply_in_child(&self) -> io::Result<()> {
        let err = || io::Error::last_os_error();
        // SAFETY: every pointer is a valid NUL-terminated string owned by `self`, which outlives
        // the call; these syscalls are async-signal-safe.
        unsafe {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(err());
            }
            let slash = c"/".as_ptr();
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            if libc::mount(
                std::ptr::null(),
                slash,
                std::ptr::null(),
                flags,
                std::ptr::null(),
            ) != 0
            {
                return Err(err());
            }
            for (src, dst, read_only) in &self.binds {
                let flags = libc::MS_BIND | libc::MS_REC;
                if libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    flags,
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
