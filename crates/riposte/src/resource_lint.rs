//! Lint for the parts of resource templates whose languages the executor owns (Argo's
//! label-selector conditions, kubectl JSONPath, jq): checked here so that `riposte lint`
//! and `riposte run` report them with file:line:col like every other problem.

use spec::{Diagnostic, Loaded, Resource, Severity};

pub fn lint(loaded: &[Loaded]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for l in loaded {
        let (templates, base) = match &l.resource {
            Resource::Workflow(_, wf) => (&wf.spec.templates, "spec"),
            Resource::CronWorkflow(c) => (&c.spec.workflow_spec.templates, "spec.workflowSpec"),
        };
        for (i, t) in templates.iter().enumerate() {
            let path = format!("{base}.templates[{i}]");
            let mut check = |field: String, text: &str, result: Result<(), String>| {
                // `{{...}}` is substituted before the step runs; judge it then.
                if text.contains("{{") {
                    return;
                }
                if let Err(message) = result {
                    out.push(l.diagnostic(&field, Severity::Error, message));
                }
            };
            if let Some(r) = &t.resource {
                for (name, cond) in [
                    ("successCondition", &r.success_condition),
                    ("failureCondition", &r.failure_condition),
                ] {
                    if let Some(c) = cond {
                        let result = executor::condition::parse(c)
                            .map(drop)
                            .map_err(|e| e.to_string());
                        check(format!("{path}.resource.{name}"), c, result);
                    }
                }
            }
            for (j, p) in t.outputs.parameters.iter().enumerate() {
                let Some(v) = &p.value_from else { continue };
                let field = format!("{path}.outputs.parameters[{j}].valueFrom");
                if let Some(jp) = &v.json_path {
                    let result = executor::kubectl_jsonpath::check(jp).map_err(|e| e.to_string());
                    check(format!("{field}.jsonPath"), jp, result);
                }
                if let Some(jq) = &v.jq_filter {
                    let result = executor::jq::check(jq).map_err(|e| e.to_string());
                    check(format!("{field}.jqFilter"), jq, result);
                }
            }
        }
    }
    out
}
