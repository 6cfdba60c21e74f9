//! The Kubernetes executor: `container`/`script` steps as `batch/v1` Jobs, `resource` steps as
//! API calls made by the controller, `http` steps as requests from the controller.
//!
//! # Brief overview
//! - [`Cluster`]: the connection (in-cluster config or `KUBECONFIG`) and what every workflow
//!   shares: Job settings, the callback secret, the nodes waiting for a callback.
//! - [`KubeExecutor`]: one workflow's executor; `run` carries out one `Execute` command.
//! - [`jobs`]: create (or re-attach to) a node's Job, wait for the wrapper's report (callback
//!   first, pod termination message as fallback), follow the pod's log, delete on cancel.
//! - [`resource`]: the resource template's actions on any kind ([`kube::api::DynamicObject`]).
//! - [`report`]: the `riposte exec` report and the callback token.
//!
//! Completion is watched, never polled: one shared kube-runtime watcher per namespace for
//! Jobs and one for pods ([`informer`]), whatever the number of running steps.

pub mod converge;
pub mod drain;
pub mod evidence;
pub mod forensics;
pub mod informer;
pub mod jobs;
pub mod report;
pub mod resource;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use engine::{ExecResult, ExecuteNode};
use spec::TemplateType;
use tokio::sync::{oneshot, watch};

/// The kube-rs this crate is built on, for callers that hold its client.
pub use kube;
pub use report::{Report, node_token};

#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error(
        "no Kubernetes configuration: not running in a cluster and no usable KUBECONFIG or ~/.kube/config ({0}); set KUBECONFIG to a kubeconfig file"
    )]
    Config(String),
    #[error("building the Kubernetes client: {0}")]
    Client(String),
}

/// Installation settings of the Kubernetes executor.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The Riposte image whose init container installs `riposte exec` into step pods.
    pub riposte_image: String,
    /// The init container's `imagePullPolicy` (`IfNotPresent`, `Always` or `Never`).
    pub riposte_image_pull_policy: String,
    /// `ttlSecondsAfterFinished` of step Jobs.
    pub ttl_seconds_after_finished: i64,
    /// Run every Job in this namespace instead of the workflow's own.
    pub job_namespace: Option<String>,
    /// Base URL of this server as seen from pods (`http://riposte.riposte.svc:2746`); when
    /// set, the wrapper reports there and the termination message is only the fallback.
    pub callback_url: Option<String>,
    /// Key of the per-node callback tokens. Replicas that share it accept each other's callbacks.
    pub callback_secret: Vec<u8>,
    /// How long a step's container may wait on an image pull that keeps failing
    /// (`ErrImagePull`, `ImagePullBackOff`) before the node fails. Reasons that cannot heal
    /// (`InvalidImageName`, `CreateContainerConfigError`) fail it at once.
    pub image_pull_grace: Duration,
}

/// Nodes waiting for their wrapper's callback, keyed by `(workflow uid, node id)`.
type Waiters = HashMap<(String, String), oneshot::Sender<Report>>;

/// A connection to a cluster, shared by every workflow.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
    options: Arc<ClusterOptions>,
    waiters: Arc<Mutex<Waiters>>,
    /// One Job watch and one pod watch per namespace, shared by every running step.
    informers: Arc<informer::Informers>,
}

impl Cluster {
    /// Connects with in-cluster configuration or `KUBECONFIG` (kube's inference order).
    pub async fn connect(options: ClusterOptions) -> Result<Cluster, KubeError> {
        // kube and sqlx both use ring; say so once so rustls never has to guess.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let config = kube::Config::infer()
            .await
            .map_err(|e| KubeError::Config(e.to_string()))?;
        let client =
            kube::Client::try_from(config).map_err(|e| KubeError::Client(e.to_string()))?;
        Ok(Cluster::with_client(client, options))
    }

    pub fn with_client(client: kube::Client, options: ClusterOptions) -> Cluster {
        Cluster {
            informers: Arc::new(informer::Informers::new(client.clone())),
            client,
            options: Arc::new(options),
            waiters: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// The shared Job and pod watches.
    pub fn informers(&self) -> Arc<informer::Informers> {
        self.informers.clone()
    }

    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Whether the API server answers (for readiness): its version, or why not.
    pub async fn ping(&self) -> Result<String, String> {
        match tokio::time::timeout(
            std::time::Duration::from_secs(3),
            self.client().apiserver_version(),
        )
        .await
        {
            Ok(Ok(v)) => Ok(v.git_version),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("no answer within 3 s".into()),
        }
    }

    pub fn options(&self) -> &ClusterOptions {
        &self.options
    }

    /// The executor for one workflow. `logs_dir` receives `<node id>.log` for each step.
    pub fn executor(&self, workflow_uid: &str, logs_dir: Option<PathBuf>) -> KubeExecutor {
        KubeExecutor {
            cluster: self.clone(),
            workflow_uid: workflow_uid.to_string(),
            logs_dir,
        }
    }

    /// Hands a callback to the node waiting for it. `false` when no node waits (it already
    /// finished, or this replica does not run it); the termination message then serves.
    pub fn deliver(&self, workflow_uid: &str, node_id: &str, report: Report) -> bool {
        let waiter = self
            .waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(workflow_uid.to_string(), node_id.to_string()));
        waiter.is_some_and(|w| w.send(report).is_ok())
    }

    /// Deletes what a deleted workflow leaves in the cluster: its Jobs (with their pods) and
    /// its owner anchors, whose deletion lets the garbage collector remove the objects it
    /// created with `setOwnerReference`. Returns how many objects were deleted.
    pub async fn delete_workflow_objects(&self, workflow_uid: &str) -> Result<usize, String> {
        use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams};
        let kinds = [
            (
                ApiResource::erase::<k8s_openapi::api::batch::v1::Job>(&()),
                format!(
                    "{}={workflow_uid},app.kubernetes.io/managed-by=riposte",
                    jobs::WORKFLOW_UID_LABEL
                ),
            ),
            (
                ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
                format!("{}={workflow_uid}", resource::OWNER_ANCHOR_LABEL),
            ),
        ];
        let mut deleted = 0;
        for (ar, selector) in kinds {
            let all: Api<DynamicObject> = Api::all_with(self.client.clone(), &ar);
            let found = match all.list(&ListParams::default().labels(&selector)).await {
                Ok(f) => f,
                // Without the responder role there can be no owner anchors to delete.
                Err(e)
                    if ar.kind == "ConfigMap" && api_status(&e).is_some_and(|(c, _)| c == 403) =>
                {
                    continue;
                }
                Err(e) => {
                    return Err(format!(
                        "listing {} with {selector}: {}",
                        ar.plural,
                        describe(&e)
                    ));
                }
            };
            for o in found.items {
                let (Some(ns), Some(name)) = (o.metadata.namespace, o.metadata.name) else {
                    continue;
                };
                let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), &ns, &ar);
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => deleted += 1,
                    Err(e) if api_status(&e).is_some_and(|(c, _)| c == 404) => {}
                    Err(e) => {
                        return Err(format!(
                            "deleting {} {ns}/{name}: {}",
                            ar.kind,
                            describe(&e)
                        ));
                    }
                }
            }
        }
        Ok(deleted)
    }

    /// Checks a callback's bearer token (constant time).
    pub fn token_is_valid(&self, workflow_uid: &str, node_id: &str, token: &str) -> bool {
        let want = node_token(&self.options.callback_secret, workflow_uid, node_id);
        want.len() == token.len()
            && want
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    fn register(&self, workflow_uid: &str, node_id: &str) -> oneshot::Receiver<Report> {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((workflow_uid.to_string(), node_id.to_string()), tx);
        rx
    }

    fn unregister(&self, workflow_uid: &str, node_id: &str) {
        self.waiters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(workflow_uid.to_string(), node_id.to_string()));
    }
}

/// One workflow's Kubernetes executor. Cheap to clone.
#[derive(Clone)]
pub struct KubeExecutor {
    cluster: Cluster,
    workflow_uid: String,
    logs_dir: Option<PathBuf>,
}

impl KubeExecutor {
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Runs the node to completion, or until `cancel` turns true or its deadline passes.
    /// With `reattach`, the node was started by an earlier controller: its Job is looked up
    /// and never created again.
    pub async fn run(
        &self,
        node: &ExecuteNode,
        mut cancel: watch::Receiver<bool>,
        deadline_in: Option<Duration>,
        reattach: bool,
    ) -> ExecResult {
        let t = &node.template;
        match t.template_type() {
            Some(TemplateType::Container) | Some(TemplateType::Script) => {
                jobs::run(self, node, cancel, deadline_in, reattach).await
            }
            Some(TemplateType::Resource) => {
                let fut = resource::run(&self.cluster, node, &self.workflow_uid);
                let deadline = async {
                    match deadline_in {
                        Some(d) => tokio::time::sleep(d).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    r = fut => r,
                    _ = cancelled(&mut cancel) => ExecResult::error("cancelled"),
                    _ = deadline => ExecResult {
                        phase: engine::Phase::Failed,
                        message: "Step exceeded its deadline".into(),
                        ..ExecResult::error("")
                    },
                }
            }
            Some(TemplateType::Http) => {
                let http = t.http.clone().unwrap_or_default();
                tokio::select! {
                    r = executor::http::run(http) => r,
                    _ = cancelled(&mut cancel) => ExecResult::error("cancelled"),
                }
            }
            other => ExecResult::error(format!(
                "the Kubernetes executor cannot run template type {other:?}"
            )),
        }
    }
}

/// Resolves once `cancel` turns true. (A helper so that the guard `wait_for` returns is
/// dropped inside, keeping callers' futures `Send`.)
pub(crate) async fn cancelled(cancel: &mut watch::Receiver<bool>) {
    // A closed channel means nobody can cancel any more: wait forever.
    if cancel.wait_for(|c| *c).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Whether the API server asked us to come back later: 429 TooManyRequests, 500
/// ServerTimeout (nothing was done), 503, 504. Other errors are answers, not retried.
pub(crate) fn is_transient(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => {
            matches!(s.code, 429 | 503 | 504) || (s.code == 500 && s.reason == "ServerTimeout")
        }
        _ => false,
    }
}

/// A client from the in-cluster service account or KUBECONFIG, for the library's
/// commands that run in a step's pod (`riposte evidence`, `riposte drain`).
pub async fn client_from_env() -> Result<kube::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    kube::Client::try_default()
        .await
        .map_err(|e| format!("connecting to Kubernetes (in-cluster or KUBECONFIG): {e}"))
}

/// Runs an API call again while it fails transiently (see [`is_transient`]), up to 6 times
/// with backoff (0.2 s doubling, at most 3 s between attempts).
pub(crate) async fn with_retries<T, F, Fut>(mut call: F) -> Result<T, kube::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut delay = Duration::from_millis(200);
    for _ in 0..5 {
        match call().await {
            Err(e) if is_transient(&e) => {
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(3));
            }
            other => return other,
        }
    }
    call().await
}

/// `Status` reason and code of a Kubernetes API error.
pub(crate) fn api_status(e: &kube::Error) -> Option<(u16, &str)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.as_str())),
        _ => None,
    }
}

/// A Kubernetes error as users should read it: the API server's own message when there is one.
pub(crate) fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) if !s.message.is_empty() => {
            format!("{} ({} {})", s.message, s.code, s.reason)
        }
        other => other.to_string(),
    }
}
