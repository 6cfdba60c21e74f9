//! [`HostKubelet`]: plays the kubelet by running each new pod's `main` container command as a
//! host process. Images are ignored (the host's programs run), init containers are skipped
//! (the Riposte wrapper the init container would install is given as a host path), and the
//! termination message is the file the container wrote, as the real kubelet reads
//! `terminationMessagePath`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::FakeApiServer;

pub struct HostKubelet {
    pub fake: FakeApiServer,
    /// Replaces the in-pod wrapper path (`/var/run/riposte/riposte`) in commands.
    pub wrapper: PathBuf,
    /// Where pods' termination logs and working directories go.
    pub work_dir: PathBuf,
    /// Extra environment for every container (e.g. a callback URL reachable from the host).
    pub extra_env: Vec<(String, String)>,
    /// Keep the file the container wrote as the termination message. `false` plays a pod
    /// whose message is lost, so results must arrive another way (the callback).
    pub termination_messages: bool,
}

const IN_POD_WRAPPER: &str = "/var/run/riposte/riposte";

impl HostKubelet {
    /// Runs forever (until the runtime ends): every pod that appears `Pending` is started.
    pub fn spawn(self) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut started: BTreeSet<(String, String)> = BTreeSet::new();
            let mut changed = self.fake.changed.subscribe();
            loop {
                for pod in self.fake.list("pods", "") {
                    let ns = pod["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    let name = pod["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if pod["status"]["phase"] != "Pending"
                        || !started.insert((ns.clone(), name.clone()))
                    {
                        continue;
                    }
                    let fake = self.fake.clone();
                    let wrapper = self.wrapper.clone();
                    let work = self.work_dir.join(&name);
                    let extra = self.extra_env.clone();
                    let keep = self.termination_messages;
                    tokio::spawn(async move {
                        run_pod(fake, pod, ns, name, wrapper, work, extra, keep).await;
                    });
                }
                if changed.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_pod(
    fake: FakeApiServer,
    pod: Value,
    ns: String,
    name: String,
    wrapper: PathBuf,
    work: PathBuf,
    extra_env: Vec<(String, String)>,
    keep_message: bool,
) {
    let containers = pod["spec"]["containers"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let Some(main) = containers
        .iter()
        .find(|c| c["name"] == "main")
        .or(containers.first())
        .cloned()
    else {
        let _ = fake.finish_pod(&ns, &name, 128, "no containers");
        return;
    };
    let mut argv: Vec<String> = main["command"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(main["args"].as_array().into_iter().flatten())
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    for a in argv.iter_mut() {
        if a == IN_POD_WRAPPER {
            *a = wrapper.display().to_string();
        }
    }
    if std::fs::create_dir_all(&work).is_err() || argv.is_empty() {
        let _ = fake.finish_pod(&ns, &name, 128, "cannot start the container");
        return;
    }
    let term_log = work.join("termination-log");
    // Secret volumes: the files the kubelet would mount, written under the pod's directory;
    // environment values that point into a mount point are pointed there instead.
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    for vol in pod["spec"]["volumes"].as_array().into_iter().flatten() {
        let Some(secret_name) = vol["secret"]["secretName"].as_str() else {
            continue;
        };
        let Some(secret) = fake
            .wait_for("secrets", &ns, std::time::Duration::from_secs(10), |s| {
                s["metadata"]["name"] == secret_name
            })
            .await
        else {
            let _ = fake.finish_pod(&ns, &name, 128, &format!("secret {secret_name} not found"));
            return;
        };
        let dir = work
            .join("volumes")
            .join(vol["name"].as_str().unwrap_or("secret"));
        let _ = std::fs::create_dir_all(&dir);
        for (k, v) in secret["data"].as_object().into_iter().flatten() {
            let _ = std::fs::write(
                dir.join(k),
                crate::base64_decode(v.as_str().unwrap_or_default()),
            );
        }
        for m in main["volumeMounts"].as_array().into_iter().flatten() {
            if m["name"] == vol["name"]
                && let Some(path) = m["mountPath"].as_str()
            {
                mounts.push((path.to_string(), dir.clone()));
            }
        }
    }
    let host_path = |v: &str| -> String {
        for (mount, dir) in &mounts {
            if let Some(rest) = v.strip_prefix(mount.as_str()) {
                return format!("{}{rest}", dir.display());
            }
        }
        v.to_string()
    };
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&work)
        .env("RIPOSTE_TERMINATION_LOG", &term_log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, standing in for the container: ending the pod ends all of
        // it, whatever the step started.
        .process_group(0)
        .kill_on_drop(true);
    for e in main["env"].as_array().into_iter().flatten() {
        let Some(k) = e["name"].as_str() else {
            continue;
        };
        if let Some(v) = e["value"].as_str() {
            cmd.env(k, host_path(v));
            continue;
        }
        // valueFrom.secretKeyRef: the Secret's key, as the kubelet resolves it; a missing
        // Secret or key fails the container unless `optional: true`.
        let r = &e["valueFrom"]["secretKeyRef"];
        if let (Some(secret), Some(key)) = (r["name"].as_str(), r["key"].as_str()) {
            let value = fake
                .get("secrets", &ns, secret)
                .and_then(|s| s["data"][key].as_str().map(crate::base64_decode));
            match value {
                Some(v) => {
                    cmd.env(k, String::from_utf8_lossy(&v).into_owned());
                }
                None if r["optional"] == true => {}
                None => {
                    let _ = fake.finish_pod(
                        &ns,
                        &name,
                        128,
                        &format!(
                            "CreateContainerConfigError: secret {secret:?} key {key:?} not found"
                        ),
                    );
                    return;
                }
            }
        }
    }
    for (k, v) in &extra_env {
        cmd.env(k, v);
    }
    let _ = fake.start_pod(&ns, &name);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = fake.finish_pod(
                &ns,
                &name,
                128,
                &format!("failed to start {}: {e}", argv[0]),
            );
            return;
        }
    };
    let _group = ProcessGroup(child.id().map(|p| p as i32).unwrap_or(0));
    let mut pumps = Vec::new();
    if let Some(out) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(
            fake.clone(),
            ns.clone(),
            name.clone(),
            BufReader::new(out),
        )));
    }
    if let Some(err) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(
            fake.clone(),
            ns.clone(),
            name.clone(),
            BufReader::new(err),
        )));
    }
    // A deleted pod (its Job deleted with propagation) is killed, as the kubelet would.
    let status = loop {
        tokio::select! {
            s = child.wait() => break s.ok().and_then(|s| s.code()).unwrap_or(137),
            _ = tokio::time::sleep(std::time::Duration::from_millis(100)) => {
                if fake.get("pods", &ns, &name).is_none() {
                    // As the kubelet: SIGTERM to the container's first process, then, after
                    // a (short) grace period, SIGKILL to everything in it (`_group`).
                    if let Some(pid) = child.id() {
                        // SAFETY: signals a process this task started.
                        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                    }
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), child.wait()).await;
                    return;
                }
            }
        }
    };
    for p in pumps {
        let _ = p.await;
    }
    let message = if keep_message {
        std::fs::read_to_string(&term_log).unwrap_or_default()
    } else {
        String::new()
    };
    let _ = fake.finish_pod(&ns, &name, status, &message);
}

/// Kills a pod's whole process group when its task ends (pod deleted, test over).
struct ProcessGroup(i32);

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.0 > 0 {
            // SAFETY: signals the process group this kubelet created for one pod.
            unsafe { libc::kill(-self.0, libc::SIGKILL) };
        }
    }
}

async fn pump<R: tokio::io::AsyncRead + Unpin>(
    fake: FakeApiServer,
    ns: String,
    pod: String,
    r: BufReader<R>,
) {
    let mut lines = r.lines();
    while let Ok(Some(l)) = lines.next_line().await {
        fake.append_log(&ns, &pod, &format!("{l}\n"));
    }
}
