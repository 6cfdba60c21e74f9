//! `riposte run`: drives one workflow to completion on this machine.
//!
//! The loop is the imperative shell around the engine: it turns `Execute` commands into
//! executor tasks, `WakeAt` into timers and Ctrl-C into `Stop`, feeds every result back as a
//! batch of inputs, and appends each batch to `history.jsonl` in the run directory.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use engine::{Command, Input, Workflow};
use executor::HostExecutor;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::ui::Progress;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct RunConfig {
    pub run_dir: PathBuf,
    pub progress: Progress,
    /// Where every step is recorded (history, nodes, audit), if anywhere.
    pub persist: Option<Persist>,
}

/// A store and the workflow's row in it.
pub struct Persist {
    pub store: store::Store,
    pub uid: String,
    pub object: String,
    /// Last recorded phase per node, to audit transitions.
    pub phases: HashMap<String, String>,
}

impl Persist {
    /// Records one step: the batch, the nodes it changed and the workflow state in one
    /// transaction, then the node transitions in the audit log.
    pub async fn record(&mut self, seq: i64, batch: &[Input], wf: &mut Workflow) -> Result<()> {
        let dirty = wf.take_dirty_nodes();
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
        let inputs = serde_json::to_value(batch).context("encoding inputs")?;
        let now = now_ms();
        self.store
            .append_step(&self.uid, seq, &inputs, now, &nodes, &state)
            .await
            .with_context(|| format!("recording step {seq} of {}", self.object))?;
        let mut entries = Vec::new();
        for n in &nodes {
            let before = self.phases.insert(n.id.clone(), n.phase.clone());
            if before.as_deref() != Some(n.phase.as_str()) {
                entries.push(store::AuditEntry {
                    at: now,
                    actor: "system:engine".into(),
                    action: "node.transition".into(),
                    object: format!("{}/nodes/{}", self.object, n.id),
                    source: "local".into(),
                    details: serde_json::json!({
                        "name": n.name,
                        "from": before,
                        "to": n.phase,
                        "message": n.status["message"],
                    }),
                });
            }
        }
        self.store
            .audit_append(&entries)
            .await
            .context("auditing node transitions")?;
        Ok(())
    }
}

/// What happened to the run.
pub struct RunOutcome {
    pub workflow: Workflow,
    pub interrupted: bool,
    /// Time spent inside the engine's `step`.
    pub engine_time: Duration,
    /// How many batches of inputs the engine processed.
    pub engine_steps: usize,
}

/// Runs `wf` until it finishes. The first Ctrl-C terminates it (processes are killed and the
/// workflow ends Failed); a second one exits at once.
pub async fn run_workflow(
    mut wf: Workflow,
    exec: HostExecutor,
    mut cfg: RunConfig,
) -> Result<RunOutcome> {
    std::fs::create_dir_all(&cfg.run_dir)
        .with_context(|| format!("creating run directory {}", cfg.run_dir.display()))?;
    let history_path = cfg.run_dir.join("history.jsonl");
    let mut history = std::io::BufWriter::new(
        std::fs::File::create(&history_path)
            .with_context(|| format!("creating {}", history_path.display()))?,
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<Input>();
    let mut cancels: HashMap<String, watch::Sender<bool>> = HashMap::new();
    let mut timers: BTreeSet<i64> = BTreeSet::new();
    let mut tasks = JoinSet::new();
    let mut timer_tasks = JoinSet::new();
    let mut interrupted = false;
    let mut engine_time = Duration::ZERO;
    let mut engine_steps = 0usize;
    // Registered before the first step, so a Ctrl-C at any point after start is ours.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the Ctrl-C handler")?;
    let mut batch = vec![Input::Start { now: now_ms() }];
    loop {
        serde_json::to_writer(&mut history, &batch).context("writing history")?;
        history.write_all(b"\n").context("writing history")?;
        let t0 = std::time::Instant::now();
        let commands = wf.step(&batch).context("engine rejected an input")?;
        engine_time += t0.elapsed();
        // Recorded before any command runs: what the engine decided is durable first.
        if let Some(p) = cfg.persist.as_mut() {
            p.record(engine_steps as i64, &batch, &mut wf).await?;
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
                    // The receiver lives as long as this loop; a failed send means we are exiting.
                    let _ = tx.send(Input::NodeStarted {
                        now,
                        node_id: node.node_id.clone(),
                    });
                    tasks.spawn(async move {
                        let result = exec.run(&node, crx, deadline_in).await;
                        let _ = tx.send(Input::NodeFinished {
                            now: now_ms(),
                            node_id: node.node_id.clone(),
                            result,
                        });
                    });
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
        let now = now_ms();
        cfg.progress.update(&wf, now, wf.is_finished());
        if wf.is_finished() {
            break;
        }
        let first = tokio::select! {
            i = rx.recv() => match i {
                Some(i) => i,
                None => anyhow::bail!("internal: all input senders closed while the workflow runs"),
            },
            _ = sigint.recv() => {
                if interrupted {
                    std::process::exit(130);
                }
                interrupted = true;
                eprintln!("\ninterrupted: terminating the workflow (Ctrl-C again to exit at once)");
                Input::Stop { now: now_ms(), terminate: true, message: Some("Stopped with strategy 'Terminate' (interrupted)".into()) }
            }
        };
        batch = vec![first];
        // Let results that finish together arrive together: one engine step for all of them.
        tokio::task::yield_now().await;
        while let Ok(i) = rx.try_recv() {
            batch.push(i);
        }
        // Ticks are only wake-ups; keep the timer set small.
        let latest = now_ms();
        timers.retain(|t| *t > latest);
    }
    history.flush().context("writing history")?;
    // Cancelled processes are still being killed; wait for them so none outlives the run.
    for c in cancels.values() {
        let _ = c.send(true);
    }
    drop(tx);
    timer_tasks.abort_all();
    while let Some(joined) = tasks.join_next().await {
        joined.context("executor task panicked")?;
    }
    Ok(RunOutcome {
        workflow: wf,
        interrupted,
        engine_time,
        engine_steps,
    })
}
