//! Argo Workflows' `WorkflowEventBinding`, typed and compiled once: the `spec.event.selector`
//! and each parameter's `valueFrom.event` parsed as expr-lang expressions over `payload`,
//! `metadata` and `discriminator`. Like sensors ([`crate::sensor`]), compilation is the
//! lint: the API refuses a binding with its problems, each at its path.

use serde::Deserialize;
use serde_json::Value;

use crate::sensor::{CompileError, Cx, Problem, Scalar, compile_document, required};

/// A compiled binding.
#[derive(Debug, Clone)]
pub struct CompiledBinding {
    pub name: String,
    pub selector_source: String,
    pub selector: expr::Expr,
    /// `submit.workflowTemplateRef`.
    pub template: String,
    pub cluster_scope: bool,
    pub parameters: Vec<BindingParameter>,
}

#[derive(Debug, Clone)]
pub struct BindingParameter {
    pub name: String,
    pub value: BindingValue,
}

#[derive(Debug, Clone)]
pub enum BindingValue {
    /// `value`: the same for every event.
    Fixed(String),
    /// `valueFrom.event`: evaluated over the event.
    Event { source: String, expr: expr::Expr },
}

#[derive(Deserialize)]
struct BindingDoc {
    #[serde(default)]
    metadata: Metadata,
    spec: Option<BindingSpecDoc>,
    /// `apiVersion`, `kind`, `status`: not the binding's behaviour.
    #[serde(flatten)]
    _rest: serde_json::Map<String, Value>,
}

#[derive(Deserialize, Default)]
struct Metadata {
    name: Option<String>,
    #[serde(flatten)]
    _rest: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct BindingSpecDoc {
    event: Option<EventDoc>,
    submit: Option<SubmitDoc>,
}

#[derive(Deserialize)]
struct EventDoc {
    selector: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubmitDoc {
    workflow_template_ref: Option<TemplateRefDoc>,
    arguments: Option<ArgumentsDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TemplateRefDoc {
    name: Option<String>,
    cluster_scope: Option<bool>,
}

#[derive(Deserialize)]
struct ArgumentsDoc {
    #[serde(default)]
    parameters: Vec<ParameterDoc>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ParameterDoc {
    name: Option<String>,
    value: Option<Scalar>,
    value_from: Option<ValueFromDoc>,
}

#[derive(Deserialize)]
struct ValueFromDoc {
    event: Option<String>,
}

/// What compiling a binding gave: the binding when there was no error, and every problem.
#[derive(Debug, Clone)]
pub struct Compiled {
    pub binding: Option<CompiledBinding>,
    pub problems: Vec<Problem>,
}

fn expression(cx: &mut Cx, source: String, path: &str, what: &str) -> Option<expr::Expr> {
    match expr::parse(&source, expr::Dialect::Expr) {
        Ok(x) => Some(x),
        Err(e) => {
            cx.error(path, format!("{what} {:?}: {e}", source.trim()));
            None
        }
    }
}

/// Compiles a WorkflowEventBinding document.
pub fn compile(doc: &Value) -> Compiled {
    let (binding, problems) = compile_document(doc, binding);
    Compiled {
        binding: binding.flatten(),
        problems,
    }
}

/// [`compile`], with the errors as one error.
pub fn compile_binding(doc: &Value) -> Result<CompiledBinding, CompileError> {
    let c = compile(doc);
    c.binding
        .ok_or_else(|| CompileError::of("WorkflowEventBinding", doc, c.problems))
}

fn binding(cx: &mut Cx, d: BindingDoc) -> Option<CompiledBinding> {
    let name = required(cx, d.metadata.name, "metadata", "name");
    let Some(spec) = d.spec else {
        cx.error("spec", "spec (event.selector and submit) is required");
        return None;
    };
    let selector = match spec
        .event
        .and_then(|e| e.selector)
        .filter(|s| !s.trim().is_empty())
    {
        Some(src) => {
            expression(cx, src.clone(), "spec.event.selector", "selector").map(|x| (src, x))
        }
        None => {
            cx.error(
                "spec.event",
                "spec.event.selector (an expression over payload, metadata and discriminator) is required",
            );
            None
        }
    };
    let Some(submit) = spec.submit else {
        cx.error(
            "spec",
            "spec.submit (workflowTemplateRef and arguments) is required",
        );
        return None;
    };
    let template_ref = submit.workflow_template_ref;
    let template = required(
        cx,
        template_ref.as_ref().and_then(|t| t.name.clone()),
        "spec.submit.workflowTemplateRef",
        "name",
    );
    let mut parameters = Vec::new();
    for (i, p) in submit
        .arguments
        .map(|a| a.parameters)
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        let path = format!("spec.submit.arguments.parameters[{i}]");
        let name = required(cx, p.name, &path, "name");
        let value = match (p.value_from.and_then(|v| v.event), p.value) {
            (Some(src), _) => expression(
                cx,
                src.clone(),
                &format!("{path}.valueFrom.event"),
                "valueFrom.event",
            )
            .map(|expr| BindingValue::Event { source: src, expr }),
            (None, Some(v)) => Some(BindingValue::Fixed(v.text())),
            (None, None) => {
                cx.error(
                    &path,
                    format!("{path} needs valueFrom.event (an expression) or a value"),
                );
                None
            }
        };
        if let Some(value) = value {
            parameters.push(BindingParameter { name, value });
        }
    }
    let (selector_source, selector) = selector?;
    Some(CompiledBinding {
        name,
        selector_source,
        selector,
        template,
        cluster_scope: template_ref.and_then(|t| t.cluster_scope).unwrap_or(false),
        parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Severity;
    use serde_json::json;

    /// Argo's examples compile (github-path-filter's selector uses expr-lang's `let`,
    /// `reduce`, `#acc` and comments) and select what they should; each mistake is an error
    /// at its path.
    #[test]
    fn argo_examples_compile_and_mistakes_name_their_paths() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/conformance/argo-workflows/examples/workflow-event-binding");
        let mut compiled = std::collections::BTreeMap::new();
        for e in std::fs::read_dir(&root).expect("the corpus is checked in") {
            let path = e.expect("entry").path();
            let text = std::fs::read_to_string(&path).expect("readable");
            for doc in crate::yaml::load_documents(&text).expect("YAML") {
                if doc.value["kind"] == "WorkflowEventBinding" {
                    let b = compile_binding(&doc.value)
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    compiled.insert(b.name.clone(), b);
                }
            }
        }
        assert_eq!(compiled.len(), 2);
        let github = &compiled["github-path-filter"];
        let push = |file: &str| {
            json!({"discriminator": "github-path-filter", "metadata": {"x-github-event": ["push"]},
                   "payload": {"commits": [{"added": [file], "removed": [], "modified": ["README.md"]}]}})
        };
        let selects = |env: &Value| expr::eval(&github.selector, env).ok() == Some(json!(true));
        assert!(selects(&push("subpath/A/main.go")));
        assert!(!selects(&push("other/main.go")));
        let BindingValue::Event { expr: files, .. } = &github.parameters[0].value else {
            panic!("files comes from the event")
        };
        assert_eq!(
            expr::eval(files, &push("subpath/B/x")).ok(),
            Some(json!(["subpath/B/x", "README.md"]))
        );

        let c = compile(&json!({
            "metadata": {"name": "b"},
            "spec": {"event": {"selector": "payload.x =="},
                     "submit": {"workflowTemplateRef": {"name": "t"}, "colour": 1,
                                "arguments": {"parameters": [{"name": "p"}, {"name": "q", "valueFrom": {"event": "payload."}}]}}},
        }));
        assert!(c.binding.is_none());
        let at: Vec<(&str, Severity)> = c
            .problems
            .iter()
            .map(|p| (p.path.as_str(), p.severity))
            .collect();
        assert_eq!(
            at,
            vec![
                ("spec.submit.colour", Severity::Warning),
                ("spec.event.selector", Severity::Error),
                ("spec.submit.arguments.parameters[0]", Severity::Error),
                (
                    "spec.submit.arguments.parameters[1].valueFrom.event",
                    Severity::Error
                ),
            ],
            "{:#?}",
            c.problems
        );
    }
}
