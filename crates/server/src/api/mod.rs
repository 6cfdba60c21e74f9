//! The REST API, on Argo Server's paths and JSON shapes so Argo's clients work against it.
//!
//! Handlers extract their inputs, call one controller or store function and map errors to
//! Argo's `{"code": <gRPC code>, "message": "..."}` with the matching HTTP status.

use std::collections::HashMap;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, Path, Query, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Extension, Json, Router};
use engine::Input;
use serde_json::{Value, json};
use spec::WorkflowResource;

use crate::auth::{Auth, Denied, Role};
use crate::controller::{ControlError, Controller, RetryRequest};
use crate::driver::now_ms;
use crate::submit::{Origin, SubmitOutcome, SubmitRequest};

mod approvals;
mod archived;
mod console;
mod crons;
mod events;
mod library;
mod operations;
mod streams;
mod templates;
mod workflows;

use archived::*;
use crons::*;
pub use events::apply_event_object;
use events::*;
use library::*;
use operations::openapi_doc;
pub use operations::{OPERATIONS, openapi};
use streams::*;
use templates::*;
use workflows::*;

/// An API error in Argo's shape.
pub struct ApiError {
    status: StatusCode,
    code: u16,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: u16, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, 3, message)
    }
    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, 5, message)
    }
    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, 13, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"code": self.code, "message": self.message})),
        )
            .into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> ApiError {
        match e {
            ControlError::Invalid(m) => ApiError::invalid(m),
            ControlError::NotFound(m) => ApiError::not_found(m),
            ControlError::AlreadyExists(m) => ApiError::new(StatusCode::CONFLICT, 6, m),
            ControlError::FailedPrecondition(m) => ApiError::new(StatusCode::BAD_REQUEST, 9, m),
            ControlError::Store(e) => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    msg.push_str(": ");
                    msg.push_str(&s.to_string());
                    src = s.source();
                }
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, 13, msg)
            }
        }
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> ApiError {
        ControlError::from(e).into()
    }
}

type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// Who is calling (the token's identity, or `anonymous` without authentication) and from
/// where; recorded in the audit log.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub source: String,
}

impl Caller {
    /// An audit row for `action` on `object` by this caller, now.
    fn audit(&self, action: &str, object: String, details: Value) -> store::AuditEntry {
        store::AuditEntry {
            at: now_ms(),
            actor: self.name.clone(),
            action: action.to_string(),
            object,
            source: self.source.clone(),
            details,
        }
    }
}

#[derive(Clone)]
struct AppState {
    controller: Controller,
    events: crate::events::Events,
    auth: Option<Arc<Auth>>,
    /// Signs and checks approval links; `None` without `--external-url`.
    approvals: Option<Arc<crate::approval::LinkSigner>>,
}

impl FromRef<AppState> for Controller {
    fn from_ref(s: &AppState) -> Controller {
        s.controller.clone()
    }
}

/// The role an API call needs, and in which namespace.
fn required(method: &Method, path: &str, query: Option<&str>) -> (Option<String>, Role) {
    let parts: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    // `/api/v1/workflows/` (an empty namespace) lists every namespace: that needs the role
    // for every namespace, like a cluster-wide object.
    let namespace = parts.get(1).map(|n| {
        if n.is_empty() {
            "*".to_string()
        } else {
            n.to_string()
        }
    });
    let role = match (method, parts.as_slice()) {
        (&Method::GET, _) => Role::Viewer,
        (&Method::POST, ["workflows", _])
        | (&Method::POST, ["workflows", _, "submit" | "lint"]) => Role::Submitter,
        (&Method::PUT, ["workflows", _, _, "resubmit" | "retry"]) => Role::Submitter,
        (&Method::POST, [_, _, "lint"])
        | (&Method::POST, ["cluster-workflow-templates", "lint"]) => Role::Submitter,
        (&Method::PUT, ["workflows", _, _, "resume" | "set" | "suspend"]) => Role::Approver,
        // A link decides like `set`: minting one delegates an approver's decision.
        (&Method::POST, ["workflows", _, _, "approval-links"]) => Role::Approver,
        // Producers of events (webhooks, Argo's event endpoint) need only to submit.
        (&Method::POST, ["webhooks", _, _, _]) | (&Method::POST, ["events", _, _]) => {
            Role::Submitter
        }
        // Read-only questions asked with a body: lint a text, dry-run a sensor.
        (&Method::POST, ["riposte", "lint"]) | (&Method::POST, ["sensors", _, _, "test"]) => {
            Role::Viewer
        }
        _ => Role::Admin,
    };
    match parts.first() {
        Some(&"workflows")
        | Some(&"workflow-templates")
        | Some(&"workflow-events")
        | Some(&"sensors")
        | Some(&"event-sources")
        | Some(&"workflow-event-bindings")
        | Some(&"webhooks")
        | Some(&"events") => (namespace, role),
        // The chain's verification says only whether rows were altered: any role will do.
        Some(&"riposte") if parts.get(1..) == Some(&["audit", "verify"][..]) => (None, role),
        // One workflow's audit trail needs a role in its namespace; the whole log, in all.
        Some(&"riposte") if parts.get(1..) == Some(&["audit"][..]) => {
            let workflow = query_param(query, "workflow").or_else(|| {
                query_param(query, "object")
                    .and_then(|o| o.strip_prefix("workflows/").map(str::to_string))
            });
            let ns = workflow
                .as_deref()
                .and_then(|w| w.split_once('/'))
                .map(|(ns, _)| ns.to_string())
                .filter(|ns| !ns.is_empty())
                .unwrap_or_else(|| "*".to_string());
            (Some(ns), role)
        }
        // Lint answers from the text alone: any role anywhere will do.
        Some(&"riposte") if parts.get(1) == Some(&"lint") => (None, role),
        // The approvals inbox of one namespace needs a role there only.
        Some(&"riposte") if parts.get(1) == Some(&"approvals") => {
            let ns = query_param(query, "namespace")
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| "*".to_string());
            (Some(ns), role)
        }
        // Cluster-wide objects need the role for every namespace (`"*"`).
        Some(&"cluster-workflow-templates") | Some(&"archived-workflows") | Some(&"riposte") => {
            (Some("*".to_string()), role)
        }
        _ => (None, role),
    }
}

/// A query parameter's value, percent-decoded as a browser encodes it (`%2F` and the like).
fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

async fn authenticate(
    State(state): State<AppState>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    mut req: Request,
    next: Next,
) -> Response {
    let source = addr.ip().to_string();
    let name = match &state.auth {
        None => "anonymous".to_string(),
        Some(auth) => {
            let (namespace, role) = required(req.method(), req.uri().path(), req.uri().query());
            let header = req
                .headers()
                .get(axum::http::header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok());
            match auth.authorize(header, namespace.as_deref(), role) {
                Ok(name) => name,
                Err(Denied::Unauthenticated(m)) => {
                    return ApiError::new(StatusCode::UNAUTHORIZED, 16, m).into_response();
                }
                Err(Denied::Forbidden(m)) => {
                    return ApiError::new(StatusCode::FORBIDDEN, 7, m).into_response();
                }
            }
        }
    };
    req.extensions_mut().insert(Caller { name, source });
    next.run(req).await
}

/// The API; with `auth`, every request needs a bearer token with a sufficient role.
pub fn router(
    controller: Controller,
    events: crate::events::Events,
    auth: Option<Auth>,
    approvals: Option<crate::approval::LinkSigner>,
) -> Router {
    let state = AppState {
        controller,
        events,
        auth: auth.map(Arc::new),
        approvals: approvals.map(Arc::new),
    };
    Router::new()
        .route("/api/v1/version", get(version))
        .route("/api/v1/openapi.json", get(openapi_doc))
        .route("/api/v1/info", get(info))
        .route("/api/v1/userinfo", get(userinfo))
        .route(
            "/api/v1/workflows/{namespace}",
            post(create_workflow).get(list_workflows),
        )
        .route("/api/v1/workflows/{namespace}/lint", post(lint_workflow))
        .route(
            "/api/v1/workflows/{namespace}/submit",
            post(submit_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}",
            get(get_workflow).delete(delete_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/resume",
            put(resume_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/set",
            put(set_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/stop",
            put(stop_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/terminate",
            put(terminate_workflow),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/log",
            get(workflow_logs),
        )
        .route("/api/v1/workflow-events/{namespace}", get(watch_workflows))
        .route("/api/v1/workflows/", get(list_every_namespace))
        .route("/api/v1/workflow-events/", get(watch_every_namespace))
        .route(
            "/api/v1/workflows/{namespace}/{name}/resubmit",
            put(resubmit_workflow),
        )
        .route(
            "/api/v1/cluster-workflow-templates",
            post(create_cluster_template).get(list_cluster_templates),
        )
        .route(
            "/api/v1/cluster-workflow-templates/{name}",
            get(get_cluster_template)
                .put(update_cluster_template)
                .delete(delete_cluster_template),
        )
        .route(
            "/api/v1/cron-workflows/{namespace}",
            post(create_cron).get(list_crons),
        )
        .route(
            "/api/v1/cron-workflows/{namespace}/{name}",
            get(get_cron).put(update_cron).delete(delete_cron),
        )
        .route(
            "/api/v1/cron-workflows/{namespace}/{name}/suspend",
            put(suspend_cron),
        )
        .route(
            "/api/v1/cron-workflows/{namespace}/{name}/resume",
            put(resume_cron),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/suspend",
            put(suspend_workflow),
        )
        .route(
            "/api/v1/workflow-templates/{namespace}/lint",
            post(lint_template),
        )
        .route(
            "/api/v1/cluster-workflow-templates/lint",
            post(lint_cluster_template),
        )
        .route("/api/v1/cron-workflows/{namespace}/lint", post(lint_cron))
        .route(
            "/api/v1/workflows/{namespace}/{name}/retry",
            put(retry_workflow),
        )
        .route(
            "/api/v1/archived-workflows/{uid}/retry",
            put(retry_archived),
        )
        .route(
            "/api/v1/archived-workflows/{uid}/resubmit",
            put(resubmit_archived),
        )
        .route("/api/v1/archived-workflows", get(list_archived))
        .route(
            "/api/v1/archived-workflows/{uid}",
            get(get_archived).delete(delete_archived),
        )
        .route(
            "/api/v1/workflow-templates/{namespace}",
            post(create_template).get(list_templates),
        )
        .route(
            "/api/v1/workflow-templates/{namespace}/{name}",
            get(get_template)
                .put(update_template)
                .delete(delete_template),
        )
        .route(
            "/api/v1/sensors/{namespace}",
            post(create_sensor).get(list_sensors),
        )
        .route(
            "/api/v1/sensors/{namespace}/{name}",
            get(get_sensor).put(update_sensor).delete(delete_sensor),
        )
        .route(
            "/api/v1/event-sources/{namespace}",
            post(create_event_source).get(list_event_sources),
        )
        .route(
            "/api/v1/event-sources/{namespace}/{name}",
            get(get_event_source)
                .put(update_event_source)
                .delete(delete_event_source),
        )
        .route(
            "/api/v1/workflow-event-bindings/{namespace}",
            post(create_binding).get(list_bindings),
        )
        .route(
            "/api/v1/workflow-event-bindings/{namespace}/{name}",
            get(get_binding).put(update_binding).delete(delete_binding),
        )
        .route(
            "/api/v1/events/{namespace}/{discriminator}",
            post(receive_event),
        )
        .route(
            "/api/v1/webhooks/{namespace}/{eventSource}/{eventName}",
            axum::routing::any(receive_webhook),
        )
        .route(
            "/api/v1/workflows/{namespace}/{name}/approval-links",
            post(approvals::mint_for_user),
        )
        .route("/api/v1/riposte/library", get(list_library))
        .route("/api/v1/riposte/library/{namespace}", post(install_library))
        .route("/api/v1/riposte/events", get(list_events))
        .route("/api/v1/riposte/events/{seq}", get(get_event))
        .route(
            "/api/v1/riposte/events/{seq}/redeliver",
            post(redeliver_event),
        )
        .route("/api/v1/riposte/audit", get(console::list_audit))
        .route("/api/v1/riposte/audit/verify", get(console::verify_audit))
        .route("/api/v1/riposte/approvals", get(console::list_approvals))
        .route("/api/v1/riposte/lint", post(console::lint_text))
        .route(
            "/api/v1/sensors/{namespace}/{name}/test",
            post(console::test_sensor),
        )
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        // The console's page and assets: public (they hold no data; the API they call
        // authenticates), and anything else is Argo's not-found error.
        .fallback(crate::console::fallback)
        // Kubelet probes carry no token: these two are outside authentication and say
        // nothing beyond "alive" and "the database answers".
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        // Prometheus scrapes without a token, like the probes; it says counts, not contents.
        .route("/metrics", get(metrics_text))
        // Step pods authenticate with their node's token, checked by the handler.
        .route(
            "/api/v1/riposte/callbacks/{uid}/{nodeId}",
            post(node_callback),
        )
        .route(
            "/api/v1/riposte/callbacks/{uid}/{nodeId}/approval-links",
            post(approvals::mint_for_step),
        )
        // An approval link is its own authority (signed, for one node, until a deadline).
        .route(
            "/api/v1/riposte/approvals/{token}",
            get(approvals::show).post(approvals::decide),
        )
        .layer(middleware::from_fn(count_request))
        .layer(middleware::from_fn(crate::console::security_headers))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The largest request body accepted (a workflow with its templates, a callback report with a
/// 256 kB result); larger ones are answered 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// Counts every request by route template (not by path, so names do not explode the label
/// set), method and status code.
async fn count_request(req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let resp = next.run(req).await;
    crate::metrics::api_request(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

async fn metrics_text() -> Response {
    match crate::metrics::install() {
        Ok(h) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            h.render(),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("metrics are not available: {e}"),
        )
            .into_response(),
    }
}

/// Ready when the database answers and, with the Kubernetes executor, the API server too: a
/// replica that cannot reach either cannot run anything, so it should get no traffic.
async fn readyz(State(c): State<Controller>) -> Response {
    if let Err(e) = c.store().ping().await {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("database not reachable: {}", store::chain(&e)),
        )
            .into_response();
    }
    if let Some(cluster) = c.cluster()
        && let Err(e) = cluster.ping().await
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("Kubernetes API not reachable: {e}"),
        )
            .into_response();
    }
    "ok".into_response()
}

/// The cluster, once the bearer of `headers` is proven to be step `node_id` of workflow `uid`
/// (its HMAC node token, which only that step's pod holds).
fn step_caller<'c>(
    c: &'c Controller,
    uid: &str,
    node_id: &str,
    headers: &axum::http::HeaderMap,
) -> ApiResult<&'c riposte_kube::Cluster> {
    let cluster = c.cluster().ok_or_else(|| {
        ApiError::not_found(
            "step callbacks are served only when steps run with --executor kubernetes",
        )
    })?;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !cluster.token_is_valid(uid, node_id, token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            16,
            "the token is not this node's callback token",
        ));
    }
    Ok(cluster)
}

/// A step's report, delivered to the node waiting for it.
async fn node_callback(
    State(c): State<Controller>,
    Path((uid, node_id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let cluster = step_caller(&c, &uid, &node_id, &headers)?;
    let report = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| riposte_kube::Report::from_json(&v))
        .ok_or_else(|| {
            ApiError::invalid("the body is not a `riposte exec` report (exitCode, result, outputs)")
        })?;
    let delivered = cluster.deliver(&uid, &node_id, report);
    Ok(Json(json!({"delivered": delivered})))
}

async fn version() -> Json<Value> {
    Json(
        json!({"version": format!("v{}", env!("CARGO_PKG_VERSION")), "platform": "riposte", "compiler": "rustc"}),
    )
}

async fn info() -> Json<Value> {
    Json(json!({"managedNamespace": "", "links": [], "modals": {}, "navColor": ""}))
}

/// Argo's all-namespaces form of the list (`argo list -A`, the console's default).
async fn list_every_namespace(
    c: State<Controller>,
    q: Query<HashMap<String, String>>,
) -> ApiResult {
    list_workflows(c, Path(String::new()), q).await
}

async fn watch_every_namespace(
    c: State<Controller>,
    q: Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Response {
    watch_workflows(c, Path(String::new()), q, headers).await
}

/// Argo's `subject`, plus the caller's roles by namespace (`"*"`: every namespace), so the
/// console can hide what the caller may not do (the API still checks every call).
async fn userinfo(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Json<Value> {
    let roles: serde_json::Map<String, Value> = match &state.auth {
        None => [("*".to_string(), json!(Role::Admin.as_str()))]
            .into_iter()
            .collect(),
        Some(auth) => auth
            .roles_of(&caller.name)
            .into_iter()
            .map(|(ns, r)| (ns, json!(r.as_str())))
            .collect(),
    };
    Json(json!({"subject": caller.name, "roles": roles, "authentication": state.auth.is_some()}))
}

fn parse_resource(v: &Value, what: &str) -> ApiResult<WorkflowResource> {
    serde_json::from_value(v.clone()).map_err(|e| ApiError::invalid(format!("{what}: {e}")))
}

/// Lint errors as one InvalidArgument error; warnings are allowed.
/// The object under `key` of a request body (`template`, `cronWorkflow`), with `kind` and
/// Argo's `apiVersion` filled in when absent, linted against the namespace's templates.
async fn linted_object(
    c: &Controller,
    namespace: &str,
    body: &Value,
    key: &str,
    kind: &str,
) -> ApiResult<Value> {
    let mut obj = body
        .get(key)
        .cloned()
        .ok_or_else(|| ApiError::invalid(format!("request body needs a `{key}`")))?;
    if obj["kind"].is_null() {
        obj["kind"] = json!(kind);
    }
    if obj["apiVersion"].is_null() {
        obj["apiVersion"] = json!("argoproj.io/v1alpha1");
    }
    lint_resource(c, namespace, &obj).await?;
    Ok(obj)
}

/// An RFC 3339 query parameter as unix milliseconds (empty or absent: no bound).
fn time_param(key: &str, value: Option<&str>) -> ApiResult<Option<i64>> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(None),
        // Seconds from the parser; rows keep milliseconds.
        Some(v) => expr::time::parse_rfc3339(v)
            .map(|s| Some(s * 1000))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "{key} {v:?} is not an RFC 3339 time such as 2026-12-04T10:00:00Z"
                ))
            }),
    }
}

/// An update names its object twice, in the path and in the body: they must agree.
fn same_name(in_path: Option<&str>, in_body: &str) -> ApiResult<()> {
    match in_path {
        Some(p) if p != in_body => Err(ApiError::invalid(format!(
            "name in path ({p}) and body ({in_body}) differ"
        ))),
        _ => Ok(()),
    }
}

async fn lint_resource(c: &Controller, namespace: &str, v: &Value) -> ApiResult<()> {
    crate::submit::lint_value(v, &c.library(namespace).await?)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in `api/openapi.json` is the generated document: regenerate it with
    /// `cargo run -p riposte -- openapi > api/openapi.json` when the API changes.
    #[test]
    fn checked_in_openapi_is_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../api/openapi.json");
        let text = std::fs::read_to_string(&path).expect("api/openapi.json is checked in");
        let checked_in: Value = serde_json::from_str(&text).expect("valid JSON");
        assert!(
            checked_in == openapi(),
            "api/openapi.json is stale: run `cargo run -p riposte -- openapi > api/openapi.json`"
        );
    }

    #[test]
    fn roles_follow_the_namespace_a_console_call_is_about() {
        let get = Method::GET;
        let ns = |path: &str, q: Option<&str>| required(&get, path, q).0;
        assert_eq!(ns("/api/v1/workflows/", None), Some("*".into()));
        assert_eq!(ns("/api/v1/workflows/prod", None), Some("prod".into()));
        assert_eq!(
            ns(
                "/api/v1/riposte/audit",
                Some("workflow=prod%2Fwf-1&limit=2")
            ),
            Some("prod".into())
        );
        assert_eq!(
            ns("/api/v1/riposte/audit", Some("limit=2")),
            Some("*".into())
        );
        assert_eq!(ns("/api/v1/riposte/audit/verify", None), None);
        assert_eq!(
            ns("/api/v1/riposte/approvals", Some("namespace=prod")),
            Some("prod".into())
        );
        assert_eq!(ns("/api/v1/riposte/approvals", None), Some("*".into()));
        assert_eq!(ns("/api/v1/riposte/events", None), Some("*".into()));
        assert_eq!(
            required(&Method::POST, "/api/v1/riposte/lint", None),
            (None, Role::Viewer)
        );
        assert_eq!(
            required(&Method::POST, "/api/v1/sensors/prod/s/test", None),
            (Some("prod".into()), Role::Viewer)
        );
        // Malformed escapes are kept as written, never a panic.
        assert_eq!(
            query_param(Some("workflow=a%2"), "workflow"),
            Some("a%2".into())
        );
        assert_eq!(
            query_param(Some("workflow=%zz%C3%A9"), "workflow"),
            Some("%zzé".into())
        );
    }

    /// Every documented operation is routed, and nothing routed is undocumented.
    #[test]
    fn router_serves_exactly_the_documented_operations() {
        let source = include_str!("mod.rs");
        let routed: std::collections::BTreeSet<&str> = source
            .split(".route(")
            .skip(1)
            .filter_map(|r| {
                r.trim_start()
                    .strip_prefix('"')
                    .and_then(|r| r.split('"').next())
            })
            .filter(|p| p.starts_with("/api/"))
            .collect();
        let documented: std::collections::BTreeSet<&str> = OPERATIONS.iter().map(|o| o.1).collect();
        assert_eq!(routed, documented);
    }
}
