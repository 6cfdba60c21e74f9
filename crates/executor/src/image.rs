//! The image table: how a container image maps to a program on this host.
//!
//! The host executor runs no containers; instead each image family maps to the host program
//! that behaves like the image's entrypoint. Unknown images are an error that says how to map
//! them, never a silent guess.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

/// How an image family runs on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostImage {
    /// A shell image (busybox, alpine, debian, ubuntu): `command`+`args` run as given; with
    /// neither, `sh`.
    Shell,
    /// `python:*`: `python`/`python3` in `command` is the host's python3.
    Python,
    /// `argoproj/argosay:*`: the entrypoint is Riposte's argosay shim.
    Argosay,
    /// A user mapping: the image's entrypoint is this host program.
    Entrypoint(String),
}

/// Maps image references to [`HostImage`]s. User mappings win over the built-in ones.
#[derive(Debug, Clone)]
pub struct ImageTable {
    user: BTreeMap<String, String>,
    python: Python,
}

/// The host's python3: given, or found on first use (starting python to ask it costs tens of
/// milliseconds under pyenv's shims, which a run without python steps should not pay).
#[derive(Debug, Clone)]
enum Python {
    At(PathBuf),
    Probed(Arc<OnceLock<PathBuf>>),
}

impl Python {
    fn path(&self) -> PathBuf {
        match self {
            Python::At(p) => p.clone(),
            Python::Probed(p) => p.get_or_init(probe_host_python).clone(),
        }
    }
}

/// The interpreter `python3` on `PATH` really is (`sys.executable`, past pyenv's shims, so
/// that it also runs inside a private root), else `/usr/bin/python3`.
fn probe_host_python() -> PathBuf {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output();
    match probe {
        Ok(o) if o.status.success() && !o.stdout.trim_ascii().is_empty() => {
            PathBuf::from(String::from_utf8_lossy(o.stdout.trim_ascii()).as_ref())
        }
        _ => PathBuf::from("/usr/bin/python3"),
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error(
    "image {image:?} has no host mapping: the host executor runs busybox, alpine, debian, ubuntu, python and argoproj/argosay images; map this one to a host program with --image {repo}=PROGRAM (for example --image {repo}=/usr/bin/env), or run with the Kubernetes executor"
)]
pub struct UnknownImage {
    pub image: String,
    pub repo: String,
}

/// `docker.io/library/alpine:3.23@sha256:..` -> `alpine`.
pub fn repository(image: &str) -> String {
    let no_digest = image.split('@').next().unwrap_or(image);
    // A `:` after the last `/` is a tag; before it, a registry port.
    let last_slash = no_digest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let repo = match no_digest[last_slash..].find(':') {
        Some(i) => &no_digest[..last_slash + i],
        None => no_digest,
    };
    let repo = repo.strip_prefix("docker.io/").unwrap_or(repo);
    let repo = repo.strip_prefix("library/").unwrap_or(repo);
    repo.strip_prefix("quay.io/").unwrap_or(repo).to_string()
}

impl ImageTable {
    /// A table whose python images run `python`.
    pub fn new(python: PathBuf, user: BTreeMap<String, String>) -> ImageTable {
        ImageTable {
            user,
            python: Python::At(python),
        }
    }

    /// A table whose python images run the host's python3, found when a step first needs it.
    pub fn with_host_python(user: BTreeMap<String, String>) -> ImageTable {
        ImageTable {
            user,
            python: Python::Probed(Arc::default()),
        }
    }

    pub fn resolve(&self, image: &str) -> Result<HostImage, UnknownImage> {
        let repo = repository(image);
        if let Some(p) = self.user.get(image).or_else(|| self.user.get(&repo)) {
            return Ok(HostImage::Entrypoint(p.clone()));
        }
        match repo.as_str() {
            "busybox" | "alpine" | "debian" | "ubuntu" | "bash" => Ok(HostImage::Shell),
            "python" => Ok(HostImage::Python),
            "argoproj/argosay" => Ok(HostImage::Argosay),
            _ => Err(UnknownImage {
                image: image.to_string(),
                repo,
            }),
        }
    }

    /// The argv for a container: `command` + `args` with the image's entrypoint semantics.
    /// `argosay` is the path of the argosay shim as seen by the process.
    pub fn argv(
        &self,
        image: &str,
        command: &[String],
        args: &[String],
        argosay: &str,
    ) -> Result<Vec<String>, UnknownImage> {
        let kind = self.resolve(image)?;
        let python = || self.python.path().display().to_string();
        let mut argv: Vec<String> = Vec::new();
        match (&kind, command.is_empty()) {
            (HostImage::Argosay, true) => argv.push(argosay.to_string()),
            (HostImage::Python, true) => argv.push(python()),
            (HostImage::Entrypoint(p), true) => argv.push(p.clone()),
            (HostImage::Shell, true) if args.is_empty() => argv.push("sh".into()),
            (HostImage::Shell, true) => {}
            (_, false) => argv.extend(command.iter().cloned()),
        }
        argv.extend(args.iter().cloned());
        if let Some(first) = argv.first_mut() {
            let is_python =
                matches!(first.as_str(), "python" | "python3") || first.starts_with("python3.");
            if is_python && matches!(kind, HostImage::Python | HostImage::Shell) {
                *first = python();
            } else if kind == HostImage::Argosay && (first == "argosay" || first == "/argosay") {
                *first = argosay.to_string();
            }
        }
        Ok(argv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories() {
        for (image, repo) in [
            ("alpine:3.23", "alpine"),
            ("docker.io/library/busybox", "busybox"),
            ("argoproj/argosay:v2", "argoproj/argosay"),
            ("quay.io/argoproj/argosay:v2@sha256:abc", "argoproj/argosay"),
            ("localhost:5000/tool:1", "localhost:5000/tool"),
        ] {
            assert_eq!(repository(image), repo, "{image}");
        }
    }

    #[test]
    fn argv_table() {
        let t = ImageTable::new(
            "/usr/bin/python3".into(),
            [("golang".to_string(), "/usr/bin/env".to_string())].into(),
        );
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            t.argv("busybox", &[], &s(&["echo", "hi"]), "/a").unwrap(),
            s(&["echo", "hi"])
        );
        assert_eq!(t.argv("alpine:3.23", &[], &[], "/a").unwrap(), s(&["sh"]));
        assert_eq!(
            t.argv("argoproj/argosay:v2", &[], &s(&["echo", "x"]), "/a")
                .unwrap(),
            s(&["/a", "echo", "x"])
        );
        assert_eq!(
            t.argv("argoproj/argosay:v2", &s(&["sh", "-c"]), &s(&["ls"]), "/a")
                .unwrap(),
            s(&["sh", "-c", "ls"])
        );
        assert_eq!(
            t.argv("python:alpine3.23", &s(&["python"]), &[], "/a")
                .unwrap(),
            s(&["/usr/bin/python3"])
        );
        assert_eq!(
            t.argv("golang:1.18", &[], &s(&["go"]), "/a").unwrap(),
            s(&["/usr/bin/env", "go"])
        );
        let e = t.argv("node:9.1-alpine", &[], &[], "/a").unwrap_err();
        assert!(e.to_string().contains("--image node=PROGRAM"), "{e}");
    }
}
