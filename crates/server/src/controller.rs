//! The controller: accepts workflows, drives each one in its own task, forwards resume/stop
//! to running ones, and after a restart continues every unfinished workflow from its history.
//!
//! Recovery: the history is folded again; a leaf node that was running when the previous
//! controller died has lost its process, so it is finished as `Error` ("process lost ...")
//! in the first new batch, and the engine retries it if its `retryStrategy` allows. Nodes that
//! had finished are never run again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use engine::{ExecResult, Input, Workflow, WorkflowIdentity};
use executor::{HostConfig, HostExecutor, ImageTable, Isolation};
use serde_json::{Value, json};
use spec::{Library, WorkflowResource};
use tokio::sync::mpsc;

use crate::driver::{self, DriveConfig, Persist, StepExecutor, now_ms};

/// Why a controller operation failed, mapped to Argo's error codes by the API.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("database")]
    Store(#[source] store::StoreError),
}

impl From<store::StoreError> for ControlError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::NotFound { .. } => ControlError::NotFound(e.to_string()),
            store::StoreError::AlreadyExists { .. } => ControlError::AlreadyExists(e.to_string()),
            other => ControlError::Store(other),
        }
    }
}

/// What to run again in a `retry`.
#[derive(Debug, Clone, Default)]
pub struct RetryRequest {
    pub restart_successful: bool,
    /// A node name, display name, id or template name (with `restart_successful`).
    pub node_selector: Option<String>,
    /// Workflow parameters to change.
    pub parameters: Vec<(String, String)>,
}

/// How the controller runs steps.
#[derive(Clone)]
pub struct ControllerConfig {
    /// Per-workflow run directories (logs, history file) live below this.
    pub runs_dir: PathBuf,
    pub images: ImageTable,
    pub argosay_binary: PathBuf,
    pub isolation: Isolation,
    /// This replica's name in the lease table.
    pub holder: String,
    /// How long a lease lasts without renewal; another replica takes a workflow over after it.
    pub lease_ttl_ms: i64,
    /// Run steps on this cluster (the Kubernetes executor) instead of as local processes.
    pub cluster: Option<riposte_kube::Cluster>,
}

struct Inner {
    store: store::Store,
    config: ControllerConfig,
    /// Running workflows by uid: where their outside inputs go.
    running: Mutex<HashMap<String, mpsc::UnboundedSender<Input>>>,
    /// `(namespace, name)` of every workflow after each recorded step, for watchers.
    changes: tokio::sync::broadcast::Sender<(String, String)>,
}

/// Cheap to clone; shared by the API handlers.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

/// Everything the engine is created from; stored so replay and recovery can do it again.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Definition {
    pub resource: WorkflowResource,
    pub library: Library,
    pub identity: WorkflowIdentity,
    pub parameters: Vec<(String, String)>,
}

impl Definition {
    pub fn from_value(v: &Value) -> Result<Definition, ControlError> {
        serde_json::from_value(v.clone()).map_err(|e| {
            ControlError::Store(store::StoreError::Corrupt {
                what: "workflow definition",
                message: e.to_string(),
            })
        })
    }
}

impl Controller {
    pub fn new(store: store::Store, config: ControllerConfig) -> Controller {
        let (changes, _) = tokio::sync::broadcast::channel(1024);
        Controller {
            inner: Arc::new(Inner {
                store,
                config,
                running: Mutex::new(HashMap::new()),
                changes,
            }),
        }
    }

    pub fn store(&self) -> &store::Store {
        &self.inner.store
    }

    /// The executor for a workflow, and its run directory (logs, history file).
    fn executor(&self, name: &str, uid: &str) -> (StepExecutor, PathBuf) {
        let c = &self.inner.config;
        let run_dir = c.runs_dir.join(name);
        if let Some(cluster) = &c.cluster {
            let exec = cluster.executor(uid, Some(run_dir.join("logs")));
            return (StepExecutor::Kubernetes(exec), run_dir);
        }
        let exec = HostExecutor::new(HostConfig {
            run_dir: run_dir.clone(),
            images: c.images.clone(),
            argosay_binary: c.argosay_binary.clone(),
            isolation: c.isolation.clone(),
            keep_node_dirs: false,
        });
        (StepExecutor::Host(exec), run_dir)
    }

    /// The cluster steps run on, when the Kubernetes executor is in use.
    pub fn cluster(&self) -> Option<&riposte_kube::Cluster> {
        self.inner.config.cluster.as_ref()
    }

    /// The templates in the store, as a library for `templateRef`.
    pub async fn library(&self, namespace: &str) -> Result<Library, ControlError> {
        let mut lib = Library::default();
        for t in self.inner.store.list_templates(false, namespace).await? {
            if let Ok(r) = serde_json::from_value::<WorkflowResource>(t.body) {
                lib.templates.insert(t.name, r);
            }
        }
        for t in self.inner.store.list_templates(true, "").await? {
            if let Ok(r) = serde_json::from_value::<WorkflowResource>(t.body) {
                lib.cluster_templates.insert(t.name, r);
            }
        }
        Ok(lib)
    }

    /// Validates, records and starts a workflow. Returns its name.
    pub async fn submit(
        &self,
        mut resource: WorkflowResource,
        namespace: &str,
        params: Vec<(String, String)>,
        actor: &str,
        source: &str,
    ) -> Result<String, ControlError> {
        let library = self.library(namespace).await?;
        let name = match (&resource.metadata.name, &resource.metadata.generate_name) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(g)) => format!("{g}{}", crate::ids::name_suffix()),
            _ => {
                return Err(ControlError::Invalid(
                    "metadata.name or metadata.generateName is required".into(),
                ));
            }
        };
        resource.metadata.name = Some(name.clone());
        resource.metadata.namespace = Some(namespace.to_string());
        let identity = WorkflowIdentity {
            name: name.clone(),
            namespace: namespace.to_string(),
            uid: crate::ids::new_uid(),
        };
        let wf = Workflow::new(resource.clone(), library.clone(), identity.clone(), &params)
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let definition = serde_json::to_value(Definition {
            resource: resource.clone(),
            library,
            identity: identity.clone(),
            parameters: params.clone(),
        })
        .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let store = &self.inner.store;
        store
            .create_workflow(&store::NewWorkflow {
                uid: identity.uid.clone(),
                namespace: namespace.to_string(),
                name: name.clone(),
                labels: serde_json::to_value(&resource.metadata.labels).unwrap_or(json!({})),
                created_at: now_ms(),
                definition,
            })
            .await?;
        let object = format!("workflows/{namespace}/{name}");
        store
            .audit_append(&[store::AuditEntry {
                at: now_ms(),
                actor: actor.to_string(),
                action: "workflow.create".into(),
                object: object.clone(),
                source: source.to_string(),
                details: json!({"parameters": params.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>()}),
            }])
            .await?;
        self.spawn(
            wf,
            Persist::new(store.clone(), identity.uid.clone(), object),
            vec![Input::Start { now: now_ms() }],
            Vec::new(),
        );
        Ok(name)
    }

    fn spawn(
        &self,
        wf: Workflow,
        mut persist: Persist,
        first_batch: Vec<Input>,
        reattach: Vec<engine::ExecuteNode>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let uid = wf.identity().uid.clone();
        let name = wf.identity().name.clone();
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(uid.clone(), tx);
        let (exec, run_dir) = self.executor(&name, &uid);
        persist.logs_dir = Some(run_dir.join("logs"));
        let this = self.clone();
        tokio::spawn(async move {
            let cfg = DriveConfig {
                run_dir,
                observer: {
                    let changes = this.inner.changes.clone();
                    Box::new(move |wf: &Workflow, _| {
                        // Nobody watching is fine.
                        let _ = changes
                            .send((wf.identity().namespace.clone(), wf.identity().name.clone()));
                    })
                },
                persist: Some(persist),
                first_batch,
                reattach,
            };
            if let Err(e) = driver::drive(wf, exec, cfg, rx).await {
                // The workflow stays unfinished in the store; a restart recovers it.
                eprintln!("workflow {name}: {e}");
            }
            this.inner
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&uid);
        });
    }

    /// Sends an outside input to a running workflow.
    pub async fn send(
        &self,
        namespace: &str,
        name: &str,
        input: Input,
        actor: &str,
        source: &str,
        action: &str,
    ) -> Result<(), ControlError> {
        let rec = self.inner.store.get_workflow(namespace, name).await?;
        let tx = self
            .inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&rec.uid)
            .cloned();
        let Some(tx) = tx else {
            return Err(ControlError::FailedPrecondition(format!(
                "workflow {namespace}/{name} is not running (phase {})",
                rec.phase
            )));
        };
        let details = serde_json::to_value(&input).unwrap_or(Value::Null);
        tx.send(input).map_err(|_| {
            ControlError::FailedPrecondition(format!(
                "workflow {namespace}/{name} has just finished"
            ))
        })?;
        self.inner
            .store
            .audit_append(&[store::AuditEntry {
                at: now_ms(),
                actor: actor.to_string(),
                action: action.to_string(),
                object: format!("workflows/{namespace}/{name}"),
                source: source.to_string(),
                details,
            }])
            .await?;
        Ok(())
    }

    /// Notifications of workflow changes, for watch streams.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(String, String)> {
        self.inner.changes.subscribe()
    }

    /// Where a workflow's node logs are kept.
    pub fn logs_dir(&self, name: &str) -> PathBuf {
        self.inner.config.runs_dir.join(name).join("logs")
    }

    pub fn is_running(&self, uid: &str) -> bool {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(uid)
    }

    /// Argo's `retry`: a finished, unsuccessful workflow runs again from its history; its
    /// failed nodes (and, with `restart_successful`, succeeded ones matching the selector)
    /// run again, nothing else does.
    pub async fn retry(
        &self,
        namespace: &str,
        name: &str,
        req: RetryRequest,
        actor: &str,
        source: &str,
    ) -> Result<(), ControlError> {
        let RetryRequest {
            restart_successful,
            node_selector,
            parameters,
        } = req;
        let store = &self.inner.store;
        let rec = store.get_workflow(namespace, name).await?;
        if rec.finished_at.is_none() || self.is_running(&rec.uid) {
            return Err(ControlError::FailedPrecondition(format!(
                "workflow {namespace}/{name} is still running; only finished workflows can be retried"
            )));
        }
        if rec.phase == "Succeeded" && !restart_successful {
            return Err(ControlError::FailedPrecondition(format!(
                "workflow {namespace}/{name} succeeded; use restartSuccessful to run nodes again"
            )));
        }
        let (mut wf, persist) = self.rebuild(&rec).await?;
        let now = now_ms();
        let retry = Input::Retry {
            now,
            restart_successful,
            node_selector,
            parameters,
        };
        // Check it applies before recording anything.
        let mut probe = wf.clone();
        probe
            .step(std::slice::from_ref(&retry))
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        wf.take_dirty_nodes();
        if !store
            .claim_workflow(
                &rec.uid,
                &self.inner.config.holder,
                now,
                now + self.inner.config.lease_ttl_ms,
            )
            .await?
        {
            return Err(ControlError::FailedPrecondition(format!(
                "workflow {namespace}/{name} is driven by another replica"
            )));
        }
        store
            .audit_append(&[store::AuditEntry {
                at: now,
                actor: actor.to_string(),
                action: "workflow.retry".into(),
                object: format!("workflows/{namespace}/{name}"),
                source: source.to_string(),
                details: serde_json::to_value(&retry).unwrap_or(Value::Null),
            }])
            .await?;
        self.spawn(wf, persist, vec![retry], Vec::new());
        Ok(())
    }

    /// Folds a workflow's history into a fresh engine and prepares its persistence.
    async fn rebuild(
        &self,
        rec: &store::WorkflowRecord,
    ) -> Result<(Workflow, Persist), ControlError> {
        let store = &self.inner.store;
        let def = Definition::from_value(&rec.definition)?;
        let mut wf = Workflow::new(def.resource, def.library, def.identity, &def.parameters)
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        for (i, batch) in store.history(&rec.uid).await?.iter().enumerate() {
            let inputs: Vec<Input> = serde_json::from_value(batch.clone()).map_err(|e| {
                ControlError::Store(store::StoreError::Corrupt {
                    what: "history",
                    message: format!("batch {i}: {e}"),
                })
            })?;
            wf.step(&inputs).map_err(|e| {
                ControlError::Invalid(format!("replaying batch {i} of {}: {e}", rec.name))
            })?;
        }
        let mut persist = Persist::new(
            store.clone(),
            rec.uid.clone(),
            format!("workflows/{}/{}", rec.namespace, rec.name),
        );
        persist.next_seq = rec.history_len;
        for node in store.nodes(&rec.uid).await? {
            persist.phases.insert(node.id, node.phase);
        }
        wf.take_dirty_nodes();
        wf.take_deleted_nodes();
        Ok((wf, persist))
    }

    /// Claims (or renews) the leases of unfinished workflows and continues, from its
    /// history, each claimed one that is not already running here. Returns how many started.
    pub async fn recover(&self) -> Result<usize, ControlError> {
        let store = &self.inner.store;
        let now = now_ms();
        let claimed = store
            .claim_workflows(
                &self.inner.config.holder,
                now,
                now + self.inner.config.lease_ttl_ms,
            )
            .await?;
        let mut n = 0;
        for uid in claimed {
            if self.is_running(&uid) {
                continue;
            }
            let rec = store.get_workflow_by_uid(&uid).await?;
            if let Err(e) = self.recover_one(rec).await {
                eprintln!("recovering workflow {uid}: {e}");
                continue;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Keeps leases renewed and takes over workflows whose lease expired, forever.
    pub async fn lease_loop(self) {
        let period =
            std::time::Duration::from_millis((self.inner.config.lease_ttl_ms / 3).max(100) as u64);
        loop {
            tokio::time::sleep(period).await;
            if let Err(e) = self.recover().await {
                eprintln!("lease renewal: {e}");
            }
        }
    }

    async fn recover_one(&self, rec: store::WorkflowRecord) -> Result<(), ControlError> {
        let (wf, persist) = self.rebuild(&rec).await?;
        let now = now_ms();
        let can_reattach = self.inner.config.cluster.is_some();
        let (first_batch, reattach) = if rec.history_len == 0 {
            (vec![Input::Start { now }], Vec::new())
        } else if can_reattach {
            // Jobs outlive their controller: wait for the running ones again.
            (vec![Input::Tick { now }], wf.running_leaf_executes())
        } else {
            // The processes of the leaf nodes that were running died with their controller.
            let mut b: Vec<Input> = wf
                .running_leaf_nodes()
                .map(|node_id| Input::NodeFinished {
                    now,
                    result: ExecResult::error(format!(
                        "process lost: the controller stopped while node {node_id} ran"
                    )),
                    node_id: node_id.to_string(),
                })
                .collect();
            b.push(Input::Tick { now });
            (b, Vec::new())
        };
        self.spawn(wf, persist, first_batch, reattach);
        Ok(())
    }

    /// The workflow as Argo's JSON: spec from its definition, status and nodes from the store.
    /// The workflow with its nodes as JSON text: the stored node JSON is spliced in as is.
    pub async fn workflow_json_text(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<String, ControlError> {
        let rec = self.inner.store.get_workflow(namespace, name).await?;
        let nodes = self.inner.store.nodes_raw(&rec.uid).await?;
        let mut wf = workflow_json(&rec, None);
        wf["status"]["nodes"] = json!("__NODES__");
        let text = wf.to_string();
        let mut raw = String::with_capacity(
            nodes
                .iter()
                .map(|(id, s)| id.len() + s.len() + 4)
                .sum::<usize>()
                + 2,
        );
        raw.push('{');
        for (i, (id, status)) in nodes.iter().enumerate() {
            if i > 0 {
                raw.push(',');
            }
            raw.push_str(&Value::String(id.clone()).to_string());
            raw.push(':');
            raw.push_str(status);
        }
        raw.push('}');
        // `nodes` is the last member of the last object, so its placeholder is the last match
        // (a user's parameter could contain the same text earlier).
        let placeholder = "\"__NODES__\"";
        match text.rfind(placeholder) {
            Some(at) => Ok(format!(
                "{}{raw}{}",
                &text[..at],
                &text[at + placeholder.len()..]
            )),
            None => Ok(text),
        }
    }

    pub async fn workflow_json(
        &self,
        namespace: &str,
        name: &str,
        with_nodes: bool,
    ) -> Result<Value, ControlError> {
        let rec = self.inner.store.get_workflow(namespace, name).await?;
        let nodes = if with_nodes {
            Some(self.inner.store.nodes(&rec.uid).await?)
        } else {
            None
        };
        Ok(workflow_json(&rec, nodes))
    }
}

/// Argo's Workflow object from a stored record (and its nodes, for `get`).
pub fn workflow_json(rec: &store::WorkflowRecord, nodes: Option<Vec<store::NodeRow>>) -> Value {
    {
        let mut status = rec.status.clone();
        if !status.is_object() || status.as_object().is_some_and(|m| m.is_empty()) {
            status = json!({"phase": rec.phase});
        }
        if let Some(nodes) = nodes {
            let nodes: serde_json::Map<String, Value> =
                nodes.into_iter().map(|n| (n.id, n.status)).collect();
            status["nodes"] = Value::Object(nodes);
        }
        let def = &rec.definition;
        let mut metadata = def["resource"]["metadata"].clone();
        if !metadata.is_object() {
            metadata = json!({});
        }
        metadata["name"] = json!(rec.name);
        metadata["namespace"] = json!(rec.namespace);
        metadata["uid"] = json!(rec.uid);
        metadata["creationTimestamp"] = json!(expr::time::rfc3339(rec.created_at));
        json!({
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Workflow",
            "metadata": metadata,
            "spec": def["resource"]["spec"],
            "status": status,
        })
    }
}
