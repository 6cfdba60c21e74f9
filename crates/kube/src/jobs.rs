//! A `container`/`script` node as a `batch/v1` Job: create it (or re-attach to it), wait for
//! the wrapper's report, follow the pod's log into the node's log file, delete it on cancel.
//!
//! The report arrives by callback when the server has a callback URL; otherwise (and as a
//! fallback) it is read from the pod's termination message once the Job has finished.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use engine::{ExecResult, ExecuteNode, Phase};
use executor::job::{JobOptions, job_manifest, token_secret_name};
use futures_util::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, LogParams, PostParams};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;

use crate::informer::{self, Informers, Seen};
use crate::{KubeExecutor, Report, api_status, cancelled, describe, node_token, with_retries};

/// Label a Job carries with its workflow's uid (set by `executor::job`).
pub const WORKFLOW_UID_LABEL: &str = "riposte.dev/workflow-uid";

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The callback URL for a node, below the server's base URL.
pub fn callback_url(base: &str, workflow_uid: &str, node_id: &str) -> String {
    format!(
        "{}/api/v1/riposte/callbacks/{workflow_uid}/{node_id}",
        base.trim_end_matches('/')
    )
}

/// The Job for a node with this installation's settings, including the callback.
pub fn manifest_for(exec: &KubeExecutor, node: &ExecuteNode) -> Result<Value, String> {
    let opts = exec.cluster.options();
    let namespace = opts
        .job_namespace
        .clone()
        .unwrap_or_else(|| node.namespace.clone());
    job_manifest(
        node,
        &JobOptions {
            riposte_image: opts.riposte_image.clone(),
            riposte_image_pull_policy: opts.riposte_image_pull_policy.clone(),
            ttl_seconds_after_finished: opts.ttl_seconds_after_finished,
            namespace: Some(namespace),
            workflow_uid: exec.workflow_uid.clone(),
            now_ms: now_ms(),
            callback_url: opts
                .callback_url
                .as_deref()
                .map(|base| callback_url(base, &exec.workflow_uid, &node.node_id)),
        },
    )
    .map_err(|e| e.to_string())
}

/// The node's token Secret, owned by its Job so that it goes when the Job goes. Created after
/// the Job (the owner needs its uid); the kubelet waits for it before starting the pod.
async fn create_token_secret(
    exec: &KubeExecutor,
    namespace: &str,
    job: &DynamicObject,
    node_id: &str,
) -> Result<(), String> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let secret: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": token_secret_name(&name),
            "labels": {"app.kubernetes.io/managed-by": "riposte",
                       WORKFLOW_UID_LABEL: exec.workflow_uid},
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": name,
                                 "uid": job.metadata.uid.clone().unwrap_or_default()}],
        },
        "type": "Opaque",
        "stringData": {"token": node_token(&exec.cluster.options().callback_secret, &exec.workflow_uid, node_id)},
    }))
    .map_err(|e| e.to_string())?;
    let secrets: Api<DynamicObject> = Api::namespaced_with(
        exec.cluster.client().clone(),
        namespace,
        &ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&()),
    );
    let pp = PostParams::default();
    match with_retries(|| secrets.create(&pp, &secret)).await {
        Ok(_) => Ok(()),
        // Re-attaching: it was created with the Job.
        Err(e) if api_status(&e) == Some((409, "AlreadyExists")) => Ok(()),
        Err(e) => Err(format!(
            "creating the callback token Secret {}: {}",
            token_secret_name(&name),
            describe(&e)
        )),
    }
}

enum End {
    Reported(Report),
    /// The pod cannot start (bad image, missing Secret, a failed init container): the reason,
    /// for the node message.
    Stuck(String),
    /// The `main` container ended with the wrapper's report in its termination message: the
    /// result, without waiting for the Job controller to mark the Job finished.
    MainReported(Report),
    JobFinished(Box<Result<DynamicObject, String>>),
    Cancelled,
    Deadline,
}

pub(crate) async fn run(
    exec: &KubeExecutor,
    node: &ExecuteNode,
    mut cancel: watch::Receiver<bool>,
    deadline_in: Option<Duration>,
    reattach: bool,
) -> ExecResult {
    let manifest = match manifest_for(exec, node) {
        Ok(m) => m,
        Err(e) => return ExecResult::error(e),
    };
    let name = node.pod_name.clone();
    let namespace = manifest["metadata"]["namespace"]
        .as_str()
        .unwrap_or(&node.namespace)
        .to_string();
    let client = exec.cluster.client().clone();
    let jobs: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &namespace, &ApiResource::erase::<Job>(&()));
    // Registered before the Job exists, so an early callback cannot be missed.
    let reported = exec.cluster.register(&exec.workflow_uid, &node.node_id);
    let attached = attach_or_create(&jobs, &name, manifest, &exec.workflow_uid, reattach).await;
    let job = match attached {
        Ok(j) => j,
        Err(e) => {
            exec.cluster.unregister(&exec.workflow_uid, &node.node_id);
            return ExecResult::error(e);
        }
    };
    if exec.cluster.options().callback_url.is_some()
        && let Err(e) = create_token_secret(exec, &namespace, &job, &node.node_id).await
    {
        exec.cluster.unregister(&exec.workflow_uid, &node.node_id);
        delete_job(&jobs, &name).await;
        return ExecResult::error(e);
    }
    let informers = exec.cluster.informers();
    let log_task = exec.logs_dir.as_ref().map(|dir| {
        tokio::spawn(follow_logs(
            client.clone(),
            informers.clone(),
            namespace.clone(),
            name.clone(),
            dir.join(format!("{}.log", node.node_id)),
        ))
    });
    let deadline = async {
        match deadline_in {
            Some(d) => tokio::time::sleep(d).await,
            None => std::future::pending().await,
        }
    };
    let deadline_at = deadline_in.map(|d| tokio::time::Instant::now() + d);
    let end = tokio::select! {
        r = reported => match r {
            Ok(report) => End::Reported(report),
            // The sender went away (another node replaced it): wait for the Job instead.
            Err(_) => End::JobFinished(Box::new(wait_finished(&informers, &namespace, &name).await)),
        },
        j = wait_finished(&informers, &namespace, &name) => End::JobFinished(Box::new(j)),
        seen = watch_pod(&informers, &namespace, &name, exec.cluster.options().image_pull_grace, deadline_at) => match seen {
            PodSeen::Stuck(why) => End::Stuck(why),
            PodSeen::MainReported(report) => End::MainReported(report),
        },
        _ = cancelled(&mut cancel) => End::Cancelled,
        _ = deadline => End::Deadline,
    };
    exec.cluster.unregister(&exec.workflow_uid, &node.node_id);
    informers.release(&namespace, &name);
    // How results arrive, for operators (and the live suite, which checks callbacks work).
    let via = match &end {
        End::Reported(_) => Some("callback"),
        End::MainReported(_) => Some("pod_status"),
        End::JobFinished(_) => Some("job_condition"),
        _ => None,
    };
    if let Some(via) = via {
        metrics::counter!("riposte_step_results_total", "via" => via).increment(1);
    }
    let result = match end {
        End::Reported(report) | End::MainReported(report) => report.into_exec_result(),
        End::JobFinished(finished) => match *finished {
            Ok(job) => from_finished_job(&client, &namespace, &job).await,
            Err(e) => ExecResult::error(e),
        },
        End::Stuck(why) => {
            delete_job(&jobs, &name).await;
            ExecResult::error(why)
        }
        End::Cancelled => {
            delete_job(&jobs, &name).await;
            ExecResult::error("cancelled")
        }
        End::Deadline => {
            delete_job(&jobs, &name).await;
            ExecResult {
                phase: Phase::Failed,
                message: "Pod was active on the node longer than the specified deadline".into(),
                ..ExecResult::error("")
            }
        }
    };
    if let Some(t) = log_task {
        // The log ends with the container; give the stream a moment to deliver its tail.
        if result.phase == Phase::Error && result.message == "cancelled" {
            t.abort();
        } else if tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .is_err()
        {
            // Still streaming (a slow API server); what was written is kept.
        }
    }
    result
}

/// Creates the node's Job, or finds the one an earlier controller created for this node.
async fn attach_or_create(
    jobs: &Api<DynamicObject>,
    name: &str,
    manifest: Value,
    workflow_uid: &str,
    reattach: bool,
) -> Result<DynamicObject, String> {
    let belongs = |job: &DynamicObject| {
        job.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(WORKFLOW_UID_LABEL))
            .is_some_and(|u| u == workflow_uid)
    };
    if reattach {
        return match with_retries(|| jobs.get_opt(name)).await {
            Ok(Some(job)) if belongs(&job) => Ok(job),
            Ok(Some(_)) => Err(format!(
                "Job {name} belongs to another workflow; cannot re-attach to it"
            )),
            Ok(None) => Err(format!(
                "process lost: Job {name} no longer exists (deleted, or removed by ttlSecondsAfterFinished while no controller ran)"
            )),
            Err(e) => Err(format!("looking up Job {name}: {}", describe(&e))),
        };
    }
    let obj: DynamicObject = serde_json::from_value(manifest)
        .map_err(|e| format!("the Job manifest is not a Kubernetes object: {e}"))?;
    let pp = PostParams::default();
    match with_retries(|| jobs.create(&pp, &obj)).await {
        Ok(job) => Ok(job),
        Err(e) if api_status(&e) == Some((409, "AlreadyExists")) => {
            match with_retries(|| jobs.get(name)).await {
                Ok(job) if belongs(&job) => Ok(job),
                Ok(_) => Err(format!(
                    "a Job named {name} already exists and belongs to another workflow; delete it or rename the workflow"
                )),
                Err(e) => Err(format!(
                    "looking up the existing Job {name}: {}",
                    describe(&e)
                )),
            }
        }
        Err(e) => Err(format!("creating Job {name}: {}", describe(&e))),
    }
}

fn condition_true(job: &DynamicObject, kind: &str) -> Option<Value> {
    job.data["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
        .cloned()
}

/// Waits (on the namespace's shared Job watch, not polling) until the Job has a `Complete`
/// or `Failed` condition.
async fn wait_finished(
    informers: &Informers,
    namespace: &str,
    name: &str,
) -> Result<DynamicObject, String> {
    let mut rx = informers.job(namespace, name);
    informer::wait_for(&mut rx, |seen| match seen {
        Seen::Present(job)
            if condition_true(job, "Complete").is_some()
                || condition_true(job, "Failed").is_some() =>
        {
            Some(Ok((**job).clone()))
        }
        Seen::Deleted => Some(Err(format!("Job {name} was deleted before it finished"))),
        _ => None,
    })
    .await
    .unwrap_or_else(|| Err(format!("the watch of Job {name} ended")))
}

/// The node's result from its finished Job: the wrapper's report in the termination message.
async fn from_finished_job(
    client: &kube::Client,
    namespace: &str,
    job: &DynamicObject,
) -> ExecResult {
    let name = job.metadata.name.clone().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={name}")))
        .await;
    let terminated = listed.ok().and_then(|l| {
        l.items.into_iter().find_map(|p| {
            let statuses = p.status?.container_statuses?;
            let main = statuses.into_iter().find(|s| s.name == "main")?;
            main.state?.terminated
        })
    });
    let failed = condition_true(job, "Failed");
    if let Some(c) = &failed
        && c["reason"] == "DeadlineExceeded"
    {
        return ExecResult {
            phase: Phase::Failed,
            message: "Pod was active on the node longer than the specified deadline".into(),
            ..ExecResult::error("")
        };
    }
    match terminated {
        Some(t) => {
            let report = t
                .message
                .as_deref()
                .and_then(|m| serde_json::from_str::<Value>(m).ok())
                .and_then(|v| Report::from_json(&v));
            match report {
                Some(r) => r.into_exec_result(),
                None => {
                    // Not the wrapper's report: the wrapper never ran (init container or image
                    // problem) or something else wrote the message.
                    let mut r = ExecResult::exited(t.exit_code, "");
                    let detail = t.message.unwrap_or_default();
                    if t.exit_code == 0 {
                        r.message = String::new();
                    } else if !detail.is_empty() {
                        r.message = format!("{}: {}", r.message, detail.trim());
                    }
                    r
                }
            }
        }
        None => {
            // The wrapper never ran: say why, from the init container, like a main one.
            let init = listed_init_failure(&pods, &name).await;
            ExecResult::error(match (init, failed) {
                (Some(why), _) => why,
                (None, Some(c)) => format!(
                    "Job {name} failed: {}",
                    c["message"].as_str().unwrap_or("no message")
                ),
                (None, None) => format!("Job {name} finished but its pod is gone; no result"),
            })
        }
    }
}

/// The init container failure of the Job's pod, if any (see [`init_failure`]).
async fn listed_init_failure(pods: &Api<Pod>, job: &str) -> Option<String> {
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={job}")))
        .await
        .ok()?;
    listed
        .items
        .iter()
        .find_map(|p| init_failure(p.status.as_ref()?))
}

/// Waiting reasons that no amount of waiting cures.
const HOPELESS: &[&str] = &[
    "InvalidImageName",
    "CreateContainerConfigError",
    "ErrImageNeverPull",
];
/// Waiting reasons that may clear (a registry hiccup), given time.
const RETRYING: &[&str] = &["ErrImagePull", "ImagePullBackOff", "CreateContainerError"];

/// What the Job's pod showed first.
enum PodSeen {
    /// It cannot start (see [`watch_pod`]).
    Stuck(String),
    /// Its `main` container terminated with the wrapper's report.
    MainReported(Report),
}

/// Watches the Job's pod. Resolves when it cannot start — at once for [`HOPELESS`] reasons or
/// a failed init container (`riposte-init`'s own message), after `grace` of [`RETRYING`]
/// ones — or when its `main` container has terminated with the wrapper's report (seconds
/// before the Job controller marks the Job `Complete`). Near the step's deadline the Job's
/// own condition decides instead, so a step killed for its deadline reads as one. Never
/// resolves otherwise.
async fn watch_pod(
    informers: &Informers,
    namespace: &str,
    job: &str,
    grace: Duration,
    deadline_at: Option<tokio::time::Instant>,
) -> PodSeen {
    let mut rx = informers.pod_of(namespace, job);
    let mut since: Option<(tokio::time::Instant, String)> = None;
    let mut first = true;
    loop {
        // The state as it is now, then after each change.
        if !first {
            let changed = match &since {
                Some((t, _)) => {
                    let at = *t + grace;
                    tokio::select! {
                        r = rx.changed() => r,
                        _ = tokio::time::sleep_until(at) => {
                            if let Some((_, why)) = since.take() {
                                return PodSeen::Stuck(why);
                            }
                            continue;
                        }
                    }
                }
                None => rx.changed().await,
            };
            if changed.is_err() {
                return std::future::pending().await;
            }
        }
        first = false;
        let pod = match &*rx.borrow_and_update() {
            Seen::Present(p) => p.clone(),
            _ => continue,
        };
        let Some(status) = pod.status.as_ref() else {
            continue;
        };
        if let Some(why) = init_failure(status) {
            return PodSeen::Stuck(why);
        }
        let near_deadline =
            deadline_at.is_some_and(|d| tokio::time::Instant::now() + Duration::from_secs(2) >= d);
        if !near_deadline && let Some(report) = main_report(status) {
            return PodSeen::MainReported(report);
        }
        let waiting = status
            .init_container_statuses
            .iter()
            .flatten()
            .chain(status.container_statuses.iter().flatten())
            .find_map(|c| {
                let w = c.state.as_ref()?.waiting.as_ref()?;
                let reason = w.reason.clone()?;
                Some((
                    c.name.clone(),
                    reason,
                    w.message.clone().unwrap_or_default(),
                ))
            });
        match waiting {
            Some((container, reason, message)) if HOPELESS.contains(&reason.as_str()) => {
                return PodSeen::Stuck(format!("{container}: {reason}: {message}"));
            }
            Some((container, reason, message)) if RETRYING.contains(&reason.as_str()) => {
                if since.is_none() {
                    since = Some((
                        tokio::time::Instant::now(),
                        format!("{container}: {reason} for {}s: {message}", grace.as_secs()),
                    ));
                }
            }
            _ => since = None,
        }
    }
}

/// An init container that terminated unsuccessfully (the wrapper was never installed, so
/// `main` never runs): its name, reason, exit code and the kubelet's message.
fn init_failure(status: &k8s_openapi::api::core::v1::PodStatus) -> Option<String> {
    status
        .init_container_statuses
        .iter()
        .flatten()
        .find_map(|c| {
            let t = c.state.as_ref()?.terminated.as_ref()?;
            (t.exit_code != 0).then(|| {
                let detail = t.message.as_deref().unwrap_or("").trim();
                format!(
                    "{}: {} (exit code {}){}",
                    c.name,
                    t.reason.as_deref().unwrap_or("Error"),
                    t.exit_code,
                    if detail.is_empty() {
                        String::new()
                    } else {
                        format!(": {detail}")
                    }
                )
            })
        })
}

/// The wrapper's report, once `main` has terminated and left it as its termination message.
fn main_report(status: &k8s_openapi::api::core::v1::PodStatus) -> Option<Report> {
    let main = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == "main")?;
    let t = main.state.as_ref()?.terminated.as_ref()?;
    let v: Value = serde_json::from_str(t.message.as_deref()?).ok()?;
    Report::from_json(&v)
}

async fn delete_job(jobs: &Api<DynamicObject>, name: &str) {
    // Background propagation: the pod goes too (the API's default for Jobs orphans it).
    match jobs.delete(name, &DeleteParams::background()).await {
        Ok(_) => {}
        Err(e) if api_status(&e).is_some_and(|(c, _)| c == 404) => {}
        Err(e) => tracing::warn!(job = %name, error = %describe(&e), "deleting a Job"),
    }
}

/// Appends the Job's pod's `main` log to `path` as it is written, until the container ends.
async fn follow_logs(
    client: kube::Client,
    informers: Arc<Informers>,
    namespace: String,
    job: String,
    path: PathBuf,
) {
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut rx = informers.pod_of(&namespace, &job);
    let started = informer::wait_for(&mut rx, |seen| match seen {
        Seen::Present(p) => {
            let phase: &str = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("");
            if phase.is_empty() || phase == "Pending" {
                None
            } else {
                p.metadata.name.clone()
            }
        }
        _ => None,
    })
    .await;
    drop(rx);
    let Some(pod_name) = started else {
        return;
    };
    let params = LogParams {
        follow: true,
        container: Some("main".into()),
        ..LogParams::default()
    };
    let Ok(stream) = pods.log_stream(&pod_name, &params).await else {
        return;
    };
    if let Err(e) = write_lines(stream, &path).await {
        tracing::warn!(pod = %pod_name, path = %path.display(), error = %e, "writing a pod's log");
    }
}

async fn write_lines(
    stream: impl futures_util::AsyncBufRead + Unpin,
    path: &Path,
) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await?;
    }
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .await?;
    let mut lines = stream.lines();
    while let Some(line) = lines.try_next().await? {
        file.write_all(line.as_bytes()).await?;
        file.write_all(b"\n").await?;
        file.flush().await?;
    }
    Ok(())
}
