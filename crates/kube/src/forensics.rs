//! Evidence that needs more than the API's objects and logs:
//!
//! - [`capture`]: a network capture of a pod, taken by an ephemeral debug container
//!   (`kubectl debug`'s mechanism: the pod's `ephemeralcontainers` subresource) running
//!   `tcpdump` in the pod's network namespace; the pcap comes back base64-encoded on the
//!   container's log and is stored, with its SHA-256, in a Secret of the forensic namespace.
//! - [`checkpoint`]: a checkpoint of a running container through the kubelet's checkpoint
//!   API (`POST /api/v1/nodes/NODE/proxy/checkpoint/NS/POD/CONTAINER`, the
//!   `ContainerCheckpoint` feature): the kubelet writes a tar archive of the container's
//!   state on its node and answers with its path; the container keeps running.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams, Patch, PatchParams};
use serde_json::{Value, json};

use crate::evidence::{Saved, prefixed_name, save, sha256_hex};
use crate::{api_status, describe, with_retries};

/// A network capture to take.
pub struct CaptureRequest {
    pub namespace: String,
    pub pod: String,
    /// The debug image; it needs `tcpdump`, `timeout`, `head` and `base64`.
    pub image: String,
    /// How long tcpdump listens.
    pub seconds: u32,
    /// A tcpdump filter expression (`port 443`), empty for everything.
    pub filter: String,
    /// The capture is cut at this many bytes (a Secret holds at most 1 MiB).
    pub max_bytes: usize,
    pub to_namespace: String,
    /// Seconds since the epoch (a caller's clock), part of the names.
    pub now: i64,
    /// Only say what would be added; change nothing.
    pub dry_run: bool,
}

/// Room for the pcap in one Secret, less its index.
const CAPTURE_LIMIT: usize = 700 * 1024;

/// The ephemeral container that takes the capture. A capture needs CAP_NET_RAW; the filter
/// is passed as tcpdump's arguments, never through a shell.
pub fn capture_container(req: &CaptureRequest, name: &str) -> Value {
    let max = req.max_bytes.min(CAPTURE_LIMIT);
    let mut tcpdump = vec![
        "tcpdump".to_string(),
        "-i".into(),
        "any".into(),
        "-U".into(),
        "-w".into(),
        "/tmp/capture.pcap".into(),
    ];
    tcpdump.extend(req.filter.split_whitespace().map(str::to_string));
    json!({
        "name": name,
        "image": req.image,
        // "$@" is the tcpdump command line: the filter is data, not shell.
        "command": ["sh", "-c",
            format!("timeout -s INT {} \"$@\" >/dev/null 2>&1; head -c {max} /tmp/capture.pcap | base64", req.seconds.max(1)),
            "capture"],
        "args": tcpdump,
        "securityContext": {"capabilities": {"add": ["NET_RAW"]}},
        "terminationMessagePolicy": "File",
    })
}

/// Adds the capture container to the pod, waits for it to end, and stores what it captured.
pub async fn capture(client: &kube::Client, req: &CaptureRequest) -> Result<Value, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &req.namespace);
    let pod = with_retries(|| pods.get(&req.pod))
        .await
        .map_err(|e| format!("pod {}/{}: {}", req.namespace, req.pod, describe(&e)))?;
    let name = format!("riposte-capture-{}", req.now);
    let container = capture_container(req, &name);
    if req.dry_run {
        return Ok(
            json!({"dryRun": true, "pod": format!("{}/{}", req.namespace, req.pod),
                         "wouldAdd": container, "to": req.to_namespace}),
        );
    }
    let mut existing: Vec<Value> = pod
        .spec
        .as_ref()
        .map(|s| {
            s.ephemeral_containers
                .iter()
                .flatten()
                .filter_map(|c| serde_json::to_value(c).ok())
                .collect()
        })
        .unwrap_or_default();
    existing.push(container);
    let patch = Patch::Merge(json!({"spec": {"ephemeralContainers": existing}}));
    let pp = PatchParams::default();
    with_retries(|| pods.patch_subresource("ephemeralcontainers", &req.pod, &pp, &patch))
    .await
    .map_err(|e| {
        format!(
            "adding the capture container to {}/{}: {} (ephemeral containers need Kubernetes 1.25+ and RBAC for pods/ephemeralcontainers)",
            req.namespace,
            req.pod,
            describe(&e)
        )
    })?;

    // Its end: the capture time, plus time to pull the image.
    let deadline = Instant::now() + Duration::from_secs(u64::from(req.seconds) + 300);
    let exit = loop {
        let p = with_retries(|| pods.get(&req.pod))
            .await
            .map_err(|e| format!("pod {}/{}: {}", req.namespace, req.pod, describe(&e)))?;
        let status = p
            .status
            .as_ref()
            .and_then(|s| s.ephemeral_container_statuses.as_ref())
            .and_then(|ss| ss.iter().find(|s| s.name == name).cloned());
        if let Some(s) = &status {
            if let Some(t) = s.state.as_ref().and_then(|st| st.terminated.as_ref()) {
                break t.exit_code;
            }
            if let Some(w) = s.state.as_ref().and_then(|st| st.waiting.as_ref())
                && matches!(
                    w.reason.as_deref(),
                    Some("ErrImagePull" | "ImagePullBackOff" | "InvalidImageName")
                )
            {
                return Err(format!(
                    "the capture image {} cannot be pulled: {}",
                    req.image,
                    w.message.clone().unwrap_or_default()
                ));
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the capture container {name} in {}/{} did not finish in time",
                req.namespace, req.pod
            ));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let lp = LogParams {
        container: Some(name.clone()),
        ..LogParams::default()
    };
    let log = with_retries(|| pods.logs(&req.pod, &lp))
        .await
        .map_err(|e| format!("reading the capture from {name}: {}", describe(&e)))?;
    use base64::Engine as _;
    let compact: String = log.split_whitespace().collect();
    let pcap = base64::engine::general_purpose::STANDARD
        .decode(compact.as_bytes())
        .map_err(|e| {
            format!(
                "the capture container's output is not base64 ({e}); exit code {exit}: does the image {} have tcpdump and base64, and may it use CAP_NET_RAW?",
                req.image
            )
        })?;
    if pcap.is_empty() {
        return Err(format!(
            "the capture is empty (exit code {exit}): tcpdump could not run in {} (missing, or CAP_NET_RAW refused by the pod's security policy)",
            req.image
        ));
    }
    let secret = prefixed_name("capture", &req.pod, req.now);
    let report = json!({
        "secret": secret,
        "namespace": req.to_namespace,
        "source": format!("{}/{}", req.namespace, req.pod),
        "container": name,
        "seconds": req.seconds,
        "filter": req.filter,
        "items": [{"item": "capture.pcap", "bytes": pcap.len(), "sha256": sha256_hex(&pcap)}],
        "truncated": pcap.len() >= req.max_bytes.min(CAPTURE_LIMIT),
    });
    let mut items = BTreeMap::new();
    items.insert("capture.pcap".to_string(), pcap);
    save(
        client,
        &Saved {
            to_namespace: &req.to_namespace,
            name: &secret,
            namespace: &req.namespace,
            pod: &req.pod,
            pod_uid: pod.metadata.uid.as_deref().unwrap_or_default(),
            dry_run: false,
        },
        items,
        &report,
    )
    .await?;
    Ok(report)
}

/// Asks the kubelet of the pod's node to checkpoint `container` (default: the pod's first
/// container). Returns the archive path(s) on the node.
pub async fn checkpoint(
    client: &kube::Client,
    namespace: &str,
    pod_name: &str,
    container: Option<&str>,
    timeout_seconds: u32,
) -> Result<Value, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = with_retries(|| pods.get(pod_name))
        .await
        .map_err(|e| format!("pod {namespace}/{pod_name}: {}", describe(&e)))?;
    let spec = pod.spec.unwrap_or_default();
    let node = spec.node_name.clone().ok_or_else(|| {
        format!(
            "pod {namespace}/{pod_name} is not scheduled on a node; there is nothing to checkpoint"
        )
    })?;
    let container = match container.filter(|c| !c.is_empty()) {
        Some(c) => {
            if !spec.containers.iter().any(|k| k.name == c) {
                return Err(format!(
                    "pod {namespace}/{pod_name} has no container {c:?} (it has {})",
                    spec.containers
                        .iter()
                        .map(|k| k.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            c.to_string()
        }
        None => spec
            .containers
            .first()
            .map(|c| c.name.clone())
            .ok_or_else(|| format!("pod {namespace}/{pod_name} has no containers"))?,
    };
    let path = format!(
        "/api/v1/nodes/{node}/proxy/checkpoint/{namespace}/{pod_name}/{container}?timeout={timeout_seconds}"
    );
    let request = http::Request::post(&path)
        .body(Vec::new())
        .map_err(|e| format!("building the checkpoint request: {e}"))?;
    let text = client.request_text(request).await.map_err(|e| {
        let why = describe(&e);
        match api_status(&e) {
            Some((404, _)) => format!(
                "the kubelet on {node} does not serve checkpoints ({why}): it needs the ContainerCheckpoint feature gate (beta and on by default since Kubernetes 1.30)"
            ),
            Some((403, _)) => format!(
                "checkpointing needs RBAC for nodes/proxy (create), which this step's service account lacks: {why}"
            ),
            Some((500, _)) => format!(
                "the container runtime on {node} could not checkpoint {namespace}/{pod_name}/{container} ({why}): it needs CRI-O 1.25+ or containerd 2.0+ with CRIU installed"
            ),
            _ => format!("checkpointing {namespace}/{pod_name}/{container} on {node}: {why}"),
        }
    })?;
    let answer: Value = serde_json::from_str(&text)
        .map_err(|e| format!("the kubelet's answer is not JSON ({e}): {text}"))?;
    let archives = answer["items"].clone();
    Ok(json!({
        "pod": format!("{namespace}/{pod_name}"),
        "container": container,
        "node": node,
        "archives": archives,
        "note": "the archive stays on the node (under /var/lib/kubelet/checkpoints); copy it off before the node is recycled",
    }))
}

/// The most of each stream kept from a command (its start).
const COMMAND_OUTPUT_LIMIT: usize = 256 * 1024;

/// Runs `command` in `container` of a pod (pods/exec, as `kubectl exec`: Falco Talon's
/// `exec`, and its `script` as `sh -c SCRIPT`) and reports its exit code, stdout and stderr
/// (each cut at 256 KiB). Waits at most `timeout`.
pub async fn run_in_container(
    client: &kube::Client,
    namespace: &str,
    pod_name: &str,
    container: Option<&str>,
    command: &[String],
    timeout: Duration,
) -> Result<Value, String> {
    use kube::api::AttachParams;
    use tokio::io::AsyncReadExt;
    if command.is_empty() {
        return Err("no command to run".into());
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let mut ap = AttachParams::default()
        .stdin(false)
        .stdout(true)
        .stderr(true);
    if let Some(c) = container.filter(|c| !c.is_empty()) {
        ap = ap.container(c);
    }
    let run = async {
        let mut process = pods
            .exec(pod_name, command.to_vec(), &ap)
            .await
            .map_err(|e| {
                let why = describe(&e);
                match api_status(&e) {
                    Some((403, _)) => format!(
                        "exec into {namespace}/{pod_name} needs RBAC for pods/exec (create): {why}"
                    ),
                    _ => format!("exec into {namespace}/{pod_name}: {why}"),
                }
            })?;
        let read = |r: Option<Box<dyn tokio::io::AsyncRead + Unpin + Send>>| async move {
            let mut buf = Vec::new();
            if let Some(r) = r {
                let _ = r
                    .take(COMMAND_OUTPUT_LIMIT as u64)
                    .read_to_end(&mut buf)
                    .await;
            }
            buf
        };
        let stdout = process
            .stdout()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
        let stderr = process
            .stderr()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>);
        let status = process.take_status();
        let (out, err) = tokio::join!(read(stdout), read(stderr));
        let status = match status {
            Some(s) => s.await,
            None => None,
        };
        let _ = process.join().await;
        Ok::<_, String>((out, err, status))
    };
    let (out, err, status) = tokio::time::timeout(timeout, run).await.map_err(|_| {
        format!(
            "the command in {namespace}/{pod_name} did not finish within {}s",
            timeout.as_secs()
        )
    })??;
    let exit_code: i64 = match &status {
        Some(s) if s.status.as_deref() == Some("Success") => 0,
        Some(s) => s
            .details
            .as_ref()
            .and_then(|d| d.causes.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.reason.as_deref() == Some("ExitCode")))
            .and_then(|c| c.message.as_deref())
            .and_then(|m| m.parse().ok())
            .unwrap_or(-1),
        None => -1,
    };
    Ok(json!({
        "pod": format!("{namespace}/{pod_name}"),
        "container": container.unwrap_or(""),
        "command": command,
        "exitCode": exit_code,
        "message": status.as_ref().and_then(|s| s.message.clone()).unwrap_or_default(),
        "stdout": String::from_utf8_lossy(&out),
        "stderr": String::from_utf8_lossy(&err),
    }))
}
