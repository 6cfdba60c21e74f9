//! Events: sources → store → bus → sensors → triggers (see `ARCHITECTURE.md`, "Events").
//!
//! - [`Events::ingest`] stores a receiver's envelopes (one transaction, keyed by source and
//!   id) and only then lets the receiver acknowledge its producer; then it publishes the
//!   events' sequence numbers on the [`bus`].
//! - The processor takes sequence numbers off the bus, asks every armed sensor of the event's
//!   namespace for its decision (the pure `events::sensor::decide`), carries out the firings
//!   ([`triggers`]), stores each decision and marks the event processed. A sweeper re-delivers
//!   events left unprocessed (a crash, a bus outage, a database error), so none is lost; every
//!   firing has an idempotency key, so re-delivery never doubles a workflow.
//! - [`sources`] run the EventSources (webhook listeners, calendar, brokers, resource
//!   watches, files), restarted when their definitions change.

pub mod bindings;
pub mod bus;
pub mod dry_run;
pub mod sources;
pub mod triggers;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use events::sensor::{Decision, Incoming, TriggerResult, Waiting};
use events::{Event, ingest};
use serde_json::{Value, json};
use spec::event_source::{CompiledEventSource, SecretRef};
use spec::sensor::{CompiledSensor, RateLimit};
use store::{EventIdentity, EventRecord, NewEvent};

use crate::controller::{ControlError, Controller};
use crate::driver::now_ms;
use crate::group_commit::{GroupCommit, together_or_alone};

pub use bus::BusConfig;

/// The kinds stored in `event_objects`.
pub const SENSOR: &str = "Sensor";
pub const EVENT_SOURCE: &str = "EventSource";
pub const BINDING: &str = "WorkflowEventBinding";

/// How the events half runs.
#[derive(Debug, Clone)]
pub struct EventsConfig {
    pub bus: BusConfig,
    /// Processed events older than this are deleted.
    pub retention_ms: i64,
    /// Where Kubernetes-style secret references (`{name, key}`) are read from:
    /// `DIR/<name>/<key>`, like a mounted Secret volume.
    pub secrets_dir: std::path::PathBuf,
    /// Start EventSources (listeners, brokers); off in tests that only post to the API.
    pub run_sources: bool,
    /// The address webhook event sources listen on (their own ports): the API's, so a
    /// loopback-only server does not open ports to the network.
    pub webhook_host: std::net::IpAddr,
}

impl Default for EventsConfig {
    fn default() -> EventsConfig {
        EventsConfig {
            bus: BusConfig::Memory,
            retention_ms: 7 * 24 * 3600 * 1000,
            secrets_dir: "/var/run/riposte/secrets".into(),
            run_sources: true,
            webhook_host: std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("{0}")]
    Invalid(String),
    #[error("event bus: {0}")]
    Bus(String),
}

impl From<EventsError> for ControlError {
    fn from(e: EventsError) -> ControlError {
        match e {
            EventsError::Store(s) => ControlError::Store(s),
            EventsError::Invalid(m) => ControlError::Invalid(m),
            EventsError::Bus(m) => ControlError::Invalid(format!("event bus: {m}")),
        }
    }
}

/// The events half of a server; cheap to clone.
#[derive(Clone)]
pub struct Events {
    inner: Arc<Inner>,
}

struct Inner {
    controller: Controller,
    config: EventsConfig,
    bus: bus::Bus,
    /// Armed sensors, compiled, reloaded on change and every few seconds (a sensor whose
    /// stored body did not change keeps its compilation).
    sensors: tokio::sync::RwLock<Arc<Vec<ArmedSensor>>>,
    /// WorkflowEventBindings compiled, by `namespace/name`, with the body they came from.
    bindings: Mutex<HashMap<String, (Value, Arc<spec::binding::CompiledBinding>)>>,
    /// EventSources compiled, by `namespace/name`, with the body they came from (reloaded
    /// with the sensors; an unchanged body keeps its compilation).
    event_sources: tokio::sync::RwLock<Arc<HashMap<String, ArmedSource>>>,
    /// Sensors whose triggers wait for several dependencies are decided one event at a time.
    sensor_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Events being processed here (a second delivery waits for the next round).
    in_flight: Mutex<HashSet<i64>>,
    /// Events this replica put on the bus, and when: the sweeper leaves them alone for a
    /// while, so a backlog is not multiplied by re-publication.
    published: Mutex<HashMap<i64, i64>>,
    rate: Mutex<HashMap<String, RateWindow>>,
    /// Firings (by key) waiting out their trigger's retry backoff.
    retries: Mutex<HashMap<String, triggers::RetryStanding>>,
    /// Events to ask again later, `(seq, in ms)`: firings a rate limit deferred.
    deferred: tokio::sync::mpsc::UnboundedSender<(i64, i64)>,
    sources: tokio::sync::Mutex<sources::Supervisor>,
    /// Received events of concurrent requests are stored in shared transactions.
    event_writer: GroupCommit<Vec<NewEvent>, Result<Vec<store::Appended>, store::StoreError>>,
    /// Sensor decisions of concurrent events are recorded in shared transactions.
    decision_writer: GroupCommit<store::DecisionWrite, Result<(), store::StoreError>>,
    /// Workflows that firings of concurrent events submit are recorded in shared transactions.
    submitter: GroupCommit<crate::SubmitRequest, Result<crate::SubmitOutcome, ControlError>>,
}

struct RateWindow {
    started: i64,
    count: u64,
}

impl Events {
    /// Connects the bus, loads sensors and starts the processor, the sweeper and (with
    /// `run_sources`) the event sources.
    pub async fn start(
        controller: Controller,
        config: EventsConfig,
    ) -> Result<Events, EventsError> {
        let bus = bus::Bus::connect(&config.bus).await?;
        let event_writer = event_writer(controller.store().clone());
        let decision_writer = decision_writer(controller.store().clone());
        let submitter = {
            let controller = controller.clone();
            GroupCommit::start(128, 4, move |reqs| {
                let controller = controller.clone();
                async move { controller.submit_many(reqs).await }
            })
        };
        let (deferred, deferred_rx) = tokio::sync::mpsc::unbounded_channel();
        let events = Events {
            inner: Arc::new(Inner {
                controller,
                bus,
                sensors: tokio::sync::RwLock::new(Arc::new(Vec::new())),
                bindings: Mutex::new(HashMap::new()),
                event_sources: tokio::sync::RwLock::new(Arc::new(HashMap::new())),
                sensor_locks: Mutex::new(HashMap::new()),
                in_flight: Mutex::new(HashSet::new()),
                published: Mutex::new(HashMap::new()),
                rate: Mutex::new(HashMap::new()),
                retries: Mutex::new(HashMap::new()),
                deferred,
                sources: tokio::sync::Mutex::new(sources::Supervisor::default()),
                event_writer,
                decision_writer,
                submitter,
                config,
            }),
        };
        events.reload().await?;
        events.inner.bus.start_consumer(events.clone()).await?;
        tokio::spawn(events.clone().sweep_loop());
        tokio::spawn(events.clone().listen_loop());
        tokio::spawn(events.clone().deferred_loop(deferred_rx));
        Ok(events)
    }

    pub fn controller(&self) -> &Controller {
        &self.inner.controller
    }

    pub fn config(&self) -> &EventsConfig {
        &self.inner.config
    }

    /// Re-reads sensors and event sources from the store (after a change through the API, a
    /// config directory, or periodically for other replicas' changes) and restarts the
    /// sources whose definitions changed.
    pub async fn reload(&self) -> Result<(), EventsError> {
        let store = self.inner.controller.store();
        let stored = store.list_event_objects(SENSOR, None).await?;
        let previous = self.inner.sensors.read().await.clone();
        let sensors: Vec<ArmedSensor> = stored
            .into_iter()
            .filter_map(|o| {
                let mut body = o.body;
                body["metadata"]["namespace"] = json!(o.namespace);
                if let Some(same) = previous.iter().find(|a| a.body == body) {
                    return Some(same.clone());
                }
                match spec::sensor::compile_sensor(&body) {
                    Ok(compiled) => Some(ArmedSensor {
                        body,
                        compiled: Arc::new(compiled),
                    }),
                    Err(e) => {
                        // Stored before a stricter check (the API refuses such sensors):
                        // say so and leave it unarmed rather than guess.
                        tracing::error!(sensor = %format!("{}/{}", o.namespace, o.name), error = %e, "sensor not armed");
                        None
                    }
                }
            })
            .collect();
        *self.inner.sensors.write().await = Arc::new(sensors);
        let defs = store.list_event_objects(EVENT_SOURCE, None).await?;
        let previous = self.inner.event_sources.read().await.clone();
        let mut armed: HashMap<String, ArmedSource> = HashMap::new();
        for o in defs {
            let key = format!("{}/{}", o.namespace, o.name);
            let mut body = o.body;
            body["metadata"]["namespace"] = json!(o.namespace);
            if let Some(same) = previous.get(&key).filter(|a| a.body == body) {
                armed.insert(key, same.clone());
                continue;
            }
            match spec::event_source::compile_event_source(&body) {
                Ok(compiled) => {
                    armed.insert(
                        key,
                        ArmedSource {
                            body,
                            compiled: Arc::new(compiled),
                        },
                    );
                }
                Err(e) => {
                    tracing::error!(event_source = %key, error = %e, "event source not started");
                }
            }
        }
        let compiled: Vec<Arc<CompiledEventSource>> =
            armed.values().map(|a| a.compiled.clone()).collect();
        *self.inner.event_sources.write().await = Arc::new(armed);
        if self.inner.config.run_sources {
            self.inner.sources.lock().await.sync(self, compiled).await;
        }
        Ok(())
    }

    /// After a Sensor, EventSource or binding was stored or deleted: tells the other replicas
    /// (they reload at once) and reloads here.
    pub async fn definitions_changed(&self) -> Result<(), EventsError> {
        if let Err(e) = self
            .inner
            .controller
            .store()
            .notify_definitions_changed()
            .await
        {
            // The other replicas' periodic reload still finds it.
            tracing::warn!(error = %store::chain(&e), "telling the other replicas of a definition change");
        }
        self.reload().await
    }

    /// Reloads whenever another replica changes a definition (PostgreSQL `LISTEN`), and after
    /// the listening connection comes back, since changes in between may have been missed.
    async fn listen_loop(self) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let mut listener = match self.inner.controller.store().listen_definitions().await {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    tracing::warn!(error = %store::chain(&e), "listening for definition changes; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            backoff = Duration::from_millis(500);
            loop {
                match listener.changed().await {
                    Ok(_) => {
                        if let Err(e) = self.reload().await {
                            tracing::warn!(error = %store::chain(&e), "reloading sensors after a change");
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %store::chain(&e), "listening for definition changes; reconnecting");
                        break;
                    }
                }
            }
        }
    }

    /// An EventSource's definition as last loaded (changes through this replica's API are
    /// loaded at once, other replicas' as soon as their notification arrives).
    pub async fn event_source(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<CompiledEventSource>> {
        self.inner
            .event_sources
            .read()
            .await
            .get(&format!("{namespace}/{name}"))
            .map(|a| a.compiled.clone())
    }

    /// Stops the event sources gracefully (server shutdown): each finishes storing and
    /// acknowledging the message in hand; webhook requests in flight are answered.
    pub async fn stop_sources(&self) {
        self.inner.sources.lock().await.stop_all().await;
    }

    /// Stores a receiver's envelopes (one transaction), then publishes them for the sensors.
    /// Returns after the commit: the caller may acknowledge its producer. Duplicates (same
    /// namespace, source and id) are acknowledged and not processed again.
    pub async fn ingest(
        &self,
        namespace: &str,
        event_source: &str,
        event_name: &str,
        events: Vec<Event>,
    ) -> Result<Vec<store::Appended>, EventsError> {
        self.ingest_identified(namespace, event_source, event_name, by_id(events))
            .await
    }

    /// [`Events::ingest`] for deliveries whose identity is not (only) the envelope's id: a
    /// broker message without a producer id is keyed by its digest and re-delivery flag.
    pub async fn ingest_identified(
        &self,
        namespace: &str,
        event_source: &str,
        event_name: &str,
        events: Vec<(Event, EventIdentity)>,
    ) -> Result<Vec<store::Appended>, EventsError> {
        let now = now_ms();
        let rows: Vec<NewEvent> = events
            .into_iter()
            .map(|(e, identity)| {
                let envelope = envelope_json(&e);
                NewEvent {
                    source: e.source,
                    identity,
                    namespace: namespace.to_string(),
                    event_source: event_source.to_string(),
                    event_name: event_name.to_string(),
                    received_at: now,
                    envelope,
                }
            })
            .collect();
        let appended = self.inner.event_writer.call(rows).await.ok_or_else(|| {
            EventsError::Bus("the event writer has stopped (shutting down)".into())
        })??;
        for a in &appended {
            crate::metrics::event_received(event_source, a.duplicate);
            if !a.duplicate {
                self.mark_published(a.seq, now);
            }
        }
        // Published after the producer's answer: a slow or unreachable bus (NATS restarting)
        // must not hold webhook responses. The event is stored; a publish that fails is the
        // sweeper's to repeat.
        let fresh: Vec<i64> = appended
            .iter()
            .filter(|a| !a.duplicate)
            .map(|a| a.seq)
            .collect();
        if !fresh.is_empty() {
            let this = self.clone();
            tokio::spawn(async move {
                for seq in fresh {
                    if let Err(e) = this.inner.bus.publish(seq).await {
                        tracing::warn!(seq, error = %e, "publishing an event failed; the sweeper re-delivers it");
                        // Not "published": the sweeper may take it at once.
                        if let Ok(mut p) = this.inner.published.lock() {
                            p.remove(&seq);
                        }
                    }
                }
            });
        }
        Ok(appended)
    }

    /// Receives one HTTP request on a webhook event source: recognises its shape, stores its
    /// events and returns them.
    pub async fn receive_http(
        &self,
        namespace: &str,
        event_source: &str,
        event_name: &str,
        format: ingest::Format,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Vec<store::Appended>, EventsError> {
        let now = expr::time::rfc3339(now_ms());
        let r = ingest::Received {
            headers,
            body,
            event_source,
            event_name,
            now: &now,
        };
        let events = ingest::envelopes(&r, format, &mut || uuid::Uuid::new_v4().to_string())
            .map_err(|e| EventsError::Invalid(e.0))?;
        self.ingest(namespace, event_source, event_name, events)
            .await
    }

    /// Decides every armed sensor of the event's namespace about event `seq`, carries out the
    /// firings and records the decisions. Returns whether the event is done (false: a store or
    /// transient error; it stays unprocessed and is re-delivered).
    pub async fn process(&self, seq: i64) -> bool {
        self.process_as(seq, Delivery::Bus).await
    }

    /// [`Events::process`] for a delivery the bus says it made before (JetStream's delivery
    /// count): sensors that decided for good are not asked again.
    pub async fn process_redelivered(&self, seq: i64) -> bool {
        self.process_as(seq, Delivery::Again).await
    }

    /// Processes `seq` unless it is processed already (a producer's retry of a stored
    /// event), and waits until it is done, by this call or by the one the bus started first,
    /// for at most `within`. Returns whether it is done.
    pub async fn process_and_wait(&self, seq: i64, within: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        let mut pause = Duration::from_millis(10);
        loop {
            match self.inner.controller.store().get_event(seq).await {
                Ok(rec) if rec.processed_at.is_some() => return true,
                _ => {}
            }
            if self.process(seq).await {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn process_as(&self, seq: i64, delivery: Delivery) -> bool {
        if !self
            .inner
            .in_flight
            .lock()
            .map(|mut s| s.insert(seq))
            .unwrap_or(false)
        {
            return false;
        }
        let processed = match self.process_inner(seq, delivery).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(seq, error = %store::chain(&e), "processing an event failed; it will be re-delivered");
                Processed::retry()
            }
        };
        if let Ok(mut s) = self.inner.in_flight.lock() {
            s.remove(&seq);
        }
        match processed.again_in {
            // A rate-limited firing: asked again when its window allows, by a timer that
            // holds no lock and no bus slot; the sweeper waits for it (a minute's grace).
            Some(wait) => {
                self.mark_published(seq, now_ms() + wait);
                let _ = self.inner.deferred.send((seq, wait));
            }
            // Done, or failed (a store error): either way it no longer waits on the bus, so
            // a failed one is the sweeper's again at once.
            None => {
                if let Ok(mut p) = self.inner.published.lock() {
                    p.remove(&seq);
                }
            }
        }
        processed.done
    }

    /// Asks deferred events again when their time comes, each on a timer of its own.
    async fn deferred_loop(self, mut rx: tokio::sync::mpsc::UnboundedReceiver<(i64, i64)>) {
        while let Some((seq, wait)) = rx.recv().await {
            let this = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
                this.process_as(seq, Delivery::Again).await;
            });
        }
    }

    fn mark_published(&self, seq: i64, at: i64) {
        if let Ok(mut p) = self.inner.published.lock() {
            p.insert(seq, at);
        }
    }

    /// Whether the sweeper should re-publish `seq` now: not while it waits on the bus or is
    /// being processed here (a minute's grace), unless it was never published here.
    fn due_for_redelivery(&self, seq: i64, now: i64) -> bool {
        if self
            .inner
            .in_flight
            .lock()
            .map(|s| s.contains(&seq))
            .unwrap_or(true)
        {
            return false;
        }
        match self.inner.published.lock() {
            Ok(p) => p.get(&seq).is_none_or(|at| now - *at > 60_000),
            Err(_) => true,
        }
    }

    async fn process_inner(&self, seq: i64, delivery: Delivery) -> Result<Processed, EventsError> {
        let store = self.inner.controller.store();
        let rec = match store.get_event(seq).await {
            Ok(r) => r,
            // Pruned or never committed: nothing to do.
            Err(store::StoreError::NotFound { .. }) => return Ok(Processed::done(true)),
            Err(e) => return Err(e.into()),
        };
        if rec.event_source == bindings::BINDING_EVENT_SOURCE {
            return self.dispatch_bindings(&rec).await.map(Processed::done);
        }
        let incoming = incoming_of(&rec)?;
        let sensors = self.inner.sensors.read().await.clone();
        let listening: Vec<&CompiledSensor> = sensors
            .iter()
            .map(|a| a.compiled.as_ref())
            .filter(|s| s.namespace == rec.namespace)
            .filter(|s| s.listens_to(&rec.event_source, &rec.event_name))
            .collect();
        // Delivered again (the sweeper only re-delivers events older than this; a deferred
        // firing and JetStream say so): sensors that already decided for good are not asked
        // again, so a trigger that fired, or failed for good (at most once), is not carried
        // out a second time because another sensor's trigger keeps the event open.
        // A user's `riposte event redeliver` asks every sensor again (that is its purpose).
        let again = delivery == Delivery::Again
            || (delivery == Delivery::Bus && now_ms() - rec.received_at >= 5_000);
        let decided: std::collections::HashSet<String> = if again {
            store
                .event_decisions(seq)
                .await?
                .into_iter()
                .filter(|d| d.decision["final"] == true)
                .map(|d| d.sensor)
                .collect()
        } else {
            Default::default()
        };
        let listening: Vec<&CompiledSensor> = listening
            .into_iter()
            .filter(|s| !decided.contains(&s.key()))
            .collect();
        let mut done = true;
        let mut marked = false;
        let mut again_in: Option<i64> = None;
        for (i, sensor) in listening.iter().enumerate() {
            // The last decision's transaction also marks the event processed (one commit).
            let mark = done && i + 1 == listening.len();
            let (ok, m, wait) = self.decide_sensor(sensor, &incoming, mark).await?;
            done &= ok;
            marked |= m;
            again_in = sooner(again_in, wait);
        }
        if done && !marked {
            store.set_event_processed(seq, Some(now_ms())).await?;
        }
        Ok(Processed { done, again_in })
    }

    /// One sensor's decision, carried out and recorded. Returns whether it is done, whether
    /// the event was marked processed with it (`mark`, when done), and when to ask it again
    /// for a firing its rate limit deferred.
    async fn decide_sensor(
        &self,
        sensor: &CompiledSensor,
        incoming: &Incoming,
        mark: bool,
    ) -> Result<(bool, bool, Option<i64>), EventsError> {
        let key = sensor.key();
        let stateful = sensor.is_stateful();
        let lock = stateful.then(|| self.sensor_lock(&key));
        let _guard = match &lock {
            Some(l) => Some(l.lock().await),
            None => None,
        };
        let waiting = if stateful {
            self.waiting(sensor, &key).await?
        } else {
            Waiting::new()
        };
        let decision = events::sensor::decide(sensor, &waiting, incoming);
        if decision.dependencies.is_empty() {
            return Ok((true, false, None));
        }
        for d in &decision.dependencies {
            crate::metrics::filter_result(&key, d.verdict.matched);
        }
        let mut done = true;
        let mut again_in = None;
        let mut triggers_json = Vec::new();
        for t in &decision.triggers {
            match t {
                TriggerResult::Wait {
                    trigger,
                    conditions,
                    have,
                } => triggers_json.push(json!({
                    "trigger": trigger, "fired": false,
                    "waiting": {"conditions": conditions, "have": have},
                })),
                TriggerResult::Fire(f) => {
                    let outcome = self.fire(sensor, f).await;
                    if outcome.retry_later {
                        done = false;
                    }
                    again_in = sooner(again_in, outcome.deferred_for);
                    crate::metrics::trigger_fired(&key, &f.trigger, outcome.result_label());
                    triggers_json.push(outcome.json(f));
                }
            }
        }
        let record = store::DecisionRecord {
            event_seq: incoming.seq,
            sensor: key.clone(),
            at: now_ms(),
            decision: decision_json(&decision, triggers_json, done),
        };
        let state: Vec<(String, Option<i64>)> = decision
            .state
            .iter()
            .map(|(t, d, s)| (format!("{t}\u{1f}{d}"), *s))
            .collect();
        // A firing that must be retried keeps its inputs: the state does not advance.
        let state = if done { state } else { Vec::new() };
        let processed_at = (mark && done).then(now_ms);
        self.inner
            .decision_writer
            .call(store::DecisionWrite {
                decision: record,
                dependencies: state,
                processed_at,
            })
            .await
            .ok_or_else(|| {
                EventsError::Bus("the decision writer has stopped (shutting down)".into())
            })??;
        Ok((done, processed_at.is_some(), again_in))
    }

    fn sensor_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = match self.inner.sensor_locks.lock() {
            Ok(l) => l,
            Err(p) => p.into_inner(),
        };
        locks.entry(key.to_string()).or_default().clone()
    }

    /// The events a sensor's triggers wait with, from the store. A trigger's
    /// `conditionsReset: [{byTime: {cron, timezone}}]` drops those received before the latest
    /// reset time (a reset applied lazily, so no timer is needed and replicas agree).
    async fn waiting(&self, sensor: &CompiledSensor, key: &str) -> Result<Waiting, EventsError> {
        let store = self.inner.controller.store();
        let now = now_ms();
        let resets: HashMap<&str, &[(String, Option<String>)]> = sensor
            .triggers
            .iter()
            .filter(|t| !t.resets.is_empty())
            .map(|t| (t.name.as_str(), t.resets.as_slice()))
            .collect();
        let mut w = Waiting::new();
        for (entry, seq) in store.sensor_dependencies(key).await? {
            let Some((trigger, dep)) = entry.split_once('\u{1f}') else {
                continue;
            };
            let rec = match store.get_event(seq).await {
                Ok(r) => r,
                Err(store::StoreError::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            let reset = resets.get(trigger).is_some_and(|crons| {
                crons.iter().any(|(cron, tz)| {
                    crate::cron::next_fire(cron, tz.as_deref(), rec.received_at)
                        .is_ok_and(|at| at <= now)
                })
            });
            if reset {
                continue;
            }
            w.entry(trigger.to_string())
                .or_default()
                .insert(dep.to_string(), incoming_of(&rec)?);
        }
        Ok(w)
    }

    /// Re-delivers a stored event to the sensors now armed (idempotent: firings that created a
    /// workflow before return it again).
    pub async fn redeliver(&self, seq: i64) -> Result<bool, EventsError> {
        let store = self.inner.controller.store();
        store.get_event(seq).await?;
        store.set_event_processed(seq, None).await?;
        Ok(self.process_as(seq, Delivery::Requested).await)
    }

    /// Whether a trigger's `rateLimit` lets it fire now; counts the firing when it does.
    fn rate_allows(&self, key: &str, limit: Option<RateLimit>) -> Option<i64> {
        let RateLimit {
            per_unit: per,
            unit_ms,
        } = limit?;
        let now = now_ms();
        let mut rate = match self.inner.rate.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        let w = rate.entry(key.to_string()).or_insert(RateWindow {
            started: now,
            count: 0,
        });
        if now - w.started >= unit_ms {
            w.started = now;
            w.count = 0;
        }
        if w.count < per {
            w.count += 1;
            None
        } else {
            Some(w.started + unit_ms - now)
        }
    }

    async fn sweep_loop(self) {
        /// Every 30 s (the sweeper runs every 2 s).
        const RELOAD_EVERY_SWEEPS: u64 = 15;
        let mut last_prune = 0i64;
        let mut reloads = 0u64;
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let store = self.inner.controller.store();
            let now = now_ms();
            // Entries of events other replicas finished are dropped after a while.
            if let Ok(mut p) = self.inner.published.lock() {
                p.retain(|_, at| now - *at < 600_000);
            }
            match store.unprocessed_events(now - 5_000, 500).await {
                Ok(seqs) => {
                    for seq in seqs {
                        if !self.due_for_redelivery(seq, now) {
                            continue;
                        }
                        self.mark_published(seq, now);
                        if let Err(e) = self.inner.bus.publish(seq).await {
                            tracing::warn!(seq, error = %e, "re-delivering an event failed");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %store::chain(&e), "looking for unprocessed events")
                }
            }
            if now - last_prune > 60_000 {
                last_prune = now;
                match store
                    .prune_events(now - self.inner.config.retention_ms)
                    .await
                {
                    Ok(n) if n > 0 => tracing::info!(pruned = n, "deleted events past retention"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %store::chain(&e), "pruning events"),
                }
            }
            // Other replicas' changes arrive by notification on PostgreSQL; this catches any
            // that could not be sent. SQLite has no other replica.
            reloads += 1;
            if reloads.is_multiple_of(RELOAD_EVERY_SWEEPS) {
                if let Err(e) = self.reload().await {
                    tracing::warn!(error = %store::chain(&e), "reloading sensors");
                }
            } else if self.inner.config.run_sources {
                self.inner.sources.lock().await.resync(&self).await;
            }
        }
    }

    /// A secret referenced as `{name, key}` (a Kubernetes SecretKeySelector), read from the
    /// secrets directory.
    ///
    /// Read on each use without blocking the runtime (a mounted Secret is replaced in place
    /// when it is rotated, so nothing is cached).
    pub async fn secret(&self, selector: &SecretRef) -> Result<String, String> {
        let path = secret_path(&self.inner.config.secrets_dir, selector)?;
        let SecretRef { name, key } = selector;
        tokio::fs::read_to_string(&path)
            .await
            .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
            .map_err(|e| {
                format!(
                    "reading secret {name}/{key} from {}: {e} (mount the Secret there, or set --secrets-dir)",
                    path.display()
                )
            })
    }
}

/// Where a `{name, key}` secret reference is read from: `dir/NAME/KEY`, with name and key
/// plain names (no path of their own).
fn secret_path(dir: &std::path::Path, selector: &SecretRef) -> Result<std::path::PathBuf, String> {
    let SecretRef { name, key } = selector;
    if name.is_empty() {
        return Err("the secret reference has no name".into());
    }
    if key.is_empty() {
        return Err("the secret reference has no key".into());
    }
    if [name, key]
        .iter()
        .any(|s| s.contains('/') || s.contains('\\') || s.contains("..") || s.contains('\0'))
    {
        return Err(format!(
            "secret reference {name}/{key} is not a plain name and key"
        ));
    }
    Ok(dir.join(name).join(key))
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn secret_references_are_plain_names_under_the_secrets_dir() {
        let dir = std::path::Path::new("/run/secrets");
        let r = |name: &str, key: &str| SecretRef {
            name: name.into(),
            key: key.into(),
        };
        let path = secret_path(dir, &r("falco-hook", "token")).expect("plain");
        assert_eq!(path, std::path::Path::new("/run/secrets/falco-hook/token"));
        let refused = [
            r("../etc", "passwd"),
            r("a", "b/c"),
            r("a", ".."),
            r("a\\b", "c"),
            r("", "c"),
            r("a", ""),
        ];
        for r in refused {
            assert!(secret_path(dir, &r).is_err(), "{r:?}");
        }
    }
}

/// Events whose identity is their envelope's id (the producer's or broker's).
pub(crate) fn by_id(events: Vec<Event>) -> Vec<(Event, EventIdentity)> {
    events
        .into_iter()
        .map(|e| {
            let identity = EventIdentity::Id(e.id.clone());
            (e, identity)
        })
        .collect()
}

/// A stored EventSource as started: its body (to tell a changed definition) and its
/// compilation.
#[derive(Clone)]
struct ArmedSource {
    body: Value,
    compiled: Arc<CompiledEventSource>,
}

/// A stored sensor as armed: its body (to tell a changed definition) and its compilation.
#[derive(Clone)]
struct ArmedSensor {
    body: Value,
    compiled: Arc<CompiledSensor>,
}

/// The writer of received events: the events of every request waiting while a commit is in
/// flight go into the next transaction together (each request answered for itself when that
/// fails, see [`together_or_alone`]).
fn event_writer(
    store: store::Store,
) -> GroupCommit<Vec<NewEvent>, Result<Vec<store::Appended>, store::StoreError>> {
    GroupCommit::start(256, 4, move |requests: Vec<Vec<NewEvent>>| {
        let store = store.clone();
        async move {
            together_or_alone(requests, |events| {
                let store = store.clone();
                Box::pin(async move { store.append_events(events).await })
            })
            .await
        }
    })
}

/// The writer of sensor decisions, shared by concurrent events like [`event_writer`].
fn decision_writer(
    store: store::Store,
) -> GroupCommit<store::DecisionWrite, Result<(), store::StoreError>> {
    GroupCommit::start(256, 4, move |writes: Vec<store::DecisionWrite>| {
        let store = store.clone();
        async move {
            let one_each = writes.into_iter().map(|w| vec![w]).collect();
            together_or_alone(one_each, |ws| {
                let store = store.clone();
                Box::pin(async move {
                    store
                        .record_decisions(ws)
                        .await
                        .map(|()| vec![(); ws.len()])
                })
            })
            .await
            .into_iter()
            .map(|r| r.map(drop))
            .collect()
        }
    })
}

fn incoming_of(rec: &EventRecord) -> Result<Incoming, EventsError> {
    let event: Event = serde_json::from_value(rec.envelope.clone()).map_err(|e| {
        EventsError::Store(store::StoreError::Corrupt {
            what: "event envelope",
            message: e.to_string(),
        })
    })?;
    Ok(Incoming {
        seq: rec.seq,
        namespace: rec.namespace.clone(),
        event_source: rec.event_source.clone(),
        event_name: rec.event_name.clone(),
        event,
    })
}

/// The CloudEvents JSON format of an envelope.
pub fn envelope_json(e: &Event) -> Value {
    json!({
        "specversion": "1.0",
        "id": e.id, "source": e.source, "type": e.kind, "subject": e.subject,
        "time": e.time, "datacontenttype": e.datacontenttype, "data": e.data,
    })
}

/// `final`: whether this sensor is done with the event (false: a trigger is to be tried
/// again when the event is delivered again).
fn decision_json(d: &Decision, triggers: Vec<Value>, done: bool) -> Value {
    json!({
        "final": done,
        "dependencies": d.dependencies.iter().map(|r| json!({
            "name": r.name, "matched": r.verdict.matched, "reasons": r.verdict.reasons,
        })).collect::<Vec<_>>(),
        "triggers": triggers,
    })
}

/// Who delivers an event: the bus (first delivery or the sweeper's re-delivery), or a user's
/// explicit re-delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Delivery {
    Bus,
    /// Delivered before: by a deferred firing's timer, or JetStream's re-delivery.
    Again,
    Requested,
}

/// The sooner of two optional waits.
fn sooner(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What processing an event came to.
struct Processed {
    done: bool,
    /// A rate limit deferred a firing: ask again in this many milliseconds.
    again_in: Option<i64>,
}

impl Processed {
    fn done(done: bool) -> Processed {
        Processed {
            done,
            again_in: None,
        }
    }

    fn retry() -> Processed {
        Processed::done(false)
    }
}

/// How one firing went.
pub struct FireOutcome {
    /// `workflows/NS/NAME`, `pod/x`, an HTTP status...
    pub effect: Option<String>,
    pub error: Option<String>,
    /// The firing's effect already existed (re-delivery, another replica).
    pub existing: bool,
    /// Suppressed by the dedupe window.
    pub deduplicated: bool,
    /// A transient failure: the event stays unprocessed and is re-delivered.
    pub retry_later: bool,
    /// Not fired now, asked again in this many milliseconds: the trigger's rate limit is
    /// spent, or (with `error`) its retryStrategy waits before the next attempt.
    pub deferred_for: Option<i64>,
}

impl FireOutcome {
    fn result_label(&self) -> &'static str {
        if self.deduplicated {
            "deduplicated"
        } else if self.deferred_for.is_some() && self.error.is_some() {
            "retrying"
        } else if self.deferred_for.is_some() {
            "deferred"
        } else if self.error.is_some() {
            "failed"
        } else if self.existing {
            "existing"
        } else {
            "fired"
        }
    }

    fn json(&self, f: &events::sensor::Firing) -> Value {
        json!({
            "trigger": f.trigger,
            "fired": self.error.is_none() && !self.deduplicated && self.deferred_for.is_none(),
            "deferredForMs": self.deferred_for,
            "key": f.key,
            "events": f.events.iter().map(|(d, s)| json!({"dependency": d, "event": s})).collect::<Vec<_>>(),
            "effect": self.effect,
            "existing": self.existing,
            "deduplicated": self.deduplicated,
            "error": self.error,
            "notes": f.notes,
        })
    }
}
