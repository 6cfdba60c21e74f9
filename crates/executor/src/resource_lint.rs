//! Lint for the parts of resource templates the executor owns (action, mergeStrategy, the
//! kubectl `flags` subset, manifest, Argo's label-selector conditions, kubectl JSONPath, jq):
//! checked here so that `riposte lint` and `riposte run` report them with file:line:col like
//! every other problem, before anything reaches a cluster.

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
            if let Some(r) = &t.resource {
                structure(l, &path, r, &mut out);
            }
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
                        let result = crate::condition::parse(c)
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
                    let result = crate::kubectl_jsonpath::check(jp).map_err(|e| e.to_string());
                    check(format!("{field}.jsonPath"), jp, result);
                }
                if let Some(jq) = &v.jq_filter {
                    let result = crate::jq::check(jq).map_err(|e| e.to_string());
                    check(format!("{field}.jqFilter"), jq, result);
                }
            }
        }
    }
    out
}

/// The resource template's shape: action, mergeStrategy, flags, manifest.
fn structure(l: &Loaded, path: &str, r: &spec::ResourceTemplate, out: &mut Vec<Diagnostic>) {
    let rpath = format!("{path}.resource");
    let action = spec::ResourceAction::parse(&r.action);
    if action.is_none() {
        out.push(l.diagnostic(
            &format!("{rpath}.action"),
            Severity::Error,
            format!(
                "action {:?} is not one of {}",
                r.action,
                spec::ResourceAction::ALL
            ),
        ));
    }
    let strategy = spec::MergeStrategy::parse(r.merge_strategy.as_deref());
    if let Some(m) = &r.merge_strategy
        && strategy.is_none()
    {
        out.push(l.diagnostic(
            &format!("{rpath}.mergeStrategy"),
            Severity::Error,
            format!(
                "mergeStrategy {m:?} is not one of {}",
                spec::MergeStrategy::ALL
            ),
        ));
    }
    if r.flags.iter().all(|f| !f.contains("{{")) {
        match crate::flags::Flags::parse(&r.flags) {
            Ok(f) => {
                if action == Some(spec::ResourceAction::Patch)
                    && strategy == Some(spec::MergeStrategy::Json)
                    && f.target.len() != 2
                {
                    out.push(l.diagnostic(
                            &format!("{rpath}.flags"),
                            Severity::Error,
                            "a json patch's manifest is the list of operations, so name the target in flags: [TYPE, NAME]".to_string(),
                        ));
                }
            }
            Err(message) => {
                out.push(l.diagnostic(&format!("{rpath}.flags"), Severity::Error, message))
            }
        }
    }
    if r.manifest.is_none() && r.manifest_from.is_none() && r.flags.is_empty() {
        out.push(l.diagnostic(
            &rpath,
            Severity::Error,
            "a resource template needs a manifest (or flags naming TYPE NAME)".to_string(),
        ));
    }
    if r.manifest_from.is_some() {
        out.push(l.diagnostic(
                &format!("{rpath}.manifestFrom"),
                Severity::Warning,
                "field manifestFrom is not implemented by Riposte (artifacts); the step will fail: put the manifest inline".to_string(),
            ));
    }
    if let Some(m) = &r.manifest
        && !m.contains("{{")
        && let Err(e) = spec::yaml::load_documents(m)
    {
        // Point at the offending line of the file, not the start of the block.
        let mut d = l.diagnostic(
            &format!("{rpath}.manifest"),
            Severity::Error,
            format!("the manifest is not valid YAML: {}", e.message),
        );
        d.position.line += e.position.line.saturating_sub(1);
        d.position.col += e.position.col.saturating_sub(1);
        out.push(d);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn resource_templates_are_checked_with_positions() {
        let text = "apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata: {name: r}
spec:
  entrypoint: a
  templates:
  - name: a
    resource:
      action: ptach
      mergeStrategy: json
      flags: [--output=json]
      manifest: |
        - op: add
          path: [unclosed
";
        let (loaded, diags) = spec::load("r.yaml", text);
        assert!(diags.is_empty(), "{diags:?}");
        let found: Vec<String> = super::lint(&loaded)
            .iter()
            .map(|d| format!("{}:{} {}", d.position.line, d.position.col, d.message))
            .collect();
        let has = |line: usize, what: &str| {
            found
                .iter()
                .any(|f| f.starts_with(&format!("{line}:")) && f.contains(what))
        };
        assert!(has(9, "action \"ptach\""), "{found:#?}");
        assert!(has(11, "flag --output is not supported"), "{found:#?}");
        assert!(has(14, "not valid YAML"), "{found:#?}");
    }
}
