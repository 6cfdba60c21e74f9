//! WorkflowTemplate and ClusterWorkflowTemplate handlers, and lint of templates.

#[allow(unused_imports)]
use super::*;

pub(super) fn template_json(t: &store::TemplateRecord) -> Value {
    let mut body = t.body.clone();
    body["metadata"]["namespace"] = json!(t.namespace);
    body["metadata"]["creationTimestamp"] = json!(expr::time::rfc3339(t.created_at));
    body
}

/// Creates or replaces a WorkflowTemplate (`cluster = false`, in `namespace`) or a
/// ClusterWorkflowTemplate (`cluster = true`, `namespace` is "").
pub(super) async fn put_template(
    c: &Controller,
    caller: &Caller,
    namespace: &str,
    body: &Value,
    create: bool,
    name_in_path: Option<&str>,
    cluster: bool,
) -> ApiResult {
    let kind = if cluster {
        "ClusterWorkflowTemplate"
    } else {
        "WorkflowTemplate"
    };
    let t = linted_object(c, namespace, body, "template", kind).await?;
    let resource = parse_resource(&t, "template")?;
    let name = resource
        .metadata
        .name
        .clone()
        .ok_or_else(|| ApiError::invalid("template metadata.name is required"))?;
    same_name(name_in_path, &name)?;
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

pub(super) async fn create_template(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_template(&c, &caller, &namespace, &body, true, None, false).await
}

pub(super) async fn update_template(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path((namespace, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_template(&c, &caller, &namespace, &body, false, Some(&name), false).await
}

pub(super) async fn list_templates(
    State(c): State<Controller>,
    Path(namespace): Path<String>,
) -> ApiResult {
    let items: Vec<Value> = c
        .store()
        .list_templates(false, &namespace)
        .await?
        .iter()
        .map(template_json)
        .collect();
    Ok(Json(json!({"metadata": {}, "items": items})))
}

pub(super) async fn get_template(
    State(c): State<Controller>,
    Path((namespace, name)): Path<(String, String)>,
) -> ApiResult {
    Ok(Json(template_json(
        &c.store().get_template(false, &namespace, &name).await?,
    )))
}

/// What the audit log calls a template.
pub(super) fn template_object(cluster: bool, namespace: &str, name: &str) -> String {
    if cluster {
        format!("cluster-workflow-templates/{name}")
    } else {
        format!("workflow-templates/{namespace}/{name}")
    }
}

pub(super) async fn delete_template(
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

pub(super) async fn create_cluster_template(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_template(&c, &caller, "", &body, true, None, true).await
}

pub(super) async fn update_cluster_template(
    State(c): State<Controller>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    put_template(&c, &caller, "", &body, false, Some(&name), true).await
}

pub(super) async fn list_cluster_templates(State(c): State<Controller>) -> ApiResult {
    let items: Vec<Value> = c
        .store()
        .list_templates(true, "")
        .await?
        .iter()
        .map(template_json)
        .collect();
    Ok(Json(json!({"metadata": {}, "items": items})))
}

pub(super) async fn get_cluster_template(
    State(c): State<Controller>,
    Path(name): Path<String>,
) -> ApiResult {
    Ok(Json(template_json(
        &c.store().get_template(true, "", &name).await?,
    )))
}

pub(super) async fn delete_cluster_template(
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

/// `POST .../lint` for templates and cron workflows: lint errors are one InvalidArgument.
pub(super) async fn lint_object(
    c: &Controller,
    namespace: &str,
    body: &Value,
    key: &str,
    kind: &str,
) -> ApiResult {
    Ok(Json(linted_object(c, namespace, body, key, kind).await?))
}

pub(super) async fn lint_template(
    State(c): State<Controller>,
    Path(namespace): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult {
    lint_object(&c, &namespace, &body, "template", "WorkflowTemplate").await
}

pub(super) async fn lint_cluster_template(
    State(c): State<Controller>,
    Json(body): Json<Value>,
) -> ApiResult {
    lint_object(&c, "", &body, "template", "ClusterWorkflowTemplate").await
}
