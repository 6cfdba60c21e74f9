//! Archived (finished) workflows, by uid.

#[allow(unused_imports)]
use super::*;

/// Archived workflows: every finished workflow stays queryable (by uid).
pub(super) async fn list_archived(
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

pub(super) async fn get_archived(
    State(c): State<Controller>,
    Path(uid): Path<String>,
) -> ApiResult {
    let rec = c.store().get_workflow_by_uid(&uid).await?;
    if rec.finished_at.is_none() {
        return Err(ApiError::not_found(format!(
            "archived workflow {uid} not found: it has not finished"
        )));
    }
    let nodes = c.store().nodes(&uid).await?;
    Ok(Json(crate::controller::workflow_json(&rec, Some(nodes))))
}

pub(super) async fn delete_archived(
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

pub(super) async fn retry_archived(
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

pub(super) async fn resubmit_archived(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(uid): Path<String>,
) -> ApiResult {
    let rec = c.store().get_workflow_by_uid(&uid).await?;
    resubmit_workflow(State(c), Extension(caller), Path((rec.namespace, rec.name))).await
}
