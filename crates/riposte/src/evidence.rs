//! The library actions that need a process in a step's pod rather than a resource step:
//! `riposte evidence` (a pod's manifests and logs into a forensic Secret; see
//! `riposte_kube::evidence`), `riposte capture` (tcpdump in an ephemeral container) and
//! `riposte checkpoint` (the kubelet's checkpoint API; both `riposte_kube::forensics`), and
//! `riposte drain` (the Eviction API; `riposte_kube::drain`).

use anyhow::{Result, anyhow};

/// The pod an action is about.
#[derive(clap::Args)]
pub(crate) struct PodArgs {
    /// The pod's namespace.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// The pod.
    #[arg(long)]
    pod: String,
}

#[derive(clap::Args)]
pub(crate) struct EvidenceArgs {
    #[command(flatten)]
    target: PodArgs,
    /// The forensic namespace the Secret goes to (it must exist).
    #[arg(long, default_value = "forensics")]
    to_namespace: String,
    /// The most of each log kept (its last bytes); all of it must fit in 1 MiB.
    #[arg(long, default_value_t = 256 * 1024)]
    max_log_bytes: usize,
    /// Ask the API server to validate the Secret without storing it.
    #[arg(long, value_name = "true|false", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = crate::cli::bool_flag)]
    dry_run: bool,
}

/// Runs `action` with a client for the cluster (in-cluster or KUBECONFIG) and prints its
/// JSON report.
fn in_cluster<F, Fut>(action: F) -> Result<()>
where
    F: FnOnce(riposte_kube::kube::Client) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, String>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let client = riposte_kube::client_from_env().await?;
        action(client).await
    });
    println!("{}", report.map_err(|e| anyhow!(e))?);
    Ok(())
}

/// `riposte evidence`.
pub(crate) fn main(a: EvidenceArgs) -> Result<()> {
    let now = now_secs();
    let req = riposte_kube::evidence::EvidenceRequest {
        namespace: a.target.namespace,
        pod: a.target.pod,
        to_namespace: a.to_namespace,
        max_log_bytes: a.max_log_bytes,
        dry_run: a.dry_run,
        now,
    };
    in_cluster(|client| async move { riposte_kube::evidence::collect(&client, &req).await })
}

#[derive(clap::Args)]
pub(crate) struct DrainArgs {
    /// The node.
    node: String,
    /// Seconds each pod gets to stop (default: the pod's own terminationGracePeriodSeconds).
    #[arg(long)]
    grace_period: Option<u32>,
    /// How long to keep retrying evictions a PodDisruptionBudget refuses, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,
    /// Ask the API server to validate the cordon and the evictions without doing them.
    #[arg(long, value_name = "true|false", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = crate::cli::bool_flag)]
    dry_run: bool,
}

/// `riposte drain NODE`.
pub(crate) fn drain(a: DrainArgs) -> Result<()> {
    let req = riposte_kube::drain::DrainRequest {
        node: a.node,
        grace_period: a.grace_period,
        timeout: std::time::Duration::from_secs(a.timeout),
        dry_run: a.dry_run,
    };
    in_cluster(|client| async move { riposte_kube::drain::drain(&client, &req).await })
}

#[derive(clap::Args)]
pub(crate) struct CaptureArgs {
    #[command(flatten)]
    target: PodArgs,
    /// How long to capture, in seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u32,
    /// A tcpdump filter, e.g. "port 443 or port 53" (default: everything).
    #[arg(long, default_value = "")]
    filter: String,
    /// The debug container's image (tcpdump, timeout, head, base64).
    #[arg(long, default_value = "nicolaka/netshoot:v0.13")]
    image: String,
    /// The capture is cut at this many bytes (at most 700 KiB: a Secret holds 1 MiB).
    #[arg(long, default_value_t = 700 * 1024)]
    max_bytes: usize,
    /// The forensic namespace the Secret goes to (it must exist).
    #[arg(long, default_value = "forensics")]
    to_namespace: String,
    /// Say what container would be added; change nothing.
    #[arg(long, value_name = "true|false", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = crate::cli::bool_flag)]
    dry_run: bool,
}

/// `riposte capture`.
pub(crate) fn capture(a: CaptureArgs) -> Result<()> {
    let req = riposte_kube::forensics::CaptureRequest {
        namespace: a.target.namespace,
        pod: a.target.pod,
        image: a.image,
        seconds: a.seconds,
        filter: a.filter,
        max_bytes: a.max_bytes,
        to_namespace: a.to_namespace,
        now: now_secs(),
        dry_run: a.dry_run,
    };
    in_cluster(|client| async move { riposte_kube::forensics::capture(&client, &req).await })
}

#[derive(clap::Args)]
pub(crate) struct CheckpointArgs {
    #[command(flatten)]
    target: PodArgs,
    /// The container (default: the pod's first).
    #[arg(long, default_value = "")]
    container: String,
    /// How long the kubelet may take, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u32,
    /// Say what would be checkpointed; ask the kubelet nothing.
    #[arg(long, value_name = "true|false", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = crate::cli::bool_flag)]
    dry_run: bool,
}

/// `riposte checkpoint`.
pub(crate) fn checkpoint(a: CheckpointArgs) -> Result<()> {
    if a.dry_run {
        println!(
            "{}",
            serde_json::json!({"dryRun": true, "pod": format!("{}/{}", a.target.namespace, a.target.pod),
                               "container": a.container, "wouldAsk": "the kubelet's checkpoint API"})
        );
        return Ok(());
    }
    in_cluster(|client| async move {
        riposte_kube::forensics::checkpoint(
            &client,
            &a.target.namespace,
            &a.target.pod,
            Some(a.container.as_str()),
            a.timeout,
        )
        .await
    })
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[derive(clap::Args)]
pub(crate) struct PodCommandArgs {
    #[command(flatten)]
    target: PodArgs,
    /// The container (default: the pod's first).
    #[arg(long, default_value = "")]
    container: String,
    /// A shell script to run instead of a command (as `sh -c SCRIPT`: the container needs sh).
    #[arg(long, conflicts_with = "command")]
    script: Option<String>,
    /// How long the command may take, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Succeed whatever the command's exit code (the report still has it).
    #[arg(long, value_name = "true|false", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = crate::cli::bool_flag)]
    allow_failure: bool,
    /// Say what would run; run nothing.
    #[arg(long, value_name = "true|false", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = crate::cli::bool_flag)]
    dry_run: bool,
    /// The command and its arguments (after --).
    #[arg(last = true)]
    command: Vec<String>,
}

/// `riposte pod-command`: the report on stdout; a non-zero exit fails unless allowed.
pub(crate) fn pod_command(a: PodCommandArgs) -> Result<()> {
    let command: Vec<String> = match &a.script {
        Some(s) => vec!["sh".into(), "-c".into(), s.clone()],
        None => a.command.clone(),
    };
    if command.is_empty() || command.iter().all(|c| c.is_empty()) {
        anyhow::bail!(
            "give a command after -- (riposte pod-command --pod P -- ps aux) or --script"
        );
    }
    if a.dry_run {
        println!(
            "{}",
            serde_json::json!({"dryRun": true, "pod": format!("{}/{}", a.target.namespace, a.target.pod),
                               "container": a.container, "wouldRun": command})
        );
        return Ok(());
    }
    let allow = a.allow_failure;
    in_cluster(|client| async move {
        let report = riposte_kube::forensics::run_in_container(
            &client,
            &a.target.namespace,
            &a.target.pod,
            Some(a.container.as_str()),
            &command,
            std::time::Duration::from_secs(a.timeout),
        )
        .await?;
        let code = report["exitCode"].as_i64().unwrap_or(-1);
        if code != 0 && !allow {
            return Err(format!(
                "the command exited {code} in {}/{}: {}{}",
                a.target.namespace,
                a.target.pod,
                report["stderr"].as_str().unwrap_or("").trim(),
                report["message"]
                    .as_str()
                    .map(|m| format!(" ({m})"))
                    .unwrap_or_default()
            ));
        }
        Ok(report)
    })
}
