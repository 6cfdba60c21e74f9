//! EventSources as running components: each entry of an EventSource (`spec.<type>.<event
//! name>`, compiled by [`spec::event_source`]) becomes a task that receives from its
//! producer, hands envelopes to [`Events::ingest`] and acknowledges the producer only after
//! the commit. One module per source type; [`run_source`] is the only place that knows them
//! all.
//!
//! Tasks reconnect with jittered backoff after a retryable [`SourceError`]; a permanent one
//! (the definition cannot work) parks the task until the definition changes. A changed
//! definition restarts its tasks, a deleted one stops them, and stopping is graceful: a
//! source stops between messages, so what it received is stored and acknowledged first.
//!
//! Webhook entries are grouped by port: one HTTP listener per port serves every endpoint
//! configured on it (the port is the entries' shared resource, see [`claim_endpoints`]).
//! They are also reachable on the API port at
//! `/api/v1/webhooks/{namespace}/{eventSource}/{eventName}`.

mod amqp;
mod calendar;
mod file;
mod mqtt;
mod nats;
mod redis;
mod resource;
mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use events::Event;
use serde_json::Value;
use spec::event_source::{CompiledEventSource, SourceConfig};
use store::EventIdentity;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::Events;
use crate::driver::now_ms;

pub use webhook::{WebhookEntry, receive_webhook};

/// How long a stopping source may take to finish the message in hand before it is aborted.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Why a source stopped receiving.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The producer could not be reached, refused or dropped the connection, or its stream
    /// ended: retried with backoff.
    #[error("{what}: {message}")]
    Connection { what: String, message: String },
    /// Storing the events failed: retried; nothing was acknowledged, so the producer still
    /// has them.
    #[error("storing events: {0}")]
    Store(String),
    /// The definition cannot work as written (a schedule croner rejects, a resource source
    /// without a cluster): not retried until the definition changes.
    #[error("{0}")]
    Config(String),
}

impl SourceError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, SourceError::Config(_))
    }
}

/// A `map_err` for a connection-level failure doing `what`.
fn connection<E: std::fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> SourceError {
    let what = what.into();
    move |e| SourceError::Connection {
        what,
        message: e.to_string(),
    }
}

/// The producer's stream of messages ended (a closed connection, a deleted consumer).
fn ended(what: &str) -> SourceError {
    SourceError::Connection {
        what: what.into(),
        message: "the other side closed it".into(),
    }
}

/// A running entry.
struct RunningSource {
    config: SourceConfig,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// A webhook port's listener.
struct Listener {
    endpoints: Endpoints,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// Running source tasks, by what they run.
#[derive(Default)]
pub struct Supervisor {
    /// `namespace/name/type/event` → its task.
    tasks: HashMap<String, RunningSource>,
    /// port → its listener. A change of endpoints swaps them in place: the socket stays
    /// open, so no request is refused.
    listeners: HashMap<u16, Listener>,
    /// The definitions of the last sync, to restart what stopped (a listener whose port
    /// was taken, a source that gave up) without reading the store.
    last: Vec<Arc<CompiledEventSource>>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for (_, r) in self.tasks.drain() {
            r.task.abort();
        }
        for (_, l) in self.listeners.drain() {
            l.task.abort();
        }
    }
}

/// The endpoints a webhook listener serves, replaced whole when a definition changes.
type Endpoints = Arc<std::sync::RwLock<Arc<Vec<WebhookEntry>>>>;

impl Supervisor {
    /// Restarts the tasks of the last definitions that have stopped.
    pub(super) async fn resync(&mut self, events: &Events) {
        let defs = self.last.clone();
        self.sync(events, defs).await;
    }

    /// Stops every source gracefully (server shutdown): each finishes the message in hand.
    pub(super) async fn stop_all(&mut self) {
        self.last.clear();
        let stopping: Vec<_> = self
            .tasks
            .drain()
            .map(|(_, r)| (r.stop, r.task))
            .chain(self.listeners.drain().map(|(_, l)| (l.stop, l.task)))
            .collect();
        stop_gracefully(stopping).await;
    }

    /// Starts, restarts and stops tasks so that they match `defs`.
    pub(super) async fn sync(&mut self, events: &Events, defs: Vec<Arc<CompiledEventSource>>) {
        let mut wanted: HashMap<String, (SourceConfig, SourceCtx)> = HashMap::new();
        let mut ports: BTreeMap<u16, Vec<WebhookEntry>> = BTreeMap::new();
        for o in &defs {
            for entry in &o.entries {
                if let SourceConfig::Webhook(w) = &entry.config {
                    ports.entry(w.port).or_default().push(WebhookEntry {
                        namespace: o.namespace.clone(),
                        event_source: o.name.clone(),
                        event_name: entry.event_name.clone(),
                        config: w.clone(),
                    });
                    continue;
                }
                let key = format!(
                    "{}/{}/{}/{}",
                    o.namespace,
                    o.name,
                    entry.config.kind(),
                    entry.event_name
                );
                let ctx = SourceCtx {
                    events: events.clone(),
                    namespace: o.namespace.clone(),
                    event_source: o.name.clone(),
                    event_name: entry.event_name.clone(),
                    stop: CancellationToken::new(),
                };
                wanted.insert(key, (entry.config.clone(), ctx));
            }
        }
        self.last = defs;
        let mut stopping = Vec::new();
        let stale: Vec<String> = self
            .tasks
            .iter()
            .filter(|(key, r)| {
                r.task.is_finished() || wanted.get(*key).is_none_or(|w| w.0 != r.config)
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            if let Some(r) = self.tasks.remove(&key) {
                stopping.push((r.stop, r.task));
            }
        }
        let wanted_ports: BTreeMap<u16, Vec<WebhookEntry>> = ports
            .into_iter()
            .map(|(port, entries)| (port, claim_endpoints(port, entries)))
            .collect();
        let stale: Vec<u16> = self
            .listeners
            .iter()
            .filter(|(port, l)| l.task.is_finished() || !wanted_ports.contains_key(*port))
            .map(|(port, _)| *port)
            .collect();
        for port in stale {
            if let Some(l) = self.listeners.remove(&port) {
                stopping.push((l.stop, l.task));
            }
        }
        // A restarted entry starts after its old task let go (a broker session, a consumer
        // name, a port): two of them at once would fight over it.
        stop_gracefully(stopping).await;
        for (key, (config, ctx)) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let stop = ctx.stop.clone();
            let run = config.clone();
            let task = tokio::spawn(async move { run_source(ctx, run).await });
            self.tasks.insert(key, RunningSource { config, stop, task });
        }
        for (port, entries) in wanted_ports {
            if let Some(l) = self.listeners.get(&port) {
                let mut current = match l.endpoints.write() {
                    Ok(e) => e,
                    Err(p) => p.into_inner(),
                };
                if **current != entries {
                    *current = Arc::new(entries);
                }
                continue;
            }
            let endpoints: Endpoints = Arc::new(std::sync::RwLock::new(Arc::new(entries)));
            let stop = CancellationToken::new();
            let task = tokio::spawn(webhook::listen(
                events.clone(),
                port,
                endpoints.clone(),
                stop.clone(),
            ));
            self.listeners.insert(
                port,
                Listener {
                    endpoints,
                    stop,
                    task,
                },
            );
        }
    }
}

/// Asks each task to stop, waits up to [`STOP_GRACE`] for them, then aborts the rest.
async fn stop_gracefully(stopping: Vec<(CancellationToken, JoinHandle<()>)>) {
    if stopping.is_empty() {
        return;
    }
    let mut tasks = Vec::new();
    for (stop, task) in stopping {
        stop.cancel();
        tasks.push(task);
    }
    let deadline = tokio::time::Instant::now() + STOP_GRACE;
    for mut task in tasks {
        if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
            tracing::warn!("an event source did not stop within its grace; aborting it");
            task.abort();
        }
    }
}

/// The entries of one port, each endpoint once: entries of several EventSources may share a
/// port with distinct endpoints; an endpoint claimed twice is an error naming both, and the
/// first (by namespace, EventSource and entry name) keeps it.
fn claim_endpoints(port: u16, mut entries: Vec<WebhookEntry>) -> Vec<WebhookEntry> {
    entries.sort_by(|a, b| {
        (&a.namespace, &a.event_source, &a.event_name).cmp(&(
            &b.namespace,
            &b.event_source,
            &b.event_name,
        ))
    });
    let mut claimed: HashMap<String, String> = HashMap::new();
    entries.retain(|e| {
        let who = format!("{}/{} entry {}", e.namespace, e.event_source, e.event_name);
        match claimed.get(&e.config.endpoint) {
            Some(first) => {
                tracing::error!(port, endpoint = %e.config.endpoint, kept = %first, refused = %who, "two webhook entries claim one port and endpoint; give one another endpoint or port");
                false
            }
            None => {
                claimed.insert(e.config.endpoint.clone(), who);
                true
            }
        }
    });
    entries
}

/// What a source task knows about where its events go, and when to stop.
#[derive(Clone)]
pub struct SourceCtx {
    pub events: Events,
    pub namespace: String,
    pub event_source: String,
    pub event_name: String,
    /// Cancelled when the entry is to stop: sources check it between messages.
    pub stop: CancellationToken,
}

impl SourceCtx {
    /// An envelope from this source (`source` = the EventSource's name, like Argo).
    fn event(&self, kind: &str, id: String, data: Value) -> Event {
        Event {
            id,
            source: self.event_source.clone(),
            kind: kind.to_string(),
            subject: self.event_name.clone(),
            time: expr::time::rfc3339(now_ms()),
            datacontenttype: "application/json".into(),
            data,
        }
    }

    /// `next`, unless the source is asked to stop first (then `None`). Sources wait for
    /// their next message through this and handle a message they got to the end (commit,
    /// then acknowledgement), so stopping loses and repeats nothing.
    async fn until_stopped<T>(&self, next: impl std::future::Future<Output = T>) -> Option<T> {
        tokio::select! {
            biased;
            _ = self.stop.cancelled() => None,
            v = next => Some(v),
        }
    }

    /// Stores events keyed by their ids; returns after the commit (the caller acknowledges
    /// its producer then).
    async fn ingest(&self, events: Vec<Event>) -> Result<(), SourceError> {
        self.ingest_identified(super::by_id(events)).await
    }

    /// Stores events with their identities; returns after the commit.
    async fn ingest_identified(
        &self,
        events: Vec<(Event, EventIdentity)>,
    ) -> Result<(), SourceError> {
        let kind = events
            .first()
            .map(|(e, _)| e.kind.clone())
            .unwrap_or_default();
        self.events
            .ingest_identified(
                &self.namespace,
                &self.event_source,
                &self.event_name,
                events,
            )
            .await
            .map_err(|e| SourceError::Store(store::chain(&e)))?;
        // The moment a crash makes the broker re-deliver what is stored.
        crate::failpoint::reached(|| format!("source.{kind}.after-commit"));
        Ok(())
    }

    /// The identity of a broker message without a producer id: a digest of what the broker
    /// keeps when it re-delivers (the entry it arrived on, then the given parts), with its
    /// re-delivery flag.
    fn delivery_identity(&self, parts: &[&[u8]], redelivered: bool) -> EventIdentity {
        let mut all: Vec<&[u8]> = vec![self.event_name.as_bytes()];
        all.extend_from_slice(parts);
        EventIdentity::Delivery {
            digest: events::ingest::delivery_digest(&all),
            redelivered,
        }
    }
}

/// Runs one entry until it is stopped: restarts it after retryable errors with jittered
/// exponential backoff (1 s doubling to 30 s, reset after 30 s of running), parks it after a
/// permanent one.
async fn run_source(ctx: SourceCtx, config: SourceConfig) {
    let mut backoff = 1.0f64;
    loop {
        let started = std::time::Instant::now();
        let result = match &config {
            SourceConfig::Calendar(c) => calendar::run(&ctx, c).await,
            SourceConfig::File(c) => file::run(&ctx, c).await,
            SourceConfig::Nats(c) => nats::run(&ctx, c).await,
            SourceConfig::Mqtt(c) => mqtt::run(&ctx, c).await,
            SourceConfig::Amqp(c) => amqp::run(&ctx, c).await,
            SourceConfig::Redis(c) => redis::run_pubsub(&ctx, c).await,
            SourceConfig::RedisStream(c) => redis::run_stream(&ctx, c).await,
            SourceConfig::Resource(c) => resource::run(&ctx, c).await,
            // Served by the port's listener.
            SourceConfig::Webhook(_) => return,
        };
        let kind = config.kind();
        match result {
            Ok(()) => return,
            Err(e) if !e.is_retryable() => {
                crate::metrics::source_error(&ctx.event_source);
                tracing::error!(namespace = %ctx.namespace, event_source = %ctx.event_source, event = %ctx.event_name, kind, error = %e, "event source cannot run as defined; fix the EventSource (it starts again when its definition changes)");
                ctx.stop.cancelled().await;
                return;
            }
            Err(e) => {
                crate::metrics::source_error(&ctx.event_source);
                tracing::warn!(namespace = %ctx.namespace, event_source = %ctx.event_source, event = %ctx.event_name, kind, error = %e, "event source failed; restarting");
            }
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = 1.0;
        }
        // Jitter spreads the reconnects of many entries (and replicas) after a broker restart.
        let wait = backoff * (0.5 + rand::random::<f64>() * 0.5);
        if ctx
            .until_stopped(tokio::time::sleep(Duration::from_secs_f64(wait)))
            .await
            .is_none()
        {
            return;
        }
        backoff = (backoff * 2.0).min(30.0);
    }
}

/// Bodies of broker messages: JSON when they parse (Argo's `jsonBody`), text otherwise.
fn body_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use spec::event_source::{Format, Webhook};

    #[test]
    fn one_port_serves_each_endpoint_once_and_the_first_claim_keeps_it() {
        let entry = |source: &str, name: &str, endpoint: &str| WebhookEntry {
            namespace: "default".into(),
            event_source: source.into(),
            event_name: name.into(),
            config: Webhook {
                port: 12000,
                endpoint: endpoint.into(),
                method: "POST".into(),
                max_payload_size: None,
                auth_secret: None,
                hmac: None,
                format: Format::Auto,
            },
        };
        let kept = claim_endpoints(
            12000,
            vec![
                entry("trivy", "reports", "/trivy"),
                entry("falco", "alerts", "/falco"),
                entry("tracee", "alerts", "/falco"),
                entry("audit", "batches", "/audit"),
            ],
        );
        let got: Vec<(&str, &str)> = kept
            .iter()
            .map(|e| (e.event_source.as_str(), e.config.endpoint.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("audit", "/audit"),
                ("falco", "/falco"),
                ("trivy", "/trivy")
            ],
            "distinct endpoints share the port; the second claim of /falco is refused"
        );
    }

    #[test]
    fn only_configuration_errors_are_permanent() {
        assert!(!SourceError::Config("bad schedule".into()).is_retryable());
        assert!(SourceError::Store("database down".into()).is_retryable());
        assert!(
            SourceError::Connection {
                what: "connecting".into(),
                message: "refused".into()
            }
            .is_retryable()
        );
    }
}
