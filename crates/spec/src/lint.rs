//! Lint: every problem Argo would reject, plus a warning for each field Riposte ignores.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

use crate::types::*;
use crate::{Diagnostic, Library, Loaded, Resource, Severity};

/// Fields Riposte implements, per object shape. Anything else gets a warning naming the field.
const WORKFLOW_SPEC: &[&str] = &[
    "entrypoint",
    "arguments",
    "templates",
    "onExit",
    "hooks",
    "parallelism",
    "activeDeadlineSeconds",
    "workflowTemplateRef",
    "retryStrategy",
    "serviceAccountName",
    "nodeSelector",
    "shutdown",
    "suspend",
];
const TEMPLATE: &[&str] = &[
    "name",
    "inputs",
    "outputs",
    "container",
    "script",
    "steps",
    "dag",
    "suspend",
    "resource",
    "http",
    "retryStrategy",
    "activeDeadlineSeconds",
    "timeout",
    "parallelism",
    "failFast",
    "serviceAccountName",
    "nodeSelector",
];
const STEP: &[&str] = &[
    "name",
    "template",
    "templateRef",
    "inline",
    "arguments",
    "when",
    "withItems",
    "withParam",
    "withSequence",
    "continueOn",
    "onExit",
    "hooks",
];
/// The CronWorkflow fields the scheduler honours; the others (`startingDeadlineSeconds`,
/// history limits, `when`, `stopStrategy`) are warned about.
const CRON_SPEC: &[&str] = &[
    "schedule",
    "schedules",
    "timezone",
    "concurrencyPolicy",
    "suspend",
    "workflowSpec",
    "workflowMetadata",
];
const TASK_EXTRA: &[&str] = &["dependencies", "depends"];
const CONTAINER: &[&str] = &["image", "command", "args", "env", "workingDir", "name"];
const SCRIPT_EXTRA: &[&str] = &["source"];
const METADATA: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "uid",
];
const PARAMETER: &[&str] = &[
    "name",
    "value",
    "default",
    "enum",
    "description",
    "valueFrom",
    "globalName",
];
const VALUE_FROM: &[&str] = &[
    "path",
    "default",
    "expression",
    "parameter",
    "supplied",
    "jsonPath",
    "jqFilter",
];
const RETRY: &[&str] = &["limit", "retryPolicy", "backoff", "expression"];

struct Ctx<'a> {
    loaded: &'a Loaded,
    library: &'a Library,
    out: Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn error(&mut self, path: &str, msg: impl Into<String>) {
        let d = self.loaded.diagnostic(path, Severity::Error, msg);
        self.out.push(d);
    }
    fn warn(&mut self, path: &str, msg: impl Into<String>) {
        let d = self.loaded.diagnostic(path, Severity::Warning, msg);
        self.out.push(d);
    }

    /// Warns about keys of the raw object at `path` that are not in `known`.
    fn unimplemented(&mut self, path: &str, known: &[&[&str]]) {
        self.unimplemented_on_host(path, known, &|_| false);
    }

    /// Like `unimplemented`, but keys for which `on_kubernetes` holds are passed to the step's
    /// pod by the Kubernetes executor, so the warning says the host executor ignores them.
    fn unimplemented_on_host(
        &mut self,
        path: &str,
        known: &[&[&str]],
        on_kubernetes: &dyn Fn(&str) -> bool,
    ) {
        let Some(Value::Object(map)) = lookup(&self.loaded.document.value, path) else {
            return;
        };
        let keys: Vec<String> = map.keys().cloned().collect();
        for k in keys {
            if !known.iter().any(|set| set.contains(&k.as_str())) {
                let p = join(path, &k);
                let msg = if on_kubernetes(&k) {
                    format!(
                        "field `{p}` is ignored by the host executor; `--executor kubernetes` passes it to the step's pod"
                    )
                } else {
                    format!("field `{p}` is not implemented by Riposte and is ignored")
                };
                self.warn(&p, msg);
            }
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Finds the raw value at a path like `spec.templates[1].dag`.
fn lookup<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    let mut cur = v;
    for part in path.split('.').filter(|p| !p.is_empty()) {
        let (key, idx) = match part.find('[') {
            Some(i) => (&part[..i], Some(&part[i..])),
            None => (part, None),
        };
        if !key.is_empty() {
            cur = cur.get(key)?;
        }
        if let Some(idx) = idx {
            for n in idx.split(']').filter(|s| !s.is_empty()) {
                cur = cur.get(n.trim_start_matches('[').parse::<usize>().ok()?)?;
            }
        }
    }
    Some(cur)
}

/// Lints every loaded resource. `library` resolves `templateRef`s (it usually holds the
/// WorkflowTemplates among `loaded` plus any given with `--templates`).
pub fn lint(loaded: &[Loaded], library: &Library) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for l in loaded {
        let mut cx = Ctx {
            loaded: l,
            library,
            out: Vec::new(),
        };
        cx.unimplemented("metadata", &[METADATA]);
        match &l.resource {
            Resource::Workflow(kind, wf) => lint_workflow(&mut cx, *kind, &wf.spec, "spec"),
            Resource::CronWorkflow(c) => {
                if c.spec.schedule.is_none() && c.spec.schedules.is_empty() {
                    cx.error("spec", "CronWorkflow needs `schedule` or `schedules`");
                }
                cx.unimplemented("spec", &[CRON_SPEC]);
                lint_workflow(
                    &mut cx,
                    Kind::CronWorkflow,
                    &c.spec.workflow_spec,
                    "spec.workflowSpec",
                );
            }
        }
        out.extend(cx.out);
    }
    out.sort_by(|a, b| (&a.file, a.position, a.severity).cmp(&(&b.file, b.position, b.severity)));
    out.dedup();
    out
}

fn lint_workflow(cx: &mut Ctx, kind: Kind, spec: &WorkflowSpec, path: &str) {
    // Pod settings every step's pod inherits on Kubernetes (engine: with_pod_defaults).
    cx.unimplemented_on_host(path, &[WORKFLOW_SPEC], &|k| {
        matches!(
            k,
            "volumes"
                | "tolerations"
                | "affinity"
                | "securityContext"
                | "priorityClassName"
                | "imagePullSecrets"
        )
    });
    let names: HashMap<&str, usize> = spec
        .templates
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut seen = HashSet::new();
    for (i, t) in spec.templates.iter().enumerate() {
        if !seen.insert(t.name.as_str()) {
            cx.error(
                &format!("{path}.templates[{i}].name"),
                format!("duplicate template name {:?}", t.name),
            );
        }
    }
    // With a workflowTemplateRef, templates and entrypoint may come from the referenced template.
    let referenced = match &spec.workflow_template_ref {
        Some(r) => match cx.library.get(&r.name, r.cluster_scope) {
            Ok(base) => Some(base.spec.clone()),
            Err(e) => {
                cx.error(&format!("{path}.workflowTemplateRef"), e.to_string());
                None
            }
        },
        None => None,
    };
    let has_template = |n: &str| {
        names.contains_key(n)
            || referenced
                .as_ref()
                .is_some_and(|s| s.templates.iter().any(|t| t.name == n))
    };
    match &spec.entrypoint {
        Some(e) if !has_template(e) && !e.contains("{{") => {
            cx.error(
                &format!("{path}.entrypoint"),
                format!("entrypoint {e:?} is not a template of this workflow"),
            );
        }
        None if kind == Kind::Workflow || kind == Kind::CronWorkflow => {
            let base_has = referenced.as_ref().is_some_and(|s| s.entrypoint.is_some());
            if !base_has && spec.workflow_template_ref.is_none() {
                cx.error(
                    path,
                    "missing `entrypoint`: name the template to start with (spec.entrypoint)",
                );
            }
        }
        _ => {}
    }
    if let Some(e) = &spec.on_exit
        && !has_template(e)
    {
        cx.error(
            &format!("{path}.onExit"),
            format!("onExit template {e:?} not found"),
        );
    }
    for (name, hook) in &spec.hooks {
        check_invocation(
            cx,
            &format!("{path}.hooks.{name}"),
            hook.template.as_deref(),
            hook.template_ref.as_ref(),
            None,
            &has_template,
        );
        if let Some(e) = &hook.expression {
            check_expr(cx, &format!("{path}.hooks.{name}.expression"), e);
        }
    }
    let global: BTreeSet<&str> = spec
        .arguments
        .parameters
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    for (i, p) in spec.arguments.parameters.iter().enumerate() {
        cx.unimplemented(&format!("{path}.arguments.parameters[{i}]"), &[PARAMETER]);
        if p.value.is_none()
            && p.value_from.is_none()
            && p.default.is_none()
            && kind == Kind::Workflow
            && p.r#enum.is_empty()
        {
            cx.warn(
                &format!("{path}.arguments.parameters[{i}]"),
                format!(
                    "workflow parameter {:?} has no value; supply it with -p {}=VALUE",
                    p.name, p.name
                ),
            );
        }
    }
    if let Some(rs) = &spec.retry_strategy {
        lint_retry(cx, &format!("{path}.retryStrategy"), rs);
    }
    for (i, t) in spec.templates.iter().enumerate() {
        lint_template(
            cx,
            t,
            &format!("{path}.templates[{i}]"),
            &has_template,
            &global,
        );
    }
}

fn lint_retry(cx: &mut Ctx, path: &str, rs: &RetryStrategy) {
    cx.unimplemented(path, &[RETRY]);
    if let Some(p) = &rs.retry_policy
        && crate::RetryPolicy::parse(p).is_none()
    {
        cx.error(
            &format!("{path}.retryPolicy"),
            format!(
                "unknown retryPolicy {p:?}; expected {}",
                crate::RetryPolicy::ALL
            ),
        );
    }
    if let Some(l) = &rs.limit
        && !l.0.contains("{{")
        && l.0.parse::<i64>().is_err()
    {
        cx.error(
            &format!("{path}.limit"),
            format!("retry limit {:?} is not an integer", l.0),
        );
    }
    if let Some(e) = &rs.expression {
        check_expr(cx, &format!("{path}.expression"), &mask_tags(e));
    }
}

fn lint_template(
    cx: &mut Ctx,
    t: &Template,
    path: &str,
    has_template: &dyn Fn(&str) -> bool,
    global: &BTreeSet<&str>,
) {
    // The pod fields the Kubernetes executor copies into a step's Job (executor::job).
    let pod_field = |k: &str| {
        (t.container.is_some() || t.script.is_some())
            && matches!(
                k,
                "volumes"
                    | "tolerations"
                    | "affinity"
                    | "securityContext"
                    | "priorityClassName"
                    | "runtimeClassName"
                    | "imagePullSecrets"
                    | "metadata"
            )
    };
    cx.unimplemented_on_host(path, &[TEMPLATE], &pod_field);
    if t.name.is_empty() && !path.ends_with(".inline") {
        cx.error(path, "template has no `name`");
    }
    let types = t.types();
    match types.as_slice() {
        [] => cx.error(path, format!("template {:?} has no body: expected one of container, script, steps, dag, suspend, resource, http", t.name)),
        [TemplateType::Unsupported(kind)] => cx.warn(&join(path, kind), format!("template type `{kind}` is not implemented by Riposte; running it fails")),
        [_] => {}
        many => cx.error(path, format!("template {:?} has {} bodies ({many:?}); a template must have exactly one", t.name, many.len())),
    }
    let inputs: BTreeSet<&str> = t
        .inputs
        .parameters
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    for (i, _) in t.inputs.parameters.iter().enumerate() {
        cx.unimplemented(&format!("{path}.inputs.parameters[{i}]"), &[PARAMETER]);
    }
    if !t.inputs.artifacts.is_empty() {
        cx.warn(
            &format!("{path}.inputs.artifacts"),
            "field `inputs.artifacts` is not implemented by Riposte and is ignored",
        );
    }
    if !t.outputs.artifacts.is_empty() {
        cx.warn(
            &format!("{path}.outputs.artifacts"),
            "field `outputs.artifacts` is not implemented by Riposte and is ignored",
        );
    }
    for (i, p) in t.outputs.parameters.iter().enumerate() {
        let pp = format!("{path}.outputs.parameters[{i}]");
        cx.unimplemented(&pp, &[PARAMETER]);
        cx.unimplemented(&format!("{pp}.valueFrom"), &[VALUE_FROM]);
        if let Some(vf) = &p.value_from
            && let Some(e) = &vf.expression
        {
            check_expr(cx, &format!("{pp}.valueFrom.expression"), &mask_tags(e));
        }
    }
    if let Some(c) = &t.container {
        // Every other container field is copied into the Job's container verbatim.
        cx.unimplemented_on_host(&format!("{path}.container"), &[CONTAINER], &|_| true);
        if c.image.is_empty() {
            cx.error(&format!("{path}.container"), "container has no `image`");
        }
    }
    if let Some(s) = &t.script {
        cx.unimplemented_on_host(
            &format!("{path}.script"),
            &[CONTAINER, SCRIPT_EXTRA],
            &|_| true,
        );
        if s.container.image.is_empty() {
            cx.error(&format!("{path}.script"), "script has no `image`");
        }
    }
    if let Some(rs) = &t.retry_strategy {
        lint_retry(cx, &format!("{path}.retryStrategy"), rs);
    }
    if let Some(to) = &t.timeout
        && !to.contains("{{")
        && expr::time::parse_duration_millis(to).is_none()
    {
        cx.error(
            &format!("{path}.timeout"),
            format!("timeout {to:?} is not a duration like \"30s\" or \"5m\""),
        );
    }
    if let Some(r) = &t.resource
        && !matches!(
            r.action.as_str(),
            "get" | "create" | "apply" | "replace" | "patch" | "delete"
        )
    {
        cx.error(&format!("{path}.resource.action"), format!("unknown resource action {:?}; expected get, create, apply, replace, patch or delete", r.action));
    }
    if let Some(h) = &t.http
        && let Some(c) = &h.success_condition
    {
        check_expr(cx, &format!("{path}.http.successCondition"), &mask_tags(c));
    }
    // `{{inputs.parameters.x}}` must name a declared input.
    let raw = lookup(&cx.loaded.document.value, path)
        .cloned()
        .unwrap_or(Value::Null);
    let mut strings = Vec::new();
    collect_strings(&raw, path, &mut strings);
    for (p, s) in &strings {
        // Nested templates' own inputs are checked when we lint them; inline templates have
        // their own inputs, so skip strings inside `inline`.
        if p.contains(".inline.") {
            continue;
        }
        for seg in expr::segments(s) {
            match seg {
                expr::Segment::Tag(tag) => {
                    if let Some(name) = tag.strip_prefix("inputs.parameters.")
                        && !inputs.contains(name)
                    {
                        cx.error(p, format!("{{{{{tag}}}}} refers to an undefined input parameter {name:?} of template {:?}", t.name));
                    }
                    if let Some(name) = tag.strip_prefix("workflow.parameters.")
                        && !global.contains(name)
                        && !global.is_empty()
                    {
                        cx.warn(p, format!("{{{{{tag}}}}} refers to workflow parameter {name:?}, which spec.arguments does not declare"));
                    }
                }
                expr::Segment::Expression(src) => check_expr(cx, p, src),
                expr::Segment::Literal(_) => {}
            }
        }
    }
    if let Some(steps) = &t.steps {
        for (g, group) in steps.iter().enumerate() {
            for (s, step) in group.iter().enumerate() {
                let sp = format!("{path}.steps[{g}][{s}]");
                lint_step(
                    cx,
                    &sp,
                    &step.name,
                    step.template.as_deref(),
                    step.template_ref.as_ref(),
                    step.inline.as_deref(),
                    step.when.as_deref(),
                    &step.on_exit,
                    has_template,
                    &[STEP],
                );
            }
        }
    }
    if let Some(dag) = &t.dag {
        lint_dag(cx, &t.name, dag, &format!("{path}.dag"), has_template);
    }
}

#[allow(clippy::too_many_arguments)]
fn lint_step(
    cx: &mut Ctx,
    path: &str,
    name: &str,
    template: Option<&str>,
    template_ref: Option<&TemplateRef>,
    inline: Option<&Template>,
    when: Option<&str>,
    on_exit: &Option<String>,
    has_template: &dyn Fn(&str) -> bool,
    known: &[&[&str]],
) {
    cx.unimplemented(path, known);
    // Only the `exit` hook runs on steps and tasks.
    cx.unimplemented(&join(path, "hooks"), &[&["exit"]]);
    if name.is_empty() {
        cx.error(path, "step/task has no `name`");
    }
    check_invocation(cx, path, template, template_ref, inline, has_template);
    if let Some(inline) = inline {
        lint_template(
            cx,
            inline,
            &format!("{path}.inline"),
            has_template,
            &BTreeSet::new(),
        );
    }
    if let Some(w) = when {
        let masked = mask_tags(w);
        let src = masked.trim();
        if let Some(e) = src.strip_prefix("{{=").and_then(|s| s.strip_suffix("}}")) {
            check_expr(cx, &format!("{path}.when"), e);
        } else if !w.contains("{{=")
            && let Err(e) = expr::parse(src, expr::Dialect::Govaluate)
        {
            cx.error(
                &format!("{path}.when"),
                format!("invalid `when` expression {w:?}: {e}"),
            );
        }
    }
    if let Some(e) = on_exit
        && !has_template(e)
    {
        cx.error(
            &format!("{path}.onExit"),
            format!("onExit template {e:?} not found"),
        );
    }
}

fn check_invocation(
    cx: &mut Ctx,
    path: &str,
    template: Option<&str>,
    template_ref: Option<&TemplateRef>,
    inline: Option<&Template>,
    has_template: &dyn Fn(&str) -> bool,
) {
    match (template, template_ref, inline) {
        (Some(t), None, None) => {
            if !has_template(t) && !t.contains("{{") {
                cx.error(&join(path, "template"), format!("template {t:?} not found"));
            }
        }
        (None, Some(r), None) => {
            if let Err(e) = cx.library.template(r) {
                cx.error(&join(path, "templateRef"), format!("templateRef: {e}"));
            }
        }
        (None, None, Some(_)) => {}
        (None, None, None) => cx.error(path, "needs one of `template`, `templateRef` or `inline`"),
        _ => cx.error(
            path,
            "set only one of `template`, `templateRef` and `inline`",
        ),
    }
}

fn lint_dag(
    cx: &mut Ctx,
    template: &str,
    dag: &DagTemplate,
    path: &str,
    has_template: &dyn Fn(&str) -> bool,
) {
    // Argo's controller refuses a DAG template where one task uses `depends` and another
    // `dependencies`; its words, at each offending task.
    let using_depends = dag.tasks.iter().find(|t| t.depends.is_some());
    if let Some(with_depends) = using_depends {
        for (i, task) in dag.tasks.iter().enumerate() {
            if !task.dependencies.is_empty() {
                cx.error(
                    &format!("{path}.tasks[{i}].dependencies"),
                    format!(
                        "templates.{template} cannot use both 'depends' and 'dependencies' in the same DAG template: task {:?} uses `dependencies`, task {:?} `depends`; write every task with `depends` (`dependencies: [A, B]` is `depends: \"A && B\"`)",
                        task.name, with_depends.name
                    ),
                );
            }
        }
    }
    let names: HashMap<&str, usize> = dag
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    if names.len() != dag.tasks.len() {
        cx.error(&format!("{path}.tasks"), "duplicate task names in DAG");
    }
    let mut edges: Vec<Vec<usize>> = vec![Vec::new(); dag.tasks.len()];
    for (i, task) in dag.tasks.iter().enumerate() {
        let tp = format!("{path}.tasks[{i}]");
        lint_step(
            cx,
            &tp,
            &task.name,
            task.template.as_deref(),
            task.template_ref.as_ref(),
            task.inline.as_deref(),
            task.when.as_deref(),
            &task.on_exit,
            has_template,
            &[STEP, TASK_EXTRA],
        );
        let mut deps: Vec<(String, String)> = task
            .dependencies
            .iter()
            .enumerate()
            .map(|(j, d)| (d.clone(), format!("{tp}.dependencies[{j}]")))
            .collect();
        if let Some(d) = &task.depends {
            match expr::parse_depends(d) {
                Ok(parsed) => deps.extend(
                    parsed
                        .tasks()
                        .into_iter()
                        .map(|t| (t.to_string(), format!("{tp}.depends"))),
                ),
                Err(e) => cx.error(
                    &format!("{tp}.depends"),
                    format!("invalid `depends` {d:?}: {e}"),
                ),
            }
        }
        for (d, dp) in deps {
            match names.get(d.as_str()) {
                Some(&j) => edges[i].push(j),
                None => cx.error(
                    &dp,
                    format!("task {:?} depends on unknown task {d:?}", task.name),
                ),
            }
        }
    }
    if let Some(target) = &dag.target {
        for t in target.split_whitespace() {
            if !names.contains_key(t) && !t.contains("{{") {
                cx.error(
                    &format!("{path}.target"),
                    format!("target {t:?} is not a task of this DAG"),
                );
            }
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| dag.tasks[i].name.as_str()).collect();
        cx.error(
            &format!("{path}.tasks[{}]", cycle[0]),
            format!("dependency cycle: {}", names.join(" -> ")),
        );
    }
}

/// Iterative DFS (no recursion, so 100k-task DAGs do not overflow the stack).
fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    let n = edges.len();
    let mut color = vec![0u8; n]; // 0 white, 1 grey, 2 black
    let mut parent = vec![usize::MAX; n];
    for start in 0..n {
        if color[start] != 0 {
            continue;
        }
        let mut stack = vec![(start, 0usize)];
        color[start] = 1;
        while let Some((v, idx)) = stack.pop() {
            if idx < edges[v].len() {
                stack.push((v, idx + 1));
                let w = edges[v][idx];
                if color[w] == 1 {
                    let mut cycle = vec![w];
                    let mut x = v;
                    while x != w && x != usize::MAX {
                        cycle.push(x);
                        x = parent[x];
                    }
                    cycle.push(w);
                    cycle.reverse();
                    return Some(cycle);
                }
                if color[w] == 0 {
                    color[w] = 1;
                    parent[w] = v;
                    stack.push((w, 0));
                }
            } else {
                color[v] = 2;
            }
        }
    }
    None
}

fn check_expr(cx: &mut Ctx, path: &str, src: &str) {
    if let Err(e) = expr::parse(src, expr::Dialect::Expr) {
        cx.error(path, format!("invalid expression {src:?}: {e}"));
    }
}

/// Replaces simple `{{tags}}` with a neutral identifier so the surrounding expression parses.
fn mask_tags(s: &str) -> String {
    let mut out = String::new();
    for seg in expr::segments(s) {
        match seg {
            expr::Segment::Literal(l) => out.push_str(l),
            expr::Segment::Tag(_) => out.push_str("placeholder"),
            expr::Segment::Expression(e) => {
                out.push_str("{{=");
                out.push_str(e);
                out.push_str("}}");
            }
        }
    }
    out
}

fn collect_strings(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) if s.contains("{{") => out.push((path.to_string(), s.clone())),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect_strings(x, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                collect_strings(x, &join(path, k), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str, want: &[&str]) {
        let (loaded, mut diags) = crate::load("wf.yaml", yaml);
        let mut lib = Library::default();
        loaded.iter().for_each(|l| lib.add(l));
        diags.extend(lint(&loaded, &lib));
        let got: Vec<String> = diags
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect();
        assert_eq!(got.len(), want.len(), "{got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert!(g.contains(w), "{g:?} should contain {w:?}");
        }
    }

    const HEAD: &str =
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: t\nspec:\n";

    #[test]
    fn errors_with_positions() {
        check(
            &format!(
                "{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    container: {{image: busybox}}\n"
            ),
            &[],
        );
        check(
            &format!(
                "{HEAD}  entrypoint: nope\n  templates:\n  - name: main\n    container: {{image: busybox}}\n"
            ),
            &["wf.yaml:6:15: error: entrypoint \"nope\""],
        );
        check(
            &format!("{HEAD}  templates:\n  - name: main\n    container: {{image: busybox}}\n"),
            &["missing `entrypoint`"],
        );
        check("a: [1\n", &["wf.yaml:1:4: error: invalid YAML"]);
        check(
            &format!("{HEAD}  entrypoint: main\n  templates: 3\n"),
            &["wf.yaml:7:14: error: spec.templates: invalid type"],
        );
        let dag = |tasks: &str| {
            format!(
                "{HEAD}  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n{tasks}  - name: c\n    container: {{image: busybox, args: ['{{{{inputs.parameters.x}}}}']}}\n"
            )
        };
        check(
            &dag(
                "      - {name: A, template: c, dependencies: [B]}\n      - {name: B, template: c, dependencies: [A]}\n",
            ),
            &[
                "dependency cycle: A -> B -> A",
                "undefined input parameter \"x\"",
            ],
        );
        check(
            &dag("      - {name: A, template: c, depends: 'Z.Succeeded'}\n"),
            &["depends on unknown task \"Z\"", "undefined input"],
        );
        check(
            &dag(
                "      - {name: A, template: c, depends: 'B', dependencies: [B]}\n      - {name: B, template: nope}\n",
            ),
            &[
                "cannot use both 'depends' and 'dependencies' in the same DAG template",
                "template \"nope\" not found",
                "undefined input",
            ],
        );
        // Across tasks too (Argo's controller refuses the template), at the offending field.
        check(
            &dag(
                "      - {name: A, template: c}\n      - {name: B, template: c, depends: A}\n      - {name: C, template: c, dependencies: [A]}\n",
            ),
            &[
                "wf.yaml:13:46: error: templates.main cannot use both 'depends' and 'dependencies' in the same DAG template: task \"C\" uses `dependencies`, task \"B\" `depends`",
                "undefined input",
            ],
        );

        check(
            &dag("      - {name: A, template: c, when: '{{=1 +}}'}\n"),
            &["invalid expression", "undefined input"],
        );
        check(
            &dag("      - {name: A, templateRef: {name: lib, template: x}}\n"),
            &["WorkflowTemplate \"lib\" not found", "undefined input"],
        );
    }

    #[test]
    fn unimplemented_fields_warn() {
        let (loaded, _) = crate::load(
            "wf.yaml",
            &format!(
                "{HEAD}  entrypoint: main\n  podGC: {{strategy: OnPodSuccess}}\n  templates:\n  - name: main\n    container: {{image: busybox, resources: {{}}}}\n"
            ),
        );
        let d = lint(&loaded, &Library::default());
        let msgs: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert!(
            msgs.iter()
                .any(|m| m.contains("warning: field `spec.podGC` is not implemented")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains("`spec.templates[0].container.resources`")),
            "{msgs:?}"
        );
    }

    #[test]
    fn unimplemented_cron_fields_warn() {
        let (loaded, _) = crate::load(
            "cron.yaml",
            "apiVersion: argoproj.io/v1alpha1\nkind: CronWorkflow\nmetadata: {name: c}\nspec:\n  schedule: '* * * * *'\n  timezone: UTC\n  startingDeadlineSeconds: 10\n  workflowSpec:\n    entrypoint: main\n    templates:\n    - name: main\n      suspend: {}\n",
        );
        let d = lint(&loaded, &Library::default());
        let msgs: Vec<String> = d.iter().map(|d| d.to_string()).collect();
        assert_eq!(msgs.len(), 1, "{msgs:?}");
        assert!(
            msgs[0].contains("cron.yaml:7:28: warning: field `spec.startingDeadlineSeconds`"),
            "{msgs:?}"
        );
    }
}
