//! `riposte run`: drives one workflow to completion on this machine, with Ctrl-C handling and
//! a progress display around the controller's driver.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use engine::{Input, Workflow};
use server::driver::{self, DriveConfig, Persist, StepExecutor};
use tokio::sync::mpsc;

use crate::ui::Progress;

pub use server::driver::now_ms;

pub struct RunConfig {
    pub run_dir: PathBuf,
    pub progress: Progress,
    /// Where every step is recorded (history, nodes, audit), if anywhere.
    pub persist: Option<Persist>,
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
pub async fn run_workflow(wf: Workflow, exec: StepExecutor, cfg: RunConfig) -> Result<RunOutcome> {
    let (outside_tx, outside_rx) = mpsc::unbounded_channel();
    let outside_tx_for_inbox = outside_tx.clone();
    let interrupted = Arc::new(AtomicBool::new(false));
    // Registered before the first step, so a Ctrl-C at any point after start is ours.
    let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("installing the Ctrl-C handler")?;
    let flag = interrupted.clone();
    let watcher = tokio::spawn(async move {
        while sigint.recv().await.is_some() {
            if flag.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\ninterrupted: terminating the workflow (Ctrl-C again to exit at once)");
            let stop = Input::Stop {
                now: now_ms(),
                terminate: true,
                message: Some("Stopped with strategy 'Terminate' (interrupted)".into()),
            };
            // The driver has ended if this fails; nothing left to stop.
            let _ = outside_tx.send(stop);
        }
    });
    // Another process (a server on the same database) may put resume/stop into this
    // workflow's inbox: look once a second and wake the driver.
    let inbox_watch = cfg.persist.as_ref().map(|p| {
        let (store, uid, wake) = (p.store.clone(), p.uid.clone(), outside_tx_for_inbox.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                if let Ok(entries) = store.pending_inputs(&uid).await
                    && !entries.is_empty()
                    && wake.send(Input::Tick { now: now_ms() }).is_err()
                {
                    return;
                }
            }
        })
    });
    let mut progress = cfg.progress;
    let outcome = driver::drive(
        wf,
        exec,
        DriveConfig {
            run_dir: cfg.run_dir,
            observer: Box::new(move |wf, now| progress.update(wf, now, wf.is_finished())),
            persist: cfg.persist,
            first_batch: vec![Input::Start { now: now_ms() }],
            reattach: Vec::new(),
        },
        outside_rx,
    )
    .await?;
    watcher.abort();
    if let Some(w) = inbox_watch {
        w.abort();
    }
    Ok(RunOutcome {
        workflow: outcome.workflow,
        interrupted: interrupted.load(Ordering::SeqCst),
        engine_time: outcome.engine_time,
        engine_steps: outcome.engine_steps,
    })
}
