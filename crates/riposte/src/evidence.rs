//! The library actions that need a process in a step's pod rather than a resource step:
//! `riposte evidence` (a pod's manifests and logs into a forensic Secret; see
//! `riposte_kube::evidence`) and `riposte drain` (the Eviction API; `riposte_kube::drain`).

use anyhow::{Result, anyhow};

#[derive(clap::Args)]
pub(crate) struct EvidenceArgs {
    /// The pod's namespace.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// The pod.
    #[arg(long)]
    pod: String,
    /// The forensic namespace the Secret goes to (it must exist).
    #[arg(long, default_value = "forensics")]
    to_namespace: String,
    /// The most of each log kept (its last bytes); all of it must fit in 1 MiB.
    #[arg(long, default_value_t = 256 * 1024)]
    max_log_bytes: usize,
    /// Ask the API server to validate the Secret without storing it.
    #[arg(long, value_name = "true|false", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = dry_run)]
    dry_run: bool,
}

/// `--dry-run` as the resource template's flag reads it (`executor::flags::dry_run`).
fn dry_run(value: &str) -> Result<bool, String> {
    executor::flags::dry_run(Some(value))
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
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let req = riposte_kube::evidence::EvidenceRequest {
        namespace: a.namespace,
        pod: a.pod,
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
    #[arg(long, value_name = "true|false", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = dry_run)]
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
