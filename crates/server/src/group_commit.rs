//! Group commit: writes from concurrent callers that arrive while a transaction is in flight
//! share the next one, so a burst of webhook requests or sensor firings costs a few commits
//! instead of one each. Nothing waits for a batch to fill: a caller alone is written at once.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// A queue in front of one writer task. `run` gets the inputs in arrival order and returns
/// one output per input, in the same order.
pub struct GroupCommit<I, O> {
    queue: mpsc::Sender<(I, oneshot::Sender<O>)>,
}

impl<I, O> Clone for GroupCommit<I, O> {
    fn clone(&self) -> Self {
        GroupCommit {
            queue: self.queue.clone(),
        }
    }
}

impl<I: Send + 'static, O: Send + 'static> GroupCommit<I, O> {
    /// Starts the writer task: batches hold at most `max_batch` inputs, and at most
    /// `in_flight` batches are written at once (the database's round trips, not its CPU,
    /// bound one batch; while every slot is busy, callers gather for the next batch).
    pub fn start<F, Fut>(max_batch: usize, in_flight: usize, run: F) -> GroupCommit<I, O>
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = Vec<O>> + Send + 'static,
    {
        let max_batch = max_batch.max(1);
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        let (queue, mut rx) = mpsc::channel::<(I, oneshot::Sender<O>)>(max_batch * 4);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(max_batch);
            loop {
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                if rx.recv_many(&mut batch, max_batch).await == 0 {
                    return;
                }
                let (inputs, replies): (Vec<I>, Vec<oneshot::Sender<O>>) = batch.drain(..).unzip();
                crate::metrics::group_commit_batch(inputs.len());
                let written = run(inputs);
                tokio::spawn(async move {
                    let outputs = written.await;
                    // A caller that went away (its request was cancelled) is skipped; what it
                    // asked for is written all the same, as it would have been alone.
                    for (reply, out) in replies.into_iter().zip(outputs) {
                        let _ = reply.send(out);
                    }
                    drop(slot);
                });
            }
        });
        GroupCommit { queue }
    }

    /// Queues `input` and waits for its batch's outcome; `None` when the writer task has
    /// stopped (the runtime is shutting down) or `run` returned fewer outputs than inputs.
    pub async fn call(&self, input: I) -> Option<O> {
        let (reply, outcome) = oneshot::channel();
        self.queue.send((input, reply)).await.ok()?;
        outcome.await.ok()
    }
}

/// Writes every caller's items with one call of `write` (one transaction); when that call
/// fails, each caller's items with a call of their own, so one bad caller (or a database
/// hiccup) gets its own outcome and nobody else's. `write` returns one output per item.
pub async fn together_or_alone<T, R, E>(
    requests: Vec<Vec<T>>,
    write: impl for<'a> Fn(&'a [T]) -> BoxFuture<'a, Result<Vec<R>, E>>,
) -> Vec<Result<Vec<R>, E>> {
    let lens: Vec<usize> = requests.iter().map(Vec::len).collect();
    let all: Vec<T> = requests.into_iter().flatten().collect();
    if lens.len() > 1
        && let Ok(mut written) = write(&all).await
    {
        let mut out = Vec::with_capacity(lens.len());
        for len in &lens {
            let rest = written.split_off((*len).min(written.len()));
            out.push(Ok(std::mem::replace(&mut written, rest)));
        }
        return out;
    }
    let mut out = Vec::with_capacity(lens.len());
    let mut from = 0;
    for len in lens {
        out.push(write(&all[from..from + len]).await);
        from += len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_callers_share_batches_and_get_their_own_outputs() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let doubler = GroupCommit::start(16, 1, move |xs: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                // A slow commit, so later callers queue behind it.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                xs.into_iter().map(|x| x * 2).collect()
            }
        });
        let calls: Vec<_> = (0..64u32)
            .map(|i| {
                let d = doubler.clone();
                tokio::spawn(async move { (i, d.call(i).await) })
            })
            .collect();
        for c in calls {
            let (i, out) = c.await.unwrap();
            assert_eq!(out, Some(i * 2));
        }
        let n = batches.load(Ordering::SeqCst);
        assert!((4..64).contains(&n), "64 callers in {n} batches");
    }

    #[tokio::test]
    async fn a_short_answer_is_none_for_the_callers_left_over() {
        let g = GroupCommit::start(4, 2, |_xs: Vec<u8>| async { Vec::<u8>::new() });
        assert_eq!(g.call(1).await, None);
    }

    #[tokio::test]
    async fn a_failing_shared_write_is_redone_per_caller() {
        // A write of anything holding 0 fails, like a transaction with one bad row.
        fn write(xs: &[u32]) -> BoxFuture<'_, Result<Vec<u32>, String>> {
            let out = match xs.contains(&0) {
                true => Err(format!("{xs:?} holds 0")),
                false => Ok(xs.iter().map(|x| x + 1).collect()),
            };
            Box::pin(async move { out })
        }
        let fine = together_or_alone(vec![vec![1, 2], vec![3]], write).await;
        assert_eq!(fine, vec![Ok(vec![2, 3]), Ok(vec![4])]);
        let one_bad = together_or_alone(vec![vec![1], vec![0, 5], vec![7]], write).await;
        assert_eq!(
            one_bad,
            vec![Ok(vec![2]), Err("[0, 5] holds 0".to_string()), Ok(vec![8])]
        );
    }
}
