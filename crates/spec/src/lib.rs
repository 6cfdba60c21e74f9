//! Argo-compatible resources: parsing from YAML with positions, and lint.
//!
//! # Brief overview
//! - [`load`] turns a file's text into [`Loaded`] resources (multi-document files included),
//!   reporting YAML and type errors as [`Diagnostic`]s with `file:line:col`.
//! - [`lint`] checks loaded resources against Argo's rules and warns about every field Riposte
//!   does not implement.
//! - [`Library`] holds WorkflowTemplates and ClusterWorkflowTemplates for `templateRef` and
//!   `workflowTemplateRef`; [`Library::resolve_workflow`] produces the runnable workflow.
//!
//! This crate does no IO: callers pass text in.

pub mod binding;
pub mod event_source;
pub mod events;
pub mod sensor;
pub mod vocabulary;
pub use events::{EventsKind, LoadedEvents, lint_events, load_events};
pub use vocabulary::{ConcurrencyPolicy, MergeStrategy, ResourceAction, RetryPolicy};
pub mod lint;
pub mod types;
pub mod yaml;
pub mod yaml_out;

use std::collections::BTreeMap;
use std::fmt;

pub use lint::lint;
pub use types::*;
pub use yaml::{Document, Position};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

/// One problem found in a file, printed as `file:line:col: error: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub position: Position,
    pub severity: Severity,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.position.line, self.position.col, sev, self.message
        )
    }
}

/// A parsed resource.
#[derive(Debug, Clone)]
pub enum Resource {
    /// Workflow, WorkflowTemplate or ClusterWorkflowTemplate (see `kind`).
    Workflow(Kind, Box<WorkflowResource>),
    CronWorkflow(Box<CronWorkflow>),
}

/// A resource with the document it came from, so later checks can point at lines.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: String,
    pub document: Document,
    pub resource: Resource,
}

impl Loaded {
    pub fn diagnostic(
        &self,
        path: &str,
        severity: Severity,
        message: impl Into<String>,
    ) -> Diagnostic {
        Diagnostic {
            file: self.file.clone(),
            position: self.document.position(path),
            severity,
            message: message.into(),
        }
    }

    pub fn kind(&self) -> Kind {
        match &self.resource {
            Resource::Workflow(k, _) => *k,
            Resource::CronWorkflow(_) => Kind::CronWorkflow,
        }
    }

    /// The resource's name, or its `generateName`.
    pub fn name(&self) -> String {
        let meta = match &self.resource {
            Resource::Workflow(_, w) => &w.metadata,
            Resource::CronWorkflow(c) => &c.metadata,
        };
        meta.name
            .clone()
            .or_else(|| meta.generate_name.clone())
            .unwrap_or_default()
    }
}

/// Parses every document in `text`. Documents of other kinds (ConfigMaps, Sensors, ...) are
/// skipped; documents that fail to parse produce error diagnostics.
pub fn load(file: &str, text: &str) -> (Vec<Loaded>, Vec<Diagnostic>) {
    let docs = match yaml::load_documents(text) {
        Ok(d) => d,
        Err(e) => {
            return (
                Vec::new(),
                vec![Diagnostic {
                    file: file.into(),
                    position: e.position,
                    severity: Severity::Error,
                    message: format!("invalid YAML: {}", e.message),
                }],
            );
        }
    };
    let mut loaded = Vec::new();
    let mut diags = Vec::new();
    for document in docs {
        for (position, message) in &document.warnings {
            diags.push(Diagnostic {
                file: file.into(),
                position: *position,
                severity: Severity::Warning,
                message: message.clone(),
            });
        }
        let err = |path: &str, msg: String| Diagnostic {
            file: file.into(),
            position: document.position(path),
            severity: Severity::Error,
            message: msg,
        };
        let Some(obj) = document.value.as_object() else {
            diags.push(err(
                "",
                format!(
                    "expected a Kubernetes object (a mapping), found {}",
                    kind_of(&document.value)
                ),
            ));
            continue;
        };
        let api = obj.get("apiVersion").and_then(|v| v.as_str()).unwrap_or("");
        let kind_str = obj.get("kind").and_then(|v| v.as_str()).unwrap_or("");
        if !api.starts_with("argoproj.io/") {
            // Not ours (a ConfigMap next to a workflow, say); nothing to check.
            continue;
        }
        if api != "argoproj.io/v1alpha1" {
            diags.push(err(
                "apiVersion",
                format!("unsupported apiVersion {api:?}; expected \"argoproj.io/v1alpha1\""),
            ));
            continue;
        }
        let Some(kind) = Kind::parse(kind_str) else {
            // Argo Events kinds (Sensor, EventSource) are handled elsewhere.
            if !matches!(
                kind_str,
                "Sensor" | "EventSource" | "EventBus" | "WorkflowEventBinding"
            ) {
                diags.push(err("kind", format!("unknown kind {kind_str:?}; expected Workflow, WorkflowTemplate, ClusterWorkflowTemplate or CronWorkflow")));
            }
            continue;
        };
        let parsed = match kind {
            Kind::CronWorkflow => from_value::<CronWorkflow>(&document.value)
                .map(|c| Resource::CronWorkflow(Box::new(c))),
            k => from_value::<WorkflowResource>(&document.value)
                .map(|w| Resource::Workflow(k, Box::new(w))),
        };
        match parsed {
            Ok(resource) => loaded.push(Loaded {
                file: file.into(),
                document,
                resource,
            }),
            Err((path, msg)) => diags.push(err(&path, format!("{path}: {msg}"))),
        }
    }
    (loaded, diags)
}

fn from_value<T: serde::de::DeserializeOwned>(
    v: &serde_json::Value,
) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

/// WorkflowTemplates and ClusterWorkflowTemplates available to `templateRef`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Library {
    pub templates: BTreeMap<String, WorkflowResource>,
    pub cluster_templates: BTreeMap<String, WorkflowResource>,
}

/// Why a workflow cannot be prepared for running.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    #[error("{kind} {name:?} not found; load it alongside (riposte run --templates DIR)")]
    TemplateNotFound { kind: &'static str, name: String },
    #[error("{0}")]
    Invalid(String),
}

impl Library {
    pub fn add(&mut self, loaded: &Loaded) {
        if let Resource::Workflow(kind, wf) = &loaded.resource {
            let name = wf.metadata.name.clone().unwrap_or_default();
            match kind {
                Kind::WorkflowTemplate => {
                    self.templates.insert(name, (**wf).clone());
                }
                Kind::ClusterWorkflowTemplate => {
                    self.cluster_templates.insert(name, (**wf).clone());
                }
                Kind::Workflow | Kind::CronWorkflow => {}
            }
        }
    }

    pub fn get(&self, name: &str, cluster_scope: bool) -> Result<&WorkflowResource, ResolveError> {
        let (map, kind) = if cluster_scope {
            (&self.cluster_templates, "ClusterWorkflowTemplate")
        } else {
            (&self.templates, "WorkflowTemplate")
        };
        map.get(name).ok_or_else(|| ResolveError::TemplateNotFound {
            kind,
            name: name.to_string(),
        })
    }

    /// The template `template` of the WorkflowTemplate a `templateRef` names.
    pub fn template(&self, r: &TemplateRef) -> Result<&Template, ResolveError> {
        let wt = self.get(&r.name, r.cluster_scope)?;
        wt.spec
            .templates
            .iter()
            .find(|t| t.name == r.template)
            .ok_or_else(|| {
                ResolveError::Invalid(format!(
                    "template {:?} not found in {:?}",
                    r.template, r.name
                ))
            })
    }

    /// Applies `workflowTemplateRef` the way Argo does: the referenced spec is the base, and the
    /// workflow's own fields (arguments by name, entrypoint, onExit, ...) override it.
    pub fn resolve_workflow(
        &self,
        wf: &WorkflowResource,
    ) -> Result<WorkflowResource, ResolveError> {
        let Some(r) = &wf.spec.workflow_template_ref else {
            return Ok(wf.clone());
        };
        let base = self.get(&r.name, r.cluster_scope)?;
        let mut spec = base.spec.clone();
        let own = &wf.spec;
        if own.entrypoint.is_some() {
            spec.entrypoint = own.entrypoint.clone();
        }
        for p in &own.arguments.parameters {
            match spec
                .arguments
                .parameters
                .iter_mut()
                .find(|q| q.name == p.name)
            {
                Some(q) => *q = p.clone(),
                None => spec.arguments.parameters.push(p.clone()),
            }
        }
        spec.templates.extend(own.templates.iter().cloned());
        macro_rules! over {
            ($($f:ident),*) => { $( if own.$f.is_some() { spec.$f = own.$f.clone(); } )* };
        }
        over!(
            on_exit,
            parallelism,
            active_deadline_seconds,
            retry_strategy,
            service_account_name,
            shutdown,
            suspend
        );
        for (k, v) in &own.hooks {
            spec.hooks.insert(k.clone(), v.clone());
        }
        spec.workflow_template_ref = None;
        let mut out = wf.clone();
        out.spec = spec;
        Ok(out)
    }
}
