//! Argo Events definitions: `Sensor` and `EventSource` (`argoproj.io/v1alpha1`), loaded with
//! positions and linted like workflows. Every field is either one Riposte implements (or
//! will, per its events design) or a warning naming it; filter paths, expressions, trigger
//! conditions and trigger parameter paths are checked with `file:line:col`.
//!
//! Lint works on the raw document (that is where positions are). The events runtime
//! (`riposte-events`, `riposte-server`'s `events`) reads the same JSON; there are no typed
//! views of these definitions yet.

use serde_json::Value;

use crate::{Diagnostic, Position, Severity, yaml};

/// A Sensor or EventSource with the document it came from.
#[derive(Debug, Clone)]
pub struct LoadedEvents {
    pub file: String,
    pub document: yaml::Document,
    pub kind: EventsKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsKind {
    Sensor,
    EventSource,
}

impl LoadedEvents {
    fn at(&self, path: &str) -> Position {
        self.document.position(path)
    }
}

/// Every Sensor and EventSource in `text` (other kinds are skipped; a YAML error is a
/// diagnostic).
pub fn load_events(file: &str, text: &str) -> (Vec<LoadedEvents>, Vec<Diagnostic>) {
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
    let mut out = Vec::new();
    for document in docs {
        let v = &document.value;
        if v["apiVersion"] != "argoproj.io/v1alpha1" {
            continue;
        }
        let kind = match v["kind"].as_str() {
            Some("Sensor") => EventsKind::Sensor,
            Some("EventSource") => EventsKind::EventSource,
            _ => continue,
        };
        let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
        out.push(LoadedEvents {
            file: file.into(),
            document,
            kind,
            name,
        });
    }
    (out, Vec::new())
}

/// The event source types Riposte receives (see the events design); others are warnings.
pub const EVENT_SOURCE_TYPES: &[&str] = &[
    "webhook",
    "calendar",
    "resource",
    "nats",
    "mqtt",
    "amqp",
    "redis",
    "redisStream",
    "file",
];
/// Trigger types Riposte carries out; others are warnings.
pub const TRIGGER_TYPES: &[&str] = &["argoWorkflow", "k8s", "http", "log"];

const SENSOR_SPEC: &[&str] = &["dependencies", "triggers", "template"];
const DEPENDENCY: &[&str] = &[
    "name",
    "eventSourceName",
    "eventName",
    "filters",
    "filtersLogicalOperator",
    "transform",
];
const FILTERS: &[&str] = &[
    "data",
    "exprs",
    "time",
    "context",
    "dataLogicalOperator",
    "exprLogicalOperator",
    "script",
];
const DATA_FILTER: &[&str] = &["path", "type", "value", "comparator", "template"];
const EXPR_FILTER: &[&str] = &["expr", "fields"];
const TRIGGER: &[&str] = &[
    "template",
    "parameters",
    "retryStrategy",
    "rateLimit",
    "atLeastOnce",
    // Riposte's: fire the same logical alert once per window.
    "dedupe",
];
const TRIGGER_TEMPLATE_FIELDS: &[&str] = &["name", "conditions", "conditionsReset"];
const PARAMETER: &[&str] = &["src", "dest", "operation"];
const PARAMETER_SRC: &[&str] = &[
    "dependencyName",
    "dataKey",
    "dataTemplate",
    "contextKey",
    "contextTemplate",
    "value",
    "useRawData",
];

struct Lint<'a> {
    l: &'a LoadedEvents,
    out: Vec<Diagnostic>,
}

impl Lint<'_> {
    fn push(&mut self, path: &str, severity: Severity, message: String) {
        self.out.push(Diagnostic {
            file: self.l.file.clone(),
            position: self.l.at(path),
            severity,
            message,
        });
    }
    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.push(path, Severity::Error, message.into());
    }
    fn warn(&mut self, path: &str, message: impl Into<String>) {
        self.push(path, Severity::Warning, message.into());
    }
    /// A warning for every key of the object at `path` that is not in `known`.
    fn fields(&mut self, v: &Value, path: &str, known: &[&str]) {
        if let Value::Object(m) = v {
            for k in m.keys() {
                if !known.contains(&k.as_str()) {
                    let p = format!("{path}.{k}");
                    self.warn(
                        &p,
                        format!("field `{p}` is not implemented by Riposte and is ignored"),
                    );
                }
            }
        }
    }
}

/// Lints Sensors and EventSources; every problem, with its position.
pub fn lint_events(loaded: &[LoadedEvents]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for l in loaded {
        let mut cx = Lint { l, out: Vec::new() };
        if l.name.is_empty() {
            cx.error("metadata", "metadata.name is required");
        }
        match l.kind {
            EventsKind::Sensor => lint_sensor(&mut cx),
            EventsKind::EventSource => lint_event_source(&mut cx),
        }
        out.extend(cx.out);
    }
    out
}

fn lint_sensor(cx: &mut Lint) {
    let spec = &cx.l.document.value["spec"];
    cx.fields(spec, "spec", SENSOR_SPEC);
    let deps = spec["dependencies"].as_array().cloned().unwrap_or_default();
    if deps.is_empty() {
        cx.error("spec", "spec.dependencies must name at least one event");
    }
    let mut names: Vec<String> = Vec::new();
    for (i, d) in deps.iter().enumerate() {
        let path = format!("spec.dependencies[{i}]");
        cx.fields(d, &path, DEPENDENCY);
        for required in ["name", "eventSourceName", "eventName"] {
            if d[required].as_str().is_none_or(str::is_empty) {
                cx.error(&path, format!("{path}.{required} is required"));
            }
        }
        if let Some(n) = d["name"].as_str() {
            if names.iter().any(|x| x == n) {
                cx.error(
                    &format!("{path}.name"),
                    format!("dependency {n:?} is defined twice"),
                );
            }
            names.push(n.to_string());
        }
        logical_operator(
            cx,
            &d["filtersLogicalOperator"],
            &format!("{path}.filtersLogicalOperator"),
        );
        if !d["transform"].is_null() {
            let t = &d["transform"];
            cx.fields(t, &format!("{path}.transform"), &["jq", "script"]);
            if let Some(jq) = t["jq"].as_str()
                && let Err(e) = expr::jq::check(jq)
            {
                cx.error(&format!("{path}.transform.jq"), e.to_string());
            }
            if let Some(script) = t["script"].as_str()
                && let Err(e) = expr::lua::check(script)
            {
                cx.error(
                    &format!("{path}.transform.script"),
                    format!("Lua script does not compile: {e}"),
                );
            }
        }
        lint_filters(cx, &d["filters"], &format!("{path}.filters"));
    }
    let triggers = spec["triggers"].as_array().cloned().unwrap_or_default();
    if triggers.is_empty() {
        cx.error("spec", "spec.triggers must have at least one trigger");
    }
    for (i, t) in triggers.iter().enumerate() {
        let path = format!("spec.triggers[{i}]");
        cx.fields(t, &path, TRIGGER);
        let tpl = &t["template"];
        let tpath = format!("{path}.template");
        if tpl["name"].as_str().is_none_or(str::is_empty) {
            cx.error(&tpath, format!("{tpath}.name is required"));
        }
        let mut types = Vec::new();
        if let Value::Object(m) = tpl {
            for k in m.keys() {
                if TRIGGER_TEMPLATE_FIELDS.contains(&k.as_str()) {
                    continue;
                }
                if TRIGGER_TYPES.contains(&k.as_str()) {
                    types.push(k.clone());
                } else {
                    cx.warn(
                        &format!("{tpath}.{k}"),
                        format!(
                            "trigger type `{k}` is not implemented by Riposte (it carries out {}); this trigger does nothing",
                            TRIGGER_TYPES.join(", ")
                        ),
                    );
                }
            }
        }
        if types.len() > 1 {
            cx.error(
                &tpath,
                format!(
                    "a trigger has one type; this one has {}",
                    types.join(" and ")
                ),
            );
        }
        if let Some(c) = tpl["conditions"].as_str() {
            condition(cx, c, &names, &format!("{tpath}.conditions"));
        }
        if !t["dedupe"].is_null() {
            let dp = format!("{path}.dedupe");
            cx.fields(&t["dedupe"], &dp, &["key", "window"]);
            match t["dedupe"]["key"].as_str() {
                Some(k) => {
                    if let Err(e) = expr::parse(k, expr::Dialect::Expr) {
                        cx.error(&format!("{dp}.key"), format!("dedupe key {k:?}: {e}"));
                    }
                }
                None => cx.error(
                    &dp,
                    format!(
                        "{dp}.key (an expression over the event, e.g. event.body.rule) is required"
                    ),
                ),
            }
            if let Some(w) = t["dedupe"]["window"].as_str()
                && expr::time::parse_duration_millis(w).is_none_or(|ms| ms <= 0)
            {
                cx.error(
                    &format!("{dp}.window"),
                    format!("window {w:?} is not a duration like 60s or 10m"),
                );
            }
        }
        for (j, p) in t["parameters"].as_array().into_iter().flatten().enumerate() {
            parameter(cx, p, &names, &format!("{path}.parameters[{j}]"));
        }
        // Trigger-level parameters may rewrite the trigger itself (Argo's tutorial sets
        // `argoWorkflow.parameters.0.src.dependencyName` from the event): those are checked
        // when they are known, at run time.
        let rewritten: Vec<String> = t["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["dest"].as_str().map(str::to_string))
            .collect();
        for ty in &types {
            for (j, p) in tpl[ty.as_str()]["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                let prefix = format!("{ty}.parameters.{j}");
                if rewritten.iter().any(|d| d.starts_with(&prefix)) {
                    continue;
                }
                parameter(cx, p, &names, &format!("{tpath}.{ty}.parameters[{j}]"));
            }
        }
    }
}

fn logical_operator(cx: &mut Lint, v: &Value, path: &str) {
    if let Some(op) = v.as_str()
        && !matches!(op, "" | "and" | "or")
    {
        cx.error(
            path,
            format!("logical operator {op:?} is not `and` or `or`"),
        );
    }
}

fn lint_filters(cx: &mut Lint, f: &Value, path: &str) {
    if f.is_null() {
        return;
    }
    cx.fields(f, path, FILTERS);
    if let Some(script) = f["script"].as_str()
        && let Err(e) = expr::lua::check(script)
    {
        cx.error(
            &format!("{path}.script"),
            format!("Lua script does not compile: {e}"),
        );
    }
    logical_operator(
        cx,
        &f["dataLogicalOperator"],
        &format!("{path}.dataLogicalOperator"),
    );
    logical_operator(
        cx,
        &f["exprLogicalOperator"],
        &format!("{path}.exprLogicalOperator"),
    );
    for (i, d) in f["data"].as_array().into_iter().flatten().enumerate() {
        let p = format!("{path}.data[{i}]");
        cx.fields(d, &p, DATA_FILTER);
        match d["path"].as_str() {
            None | Some("") => cx.error(&p, format!("{p}.path is required")),
            Some(gp) => {
                if let Err(e) = check_data_path(gp) {
                    cx.error(&format!("{p}.path"), format!("data path {gp:?}: {e}"));
                }
            }
        }
        let ty = d["type"].as_str().unwrap_or("");
        if !matches!(ty, "string" | "number" | "bool") {
            cx.error(
                &format!("{p}.type"),
                format!("data filter type {ty:?} is not string, number or bool"),
            );
        }
        if let Some(c) = d["comparator"].as_str()
            && !matches!(c, "" | "=" | "!=" | ">" | ">=" | "<" | "<=")
        {
            cx.error(
                &format!("{p}.comparator"),
                format!("comparator {c:?} is not one of =, !=, >, >=, <, <="),
            );
        }
        go_template(cx, d, &p, "template");
        let values = d["value"].as_array().map(Vec::len).unwrap_or(0);
        if values == 0 {
            cx.error(&p, format!("{p}.value must list at least one value"));
        }
        if ty == "number" {
            for (j, v) in d["value"].as_array().into_iter().flatten().enumerate() {
                let ok =
                    v.is_number() || v.as_str().is_some_and(|s| s.trim().parse::<f64>().is_ok());
                if !ok {
                    cx.error(
                        &format!("{p}.value[{j}]"),
                        format!("{v} is not a number, but the filter's type is number"),
                    );
                }
            }
        }
    }
    for (i, e) in f["exprs"].as_array().into_iter().flatten().enumerate() {
        let p = format!("{path}.exprs[{i}]");
        cx.fields(e, &p, EXPR_FILTER);
        match e["expr"].as_str() {
            None | Some("") => cx.error(&p, format!("{p}.expr is required")),
            Some(src) => {
                if let Err(err) = expr::parse(src, expr::Dialect::Govaluate) {
                    cx.error(&format!("{p}.expr"), format!("expression {src:?}: {err}"));
                }
            }
        }
        for (j, field) in e["fields"].as_array().into_iter().flatten().enumerate() {
            let fp = format!("{p}.fields[{j}]");
            cx.fields(field, &fp, &["name", "path"]);
            if field["name"].as_str().is_none_or(str::is_empty) {
                cx.error(&fp, format!("{fp}.name is required"));
            }
            match field["path"].as_str() {
                None | Some("") => cx.error(&fp, format!("{fp}.path is required")),
                Some(gp) => {
                    if let Err(err) = check_data_path(gp) {
                        cx.error(&format!("{fp}.path"), format!("data path {gp:?}: {err}"));
                    }
                }
            }
        }
    }
    let time = &f["time"];
    if !time.is_null() {
        cx.fields(time, &format!("{path}.time"), &["start", "stop"]);
        for k in ["start", "stop"] {
            match time[k].as_str() {
                Some(t) if is_clock_time(t) => {}
                Some(t) => cx.error(
                    &format!("{path}.time.{k}"),
                    format!("time {t:?} is not HH:MM:SS"),
                ),
                None => cx.error(
                    &format!("{path}.time"),
                    format!("{path}.time.{k} is required"),
                ),
            }
        }
    }
    let ctx = &f["context"];
    if !ctx.is_null() {
        cx.fields(
            ctx,
            &format!("{path}.context"),
            &[
                "type",
                "subject",
                "source",
                "datacontenttype",
                "id",
                "specversion",
                "time",
            ],
        );
    }
}

/// A gjson-style path: dot-separated keys, `\.` for a dot inside a key, `#` and numbers for
/// arrays. Refused: empty segments and a trailing escape.
pub fn check_data_path(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("is empty".into());
    }
    let (mut segment_len, mut index) = (0usize, 1usize);
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if chars.next().is_none() {
                    return Err("ends with an escape `\\`".into());
                }
                segment_len += 1;
            }
            '.' => {
                if segment_len == 0 {
                    return Err(format!("segment {index} is empty"));
                }
                index += 1;
                segment_len = 0;
            }
            _ => segment_len += 1,
        }
    }
    if segment_len == 0 {
        return Err("ends with `.`".into());
    }
    Ok(())
}

fn is_clock_time(t: &str) -> bool {
    let parts: Vec<&str> = t.split(':').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit()))
        && parts[0] < "24"
        && parts[1] < "60"
        && parts[2] < "60"
}

/// Trigger `conditions`: dependency names joined by `&&`, `||`, `!` and parentheses.
fn condition(cx: &mut Lint, src: &str, names: &[String], path: &str) {
    let mut depth = 0i32;
    let mut expect_operand = true;
    let mut rest = src.trim();
    let fail = |cx: &mut Lint, msg: String| cx.error(path, format!("conditions {src:?}: {msg}"));
    while !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("&&").or_else(|| rest.strip_prefix("||")) {
            if expect_operand {
                return fail(cx, "an operator where a dependency name belongs".into());
            }
            expect_operand = true;
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix('!') {
            if !expect_operand {
                return fail(cx, "`!` after a name".into());
            }
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix('(') {
            if !expect_operand {
                return fail(cx, "`(` after a name".into());
            }
            depth += 1;
            rest = r.trim_start();
        } else if let Some(r) = rest.strip_prefix(')') {
            if expect_operand || depth == 0 {
                return fail(cx, "unbalanced `)`".into());
            }
            depth -= 1;
            rest = r.trim_start();
        } else {
            let len = rest
                .find(|c: char| c.is_whitespace() || "&|!()".contains(c))
                .unwrap_or(rest.len());
            let name = &rest[..len];
            if !expect_operand {
                return fail(cx, format!("{name:?} follows a name without && or ||"));
            }
            if !names.iter().any(|n| n == name) {
                return fail(
                    cx,
                    format!(
                        "{name:?} is not a dependency of this sensor (dependencies: {})",
                        names.join(", ")
                    ),
                );
            }
            expect_operand = false;
            rest = rest[len..].trim_start();
        }
    }
    if expect_operand || depth != 0 {
        fail(cx, "incomplete expression".into());
    }
}

/// `obj[key]`, when set, must parse as a Go template (Argo Events' `dataTemplate`,
/// `contextTemplate` and data filters' `template`).
fn go_template(cx: &mut Lint, obj: &Value, path: &str, key: &str) {
    if let Some(t) = obj[key].as_str()
        && let Err(e) = expr::gotemplate::Template::parse(t)
    {
        cx.error(
            &format!("{path}.{key}"),
            format!(
                "{key} {t:?}: {} (at byte {} of the template)",
                e.message, e.offset
            ),
        );
    }
}

fn parameter(cx: &mut Lint, p: &Value, names: &[String], path: &str) {
    cx.fields(p, path, PARAMETER);
    let src = &p["src"];
    cx.fields(src, &format!("{path}.src"), PARAMETER_SRC);
    match src["dependencyName"].as_str() {
        Some(d) if names.iter().any(|n| n == d) => {}
        Some(d) => cx.error(
            &format!("{path}.src.dependencyName"),
            format!(
                "dependency {d:?} is not defined by this sensor (dependencies: {})",
                names.join(", ")
            ),
        ),
        None if src["value"].is_null() => cx.error(
            &format!("{path}.src"),
            format!("{path}.src needs dependencyName (or a constant value)"),
        ),
        None => {}
    }
    for key in ["dataKey", "contextKey"] {
        if let Some(k) = src[key].as_str()
            && let Err(e) = check_data_path(k)
        {
            cx.error(&format!("{path}.src.{key}"), format!("{key} {k:?}: {e}"));
        }
    }
    for key in ["dataTemplate", "contextTemplate"] {
        go_template(cx, src, &format!("{path}.src"), key);
    }
    match p["dest"].as_str() {
        None | Some("") => cx.error(path, format!("{path}.dest is required")),
        Some(d) => {
            if let Err(e) = check_data_path(d) {
                cx.error(&format!("{path}.dest"), format!("dest {d:?}: {e}"));
            }
        }
    }
    if let Some(op) = p["operation"].as_str()
        && !matches!(op, "" | "overwrite" | "append" | "prepend")
    {
        cx.error(
            &format!("{path}.operation"),
            format!("operation {op:?} is not overwrite, append or prepend"),
        );
    }
}

fn lint_event_source(cx: &mut Lint) {
    let spec = cx.l.document.value["spec"].clone();
    let Value::Object(m) = &spec else {
        cx.error("spec", "spec is required");
        return;
    };
    let mut sources = 0;
    for (ty, events) in m {
        let path = format!("spec.{ty}");
        if matches!(
            ty.as_str(),
            "service" | "template" | "eventBusName" | "replicas"
        ) {
            cx.warn(
                &path,
                format!(
                    "field `{path}` is not implemented by Riposte and is ignored (sources run inside the server)"
                ),
            );
            continue;
        }
        if !EVENT_SOURCE_TYPES.contains(&ty.as_str()) {
            cx.warn(
                &path,
                format!(
                    "event source type `{ty}` is not implemented by Riposte (it receives {}); these events never arrive",
                    EVENT_SOURCE_TYPES.join(", ")
                ),
            );
            continue;
        }
        sources += 1;
        let Value::Object(events) = events else {
            cx.error(
                &path,
                format!("{path} must map event names to their settings"),
            );
            continue;
        };
        for (name, cfg) in events {
            let p = format!("{path}.{name}");
            match ty.as_str() {
                "webhook" => webhook(cx, cfg, &p),
                "calendar" => calendar(cx, cfg, &p),
                other => {
                    for field in required_fields(other) {
                        let missing = match field.split_once('.') {
                            Some((a, b)) => cfg[a][b].is_null(),
                            None => cfg[*field].is_null(),
                        };
                        if missing {
                            cx.error(&p, format!("{p}.{field} is required"));
                        }
                    }
                }
            }
        }
    }
    if sources == 0 && cx.out.iter().all(|d| d.severity != Severity::Error) {
        cx.warn(
            "spec",
            "no event source type Riposte implements is configured; this EventSource produces nothing",
        );
    }
}

fn webhook(cx: &mut Lint, cfg: &Value, path: &str) {
    let port = cfg["port"]
        .as_str()
        .map(str::to_string)
        .or_else(|| cfg["port"].as_u64().map(|p| p.to_string()));
    match port.as_deref().map(str::parse::<u16>) {
        Some(Ok(p)) if p > 0 => {}
        Some(_) => cx.error(
            &format!("{path}.port"),
            "port must be a number from 1 to 65535",
        ),
        None => cx.error(path, format!("{path}.port is required")),
    }
    match cfg["endpoint"].as_str() {
        Some(e) if e.starts_with('/') => {}
        Some(e) => cx.error(
            &format!("{path}.endpoint"),
            format!("endpoint {e:?} must start with `/`"),
        ),
        None => cx.error(path, format!("{path}.endpoint is required")),
    }
    if let Some(m) = cfg["method"].as_str()
        && !matches!(m, "GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD")
    {
        cx.error(
            &format!("{path}.method"),
            format!("method {m:?} is not an HTTP method (GET, POST, PUT, PATCH, DELETE, HEAD)"),
        );
    }
    // Riposte's: which shape the requests have (default: recognised per request).
    if let Some(f) = cfg["format"].as_str()
        && ![
            "auto",
            "webhook",
            "cloudevents",
            "falco",
            "tracee",
            "audit",
            "k8s-audit",
        ]
        .contains(&f)
    {
        cx.error(
            &format!("{path}.format"),
            format!("format {f:?} is not one of auto, webhook, cloudevents, falco, tracee, audit"),
        );
    }
    if !cfg["hmac"].is_null() && cfg["hmac"]["secret"].is_null() {
        cx.error(
            &format!("{path}.hmac"),
            format!("{path}.hmac.secret ({{name, key}} of the shared key) is required"),
        );
    }
}

/// What each broker, file and resource source cannot run without.
fn required_fields(ty: &str) -> &'static [&'static str] {
    match ty {
        "nats" => &["url", "subject"],
        "mqtt" => &["url", "topic"],
        "amqp" => &["url", "exchangeName"],
        "redis" => &["hostAddress", "channels"],
        "redisStream" => &["hostAddress", "streams"],
        "file" => &["watchPathConfig.directory"],
        "resource" => &["version", "resource"],
        _ => &[],
    }
}

fn calendar(cx: &mut Lint, cfg: &Value, path: &str) {
    let schedule = cfg["schedule"].as_str().filter(|s| !s.is_empty());
    let interval = cfg["interval"].as_str().filter(|s| !s.is_empty());
    match (schedule, interval) {
        (None, None) => cx.error(path, format!("{path} needs a schedule or an interval")),
        (_, Some(i)) if expr::time::parse_duration_millis(i).is_none_or(|ms| ms <= 0) => cx.error(
            &format!("{path}.interval"),
            format!("interval {i:?} is not a duration like 10s or 1h"),
        ),
        (Some(s), _) if s.split_whitespace().count() != 5 && !s.starts_with('@') => cx.error(
            &format!("{path}.schedule"),
            format!(
                "schedule {s:?} must have 5 fields (minute hour day-of-month month day-of-week)"
            ),
        ),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint_text(text: &str) -> Vec<String> {
        let (loaded, mut d) = load_events("s.yaml", text);
        d.extend(lint_events(&loaded));
        d.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn data_paths() {
        for ok in [
            "body.a",
            "body.output_fields.k8s\\.pod\\.name",
            "a.#",
            "a.0.b",
            "x",
        ] {
            assert_eq!(check_data_path(ok), Ok(()), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a\\"] {
            assert!(check_data_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sensors_are_linted_with_positions() {
        let text = r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: falco
spec:
  dependencies:
    - name: shell
      eventSourceName: falco
      eventName: alert
      filters:
        data:
          - path: body..rule
            type: strin
            value: []
        exprs:
          - expr: priority ==
            fields: [{name: priority, path: body.priority}]
        time: {start: "25:00:00", stop: "10:00:00"}
        script: "if then"
  triggers:
    - template:
        name: isolate
        conditions: "shell && audit"
        argoWorkflow:
          operation: submit
          parameters:
            - src: {dependencyName: shel, dataKey: body.output_fields.k8s\.pod\.name}
              dest: spec.arguments.parameters.0.value
              operation: replace
            - src: {dependencyName: shell, dataTemplate: "{{ .Input.body.rule | shout }}"}
              dest: metadata.name
    - template:
        name: tell
        slack: {channel: x}
"#;
        let got = lint_text(text);
        let has = |line: usize, what: &str| {
            got.iter()
                .any(|m| m.starts_with(&format!("s.yaml:{line}:")) && m.contains(what))
        };
        assert!(has(12, "segment 2 is empty"), "{got:#?}");
        assert!(
            has(13, "\"strin\" is not string, number or bool"),
            "{got:#?}"
        );
        assert!(
            has(11, "value must list at least one value") || has(12, "value must list"),
            "{got:#?}"
        );
        assert!(has(16, "expression \"priority ==\""), "{got:#?}");
        assert!(has(18, "time \"25:00:00\" is not HH:MM:SS"), "{got:#?}");
        assert!(
            has(
                19,
                "Lua script does not compile: syntax error: script:1: unexpected symbol near 'then'"
            ),
            "{got:#?}"
        );
        assert!(has(23, "\"audit\" is not a dependency"), "{got:#?}");
        assert!(has(27, "dependency \"shel\" is not defined"), "{got:#?}");
        assert!(has(29, "operation \"replace\""), "{got:#?}");
        assert!(
            has(
                30,
                "dataTemplate \"{{ .Input.body.rule | shout }}\": function \"shout\" not defined (at byte 22"
            ),
            "{got:#?}"
        );
        assert!(
            has(34, "warning: trigger type `slack` is not implemented"),
            "{got:#?}"
        );
    }

    #[test]
    fn event_sources_are_linted() {
        let text = r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: inputs
spec:
  webhook:
    falco:
      port: "12000"
      endpoint: falco
      method: SEND
  calendar:
    tick:
      interval: soon
  kafka:
    topic: {url: x}
"#;
        let got = lint_text(text);
        let has = |line: usize, what: &str| {
            got.iter()
                .any(|m| m.starts_with(&format!("s.yaml:{line}:")) && m.contains(what))
        };
        assert!(has(9, "endpoint \"falco\" must start with `/`"), "{got:#?}");
        assert!(has(10, "method \"SEND\""), "{got:#?}");
        assert!(has(13, "interval \"soon\""), "{got:#?}");
        assert!(
            has(15, "warning: event source type `kafka` is not implemented"),
            "{got:#?}"
        );
    }
}

/// Argo Events' own examples, the conformance corpus: every Sensor and EventSource loads, and
/// lint finds no errors in them (only warnings naming what Riposte does not implement).
#[cfg(test)]
mod corpus {
    use super::*;

    #[test]
    fn argo_events_examples_load_and_lint_without_errors() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/conformance/argo-events/examples");
        let mut files = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("the corpus is checked in") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml") {
                    files.push(p);
                }
            }
        }
        let (mut sensors, mut sources, mut errors) = (0, 0, Vec::new());
        for f in &files {
            let text = std::fs::read_to_string(f).expect("readable");
            let (loaded, diags) = load_events(&f.display().to_string(), &text);
            sensors += loaded
                .iter()
                .filter(|l| l.kind == EventsKind::Sensor)
                .count();
            sources += loaded
                .iter()
                .filter(|l| l.kind == EventsKind::EventSource)
                .count();
            errors.extend(
                diags
                    .into_iter()
                    .chain(lint_events(&loaded))
                    .filter(|d| d.severity == Severity::Error)
                    .map(|d| d.to_string()),
            );
        }
        assert!(
            sensors >= 90 && sources >= 30,
            "{sensors} sensors, {sources} sources"
        );
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }
}
