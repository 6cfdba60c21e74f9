//! `POST /api/v1/riposte/library/{namespace}`: install the response library shipped in the
//! binary (ClusterWorkflowTemplates) and, with `{"playbooks": true}`, the playbooks
//! (WorkflowTemplates, Sensors, EventSources) into a namespace. `GET` lists what is shipped.
//! Each object goes through the same lint and audit as when created one by one.

#[allow(unused_imports)]
use super::*;

use crate::library::{FILES, is_playbook};

pub(super) async fn list_library() -> ApiResult {
    let items: Vec<Value> = FILES
        .iter()
        .flat_map(|f| {
            let docs = spec::yaml::load_documents(f.text).unwrap_or_default();
            docs.into_iter().map(move |d| {
                json!({
                    "file": f.path,
                    "kind": d.value["kind"],
                    "name": d.value["metadata"]["name"],
                    "description": d.value["metadata"]["annotations"]["riposte.dev/description"],
                    "playbook": is_playbook(f),
                })
            })
        })
        .collect();
    Ok(Json(json!({"items": items})))
}

pub(super) async fn install_library(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Path(namespace): Path<String>,
    body: Option<Json<Value>>,
) -> ApiResult {
    let playbooks = body
        .as_ref()
        .and_then(|b| b.0["playbooks"].as_bool())
        .unwrap_or(false);
    let c = &state.controller;
    let mut installed = Vec::new();
    // Actions first: the playbooks' templates reference them and are linted against them.
    let mut files: Vec<_> = FILES
        .iter()
        .filter(|f| playbooks || !is_playbook(f))
        .collect();
    files.sort_by_key(|f| is_playbook(f));
    for f in files {
        let docs = spec::yaml::load_documents(f.text).map_err(|e| {
            ApiError::internal(format!(
                "shipped file {} line {}: {}",
                f.path, e.position.line, e.position.col
            ))
        })?;
        // Templates before the sensors that submit them.
        let mut docs: Vec<Value> = docs.into_iter().map(|d| d.value).collect();
        docs.sort_by_key(|d| {
            !d["kind"]
                .as_str()
                .is_some_and(|k| k.ends_with("WorkflowTemplate"))
        });
        for doc in docs {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let action = match kind.as_str() {
                "ClusterWorkflowTemplate" | "WorkflowTemplate" => {
                    let cluster = kind == "ClusterWorkflowTemplate";
                    let ns = if cluster { "" } else { namespace.as_str() };
                    let exists = c.store().get_template(cluster, ns, &name).await.is_ok();
                    let _stored = put_template(
                        c,
                        &caller,
                        ns,
                        &json!({"template": doc}),
                        !exists,
                        None,
                        cluster,
                    )
                    .await
                    .map_err(|e| in_file(e, f.path))?;
                    if exists { "configured" } else { "created" }
                }
                k @ (crate::events::SENSOR | crate::events::EVENT_SOURCE) => {
                    events::upsert_event_object(&state.events, &caller, &namespace, doc, k)
                        .await
                        .map_err(|e| in_file(e, f.path))?
                }
                other => {
                    return Err(ApiError::internal(format!(
                        "shipped file {} holds a {other}, which the library does not install",
                        f.path
                    )));
                }
            };
            installed.push(json!({
                "kind": kind,
                "name": name,
                "namespace": if kind == "ClusterWorkflowTemplate" { "" } else { namespace.as_str() },
                "file": f.path,
                "action": action,
            }));
        }
    }
    Ok(Json(json!({"items": installed})))
}

fn in_file(mut e: ApiError, path: &str) -> ApiError {
    e.message = format!("{path}: {}", e.message);
    e
}
