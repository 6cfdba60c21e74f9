//! The one way a workflow comes into being: from the API (inline, from a (Cluster)Workflow-
//! Template, from a CronWorkflow, resubmit), the cron scheduler, `riposte run` and sensors'
//! triggers. [`prepare`] builds the Workflow resource, applies names, labels, annotations and
//! parameters, and lints it with everything `riposte lint` checks; [`record`] writes the
//! workflow, its lease, its idempotency key, the cron firing and the audit row in one
//! transaction.

use std::collections::BTreeMap;

use engine::{Workflow, WorkflowIdentity};
use serde_json::{Value, json};
use spec::{AnyString, Library, WorkflowResource};

use crate::controller::{ControlError, Definition};

/// The annotation that carries a submission's idempotency key (settable through Argo's
/// `submitOptions.annotations`, a created workflow's metadata, or a sensor).
pub const IDEMPOTENCY_ANNOTATION: &str = "riposte.dev/idempotency-key";
/// Argo's annotation on a scheduled run: the time it was scheduled for.
pub const SCHEDULED_TIME_ANNOTATION: &str = "workflows.argoproj.io/scheduled-time";
/// Argo's labels naming where a workflow came from.
pub const TEMPLATE_LABEL: &str = "workflows.argoproj.io/workflow-template";
pub const CLUSTER_TEMPLATE_LABEL: &str = "workflows.argoproj.io/cluster-workflow-template";
pub const RESUBMITTED_LABEL: &str = "workflows.argoproj.io/resubmitted-from-workflow";

/// Where the workflow's spec comes from.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A Workflow object as given (API `create`, `riposte run`).
    Inline(Box<WorkflowResource>),
    /// `workflowTemplateRef` to a WorkflowTemplate or ClusterWorkflowTemplate.
    Template { name: String, cluster: bool },
    /// A CronWorkflow's `workflowSpec`; `scheduled_at` for a scheduled firing (claimed with
    /// the workflow, once per time), `None` for a manual submission.
    Cron {
        cron: Box<spec::CronWorkflow>,
        scheduled_at: Option<i64>,
    },
    /// The spec and parameters of an earlier workflow (Argo's `resubmit`).
    Resubmit {
        from: String,
        definition: Box<Definition>,
    },
}

/// Everything a submission says; see the module doc.
#[derive(Debug, Clone)]
pub struct SubmitRequest {
    pub namespace: String,
    pub origin: Origin,
    /// Workflow parameters (`name=value`).
    pub parameters: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Overrides the name; otherwise the resource's name or `generate_name` + suffix.
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub entrypoint: Option<String>,
    /// Overrides [`IDEMPOTENCY_ANNOTATION`].
    pub idempotency_key: Option<String>,
    /// Who asked (token identity, `system:cron`, `cli:<user>`) and from where.
    pub actor: String,
    pub source: String,
    /// Extra audit details (the file `riposte run` read, ...).
    pub details: Value,
}

impl SubmitRequest {
    pub fn new(namespace: &str, origin: Origin, actor: &str, source: &str) -> SubmitRequest {
        SubmitRequest {
            namespace: namespace.to_string(),
            origin,
            parameters: Vec::new(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            name: None,
            generate_name: None,
            entrypoint: None,
            idempotency_key: None,
            actor: actor.to_string(),
            source: source.to_string(),
            details: json!({}),
        }
    }
}

/// A submission ready to record: the engine, and the rows that go with it.
pub struct Prepared {
    pub workflow: Workflow,
    pub identity: WorkflowIdentity,
    pub new_workflow: store::NewWorkflow,
    pub audit: store::AuditEntry,
    /// `namespace/key`.
    pub idempotency_key: Option<String>,
    pub cron_firing: Option<(String, String, i64)>,
    /// The name came from `generateName` (a collision is retried with another suffix).
    pub generated_name: bool,
}

/// How a submission ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    Created {
        name: String,
        uid: String,
    },
    /// Its idempotency key was used before: this is the workflow it created.
    Existing {
        name: String,
        uid: String,
    },
    /// The scheduled time was fired already (by another replica, or before a crash).
    CronFiringTaken,
}

impl SubmitOutcome {
    pub fn name(&self) -> Option<&str> {
        match self {
            SubmitOutcome::Created { name, .. } | SubmitOutcome::Existing { name, .. } => {
                Some(name)
            }
            SubmitOutcome::CronFiringTaken => None,
        }
    }
}

/// Builds, names and lints the workflow; pure apart from the `uid` and name suffix it is
/// given. `library` holds the namespace's templates.
pub fn prepare(
    req: SubmitRequest,
    library: Library,
    uid: String,
    suffix: &str,
    now: i64,
) -> Result<Prepared, ControlError> {
    let SubmitRequest {
        namespace,
        origin,
        mut parameters,
        labels,
        annotations,
        name,
        generate_name,
        entrypoint,
        idempotency_key,
        actor,
        source,
        mut details,
    } = req;
    let mut cron_firing = None;
    let mut resource: WorkflowResource = match origin {
        Origin::Inline(r) => *r,
        Origin::Template {
            name: template,
            cluster,
        } => {
            let base = library
                .get(&template, cluster)
                .map_err(|e| ControlError::NotFound(e.to_string()))?;
            let declared: Vec<&str> = base
                .spec
                .arguments
                .parameters
                .iter()
                .map(|p| p.name.as_str())
                .collect();
            if let Some((k, _)) = parameters
                .iter()
                .find(|(k, _)| !declared.contains(&k.as_str()))
            {
                return Err(ControlError::Invalid(format!(
                    "parameter {k:?} is not declared by {template} (declared: {})",
                    declared.join(", ")
                )));
            }
            let label = if cluster {
                CLUSTER_TEMPLATE_LABEL
            } else {
                TEMPLATE_LABEL
            };
            resource_from(json!({
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Workflow",
                "metadata": {"generateName": format!("{template}-"), "labels": {label: template}},
                "spec": {"workflowTemplateRef": {"name": template, "clusterScope": cluster}},
            }))?
        }
        Origin::Cron { cron, scheduled_at } => {
            let cron_name = cron.metadata.name.clone().unwrap_or_default();
            let mut r = resource_from(json!({
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Workflow",
                "metadata": {"generateName": format!("{cron_name}-"),
                             "labels": {crate::cron::CRON_LABEL: cron_name}},
                "spec": serde_json::to_value(&cron.spec.workflow_spec)
                    .map_err(|e| ControlError::Invalid(e.to_string()))?,
            }))?;
            if let Some(meta) = &cron.spec.workflow_metadata {
                merge_meta(&mut r, meta);
            }
            if let Some(at) = scheduled_at {
                r.metadata.annotations.insert(
                    SCHEDULED_TIME_ANNOTATION.into(),
                    AnyString(expr::time::rfc3339(at)),
                );
                cron_firing = Some((namespace.clone(), cron_name, at));
            }
            r
        }
        Origin::Resubmit { from, definition } => {
            let mut r = definition.resource;
            r.metadata.name = None;
            r.metadata.uid = None;
            r.metadata.generate_name = Some(format!("{from}-"));
            r.metadata
                .labels
                .insert(RESUBMITTED_LABEL.into(), AnyString(from.clone()));
            // Its idempotency key belonged to the original.
            r.metadata.annotations.remove(IDEMPOTENCY_ANNOTATION);
            if parameters.is_empty() {
                parameters = definition.parameters;
            }
            r
        }
    };
    for (k, v) in labels {
        resource.metadata.labels.insert(k, AnyString(v));
    }
    for (k, v) in annotations {
        resource.metadata.annotations.insert(k, AnyString(v));
    }
    if let Some(key) = idempotency_key {
        resource
            .metadata
            .annotations
            .insert(IDEMPOTENCY_ANNOTATION.into(), AnyString(key));
    }
    if let Some(n) = name.filter(|n| !n.is_empty()) {
        resource.metadata.name = Some(n);
    }
    if let Some(g) = generate_name.filter(|g| !g.is_empty()) {
        resource.metadata.generate_name = Some(g);
        if resource.metadata.name.as_deref().is_some_and(str::is_empty) {
            resource.metadata.name = None;
        }
    }
    if let Some(e) = entrypoint.filter(|e| !e.is_empty()) {
        resource.spec.entrypoint = Some(e);
    }
    let generated_name = resource.metadata.name.as_deref().is_none_or(str::is_empty);
    let name = match (&resource.metadata.name, &resource.metadata.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(g)) if !g.is_empty() => format!("{g}{suffix}"),
        _ => {
            return Err(ControlError::Invalid(
                "metadata.name or metadata.generateName is required".into(),
            ));
        }
    };
    check_name(&name)?;
    resource.metadata.name = Some(name.clone());
    resource.metadata.namespace = Some(namespace.clone());
    if resource.kind.is_empty() || resource.kind != "Workflow" {
        resource.kind = "Workflow".into();
    }
    if resource.api_version.is_empty() {
        resource.api_version = "argoproj.io/v1alpha1".into();
    }
    lint(&resource, &library)?;
    let idempotency_key = resource
        .metadata
        .annotations
        .get(IDEMPOTENCY_ANNOTATION)
        .map(|k| format!("{namespace}/{}", k.0));
    let identity = WorkflowIdentity {
        name: name.clone(),
        namespace: namespace.clone(),
        uid,
    };
    let workflow = Workflow::new(
        resource.clone(),
        library.clone(),
        identity.clone(),
        &parameters,
    )
    .map_err(|e| ControlError::Invalid(e.to_string()))?;
    let labels = serde_json::to_value(&resource.metadata.labels).unwrap_or(json!({}));
    if !details.is_object() {
        details = json!({});
    }
    details["parameters"] = json!(
        parameters
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
    );
    details["uid"] = json!(identity.uid);
    if let Some(k) = &idempotency_key {
        details["idempotencyKey"] = json!(k);
    }
    let definition = serde_json::to_value(Definition {
        resource,
        library,
        identity: identity.clone(),
        parameters,
    })
    .map_err(|e| ControlError::Invalid(e.to_string()))?;
    Ok(Prepared {
        workflow,
        new_workflow: store::NewWorkflow {
            uid: identity.uid.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            labels,
            created_at: now,
            definition,
        },
        audit: store::AuditEntry {
            at: now,
            actor,
            action: "workflow.create".into(),
            object: format!("workflows/{namespace}/{name}"),
            source,
            details,
        },
        identity,
        idempotency_key,
        cron_firing,
        generated_name,
    })
}

/// Writes a prepared submission in one transaction, with `lease` = `(holder, expires_at)`.
pub async fn record(
    store: &store::Store,
    p: &Prepared,
    lease: Option<(&str, i64)>,
) -> Result<SubmitOutcome, ControlError> {
    let out = store.submit_workflow(&submission(p, lease)).await?;
    outcome(p, out)
}

/// Records prepared submissions in one transaction (see [`record`]): the outer error means
/// none was recorded; the inner ones are each submission's own outcome.
pub async fn record_many(
    store: &store::Store,
    prepared: &[&Prepared],
    lease: Option<(&str, i64)>,
) -> Result<Vec<Result<SubmitOutcome, ControlError>>, ControlError> {
    let subs: Vec<store::Submission<'_>> = prepared.iter().map(|p| submission(p, lease)).collect();
    let results = store.submit_workflows(&subs).await?;
    Ok(prepared
        .iter()
        .zip(results)
        .map(|(p, r)| outcome(p, r.map_err(ControlError::from)?))
        .collect())
}

fn submission<'a>(p: &'a Prepared, lease: Option<(&'a str, i64)>) -> store::Submission<'a> {
    store::Submission {
        workflow: &p.new_workflow,
        lease,
        idempotency_key: p.idempotency_key.as_deref(),
        cron_firing: p
            .cron_firing
            .as_ref()
            .map(|(ns, n, at)| (ns.as_str(), n.as_str(), *at)),
        audit: &p.audit,
    }
}

fn outcome(p: &Prepared, out: store::Submitted) -> Result<SubmitOutcome, ControlError> {
    Ok(match out {
        store::Submitted::Created => SubmitOutcome::Created {
            name: p.identity.name.clone(),
            uid: p.identity.uid.clone(),
        },
        store::Submitted::Existing { uid, name, .. } => SubmitOutcome::Existing { name, uid },
        store::Submitted::CronFiringTaken => SubmitOutcome::CronFiringTaken,
    })
}

/// Everything `riposte lint` checks, on a resource about to be admitted: spec rules (with
/// the namespace's templates) and the resource-template languages (conditions, jsonPath,
/// jqFilter, flags, manifests). Errors become one `Invalid` naming each problem.
pub fn lint(resource: &WorkflowResource, library: &Library) -> Result<(), ControlError> {
    let v = serde_json::to_value(resource)
        .map_err(|e| ControlError::Invalid(format!("encoding the workflow: {e}")))?;
    lint_value(&v, library)
}

/// Everything `riposte lint` says of a Workflow/WorkflowTemplate/CronWorkflow text: the
/// parse, the spec rules against `library` (plus the text's own templates) and the resource
/// step checks. Also the loaded resources, for callers that go on with them.
pub fn diagnose(
    file: &str,
    text: &str,
    library: &Library,
) -> (Vec<spec::Loaded>, Vec<spec::Diagnostic>) {
    let (loaded, mut diags) = spec::load(file, text);
    let mut library = library.clone();
    for l in &loaded {
        library.add(l);
    }
    diags.extend(spec::lint(&loaded, &library));
    diags.extend(executor::resource_lint::lint(&loaded));
    (loaded, diags)
}

/// [`lint`] of any Argo Workflows object as JSON (a Workflow, a template, a cron workflow, as
/// the API receives them).
pub fn lint_value(v: &Value, library: &Library) -> Result<(), ControlError> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| ControlError::Invalid(format!("encoding the object: {e}")))?;
    let (loaded, diags) = diagnose("request", &text, library);
    let errors: Vec<String> = diags
        .iter()
        .filter(|d| d.severity == spec::Severity::Error)
        .map(|d| d.message.clone())
        .collect();
    if !errors.is_empty() {
        return Err(ControlError::Invalid(errors.join("; ")));
    }
    if loaded.is_empty() {
        return Err(ControlError::Invalid(
            "not an argoproj.io/v1alpha1 Workflow, WorkflowTemplate or CronWorkflow".into(),
        ));
    }
    Ok(())
}

/// Kubernetes object names: DNS subdomain (lowercase alphanumerics, `-`, `.`), ≤ 253.
fn check_name(name: &str) -> Result<(), ControlError> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(ControlError::Invalid(format!(
            "workflow name {name:?} is not valid: use at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"
        )))
    }
}

fn resource_from(v: Value) -> Result<WorkflowResource, ControlError> {
    serde_json::from_value(v).map_err(|e| ControlError::Invalid(format!("workflow: {e}")))
}

/// Labels and annotations of `workflowMetadata`, under the ones already set.
fn merge_meta(r: &mut WorkflowResource, meta: &spec::ObjectMeta) {
    for (k, v) in &meta.labels {
        r.metadata.labels.entry(k.clone()).or_insert(v.clone());
    }
    for (k, v) in &meta.annotations {
        r.metadata.annotations.entry(k.clone()).or_insert(v.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inline(yaml_json: Value) -> Origin {
        Origin::Inline(Box::new(resource_from(yaml_json).expect("resource")))
    }

    fn hello() -> Value {
        json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
               "metadata": {"generateName": "hello-"},
               "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "busybox", "command": ["echo", "hi"]}}]}})
    }

    #[test]
    fn names_labels_annotations_and_key() {
        let mut req = SubmitRequest::new("ns", inline(hello()), "alice", "127.0.0.1");
        req.labels.insert("team".into(), "blue".into());
        req.idempotency_key = Some("falco-123".into());
        let p = prepare(req, Library::default(), "u1".into(), "abcde", 5).expect("prepared");
        assert_eq!(p.identity.name, "hello-abcde");
        assert_eq!(p.idempotency_key.as_deref(), Some("ns/falco-123"));
        assert_eq!(p.new_workflow.labels["team"], "blue");
        assert_eq!(p.audit.action, "workflow.create");
        assert_eq!(p.audit.object, "workflows/ns/hello-abcde");
        assert_eq!(
            p.new_workflow.definition["resource"]["metadata"]["annotations"]
                [IDEMPOTENCY_ANNOTATION],
            "falco-123"
        );
    }

    #[test]
    fn rejects_what_lint_rejects() {
        let cases: &[(&str, Value, &str)] = &[
            (
                "bad jqFilter",
                json!([{"name": "main", "resource": {"action": "get", "manifest": "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"},
                        "outputs": {"parameters": [{"name": "o", "valueFrom": {"jqFilter": ".a | | b"}}]}}]),
                "jq",
            ),
            (
                "bad successCondition",
                json!([{"name": "main", "resource": {"action": "get", "successCondition": "status phase == Running", "manifest": "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"}}]),
                "not a key",
            ),
            (
                "bad flags",
                json!([{"name": "main", "resource": {"action": "delete", "flags": ["--output=json"], "manifest": "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"}}]),
                "--output",
            ),
            (
                "unknown template",
                json!([{"name": "main", "steps": [[{"name": "a", "template": "nope"}]]}]),
                "nope",
            ),
        ];
        for (what, templates, needle) in cases {
            let mut wf = hello();
            wf["spec"]["templates"] = templates.clone();
            let req = SubmitRequest::new("ns", inline(wf), "a", "s");
            let err = match prepare(req, Library::default(), "u".into(), "x", 0) {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{what}: accepted"),
            };
            assert!(err.contains(needle), "{what}: {err}");
        }
    }

    #[test]
    fn bad_names_are_refused() {
        for name in ["Upper", "-x", "a_b", ""] {
            let mut wf = hello();
            wf["metadata"] = json!({"name": name});
            let req = SubmitRequest::new("ns", inline(wf), "a", "s");
            assert!(
                prepare(req, Library::default(), "u".into(), "x", 0).is_err(),
                "{name:?}"
            );
        }
    }

    #[test]
    fn scheduled_cron_runs_carry_time_labels_and_claim() {
        let cron: spec::CronWorkflow = serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "CronWorkflow",
            "metadata": {"name": "nightly"},
            "spec": {"schedule": "0 0 * * *",
                     "workflowMetadata": {"labels": {"from": "meta"}, "annotations": {"a": "b"}},
                     "workflowSpec": hello()["spec"]}
        }))
        .expect("cron");
        let req = SubmitRequest::new(
            "ns",
            Origin::Cron {
                cron: Box::new(cron),
                scheduled_at: Some(86_400_000),
            },
            "system:cron",
            "cron",
        );
        let p = prepare(req, Library::default(), "u".into(), "zzzzz", 0).expect("prepared");
        assert_eq!(p.identity.name, "nightly-zzzzz");
        let meta = &p.new_workflow.definition["resource"]["metadata"];
        assert_eq!(meta["labels"][crate::cron::CRON_LABEL], "nightly");
        assert_eq!(meta["labels"]["from"], "meta");
        assert_eq!(meta["annotations"]["a"], "b");
        assert_eq!(
            meta["annotations"][SCHEDULED_TIME_ANNOTATION],
            "1970-01-02T00:00:00Z"
        );
        assert_eq!(
            p.cron_firing,
            Some(("ns".into(), "nightly".into(), 86_400_000))
        );
    }

    /// Hostile or random API bodies: whatever JSON arrives as a workflow, the submit path
    /// answers with a workflow or an error, never a panic or a hang. (It found a DAG whose
    /// tasks call the DAG: 2^100 nodes under the depth limit alone; the node limit ends it.)
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|n| json!(n)),
                "[a-z{}.= -]{0,12}".prop_map(Value::String),
                prop_oneof![
                    Just("main"),
                    Just("{{inputs.parameters.x}}"),
                    Just("{{= 1 +}}"),
                    Just("busybox"),
                    Just("a.Succeeded || !b")
                ]
                .prop_map(|s| json!(s)),
            ];
            leaf.prop_recursive(5, 64, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    proptest::collection::btree_map(
                        prop_oneof![
                            Just("name".to_string()),
                            Just("template".to_string()),
                            Just("steps".to_string()),
                            Just("dag".to_string()),
                            Just("tasks".to_string()),
                            Just("depends".to_string()),
                            Just("when".to_string()),
                            Just("withItems".to_string()),
                            Just("withSequence".to_string()),
                            Just("container".to_string()),
                            Just("arguments".to_string()),
                            Just("parameters".to_string()),
                            "[a-z]{1,6}",
                        ],
                        inner,
                        0..5,
                    )
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }

        fn word() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => Just("main".to_string()),
                4 => Just("a".to_string()),
                4 => Just("b".to_string()),
                1 => Just("{{inputs.parameters.x}}".to_string()),
                1 => Just("{{steps.a.outputs.result}}".to_string()),
                1 => Just("{{= sprig.add(1, 2) }}".to_string()),
                1 => Just("a.Succeeded || !(b.Failed".to_string()),
                1 => "[a-z{}.()|!&= ]{0,10}",
            ]
        }

        /// Templates shaped like Argo's (steps, dag, container, suspend), filled with words
        /// that are sometimes right and often wrong, and with random JSON where the shape
        /// allows anything.
        fn template() -> impl Strategy<Value = Value> {
            let step = (word(), word(), proptest::option::of(word()), json_value()).prop_map(
                |(name, template, when, items)| {
                    let mut s = json!({"name": name, "template": template});
                    if let Some(w) = when {
                        s["when"] = json!(w);
                    }
                    if items.is_array() {
                        s["withItems"] = items;
                    }
                    s
                },
            );
            let task = (word(), word(), proptest::option::of(word())).prop_map(
                |(name, template, depends)| {
                    let mut t = json!({"name": name, "template": template});
                    if let Some(d) = depends {
                        t["depends"] = json!(d);
                    }
                    t
                },
            );
            prop_oneof![
                3 => (word(), proptest::collection::vec(proptest::collection::vec(step, 1..3), 1..3))
                    .prop_map(|(name, steps)| json!({"name": name, "steps": steps})),
                3 => (word(), proptest::collection::vec(task, 1..4))
                    .prop_map(|(name, tasks)| json!({"name": name, "dag": {"tasks": tasks}})),
                3 => (word(), proptest::collection::vec(word(), 0..3)).prop_map(|(name, args)| {
                    json!({"name": name, "inputs": {"parameters": [{"name": "x", "value": "1"}]},
                           "container": {"image": "busybox", "command": ["echo"], "args": args}})
                }),
                2 => word().prop_map(|name| json!({"name": name, "suspend": {}})),
                1 => json_value(),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1500))]
            #[test]
            fn any_workflow_body_is_admitted_or_refused_cleanly(
                templates in proptest::collection::vec(template(), 1..5),
                entry in prop_oneof![8 => Just(json!("main")), 1 => json_value()],
                args in prop_oneof![8 => Just(json!({})), 1 => json_value()],
            ) {
                let body = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                    "metadata": {"generateName": "fuzz-"},
                    "spec": {"entrypoint": entry, "arguments": args, "templates": templates}});
                if let Ok(resource) = serde_json::from_value::<WorkflowResource>(body) {
                    let req = SubmitRequest::new("ns", Origin::Inline(Box::new(resource)), "a", "s");
                    if let Ok(mut p) = prepare(req, Library::default(), "u".into(), "abcde", 0) {
                        // Admitted: the engine takes its first step without panicking (and
                        // within a node budget small enough for a debug build).
                        p.workflow.set_node_limit(5_000);
                        let _ = p.workflow.step(&[engine::Input::Start { now: 0 }]);
                    }
                }
            }
        }
    }
}
