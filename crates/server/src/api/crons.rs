//! CronWorkflow handlers.

#[allow(unused_imports)]
use super::*;

pub(super) fn cron_json(r: &store::CronRecord) -> Value {
    let mut body = r.body.clone();
    body["metadata"]["namespace"] = json!(r.namespace);
    body["metadata"]["creationTimestamp"] = json!(expr::time::rfc3339(r.created_at));
    body["spec"]["suspend"] = json!(r.suspended);
    if let Some(t) = r.last_scheduled_at {
        body["status"] = json!({"lastScheduledTime": expr::time::rfc3339(t)});
    }
    body
}

pub(super) async fn put_cron(
    c: &Controller,
    caller: &Caller,
    namespace: &str,
    body: &Value,
    create: bool,
    name_in_path: Option<&str>,
) -> ApiResult {
    let cw = linted_object(c, namespace, body, "cronWorkflow", "CronWorkflow").await?;
    let parsed: spec::CronWorkflow = serde_json::from_value(cw.clone())
        .map_err(|e| ApiError::invalid(format!("cronWorkflow: {e}")))?;
    crate::cron::validate(&parsed).map_err(ApiError::invalid)?;
    let name = parsed
        .metadata
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("cronWorkflow metadata.name is required"))?;
    same_name(name_in_path, &name)?;
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

pub(super) async fn create_cron(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_cron(&c, &caller, &namespace, &body, true, None).await
}

pub(super) async fn update_cron(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_cron(&c, &caller, &namespace, &body, false, Some(&name)).await
}

pub(super) async fn list_crons(
    State(c): State<Controller>,
    Path(namespace): Path<String>,
) -> ApiResult {
    let items: Vec<Value> = c
        .store()
        .list_crons(Some(&namespace))
        .await?
        .iter()
        .map(cron_json)
        .collect();
    Ok(Json(json!({"metadata": {}, "items": items})))
}

pub(super) async fn get_cron(
    State(c): State<Controller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(cron_json(
        &c.store().get_cron(&namespace, &name).await?,
    )))
}

pub(super) async fn delete_cron(
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

pub(super) async fn suspend_cron(
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

pub(super) async fn resume_cron(
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

pub(super) async fn lint_cron(
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
