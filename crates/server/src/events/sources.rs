//! EventSources as running components: each entry of an EventSource (`spec.<type>.<event
//! name>`) becomes a task that receives from its producer, hands envelopes to
//! [`Events::ingest`] and acknowledges the producer only after the commit. Tasks reconnect
//! with backoff; a changed definition restarts its tasks; a deleted one stops them.
//!
//! Webhook entries are grouped by port: one HTTP listener per port serves every endpoint
//! configured on it. They are also reachable on the API port at
//! `/api/v1/webhooks/{namespace}/{eventSource}/{eventName}`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, Method, StatusCode};
use events::Event;
use events::ingest::Format;
use serde_json::{Value, json};
use store::{EventIdentity, EventObject};
use tokio::task::JoinHandle;

use super::Events;
use crate::driver::now_ms;

/// Running source tasks, by what they run.
#[derive(Default)]
pub struct Supervisor {
    /// `(namespace/name/type/event)` → (definition, task).
    tasks: HashMap<String, (Value, JoinHandle<()>)>,
    /// port → (its endpoints, shared with the listener, and the listener task). A change of
    /// endpoints swaps them in place: the socket stays open, so no request is refused.
    listeners: HashMap<u16, (Endpoints, JoinHandle<()>)>,
    /// The definitions of the last sync, to restart what stopped (a listener whose port
    /// was taken, a source that gave up) without reading the store.
    last: Vec<EventObject>,
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        for (_, (_, t)) in self.tasks.drain() {
            t.abort();
        }
        for (_, (_, t)) in self.listeners.drain() {
            t.abort();
        }
    }
}

/// The endpoints a webhook listener serves, replaced whole when a definition changes.
type Endpoints = Arc<std::sync::RwLock<Arc<Vec<WebhookEntry>>>>;

/// A webhook entry: where it listens and what it checks.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEntry {
    pub namespace: String,
    pub event_source: String,
    pub event_name: String,
    pub spec: Value,
}

impl Supervisor {
    /// Restarts the tasks of the last definitions that have stopped.
    pub(super) async fn resync(&mut self, events: &Events) {
        let defs = self.last.clone();
        self.sync(events, defs).await;
    }

    /// Starts, restarts and stops tasks so that they match `defs`.
    pub(super) async fn sync(&mut self, events: &Events, defs: Vec<EventObject>) {
        self.last = defs.clone();
        let mut wanted: HashMap<String, (Value, String, String, String, String)> = HashMap::new();
        let mut ports: BTreeMap<u16, Vec<WebhookEntry>> = BTreeMap::new();
        for o in &defs {
            let Some(spec) = o.body["spec"].as_object() else {
                continue;
            };
            for (ty, entries) in spec {
                let Some(entries) = entries.as_object() else {
                    continue;
                };
                for (event_name, entry) in entries {
                    if ty == "webhook" {
                        let port = entry["port"]
                            .as_str()
                            .and_then(|p| p.parse::<u16>().ok())
                            .or_else(|| entry["port"].as_u64().and_then(|p| u16::try_from(p).ok()));
                        if let Some(port) = port {
                            ports.entry(port).or_default().push(WebhookEntry {
                                namespace: o.namespace.clone(),
                                event_source: o.name.clone(),
                                event_name: event_name.clone(),
                                spec: entry.clone(),
                            });
                        }
                        continue;
                    }
                    if !RUNNABLE.contains(&ty.as_str()) {
                        continue;
                    }
                    let key = format!("{}/{}/{ty}/{event_name}", o.namespace, o.name);
                    wanted.insert(
                        key,
                        (
                            entry.clone(),
                            o.namespace.clone(),
                            o.name.clone(),
                            ty.clone(),
                            event_name.clone(),
                        ),
                    );
                }
            }
        }
        self.tasks.retain(|key, (def, task)| {
            let keep = wanted.get(key).is_some_and(|w| &w.0 == def) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (key, (def, namespace, name, ty, event_name)) in wanted {
            if self.tasks.contains_key(&key) {
                continue;
            }
            let ctx = SourceCtx {
                events: events.clone(),
                namespace,
                event_source: name,
                event_name,
            };
            let spec = def.clone();
            let task = tokio::spawn(async move { run_source(ctx, ty, spec).await });
            self.tasks.insert(key, (def, task));
        }
        let wanted_ports: BTreeMap<u16, Vec<WebhookEntry>> = ports
            .into_iter()
            .map(|(port, entries)| (port, claim_endpoints(port, entries)))
            .collect();
        self.listeners.retain(|port, (_, task)| {
            let keep = wanted_ports.contains_key(port) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        for (port, entries) in wanted_ports {
            if let Some((endpoints, _)) = self.listeners.get(&port) {
                let mut current = match endpoints.write() {
                    Ok(e) => e,
                    Err(p) => p.into_inner(),
                };
                if **current != entries {
                    *current = Arc::new(entries);
                }
                continue;
            }
            let endpoints: Endpoints = Arc::new(std::sync::RwLock::new(Arc::new(entries)));
            let task = tokio::spawn(webhook_listener(events.clone(), port, endpoints.clone()));
            self.listeners.insert(port, (endpoints, task));
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
        let endpoint = e.spec["endpoint"].as_str().unwrap_or("").to_string();
        let who = format!("{}/{} entry {}", e.namespace, e.event_source, e.event_name);
        match claimed.get(&endpoint) {
            Some(first) => {
                tracing::error!(port, endpoint, kept = %first, refused = %who, "two webhook entries claim one port and endpoint; give one another endpoint or port");
                false
            }
            None => {
                claimed.insert(endpoint, who);
                true
            }
        }
    });
    entries
}

const RUNNABLE: &[&str] = &[
    "calendar",
    "file",
    "nats",
    "mqtt",
    "amqp",
    "redis",
    "redisStream",
    "resource",
];

/// What a source task knows about where its events go.
#[derive(Clone)]
pub struct SourceCtx {
    pub events: Events,
    pub namespace: String,
    pub event_source: String,
    pub event_name: String,
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

    /// Stores events keyed by their ids; returns after the commit (the caller acknowledges
    /// its producer then).
    async fn ingest(&self, events: Vec<Event>) -> Result<(), String> {
        self.ingest_identified(super::by_id(events)).await
    }

    /// Stores events with their identities; returns after the commit.
    async fn ingest_identified(&self, events: Vec<(Event, EventIdentity)>) -> Result<(), String> {
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
            .map_err(|e| store::chain(&e))?;
        // The moment a crash makes the broker re-deliver what is stored.
        crate::failpoint::reached(|| format!("source.{kind}.after-commit"));
        Ok(())
    }
}

/// The identity of a broker message without a producer id: a digest of what the broker keeps
/// when it re-delivers (the entry it arrived on, then the given parts), with its re-delivery
/// flag.
fn delivery_identity(ctx: &SourceCtx, parts: &[&[u8]], redelivered: bool) -> EventIdentity {
    let mut all: Vec<&[u8]> = vec![ctx.event_name.as_bytes()];
    all.extend_from_slice(parts);
    EventIdentity::Delivery {
        digest: events::ingest::delivery_digest(&all),
        redelivered,
    }
}

async fn run_source(ctx: SourceCtx, ty: String, spec: Value) {
    let mut backoff = 1u64;
    loop {
        let started = std::time::Instant::now();
        let result = match ty.as_str() {
            "calendar" => calendar(&ctx, &spec).await,
            "file" => file(&ctx, &spec).await,
            "nats" => nats(&ctx, &spec).await,
            "mqtt" => mqtt(&ctx, &spec).await,
            "amqp" => amqp(&ctx, &spec).await,
            "redis" => redis_pubsub(&ctx, &spec).await,
            "redisStream" => redis_stream(&ctx, &spec).await,
            "resource" => resource(&ctx, &spec).await,
            _ => return,
        };
        if let Err(e) = result {
            crate::metrics::source_error(&ctx.event_source);
            tracing::warn!(namespace = %ctx.namespace, event_source = %ctx.event_source, event = %ctx.event_name, kind = %ty, error = %e, "event source failed; restarting");
        }
        if started.elapsed() > Duration::from_secs(30) {
            backoff = 1;
        }
        tokio::time::sleep(Duration::from_secs(backoff)).await;
        backoff = (backoff * 2).min(30);
    }
}

/// Bodies of broker messages: JSON when they parse (Argo's `jsonBody`), text otherwise.
fn body_of(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

// --- webhook ---

async fn webhook_listener(events: Events, port: u16, endpoints: Endpoints) {
    let addr = std::net::SocketAddr::new(events.config().webhook_host, port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(port, error = %e, "webhook event source cannot listen");
            return;
        }
    };
    let count = endpoints.read().map(|e| e.len()).unwrap_or(0);
    tracing::info!(port, endpoints = count, "webhook event source listening");
    let app = axum::Router::new().fallback(
        move |method: Method, uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let events = events.clone();
            let entries = match endpoints.read() {
                Ok(e) => e.clone(),
                Err(p) => p.into_inner().clone(),
            };
            async move {
                let path = uri.path();
                match entries
                    .iter()
                    .find(|e| e.spec["endpoint"].as_str() == Some(path))
                {
                    Some(entry) => receive_webhook(&events, entry, &method, &headers, &body).await,
                    None => (
                        StatusCode::NOT_FOUND,
                        format!("no webhook endpoint {path} on this port\n"),
                    ),
                }
            }
        },
    );
    let app = app.layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024));
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(port, error = %e, "webhook listener stopped");
    }
}

/// Checks and stores one webhook request; the status is the producer's acknowledgement
/// (2xx only after the commit).
pub async fn receive_webhook(
    events: &Events,
    entry: &WebhookEntry,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, String) {
    let spec = &entry.spec;
    let want = spec["method"].as_str().unwrap_or("POST");
    if !method.as_str().eq_ignore_ascii_case(want) {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            format!("this endpoint takes {want}\n"),
        );
    }
    if let Some(max) = spec["maxPayloadSize"]
        .as_i64()
        .or_else(|| spec["maxPayloadSize"].as_str().and_then(|s| s.parse().ok()))
        && max > 0
        && body.len() as i64 > max
    {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body has {} bytes; this endpoint takes at most {max}\n",
                body.len()
            ),
        );
    }
    if !spec["authSecret"].is_null() {
        let expected = match events.secret(&spec["authSecret"]).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "webhook authSecret");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the endpoint's secret is not readable\n".into(),
                );
            }
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token\n".into(),
            );
        }
    }
    if let Some(hmac_spec) = spec.get("hmac").filter(|h| !h.is_null()) {
        let header_name = hmac_spec["header"].as_str().unwrap_or("X-Signature-256");
        let key = match events.secret(&hmac_spec["secret"]).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "webhook hmac secret");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the endpoint's secret is not readable\n".into(),
                );
            }
        };
        let given = headers
            .get(header_name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !signature_valid(key.as_bytes(), body, given) {
            return (
                StatusCode::UNAUTHORIZED,
                format!(
                    "missing or wrong {header_name} signature (HMAC-SHA256 of the body, hex, optionally prefixed sha256=)\n"
                ),
            );
        }
    }
    let format = match Format::parse(spec["format"].as_str().unwrap_or("auto")) {
        Some(f) => f,
        None => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the endpoint's format is not valid\n".into(),
            );
        }
    };
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k != &axum::http::header::AUTHORIZATION)
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    match events
        .receive_http(
            &entry.namespace,
            &entry.event_source,
            &entry.event_name,
            format,
            &pairs,
            body,
        )
        .await
    {
        Ok(appended) => {
            let body = json!({
                "events": appended.iter().map(|a| json!({"seq": a.seq, "duplicate": a.duplicate})).collect::<Vec<_>>()
            });
            (StatusCode::OK, format!("{body}\n"))
        }
        Err(super::EventsError::Invalid(m)) => (StatusCode::BAD_REQUEST, format!("{m}\n")),
        Err(e) => {
            tracing::warn!(error = %store::chain(&e), "storing a webhook event failed; the producer should retry");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be stored; retry\n".into(),
            )
        }
    }
}

/// Compares the digests, like API tokens are compared, so neither the content nor the length
/// of the secret shows in the time taken.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    crate::auth::constant_time_eq(&Sha256::digest(a).into(), &Sha256::digest(b).into())
}

fn signature_valid(key: &[u8], body: &[u8], given: &str) -> bool {
    use hmac::{Hmac, Mac};
    let given = given.strip_prefix("sha256=").unwrap_or(given);
    let Ok(given) = (0..given.len())
        .step_by(2)
        .map(|i| {
            given
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(())
        })
        .collect::<Result<Vec<u8>, ()>>()
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

// --- calendar ---

/// Fires at each scheduled time; with `persistence` on, times missed while no replica ran
/// fire after a restart (each time once: its id is the time). Exclusion dates skip a day.
async fn calendar(ctx: &SourceCtx, spec: &Value) -> Result<(), String> {
    let schedule = match (spec["schedule"].as_str(), spec["interval"].as_str()) {
        (Some(s), _) if !s.is_empty() => s.to_string(),
        (_, Some(i)) if !i.is_empty() => format!("@every {i}"),
        _ => return Err("calendar needs `schedule` (cron) or `interval` (like 10s)".into()),
    };
    let tz = spec["timezone"].as_str();
    let exclusions: Vec<String> = spec["exclusionDates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d.as_str().map(|s| s.chars().take(10).collect()))
        .collect();
    let catch_up = spec["persistence"]["catchup"]["enabled"]
        .as_bool()
        .unwrap_or(false);
    let max_catch_up = spec["persistence"]["catchup"]["maxDuration"]
        .as_str()
        .and_then(expr::time::parse_duration_millis)
        .unwrap_or(24 * 3600 * 1000);
    // Where to continue from: the last stored firing of this entry (with persistence), else now.
    let mut after = now_ms();
    if catch_up {
        let last = ctx
            .events
            .controller()
            .store()
            .last_event_id(&ctx.namespace, &ctx.event_source, &ctx.event_name)
            .await
            .map_err(|e| store::chain(&e))?;
        after = catch_up_from(
            last.as_deref().and_then(calendar_firing),
            after,
            max_catch_up,
        );
    }
    loop {
        let next = crate::cron::next_fire(&schedule, tz, after)?;
        let now = now_ms();
        if next > now {
            tokio::time::sleep(Duration::from_millis((next - now) as u64)).await;
        }
        after = next;
        let day = expr::time::rfc3339(next);
        if exclusions.iter().any(|d| day.starts_with(d.as_str())) {
            continue;
        }
        let data = json!({"eventTime": expr::time::rfc3339(next), "metadata": spec["metadata"]});
        // The id is the scheduled time and the entry: two replicas (or a catch-up) fire it
        // once, and sibling entries on one schedule each fire.
        let id = format!("{next}/{}", ctx.event_name);
        ctx.ingest(vec![ctx.event("calendar", id, data)]).await?;
    }
}

/// The scheduled time (ms) a calendar event id names: `<ms>/<entry>`, or `<ms>` as stored
/// before entries were part of it.
fn calendar_firing(id: &str) -> Option<i64> {
    id.split('/').next()?.parse().ok()
}

/// Where a catch-up starts: after the last firing, but no earlier than `max_catch_up` ago
/// (Argo's `maxDuration`); from now when nothing fired before.
fn catch_up_from(last_firing: Option<i64>, now: i64, max_catch_up: i64) -> i64 {
    match last_firing {
        Some(last) => last.max(now - max_catch_up),
        None => now,
    }
}

// --- file ---

/// Polls a directory (no inotify dependency; a second is fine for the files this watches):
/// a new or changed file matching `path`/`pathRegexp` is an event keyed by path, size and
/// modification time.
async fn file(ctx: &SourceCtx, spec: &Value) -> Result<(), String> {
    let w = &spec["watchPathConfig"];
    let dir = w["directory"]
        .as_str()
        .ok_or("file needs watchPathConfig.directory")?
        .to_string();
    let path = w["path"].as_str().map(str::to_string);
    let re = match w["pathRegexp"].as_str() {
        Some(r) => Some(regex::Regex::new(r).map_err(|e| format!("pathRegexp: {e}"))?),
        None => None,
    };
    let op = spec["eventType"].as_str().unwrap_or("CREATE").to_string();
    let interval = spec["polling"]["interval"]
        .as_str()
        .and_then(expr::time::parse_duration_millis)
        .unwrap_or(1000)
        .max(100);
    let mut seen: HashMap<String, (u64, i64)> = HashMap::new();
    let mut first = true;
    loop {
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(|e| format!("reading {dir}: {e}"))?;
        let mut batch = Vec::new();
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.as_deref().is_some_and(|p| p != name)
                || re.as_ref().is_some_and(|r| !r.is_match(&name))
            {
                continue;
            }
            let Ok(meta) = entry.metadata().await else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0);
            let stamp = (meta.len(), mtime);
            let previous = seen.insert(name.clone(), stamp);
            let changed = match previous {
                None => !first,
                Some(p) => p != stamp && op == "WRITE",
            };
            if changed {
                let full = format!("{}/{name}", dir.trim_end_matches('/'));
                batch.push(ctx.event(
                    "file",
                    format!("{full}@{}:{}", stamp.0, stamp.1),
                    json!({"name": full, "op": op}),
                ));
            }
        }
        first = false;
        if !batch.is_empty() {
            ctx.ingest(batch).await?;
        }
        tokio::time::sleep(Duration::from_millis(interval as u64)).await;
    }
}

// --- NATS ---

/// Core NATS subscription, or with `jetstream: {stream, consumer}` (Riposte's extension) a
/// durable JetStream consumer acknowledged after the commit.
async fn nats(ctx: &SourceCtx, spec: &Value) -> Result<(), String> {
    use futures_util::StreamExt;
    let url = spec["url"].as_str().ok_or("nats needs url")?;
    let subject = spec["subject"]
        .as_str()
        .ok_or("nats needs subject")?
        .to_string();
    let client = async_nats::connect(url)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    if let Some(stream) = spec["jetstream"]["stream"].as_str() {
        use async_nats::jetstream::consumer::{AckPolicy, pull};
        let js = async_nats::jetstream::new(client);
        let stream = js
            .get_stream(stream)
            .await
            .map_err(|e| format!("JetStream stream {stream}: {e}"))?;
        let durable = spec["jetstream"]["consumer"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("riposte-{}-{}", ctx.event_source, ctx.event_name));
        let consumer = stream
            .get_or_create_consumer(
                &durable,
                pull::Config {
                    durable_name: Some(durable.clone()),
                    filter_subject: subject.clone(),
                    ack_policy: AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| format!("JetStream consumer {durable}: {e}"))?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(|e| e.to_string())?;
            let info = msg.info().map_err(|e| e.to_string())?;
            let id = format!("{}/{}", info.stream, info.stream_sequence);
            let data = json!({"subject": msg.subject.as_str(), "body": body_of(&msg.payload)});
            ctx.ingest(vec![ctx.event("nats", id, data)]).await?;
            msg.ack().await.map_err(|e| format!("acknowledging: {e}"))?;
        }
        return Err("the JetStream message stream ended".into());
    }
    let mut sub = client
        .subscribe(subject.clone())
        .await
        .map_err(|e| format!("subscribing to {subject}: {e}"))?;
    while let Some(msg) = sub.next().await {
        let headers: Value = msg
            .headers
            .as_ref()
            .map(|h| {
                Value::Object(
                    h.iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                json!(v.iter().map(|x| x.as_str()).collect::<Vec<_>>()),
                            )
                        })
                        .collect(),
                )
            })
            .unwrap_or(Value::Null);
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id").map(|v| v.as_str().to_string()))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let data = json!({"subject": msg.subject.as_str(), "header": headers, "body": body_of(&msg.payload)});
        ctx.ingest(vec![ctx.event("nats", id, data)]).await?;
    }
    Err("the NATS subscription ended".into())
}

// --- MQTT ---

/// Subscribes with QoS 1 and manual acknowledgements: a message is acknowledged (PUBACK)
/// after its commit, so the broker re-sends what a crash did not store.
async fn mqtt(ctx: &SourceCtx, spec: &Value) -> Result<(), String> {
    use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
    let url = spec["url"].as_str().ok_or("mqtt needs url")?;
    let topic = spec["topic"]
        .as_str()
        .ok_or("mqtt needs topic")?
        .to_string();
    let hostport = url
        .trim_start_matches("tcp://")
        .trim_start_matches("mqtt://");
    let (host, port) = hostport
        .rsplit_once(':')
        .ok_or_else(|| format!("mqtt url {url:?} needs host:port"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("mqtt url {url:?}: bad port"))?;
    let client_id = spec["clientId"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("riposte-{}-{}", ctx.event_source, ctx.event_name));
    let mut opts = MqttOptions::new(client_id, host, port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_manual_acks(true);
    opts.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    client
        .subscribe(topic.clone(), QoS::AtLeastOnce)
        .await
        .map_err(|e| format!("subscribing to {topic}: {e}"))?;
    loop {
        match eventloop.poll().await {
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                // MQTT gives no message id: the broker re-sends an unacknowledged message
                // with DUP and its packet id on the persistent session, and re-sends a
                // retained one on every subscribe. Both are the message stored before.
                // One packet id is in flight at a time, so it tells apart two messages with
                // one payload; a retained message is re-sent under a new one.
                let pkid = if p.retain {
                    Vec::new()
                } else {
                    p.pkid.to_be_bytes().to_vec()
                };
                let identity = delivery_identity(
                    ctx,
                    &[p.topic.as_bytes(), &pkid, &p.payload],
                    p.dup || p.retain,
                );
                let data =
                    json!({"topic": p.topic, "messageId": p.pkid, "body": body_of(&p.payload)});
                let event = ctx.event("mqtt", String::new(), data);
                ctx.ingest_identified(vec![(event, identity)]).await?;
                client
                    .ack(&p)
                    .await
                    .map_err(|e| format!("acknowledging: {e}"))?;
            }
            Ok(_) => {}
            Err(e) => return Err(format!("mqtt {url}: {e}")),
        }
    }
}

// --- AMQP ---

/// Consumes a queue bound to the exchange; each delivery is acknowledged after its commit.
async fn amqp(ctx: &SourceCtx, spec: &Value) -> Result<(), String> {
    use futures_util::StreamExt;
    use lapin::options::*;
    use lapin::types::FieldTable;
    let url = spec["url"].as_str().ok_or("amqp needs url")?;
    // `amqp://host:5672/` names the empty vhost, which nobody means: it is the default `/`.
    let url = match url.strip_suffix('/') {
        Some(u) if u.matches('/').count() == 2 => u,
        _ => url,
    };
    let exchange = spec["exchangeName"]
        .as_str()
        .ok_or("amqp needs exchangeName")?;
    let exchange_type = spec["exchangeType"].as_str().unwrap_or("topic");
    let routing_key = spec["routingKey"].as_str().unwrap_or("#");
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    let kind = match exchange_type {
        "direct" => lapin::ExchangeKind::Direct,
        "fanout" => lapin::ExchangeKind::Fanout,
        "headers" => lapin::ExchangeKind::Headers,
        _ => lapin::ExchangeKind::Topic,
    };
    let ex = &spec["exchangeDeclare"];
    ch.exchange_declare(
        exchange.into(),
        kind,
        ExchangeDeclareOptions {
            durable: ex["durable"].as_bool().unwrap_or(true),
            auto_delete: ex["autoDelete"].as_bool().unwrap_or(false),
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("declaring exchange {exchange}: {e}"))?;
    let qd = &spec["queueDeclare"];
    let queue_name = qd["name"].as_str().map(str::to_string).unwrap_or_else(|| {
        format!(
            "riposte.{}.{}.{}",
            ctx.namespace, ctx.event_source, ctx.event_name
        )
    });
    ch.queue_declare(
        queue_name.as_str().into(),
        QueueDeclareOptions {
            durable: qd["durable"].as_bool().unwrap_or(true),
            auto_delete: qd["autoDelete"].as_bool().unwrap_or(false),
            exclusive: qd["exclusive"].as_bool().unwrap_or(false),
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("declaring queue {queue_name}: {e}"))?;
    ch.queue_bind(
        queue_name.as_str().into(),
        exchange.into(),
        routing_key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(|e| format!("binding {queue_name} to {exchange}: {e}"))?;
    // One unacknowledged delivery at a time: a message without `message-id` is then the only
    // one in flight with its digest, and a re-delivery is recognised by it (see
    // `store::resolve_delivery`). The commit, not the round trip, bounds the rate.
    ch.basic_qos(1, BasicQosOptions::default())
        .await
        .map_err(|e| format!("setting the prefetch of {queue_name}: {e}"))?;
    let mut consumer = ch
        .basic_consume(
            queue_name.as_str().into(),
            format!("riposte-{}", ctx.event_name).as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| format!("consuming {queue_name}: {e}"))?;
    while let Some(delivery) = consumer.next().await {
        let d = delivery.map_err(|e| e.to_string())?;
        let props = &d.properties;
        // Without a `message-id`, a delivery is its digest: RabbitMQ re-delivers what was
        // not acknowledged (a crash, a dropped connection) with `redelivered` set.
        let identity = match props.message_id() {
            Some(id) => EventIdentity::Id(id.to_string()),
            None => {
                // Quorum queues count deliveries in a header: not part of the message.
                let headers: Vec<_> = props
                    .headers()
                    .iter()
                    .flat_map(|h| h.inner())
                    .filter(|(k, _)| k.as_str() != "x-delivery-count")
                    .collect();
                let properties = format!(
                    "{:?}|{:?}|{:?}|{headers:?}|{:?}",
                    props.content_type(),
                    props.correlation_id(),
                    props.timestamp(),
                    props.kind()
                );
                delivery_identity(
                    ctx,
                    &[
                        d.exchange.as_str().as_bytes(),
                        d.routing_key.as_str().as_bytes(),
                        properties.as_bytes(),
                        &d.data,
                    ],
                    d.redelivered,
                )
            }
        };
        let data = json!({
            "contentType": props.content_type().as_ref().map(|s| s.to_string()),
            "messageId": props.message_id().as_ref().map(|s| s.to_string()),
            "correlationId": props.correlation_id().as_ref().map(|s| s.to_string()),
            "exchange": d.exchange.to_string(),
            "routingKey": d.routing_key.to_string(),
            "body": body_of(&d.data),
        });
        let id = match &identity {
            EventIdentity::Id(id) => id.clone(),
            EventIdentity::Delivery { .. } => String::new(),
        };
        ctx.ingest_identified(vec![(ctx.event("amqp", id, data), identity)])
            .await?;
        d.ack(BasicAckOptions::default())
            .await
            .map_err(|e| format!("acknowledging: {e}"))?;
    }
    Err("the AMQP consumer ended".into())
}

// --- Redis ---

fn redis_url(spec: &Value) -> Result<String, String> {
    let host = spec["hostAddress"]
        .as_str()
        .ok_or("redis needs hostAddress (host:port)")?;
    let db = spec["db"].as_i64().unwrap_or(0);
    Ok(format!("redis://{host}/{db}"))
}

/// Pub/sub is fire-and-forget on Redis' side: what arrives while no replica listens is gone
/// (use `redisStream` for durability).
async fn redis_pubsub(ctx: &SourceCtx, spec: &Value) -> Result<(), String> {
    use futures_util::StreamExt;
    let url = redis_url(spec)?;
    let client = redis::Client::open(url.as_str()).map_err(|e| format!("{url}: {e}"))?;
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    for ch in spec["channels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c.as_str())
    {
        pubsub
            .subscribe(ch)
            .await
            .map_err(|e| format!("subscribing to {ch}: {e}"))?;
    }
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        let payload: Vec<u8> = msg.get_payload().unwrap_or_default();
        let data = json!({"channel": msg.get_channel_name(), "pattern": msg.get_pattern::<String>().ok(), "body": body_of(&payload)});
        ctx.ingest(vec![ctx.event(
            "redis",
            uuid::Uuid::new_v4().to_string(),
            data,
        )])
        .await?;
    }
    Err("the Redis subscription ended".into())
}

/// Reads streams through a consumer group; entries are acknowledged (XACK) after their
/// commit and keyed by stream and entry id, so a re-read after a crash is one event.
///
/// Each process is its own consumer (`riposte-<pid>`): the entries a crashed process was given
/// and never acknowledged stay pending under its name, so every consumer also claims entries
/// pending longer than [`STREAM_CLAIM_IDLE`] (XAUTOCLAIM) and stores them; one another
/// replica is still storing is the same event by its id.
async fn redis_stream(ctx: &SourceCtx, spec: &Value) -> Result<(), String> {
    use redis::AsyncCommands;
    use redis::streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply,
    };
    let url = redis_url(spec)?;
    let client = redis::Client::open(url.as_str()).map_err(|e| format!("{url}: {e}"))?;
    // Reads block for a while on the server; the client must wait longer than that.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    let streams: Vec<String> = spec["streams"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect();
    if streams.is_empty() {
        return Err("redisStream needs streams".into());
    }
    let group = spec["consumerGroup"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("riposte-{}", ctx.event_source));
    for s in &streams {
        let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(s, &group, "$").await;
        if let Err(e) = created
            && !e.to_string().contains("BUSYGROUP")
        {
            return Err(format!("creating consumer group {group} on {s}: {e}"));
        }
    }
    let consumer = format!("riposte-{}", std::process::id());
    let count = spec["maxMsgCountPerRead"].as_u64().unwrap_or(10).max(1) as usize;
    // Stores one entry, then acknowledges it.
    async fn store_entry(
        ctx: &SourceCtx,
        conn: &mut redis::aio::MultiplexedConnection,
        group: &str,
        stream: &str,
        entry: &redis::streams::StreamId,
    ) -> Result<(), String> {
        let values: serde_json::Map<String, Value> = entry
            .map
            .iter()
            .map(|(k, v)| {
                let s: String = redis::from_redis_value(v.clone()).unwrap_or_default();
                (k.clone(), Value::String(s))
            })
            .collect();
        let data = json!({"stream": stream, "id": entry.id, "values": values});
        ctx.ingest(vec![ctx.event(
            "redisStream",
            format!("{stream}/{}", entry.id),
            data,
        )])
        .await?;
        let _: i64 = conn
            .xack(stream, group, &[&entry.id])
            .await
            .map_err(|e| format!("acknowledging: {e}"))?;
        Ok(())
    }
    // First what this consumer was given and did not acknowledge, then new entries.
    let mut cursor = "0".to_string();
    let mut last_claim: Option<tokio::time::Instant> = None;
    loop {
        if last_claim.is_none_or(|t| t.elapsed() >= STREAM_CLAIM_IDLE / 2) {
            last_claim = Some(tokio::time::Instant::now());
            for stream in &streams {
                let mut start = "0-0".to_string();
                loop {
                    let reply: StreamAutoClaimReply = conn
                        .xautoclaim_options(
                            stream,
                            &group,
                            &consumer,
                            STREAM_CLAIM_IDLE.as_millis() as u64,
                            &start,
                            StreamAutoClaimOptions::default().count(count),
                        )
                        .await
                        .map_err(|e| format!("claiming stale entries of {stream}: {e}"))?;
                    for entry in &reply.claimed {
                        store_entry(ctx, &mut conn, &group, stream, entry).await?;
                    }
                    if reply.next_stream_id == "0-0" {
                        break;
                    }
                    start = reply.next_stream_id;
                }
            }
        }
        let ids: Vec<String> = streams.iter().map(|_| cursor.clone()).collect();
        let opts = StreamReadOptions::default()
            .group(&group, &consumer)
            .count(count)
            .block(2000);
        let reply: StreamReadReply = conn
            .xread_options(&streams, &ids, &opts)
            .await
            .map_err(|e| format!("reading streams: {e}"))?;
        let mut got = 0;
        for key in reply.keys {
            for entry in &key.ids {
                got += 1;
                store_entry(ctx, &mut conn, &group, &key.key, entry).await?;
            }
        }
        if cursor == "0" && got == 0 {
            cursor = ">".into();
        }
    }
}

/// How long an entry stays pending with a consumer before another one stores it.
const STREAM_CLAIM_IDLE: Duration = Duration::from_secs(10);

// --- Kubernetes resources ---

/// Watches a group/version/resource (with label and field selectors) and emits ADD, UPDATE
/// and DELETE events keyed by the object's uid and resourceVersion, so the re-list after a
/// restart or a 410 Gone (kube's watcher does it) is not a second event for an unchanged
/// object.
async fn resource(ctx: &SourceCtx, spec: &Value) -> Result<(), String> {
    use futures_util::StreamExt;
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
    use kube::runtime::watcher;
    let cluster = ctx
        .events
        .controller()
        .cluster()
        .ok_or("a resource event source needs the Kubernetes connection (riposte server --executor kubernetes)")?
        .clone();
    let group = spec["group"].as_str().unwrap_or("");
    let version = spec["version"].as_str().ok_or("resource needs version")?;
    let plural = spec["resource"]
        .as_str()
        .ok_or("resource needs resource (the plural, e.g. policyreports)")?;
    let gvk = GroupVersionKind::gvk(group, version, "");
    let ar = ApiResource::from_gvk_with_plural(&gvk, plural);
    let api: Api<DynamicObject> = match spec["namespace"].as_str().filter(|n| !n.is_empty()) {
        Some(ns) => Api::namespaced_with(cluster.client().clone(), ns, &ar),
        None => Api::all_with(cluster.client().clone(), &ar),
    };
    let mut config = watcher::Config::default();
    let labels: Vec<String> = spec["filter"]["labels"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            let key = l["key"].as_str()?;
            let op = l["operation"].as_str().unwrap_or("==");
            Some(match l["value"].as_str() {
                Some(v) => format!("{key}{op}{v}"),
                None => key.to_string(),
            })
        })
        .collect();
    if !labels.is_empty() {
        config = config.labels(&labels.join(","));
    }
    let fields: Vec<String> = spec["filter"]["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            Some(format!(
                "{}{}{}",
                l["key"].as_str()?,
                l["operation"].as_str().unwrap_or("=="),
                l["value"].as_str().unwrap_or("")
            ))
        })
        .collect();
    if !fields.is_empty() {
        config = config.fields(&fields.join(","));
    }
    let types: Vec<String> = spec["eventTypes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t.as_str().map(str::to_string))
        .collect();
    let wants = |t: &str| types.is_empty() || types.iter().any(|x| x == t);
    let after_start = spec["filter"]["afterStart"].as_bool().unwrap_or(false);
    let started = now_ms();
    let mut known: HashMap<String, String> = HashMap::new();
    let mut initial = true;
    let mut stream = watcher(api, config).boxed();
    while let Some(ev) = stream.next().await {
        let ev = ev.map_err(|e| format!("watching {group}/{version} {plural}: {e}"))?;
        let (kind, objs): (&str, Vec<DynamicObject>) = match ev {
            watcher::Event::Init => {
                initial = true;
                continue;
            }
            watcher::Event::InitDone => {
                initial = false;
                continue;
            }
            watcher::Event::InitApply(o) | watcher::Event::Apply(o) => {
                let uid = o.metadata.uid.clone().unwrap_or_default();
                let kind = if known.contains_key(&uid) {
                    "UPDATE"
                } else {
                    "ADD"
                };
                (kind, vec![o])
            }
            watcher::Event::Delete(o) => ("DELETE", vec![o]),
        };
        let mut batch = Vec::new();
        for o in objs {
            let uid = o.metadata.uid.clone().unwrap_or_default();
            let rv = o.metadata.resource_version.clone().unwrap_or_default();
            if kind == "DELETE" {
                known.remove(&uid);
            } else {
                if known.get(&uid) == Some(&rv) {
                    continue;
                }
                known.insert(uid.clone(), rv.clone());
            }
            if !wants(kind) {
                continue;
            }
            if after_start
                && (initial
                    || o.metadata
                        .creation_timestamp
                        .as_ref()
                        .is_some_and(|t| t.0.as_millisecond() < started))
                && kind == "ADD"
            {
                continue;
            }
            let body = serde_json::to_value(&o).unwrap_or(Value::Null);
            let data = json!({"type": kind, "body": body, "group": group, "version": version, "resource": plural});
            batch.push(ctx.event("resource", format!("{uid}/{rv}/{kind}"), data));
        }
        if !batch.is_empty() {
            ctx.ingest(batch).await?;
        }
    }
    Err("the watch ended".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_catch_up_starts_after_the_last_firing_within_max_duration() {
        let hour = 3_600_000;
        let now = 100 * hour;
        let table = [
            (None, now),
            (Some(now - hour), now - hour),
            (Some(now - 30 * hour), now - 24 * hour),
            (Some(now), now),
        ];
        for (last, want) in table {
            assert_eq!(catch_up_from(last, now, 24 * hour), want, "{last:?}");
        }
        assert_eq!(
            calendar_firing("1700000000000/nightly"),
            Some(1_700_000_000_000)
        );
        assert_eq!(calendar_firing("1700000000000"), Some(1_700_000_000_000));
        assert_eq!(calendar_firing("nightly"), None);
    }

    #[test]
    fn webhook_signatures_are_hmac_sha256_of_the_body_in_hex() {
        use hmac::{Hmac, Mac};
        let key = b"falco-hook-key";
        let body = br#"{"rule":"Terminal shell in container"}"#;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
        mac.update(body);
        let good: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut flipped = good.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("hex");
        let table = [
            (good.clone(), body.as_slice(), true),
            (format!("sha256={good}"), body.as_slice(), true),
            (good.to_uppercase(), body.as_slice(), true),
            (flipped, body.as_slice(), false),
            (good.clone(), b"{}".as_slice(), false),
            (good[..good.len() - 1].to_string(), body.as_slice(), false),
            ("zz".repeat(32), body.as_slice(), false),
            (String::new(), body.as_slice(), false),
        ];
        for (given, body, valid) in table {
            assert_eq!(signature_valid(key, body, &given), valid, "{given:?}");
        }
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }

    #[test]
    fn one_port_serves_each_endpoint_once_and_the_first_claim_keeps_it() {
        let entry = |source: &str, name: &str, endpoint: &str| WebhookEntry {
            namespace: "default".into(),
            event_source: source.into(),
            event_name: name.into(),
            spec: json!({"endpoint": endpoint, "port": "12000"}),
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
            .map(|e| {
                (
                    e.event_source.as_str(),
                    e.spec["endpoint"].as_str().unwrap_or(""),
                )
            })
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
}
