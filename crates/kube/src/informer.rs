//! Shared watches (informers): one kube-runtime watcher per namespace for the Jobs Riposte
//! manages and one for their pods, whatever the number of running steps — instead of a watch
//! of its own per step, which at 1,000 concurrent steps would be 3,000 watch connections.
//!
//! Each watcher keeps the newest object of every key (a Job by name, a pod by its `job-name`
//! label) in a `tokio::sync::watch` channel; a step subscribes to its key and waits for the
//! state it needs. A re-list (the watcher's `Init`…`InitDone`, after a 410 Gone or a broken
//! connection) marks keys it no longer lists as deleted, so a deletion missed during the
//! break is seen too.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

/// The label every Job and pod Riposte creates carries (set by `executor::job`).
pub const MANAGED_SELECTOR: &str = "app.kubernetes.io/managed-by=riposte";

/// What the shared watch last saw of one key.
#[derive(Debug, Clone)]
pub enum Seen<K> {
    /// Not seen yet (the watch has not delivered it, or it does not exist).
    Unknown,
    Present(Arc<K>),
    Deleted,
}

/// The newest state of every key of one kind in one namespace, fed by one watcher task.
struct Shared<K> {
    keys: Mutex<HashMap<String, watch::Sender<Seen<K>>>>,
}

impl<K: Clone + Send + Sync + 'static> Shared<K> {
    fn new() -> Shared<K> {
        Shared {
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Seen<K>>>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn subscribe(&self, key: &str) -> watch::Receiver<Seen<K>> {
        self.lock()
            .entry(key.to_string())
            .or_insert_with(|| watch::channel(Seen::Unknown).0)
            .subscribe()
    }

    fn set(&self, key: String, seen: Seen<K>) {
        let mut keys = self.lock();
        match keys.get(&key) {
            Some(tx) => {
                tx.send_replace(seen);
            }
            // Nobody waits for a deleted key: forget it (memory stays bounded by what exists).
            None if matches!(seen, Seen::Deleted) => {}
            None => {
                keys.insert(key, watch::channel(seen).0);
            }
        }
    }

    /// After a re-list: keys it did not list are gone.
    fn relisted(&self, listed: &HashSet<String>) {
        let mut keys = self.lock();
        keys.retain(|k, tx| {
            if listed.contains(k) {
                return true;
            }
            if matches!(*tx.borrow(), Seen::Present(_)) {
                tx.send_replace(Seen::Deleted);
            }
            // Keep keys someone waits for (they may be created next); drop the rest.
            tx.receiver_count() > 0
        });
    }

    /// A finished step no longer needs its key: drop it unless it is still waited for or
    /// still exists (the watch would only re-create it).
    fn release(&self, key: &str) {
        let mut keys = self.lock();
        if let Some(tx) = keys.get(key)
            && tx.receiver_count() == 0
            && !matches!(*tx.borrow(), Seen::Present(_))
        {
            keys.remove(key);
        }
    }
}

/// Feeds `shared` from one watcher of `api` until the process ends (the watcher's backoff
/// retries errors; they are logged, never fatal).
fn spawn_feed<K>(
    api: Api<K>,
    shared: Arc<Shared<K>>,
    key_of: fn(&K) -> Option<String>,
    what: &'static str,
    namespace: String,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    tokio::spawn(async move {
        let cfg = watcher::Config::default().labels(MANAGED_SELECTOR);
        let mut events = watcher(api, cfg).default_backoff().boxed();
        let mut listing: Option<HashSet<String>> = None;
        while let Some(ev) = events.next().await {
            match ev {
                Ok(watcher::Event::Init) => listing = Some(HashSet::new()),
                Ok(watcher::Event::InitApply(o)) => {
                    if let Some(k) = key_of(&o) {
                        if let Some(l) = listing.as_mut() {
                            l.insert(k.clone());
                        }
                        shared.set(k, Seen::Present(Arc::new(o)));
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if let Some(l) = listing.take() {
                        shared.relisted(&l);
                    }
                }
                Ok(watcher::Event::Apply(o)) => {
                    if let Some(k) = key_of(&o) {
                        shared.set(k, Seen::Present(Arc::new(o)));
                    }
                }
                Ok(watcher::Event::Delete(o)) => {
                    if let Some(k) = key_of(&o) {
                        shared.set(k, Seen::Deleted);
                    }
                }
                Err(e) => tracing::warn!(%namespace, what, error = %e, "shared watch; it retries"),
            }
        }
    });
}

type ByNamespace<K> = Mutex<HashMap<String, Arc<Shared<K>>>>;

/// The shared Job and pod watches of one cluster connection, started per namespace on first
/// use.
pub struct Informers {
    client: kube::Client,
    jobs: ByNamespace<DynamicObject>,
    pods: ByNamespace<Pod>,
}

fn job_key(j: &DynamicObject) -> Option<String> {
    j.metadata.name.clone()
}

/// A pod by the Job it belongs to; with a retried pod, the newest event wins.
fn pod_key(p: &Pod) -> Option<String> {
    p.metadata.labels.as_ref()?.get("job-name").cloned()
}

impl Informers {
    pub fn new(client: kube::Client) -> Informers {
        Informers {
            client,
            jobs: Mutex::new(HashMap::new()),
            pods: Mutex::new(HashMap::new()),
        }
    }

    fn jobs_in(&self, namespace: &str) -> Arc<Shared<DynamicObject>> {
        let mut m = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(namespace.to_string())
            .or_insert_with(|| {
                let shared = Arc::new(Shared::new());
                let api: Api<DynamicObject> = Api::namespaced_with(
                    self.client.clone(),
                    namespace,
                    &ApiResource::erase::<Job>(&()),
                );
                spawn_feed(api, shared.clone(), job_key, "jobs", namespace.to_string());
                shared
            })
            .clone()
    }

    fn pods_in(&self, namespace: &str) -> Arc<Shared<Pod>> {
        let mut m = self.pods.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(namespace.to_string())
            .or_insert_with(|| {
                let shared = Arc::new(Shared::new());
                let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
                spawn_feed(api, shared.clone(), pod_key, "pods", namespace.to_string());
                shared
            })
            .clone()
    }

    /// The Job `name`'s newest state, as it changes.
    pub fn job(&self, namespace: &str, name: &str) -> watch::Receiver<Seen<DynamicObject>> {
        self.jobs_in(namespace).subscribe(name)
    }

    /// The newest pod of Job `job`, as it changes.
    pub fn pod_of(&self, namespace: &str, job: &str) -> watch::Receiver<Seen<Pod>> {
        self.pods_in(namespace).subscribe(job)
    }

    /// The step of Job `job` is over: its keys may go once nobody waits for them.
    pub fn release(&self, namespace: &str, job: &str) {
        self.jobs_in(namespace).release(job);
        self.pods_in(namespace).release(job);
    }
}

/// Waits until `rx` shows a state for which `pick` returns something (checked at once and on
/// every change); `None` when the watch has stopped (the process is ending).
pub async fn wait_for<K, T>(
    rx: &mut watch::Receiver<Seen<K>>,
    mut pick: impl FnMut(&Seen<K>) -> Option<T>,
) -> Option<T> {
    loop {
        if let Some(t) = pick(&rx.borrow_and_update()) {
            return Some(t);
        }
        rx.changed().await.ok()?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_seen_deleted_after_a_relist_that_misses_it_and_unwatched_keys_go() {
        let s: Shared<String> = Shared::new();
        let mut rx = s.subscribe("a");
        s.set("a".into(), Seen::Present(Arc::new("v1".into())));
        s.set("b".into(), Seen::Present(Arc::new("v1".into())));
        assert!(matches!(&*rx.borrow_and_update(), Seen::Present(v) if v.as_str() == "v1"));
        // A re-list that lists neither: `a` is waited for and becomes Deleted; `b` goes.
        s.relisted(&HashSet::new());
        assert!(matches!(&*rx.borrow_and_update(), Seen::Deleted));
        assert!(!s.lock().contains_key("b"));
        // Deleting a key nobody waits for leaves nothing behind.
        s.set("c".into(), Seen::Deleted);
        assert!(!s.lock().contains_key("c"));
        drop(rx);
        s.release("a");
        assert!(s.lock().is_empty());
    }

    #[tokio::test]
    async fn wait_for_sees_the_current_state_and_later_changes() {
        let s: Shared<u32> = Shared::new();
        s.set("k".into(), Seen::Present(Arc::new(1)));
        let mut rx = s.subscribe("k");
        let now = wait_for(&mut rx, |v| match v {
            Seen::Present(n) => Some(**n),
            _ => None,
        })
        .await;
        assert_eq!(now, Some(1));
        let waiter = tokio::spawn(async move {
            wait_for(&mut rx, |v| match v {
                Seen::Present(n) if **n >= 3 => Some(**n),
                _ => None,
            })
            .await
        });
        s.set("k".into(), Seen::Present(Arc::new(2)));
        s.set("k".into(), Seen::Present(Arc::new(3)));
        assert_eq!(waiter.await.ok().flatten(), Some(3));
    }
}
