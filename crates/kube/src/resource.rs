//! The resource template, run by the controller (no pod): `get`, `create`, `apply`
//! (server-side apply), `replace`, `patch` (`strategic`, `merge`, `json`) and `delete` on any
//! kind, found by discovery and handled as [`DynamicObject`]s; then `successCondition` /
//! `failureCondition` watched over the object, and outputs by `jsonPath` / `jqFilter`.
//!
//! A patch never creates: the API answers 404 for a missing object and the node fails.

use engine::{ExecResult, ExecuteNode, Phase};
use executor::condition::{self, Verdict};
use futures_util::StreamExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::discovery::{self, Scope};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

use crate::{Cluster, api_status, describe, with_retries};

/// The field manager Riposte's server-side applies and patches are recorded under.
pub const FIELD_MANAGER: &str = "riposte";

pub(crate) async fn run(cluster: &Cluster, node: &ExecuteNode, workflow_uid: &str) -> ExecResult {
    match run_inner(cluster, node, workflow_uid).await {
        Ok(r) => r,
        Err(msg) => ExecResult::error(msg),
    }
}

pub use executor::flags::Flags;
use spec::{MergeStrategy, ResourceAction};

/// kubectl's names for common kinds: `pod`, `pods`, `po`, ...
fn kind_for_type(t: &str) -> Option<(&'static str, &'static str, &'static str)> {
    let t = t.to_ascii_lowercase();
    type Gvk = (&'static str, &'static str, &'static str);
    let table: &[(&[&str], Gvk)] = &[
        (&["pod", "pods", "po"], ("", "v1", "Pod")),
        (&["configmap", "configmaps", "cm"], ("", "v1", "ConfigMap")),
        (&["secret", "secrets"], ("", "v1", "Secret")),
        (&["service", "services", "svc"], ("", "v1", "Service")),
        (
            &["serviceaccount", "serviceaccounts", "sa"],
            ("", "v1", "ServiceAccount"),
        ),
        (&["namespace", "namespaces", "ns"], ("", "v1", "Namespace")),
        (
            &["deployment", "deployments", "deploy"],
            ("apps", "v1", "Deployment"),
        ),
        (
            &["daemonset", "daemonsets", "ds"],
            ("apps", "v1", "DaemonSet"),
        ),
        (
            &["statefulset", "statefulsets", "sts"],
            ("apps", "v1", "StatefulSet"),
        ),
        (
            &["replicaset", "replicasets", "rs"],
            ("apps", "v1", "ReplicaSet"),
        ),
        (&["job", "jobs"], ("batch", "v1", "Job")),
        (&["cronjob", "cronjobs", "cj"], ("batch", "v1", "CronJob")),
        (
            &["networkpolicy", "networkpolicies", "netpol"],
            ("networking.k8s.io", "v1", "NetworkPolicy"),
        ),
        (&["node", "nodes", "no"], ("", "v1", "Node")),
        (
            &["rolebinding", "rolebindings"],
            ("rbac.authorization.k8s.io", "v1", "RoleBinding"),
        ),
        (
            &["clusterrolebinding", "clusterrolebindings"],
            ("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
        ),
        (
            &["runtimeclass", "runtimeclasses"],
            ("node.k8s.io", "v1", "RuntimeClass"),
        ),
        (
            &["policyreport", "policyreports", "polr"],
            ("wgpolicyk8s.io", "v1alpha2", "PolicyReport"),
        ),
    ];
    table
        .iter()
        .find(|(names, _)| names.contains(&t.as_str()))
        .map(|(_, gvk)| *gvk)
}

fn parse_manifest(text: &str) -> Result<Value, String> {
    let docs = spec::yaml::load_documents(text).map_err(|e| {
        format!(
            "manifest line {}, column {}: {}",
            e.position.line, e.position.col, e.message
        )
    })?;
    match docs.len() {
        1 => Ok(docs
            .into_iter()
            .next()
            .map(|d| d.value)
            .unwrap_or(Value::Null)),
        0 => Err("the manifest is empty".into()),
        n => Err(format!(
            "the manifest holds {n} documents; a resource template takes one"
        )),
    }
}

/// The group, version and kind of an object's `apiVersion` (`v1`, `apps/v1`) and `kind`.
pub(crate) fn gvk_of(api_version: &str, kind: &str) -> GroupVersionKind {
    let (g, v) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(g, v, kind)
}

/// The API of `gvk`, found by discovery so that any kind works: in `namespace` for a
/// namespaced kind, cluster-wide otherwise.
pub(crate) async fn dynamic_api(
    client: &kube::Client,
    gvk: &GroupVersionKind,
    namespace: &str,
) -> Result<(Api<DynamicObject>, ApiResource), String> {
    discover(client, gvk, namespace)
        .await
        .map_err(|e| not_served(gvk, &e))
}

/// [`dynamic_api`] with the API's own error, for callers that classify it.
async fn discover(
    client: &kube::Client,
    gvk: &GroupVersionKind,
    namespace: &str,
) -> Result<(Api<DynamicObject>, ApiResource), kube::Error> {
    let (resource, caps) = with_retries(|| discovery::pinned_kind(client, gvk)).await?;
    let api = match caps.scope {
        Scope::Cluster => Api::all_with(client.clone(), &resource),
        Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &resource),
    };
    Ok((api, resource))
}

fn not_served(gvk: &GroupVersionKind, e: &kube::Error) -> String {
    format!(
        "the cluster does not serve {} {} (is the CRD installed?): {}",
        ApiResource::from_gvk(gvk).api_version,
        gvk.kind,
        describe(e)
    )
}

/// What the action works on.
struct Target {
    api: Api<DynamicObject>,
    resource: ApiResource,
    name: Option<String>,
}

async fn target(
    cluster: &Cluster,
    node: &ExecuteNode,
    flags: &Flags,
    manifest: &Value,
) -> Result<Target, String> {
    let (gvk, name) = match flags.target.as_slice() {
        [t, rest @ ..] => {
            let (g, v, k) = kind_for_type(t).ok_or_else(|| {
                format!("flags name the resource type {t:?}, which Riposte does not know; name the object in the manifest (apiVersion, kind, metadata.name) instead")
            })?;
            (GroupVersionKind::gvk(g, v, k), rest.first().cloned())
        }
        [] => {
            let api_version = manifest["apiVersion"]
                .as_str()
                .ok_or("the manifest has no apiVersion")?;
            let kind = manifest["kind"]
                .as_str()
                .ok_or("the manifest has no kind")?;
            (
                gvk_of(api_version, kind),
                manifest["metadata"]["name"].as_str().map(str::to_string),
            )
        }
    };
    let namespace = flags
        .namespace
        .clone()
        .or_else(|| {
            manifest["metadata"]["namespace"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap_or_else(|| node.namespace.clone());
    let (api, resource) = dynamic_api(cluster.client(), &gvk, &namespace).await?;
    Ok(Target {
        api,
        resource,
        name,
    })
}

/// A sensor's `k8s` trigger: `operation` (`create`, `update`, `patch`, `delete`, `apply`) on
/// the object `manifest` names (namespaced objects without a namespace go to `namespace`).
/// A patch of a missing object is an error: a trigger must not appear to isolate a pod that
/// is not there. Returns `kind/name` of the object.
pub async fn object_action(
    cluster: &Cluster,
    operation: &str,
    manifest: &Value,
    namespace: &str,
) -> Result<String, ActionError> {
    use ActionError::Permanent;
    let api_version = manifest["apiVersion"]
        .as_str()
        .ok_or_else(|| Permanent("the object has no apiVersion".into()))?;
    let kind = manifest["kind"]
        .as_str()
        .ok_or_else(|| Permanent("the object has no kind".into()))?;
    let ns = manifest["metadata"]["namespace"]
        .as_str()
        .unwrap_or(namespace);
    let gvk = gvk_of(api_version, kind);
    let (api, _) = discover(cluster.client(), &gvk, ns)
        .await
        .map_err(|e| ActionError::of(&e, not_served(&gvk, &e)))?;
    let name = manifest["metadata"]["name"].as_str().map(str::to_string);
    let need_name = || {
        name.clone()
            .ok_or_else(|| Permanent(format!("{operation} needs the object's metadata.name")))
    };
    let what = |n: &str| format!("{}/{n}", kind.to_lowercase());
    let object: DynamicObject = serde_json::from_value(manifest.clone())
        .map_err(|e| Permanent(format!("the object is not a Kubernetes object: {e}")))?;
    let post = PostParams::default();
    let apply = Patch::Apply(manifest);
    let merge = Patch::Merge(manifest);
    let done = match operation {
        "create" => with_retries(|| api.create(&post, &object))
            .await
            .map_err(|e| {
                let message = format!(
                    "create {}: {}",
                    what(name.as_deref().unwrap_or("(generated)")),
                    describe(&e)
                );
                ActionError::of(&e, message)
            })?,
        "apply" | "update" => {
            let n = need_name()?;
            let mut pp = PatchParams::apply(FIELD_MANAGER);
            pp.force = true;
            with_retries(|| api.patch(&n, &pp, &apply))
                .await
                .map_err(|e| {
                    let message = format!("{operation} {}: {}", what(&n), describe(&e));
                    ActionError::of(&e, message)
                })?
        }
        "patch" => {
            let n = need_name()?;
            let pp = PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..PatchParams::default()
            };
            with_retries(|| api.patch(&n, &pp, &merge))
                .await
                .map_err(|e| {
                    if api_status(&e).is_some_and(|(c, _)| c == 404) {
                        Permanent(format!(
                            "patch {}: the object does not exist, and a patch never creates it",
                            what(&n)
                        ))
                    } else {
                        let message = format!("patch {}: {}", what(&n), describe(&e));
                        ActionError::of(&e, message)
                    }
                })?
        }
        "delete" => {
            let n = need_name()?;
            let dp = DeleteParams::background();
            with_retries(|| api.delete(&n, &dp)).await.map_err(|e| {
                let message = format!("delete {}: {}", what(&n), describe(&e));
                ActionError::of(&e, message)
            })?;
            return Ok(what(&n));
        }
        other => {
            return Err(Permanent(format!(
                "k8s trigger operation {other:?} is not one of create, update, patch, delete, apply"
            )));
        }
    };
    Ok(what(&done.metadata.name.unwrap_or_default()))
}

/// Why a trigger's Kubernetes action failed, and whether trying it again can help.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// The request is wrong, or the API server refused it for good (403 Forbidden, 404, 422
    /// Invalid, …): the same request fails again.
    #[error("{0}")]
    Permanent(String),
    /// The API server did not answer, or asked to come back (408, 429, 5xx).
    #[error("{0}")]
    Retryable(String),
}

impl ActionError {
    fn of(e: &kube::Error, message: String) -> ActionError {
        if retryable(e) {
            ActionError::Retryable(message)
        } else {
            ActionError::Permanent(message)
        }
    }
}

/// An API status other than 408 and 429 in the 4xx range is final; anything else (a 5xx, a
/// connection or TLS failure, a timeout) may pass on another attempt.
pub fn retryable_status(code: u16) -> bool {
    matches!(code, 408 | 429) || !(400..500).contains(&code)
}

fn retryable(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => retryable_status(s.code),
        kube::Error::SerdeError(_) | kube::Error::BuildRequest(_) => false,
        _ => true,
    }
}

async fn run_inner(
    cluster: &Cluster,
    node: &ExecuteNode,
    workflow_uid: &str,
) -> Result<ExecResult, String> {
    let r = node
        .template
        .resource
        .as_ref()
        .ok_or("not a resource template")?;
    let flags = Flags::parse(&r.flags)?;
    let manifest = match &r.manifest {
        Some(text) => parse_manifest(text)?,
        None if r.manifest_from.is_some() => {
            return Err(
                "manifestFrom (an artifact) is not supported by Riposte; put the manifest inline"
                    .into(),
            );
        }
        None => Value::Null,
    };
    // Parsed once; lint names a wrong value with its position before anything runs.
    let action = ResourceAction::parse(&r.action).ok_or_else(|| {
        format!(
            "action {:?} is not one of {}",
            r.action,
            ResourceAction::ALL
        )
    })?;
    let strategy = MergeStrategy::parse(r.merge_strategy.as_deref()).ok_or_else(|| {
        format!(
            "mergeStrategy {:?} is not one of {}",
            r.merge_strategy.as_deref().unwrap_or(""),
            MergeStrategy::ALL
        )
    })?;
    let json_patch = action == ResourceAction::Patch && strategy == MergeStrategy::Json;
    if json_patch && flags.target.len() != 2 {
        return Err("a json patch's manifest is the list of operations, so the target goes in flags: [TYPE, NAME] (e.g. [pod, \"{{pod.name}}\"])".into());
    }
    let target_from = if json_patch { &Value::Null } else { &manifest };
    let t = target(cluster, node, &flags, target_from).await?;
    let what = |name: &str| format!("{}/{name}", t.resource.kind.to_lowercase());
    let need_name = || {
        t.name.clone().ok_or_else(|| {
            format!(
                "action {:?} needs the object's name (metadata.name, or flags TYPE NAME)",
                r.action
            )
        })
    };
    let mut body = manifest.clone();
    if r.set_owner_reference == Some(true)
        && matches!(r.action.as_str(), "create" | "apply" | "replace")
    {
        set_owner_labels(&mut body, &node.workflow_name, workflow_uid);
        match t.api.namespace() {
            Some(ns) => {
                let owner = owner_reference(cluster, ns, &node.workflow_name, workflow_uid).await?;
                let refs = &mut body["metadata"]["ownerReferences"];
                if !refs.is_array() {
                    *refs = json!([]);
                }
                if let Some(a) = refs.as_array_mut() {
                    a.push(owner);
                }
            }
            None => {
                return Err(format!(
                    "setOwnerReference on the cluster-scoped {}: a namespaced owner cannot own it; drop setOwnerReference",
                    t.resource.kind
                ));
            }
        }
    }
    let object_of = |v: &Value| -> Result<DynamicObject, String> {
        serde_json::from_value(v.clone())
            .map_err(|e| format!("the manifest is not a Kubernetes object: {e}"))
    };
    let dry_run = flags.dry_run;
    let post = PostParams {
        dry_run,
        ..PostParams::default()
    };
    let background = DeleteParams {
        dry_run,
        grace_period_seconds: flags.grace_period,
        ..DeleteParams::background()
    };
    let apply = Patch::Apply(&body);
    // The object as it was, to say what the write changed (or would change, in a dry run).
    let before = |name: String| {
        let api = t.api.clone();
        async move {
            with_retries(|| api.get_opt(&name))
                .await
                .ok()
                .flatten()
                .and_then(|o| serde_json::to_value(o).ok())
                .unwrap_or(Value::Null)
        }
    };
    let mut prior = Value::Null;
    let obj: Option<DynamicObject> = match action {
        ResourceAction::Get => match t.name.clone() {
            Some(name) => Some(
                with_retries(|| t.api.get(&name))
                    .await
                    .map_err(|e| format!("get {}: {}", what(&name), describe(&e)))?,
            ),
            // `kubectl get TYPE [-l SELECTOR] -o json`: the outputs see a `List`.
            None => {
                let by_label =
                    ListParams::default().labels(flags.selector.as_deref().unwrap_or_default());
                let items = with_retries(|| t.api.list(&by_label))
                    .await
                    .map_err(|e| format!("listing {}: {}", t.resource.plural, describe(&e)))?
                    .items;
                let list = json!({"apiVersion": "v1", "kind": "List", "items": items});
                return outputs(
                    node,
                    &list,
                    format!("listed {} {}", items_len(&list), t.resource.plural),
                    None,
                );
            }
        },
        ResourceAction::Create => {
            let o = object_of(&body)?;
            Some(
                with_retries(|| t.api.create(&post, &o))
                    .await
                    .map_err(|e| {
                        format!(
                            "create {}: {}",
                            what(t.name.as_deref().unwrap_or("(generated)")),
                            describe(&e)
                        )
                    })?,
            )
        }
        ResourceAction::Apply => {
            let name = need_name()?;
            prior = before(name.clone()).await;
            let mut pp =
                PatchParams::apply(flags.field_manager.as_deref().unwrap_or(FIELD_MANAGER));
            // A responder must win over whoever set the field before (e.g. a `kubectl apply`).
            pp.force = true;
            pp.dry_run = dry_run;
            Some(
                with_retries(|| t.api.patch(&name, &pp, &apply))
                    .await
                    .map_err(|e| format!("apply {}: {}", what(&name), describe(&e)))?,
            )
        }
        ResourceAction::Replace => {
            let name = need_name()?;
            let current = t
                .api
                .get(&name)
                .await
                .map_err(|e| format!("replace {}: {}", what(&name), describe(&e)))?;
            prior = serde_json::to_value(&current).unwrap_or(Value::Null);
            let mut o = object_of(&body)?;
            o.metadata.resource_version = current.metadata.resource_version;
            Some(
                with_retries(|| t.api.replace(&name, &post, &o))
                    .await
                    .map_err(|e| format!("replace {}: {}", what(&name), describe(&e)))?,
            )
        }
        ResourceAction::Patch => {
            let name = need_name()?;
            prior = before(name.clone()).await;
            let pp = PatchParams {
                field_manager: Some(
                    flags
                        .field_manager
                        .clone()
                        .unwrap_or_else(|| FIELD_MANAGER.into()),
                ),
                dry_run,
                ..PatchParams::default()
            };
            let patch = match strategy {
                MergeStrategy::Strategic => Patch::Strategic(body.clone()),
                MergeStrategy::Merge => Patch::Merge(body.clone()),
                MergeStrategy::Json => Patch::Json(
                    serde_json::from_value::<json_patch::Patch>(manifest.clone())
                        .map_err(|e| format!("the json patch is not a list of operations: {e}"))?,
                ),
            };
            Some(with_retries(|| t.api.patch(&name, &pp, &patch)).await.map_err(|e| {
                if api_status(&e).is_some_and(|(c, _)| c == 404) {
                    format!(
                        "patch {}: the object does not exist, and a patch never creates it ({})",
                        what(&name),
                        describe(&e)
                    )
                } else if api_status(&e).is_some_and(|(c, _)| c == 415) && strategy == MergeStrategy::Strategic {
                    format!(
                        "patch {}: custom resources do not support strategic merge patch (the default); set mergeStrategy: merge ({})",
                        what(&name),
                        describe(&e)
                    )
                } else {
                    format!("patch {}: {}", what(&name), describe(&e))
                }
            })?)
        }
        ResourceAction::Delete => {
            let by_label =
                ListParams::default().labels(flags.selector.as_deref().unwrap_or_default());
            let names: Vec<String> = match (&t.name, &flags.selector) {
                (Some(n), _) => vec![n.clone()],
                (None, Some(sel)) => with_retries(|| t.api.list(&by_label))
                    .await
                    .map_err(|e| {
                        format!(
                            "listing {} with selector {sel:?}: {}",
                            t.resource.plural,
                            describe(&e)
                        )
                    })?
                    .items
                    .into_iter()
                    .filter_map(|o| o.metadata.name)
                    .collect(),
                (None, None) => {
                    return Err(
                        "action \"delete\" needs metadata.name, flags TYPE NAME, or --selector"
                            .into(),
                    );
                }
            };
            let mut deleted = Vec::new();
            for name in &names {
                match with_retries(|| t.api.delete(name, &background)).await {
                    Ok(_) => deleted.push(what(name)),
                    // Argo deletes with --ignore-not-found.
                    Err(e) if api_status(&e).is_some_and(|(c, _)| c == 404) => {}
                    Err(e) => return Err(format!("delete {}: {}", what(name), describe(&e))),
                }
            }
            let verb = if dry_run { "would delete" } else { "deleted" };
            let message = if deleted.is_empty() {
                "nothing to delete".to_string()
            } else {
                format!("{verb} {}", deleted.join(", "))
            };
            let report = json!({"action": "delete", "dryRun": dry_run, "objects": deleted});
            return outputs(node, &Value::Null, message, Some(report));
        }
    };
    let Some(mut obj) = obj else {
        return Ok(ExecResult::succeeded(0, ""));
    };
    if dry_run {
        // The object was not written, so no condition can become true on it.
        let value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
        let (message, report) = change_report(
            &r.action,
            &what(obj.metadata.name.as_deref().unwrap_or_default()),
            &prior,
            &value,
            true,
        );
        return outputs(node, &value, message, Some(report));
    }
    let success = condition::parse(r.success_condition.as_deref().unwrap_or(""))
        .map_err(|e| format!("successCondition: {e}"))?;
    let failure = condition::parse(r.failure_condition.as_deref().unwrap_or(""))
        .map_err(|e| format!("failureCondition: {e}"))?;
    if !success.is_empty() || !failure.is_empty() {
        match wait_verdict(&t.api, &obj, &success, &failure).await? {
            (Verdict::Failed(msg), _) => {
                return Ok(ExecResult {
                    phase: Phase::Failed,
                    message: msg,
                    ..ExecResult::error("")
                });
            }
            (_, latest) => obj = latest,
        }
    }
    let value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
    let object = what(obj.metadata.name.as_deref().unwrap_or_default());
    if action == ResourceAction::Get {
        return outputs(node, &value, format!("get {object}"), None);
    }
    let (message, report) = change_report(&r.action, &object, &prior, &value, false);
    outputs(node, &value, message, Some(report))
}

fn items_len(list: &Value) -> usize {
    list["items"].as_array().map_or(0, Vec::len)
}

/// The node's message and its `result` for a write: what changed on which object, or what
/// would have in a dry run.
fn change_report(
    action: &str,
    object: &str,
    prior: &Value,
    after: &Value,
    dry_run: bool,
) -> (String, Value) {
    let changes = if prior.is_null() {
        Vec::new()
    } else {
        executor::change::changes(prior, after)
    };
    let verb = match (dry_run, action) {
        (true, a) => format!("would {a}"),
        (false, "create") => "created".into(),
        (false, "apply") => "applied".into(),
        (false, "replace") => "replaced".into(),
        (false, "patch") => "patched".into(),
        (false, a) => a.to_string(),
    };
    let summary = if prior.is_null() {
        format!("{verb} {object}")
    } else if changes.is_empty() {
        format!("{verb} {object}: no change")
    } else {
        format!("{verb} {object}: {}", changes.join("; "))
    };
    let report = json!({
        "action": action,
        "dryRun": dry_run,
        "object": object,
        "created": prior.is_null() && action != "get",
        "changes": changes,
    });
    (summary, report)
}

/// The step's outputs: its parameters by `jsonPath`/`jqFilter` over `value`, the message,
/// and `result` = the JSON report of what it did (a Riposte addition to Argo's resource
/// template, for notifications and approvals to quote).
fn outputs(
    node: &ExecuteNode,
    value: &Value,
    message: String,
    report: Option<Value>,
) -> Result<ExecResult, String> {
    let mut result = ExecResult::succeeded(0, "");
    result.result = report.map(|r| r.to_string());
    for p in &node.template.outputs.parameters {
        let Some(vf) = &p.value_from else { continue };
        let v = if let Some(path) = &vf.json_path {
            executor::kubectl_jsonpath::render(value, path)
                .map_err(|e| format!("output {}: jsonPath {path:?}: {e}", p.name))?
        } else if let Some(filter) = &vf.jq_filter {
            executor::jq::run(value, filter)
                .map_err(|e| format!("output {}: jqFilter {filter:?}: {e}", p.name))?
        } else {
            continue;
        };
        result.parameters.insert(p.name.clone(), Some(v));
    }
    result.message = message;
    Ok(result)
}

/// Label of the ConfigMap that stands in for a workflow as the owner of the objects it
/// created with `setOwnerReference` (value: the workflow's uid).
pub const OWNER_ANCHOR_LABEL: &str = "riposte.dev/owner-anchor-for";

/// Labels an object with its workflow (`setOwnerReference` and any created object).
fn set_owner_labels(body: &mut Value, workflow: &str, uid: &str) {
    if !body["metadata"]["labels"].is_object() {
        body["metadata"]["labels"] = json!({});
    }
    body["metadata"]["labels"]["workflows.argoproj.io/workflow"] = json!(workflow);
    body["metadata"]["labels"]["riposte.dev/workflow-uid"] = json!(uid);
}

/// `setOwnerReference`. A Riposte workflow is a database row, not a cluster object, so it
/// cannot own anything itself: a ConfigMap in the object's namespace stands in for it (the
/// owner anchor), and deleting the workflow deletes the anchor, after which Kubernetes'
/// garbage collector deletes what it owns (see [`Cluster::delete_workflow_objects`]).
async fn owner_reference(
    cluster: &Cluster,
    namespace: &str,
    workflow: &str,
    uid: &str,
) -> Result<Value, String> {
    let cms: Api<DynamicObject> = Api::namespaced_with(
        cluster.client().clone(),
        namespace,
        &ApiResource::erase::<k8s_openapi::api::core::v1::ConfigMap>(&()),
    );
    let name = format!("riposte-owner-{uid}");
    let post = PostParams::default();
    let anchor = match with_retries(|| cms.get_opt(&name)).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            let a: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "labels": {
                    OWNER_ANCHOR_LABEL: uid,
                    "workflows.argoproj.io/workflow": workflow,
                    "app.kubernetes.io/managed-by": "riposte",
                }},
                "data": {"workflow": workflow, "why": "stands in for the Riposte workflow as the owner of the objects it created with setOwnerReference; deleted with the workflow"},
            }))
            .map_err(|e| e.to_string())?;
            match with_retries(|| cms.create(&post, &a)).await {
                Ok(a) => a,
                // Two steps of one workflow raced to create it.
                Err(e) if api_status(&e) == Some((409, "AlreadyExists")) => cms
                    .get(&name)
                    .await
                    .map_err(|e| format!("reading owner anchor {name}: {}", describe(&e)))?,
                Err(e) => {
                    return Err(format!(
                        "creating owner anchor ConfigMap {name}: {}",
                        describe(&e)
                    ));
                }
            }
        }
        Err(e) => return Err(format!("reading owner anchor {name}: {}", describe(&e))),
    };
    Ok(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "name": name,
        "uid": anchor.metadata.uid.unwrap_or_default(),
    }))
}

/// Watches the object until a condition decides. Returns the verdict and the object it was
/// taken on.
async fn wait_verdict(
    api: &Api<DynamicObject>,
    first: &DynamicObject,
    success: &[condition::Requirement],
    failure: &[condition::Requirement],
) -> Result<(Verdict, DynamicObject), String> {
    let judge = |o: &DynamicObject| -> Result<Verdict, String> {
        let v = serde_json::to_value(o).map_err(|e| e.to_string())?;
        Ok(condition::judge(&v, success, failure))
    };
    match judge(first)? {
        Verdict::Waiting => {}
        v => return Ok((v, first.clone())),
    }
    let name = first.metadata.name.clone().unwrap_or_default();
    let cfg = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api.clone(), cfg).default_backoff().boxed();
    while let Some(ev) = events.next().await {
        match ev {
            Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => match judge(&o)? {
                Verdict::Waiting => {}
                v => return Ok((v, o)),
            },
            Ok(watcher::Event::Delete(_)) => {
                return Err(format!(
                    "{name} was deleted while waiting for its condition"
                ));
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(object = %name, error = %e, "watching a resource; the watch retries")
            }
        }
    }
    Err(format!(
        "the watch of {name} ended before a condition was met"
    ))
}

#[cfg(test)]
mod tests {

    #[test]
    fn api_refusals_are_permanent_and_unavailability_retryable() {
        let api = |code: u16, reason: &str| {
            kube::Error::Api(
                kube::core::Status::failure("refused", reason)
                    .with_code(code)
                    .boxed(),
            )
        };
        let table = [
            (api(403, "Forbidden"), false),
            (api(404, "NotFound"), false),
            (api(422, "Invalid"), false),
            (api(409, "Conflict"), false),
            (api(429, "TooManyRequests"), true),
            (api(503, "ServiceUnavailable"), true),
            (api(500, "InternalError"), true),
        ];
        for (e, want) in table {
            let got = ActionError::of(&e, "m".into());
            assert_eq!(matches!(got, ActionError::Retryable(_)), want, "{e}");
        }
    }

    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn flags_parse_the_kubectl_subset() {
        let f = Flags::parse(&s(&["configmap", "--selector", "cleanup=true", "-n=prod"]))
            .expect("flags");
        assert_eq!(f.target, s(&["configmap"]));
        assert_eq!(f.selector.as_deref(), Some("cleanup=true"));
        assert_eq!(f.namespace.as_deref(), Some("prod"));
        let f = Flags::parse(&s(&["pod", "web-1", "--validate=false"])).expect("flags");
        assert_eq!(f.target, s(&["pod", "web-1"]));
        let f = Flags::parse(&s(&["deployment/web", "--grace-period=5"])).expect("flags");
        assert_eq!(f.target, s(&["deployment", "web"]));
        assert_eq!(f.grace_period, Some(5));
        let e = Flags::parse(&s(&["--output=json"])).expect_err("unsupported");
        assert!(e.contains("--output"), "{e}");
        for (flag, dry) in [
            ("--dry-run=server", true),
            ("--dry-run=true", true),
            ("--dry-run=false", false),
            ("--dry-run=none", false),
        ] {
            assert_eq!(
                Flags::parse(&s(&[flag])).expect(flag).dry_run,
                dry,
                "{flag}"
            );
        }
        let e = Flags::parse(&s(&["--dry-run=maybe"])).expect_err("bad value");
        assert!(e.contains("expected server"), "{e}");
        assert!(Flags::parse(&s(&["--selector"])).is_err());
        assert_eq!(
            kind_for_type("netpol"),
            Some(("networking.k8s.io", "v1", "NetworkPolicy"))
        );
        assert_eq!(kind_for_type("Pods"), Some(("", "v1", "Pod")));
    }
}
