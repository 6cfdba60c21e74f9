//! Workflow handlers: create and submit (through the one submit path), list, get, delete,
//! and the outside inputs (resume, set, suspend, stop, terminate) that go to the inbox.

#[allow(unused_imports)]
use super::*;

pub(super) async fn create_workflow(
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
pub(super) async fn submitted(
    c: &Controller,
    namespace: &str,
    outcome: SubmitOutcome,
) -> ApiResult {
    match outcome.name() {
        Some(name) => Ok(Json(c.workflow_json(namespace, name, true).await?)),
        None => Err(ApiError::new(
            StatusCode::CONFLICT,
            6,
            "this scheduled time was already submitted",
        )),
    }
}

pub(super) async fn lint_workflow(
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
pub(super) async fn submit_workflow(
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
pub(super) fn key_values(
    opts: &Value,
    field: &str,
) -> ApiResult<std::collections::BTreeMap<String, String>> {
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

pub(super) async fn list_workflows(
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
    // A time range, e.g. the console's "last hour": bounds on the keyset's column.
    let time = |key: &str| time_param(key, q.get(key).map(String::as_str));
    let lq = store::ListQuery {
        namespace: (!namespace.is_empty()).then_some(namespace),
        phase,
        labels,
        after,
        created_since: time("createdAfter")?,
        created_until: time("createdBefore")?,
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

pub(super) async fn get_workflow(
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

pub(super) async fn delete_workflow(
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
pub(super) fn node_selector(body: &Value) -> Option<String> {
    let s = body["nodeFieldSelector"].as_str()?;
    s.split_once('=')
        .map(|(_, v)| v.to_string())
        .or_else(|| Some(s.to_string()))
        .filter(|v| !v.is_empty())
}

pub(super) async fn resume_workflow(
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
pub(super) async fn set_workflow(
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

pub(super) async fn stop_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    shut_down(&c, &caller, &namespace, &name, false).await
}

pub(super) async fn terminate_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    shut_down(&c, &caller, &namespace, &name, true).await
}

/// `stop` (exit handlers still run) or `terminate` (they do not), audited as such.
pub(super) async fn shut_down(
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
pub(super) async fn send_and_show(
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

/// `resubmit`: a new workflow from the same spec and parameters (`memoized` is ignored).
pub(super) async fn resubmit_workflow(
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

pub(super) fn retry_args(body: &Value) -> ApiResult<RetryRequest> {
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

pub(super) async fn retry_workflow(
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

pub(super) async fn suspend_workflow(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    let input = Input::Suspend { now: now_ms() };
    send_and_show(&c, &caller, &namespace, &name, input, "workflow.suspend").await
}

/// `submitOptions.parameters`: `["name=value", ...]`.
pub(super) fn submit_params(opts: &Value) -> ApiResult<Vec<(String, String)>> {
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

/// Argo's `fields` selection for lists: `items.metadata.name,items.status.phase` keeps only
/// those paths of each item.
pub(super) fn select_fields(item: &Value, fields: &[Vec<String>]) -> Value {
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
