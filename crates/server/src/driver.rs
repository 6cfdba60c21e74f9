//! Drives one workflow: the imperative shell around the engine.
//!
//! It turns `Execute` commands into executor tasks and `WakeAt` into timers, feeds results and
//! outside inputs (resume, stop) back as batches, and records every batch before acting on
//! it: first `history.jsonl` in the run directory, then, with a store, the history row, the
//! changed nodes and the workflow state in one transaction, and the node transitions in the
//! audit log.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use engine::{Command, ExecResult, ExecuteNode, Input, Workflow};
use executor::HostExecutor;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("engine rejected an input")]
    Engine(#[source] engine::EngineError),
    #[error("recording step {seq} of {object}")]
    Record {
        seq: i64,
        object: String,
        #[source]
        source: store::StoreError,
    },
    #[error("writing {path}")]
    History {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("encoding inputs")]
    Encode(#[source] serde_json::Error),
    #[error("an executor task panicked")]
    TaskPanicked,
}

/// A store and the workflow's row in it.
pub struct Persist {
    pub store: store::Store,
    /// Where the executor writes node logs; finished nodes' logs are copied into the store.
    pub logs_dir: Option<PathBuf>,
    pub uid: String,
    /// `workflows/<namespace>/<name>`, the audit object.
    pub object: String,
    /// Last recorded phase per node, to audit transitions.
    pub phases: HashMap<String, String>,
    /// The next history sequence number.
    pub next_seq: i64,
    /// Log lines of each node already in the store (shipped while it runs, so any replica
    /// can serve and follow them).
    pub shipped_lines: HashMap<String, usize>,
    /// Where in each node's log file the shipped lines end (known after the first read).
    shipped_bytes: HashMap<String, u64>,
    /// Audit rows of an outside action (a retry) that go into the next recorded step's
    /// transaction, with the input that carries the action out.
    pub pending_audit: Vec<store::AuditEntry>,
    /// `(namespace, name)` announced to other replicas after each step.
    pub notify: Option<(String, String)>,
    /// Shares commits with the other drivers of this process; `None`: a transaction each.
    pub writer: Option<StepWriter>,
}

/// How far a node's log file was read: lines and bytes shipped once it is stored.
struct LogRead {
    node_id: String,
    lines: usize,
    bytes: u64,
}

/// The group-commit writer of engine steps: concurrent drivers' steps share transactions.
pub type StepWriter = crate::group_commit::GroupCommit<
    store::OwnedStep,
    (store::OwnedStep, Result<(), store::StoreError>),
>;

/// Starts the step writer for `store`: up to 64 steps a transaction, `in_flight`
/// transactions at once (1 on SQLite, which has one writer anyway). Steps that arrive
/// while a transaction is in flight wait for the next: a driver alone is written at once.
/// A shared transaction that one step spoils (a replica that lost its lease: `Corrupt`) is
/// redone a step at a time, so only that step fails; a transient failure (the connection)
/// goes back to every driver, whose retry checks what reached the database.
pub fn step_writer(store: store::Store) -> StepWriter {
    let in_flight = if store.backend() == "sqlite" { 1 } else { 4 };
    crate::group_commit::GroupCommit::start(64, in_flight, move |steps: Vec<store::OwnedStep>| {
        let store = store.clone();
        async move {
            let together = store.record_owned_steps(&steps).await;
            match together {
                Ok(()) => steps.into_iter().map(|s| (s, Ok(()))).collect(),
                Err(e) if steps.len() == 1 => {
                    let mut steps = steps;
                    steps.pop().map(|s| vec![(s, Err(e))]).unwrap_or_default()
                }
                Err(store::StoreError::Corrupt { .. }) => {
                    let mut out = Vec::with_capacity(steps.len());
                    for s in steps {
                        let alone = store.record_owned_steps(std::slice::from_ref(&s)).await;
                        out.push((s, alone));
                    }
                    out
                }
                Err(e) => {
                    let message = store::chain(&e);
                    steps
                        .into_iter()
                        .map(|s| {
                            (
                                s,
                                Err(store::StoreError::Transient {
                                    message: message.clone(),
                                }),
                            )
                        })
                        .collect()
                }
            }
        }
    })
}

impl Persist {
    pub fn new(store: store::Store, uid: String, object: String) -> Persist {
        let notify = object
            .strip_prefix("workflows/")
            .and_then(|r| r.split_once('/'))
            .map(|(ns, n)| (ns.to_string(), n.to_string()));
        Persist {
            store,
            uid,
            object,
            phases: HashMap::new(),
            next_seq: 0,
            logs_dir: None,
            shipped_lines: HashMap::new(),
            shipped_bytes: HashMap::new(),
            pending_audit: Vec::new(),
            notify,
            writer: None,
        }
    }

    /// Records one step in one transaction: the batch, the inbox entries it consumed, the
    /// nodes it changed, the workflow state and the node transitions' audit rows. The logs of
    /// the nodes that finish in it are shipped first.
    pub async fn record(
        &mut self,
        batch: &[Input],
        consumed_inbox: &[i64],
        wf: &mut Workflow,
    ) -> Result<(), DriveError> {
        let seq = self.next_seq;
        let object = self.object.clone();
        let fail = |source| DriveError::Record {
            seq,
            object: object.clone(),
            source,
        };
        let dirty = wf.take_dirty_nodes();
        let removed = wf.take_deleted_nodes();
        let nodes: Vec<store::NodeRow> = wf
            .nodes_json(&dirty)
            .into_iter()
            .map(|(id, status)| store::NodeRow {
                name: status["name"].as_str().unwrap_or_default().to_string(),
                phase: status["phase"].as_str().unwrap_or_default().to_string(),
                id,
                status,
            })
            .collect();
        let state = store::WorkflowState {
            phase: wf.phase().as_str().to_string(),
            message: wf.message().to_string(),
            started_at: wf.started_at(),
            finished_at: wf.finished_at(),
            status: wf.status_json(),
        };
        let inputs = serde_json::to_value(batch).map_err(DriveError::Encode)?;
        let now = now_ms();
        let mut transitions = std::mem::take(&mut self.pending_audit);
        for n in &nodes {
            let before = self.phases.get(&n.id);
            if before != Some(&n.phase) {
                transitions.push(store::AuditEntry {
                    at: now,
                    actor: "system:engine".into(),
                    action: "node.transition".into(),
                    object: format!("{}/nodes/{}", self.object, n.id),
                    source: "local".into(),
                    details: transition_details(n, before),
                });
            }
        }
        // Logs of nodes that finished in this batch, whole, in the step's transaction: a
        // reader that sees a node (or the workflow) ended finds its whole log (`logs
        // --follow` stops there), and the step costs one commit.
        let finished: Vec<String> = batch
            .iter()
            .filter_map(|i| match i {
                Input::NodeFinished { node_id, .. } => Some(node_id.clone()),
                _ => None,
            })
            .collect();
        let (logs, read) = self.read_new_logs(&finished, true);
        let started = std::time::Instant::now();
        let step = store::OwnedStep {
            uid: self.uid.clone(),
            seq,
            inputs,
            recorded_at: now,
            nodes,
            removed,
            state,
            consumed_inbox: consumed_inbox.to_vec(),
            audit: transitions,
            notify: self.notify.clone(),
            logs,
        };
        let step = self.append_with_retry(step).await.map_err(fail)?;
        self.mark_shipped(read);
        let nodes = step.nodes;
        crate::metrics::record_step(started.elapsed(), step.audit.len(), &nodes);
        if wf.is_finished() {
            crate::metrics::workflow_finished(wf.phase().as_str());
        }
        self.next_seq += 1;
        for n in &nodes {
            self.phases.insert(n.id.clone(), n.phase.clone());
        }
        Ok(())
    }

    /// Copies new log lines of `nodes` from their files into the store: complete lines only
    /// while a node runs (`all = false`), everything once it ended.
    pub async fn ship_logs(
        &mut self,
        nodes: &[String],
        all: bool,
    ) -> Result<(), store::StoreError> {
        let (logs, read) = self.read_new_logs(nodes, all);
        for l in &logs {
            self.store
                .append_node_logs(&self.uid, &l.node_id, l.at, &l.lines)
                .await?;
        }
        self.mark_shipped(read);
        Ok(())
    }

    /// The log lines of `nodes` written since the last shipment (complete lines only unless
    /// `all`), and how far each file was read, for [`Persist::mark_shipped`] once they are
    /// stored. Only what was written since the last look is read: a chatty step's log is not
    /// read again from its start every second.
    fn read_new_logs(
        &self,
        nodes: &[String],
        all: bool,
    ) -> (Vec<store::NodeLogLines>, Vec<LogRead>) {
        let (mut logs, mut read) = (Vec::new(), Vec::new());
        let Some(dir) = self.logs_dir.as_ref() else {
            return (logs, read);
        };
        for node_id in nodes {
            let path = dir.join(format!("{node_id}.log"));
            let from = self.shipped_lines.get(node_id).copied().unwrap_or(0);
            let Some((start, bytes)) =
                read_from(&path, self.shipped_bytes.get(node_id).copied(), from)
            else {
                continue;
            };
            // Whole lines only while the step may still be writing the last one.
            let complete = if all || bytes.ends_with(b"\n") {
                &bytes[..]
            } else {
                bytes
                    .iter()
                    .rposition(|b| *b == b'\n')
                    .map_or(&bytes[..0], |i| &bytes[..=i])
            };
            let lines: Vec<String> = String::from_utf8_lossy(complete)
                .lines()
                .map(str::to_string)
                .collect();
            read.push(LogRead {
                node_id: node_id.clone(),
                lines: from + lines.len(),
                bytes: start + complete.len() as u64,
            });
            if !lines.is_empty() {
                logs.push(store::NodeLogLines {
                    node_id: node_id.clone(),
                    at: now_ms(),
                    lines,
                });
            }
        }
        (logs, read)
    }

    /// Remembers how far logs were shipped, once the lines read are stored.
    fn mark_shipped(&mut self, read: Vec<LogRead>) {
        for r in read {
            self.shipped_lines.insert(r.node_id.clone(), r.lines);
            self.shipped_bytes.insert(r.node_id, r.bytes);
        }
    }

    /// Appends a step, retrying while the database connection is being re-established (a
    /// restarted PostgreSQL, a cut connection). The step is one transaction, so a retry
    /// either finds it absent and appends it, or finds it committed and stops.
    async fn append_with_retry(
        &self,
        mut step: store::OwnedStep,
    ) -> Result<store::OwnedStep, store::StoreError> {
        let mut attempt = 0;
        loop {
            let result = match &self.writer {
                Some(w) => {
                    // The writer stops only with the runtime: then nothing was written for us.
                    let (back, r) =
                        w.call(step)
                            .await
                            .ok_or_else(|| store::StoreError::Transient {
                                message: "the step writer has stopped (shutting down)".into(),
                            })?;
                    step = back;
                    r
                }
                None => self.store.record_step(&step.as_record()).await,
            };
            match result {
                Ok(()) => return Ok(step),
                Err(e) if attempt < RETRIES && is_transient(&e) => {
                    attempt += 1;
                    tokio::time::sleep(backoff(attempt)).await;
                }
                // The commit reached the database but its acknowledgement did not reach us.
                Err(e @ store::StoreError::Corrupt { .. }) if attempt > 0 => {
                    return match self.store.get_workflow_by_uid(&self.uid).await {
                        Ok(w) if w.history_len == step.seq + 1 => Ok(step),
                        _ => Err(e),
                    };
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A log file's text after what was shipped: from byte `offset` when known, else after the
/// first `lines` lines (a driver that took the workflow over knows only the stored count).
/// Returns where that text starts. `None` when the file cannot be read (not written yet).
fn read_from(path: &std::path::Path, offset: Option<u64>, lines: usize) -> Option<(u64, Vec<u8>)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let start = match offset {
        Some(o) => o,
        None => {
            let mut whole = Vec::new();
            f.read_to_end(&mut whole).ok()?;
            let mut seen = 0;
            let mut at = 0;
            while seen < lines {
                match whole[at..].iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        at += i + 1;
                        seen += 1;
                    }
                    None => {
                        at = whole.len();
                        break;
                    }
                }
            }
            at as u64
        }
    };
    f.seek(SeekFrom::Start(start)).ok()?;
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).ok()?;
    Some((start, rest))
}

/// How often a driver ships running steps' logs. Its inbox is read when it is woken (local
/// sends, PostgreSQL notifications, and the controller's one-query fallback sweep).
const INBOX_POLL: Duration = Duration::from_millis(1000);

/// How long a started step may wait for its start to be recorded with other inputs before it
/// is recorded on its own (what others see as Running lags by at most this).
const STARTED_FLUSH: Duration = Duration::from_millis(50);

/// How often a database operation is retried before the driver gives up (the lease then
/// lets this or another replica recover the workflow from its history).
const RETRIES: u32 = 20;

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50 * u64::from(attempt.min(20)))
}

/// A database error that a retry can cure: the connection, not the statement, failed.
fn is_transient(e: &store::StoreError) -> bool {
    match e {
        store::StoreError::Transient { .. } => true,
        store::StoreError::Query { source, .. } => {
            matches!(
                source,
                sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed
                    | sqlx::Error::Protocol(_)
            ) || source.as_database_error().is_some_and(|d| {
                // 57P01 admin_shutdown (pg_terminate_backend), 57P02/57P03, 08xxx connection
                // errors; SQLite's BUSY (5) and LOCKED (6), with their extended codes (a
                // writer that met another one; the transaction rolled back whole).
                d.code().is_some_and(|c| {
                    c.starts_with("57P")
                        || c.starts_with("08")
                        || c.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
                })
            })
        }
        _ => false,
    }
}

/// What carries out a workflow's leaf nodes.
#[derive(Clone)]
pub enum StepExecutor {
    /// Local processes (the embedded default).
    Host(HostExecutor),
    /// Kubernetes Jobs and API calls.
    Kubernetes(riposte_kube::KubeExecutor),
}

impl StepExecutor {
    /// Runs a node. `reattach`: an earlier controller started it; find its work again.
    pub async fn run(
        &self,
        node: &ExecuteNode,
        cancel: watch::Receiver<bool>,
        deadline_in: Option<Duration>,
        reattach: bool,
    ) -> ExecResult {
        let result = match self {
            StepExecutor::Host(h) => h.run(node, cancel, deadline_in, reattach).await,
            StepExecutor::Kubernetes(k) => k.run(node, cancel, deadline_in, reattach).await,
        };
        result.without_nul()
    }

    /// Whether a node's work outlives its controller (a Job does; a local process does when
    /// it runs detached under `riposte exec`).
    pub fn can_reattach(&self) -> bool {
        match self {
            StepExecutor::Kubernetes(_) => true,
            StepExecutor::Host(h) => h.config().detach,
        }
    }
}

/// Called after every step with the workflow and the time (progress display, notifications).
pub type Observer = Box<dyn FnMut(&Workflow, i64) + Send>;

pub struct DriveConfig {
    pub run_dir: PathBuf,
    pub observer: Observer,
    pub persist: Option<Persist>,
    /// The first batch: `Start` for a new workflow; for a recovered one, the inputs that
    /// account for what was lost while no controller ran.
    pub first_batch: Vec<Input>,
    /// Nodes an earlier controller started whose work still runs (see
    /// [`StepExecutor::can_reattach`]): waited for again, never started again.
    pub reattach: Vec<ExecuteNode>,
}

/// What happened to the run.
pub struct DriveOutcome {
    pub workflow: Workflow,
    /// Time spent inside the engine's `step`.
    pub engine_time: Duration,
    /// How many batches of inputs the engine processed.
    pub engine_steps: usize,
}

/// Runs `wf` until it finishes. `outside` carries inputs from elsewhere (resume, stop, Ctrl-C).
pub async fn drive(
    mut wf: Workflow,
    exec: StepExecutor,
    mut cfg: DriveConfig,
    mut outside: mpsc::UnboundedReceiver<Input>,
) -> Result<DriveOutcome, DriveError> {
    let history_path = cfg.run_dir.join("history.jsonl");
    let io = |source| DriveError::History {
        path: history_path.clone(),
        source,
    };
    std::fs::create_dir_all(&cfg.run_dir).map_err(io)?;
    let mut history = std::io::BufWriter::new(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&history_path)
            .map_err(io)?,
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
    let mut cancels: HashMap<String, watch::Sender<bool>> = HashMap::new();
    let mut timers: BTreeSet<i64> = BTreeSet::new();
    let mut tasks = JoinSet::new();
    let mut timer_tasks = JoinSet::new();
    let mut engine_time = Duration::ZERO;
    let mut engine_steps = 0usize;
    let mut outside_open = true;
    let mut batch = std::mem::take(&mut cfg.first_batch);
    for node in std::mem::take(&mut cfg.reattach) {
        let (ctx, crx) = watch::channel(false);
        cancels.insert(node.node_id.clone(), ctx);
        let tx = tx.clone();
        let exec = exec.clone();
        let deadline_in = node
            .deadline
            .map(|d| Duration::from_millis((d - now_ms()).max(0) as u64));
        tasks.spawn(async move {
            let result = exec.run(&node, crx, deadline_in, true).await;
            let _ = tx.send(Input::NodeFinished {
                now: now_ms(),
                node_id: node.node_id.clone(),
                result,
            });
        });
    }
    // Outside inputs from any replica wait in the store's inbox; read it at start (a
    // recovered workflow may have some), when woken, and every `INBOX_POLL` as a fallback.
    // A new workflow's inbox is empty (inputs for it arrive after it was recorded, and wake
    // it); a recovered one may have inputs waiting.
    let mut read_inbox = !matches!(batch.first(), Some(Input::Start { .. }));
    // Starts not yet given to the engine, and when they must be at the latest.
    let mut started: Vec<Input> = Vec::new();
    let mut flush_started_at = tokio::time::Instant::now();
    let mut poll = tokio::time::interval(INBOX_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let mut consumed = Vec::new();
        if read_inbox && let Some(p) = cfg.persist.as_ref() {
            read_inbox = false;
            match p.store.pending_inputs(&p.uid).await {
                Ok(entries) => {
                    for e in entries {
                        match serde_json::from_value::<Input>(e.input) {
                            Ok(i) => {
                                batch.push(i);
                                consumed.push(e.id);
                            }
                            Err(err) => {
                                tracing::warn!(entry = e.id, error = %err, "skipping an inbox entry that is not an input");
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %store::chain(&e), "reading the inbox; trying again shortly");
                    read_inbox = true;
                }
            }
        }
        if batch.is_empty() {
            batch.push(continue_with_tick());
        }
        serde_json::to_writer(&mut history, &batch).map_err(DriveError::Encode)?;
        history.write_all(b"\n").map_err(io)?;
        history.flush().map_err(io)?;
        let t0 = std::time::Instant::now();
        let commands = wf.step(&batch).map_err(DriveError::Engine)?;
        engine_time += t0.elapsed();
        // Recorded before any command runs: what the engine decided is durable first.
        if let Some(p) = cfg.persist.as_mut() {
            p.record(&batch, &consumed, &mut wf).await?;
        }
        engine_steps += 1;
        for c in commands {
            match c {
                Command::Execute(node) => {
                    let (ctx, crx) = watch::channel(false);
                    cancels.insert(node.node_id.clone(), ctx);
                    let tx = tx.clone();
                    let exec = exec.clone();
                    let now = now_ms();
                    let deadline_in = node
                        .deadline
                        .map(|d| Duration::from_millis((d - now).max(0) as u64));
                    // Held back, not a batch of its own: a short step's start is recorded
                    // with its end (one commit per step); a longer one's within
                    // `STARTED_FLUSH`. The Execute is recorded already, so a crash loses
                    // nothing: the node is Pending and is recovered like a running one.
                    if started.is_empty() {
                        flush_started_at = tokio::time::Instant::now() + STARTED_FLUSH;
                    }
                    started.push(Input::NodeStarted {
                        now,
                        node_id: node.node_id.clone(),
                    });
                    let span = tracing::info_span!("node", node_id = %node.node_id, node = %node.node_name);
                    tasks.spawn(tracing::Instrument::instrument(
                        async move {
                            let result = exec.run(&node, crx, deadline_in, false).await;
                            let _ = tx.send(Input::NodeFinished {
                                now: now_ms(),
                                node_id: node.node_id.clone(),
                                result,
                            });
                        },
                        span,
                    ));
                }
                Command::Cancel { node_id } => {
                    if let Some(c) = cancels.remove(&node_id) {
                        // The task may already have ended; then there is nothing to cancel.
                        let _ = c.send(true);
                    }
                }
                Command::WakeAt { at } => {
                    if timers.insert(at) {
                        let tx = tx.clone();
                        timer_tasks.spawn(async move {
                            let wait = (at - now_ms()).max(0) as u64;
                            tokio::time::sleep(Duration::from_millis(wait)).await;
                            let _ = tx.send(Input::Tick {
                                now: now_ms().max(at),
                            });
                        });
                    }
                }
            }
        }
        (cfg.observer)(&wf, now_ms());
        if wf.is_finished() {
            break;
        }
        let first = loop {
            tokio::select! {
                i = rx.recv() => match i {
                    Some(i) => break Some(Some(i)),
                    // `tx` lives in this function, so the channel cannot close while we loop.
                    None => break None,
                },
                i = outside.recv(), if outside_open => match i {
                    // A wake-up: the inbox has something.
                    Some(Input::Tick { .. }) => {
                        read_inbox = true;
                        break Some(Some(continue_with_tick()));
                    }
                    Some(i) => break Some(Some(i)),
                    None => {
                        outside_open = false;
                        break Some(Some(continue_with_tick()));
                    }
                },
                // Only the held starts: a batch of starts alone needs no walk.
                _ = tokio::time::sleep_until(flush_started_at), if !started.is_empty() => {
                    break Some(None);
                }
                _ = poll.tick(), if cfg.persist.is_some() => {
                    if let Some(p) = cfg.persist.as_mut() {
                        let running: Vec<String> =
                            wf.running_leaf_nodes().map(str::to_string).collect();
                        if !running.is_empty()
                            && let Err(e) = p.ship_logs(&running, false).await
                        {
                            tracing::warn!(error = %store::chain(&e), "storing running steps' logs; trying again shortly");
                        }
                    }
                }
            }
        };
        let Some(first) = first else { break };
        // Held starts go first: a node's start comes before its end.
        batch = std::mem::take(&mut started);
        batch.extend(first);
        // Let results that finish together arrive together: one engine step for all of them.
        tokio::task::yield_now().await;
        while let Ok(i) = rx.try_recv() {
            batch.push(i);
        }
        while let Ok(i) = outside.try_recv() {
            if matches!(i, Input::Tick { .. }) {
                read_inbox = true;
            }
            batch.push(i);
        }
        // Ticks are only wake-ups; keep the timer set small.
        let latest = now_ms();
        timers.retain(|t| *t > latest);
    }
    // Cancelled processes are still being killed; wait for them so none outlives the run.
    for c in cancels.values() {
        let _ = c.send(true);
    }
    drop(tx);
    timer_tasks.abort_all();
    while let Some(joined) = tasks.join_next().await {
        if joined.is_err() {
            return Err(DriveError::TaskPanicked);
        }
    }
    Ok(DriveOutcome {
        workflow: wf,
        engine_time,
        engine_steps,
    })
}

/// When the outside channel closes, step once with a tick so the loop goes on waiting.
fn continue_with_tick() -> Input {
    Input::Tick { now: now_ms() }
}

/// What a node transition's audit row says: the phases, the message (a resource step's
/// "before → after" report) and, once it ended, its result (the JSON report of a library
/// action's process: evidence, capture, the Git proposal), cut to [`AUDITED_RESULT_BYTES`].
fn transition_details(n: &store::NodeRow, before: Option<&String>) -> serde_json::Value {
    let mut d = serde_json::json!({"name": n.name, "from": before, "to": n.phase, "message": n.status["message"]});
    let ended = engine::Phase::parse(&n.phase).is_some_and(|p| p.fulfilled());
    if let (true, Some(result)) = (ended, n.status["outputs"]["result"].as_str()) {
        let cut = result.floor_char_boundary(AUDITED_RESULT_BYTES.min(result.len()));
        d["result"] = serde_json::json!(&result[..cut]);
        if cut < result.len() {
            d["resultTruncated"] = serde_json::json!(true);
        }
    }
    d
}

/// The most of a node's result an audit row keeps (the node keeps all of it).
const AUDITED_RESULT_BYTES: usize = 4096;

#[cfg(test)]
mod tests {
    use super::{AUDITED_RESULT_BYTES, read_from, transition_details};

    #[test]
    fn an_ended_nodes_audit_row_carries_its_result_cut_to_a_bound() {
        let node = |phase: &str, result: &str| store::NodeRow {
            id: "wf-1".into(),
            name: "wf.evidence".into(),
            phase: phase.into(),
            status: serde_json::json!({"message": "saved", "outputs": {"result": result}}),
        };
        let d = transition_details(&node("Running", "{}"), None);
        assert!(d.get("result").is_none(), "{d}");
        let d = transition_details(
            &node("Succeeded", r#"{"secret":"evidence-x"}"#),
            Some(&"Running".to_string()),
        );
        assert_eq!(d["result"], r#"{"secret":"evidence-x"}"#);
        assert_eq!(
            (d["from"].as_str(), d["to"].as_str()),
            (Some("Running"), Some("Succeeded"))
        );
        let long = "é".repeat(AUDITED_RESULT_BYTES);
        let d = transition_details(&node("Failed", &long), None);
        assert!(d["result"].as_str().unwrap().len() <= AUDITED_RESULT_BYTES);
        assert_eq!(d["resultTruncated"], true);
    }

    #[test]
    fn log_files_are_read_from_where_shipping_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n.log");
        std::fs::write(&path, "one\ntwo\nthr").expect("write");
        // A driver that took over knows only that one line is stored.
        assert_eq!(read_from(&path, None, 1), Some((4, b"two\nthr".to_vec())));
        // More lines stored than the file has (it was replaced): nothing is read again.
        assert_eq!(read_from(&path, None, 9), Some((11, Vec::new())));
        // Known offset: only what came after.
        assert_eq!(read_from(&path, Some(8), 2), Some((8, b"thr".to_vec())));
        assert_eq!(read_from(&dir.path().join("missing.log"), None, 0), None);
    }
}
