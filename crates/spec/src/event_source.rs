//! Argo Events `EventSource`s, typed and compiled once per stored version.
//!
//! An EventSource maps source types to named entries (`spec.<type>.<event name>`); [`compile`]
//! reads each entry into the typed configuration of its type (Argo's field names; a field
//! Riposte does not implement is a warning naming it, a wrong type an error at its path) and
//! checks what can be checked before anything connects: ports, endpoints, URLs, schedules,
//! regexes, selectors. What it gives is what the server's source components run, and its
//! [`Problem`]s are what `riposte lint` prints and what the API refuses an EventSource for.
//! Argo's defaults and int-or-string quirks live here and nowhere else.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::Severity;
use crate::sensor::{CompileError, Cx, Problem, Scalar, compile_document, required, typed};

/// The event source types Riposte receives (see the events design); others are warnings.
pub const EVENT_SOURCE_TYPES: &[&str] = &[
    "webhook",
    "calendar",
    "resource",
    "nats",
    "mqtt",
    "amqp",
    "redis",
    "redisStream",
    "file",
];

/// An EventSource: its entries, each with the typed configuration of its type.
#[derive(Debug, Clone, PartialEq)]
pub struct CompiledEventSource {
    /// `metadata.namespace` (empty when the document has none; the server sets it).
    pub namespace: String,
    pub name: String,
    pub entries: Vec<SourceEntry>,
}

impl CompiledEventSource {
    /// The webhook entry `event_name`, if there is one.
    pub fn webhook(&self, event_name: &str) -> Option<&Webhook> {
        self.entries.iter().find_map(|e| match &e.config {
            SourceConfig::Webhook(w) if e.event_name == event_name => Some(w),
            _ => None,
        })
    }
}

/// One entry: `spec.<type>.<event_name>`.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceEntry {
    pub event_name: String,
    pub config: SourceConfig,
}

/// The configuration of one entry, by source type.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceConfig {
    Webhook(Webhook),
    Calendar(Calendar),
    File(FileWatch),
    Nats(Nats),
    Mqtt(Mqtt),
    Amqp(Amqp),
    Redis(RedisPubSub),
    RedisStream(RedisStream),
    Resource(Resource),
}

impl SourceConfig {
    /// The source type as Argo spells it (`spec.<type>`), also the events' `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Webhook(_) => "webhook",
            SourceConfig::Calendar(_) => "calendar",
            SourceConfig::File(_) => "file",
            SourceConfig::Nats(_) => "nats",
            SourceConfig::Mqtt(_) => "mqtt",
            SourceConfig::Amqp(_) => "amqp",
            SourceConfig::Redis(_) => "redis",
            SourceConfig::RedisStream(_) => "redisStream",
            SourceConfig::Resource(_) => "resource",
        }
    }
}

/// A Kubernetes `SecretKeySelector`: the key of a Secret, read from the secrets directory.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SecretRef {
    pub name: String,
    pub key: String,
}

/// Which shape webhook requests have (Riposte's `format`; default: recognised per request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Auto,
    Webhook,
    CloudEvents,
    Falco,
    Tracee,
    Audit,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        Some(match s {
            "" | "auto" => Format::Auto,
            "webhook" => Format::Webhook,
            "cloudevents" => Format::CloudEvents,
            "falco" => Format::Falco,
            "tracee" => Format::Tracee,
            "audit" | "k8s-audit" => Format::Audit,
            _ => return None,
        })
    }
    pub const NAMES: &'static [&'static str] =
        &["auto", "webhook", "cloudevents", "falco", "tracee", "audit"];
}

/// An HTTP endpoint on a port (several entries may share a port with distinct endpoints).
#[derive(Debug, Clone, PartialEq)]
pub struct Webhook {
    pub port: u16,
    /// Starts with `/`.
    pub endpoint: String,
    /// Upper case; Argo's default `POST`.
    pub method: String,
    pub max_payload_size: Option<u64>,
    /// A bearer token the request must carry.
    pub auth_secret: Option<SecretRef>,
    pub hmac: Option<HmacCheck>,
    pub format: Format,
}

/// Riposte's `hmac`: an HMAC-SHA256 of the body, in hex, in a header.
#[derive(Debug, Clone, PartialEq)]
pub struct HmacCheck {
    pub secret: SecretRef,
    /// Default `X-Signature-256`.
    pub header: String,
}

/// A schedule: cron or interval, with exclusions and catch-up.
#[derive(Debug, Clone, PartialEq)]
pub struct Calendar {
    /// A 5-field cron expression, a `@`-descriptor, or `@every <duration>` for an interval.
    pub schedule: String,
    pub timezone: Option<String>,
    /// Days (`YYYY-MM-DD`) on which nothing fires.
    pub exclusion_dates: Vec<String>,
    /// With `persistence.catchup.enabled`: how far back missed firings are made up (ms;
    /// Argo's `maxDuration`, default a day).
    pub catch_up_ms: Option<i64>,
    /// Argo's `metadata`, carried in every event.
    pub metadata: Option<BTreeMap<String, String>>,
}

impl Calendar {
    /// Whether a firing at `rfc3339` falls on an excluded day.
    pub fn excludes(&self, rfc3339: &str) -> bool {
        self.exclusion_dates.iter().any(|d| rfc3339.starts_with(d))
    }
}

/// Files in a directory, polled.
#[derive(Debug, Clone, PartialEq)]
pub struct FileWatch {
    pub directory: String,
    /// Only this file name.
    pub path: Option<String>,
    /// Only file names matching.
    pub path_regexp: Option<Pattern>,
    pub event_type: FileOp,
    pub poll_interval_ms: u64,
}

impl FileWatch {
    /// Whether the file `name` (in the directory) is watched.
    pub fn watches(&self, name: &str) -> bool {
        self.path.as_deref().is_none_or(|p| p == name)
            && self.path_regexp.as_ref().is_none_or(|r| r.0.is_match(name))
    }
}

/// The change a file event source reports (Argo's fsnotify operation names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    /// A file that appeared.
    Create,
    /// A file whose size or modification time changed (or that appeared).
    Write,
    /// A file that disappeared.
    Remove,
}

impl FileOp {
    pub fn name(self) -> &'static str {
        match self {
            FileOp::Create => "CREATE",
            FileOp::Write => "WRITE",
            FileOp::Remove => "REMOVE",
        }
    }
}

/// A regex compared by its source (what a changed definition is told apart by).
#[derive(Debug, Clone)]
pub struct Pattern(pub regex::Regex);

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

/// A NATS subject: core NATS, or a durable JetStream consumer (Riposte's `jetstream`).
#[derive(Debug, Clone, PartialEq)]
pub struct Nats {
    pub url: String,
    pub subject: String,
    pub jetstream: Option<JetStream>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JetStream {
    pub stream: String,
    /// The durable consumer's name; default `riposte-<eventSource>-<event>`.
    pub consumer: Option<String>,
}

/// An MQTT topic, subscribed with QoS 1 on a persistent session.
#[derive(Debug, Clone, PartialEq)]
pub struct Mqtt {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub topic: String,
    /// Default `riposte-<eventSource>-<event>`.
    pub client_id: Option<String>,
}

/// An AMQP queue bound to an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Amqp {
    /// With the empty vhost of `amqp://host:5672/` read as the default `/`.
    pub url: String,
    pub exchange_name: String,
    pub exchange_type: ExchangeType,
    /// Default `#`.
    pub routing_key: String,
    /// Default true.
    pub exchange_durable: bool,
    pub exchange_auto_delete: bool,
    /// Default `riposte.<namespace>.<eventSource>.<event>`.
    pub queue_name: Option<String>,
    /// Default true: a queue that outlives a broker restart keeps what was not stored yet.
    pub queue_durable: bool,
    pub queue_auto_delete: bool,
    pub queue_exclusive: bool,
    pub consumer_tag: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

/// Redis pub/sub channels.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisPubSub {
    /// `redis://host:port/db`.
    pub url: String,
    pub channels: Vec<String>,
}

/// Redis streams read through a consumer group.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisStream {
    pub url: String,
    pub streams: Vec<String>,
    /// Default `riposte-<eventSource>`.
    pub consumer_group: Option<String>,
    /// Default 10.
    pub max_msg_count_per_read: usize,
}

/// Kubernetes objects of one group/version/resource, watched.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Empty: every namespace.
    pub namespace: String,
    pub group: String,
    pub version: String,
    /// The plural (`policyreports`).
    pub resource: String,
    /// Empty: all of ADD, UPDATE and DELETE.
    pub event_types: Vec<ResourceEventType>,
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    /// Only objects created after the watch started.
    pub after_start: bool,
}

impl Resource {
    pub fn wants(&self, t: ResourceEventType) -> bool {
        self.event_types.is_empty() || self.event_types.contains(&t)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResourceEventType {
    Add,
    Update,
    Delete,
}

impl ResourceEventType {
    pub fn name(self) -> &'static str {
        match self {
            ResourceEventType::Add => "ADD",
            ResourceEventType::Update => "UPDATE",
            ResourceEventType::Delete => "DELETE",
        }
    }
}

// ---- The document as Argo writes it. -------------------------------------------------------

#[derive(Deserialize, Default)]
struct EventSourceDoc {
    #[serde(default)]
    metadata: Metadata,
    #[serde(default)]
    spec: Option<serde_json::Map<String, Value>>,
    /// `apiVersion`, `kind`, `status`: not the source's behaviour.
    #[serde(flatten)]
    _rest: serde_json::Map<String, Value>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    name: Option<String>,
    namespace: Option<String>,
    #[serde(flatten)]
    _rest: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WebhookDoc {
    port: Option<Scalar>,
    endpoint: Option<String>,
    method: Option<String>,
    max_payload_size: Option<Scalar>,
    auth_secret: Option<SecretRef>,
    hmac: Option<HmacDoc>,
    format: Option<String>,
    /// The webhook's external URL, for producers that register it: nothing to run.
    #[serde(rename = "url")]
    _url: Option<String>,
}

#[derive(Deserialize)]
struct HmacDoc {
    secret: Option<SecretRef>,
    header: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CalendarDoc {
    schedule: Option<String>,
    interval: Option<String>,
    timezone: Option<String>,
    #[serde(default)]
    exclusion_dates: Vec<String>,
    persistence: Option<PersistenceDoc>,
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PersistenceDoc {
    catchup: Option<CatchupDoc>,
    /// Where Argo keeps the last firing; Riposte keeps it in its store.
    #[serde(rename = "configMap")]
    _config_map: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CatchupDoc {
    enabled: Option<bool>,
    max_duration: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileDoc {
    event_type: Option<String>,
    watch_path_config: Option<WatchPathDoc>,
    polling: Option<PollingDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WatchPathDoc {
    directory: Option<String>,
    path: Option<String>,
    path_regexp: Option<String>,
}

/// Argo's `polling: true` (Riposte always polls), or Riposte's `{interval}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum PollingDoc {
    /// Either way the directory is polled (inotify would add a dependency for nothing).
    #[allow(dead_code)]
    Enabled(bool),
    Every {
        interval: Option<String>,
    },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NatsDoc {
    url: Option<String>,
    subject: Option<String>,
    jetstream: Option<JetStreamDoc>,
    /// Bodies that parse as JSON are JSON either way.
    #[serde(rename = "jsonBody")]
    _json_body: Option<bool>,
}

#[derive(Deserialize)]
struct JetStreamDoc {
    stream: Option<String>,
    consumer: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MqttDoc {
    url: Option<String>,
    topic: Option<String>,
    client_id: Option<String>,
    #[serde(rename = "jsonBody")]
    _json_body: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AmqpDoc {
    url: Option<String>,
    exchange_name: Option<String>,
    exchange_type: Option<String>,
    routing_key: Option<String>,
    exchange_declare: Option<ExchangeDeclareDoc>,
    queue_declare: Option<QueueDeclareDoc>,
    queue_bind: Option<QueueBindDoc>,
    consume: Option<ConsumeDoc>,
    #[serde(rename = "jsonBody")]
    _json_body: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExchangeDeclareDoc {
    durable: Option<bool>,
    auto_delete: Option<bool>,
    /// Declared as Argo does it otherwise: not a behaviour of the events.
    #[serde(rename = "internal")]
    _internal: Option<bool>,
    #[serde(rename = "noWait")]
    _no_wait: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueueDeclareDoc {
    name: Option<String>,
    durable: Option<bool>,
    auto_delete: Option<bool>,
    exclusive: Option<bool>,
    #[serde(rename = "noWait")]
    _no_wait: Option<bool>,
}

#[derive(Deserialize)]
struct QueueBindDoc {
    #[serde(rename = "noWait")]
    _no_wait: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ConsumeDoc {
    consumer_tag: Option<String>,
    auto_ack: Option<bool>,
    #[serde(rename = "exclusive")]
    _exclusive: Option<bool>,
    #[serde(rename = "noLocal")]
    _no_local: Option<bool>,
    #[serde(rename = "noWait")]
    _no_wait: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RedisDoc {
    host_address: Option<String>,
    db: Option<i64>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(rename = "jsonBody")]
    _json_body: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RedisStreamDoc {
    host_address: Option<String>,
    db: Option<i64>,
    #[serde(default)]
    streams: Vec<String>,
    consumer_group: Option<String>,
    max_msg_count_per_read: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceDoc {
    namespace: Option<String>,
    group: Option<String>,
    version: Option<String>,
    resource: Option<String>,
    #[serde(default)]
    event_types: Vec<String>,
    filter: Option<ResourceFilterDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceFilterDoc {
    #[serde(default)]
    labels: Vec<SelectorDoc>,
    #[serde(default)]
    fields: Vec<SelectorDoc>,
    after_start: Option<bool>,
}

#[derive(Deserialize)]
struct SelectorDoc {
    key: Option<String>,
    operation: Option<String>,
    value: Option<String>,
}

// ---- Compilation. ----------------------------------------------------------------------------

/// What compiling an EventSource gave: the source when there was no error, and every problem.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub source: Option<CompiledEventSource>,
    pub problems: Vec<Problem>,
}

/// Compiles an EventSource document (its JSON, as stored or as loaded from YAML).
pub fn compile(doc: &Value) -> Compiled {
    let (source, problems) = compile_document(doc, event_source);
    Compiled { source, problems }
}

/// [`compile`], with the errors as one error (what the server needs).
pub fn compile_event_source(doc: &Value) -> Result<CompiledEventSource, CompileError> {
    let c = compile(doc);
    c.source
        .ok_or_else(|| CompileError::of("EventSource", doc, c.problems))
}

fn event_source(cx: &mut Cx, doc: EventSourceDoc) -> CompiledEventSource {
    let name = match doc.metadata.name.filter(|n| !n.is_empty()) {
        Some(n) => n,
        None => {
            cx.error("metadata", "metadata.name is required");
            String::new()
        }
    };
    let namespace = doc.metadata.namespace.unwrap_or_default();
    let mut entries = Vec::new();
    let Some(spec) = doc.spec else {
        cx.error("spec", "spec is required");
        return CompiledEventSource {
            namespace,
            name,
            entries,
        };
    };
    let mut types = 0;
    for (ty, value) in &spec {
        let path = format!("spec.{ty}");
        if matches!(
            ty.as_str(),
            "service" | "template" | "eventBusName" | "replicas"
        ) {
            cx.warn(
                &path,
                format!(
                    "field `{path}` is not implemented by Riposte and is ignored (sources run inside the server)"
                ),
            );
            continue;
        }
        if !EVENT_SOURCE_TYPES.contains(&ty.as_str()) {
            cx.warn(
                &path,
                format!(
                    "event source type `{ty}` is not implemented by Riposte (it receives {}); these events never arrive",
                    EVENT_SOURCE_TYPES.join(", ")
                ),
            );
            continue;
        }
        types += 1;
        let Value::Object(named) = value else {
            cx.error(
                &path,
                format!("{path} must map event names to their settings"),
            );
            continue;
        };
        for (event_name, v) in named {
            let p = format!("{path}.{event_name}");
            if let Some(config) = entry(cx, ty, v, &p) {
                entries.push(SourceEntry {
                    event_name: event_name.clone(),
                    config,
                });
            }
        }
    }
    if types == 0 && cx.problems.iter().all(|d| d.severity != Severity::Error) {
        cx.warn(
            "spec",
            "no event source type Riposte implements is configured; this EventSource produces nothing",
        );
    }
    CompiledEventSource {
        namespace,
        name,
        entries,
    }
}

fn entry(cx: &mut Cx, ty: &str, v: &Value, p: &str) -> Option<SourceConfig> {
    Some(match ty {
        "webhook" => {
            let d = typed(cx, v, p)?;
            SourceConfig::Webhook(webhook(cx, d, p))
        }
        "calendar" => {
            let d = typed(cx, v, p)?;
            SourceConfig::Calendar(calendar(cx, d, p))
        }
        "file" => {
            let d = typed(cx, v, p)?;
            SourceConfig::File(file(cx, d, p))
        }
        "nats" => {
            let d = typed(cx, v, p)?;
            SourceConfig::Nats(nats(cx, d, p))
        }
        "mqtt" => {
            let d = typed(cx, v, p)?;
            SourceConfig::Mqtt(mqtt(cx, d, p))
        }
        "amqp" => {
            let d = typed(cx, v, p)?;
            SourceConfig::Amqp(amqp(cx, d, p))
        }
        "redis" => {
            let d = typed(cx, v, p)?;
            SourceConfig::Redis(redis(cx, d, p))
        }
        "redisStream" => {
            let d = typed(cx, v, p)?;
            SourceConfig::RedisStream(redis_stream(cx, d, p))
        }
        "resource" => {
            let d = typed(cx, v, p)?;
            SourceConfig::Resource(resource(cx, d, p))
        }
        _ => return None,
    })
}

fn webhook(cx: &mut Cx, d: WebhookDoc, p: &str) -> Webhook {
    let port = match d.port.as_ref().map(Scalar::text) {
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => {
                cx.error(
                    &format!("{p}.port"),
                    format!("port {text:?} must be a number from 1 to 65535"),
                );
                0
            }
        },
        None => {
            cx.error(p, format!("{p}.port is required"));
            0
        }
    };
    let endpoint = required(cx, d.endpoint, p, "endpoint");
    if !endpoint.is_empty() && !endpoint.starts_with('/') {
        cx.error(
            &format!("{p}.endpoint"),
            format!("endpoint {endpoint:?} must start with `/`"),
        );
    }
    let method = d.method.unwrap_or_else(|| "POST".into()).to_uppercase();
    if !matches!(
        method.as_str(),
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD"
    ) {
        cx.error(
            &format!("{p}.method"),
            format!(
                "method {method:?} is not an HTTP method (GET, POST, PUT, PATCH, DELETE, HEAD)"
            ),
        );
    }
    let max_payload_size = match d.max_payload_size.as_ref().map(Scalar::text) {
        None => None,
        Some(text) => match text.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as u64),
            // Argo reads 0 and below as "no limit".
            Ok(_) => None,
            Err(_) => {
                cx.error(
                    &format!("{p}.maxPayloadSize"),
                    format!("maxPayloadSize {text:?} must be a number of bytes"),
                );
                None
            }
        },
    };
    let format = match d.format.as_deref() {
        None => Format::Auto,
        Some(f) => Format::parse(f).unwrap_or_else(|| {
            cx.error(
                &format!("{p}.format"),
                format!("format {f:?} is not one of {}", Format::NAMES.join(", ")),
            );
            Format::Auto
        }),
    };
    let hmac = d.hmac.and_then(|h| match h.secret {
        Some(secret) => Some(HmacCheck {
            secret,
            header: h.header.unwrap_or_else(|| "X-Signature-256".into()),
        }),
        None => {
            cx.error(
                &format!("{p}.hmac"),
                format!("{p}.hmac.secret ({{name, key}} of the shared key) is required"),
            );
            None
        }
    });
    Webhook {
        port,
        endpoint,
        method,
        max_payload_size,
        auth_secret: d.auth_secret,
        hmac,
        format,
    }
}

fn calendar(cx: &mut Cx, d: CalendarDoc, p: &str) -> Calendar {
    let schedule = match (
        d.schedule.filter(|s| !s.trim().is_empty()),
        d.interval.filter(|s| !s.is_empty()),
    ) {
        (None, None) => {
            cx.error(p, format!("{p} needs a schedule or an interval"));
            String::new()
        }
        (_, Some(i)) => {
            if expr::time::parse_duration_millis(&i).is_none_or(|ms| ms <= 0) {
                cx.error(
                    &format!("{p}.interval"),
                    format!("interval {i:?} is not a duration like 10s or 1h"),
                );
            }
            format!("@every {i}")
        }
        (Some(s), None) => {
            let s = s.trim().to_string();
            if s.split_whitespace().count() != 5 && !s.starts_with('@') {
                cx.error(
                    &format!("{p}.schedule"),
                    format!(
                        "schedule {s:?} must have 5 fields (minute hour day-of-month month day-of-week)"
                    ),
                );
            }
            s
        }
    };
    let date = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}").expect("a valid regex");
    let mut exclusion_dates = Vec::new();
    for (i, x) in d.exclusion_dates.iter().enumerate() {
        match date.find(x) {
            Some(m) => exclusion_dates.push(m.as_str().to_string()),
            None => cx.error(
                &format!("{p}.exclusionDates[{i}]"),
                format!("exclusion date {x:?} is not a date like 2026-12-24"),
            ),
        }
    }
    let catch_up_ms = d
        .persistence
        .and_then(|p| p.catchup)
        .filter(|c| c.enabled == Some(true))
        .map(|c| match c.max_duration {
            None => 24 * 3600 * 1000,
            Some(m) => expr::time::parse_duration_millis(&m)
                .filter(|ms| *ms > 0)
                .unwrap_or_else(|| {
                    cx.error(
                        &format!("{p}.persistence.catchup.maxDuration"),
                        format!("maxDuration {m:?} is not a duration like 5m or 24h"),
                    );
                    0
                }),
        });
    Calendar {
        schedule,
        timezone: d.timezone.filter(|t| !t.is_empty()),
        exclusion_dates,
        catch_up_ms,
        metadata: d.metadata,
    }
}

fn file(cx: &mut Cx, d: FileDoc, p: &str) -> FileWatch {
    let w = d.watch_path_config.unwrap_or(WatchPathDoc {
        directory: None,
        path: None,
        path_regexp: None,
    });
    let directory = required(cx, w.directory, p, "watchPathConfig.directory");
    let path_regexp = w.path_regexp.and_then(|r| match regex::Regex::new(&r) {
        Ok(re) => Some(Pattern(re)),
        Err(e) => {
            cx.error(
                &format!("{p}.watchPathConfig.pathRegexp"),
                format!("pathRegexp {r:?} is not a regex: {e}"),
            );
            None
        }
    });
    let event_type = match d.event_type.as_deref().unwrap_or("CREATE") {
        "CREATE" => FileOp::Create,
        "WRITE" => FileOp::Write,
        "REMOVE" => FileOp::Remove,
        other => {
            cx.error(
                &format!("{p}.eventType"),
                format!("eventType {other:?} is not one Riposte reports (CREATE, WRITE, REMOVE)"),
            );
            FileOp::Create
        }
    };
    let poll_interval_ms = match d.polling {
        Some(PollingDoc::Every {
            interval: Some(i), ..
        }) => match expr::time::parse_duration_millis(&i).filter(|ms| *ms > 0) {
            Some(ms) => ms.max(100) as u64,
            None => {
                cx.error(
                    &format!("{p}.polling.interval"),
                    format!("interval {i:?} is not a duration like 1s"),
                );
                1000
            }
        },
        _ => 1000,
    };
    FileWatch {
        directory,
        path: w.path.filter(|s| !s.is_empty()),
        path_regexp,
        event_type,
        poll_interval_ms,
    }
}

fn nats(cx: &mut Cx, d: NatsDoc, p: &str) -> Nats {
    let url = required(cx, d.url, p, "url");
    let subject = required(cx, d.subject, p, "subject");
    let jetstream = d.jetstream.map(|j| JetStream {
        stream: required(cx, j.stream, &format!("{p}.jetstream"), "stream"),
        consumer: j.consumer.filter(|c| !c.is_empty()),
    });
    Nats {
        url,
        subject,
        jetstream,
    }
}

fn mqtt(cx: &mut Cx, d: MqttDoc, p: &str) -> Mqtt {
    let url = required(cx, d.url, p, "url");
    let topic = required(cx, d.topic, p, "topic");
    let hostport = url
        .trim_start_matches("tcp://")
        .trim_start_matches("mqtt://");
    let (host, port) = match hostport
        .rsplit_once(':')
        .and_then(|(h, port)| Some((h.to_string(), port.parse::<u16>().ok()?)))
    {
        Some(hp) => hp,
        None => {
            if !url.is_empty() {
                cx.error(
                    &format!("{p}.url"),
                    format!("mqtt url {url:?} must be tcp://host:port"),
                );
            }
            (String::new(), 0)
        }
    };
    Mqtt {
        url,
        host,
        port,
        topic,
        client_id: d.client_id.filter(|c| !c.is_empty()),
    }
}

fn amqp(cx: &mut Cx, d: AmqpDoc, p: &str) -> Amqp {
    let url = required(cx, d.url, p, "url");
    // `amqp://host:5672/` names the empty vhost, which nobody means: it is the default `/`.
    let url = match url.strip_suffix('/') {
        Some(u) if u.matches('/').count() == 2 => u.to_string(),
        _ => url,
    };
    if !url.is_empty() && !url.starts_with("amqp://") && !url.starts_with("amqps://") {
        cx.error(
            &format!("{p}.url"),
            format!("amqp url {url:?} must start with amqp:// or amqps://"),
        );
    }
    let exchange_name = required(cx, d.exchange_name, p, "exchangeName");
    let exchange_type = match d.exchange_type.as_deref().unwrap_or("topic") {
        "direct" => ExchangeType::Direct,
        "fanout" => ExchangeType::Fanout,
        "topic" => ExchangeType::Topic,
        "headers" => ExchangeType::Headers,
        other => {
            cx.error(
                &format!("{p}.exchangeType"),
                format!("exchangeType {other:?} is not direct, fanout, topic or headers"),
            );
            ExchangeType::Topic
        }
    };
    let (exchange_durable, exchange_auto_delete) = d
        .exchange_declare
        .map(|e| (e.durable.unwrap_or(true), e.auto_delete.unwrap_or(false)))
        .unwrap_or((true, false));
    let q = d.queue_declare;
    let _ = d.queue_bind;
    let consume = d.consume;
    if consume.as_ref().and_then(|c| c.auto_ack) == Some(true) {
        cx.warn(
            &format!("{p}.consume.autoAck"),
            "Riposte acknowledges each message after storing it; consume.autoAck is ignored",
        );
    }
    Amqp {
        url,
        exchange_name,
        exchange_type,
        routing_key: d.routing_key.unwrap_or_else(|| "#".into()),
        exchange_durable,
        exchange_auto_delete,
        queue_name: q
            .as_ref()
            .and_then(|q| q.name.clone())
            .filter(|n| !n.is_empty()),
        queue_durable: q.as_ref().and_then(|q| q.durable).unwrap_or(true),
        queue_auto_delete: q.as_ref().and_then(|q| q.auto_delete).unwrap_or(false),
        queue_exclusive: q.as_ref().and_then(|q| q.exclusive).unwrap_or(false),
        consumer_tag: consume
            .and_then(|c| c.consumer_tag)
            .filter(|t| !t.is_empty()),
    }
}

fn redis_url(cx: &mut Cx, host: Option<String>, db: Option<i64>, p: &str) -> String {
    let host = required(cx, host, p, "hostAddress");
    if host.contains("://") {
        cx.error(
            &format!("{p}.hostAddress"),
            format!("hostAddress {host:?} is host:port, without a scheme"),
        );
    }
    format!("redis://{host}/{}", db.unwrap_or(0))
}

fn redis(cx: &mut Cx, d: RedisDoc, p: &str) -> RedisPubSub {
    let url = redis_url(cx, d.host_address, d.db, p);
    if d.channels.is_empty() {
        cx.error(p, format!("{p}.channels is required"));
    }
    RedisPubSub {
        url,
        channels: d.channels,
    }
}

fn redis_stream(cx: &mut Cx, d: RedisStreamDoc, p: &str) -> RedisStream {
    let url = redis_url(cx, d.host_address, d.db, p);
    if d.streams.is_empty() {
        cx.error(p, format!("{p}.streams is required"));
    }
    RedisStream {
        url,
        streams: d.streams,
        consumer_group: d.consumer_group.filter(|g| !g.is_empty()),
        max_msg_count_per_read: d.max_msg_count_per_read.unwrap_or(10).max(1) as usize,
    }
}

fn resource(cx: &mut Cx, d: ResourceDoc, p: &str) -> Resource {
    let version = required(cx, d.version, p, "version");
    let plural = required(cx, d.resource, p, "resource");
    let mut event_types = Vec::new();
    for (i, t) in d.event_types.iter().enumerate() {
        match t.as_str() {
            "ADD" => event_types.push(ResourceEventType::Add),
            "UPDATE" => event_types.push(ResourceEventType::Update),
            "DELETE" => event_types.push(ResourceEventType::Delete),
            other => cx.error(
                &format!("{p}.eventTypes[{i}]"),
                format!("event type {other:?} is not ADD, UPDATE or DELETE"),
            ),
        }
    }
    let filter = d.filter;
    let selector = |cx: &mut Cx, items: &[SelectorDoc], what: &str| -> Option<String> {
        let parts: Vec<String> = items
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let at = format!("{p}.filter.{what}[{i}]");
                let key = required(cx, s.key.clone(), &at, "key");
                let op = s.operation.as_deref().unwrap_or("==");
                if !matches!(op, "=" | "==" | "!=" | "in" | "notin" | "exists" | "!") {
                    cx.error(
                        &format!("{at}.operation"),
                        format!("operation {op:?} is not one of =, ==, !=, in, notin"),
                    );
                }
                let part = match (op, s.value.as_deref()) {
                    ("in" | "notin", Some(v)) => format!("{key} {op} ({v})"),
                    (_, Some(v)) => format!("{key}{op}{v}"),
                    (_, None) => key,
                };
                (!part.is_empty()).then_some(part)
            })
            .collect();
        (!parts.is_empty()).then(|| parts.join(","))
    };
    let (label_selector, field_selector, after_start) = match &filter {
        Some(f) => (
            selector(cx, &f.labels, "labels"),
            selector(cx, &f.fields, "fields"),
            f.after_start.unwrap_or(false),
        ),
        None => (None, None, false),
    };
    Resource {
        namespace: d.namespace.unwrap_or_default(),
        group: d.group.unwrap_or_default(),
        version,
        resource: plural,
        event_types,
        label_selector,
        field_selector,
        after_start,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(doc: Value) -> Vec<String> {
        compile(&doc)
            .problems
            .into_iter()
            .map(|p| format!("{:?} {}: {}", p.severity, p.path, p.message))
            .collect()
    }

    fn one(ty: &str, cfg: Value) -> SourceConfig {
        let doc = json!({"metadata": {"name": "s"}, "spec": {ty: {"e": cfg}}});
        let c = compile(&doc);
        let source = c.source.unwrap_or_else(|| panic!("{:?}", c.problems));
        source.entries[0].config.clone()
    }

    #[test]
    fn argo_defaults_and_int_or_string_quirks_are_read_once() {
        let SourceConfig::Webhook(w) = one(
            "webhook",
            json!({"port": "12000", "endpoint": "/falco", "maxPayloadSize": 1024}),
        ) else {
            panic!("webhook")
        };
        assert_eq!((w.port, w.method.as_str()), (12000, "POST"));
        assert_eq!(w.max_payload_size, Some(1024));
        assert_eq!(w.format, Format::Auto);
        let SourceConfig::Webhook(w) = one(
            "webhook",
            json!({"port": 12000, "endpoint": "/a", "method": "put", "maxPayloadSize": "0",
                   "hmac": {"secret": {"name": "s", "key": "k"}}, "format": "k8s-audit"}),
        ) else {
            panic!("webhook")
        };
        assert_eq!((w.method.as_str(), w.max_payload_size), ("PUT", None));
        assert_eq!(w.format, Format::Audit);
        assert_eq!(
            w.hmac.map(|h| h.header),
            Some("X-Signature-256".to_string())
        );

        let SourceConfig::Calendar(c) = one(
            "calendar",
            json!({"interval": "10s", "exclusionDates": ["2026-12-24T00:00:00Z"],
                   "persistence": {"catchup": {"enabled": true}, "configMap": {"name": "x"}}}),
        ) else {
            panic!("calendar")
        };
        assert_eq!(c.schedule, "@every 10s");
        assert_eq!(c.catch_up_ms, Some(24 * 3600 * 1000));
        assert!(c.excludes("2026-12-24T09:00:00Z") && !c.excludes("2026-12-25T09:00:00Z"));

        let SourceConfig::Amqp(a) = one(
            "amqp",
            json!({"url": "amqp://localhost:5672/", "exchangeName": "x"}),
        ) else {
            panic!("amqp")
        };
        assert_eq!(a.url, "amqp://localhost:5672");
        assert_eq!(
            (a.exchange_type, a.routing_key.as_str(), a.queue_durable),
            (ExchangeType::Topic, "#", true)
        );

        let SourceConfig::File(f) = one(
            "file",
            json!({"watchPathConfig": {"directory": "/d", "pathRegexp": "\\.json$"}, "polling": true}),
        ) else {
            panic!("file")
        };
        assert!(f.watches("a.json") && !f.watches("a.txt"));
        assert_eq!((f.event_type, f.poll_interval_ms), (FileOp::Create, 1000));

        let SourceConfig::Resource(r) = one(
            "resource",
            json!({"version": "v1", "resource": "pods", "eventTypes": ["ADD"],
                   "filter": {"afterStart": true, "labels": [{"key": "app", "operation": "==", "value": "web"}, {"key": "tier"}]}}),
        ) else {
            panic!("resource")
        };
        assert_eq!(r.label_selector.as_deref(), Some("app==web,tier"));
        assert!(r.after_start && r.wants(ResourceEventType::Add));
        assert!(!r.wants(ResourceEventType::Delete));

        let SourceConfig::Mqtt(m) =
            one("mqtt", json!({"url": "tcp://127.0.0.1:1883", "topic": "t"}))
        else {
            panic!("mqtt")
        };
        assert_eq!((m.host.as_str(), m.port), ("127.0.0.1", 1883));
    }

    #[test]
    fn every_problem_is_at_its_path() {
        let got = problems(json!({
            "metadata": {"name": "s"},
            "spec": {
                "webhook": {"a": {"port": "99999", "endpoint": "x", "method": "FETCH", "format": "xml"}},
                "calendar": {"c": {"interval": "soon", "exclusionDates": ["christmas"]}},
                "file": {"f": {"watchPathConfig": {"directory": "/d", "pathRegexp": "("}, "eventType": "RENAME"}},
                "mqtt": {"m": {"url": "localhost", "topic": "t"}},
                "redis": {"r": {"hostAddress": "redis://h:1"}},
                "resource": {"k": {"version": "v1", "resource": "pods", "eventTypes": ["MODIFIED"], "unknownThing": 1}},
                "kafka": {"k": {}},
            }
        }));
        let want = [
            "Error spec.webhook.a.port: port \"99999\"",
            "Error spec.webhook.a.endpoint: endpoint \"x\" must start with `/`",
            "Error spec.webhook.a.method: method \"FETCH\"",
            "Error spec.webhook.a.format: format \"xml\"",
            "Error spec.calendar.c.interval: interval \"soon\"",
            "Error spec.calendar.c.exclusionDates[0]: exclusion date \"christmas\"",
            "Error spec.file.f.watchPathConfig.pathRegexp: pathRegexp \"(\"",
            "Error spec.file.f.eventType: eventType \"RENAME\"",
            "Error spec.mqtt.m.url: mqtt url \"localhost\"",
            "Error spec.redis.r.hostAddress: hostAddress \"redis://h:1\"",
            "Error spec.redis.r: spec.redis.r.channels is required",
            "Error spec.resource.k.eventTypes[0]: event type \"MODIFIED\"",
            "Warning spec.resource.k.unknownThing: field `spec.resource.k.unknownThing` is not implemented",
            "Warning spec.kafka: event source type `kafka` is not implemented",
        ];
        for w in want {
            assert!(got.iter().any(|g| g.starts_with(w)), "{w}\n{got:#?}");
        }
        assert_eq!(got.len(), want.len(), "{got:#?}");
    }

    #[test]
    fn a_wrong_type_is_an_error_at_its_path_and_the_source_is_not_compiled() {
        let doc = json!({"metadata": {"name": "s"}, "spec": {"redisStream": {"e": {"hostAddress": "h:1", "streams": "one"}}}});
        let c = compile(&doc);
        assert!(c.source.is_none());
        assert!(
            c.problems
                .iter()
                .any(|p| p.path == "spec.redisStream.e.streams" && p.severity == Severity::Error),
            "{:?}",
            c.problems
        );
        let e = compile_event_source(&doc).expect_err("refused");
        assert!(e.to_string().contains("EventSource \"s\""), "{e}");
    }
}
