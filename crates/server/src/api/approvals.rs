//! Signed approval links on the API (see [`crate::approval`]): minted by an approver of the
//! workflow's namespace, or by a step of the workflow itself with its node token (a
//! notification step putting the links in its message); opened by anyone holding one.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use engine::Input;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, AppState, Caller, now_ms};
use crate::approval::{Grant, LinkError, LinkSigner, html_escape};
use crate::controller::ControlError;

/// One choice a link offers.
#[derive(Debug, Deserialize)]
struct Decision {
    label: String,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
}

/// `{"node": "approve", "decisions": [{"label": "terminate", "parameters": {"decision":
/// "terminate"}}], "ttl": "1h", "to": "#secops"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    node: String,
    #[serde(default)]
    decisions: Vec<Decision>,
    #[serde(default)]
    ttl: Option<String>,
    #[serde(default)]
    to: String,
}

/// The longest a link may live: a decision taken a week later is not a response.
const MAX_TTL_MS: i64 = 7 * 24 * 3600 * 1000;

fn signer(state: &AppState) -> ApiResult<&LinkSigner> {
    state.approvals.as_deref().ok_or_else(|| {
        ApiError::not_found(
            "approval links are off: start the server with --external-url (its URL as people reach it) and, with several replicas, one --callback-secret-file for all",
        )
    })
}

async fn mint(
    state: &AppState,
    namespace: &str,
    name: &str,
    body: Value,
    minted_by: &str,
) -> ApiResult<Json<Value>> {
    let signer = signer(state)?;
    let req: MintRequest = serde_json::from_value(body).map_err(|e| {
        ApiError::invalid(format!(
            "approval-links body: {e} (expected {{\"node\": NAME, \"decisions\": [{{\"label\": …, \"parameters\": {{…}}}}], \"ttl\": \"1h\", \"to\": …}})"
        ))
    })?;
    let c = &state.controller;
    let rec = c.store().get_workflow(namespace, name).await?;
    if rec.finished_at.is_some() {
        return Err(ApiError::invalid(format!(
            "workflow {namespace}/{name} has finished ({}); there is nothing to approve",
            rec.phase
        )));
    }
    let ttl_text = req.ttl.as_deref().unwrap_or("1h");
    let ttl = expr::time::parse_duration_millis(ttl_text)
        .filter(|ms| *ms > 0 && *ms <= MAX_TTL_MS)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "ttl {ttl_text:?} must be a duration between 1s and 168h (e.g. 30m, 4h)"
            ))
        })?;
    let decisions = if req.decisions.is_empty() {
        vec![Decision {
            label: "approve".into(),
            parameters: BTreeMap::new(),
        }]
    } else {
        req.decisions
    };
    let expires_ms = now_ms() + ttl;
    let to = if req.to.is_empty() {
        format!("minted by {minted_by}")
    } else {
        format!("{} (minted by {minted_by})", req.to)
    };
    let links: Vec<Value> = decisions
        .into_iter()
        .map(|d| {
            let grant = Grant {
                namespace: namespace.to_string(),
                workflow: name.to_string(),
                uid: rec.uid.clone(),
                node: req.node.clone(),
                parameters: d.parameters,
                label: d.label.clone(),
                to: to.clone(),
                expires_ms,
            };
            json!({"label": d.label, "url": signer.url(&grant),
                   "expires": expr::time::rfc3339(expires_ms)})
        })
        .collect();
    Ok(Json(json!({"links": links})))
}

/// `POST /api/v1/workflows/{namespace}/{name}/approval-links` (an approver).
pub(super) async fn mint_for_user(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    mint(&state, &namespace, &name, body, &caller.name).await
}

/// `POST /api/v1/riposte/callbacks/{uid}/{nodeId}/approval-links` (a step of the workflow).
pub(super) async fn mint_for_step(
    State(state): State<AppState>,
    Path((uid, node_id)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
    Json(body): Json<Value>,
) -> ApiResult<Json<Value>> {
    super::step_caller(&state.controller, &uid, &node_id, &headers)?;
    let rec = state.controller.store().get_workflow_by_uid(&uid).await?;
    let by = format!("step {node_id} of {}/{}", rec.namespace, rec.name);
    mint(&state, &rec.namespace, &rec.name, body, &by).await
}

/// The page a link opens, or the outcome of its button.
fn page(status: StatusCode, title: &str, body_html: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><meta name=\"robots\" content=\"noindex\"><title>{t} · Riposte</title><style>body{{font:16px system-ui,sans-serif;max-width:40rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}}table{{border-collapse:collapse}}td{{padding:.2rem .8rem .2rem 0;vertical-align:top}}td:first-child{{color:#666}}button{{font-size:1rem;padding:.5rem 1.2rem}}</style></head><body><h1>{t}</h1>{body_html}</body></html>",
        t = html_escape(title)
    );
    let mut resp = (status, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // No script at all; the only form posts back here; never framed, cached or referred.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    resp
}

fn refused(e: &LinkError) -> Response {
    let status = match e {
        LinkError::Expired => StatusCode::GONE,
        LinkError::BadSignature => StatusCode::FORBIDDEN,
        LinkError::Malformed => StatusCode::BAD_REQUEST,
    };
    page(
        status,
        "Approval link refused",
        &format!("<p>{}.</p>", html_escape(&e.to_string())),
    )
}

fn describe(g: &Grant) -> String {
    let params: String = if g.parameters.is_empty() {
        "(none: resume as is)".into()
    } else {
        g.parameters
            .iter()
            .map(|(k, v)| format!("{}={}", html_escape(k), html_escape(v)))
            .collect::<Vec<_>>()
            .join("<br>")
    };
    format!(
        "<table><tr><td>Workflow</td><td>{}/{}</td></tr><tr><td>Step</td><td>{}</td></tr><tr><td>Decision</td><td><strong>{}</strong></td></tr><tr><td>Sets</td><td>{params}</td></tr><tr><td>Sent to</td><td>{}</td></tr><tr><td>Valid until</td><td>{}</td></tr></table>",
        html_escape(&g.namespace),
        html_escape(&g.workflow),
        html_escape(&g.node),
        html_escape(&g.label),
        html_escape(&g.to),
        html_escape(&expr::time::rfc3339(g.expires_ms)),
    )
}

/// The grant of a token whose workflow is still the one it was minted for.
async fn checked(state: &AppState, token: &str) -> Result<Grant, Response> {
    let Some(signer) = state.approvals.as_deref() else {
        return Err(page(
            StatusCode::NOT_FOUND,
            "Approval links are off",
            "<p>This server does not accept approval links.</p>",
        ));
    };
    let grant = signer.verify(token, now_ms()).map_err(|e| refused(&e))?;
    match state
        .controller
        .store()
        .get_workflow(&grant.namespace, &grant.workflow)
        .await
    {
        Ok(rec) if rec.uid == grant.uid => Ok(grant),
        Ok(_) | Err(store::StoreError::NotFound { .. }) => Err(page(
            StatusCode::GONE,
            "Workflow gone",
            "<p>The workflow this link was sent for no longer exists (a newer one may have its name).</p>",
        )),
        Err(e) => Err(page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            &format!(
                "<p>The database did not answer: {}</p>",
                html_escape(&store::chain(&e))
            ),
        )),
    }
}

/// `GET /api/v1/riposte/approvals/{token}`: what the link decides, and the button.
pub(super) async fn show(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    match checked(&state, &token).await {
        Err(r) => r,
        Ok(g) => page(
            StatusCode::OK,
            &format!("Decide: {}", g.label),
            &format!(
                "{}<form method=\"post\"><p><button type=\"submit\">Confirm: {}</button></p></form><p>Nothing happens until you confirm. The decision is recorded in the audit log.</p>",
                describe(&g),
                html_escape(&g.label)
            ),
        ),
    }
}

/// `POST /api/v1/riposte/approvals/{token}`: the decision, through the same inbox as
/// `resume`/`set`, audited with the link's label and recipient.
pub(super) async fn decide(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let g = match checked(&state, &token).await {
        Err(r) => return r,
        Ok(g) => g,
    };
    let input = Input::Resume {
        now: now_ms(),
        node: Some(g.node.clone()),
        parameters: g.parameters.clone(),
    };
    let actor = format!("approval link \"{}\" sent to {}", g.label, g.to);
    match state
        .controller
        .send(
            &g.namespace,
            &g.workflow,
            input,
            &actor,
            "approval-link",
            "workflow.approve",
        )
        .await
    {
        Ok(()) => page(
            StatusCode::OK,
            &format!("Recorded: {}", g.label),
            &format!(
                "{}<p>The workflow continues with this decision.</p>",
                describe(&g)
            ),
        ),
        Err(ControlError::FailedPrecondition(m) | ControlError::Invalid(m)) => page(
            StatusCode::CONFLICT,
            "Nothing to decide",
            &format!(
                "<p>This step is no longer waiting for a decision (it was decided already, timed out, or the workflow ended).</p><p>{}</p>",
                html_escape(&m)
            ),
        ),
        Err(ControlError::NotFound(m)) => page(
            StatusCode::GONE,
            "Workflow gone",
            &format!("<p>{}</p>", html_escape(&m)),
        ),
        Err(e) => page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Try again",
            &format!("<p>{}</p>", html_escape(&e.to_string())),
        ),
    }
}
