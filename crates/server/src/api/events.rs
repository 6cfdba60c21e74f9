//! Sensors, EventSources and WorkflowEventBindings (Argo Server's paths and bodies), the
//! webhook receiver on the API port, Argo Workflows' `POST /api/v1/events/{ns}/{discriminator}`,
//! and the event log (list, get with every sensor's decision, redeliver).

#[allow(unused_imports)]
use super::*;

use crate::events::{BINDING, EVENT_SOURCE, Events, SENSOR};

impl FromRef<AppState> for Events {
    fn from_ref(s: &AppState) -> Events {
        s.events.clone()
    }
}

/// Compiles a Sensor, EventSource or WorkflowEventBinding the way `riposte lint` does; the
/// errors (each with its path) are one InvalidArgument.
fn lint_event_object(v: &Value, kind: &str) -> ApiResult<()> {
    let problems = match kind {
        BINDING => spec::binding::compile(v).problems,
        SENSOR => spec::sensor::compile(v).problems,
        _ => spec::event_source::compile(v).problems,
    };
    let errors: Vec<String> = problems
        .into_iter()
        .filter(|p| p.severity == spec::Severity::Error)
        .map(|p| {
            if p.path.is_empty() || p.message.contains(&p.path) {
                p.message
            } else {
                format!("{}: {}", p.path, p.message)
            }
        })
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors.join("; ")));
    }
    Ok(())
}

/// Argo's generated clients (Hera) write some fields the way the protobuf definitions name
/// them: a webhook's settings under `webhookContext`, a trigger's object as `resource.value`
/// (base64 of its JSON) or as `inline` YAML. Stored objects use the YAML (CRD) form.
fn normalize(kind: &str, obj: &mut Value) -> ApiResult<()> {
    if kind == EVENT_SOURCE
        && let Some(hooks) = obj
            .get_mut("spec")
            .and_then(|s| s.get_mut("webhook"))
            .and_then(Value::as_object_mut)
    {
        for entry in hooks.values_mut() {
            if let Some(Value::Object(ctx)) = entry
                .as_object_mut()
                .and_then(|e| e.remove("webhookContext"))
            {
                for (k, v) in ctx {
                    entry[k.as_str()] = v;
                }
            }
        }
    }
    if kind == SENSOR
        && let Some(triggers) = obj
            .get_mut("spec")
            .and_then(|s| s.get_mut("triggers"))
            .and_then(Value::as_array_mut)
    {
        for t in triggers {
            for ty in ["argoWorkflow", "k8s"] {
                // `get_mut`, not indexing: indexing would create the missing keys.
                let Some(source) = t
                    .get_mut("template")
                    .and_then(|x| x.get_mut(ty))
                    .and_then(|x| x.get_mut("source"))
                    .filter(|x| x.is_object())
                else {
                    continue;
                };
                if let Some(b64) = source["resource"]["value"].as_str() {
                    use base64::Engine;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .map_err(|e| {
                            ApiError::invalid(format!(
                                "triggers: source.resource.value is not base64: {e}"
                            ))
                        })?;
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    source["resource"] = parse_object_text(&text)?;
                } else if let Some(text) = source["inline"].as_str().map(str::to_string) {
                    source["resource"] = parse_object_text(&text)?;
                    if let Some(m) = source.as_object_mut() {
                        m.remove("inline");
                    }
                }
            }
        }
    }
    Ok(())
}

fn parse_object_text(text: &str) -> ApiResult<Value> {
    spec::yaml::load_documents(text)
        .map_err(|e| {
            ApiError::invalid(format!("a trigger's object does not parse: {}", e.message))
        })?
        .into_iter()
        .next()
        .map(|d| d.value)
        .ok_or_else(|| ApiError::invalid("a trigger's object is empty"))
}

fn object_json(o: &store::EventObject) -> Value {
    let mut body = o.body.clone();
    // Also under the protobuf name, for generated clients (Hera) that read it there.
    if o.kind == EVENT_SOURCE
        && let Some(hooks) = body
            .get_mut("spec")
            .and_then(|s| s.get_mut("webhook"))
            .and_then(Value::as_object_mut)
    {
        for entry in hooks.values_mut() {
            let ctx: serde_json::Map<String, Value> = entry
                .as_object()
                .map(|e| {
                    e.iter()
                        .filter(|(k, _)| k.as_str() != "filter")
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            entry["webhookContext"] = Value::Object(ctx);
        }
    }
    body["metadata"]["namespace"] = json!(o.namespace);
    body["metadata"]["creationTimestamp"] = json!(expr::time::rfc3339(o.created_at));
    body["metadata"]["uid"] = json!(format!("{}-{}", o.kind.to_lowercase(), o.name));
    body["metadata"]["resourceVersion"] = json!(o.updated_at.to_string());
    body
}

fn body_key(kind: &str) -> &'static str {
    match kind {
        SENSOR => "sensor",
        EVENT_SOURCE => "eventSource",
        _ => "workflowEventBinding",
    }
}

fn audit_object(kind: &str, namespace: &str, name: &str) -> String {
    let plural = match kind {
        SENSOR => "sensors",
        EVENT_SOURCE => "event-sources",
        _ => "workflow-event-bindings",
    };
    format!("{plural}/{namespace}/{name}")
}

/// Creates or replaces an event object, audited, then re-arms sensors and sources.
pub(crate) async fn put_event_object(
    events: &Events,
    caller: &Caller,
    namespace: &str,
    mut obj: Value,
    kind: &str,
    create: bool,
    name_in_path: Option<&str>,
) -> ApiResult {
    if obj["kind"].is_null() {
        obj["kind"] = json!(kind);
    }
    if obj["apiVersion"].is_null() {
        obj["apiVersion"] = json!("argoproj.io/v1alpha1");
    }
    if obj["apiVersion"] != "argoproj.io/v1alpha1" {
        return Err(ApiError::invalid(format!(
            "the object's apiVersion is {}, expected argoproj.io/v1alpha1",
            obj["apiVersion"]
        )));
    }
    normalize(kind, &mut obj)?;
    if obj["kind"] != kind {
        return Err(ApiError::invalid(format!(
            "the object's kind is {}, expected {kind}",
            obj["kind"]
        )));
    }
    if let Some(ns) = obj["metadata"]["namespace"].as_str()
        && !ns.is_empty()
        && ns != namespace
    {
        return Err(ApiError::invalid(format!(
            "metadata.namespace {ns:?} differs from the namespace in the path ({namespace})"
        )));
    }
    lint_event_object(&obj, kind)?;
    let name = obj["metadata"]["name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("metadata.name is required"))?
        .to_string();
    same_name(name_in_path, &name)?;
    let c = events.controller();
    let now = now_ms();
    let created_at = if create {
        now
    } else {
        c.store()
            .get_event_object(kind, namespace, &name)
            .await
            .map(|o| o.created_at)
            .unwrap_or(now)
    };
    let rec = store::EventObject {
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.clone(),
        body: obj,
        created_at,
        updated_at: now,
    };
    let audit = store::AuditEntry {
        at: now,
        actor: caller.name.clone(),
        action: format!(
            "{}.{}",
            kind.to_lowercase(),
            if create { "create" } else { "update" }
        ),
        object: audit_object(kind, namespace, &name),
        source: caller.source.clone(),
        details: json!({}),
    };
    match c.store().put_event_object(&rec, create, &audit).await {
        Err(store::StoreError::AlreadyExists { .. }) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                6,
                format!("{kind} {namespace}/{name} already exists"),
            ));
        }
        Err(store::StoreError::NotFound { .. }) => {
            return Err(ApiError::not_found(format!(
                "{kind} {namespace}/{name} not found"
            )));
        }
        other => other?,
    }
    if kind == SENSOR {
        // A replaced sensor waits afresh: old partial matches may not fit its new conditions.
        c.store()
            .reset_sensor_dependencies(&format!("{namespace}/{name}"))
            .await?;
    }
    events
        .definitions_changed()
        .await
        .map_err(ControlError::from)?;
    Ok(Json(object_json(
        &c.store().get_event_object(kind, namespace, &name).await?,
    )))
}

async fn create(
    events: &Events,
    caller: &Caller,
    namespace: &str,
    body: &Value,
    kind: &str,
) -> ApiResult {
    let obj = body
        .get(body_key(kind))
        .cloned()
        .ok_or_else(|| ApiError::invalid(format!("request body needs a `{}`", body_key(kind))))?;
    put_event_object(events, caller, namespace, obj, kind, true, None).await
}

async fn update(
    events: &Events,
    caller: &Caller,
    namespace: &str,
    name: &str,
    body: &Value,
    kind: &str,
) -> ApiResult {
    let obj = body
        .get(body_key(kind))
        .cloned()
        .ok_or_else(|| ApiError::invalid(format!("request body needs a `{}`", body_key(kind))))?;
    put_event_object(events, caller, namespace, obj, kind, false, Some(name)).await
}

async fn list(events: &Events, namespace: &str, kind: &str) -> ApiResult {
    let items: Vec<Value> = events
        .controller()
        .store()
        .list_event_objects(kind, Some(namespace))
        .await?
        .iter()
        .map(object_json)
        .collect();
    Ok(Json(json!({"metadata": {}, "items": items})))
}

async fn get_one(events: &Events, namespace: &str, name: &str, kind: &str) -> ApiResult {
    match events
        .controller()
        .store()
        .get_event_object(kind, namespace, name)
        .await
    {
        Ok(o) => Ok(Json(object_json(&o))),
        Err(store::StoreError::NotFound { .. }) => Err(ApiError::not_found(format!(
            "{kind} {namespace}/{name} not found"
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn delete(
    events: &Events,
    caller: &Caller,
    namespace: &str,
    name: &str,
    kind: &str,
) -> ApiResult {
    let audit = caller.audit(
        &format!("{}.delete", kind.to_lowercase()),
        audit_object(kind, namespace, name),
        json!({}),
    );
    let store = events.controller().store();
    if !store
        .delete_event_object(kind, namespace, name, &audit)
        .await?
    {
        return Err(ApiError::not_found(format!(
            "{kind} {namespace}/{name} not found"
        )));
    }
    if kind == SENSOR {
        store
            .reset_sensor_dependencies(&format!("{namespace}/{name}"))
            .await?;
    }
    events
        .definitions_changed()
        .await
        .map_err(ControlError::from)?;
    Ok(Json(json!({})))
}

macro_rules! object_handlers {
    ($kind:expr, $create:ident, $list:ident, $get:ident, $update:ident, $delete:ident) => {
        pub(super) async fn $create(
            State(e): State<Events>,
            Extension(caller): Extension<Caller>,
            Path(namespace): Path<String>,
            Json(body): Json<Value>,
        ) -> ApiResult {
            create(&e, &caller, &namespace, &body, $kind).await
        }
        pub(super) async fn $list(
            State(e): State<Events>,
            Path(namespace): Path<String>,
        ) -> ApiResult {
            list(&e, &namespace, $kind).await
        }
        pub(super) async fn $get(
            State(e): State<Events>,
            Path((namespace, name)): Path<(String, String)>,
        ) -> ApiResult {
            get_one(&e, &namespace, &name, $kind).await
        }
        pub(super) async fn $update(
            State(e): State<Events>,
            Extension(caller): Extension<Caller>,
            Path((namespace, name)): Path<(String, String)>,
            Json(body): Json<Value>,
        ) -> ApiResult {
            update(&e, &caller, &namespace, &name, &body, $kind).await
        }
        pub(super) async fn $delete(
            State(e): State<Events>,
            Extension(caller): Extension<Caller>,
            Path((namespace, name)): Path<(String, String)>,
        ) -> ApiResult {
            delete(&e, &caller, &namespace, &name, $kind).await
        }
    };
}

object_handlers!(
    SENSOR,
    create_sensor,
    list_sensors,
    get_sensor,
    update_sensor,
    delete_sensor
);
object_handlers!(
    EVENT_SOURCE,
    create_event_source,
    list_event_sources,
    get_event_source,
    update_event_source,
    delete_event_source
);
object_handlers!(
    BINDING,
    create_binding,
    list_bindings,
    get_binding,
    update_binding,
    delete_binding
);

/// A webhook event source's endpoint, on the API port.
pub(super) async fn receive_webhook(
    State(state): State<AppState>,
    Path((namespace, event_source, event_name)): Path<(String, String, String)>,
    method: Method,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let events = &state.events;
    let def = match events.event_source(&namespace, &event_source).await {
        Some(d) => d,
        None => {
            return ApiError::not_found(format!(
                "event source {namespace}/{event_source} not found"
            ))
            .into_response();
        }
    };
    let Some(config) = def.webhook(&event_name) else {
        return ApiError::not_found(format!(
            "event source {namespace}/{event_source} has no webhook event {event_name:?}"
        ))
        .into_response();
    };
    let mut config = config.clone();
    // With the API's own authentication on, the caller's token was checked already (role
    // submitter); the event source's authSecret guards its own port.
    if state.auth.is_some() {
        config.auth_secret = None;
    }
    let entry = crate::events::sources::WebhookEntry {
        namespace,
        event_source,
        event_name,
        config,
    };
    let (status, text) =
        crate::events::sources::receive_webhook(events, &entry, &method, &headers, &body).await;
    if status.is_success() {
        (
            status,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            text,
        )
            .into_response()
    } else {
        ApiError::new(status, grpc_code(status), text.trim_end().to_string()).into_response()
    }
}

fn grpc_code(status: StatusCode) -> u16 {
    match status.as_u16() {
        400 => 3,
        401 => 16,
        404 => 5,
        405 => 12,
        413 => 8,
        503 => 14,
        _ => 13,
    }
}

#[derive(serde::Deserialize)]
pub(super) struct EventListQuery {
    namespace: Option<String>,
    #[serde(rename = "eventSource")]
    event_source: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

fn event_json(e: &store::EventRecord) -> Value {
    json!({
        "seq": e.seq,
        "namespace": e.namespace,
        "eventSource": e.event_source,
        "eventName": e.event_name,
        "receivedAt": expr::time::rfc3339(e.received_at),
        "processedAt": e.processed_at.map(expr::time::rfc3339),
        "envelope": e.envelope,
    })
}

/// The event log, newest first.
pub(super) async fn list_events(
    State(e): State<Events>,
    Query(q): Query<EventListQuery>,
) -> ApiResult {
    let items: Vec<Value> = e
        .controller()
        .store()
        .list_events(&store::EventQuery {
            namespace: q.namespace.filter(|n| !n.is_empty()),
            event_source: q.event_source.filter(|n| !n.is_empty()),
            before: q.before,
            limit: q.limit.unwrap_or(100),
        })
        .await?
        .iter()
        .map(|r| {
            let mut v = event_json(r);
            // The list is an index: the payload is in `get`.
            v["envelope"]["data"] = Value::Null;
            v
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

fn parse_seq(s: &str) -> ApiResult<i64> {
    s.parse::<i64>().map_err(|_| {
        ApiError::invalid(format!(
            "event {s:?}: events are named by their number (riposte event list)"
        ))
    })
}

/// One event with every sensor's decision about it.
pub(super) async fn get_event(State(e): State<Events>, Path(seq): Path<String>) -> ApiResult {
    let seq = parse_seq(&seq)?;
    let store = e.controller().store();
    let rec = match store.get_event(seq).await {
        Ok(r) => r,
        Err(store::StoreError::NotFound { .. }) => {
            return Err(ApiError::not_found(format!(
                "event {seq} not found (expired or never received)"
            )));
        }
        Err(err) => return Err(err.into()),
    };
    let decisions: Vec<Value> = store
        .event_decisions(seq)
        .await?
        .into_iter()
        .map(|d| {
            let mut v = d.decision;
            v["sensor"] = json!(d.sensor);
            v["at"] = json!(expr::time::rfc3339(d.at));
            v
        })
        .collect();
    let mut v = event_json(&rec);
    v["sensors"] = json!(decisions);
    Ok(Json(v))
}

/// Hands a stored event to the sensors again (firings that happened before stay single).
pub(super) async fn redeliver_event(
    State(e): State<Events>,
    Extension(caller): Extension<Caller>,
    Path(seq): Path<String>,
) -> ApiResult {
    let seq = parse_seq(&seq)?;
    let store = e.controller().store();
    match store.get_event(seq).await {
        Ok(_) => {}
        Err(store::StoreError::NotFound { .. }) => {
            return Err(ApiError::not_found(format!("event {seq} not found")));
        }
        Err(err) => return Err(err.into()),
    }
    let audit = caller.audit("event.redeliver", format!("events/{seq}"), json!({}));
    store.audit_append(std::slice::from_ref(&audit)).await?;
    let done = e.redeliver(seq).await.map_err(ControlError::from)?;
    get_event(State(e), Path(seq.to_string()))
        .await
        .map(|Json(mut v)| {
            v["redelivered"] = json!(done);
            Json(v)
        })
}

/// Argo Workflows' event endpoint: every WorkflowEventBinding of the namespace whose
/// `spec.event.selector` holds for this payload submits its template, with parameters from
/// `valueFrom.event` expressions. The event is stored first, like every event.
pub(super) async fn receive_event(
    State(e): State<Events>,
    Extension(caller): Extension<Caller>,
    Path((namespace, discriminator)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult {
    let payload: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|err| ApiError::invalid(format!("the event body is not JSON: {err}")))?
    };
    let mut metadata = serde_json::Map::new();
    for (k, v) in &headers {
        if k == axum::http::header::AUTHORIZATION {
            continue;
        }
        let entry = metadata
            .entry(k.as_str().to_lowercase())
            .or_insert_with(|| json!([]));
        if let Value::Array(a) = entry {
            a.push(json!(String::from_utf8_lossy(v.as_bytes())));
        }
    }
    let metadata = Value::Object(metadata);
    let id = headers
        .get("idempotency-key")
        .or_else(|| headers.get("x-request-id"))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let event = ::events::Event {
        id,
        source: format!("argo-workflows/{discriminator}"),
        kind: "argo-workflows.event".into(),
        subject: discriminator.clone(),
        time: expr::time::rfc3339(now_ms()),
        datacontenttype: "application/json".into(),
        // Who sent it: the workflows it submits are theirs (in the audit chain).
        data: json!({"payload": payload, "metadata": metadata, "discriminator": discriminator,
            "caller": {"name": caller.name, "source": caller.source}}),
    };
    let appended = e
        .ingest(
            &namespace,
            crate::events::bindings::BINDING_EVENT_SOURCE,
            &discriminator,
            vec![event],
        )
        .await
        .map_err(ControlError::from)?;
    let seq = appended.first().map(|a| a.seq).unwrap_or_default();
    // Argo dispatches synchronously by default: answer once the bindings have been asked.
    // The processor does it (the bus may be quicker than this call); a submit that fails
    // for a transient reason is retried by it until it commits.
    if !e
        .process_and_wait(seq, std::time::Duration::from_secs(10))
        .await
    {
        tracing::warn!(
            seq,
            "workflow event bindings not done yet; the event is stored and retried"
        );
        return Ok(Json(json!({})));
    }
    let errors: Vec<String> = e
        .controller()
        .store()
        .event_decisions(seq)
        .await?
        .iter()
        .flat_map(|d| {
            d.decision["triggers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|t| t["error"].as_str().map(str::to_string))
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors.join("; ")));
    }
    Ok(Json(json!({})))
}

/// Creates the event object, or replaces it when it exists: "created" or "configured".
pub(super) async fn upsert_event_object(
    events: &Events,
    caller: &Caller,
    namespace: &str,
    obj: Value,
    kind: &str,
) -> ApiResult<&'static str> {
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let exists = events
        .controller()
        .store()
        .get_event_object(kind, namespace, &name)
        .await
        .is_ok();
    let _stored = put_event_object(events, caller, namespace, obj, kind, !exists, None).await?;
    Ok(if exists { "configured" } else { "created" })
}

/// Creates or replaces an event object as `actor` (a config directory at start); the same
/// lint, audit and re-arming as through the API.
pub async fn apply_event_object(
    events: &Events,
    actor: &str,
    namespace: &str,
    obj: Value,
    kind: &str,
) -> Result<&'static str, String> {
    let caller = Caller {
        name: actor.to_string(),
        source: "config-dir".into(),
    };
    upsert_event_object(events, &caller, namespace, obj, kind)
        .await
        .map_err(|e| e.message)
}
