//! The controller: accepts workflows through the one submit path, drives each one it holds
//! the lease of in its own task, hands outside inputs to workflows through their durable inbox,
//! and continues unfinished workflows from their history after a restart or when another
//! replica's lease expired.
//!
//! Recovery: the history is folded again; the leaf nodes that were running are waited for
//! again — Kubernetes Jobs and detached host steps (`riposte exec`) outlive their
//! controller — and only a step whose process vanished without a report (a reboot) is
//! finished as `Error` ("process lost ..."), which its `retryStrategy` may retry. A step that
//! was recorded as started but never spawned is started then. Finished nodes never run again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use engine::{Input, Workflow, WorkflowIdentity};
use executor::{HostConfig, HostExecutor, ImageTable, Isolation};
use serde_json::{Value, json};
use spec::{Library, WorkflowResource};
use tokio::sync::mpsc;

use crate::driver::{self, DriveConfig, Persist, StepExecutor, now_ms};
use crate::submit::{self, SubmitOutcome, SubmitRequest};

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
    /// The small step wrapper (`riposte-exec`) detached host steps run under; `None` runs
    /// `argosay_binary exec` instead (the same wrapper, slower to start).
    pub wrapper_binary: Option<PathBuf>,
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
    /// Set by [`Controller::shutdown`]: claim nothing more.
    shutting_down: std::sync::atomic::AtomicBool,
    /// The driver tasks, to stop them at shutdown without finishing their steps.
    drivers: Mutex<HashMap<String, tokio::task::AbortHandle>>,
    /// Engine steps of every driver, group-committed.
    steps: crate::driver::StepWriter,
}

/// Cheap to clone; shared by the API handlers.
#[derive(Clone)]
pub struct Controller {
    inner: Arc<Inner>,
}

/// Everything the engine is created from; stored so replay and recovery can do it again.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
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
        let steps = crate::driver::step_writer(store.clone());
        Controller {
            inner: Arc::new(Inner {
                steps,
                store,
                config,
                running: Mutex::new(HashMap::new()),
                changes,
                shutting_down: std::sync::atomic::AtomicBool::new(false),
                drivers: Mutex::new(HashMap::new()),
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
            wrapper_binary: c.wrapper_binary.clone(),
            isolation: c.isolation.clone(),
            keep_node_dirs: false,
            // Steps outlive a restart of the server and are re-attached.
            detach: true,
            workflow_uid: Some(uid.to_string()),
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

    /// The one submit path (see [`crate::submit`]): builds and lints the workflow, records
    /// it with this replica's lease, its idempotency key, the cron firing and its audit row in
    /// one transaction, and starts driving it.
    pub async fn submit(&self, req: SubmitRequest) -> Result<SubmitOutcome, ControlError> {
        let library = self.library(&req.namespace).await?;
        // A generated name can collide with an existing one; like Kubernetes, try another.
        let mut attempt = 0;
        let (prepared, rx, outcome) = loop {
            attempt += 1;
            let (prepared, rx) = self.prepare_claimed(req.clone(), library.clone())?;
            let uid = prepared.identity.uid.clone();
            let c = &self.inner.config;
            let outcome = submit::record(
                &self.inner.store,
                &prepared,
                Some((&c.holder, now_ms() + c.lease_ttl_ms)),
            )
            .await;
            match outcome {
                Ok(SubmitOutcome::Created { .. }) => break (prepared, rx, outcome),
                Err(ControlError::AlreadyExists(_)) if prepared.generated_name && attempt < 8 => {
                    self.running_map().remove(&uid);
                }
                other => {
                    self.running_map().remove(&uid);
                    return other;
                }
            }
        };
        self.start_submitted(prepared, rx);
        outcome
    }

    /// Several submissions recorded in one transaction (one savepoint each), for callers
    /// that submit many at once (sensor firings of concurrent events). Each gets what
    /// [`Controller::submit`] would have returned. When the shared transaction fails, each
    /// is submitted alone; that is safe for keyed submissions, the only ones batched today.
    pub async fn submit_many(
        &self,
        reqs: Vec<SubmitRequest>,
    ) -> Vec<Result<SubmitOutcome, ControlError>> {
        let mut libraries: HashMap<String, Library> = HashMap::new();
        let mut out: Vec<Option<Result<SubmitOutcome, ControlError>>> =
            (0..reqs.len()).map(|_| None).collect();
        // (index, request kept for a retry alone, prepared, driver inbox)
        let mut batch = Vec::with_capacity(reqs.len());
        for (i, req) in reqs.into_iter().enumerate() {
            let library = match libraries.get(&req.namespace) {
                Some(l) => l.clone(),
                None => match self.library(&req.namespace).await {
                    Ok(l) => {
                        libraries.insert(req.namespace.clone(), l.clone());
                        l
                    }
                    Err(e) => {
                        out[i] = Some(Err(e));
                        continue;
                    }
                },
            };
            match self.prepare_claimed(req.clone(), library) {
                Ok((prepared, rx)) => batch.push((i, req, prepared, rx)),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let c = &self.inner.config;
        let lease_until = now_ms() + c.lease_ttl_ms;
        let prepared: Vec<&submit::Prepared> = batch.iter().map(|(_, _, p, _)| p).collect();
        let recorded =
            submit::record_many(&self.inner.store, &prepared, Some((&c.holder, lease_until))).await;
        let mut alone = Vec::new();
        match recorded {
            Ok(results) => {
                for ((i, req, prepared, rx), r) in batch.into_iter().zip(results) {
                    let uid = prepared.identity.uid.clone();
                    match r {
                        Ok(outcome @ SubmitOutcome::Created { .. }) => {
                            self.start_submitted(prepared, rx);
                            out[i] = Some(Ok(outcome));
                        }
                        Err(ControlError::AlreadyExists(_)) if prepared.generated_name => {
                            self.running_map().remove(&uid);
                            alone.push((i, req));
                        }
                        other => {
                            self.running_map().remove(&uid);
                            out[i] = Some(other);
                        }
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "a shared submission failed; submitting one at a time");
                for (i, req, prepared, _) in batch {
                    self.running_map().remove(&prepared.identity.uid);
                    alone.push((i, req));
                }
            }
        }
        for (i, req) in alone {
            out[i] = Some(self.submit(req).await);
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(ControlError::Invalid("not submitted".into()))))
            .collect()
    }

    /// Prepares a submission under a fresh uid and name suffix and claims its slot in the
    /// running map before its row exists, so the lease loop never adopts it meanwhile (the
    /// caller releases the slot when the submission does not create the workflow).
    fn prepare_claimed(
        &self,
        req: SubmitRequest,
        library: Library,
    ) -> Result<(submit::Prepared, mpsc::UnboundedReceiver<Input>), ControlError> {
        let prepared = submit::prepare(
            req,
            library,
            crate::ids::new_uid(),
            &crate::ids::name_suffix(),
            now_ms(),
        )?;
        let (tx, rx) = mpsc::unbounded_channel();
        self.running_map().insert(prepared.identity.uid.clone(), tx);
        Ok((prepared, rx))
    }

    /// Counts and starts driving a workflow whose submission was just committed.
    fn start_submitted(&self, prepared: submit::Prepared, rx: mpsc::UnboundedReceiver<Input>) {
        let uid = prepared.identity.uid.clone();
        crate::metrics::WORKFLOWS_SUBMITTED.inc();
        let object = format!(
            "workflows/{}/{}",
            prepared.identity.namespace, prepared.identity.name
        );
        self.spawn_with(
            prepared.workflow,
            self.persist(uid, object),
            vec![Input::Start { now: now_ms() }],
            Vec::new(),
            rx,
        );
    }

    /// A driver's recorder, sharing commits with the other drivers of this replica.
    fn persist(&self, uid: String, object: String) -> Persist {
        let mut p = Persist::new(self.inner.store.clone(), uid, object);
        p.writer = Some(self.inner.steps.clone());
        p
    }

    fn running_map(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Input>>> {
        self.inner.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn(
        &self,
        wf: Workflow,
        persist: Persist,
        first_batch: Vec<Input>,
        reattach: Vec<engine::ExecuteNode>,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.running_map().insert(wf.identity().uid.clone(), tx);
        self.spawn_with(wf, persist, first_batch, reattach, rx);
    }

    /// Drives `wf` in its own task; `rx` wakes it when its inbox has new entries. A panic in
    /// the driver ends the workflow as `Error` with the panic message; the replica goes on.
    fn spawn_with(
        &self,
        wf: Workflow,
        mut persist: Persist,
        first_batch: Vec<Input>,
        reattach: Vec<engine::ExecuteNode>,
        rx: mpsc::UnboundedReceiver<Input>,
    ) {
        let uid = wf.identity().uid.clone();
        let name = wf.identity().name.clone();
        let namespace = wf.identity().namespace.clone();
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
            let span =
                tracing::info_span!("workflow", namespace = %namespace, name = %name, uid = %uid);
            let task = tokio::spawn(tracing::Instrument::instrument(
                driver::drive(wf, exec, cfg, rx),
                span,
            ));
            this.inner
                .drivers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(uid.clone(), task.abort_handle());
            crate::metrics::set_running(this.running_map().len());
            let driven = task.await;
            this.inner
                .drivers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&uid);
            match driven {
                Ok(Ok(_)) => {}
                // Shutdown: the lease is released and another replica continues.
                Err(join) if join.is_cancelled() => {}
                // The workflow stays unfinished in the store; its lease lets this or another
                // replica continue it from its history.
                Ok(Err(e)) => tracing::error!(
                    namespace = %namespace, name = %name, uid = %uid,
                    error = %store::chain(&e),
                    "driving the workflow stopped; it is continued from its history when its lease is next claimed"
                ),
                Err(join) => {
                    let message = panic_message(join);
                    tracing::error!(namespace = %namespace, name = %name, uid = %uid, panic = %message, "the workflow's driver panicked; the workflow ends as Error");
                    crate::metrics::DRIVER_PANICS.inc();
                    if let Err(e) = this.fail_after_panic(&uid, &message).await {
                        tracing::error!(uid = %uid, error = %store::chain(&e), "recording the panic as the workflow's Error");
                    }
                }
            }
            this.running_map().remove(&uid);
            crate::metrics::set_running(this.running_map().len());
        });
    }

    /// After a driver panicked: the workflow ends `Error` with the panic message, recorded as
    /// a `Stop` input so that replay agrees.
    async fn fail_after_panic(&self, uid: &str, message: &str) -> Result<(), ControlError> {
        let rec = self.inner.store.get_workflow_by_uid(uid).await?;
        if rec.finished_at.is_some() {
            return Ok(());
        }
        let (mut wf, mut persist) = self.rebuild(&rec).await?;
        let batch = vec![Input::Abort {
            now: now_ms(),
            message: format!("internal error (the controller panicked): {message}"),
        }];
        wf.step(&batch)
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        persist
            .record(&batch, &[], &mut wf)
            .await
            .map_err(|e| ControlError::Invalid(store::chain(&e)))?;
        Ok(())
    }

    /// Hands an outside input (resume, set, suspend, stop, terminate) to a workflow through
    /// its durable inbox: stored with its audit row before this returns, consumed in order by
    /// whichever replica holds the workflow's lease. Works from any replica.
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
        if rec.finished_at.is_some() {
            return Err(ControlError::FailedPrecondition(format!(
                "workflow {namespace}/{name} has finished (phase {}); only running workflows take {action}",
                rec.phase
            )));
        }
        if let Input::Resume { node, .. } = &input {
            self.check_resumable(&rec, node.as_deref()).await?;
        }
        let details = serde_json::to_value(&input).unwrap_or(Value::Null);
        let value = details.clone();
        let audit = store::AuditEntry {
            at: now_ms(),
            actor: actor.to_string(),
            action: action.to_string(),
            object: format!("workflows/{namespace}/{name}"),
            source: source.to_string(),
            details,
        };
        match self
            .inner
            .store
            .enqueue_input(&rec.uid, &value, now_ms(), &audit)
            .await
        {
            Ok(_) => {}
            Err(store::StoreError::Finished { .. }) => {
                return Err(ControlError::FailedPrecondition(format!(
                    "workflow {namespace}/{name} has just finished"
                )));
            }
            Err(e) => return Err(e.into()),
        }
        crate::metrics::INBOX_INPUTS.inc();
        self.wake(&rec.uid);
        Ok(())
    }

    /// Tells the local driver of `uid`, if any, that its inbox has new entries.
    pub(crate) fn wake(&self, uid: &str) {
        if let Some(tx) = self.running_map().get(uid) {
            // A closed channel means the driver is ending; a restart reads the inbox anyway.
            let _ = tx.send(Input::Tick { now: now_ms() });
        }
    }

    /// A resume must name a suspended node (or, without a name, find one or a suspended
    /// workflow): otherwise it would be answered and do nothing.
    async fn check_resumable(
        &self,
        rec: &store::WorkflowRecord,
        selector: Option<&str>,
    ) -> Result<(), ControlError> {
        let nodes = self.inner.store.nodes(&rec.uid).await?;
        let waiting: Vec<&store::NodeRow> = nodes
            .iter()
            .filter(|n| {
                n.status["type"] == "Suspend"
                    && engine::Phase::parse(&n.phase).is_some_and(|p| !p.fulfilled())
            })
            .collect();
        let matches = |n: &&store::NodeRow| {
            selector.is_none_or(|sel| {
                n.name == sel || n.id == sel || n.status["displayName"].as_str() == Some(sel)
            })
        };
        if waiting.iter().any(matches) {
            return Ok(());
        }
        if selector.is_none() && self.workflow_suspended(&rec.uid).await? {
            return Ok(());
        }
        let names: Vec<&str> = waiting
            .iter()
            .filter_map(|n| n.status["displayName"].as_str())
            .collect();
        Err(ControlError::FailedPrecondition(match selector {
            Some(sel) if !names.is_empty() => format!(
                "workflow {}/{} has no suspended node {sel:?}; suspended now: {}",
                rec.namespace,
                rec.name,
                names.join(", ")
            ),
            Some(sel) => format!(
                "workflow {}/{} has no suspended node {sel:?} (nothing is suspended now)",
                rec.namespace, rec.name
            ),
            None => format!(
                "workflow {}/{} is not suspended and has no suspended node to resume",
                rec.namespace, rec.name
            ),
        }))
    }

    /// Whether the whole workflow is suspended (`suspend` without a later resume), counting
    /// inputs still in its inbox.
    async fn workflow_suspended(&self, uid: &str) -> Result<bool, ControlError> {
        let store = &self.inner.store;
        let mut suspended = false;
        let mut see = |v: &Value| {
            if v.get("Suspend").is_some() {
                suspended = true;
            } else if let Some(r) = v.get("Resume")
                && r["node"].is_null()
            {
                suspended = false;
            }
        };
        for batch in store.history(uid).await? {
            for input in batch.as_array().into_iter().flatten() {
                see(input);
            }
        }
        for entry in store.pending_inputs(uid).await? {
            see(&entry.input);
        }
        Ok(suspended)
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
        self.running_map().contains_key(uid)
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
        if engine::Phase::parse(&rec.phase) == Some(engine::Phase::Succeeded) && !restart_successful
        {
            return Err(ControlError::FailedPrecondition(format!(
                "workflow {namespace}/{name} succeeded; use restartSuccessful to run nodes again"
            )));
        }
        let (mut wf, mut persist) = self.rebuild(&rec).await?;
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
        // Written with the step that records the retry, like every other change.
        persist.pending_audit.push(store::AuditEntry {
            at: now,
            actor: actor.to_string(),
            action: "workflow.retry".into(),
            object: format!("workflows/{namespace}/{name}"),
            source: source.to_string(),
            details: serde_json::to_value(&retry).unwrap_or(Value::Null),
        });
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
        let mut persist = self.persist(
            rec.uid.clone(),
            format!("workflows/{}/{}", rec.namespace, rec.name),
        );
        persist.next_seq = rec.history_len;
        for node in store.nodes(&rec.uid).await? {
            persist.phases.insert(node.id, node.phase);
        }
        // Log lines already stored (by this or a dead replica) are not shipped again.
        for (node_id, n) in store.node_log_counts(&rec.uid).await? {
            persist
                .shipped_lines
                .insert(node_id, usize::try_from(n).unwrap_or(0));
        }
        wf.take_dirty_nodes();
        wf.take_deleted_nodes();
        Ok((wf, persist))
    }

    /// Claims (or renews) the leases of unfinished workflows and continues, from its
    /// history, each claimed one that is not already running here. Returns how many started.
    pub async fn recover(&self) -> Result<usize, ControlError> {
        if self
            .inner
            .shutting_down
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(0);
        }
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
            if rec.finished_at.is_some() {
                continue;
            }
            if let Err(e) = self.recover_one(rec).await {
                tracing::error!(uid = %uid, error = %store::chain(&e), "recovering a workflow");
                continue;
            }
            crate::metrics::LEASE_TAKEOVERS.inc();
            n += 1;
        }
        crate::metrics::set_running(self.running_map().len());
        Ok(n)
    }

    /// Keeps leases renewed and takes over workflows whose lease expired, until shutdown.
    pub async fn lease_loop(self) {
        let period =
            std::time::Duration::from_millis((self.inner.config.lease_ttl_ms / 3).max(100) as u64);
        loop {
            tokio::time::sleep(period).await;
            if self
                .inner
                .shutting_down
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return;
            }
            if let Err(e) = self.recover().await {
                tracing::warn!(error = %store::chain(&e), "lease renewal failed; retrying next period");
            }
            match self.inner.store.inbox_pending_count().await {
                Ok(n) => crate::metrics::set_inbox_pending(n),
                Err(e) => tracing::debug!(error = %store::chain(&e), "counting inbox entries"),
            }
        }
    }

    /// The inbox fallback: once a second, one query for the workflows with unconsumed inbox
    /// entries wakes those this replica drives (a notification that was missed, e.g. while
    /// the LISTEN connection reconnected). Drivers themselves never poll the inbox.
    pub async fn inbox_sweep_loop(self) {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            if self
                .inner
                .shutting_down
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                return;
            }
            match self.inner.store.workflows_with_pending_inputs().await {
                Ok(uids) => {
                    for uid in uids {
                        self.wake(&uid);
                    }
                }
                Err(e) => tracing::debug!(error = %store::chain(&e), "sweeping the inbox"),
            }
        }
    }

    /// Listens to other replicas' notifications (PostgreSQL): changed workflows reach this
    /// replica's watch streams, inbox entries wake the local driver. Reconnects after errors.
    pub async fn listen_loop(self) {
        loop {
            let mut listener = match self.inner.store.listen().await {
                Ok(Some(l)) => l,
                // SQLite: one process, which notifies itself.
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %store::chain(&e), "listening for other replicas' changes; retrying");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            loop {
                let n = match listener.recv().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "notification connection lost; reconnecting");
                        break;
                    }
                };
                let Ok(notice) = serde_json::from_str::<store::Notice>(n.payload()) else {
                    continue;
                };
                if notice.origin() == self.inner.store.origin() {
                    continue;
                }
                match notice {
                    store::Notice::Changed { ns, name, .. } => {
                        let _ = self.inner.changes.send((ns, name));
                    }
                    store::Notice::Inbox { uid, .. } => self.wake(&uid),
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// Graceful shutdown: stop claiming, stop driving (processes and Jobs keep running), and
    /// release this replica's leases so another replica takes the workflows over at once.
    pub async fn shutdown(&self) -> Result<u64, ControlError> {
        self.inner
            .shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let drivers: Vec<tokio::task::AbortHandle> = self
            .inner
            .drivers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, h)| h)
            .collect();
        for d in &drivers {
            d.abort();
        }
        let released = self
            .inner
            .store
            .release_leases(&self.inner.config.holder)
            .await?;
        self.inner.store.audit_seal().await?;
        Ok(released)
    }

    async fn recover_one(&self, rec: store::WorkflowRecord) -> Result<(), ControlError> {
        let (wf, persist) = self.rebuild(&rec).await?;
        let now = now_ms();
        // Jobs and detached host steps outlive their controller: wait for the running ones
        // again (a step that never started is started then, once).
        let (first_batch, reattach) = if rec.history_len == 0 {
            (vec![Input::Start { now }], Vec::new())
        } else {
            (vec![Input::Tick { now }], wf.running_leaf_executes())
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
            "spec": spec_with_parameters(&def["resource"]["spec"], &def["parameters"]),
            "status": status,
        })
    }
}

/// The spec with the parameters the workflow was submitted with (`-p name=value`, a
/// sensor's, the console's form) in `arguments.parameters`, as Argo shows a workflow
/// submitted from a template: the stored resource keeps them apart.
fn spec_with_parameters(spec: &Value, submitted: &Value) -> Value {
    let mut spec = spec.clone();
    let Some(submitted) = submitted.as_array().filter(|p| !p.is_empty()) else {
        return spec;
    };
    if !spec.is_object() {
        spec = json!({});
    }
    if !spec["arguments"].is_object() {
        spec["arguments"] = json!({});
    }
    if !spec["arguments"]["parameters"].is_array() {
        spec["arguments"]["parameters"] = json!([]);
    }
    if let Some(list) = spec["arguments"]["parameters"].as_array_mut() {
        for pair in submitted {
            let (Some(name), Some(value)) = (pair[0].as_str(), pair[1].as_str()) else {
                continue;
            };
            match list.iter_mut().find(|p| p["name"] == name) {
                Some(p) => p["value"] = json!(value),
                None => list.push(json!({"name": name, "value": value})),
            }
        }
    }
    spec
}

/// The text of a panic, from its payload.
fn panic_message(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submitted_parameters_show_in_the_spec_like_argo() {
        let spec = json!({"arguments": {"parameters": [{"name": "pod", "value": "a"}, {"name": "mode", "value": "label"}]}});
        let out = spec_with_parameters(&spec, &json!([["mode", "netpol"], ["extra", "1"]]));
        assert_eq!(
            out["arguments"]["parameters"],
            json!([{"name": "pod", "value": "a"}, {"name": "mode", "value": "netpol"}, {"name": "extra", "value": "1"}])
        );
        let bare = spec_with_parameters(
            &json!({"workflowTemplateRef": {"name": "t"}}),
            &json!([["pod", "b"]]),
        );
        assert_eq!(
            bare["arguments"]["parameters"],
            json!([{"name": "pod", "value": "b"}])
        );
        assert_eq!(spec_with_parameters(&spec, &json!([])), spec);
    }
}
