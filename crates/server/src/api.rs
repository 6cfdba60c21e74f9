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
    auth: Option<Arc<Auth>>,
}

impl FromRef<AppState> for Controller {
    fn from_ref(s: &AppState) -> Controller {
        s.controller.clone()
    }
}

/// The role an API call needs, and in which namespace.
fn required(method: &Method, path: &str) -> (Option<String>, Role) {
    let parts: Vec<&str> = path.trim_start_matches("/api/v1/").split('/').collect();
    let namespace = parts
        .get(1)
        .filter(|n| !n.is_empty())
        .map(|n| n.to_string());
    let role = match (method, parts.as_slice()) {
        (&Method::GET, _) => Role::Viewer,
        (&Method::POST, ["workflows", _])
        | (&Method::POST, ["workflows", _, "submit" | "lint"]) => Role::Submitter,
        (&Method::PUT, ["workflows", _, _, "resubmit" | "retry"]) => Role::Submitter,
        (&Method::POST, [_, _, "lint"])
        | (&Method::POST, ["cluster-workflow-templates", "lint"]) => Role::Submitter,
        (&Method::PUT, ["workflows", _, _, "resume" | "set" | "suspend"]) => Role::Approver,
        _ => Role::Admin,
    };
    match parts.first() {
        Some(&"workflows") | Some(&"workflow-templates") | Some(&"workflow-events") => {
            (namespace, role)
        }
        // Cluster-wide objects need the role for every namespace (`"*"`).
        Some(&"cluster-workflow-templates") | Some(&"archived-workflows") => {
            (Some("*".to_string()), role)
        }
        _ => (None, role),
    }
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
            let (namespace, role) = required(req.method(), req.uri().path());
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

/// Every operation: method, path, operation id, summary. The OpenAPI document is built from
/// this table and a test checks that the router serves exactly these.
pub const OPERATIONS: &[(&str, &str, &str, &str)] = &[
    (
        "get",
        "/api/v1/version",
        "InfoService_GetVersion",
        "Server version",
    ),
    (
        "get",
        "/api/v1/info",
        "InfoService_GetInfo",
        "Server information",
    ),
    (
        "get",
        "/api/v1/userinfo",
        "InfoService_GetUserInfo",
        "The caller's identity",
    ),
    ("get", "/api/v1/openapi.json", "OpenAPI", "This document"),
    (
        "post",
        "/api/v1/workflows/{namespace}",
        "WorkflowService_CreateWorkflow",
        "Create and start a workflow ({workflow})",
    ),
    (
        "get",
        "/api/v1/workflows/{namespace}",
        "WorkflowService_ListWorkflows",
        "List workflows (listOptions.labelSelector, listOptions.limit, listOptions.continue, phase)",
    ),
    (
        "post",
        "/api/v1/workflows/{namespace}/lint",
        "WorkflowService_LintWorkflow",
        "Lint a workflow ({workflow})",
    ),
    (
        "post",
        "/api/v1/workflows/{namespace}/submit",
        "WorkflowService_SubmitWorkflow",
        "Submit a workflow from a (Cluster)WorkflowTemplate ({resourceKind, resourceName, submitOptions})",
    ),
    (
        "get",
        "/api/v1/workflows/{namespace}/{name}",
        "WorkflowService_GetWorkflow",
        "A workflow with status.nodes",
    ),
    (
        "delete",
        "/api/v1/workflows/{namespace}/{name}",
        "WorkflowService_DeleteWorkflow",
        "Delete a finished workflow",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/resume",
        "WorkflowService_ResumeWorkflow",
        "Resume suspended nodes ({nodeFieldSelector})",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/set",
        "WorkflowService_SetWorkflow",
        "Supply a suspended node's outputs and resume it ({nodeFieldSelector, outputParameters})",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/stop",
        "WorkflowService_StopWorkflow",
        "Stop: fail running steps, run exit handlers",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/terminate",
        "WorkflowService_TerminateWorkflow",
        "Terminate: fail running steps, no exit handlers",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/retry",
        "WorkflowService_RetryWorkflow",
        "Run failed nodes again ({restartSuccessful, nodeFieldSelector, parameters})",
    ),
    (
        "put",
        "/api/v1/archived-workflows/{uid}/retry",
        "ArchivedWorkflowService_RetryArchivedWorkflow",
        "Retry a finished workflow by uid",
    ),
    (
        "put",
        "/api/v1/archived-workflows/{uid}/resubmit",
        "ArchivedWorkflowService_ResubmitArchivedWorkflow",
        "Resubmit a finished workflow by uid",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/suspend",
        "WorkflowService_SuspendWorkflow",
        "Suspend the workflow: nothing new starts until resume",
    ),
    (
        "post",
        "/api/v1/workflow-templates/{namespace}/lint",
        "WorkflowTemplateService_LintWorkflowTemplate",
        "Lint a WorkflowTemplate ({template})",
    ),
    (
        "post",
        "/api/v1/cluster-workflow-templates/lint",
        "ClusterWorkflowTemplateService_LintClusterWorkflowTemplate",
        "Lint a ClusterWorkflowTemplate ({template})",
    ),
    (
        "post",
        "/api/v1/cron-workflows/{namespace}/lint",
        "CronWorkflowService_LintCronWorkflow",
        "Lint a CronWorkflow ({cronWorkflow})",
    ),
    (
        "put",
        "/api/v1/workflows/{namespace}/{name}/resubmit",
        "WorkflowService_ResubmitWorkflow",
        "A new workflow from the same spec and parameters",
    ),
    (
        "get",
        "/api/v1/workflows/{namespace}/{name}/log",
        "WorkflowService_WorkflowLogs",
        "Node logs as NDJSON (podName; logOptions.follow=true streams until the workflow ends)",
    ),
    (
        "get",
        "/api/v1/workflow-events/{namespace}",
        "WorkflowService_WatchWorkflows",
        "NDJSON stream of workflow changes (listOptions.fieldSelector=metadata.name=NAME)",
    ),
    (
        "post",
        "/api/v1/workflow-templates/{namespace}",
        "WorkflowTemplateService_CreateWorkflowTemplate",
        "Create a WorkflowTemplate ({template})",
    ),
    (
        "get",
        "/api/v1/workflow-templates/{namespace}",
        "WorkflowTemplateService_ListWorkflowTemplates",
        "List WorkflowTemplates",
    ),
    (
        "get",
        "/api/v1/workflow-templates/{namespace}/{name}",
        "WorkflowTemplateService_GetWorkflowTemplate",
        "A WorkflowTemplate",
    ),
    (
        "put",
        "/api/v1/workflow-templates/{namespace}/{name}",
        "WorkflowTemplateService_UpdateWorkflowTemplate",
        "Replace a WorkflowTemplate ({template})",
    ),
    (
        "delete",
        "/api/v1/workflow-templates/{namespace}/{name}",
        "WorkflowTemplateService_DeleteWorkflowTemplate",
        "Delete a WorkflowTemplate",
    ),
    (
        "post",
        "/api/v1/cluster-workflow-templates",
        "ClusterWorkflowTemplateService_CreateClusterWorkflowTemplate",
        "Create a ClusterWorkflowTemplate ({template})",
    ),
    (
        "get",
        "/api/v1/cluster-workflow-templates",
        "ClusterWorkflowTemplateService_ListClusterWorkflowTemplates",
        "List ClusterWorkflowTemplates",
    ),
    (
        "get",
        "/api/v1/cluster-workflow-templates/{name}",
        "ClusterWorkflowTemplateService_GetClusterWorkflowTemplate",
        "A ClusterWorkflowTemplate",
    ),
    (
        "put",
        "/api/v1/cluster-workflow-templates/{name}",
        "ClusterWorkflowTemplateService_UpdateClusterWorkflowTemplate",
        "Replace a ClusterWorkflowTemplate ({template})",
    ),
    (
        "delete",
        "/api/v1/cluster-workflow-templates/{name}",
        "ClusterWorkflowTemplateService_DeleteClusterWorkflowTemplate",
        "Delete a ClusterWorkflowTemplate",
    ),
    (
        "post",
        "/api/v1/cron-workflows/{namespace}",
        "CronWorkflowService_CreateCronWorkflow",
        "Create a CronWorkflow ({cronWorkflow})",
    ),
    (
        "get",
        "/api/v1/cron-workflows/{namespace}",
        "CronWorkflowService_ListCronWorkflows",
        "List CronWorkflows",
    ),
    (
        "get",
        "/api/v1/cron-workflows/{namespace}/{name}",
        "CronWorkflowService_GetCronWorkflow",
        "A CronWorkflow with its last scheduled time",
    ),
    (
        "put",
        "/api/v1/cron-workflows/{namespace}/{name}",
        "CronWorkflowService_UpdateCronWorkflow",
        "Replace a CronWorkflow ({cronWorkflow})",
    ),
    (
        "delete",
        "/api/v1/cron-workflows/{namespace}/{name}",
        "CronWorkflowService_DeleteCronWorkflow",
        "Delete a CronWorkflow",
    ),
    (
        "put",
        "/api/v1/cron-workflows/{namespace}/{name}/suspend",
        "CronWorkflowService_SuspendCronWorkflow",
        "Stop scheduling",
    ),
    (
        "put",
        "/api/v1/cron-workflows/{namespace}/{name}/resume",
        "CronWorkflowService_ResumeCronWorkflow",
        "Resume scheduling",
    ),
    (
        "get",
        "/api/v1/archived-workflows",
        "ArchivedWorkflowService_ListArchivedWorkflows",
        "Finished workflows (namespace, listOptions.limit)",
    ),
    (
        "get",
        "/api/v1/archived-workflows/{uid}",
        "ArchivedWorkflowService_GetArchivedWorkflow",
        "A finished workflow by uid",
    ),
    (
        "delete",
        "/api/v1/archived-workflows/{uid}",
        "ArchivedWorkflowService_DeleteArchivedWorkflow",
        "Delete a finished workflow by uid",
    ),
    (
        "post",
        "/api/v1/riposte/callbacks/{uid}/{nodeId}",
        "Riposte_NodeCallback",
        "A step's wrapper (`riposte exec`) reports its result; bearer: that node's token, not a user token",
    ),
];

/// The OpenAPI 3 document of [`OPERATIONS`].
pub fn openapi() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, id, summary) in OPERATIONS {
        let params: Vec<Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut op = json!({
            "operationId": id,
            "summary": summary,
            "parameters": params,
            "responses": {
                "200": {"description": "OK", "content": {"application/json": {"schema": {"type": "object"}}}},
                "default": {"description": "An error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
            },
        });
        if matches!(*method, "post" | "put") {
            op["requestBody"] =
                json!({"content": {"application/json": {"schema": {"type": "object"}}}});
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Riposte API (Argo Server-compatible)", "version": env!("CARGO_PKG_VERSION")},
        "paths": Value::Object(paths),
        "components": {
            "schemas": {"Error": {"type": "object", "properties": {"code": {"type": "integer", "description": "gRPC status code"}, "message": {"type": "string"}}}},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}
        },
        "security": [{"bearer": []}],
    })
}

async fn openapi_doc() -> Json<Value> {
    Json(openapi())
}

/// The API; with `auth`, every request needs a bearer token with a sufficient role.
pub fn router(controller: Controller, auth: Option<Auth>) -> Router {
    let state = AppState {
        controller,
        auth: auth.map(Arc::new),
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
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
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
        .layer(middleware::from_fn(count_request))
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

/// A step's report, delivered to the node waiting for it.
async fn node_callback(
    State(c): State<Controller>,
    Path((uid, node_id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let cluster = c.cluster().ok_or_else(|| {
        ApiError::not_found("callbacks are served only when steps run with --executor kubernetes")
    })?;
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !cluster.token_is_valid(&uid, &node_id, token) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            16,
            "the token is not this node's callback token",
        ));
    }
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

async fn userinfo(Extension(caller): Extension<Caller>) -> Json<Value> {
    Json(json!({"subject": caller.name}))
}

fn parse_resource(v: &Value, what: &str) -> ApiResult<WorkflowResource> {
    serde_json::from_value(v.clone()).map_err(|e| ApiError::invalid(format!("{what}: {e}")))
}

async fn create_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    let wf = body
        .get("workflow")
        .ok_or_else(|| ApiError::invalid("request body needs a `workflow`"))?;
    let resource = parse_resource(wf, "workflow")?;
    let req = SubmitRequest::new(
        &namespace,
        Origin::Inline(Box::new(resource)),
        &caller.name,
        &caller.source,
    );
    submitted(&c, &namespace, c.submit(req).await?).await
}

/// The answer to a submission: the workflow (the existing one for a repeated idempotency key).
async fn submitted(c: &Controller, namespace: &str, outcome: SubmitOutcome) -> ApiResult {
    match outcome.name() {
        Some(name) => Ok(Json(c.workflow_json(namespace, name, true).await?)),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            6,
            "this scheduled time was already submitted",
        )),
    }
}

/// Lint errors as one InvalidArgument error; warnings are allowed.
async fn lint_resource(c: &Controller, namespace: &str, v: &Value) -> ApiResult<()> {
    let text = serde_json::to_string(v).map_err(|e| ApiError::invalid(e.to_string()))?;
    let (loaded, mut diags) = spec::load("request", &text);
    let mut library = c.library(namespace).await?;
    for l in &loaded {
        library.add(l);
    }
    diags.extend(spec::lint(&loaded, &library));
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.severity == spec::Severity::Error)
        .map(|d| d.message.clone())
        .collect();
    if !errors.is_empty() {
        return Err(ApiError::invalid(errors.join("; ")));
    }
    if loaded.is_empty() {
        return Err(ApiError::invalid("not an argoproj.io/v1alpha1 Workflow"));
    }
    Ok(())
}

async fn lint_workflow(
    State(c): State<Controller>,
    Path(namespace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    let wf = body
        .get("workflow")
        .ok_or_else(|| ApiError::invalid("request body needs a `workflow`"))?;
    lint_resource(&c, &namespace, wf).await?;
    Ok(Json(wf.clone()))
}

/// `POST /submit`: a Workflow from a WorkflowTemplate, ClusterWorkflowTemplate or
/// CronWorkflow, with Argo's `submitOptions` (name, generateName, entryPoint, parameters,
/// labels and annotations as `k=v,k2=v2`; the annotation `riposte.dev/idempotency-key` makes
/// a repeated submission return the first workflow).
async fn submit_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    let kind = body["resourceKind"].as_str().unwrap_or("");
    let resource_name = body["resourceName"]
        .as_str()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid("resourceName is required"))?;
    let origin = match kind {
        "CronWorkflow" | "cronworkflow" | "cronwf" => {
            let rec = c.store().get_cron(&namespace, resource_name).await?;
            let cron: spec::CronWorkflow = serde_json::from_value(rec.body)
                .map_err(|e| ApiError::invalid(format!("stored cron workflow: {e}")))?;
            Origin::Cron {
                cron: Box::new(cron),
                scheduled_at: None,
            }
        }
        "WorkflowTemplate" | "workflowtemplate" => Origin::Template {
            name: resource_name.to_string(),
            cluster: false,
        },
        "ClusterWorkflowTemplate" | "clusterworkflowtemplate" => Origin::Template {
            name: resource_name.to_string(),
            cluster: true,
        },
        other => {
            return Err(ApiError::invalid(format!(
                "resourceKind {other:?} cannot be submitted; use WorkflowTemplate, ClusterWorkflowTemplate or CronWorkflow"
            )));
        }
    };
    let opts = &body["submitOptions"];
    let mut req = SubmitRequest::new(&namespace, origin, &caller.name, &caller.source);
    req.parameters = submit_params(opts)?;
    req.labels = key_values(opts, "labels")?;
    req.annotations = key_values(opts, "annotations")?;
    req.name = opts["name"].as_str().map(str::to_string);
    req.generate_name = opts["generateName"].as_str().map(str::to_string);
    req.entrypoint = opts["entryPoint"].as_str().map(str::to_string);
    submitted(&c, &namespace, c.submit(req).await?).await
}

/// Argo's `submitOptions.labels`/`annotations`: `"k=v,k2=v2"` (an object is accepted too).
fn key_values(opts: &Value, field: &str) -> ApiResult<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    match &opts[field] {
        Value::Null => {}
        Value::String(s) => {
            for kv in s.split(',').map(str::trim).filter(|kv| !kv.is_empty()) {
                let (k, v) = kv.split_once('=').ok_or_else(|| {
                    ApiError::invalid(format!(
                        "submitOptions.{field} entry {kv:?} must look like key=value"
                    ))
                })?;
                out.insert(k.trim().to_string(), v.trim().to_string());
            }
        }
        Value::Object(m) => {
            for (k, v) in m {
                out.insert(
                    k.clone(),
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()),
                );
            }
        }
        other => {
            return Err(ApiError::invalid(format!(
                "submitOptions.{field} must be a string like \"k=v,k2=v2\", not {other}"
            )));
        }
    }
    Ok(out)
}

async fn list_workflows(
    State(c): State<Controller>,
    Path(namespace): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let limit: i64 = q
        .get("listOptions.limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(500)
        .min(5000);
    let labels: Vec<(String, String)> = q
        .get("listOptions.labelSelector")
        .map(|s| {
            s.split(',')
                .filter_map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                })
                .collect()
        })
        .unwrap_or_default();
    // `continue` is `<created_at>:<uid>` of the last item of the previous page.
    let after = match q.get("listOptions.continue").filter(|c| !c.is_empty()) {
        None => None,
        Some(token) => {
            let (t, u) = token.split_once(':').ok_or_else(|| {
                ApiError::invalid(format!(
                    "listOptions.continue {token:?} is not a token from a previous page"
                ))
            })?;
            Some((
                t.parse::<i64>().map_err(|_| {
                    ApiError::invalid("listOptions.continue is not a token from a previous page")
                })?,
                u.to_string(),
            ))
        }
    };
    // Argo labels every workflow with its phase and `argo list --status` filters on that
    // label; here the phase is a column, so the label selector maps onto it.
    let (phase_labels, labels): (Vec<_>, Vec<_>) = labels
        .into_iter()
        .partition(|(k, _)| k == "workflows.argoproj.io/phase");
    let phase = q
        .get("phase")
        .cloned()
        .or_else(|| phase_labels.into_iter().next().map(|(_, v)| v));
    let lq = store::ListQuery {
        namespace: (!namespace.is_empty()).then_some(namespace),
        phase,
        labels,
        after,
        limit,
    };
    let records = c.store().list_workflows_page(&lq).await?;
    let continue_token = if records.len() as i64 == limit {
        records
            .last()
            .map(|r| format!("{}:{}", r.created_at, r.uid))
            .unwrap_or_default()
    } else {
        String::new()
    };
    // `fields=items.metadata.name,items.status.phase`: only these paths of each item.
    let fields: Vec<Vec<String>> = q
        .get("fields")
        .map(|f| {
            f.split(',')
                .filter_map(|p| p.trim().strip_prefix("items."))
                .map(|p| p.split('.').map(str::to_string).collect())
                .collect()
        })
        .unwrap_or_default();
    let items: Vec<Value> = records
        .iter()
        .map(|r| crate::controller::workflow_json(r, None))
        .map(|w| {
            if fields.is_empty() {
                w
            } else {
                select_fields(&w, &fields)
            }
        })
        .collect();
    Ok(Json(
        json!({"metadata": {"resourceVersion": now_ms().to_string(), "continue": continue_token}, "items": items}),
    ))
}

async fn get_workflow(
    State(c): State<Controller>,
    Path((namespace, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let body = c.workflow_json_text(&namespace, &name).await?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

async fn delete_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    let rec = c.store().get_workflow(&namespace, &name).await?;
    // Unfinished means driven by some replica, not necessarily this one.
    if rec.finished_at.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            9,
            format!("workflow {namespace}/{name} is running; stop or terminate it first"),
        ));
    }
    // The cluster first: if that fails the workflow stays, and deleting again retries.
    let mut details = json!({});
    if let Some(cluster) = c.cluster() {
        let n = cluster
            .delete_workflow_objects(&rec.uid)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    14,
                    format!("deleting the workflow's Kubernetes objects failed, so the workflow is kept; try again: {e}"),
                )
            })?;
        details = json!({"kubernetesObjectsDeleted": n});
    }
    let audit = caller.audit(
        "workflow.delete",
        format!("workflows/{namespace}/{name}"),
        details,
    );
    c.store().delete_workflow(&namespace, &name, &audit).await?;
    Ok(Json(json!({})))
}

/// Argo's `nodeFieldSelector`: `displayName=approve`, `name=wf[0].approve` or `id=...`.
fn node_selector(body: &Value) -> Option<String> {
    let s = body["nodeFieldSelector"].as_str()?;
    s.split_once('=')
        .map(|(_, v)| v.to_string())
        .or_else(|| Some(s.to_string()))
        .filter(|v| !v.is_empty())
}

async fn resume_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> ApiResult {
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let input = Input::Resume {
        now: now_ms(),
        node: node_selector(&body),
        parameters: Default::default(),
    };
    send_and_show(&c, &caller, &namespace, &name, input, "workflow.resume").await
}

/// `set`: supply a suspended node's output parameters (an approval) and resume it.
async fn set_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult {
    let params: std::collections::BTreeMap<String, String> = match &body["outputParameters"] {
        Value::String(s) if !s.is_empty() => {
            let v: Value = serde_json::from_str(s).map_err(|e| {
                ApiError::invalid(format!("outputParameters must be a JSON object: {e}"))
            })?;
            v.as_object()
                .ok_or_else(|| ApiError::invalid("outputParameters must be a JSON object"))?
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect()
        }
        _ => Default::default(),
    };
    let input = Input::Resume {
        now: now_ms(),
        node: node_selector(&body),
        parameters: params,
    };
    send_and_show(&c, &caller, &namespace, &name, input, "workflow.approve").await
}

async fn stop_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    shut_down(&c, &caller, &namespace, &name, false).await
}

async fn terminate_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    shut_down(&c, &caller, &namespace, &name, true).await
}

/// `stop` (exit handlers still run) or `terminate` (they do not), audited as such.
async fn shut_down(
    c: &Controller,
    caller: &Caller,
    namespace: &str,
    name: &str,
    terminate: bool,
) -> ApiResult {
    let input = Input::Stop {
        now: now_ms(),
        terminate,
        message: None,
    };
    let action = if terminate {
        "workflow.terminate"
    } else {
        "workflow.stop"
    };
    send_and_show(c, caller, namespace, name, input, action).await
}

/// Hands an outside input (suspend, resume, approval, stop) to the running workflow, audited
/// as `action`, and answers with the workflow as it is then.
async fn send_and_show(
    c: &Controller,
    caller: &Caller,
    namespace: &str,
    name: &str,
    input: Input,
    action: &str,
) -> ApiResult {
    c.send(namespace, name, input, &caller.name, &caller.source, action)
        .await?;
    Ok(Json(c.workflow_json(namespace, name, true).await?))
}

fn template_json(t: &store::TemplateRecord) -> Value {
    let mut body = t.body.clone();
    body["metadata"]["namespace"] = json!(t.namespace);
    body["metadata"]["creationTimestamp"] = json!(expr::time::rfc3339(t.created_at));
    body
}

/// Creates or replaces a WorkflowTemplate (`cluster = false`, in `namespace`) or a
/// ClusterWorkflowTemplate (`cluster = true`, `namespace` is "").
async fn put_template(
    c: &Controller,
    caller: &Caller,
    namespace: &str,
    body: &Value,
    create: bool,
    name_in_path: Option<&str>,
    cluster: bool,
) -> ApiResult {
    let t = body
        .get("template")
        .ok_or_else(|| ApiError::invalid("request body needs a `template`"))?;
    let mut t = t.clone();
    if t["kind"].is_null() {
        t["kind"] = json!(if cluster {
            "ClusterWorkflowTemplate"
        } else {
            "WorkflowTemplate"
        });
    }
    if t["apiVersion"].is_null() {
        t["apiVersion"] = json!("argoproj.io/v1alpha1");
    }
    lint_resource(c, namespace, &t).await?;
    let resource = parse_resource(&t, "template")?;
    let name = resource
        .metadata
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("template metadata.name is required"))?;
    if let Some(p) = name_in_path
        && p != name
    {
        return Err(ApiError::invalid(format!(
            "name in path ({p}) and body ({name}) differ"
        )));
    }
    let now = now_ms();
    let rec = store::TemplateRecord {
        cluster,
        namespace: namespace.to_string(),
        name: name.clone(),
        body: t,
        created_at: now,
        updated_at: now,
    };
    let audit = caller.audit(
        if create {
            "template.create"
        } else {
            "template.update"
        },
        template_object(cluster, namespace, &name),
        json!({}),
    );
    c.store().put_template(&rec, create, &audit).await?;
    Ok(Json(template_json(
        &c.store().get_template(cluster, namespace, &name).await?,
    )))
}

async fn create_template(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_template(&c, &caller, &namespace, &body, true, None, false).await
}

async fn update_template(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_template(&c, &caller, &namespace, &body, false, Some(&name), false).await
}

async fn list_templates(State(c): State<Controller>, Path(namespace): Path<String>) -> ApiResult {
    let items: Vec<Value> = c
        .store()
        .list_templates(false, &namespace)
        .await?
        .iter()
        .map(template_json)
        .collect();
    Ok(Json(json!({"metadata": {}, "items": items})))
}

async fn get_template(
    State(c): State<Controller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(template_json(
        &c.store().get_template(false, &namespace, &name).await?,
    )))
}

/// What the audit log calls a template.
fn template_object(cluster: bool, namespace: &str, name: &str) -> String {
    if cluster {
        format!("cluster-workflow-templates/{name}")
    } else {
        format!("workflow-templates/{namespace}/{name}")
    }
}

async fn delete_template(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    let audit = caller.audit(
        "template.delete",
        template_object(false, &namespace, &name),
        json!({}),
    );
    if !c
        .store()
        .delete_template(false, &namespace, &name, &audit)
        .await?
    {
        return Err(ApiError::not_found(format!(
            "workflow template {namespace}/{name} not found"
        )));
    }
    Ok(Json(json!({})))
}

/// `GET .../log`: every node's log lines as NDJSON `{"result": {"content", "podName"}}`
/// (`podName` may name one node by id or pod name).
/// The log lines of each node of a workflow, and the pod name each is reported under.
struct NodeLogs {
    /// Node id → lines, in the order the nodes started.
    lines: Vec<(String, Vec<String>)>,
    pods: HashMap<String, String>,
    finished: bool,
}

async fn node_logs(c: &Controller, namespace: &str, name: &str) -> ApiResult<NodeLogs> {
    let rec = c.store().get_workflow(namespace, name).await?;
    let nodes: HashMap<String, store::NodeRow> = c
        .store()
        .nodes(&rec.uid)
        .await?
        .into_iter()
        .map(|n| (n.id.clone(), n))
        .collect();
    // Finished nodes' logs are in the database (any replica can serve them); running nodes'
    // logs are read from this replica's files (host processes, or followed pod logs).
    let mut by_node: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for (id, line) in c.store().node_logs(&rec.uid).await? {
        by_node.entry(id).or_default().push(line);
    }
    let dir = c.logs_dir(name);
    for id in nodes.keys() {
        if !by_node.contains_key(id)
            && let Ok(text) = std::fs::read_to_string(dir.join(format!("{id}.log")))
        {
            by_node.insert(id.clone(), text.lines().map(str::to_string).collect());
        }
    }
    let mut lines: Vec<(String, Vec<String>)> = by_node.into_iter().collect();
    lines.sort_by_key(|(id, _)| {
        nodes.get(id).map(|n| {
            (
                n.status["startedAt"].as_str().unwrap_or("").to_string(),
                n.name.clone(),
            )
        })
    });
    let pods = nodes
        .iter()
        .map(|(id, n)| {
            let pod = engine::pod_name(
                name,
                &n.name,
                n.status["templateName"].as_str().unwrap_or(""),
            );
            (id.clone(), pod)
        })
        .collect();
    let finished = engine::Phase::parse(&rec.phase).is_some_and(engine::Phase::completed);
    Ok(NodeLogs {
        lines,
        pods,
        finished,
    })
}

/// `GET .../log`: NDJSON `{"result": {"content", "podName"}}` per line (`podName` selects a
/// node by pod name or id). With `logOptions.follow=true` the response stays open and new
/// lines follow as they are written, until the workflow has finished.
async fn workflow_logs(
    State(c): State<Controller>,
    Path((namespace, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let only = q.get("podName").filter(|p| !p.is_empty()).cloned();
    let follow = q.get("logOptions.follow").is_some_and(|v| v == "true");
    // How many lines of each node were sent; a node's file lines are a prefix of what the
    // database keeps once it ends, so counting lines is enough to resume.
    let mut sent: HashMap<String, usize> = HashMap::new();
    let mut render = move |logs: &NodeLogs| -> String {
        let mut out = String::new();
        for (id, lines) in &logs.lines {
            let pod = logs.pods.get(id).cloned().unwrap_or_else(|| id.clone());
            if only.as_ref().is_some_and(|p| p != &pod && p != id) {
                continue;
            }
            let from = sent.entry(id.clone()).or_default();
            for line in lines.iter().skip(*from) {
                out.push_str(&json!({"result": {"content": line, "podName": pod}}).to_string());
                out.push('\n');
            }
            *from = (*from).max(lines.len());
        }
        out
    };
    let first = node_logs(&c, &namespace, &name).await?;
    let head = render(&first);
    let ndjson = [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")];
    if !follow || first.finished {
        return Ok((ndjson, head).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
    tokio::spawn(async move {
        if tx.send(Ok(head)).await.is_err() {
            return;
        }
        let mut changes = c.subscribe();
        loop {
            // A step's output grows without a recorded step: look at least every 250 ms.
            tokio::select! {
                _ = changes.recv() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            }
            let Ok(logs) = node_logs(&c, &namespace, &name).await else {
                return;
            };
            let chunk = render(&logs);
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            if logs.finished {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((ndjson, axum::body::Body::from_stream(stream)).into_response())
}

/// `GET /api/v1/workflow-events/{ns}`: an NDJSON stream of `{"result": {"type", "object"}}`,
/// one event per recorded step of a workflow in the namespace (optionally one workflow:
/// `listOptions.fieldSelector=metadata.name=NAME`).
async fn watch_workflows(
    State(c): State<Controller>,
    Path(namespace): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Response {
    // Server-sent events when asked for, NDJSON otherwise.
    let sse = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let only = q
        .get("listOptions.fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
        .map(str::to_string);
    let rx = c.subscribe();
    let stream = futures_util::stream::unfold(
        (rx, c, namespace, only, sse),
        |(mut rx, c, ns, only, sse)| async move {
            loop {
                match rx.recv().await {
                    Ok((wns, wname)) => {
                        if wns != ns || only.as_ref().is_some_and(|o| o != &wname) {
                            continue;
                        }
                        let Ok(obj) = c.workflow_json(&wns, &wname, true).await else {
                            continue;
                        };
                        let event = json!({"result": {"type": "MODIFIED", "object": obj}});
                        let line = if sse {
                            format!("data: {event}\n\n")
                        } else {
                            format!("{event}\n")
                        };
                        return Some((
                            Ok::<_, std::convert::Infallible>(line),
                            (rx, c, ns, only, sse),
                        ));
                    }
                    // A slow reader skips ahead; the next event carries the whole state anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    (
        [(axum::http::header::CONTENT_TYPE, content_type)],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn create_cluster_template(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_template(&c, &caller, "", &body, true, None, true).await
}

async fn update_cluster_template(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_template(&c, &caller, "", &body, false, Some(&name), true).await
}

async fn list_cluster_templates(State(c): State<Controller>) -> ApiResult {
    let items: Vec<Value> = c
        .store()
        .list_templates(true, "")
        .await?
        .iter()
        .map(template_json)
        .collect();
    Ok(Json(json!({"metadata": {}, "items": items})))
}

async fn get_cluster_template(State(c): State<Controller>, Path(name): Path<String>) -> ApiResult {
    Ok(Json(template_json(
        &c.store().get_template(true, "", &name).await?,
    )))
}

async fn delete_cluster_template(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
) -> ApiResult {
    let audit = caller.audit(
        "template.delete",
        template_object(true, "", &name),
        json!({}),
    );
    if !c.store().delete_template(true, "", &name, &audit).await? {
        return Err(ApiError::not_found(format!(
            "cluster workflow template {name} not found"
        )));
    }
    Ok(Json(json!({})))
}

/// `resubmit`: a new workflow from the same spec and parameters (`memoized` is ignored).
async fn resubmit_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    let rec = c.store().get_workflow(&namespace, &name).await?;
    let definition = crate::controller::Definition::from_value(&rec.definition)?;
    let req = SubmitRequest::new(
        &namespace,
        Origin::Resubmit {
            from: name,
            definition: Box::new(definition),
        },
        &caller.name,
        &caller.source,
    );
    submitted(&c, &namespace, c.submit(req).await?).await
}

/// Archived workflows: every finished workflow stays queryable (by uid).
async fn list_archived(
    State(c): State<Controller>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult {
    let limit: i64 = q
        .get("listOptions.limit")
        .and_then(|l| l.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(500)
        .min(5000);
    let namespace = q.get("namespace").filter(|n| !n.is_empty()).cloned();
    let lq = store::ListQuery {
        namespace,
        limit,
        ..Default::default()
    };
    let items: Vec<Value> = c
        .store()
        .list_workflows_page(&lq)
        .await?
        .iter()
        .filter(|r| r.finished_at.is_some())
        .map(|r| crate::controller::workflow_json(r, None))
        .collect();
    Ok(Json(json!({"metadata": {}, "items": items})))
}

async fn get_archived(State(c): State<Controller>, Path(uid): Path<String>) -> ApiResult {
    let rec = c.store().get_workflow_by_uid(&uid).await?;
    if rec.finished_at.is_none() {
        return Err(ApiError::not_found(format!(
            "archived workflow {uid} not found: it has not finished"
        )));
    }
    let nodes = c.store().nodes(&uid).await?;
    Ok(Json(crate::controller::workflow_json(&rec, Some(nodes))))
}

async fn delete_archived(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(uid): Path<String>,
) -> ApiResult {
    let rec = c.store().get_workflow_by_uid(&uid).await?;
    if rec.finished_at.is_none() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            9,
            format!("workflow {uid} has not finished"),
        ));
    }
    let audit = caller.audit(
        "workflow.delete",
        format!("workflows/{}/{}", rec.namespace, rec.name),
        json!({"archived": true}),
    );
    c.store()
        .delete_workflow(&rec.namespace, &rec.name, &audit)
        .await?;
    Ok(Json(json!({})))
}

fn cron_json(r: &store::CronRecord) -> Value {
    let mut body = r.body.clone();
    body["metadata"]["namespace"] = json!(r.namespace);
    body["metadata"]["creationTimestamp"] = json!(expr::time::rfc3339(r.created_at));
    body["spec"]["suspend"] = json!(r.suspended);
    if let Some(t) = r.last_scheduled_at {
        body["status"] = json!({"lastScheduledTime": expr::time::rfc3339(t)});
    }
    body
}

async fn put_cron(
    c: &Controller,
    caller: &Caller,
    namespace: &str,
    body: &Value,
    create: bool,
    name_in_path: Option<&str>,
) -> ApiResult {
    let mut cw = body
        .get("cronWorkflow")
        .cloned()
        .ok_or_else(|| ApiError::invalid("request body needs a `cronWorkflow`"))?;
    if cw["kind"].is_null() {
        cw["kind"] = json!("CronWorkflow");
    }
    if cw["apiVersion"].is_null() {
        cw["apiVersion"] = json!("argoproj.io/v1alpha1");
    }
    lint_resource(c, namespace, &cw).await?;
    let parsed: spec::CronWorkflow = serde_json::from_value(cw.clone())
        .map_err(|e| ApiError::invalid(format!("cronWorkflow: {e}")))?;
    crate::cron::validate(&parsed).map_err(ApiError::invalid)?;
    let name = parsed
        .metadata
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("cronWorkflow metadata.name is required"))?;
    if let Some(p) = name_in_path
        && p != name
    {
        return Err(ApiError::invalid(format!(
            "name in path ({p}) and body ({name}) differ"
        )));
    }
    let now = now_ms();
    let audit = caller.audit(
        if create { "cron.create" } else { "cron.update" },
        format!("cron-workflows/{namespace}/{name}"),
        json!({}),
    );
    c.store()
        .put_cron(namespace, &name, &cw, now, create, &audit)
        .await?;
    Ok(Json(cron_json(
        &c.store().get_cron(namespace, &name).await?,
    )))
}

async fn create_cron(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_cron(&c, &caller, &namespace, &body, true, None).await
}

async fn update_cron(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_cron(&c, &caller, &namespace, &body, false, Some(&name)).await
}

async fn list_crons(State(c): State<Controller>, Path(namespace): Path<String>) -> ApiResult {
    let items: Vec<Value> = c
        .store()
        .list_crons(Some(&namespace))
        .await?
        .iter()
        .map(cron_json)
        .collect();
    Ok(Json(json!({"metadata": {}, "items": items})))
}

async fn get_cron(
    State(c): State<Controller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(cron_json(
        &c.store().get_cron(&namespace, &name).await?,
    )))
}

async fn delete_cron(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    let audit = caller.audit(
        "cron.delete",
        format!("cron-workflows/{namespace}/{name}"),
        json!({}),
    );
    if !c.store().delete_cron(&namespace, &name, &audit).await? {
        return Err(ApiError::not_found(format!(
            "cron workflow {namespace}/{name} not found"
        )));
    }
    Ok(Json(json!({})))
}

async fn suspend_cron(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    let audit = caller.audit(
        "cron.suspend",
        format!("cron-workflows/{namespace}/{name}"),
        json!({}),
    );
    c.store()
        .set_cron_suspended(&namespace, &name, true, now_ms(), &audit)
        .await?;
    Ok(Json(cron_json(
        &c.store().get_cron(&namespace, &name).await?,
    )))
}

async fn resume_cron(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    let audit = caller.audit(
        "cron.resume",
        format!("cron-workflows/{namespace}/{name}"),
        json!({}),
    );
    c.store()
        .set_cron_suspended(&namespace, &name, false, now_ms(), &audit)
        .await?;
    Ok(Json(cron_json(
        &c.store().get_cron(&namespace, &name).await?,
    )))
}

fn retry_args(body: &Value) -> ApiResult<RetryRequest> {
    let restart = body["restartSuccessful"].as_bool().unwrap_or(false);
    let mut params = Vec::new();
    for p in body["parameters"].as_array().into_iter().flatten() {
        let p = p.as_str().unwrap_or("");
        let (k, v) = p.split_once('=').ok_or_else(|| {
            ApiError::invalid(format!("parameters entry {p:?} must look like name=value"))
        })?;
        params.push((k.to_string(), v.to_string()));
    }
    Ok(RetryRequest {
        restart_successful: restart,
        node_selector: node_selector(body),
        parameters: params,
    })
}

async fn retry_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    body: Option<Json<Value>>,
) -> ApiResult {
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let req = retry_args(&body)?;
    c.retry(&namespace, &name, req, &caller.name, &caller.source)
        .await?;
    Ok(Json(c.workflow_json(&namespace, &name, true).await?))
}

async fn retry_archived(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(uid): Path<String>,
    body: Option<Json<Value>>,
) -> ApiResult {
    let rec = c.store().get_workflow_by_uid(&uid).await?;
    let body = body.map(|Json(b)| b).unwrap_or(Value::Null);
    let req = retry_args(&body)?;
    c.retry(&rec.namespace, &rec.name, req, &caller.name, &caller.source)
        .await?;
    Ok(Json(
        c.workflow_json(&rec.namespace, &rec.name, true).await?,
    ))
}

async fn resubmit_archived(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(uid): Path<String>,
) -> ApiResult {
    let rec = c.store().get_workflow_by_uid(&uid).await?;
    resubmit_workflow(State(c), Extension(caller), Path((rec.namespace, rec.name))).await
}

async fn suspend_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    let input = Input::Suspend { now: now_ms() };
    send_and_show(&c, &caller, &namespace, &name, input, "workflow.suspend").await
}

/// `submitOptions.parameters`: `["name=value", ...]`.
fn submit_params(opts: &Value) -> ApiResult<Vec<(String, String)>> {
    let mut params = Vec::new();
    for p in opts["parameters"].as_array().into_iter().flatten() {
        let p = p.as_str().unwrap_or("");
        match p.split_once('=') {
            Some((k, v)) => params.push((k.to_string(), v.to_string())),
            None => {
                return Err(ApiError::invalid(format!(
                    "submitOptions.parameters entry {p:?} must look like name=value"
                )));
            }
        }
    }
    Ok(params)
}

/// `POST .../lint` for templates and cron workflows: lint errors are one InvalidArgument.
async fn lint_object(
    c: &Controller,
    namespace: &str,
    body: &Value,
    key: &str,
    kind: &str,
) -> ApiResult {
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
    Ok(Json(obj))
}

async fn lint_template(
    State(c): State<Controller>,
    Path(namespace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    lint_object(&c, &namespace, &body, "template", "WorkflowTemplate").await
}

async fn lint_cluster_template(State(c): State<Controller>, Json(body): Json<Value>) -> ApiResult {
    lint_object(&c, "", &body, "template", "ClusterWorkflowTemplate").await
}

async fn lint_cron(
    State(c): State<Controller>,
    Path(namespace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    let obj = lint_object(&c, &namespace, &body, "cronWorkflow", "CronWorkflow").await?;
    let parsed: spec::CronWorkflow = serde_json::from_value(obj.0.clone())
        .map_err(|e| ApiError::invalid(format!("cronWorkflow: {e}")))?;
    crate::cron::validate(&parsed).map_err(ApiError::invalid)?;
    Ok(obj)
}

/// Argo's `fields` selection for lists: `items.metadata.name,items.status.phase` keeps only
/// those paths of each item.
fn select_fields(item: &Value, fields: &[Vec<String>]) -> Value {
    let mut out = json!({});
    for path in fields {
        let mut src = item;
        let mut ok = true;
        for seg in path {
            match src.get(seg) {
                Some(v) => src = v,
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
        let mut dst = &mut out;
        for (i, seg) in path.iter().enumerate() {
            if i + 1 == path.len() {
                dst[seg.as_str()] = src.clone();
            } else {
                if !dst[seg.as_str()].is_object() {
                    dst[seg.as_str()] = json!({});
                }
                dst = &mut dst[seg.as_str()];
            }
        }
    }
    out
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

    /// Every documented operation is routed, and nothing routed is undocumented.
    #[test]
    fn router_serves_exactly_the_documented_operations() {
        let source = include_str!("api.rs");
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
