//! The pure core of sensors: Argo Events' dependency filters, trigger conditions and trigger
//! parameters, evaluated against events, with the reason for every decision. No IO, no
//! clock, no async: the same sensor and events give the same verdicts (so `riposte sensor
//! test` shows exactly what a server would decide).
//!
//! Sensors come compiled (`spec::sensor`: typed, with their regexes, expressions, programs
//! and paths parsed once); anything this core cannot evaluate for an event is a "did not
//! match" with a reason, never a silent pass.

pub mod ingest;
pub mod sensor;

use serde_json::{Map, Value};
use spec::sensor::{
    Comparator, DataFilter, DataPath, DataValues, Dependency, ExprFilter, Operation, Parameter,
    TimeWindow,
};

/// A CloudEvents 1.0 envelope.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Event {
    pub id: String,
    pub source: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub subject: String,
    /// RFC 3339.
    #[serde(default)]
    pub time: String,
    #[serde(default = "json_content_type")]
    pub datacontenttype: String,
    #[serde(default)]
    pub data: Value,
}

fn json_content_type() -> String {
    "application/json".into()
}

impl Event {
    /// An event from a file a user wrote: a CloudEvents envelope (with `specversion`), a
    /// webhook event's data (`{"header": …, "body": …}`), or a bare payload such as a Falco
    /// alert, which arrives through a webhook as its `body`.
    pub fn from_json(v: Value) -> Event {
        if v.get("specversion").is_some()
            && let Ok(e) = serde_json::from_value::<Event>(v.clone())
        {
            return e;
        }
        let v = if v.get("body").is_some() {
            v
        } else {
            serde_json::json!({"header": {}, "body": v})
        };
        Event {
            id: "test".into(),
            source: "test".into(),
            kind: "test".into(),
            subject: String::new(),
            time: String::new(),
            datacontenttype: json_content_type(),
            data: v,
        }
    }

    /// The CloudEvents context attributes (Argo's `contextKey` paths).
    pub fn context(&self) -> Value {
        serde_json::json!({
            "id": self.id, "source": self.source, "type": self.kind, "subject": self.subject,
            "time": self.time, "datacontenttype": self.datacontenttype, "specversion": "1.0",
        })
    }
}

/// Whether one dependency's filters pass for an event, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub matched: bool,
    /// One line per filter: what it checked and what it found.
    pub reasons: Vec<String>,
}

/// Looks a gjson-style path up in `v`: keys separated by `.`, `\.` for a dot inside a key,
/// numbers index arrays, `#` is an array's length (or, followed by more, maps over it).
pub fn lookup(v: &Value, path: &str) -> Option<Value> {
    lookup_path(v, &DataPath::lenient(path))
}

/// [`lookup`] with a path parsed once.
pub fn lookup_path(v: &Value, path: &DataPath) -> Option<Value> {
    lookup_segments(v, path.segments())
}

fn lookup_segments(v: &Value, segments: &[String]) -> Option<Value> {
    let Some((first, rest)) = segments.split_first() else {
        return Some(v.clone());
    };
    match v {
        Value::Object(m) => lookup_segments(m.get(first)?, rest),
        Value::Array(a) if first == "#" => {
            if rest.is_empty() {
                Some(Value::from(a.len()))
            } else {
                Some(Value::Array(
                    a.iter()
                        .filter_map(|item| lookup_segments(item, rest))
                        .collect(),
                ))
            }
        }
        Value::Array(a) => lookup_segments(a.get(first.parse::<usize>().ok()?)?, rest),
        _ => None,
    }
}

/// A value as text, the way gjson's `String()` gives it (strings unquoted).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Evaluates a dependency's `filters` against an event.
pub fn evaluate_dependency(dependency: &Dependency, event: &Event) -> Verdict {
    let mut reasons = Vec::new();
    let Some(filters) = &dependency.filters else {
        return Verdict {
            matched: true,
            reasons: vec!["no filters: every event of this source and name matches".into()],
        };
    };
    let mut kinds: Vec<bool> = Vec::new();
    let data: Vec<bool> = filters
        .data
        .iter()
        .map(|f| data_filter(f, &event.data, &mut reasons))
        .collect();
    if !data.is_empty() {
        kinds.push(combine(&data, filters.data_any));
    }
    let exprs: Vec<bool> = filters
        .exprs
        .iter()
        .map(|f| expr_filter(f, &event.data, &mut reasons))
        .collect();
    if !exprs.is_empty() {
        kinds.push(combine(&exprs, filters.exprs_any));
    }
    if let Some(window) = &filters.time {
        kinds.push(time_filter(window, &event.time, &mut reasons));
    }
    if !filters.context.is_empty() {
        kinds.push(context_filter(&filters.context, event, &mut reasons));
    }
    if let Some(script) = &filters.script {
        kinds.push(match script.filter(&event.data) {
            Ok(true) => {
                reasons.push("script: returned true".into());
                true
            }
            Ok(false) => {
                reasons.push("script: returned false, so it does not match".into());
                false
            }
            Err(e) => {
                reasons.push(format!("script: {e}, so it does not match"));
                false
            }
        });
    }
    Verdict {
        matched: combine(&kinds, dependency.filters_any),
        reasons,
    }
}

fn combine(results: &[bool], any: bool) -> bool {
    if any {
        results.iter().any(|r| *r)
    } else {
        results.iter().all(|r| *r)
    }
}

fn data_filter(f: &DataFilter, data: &Value, reasons: &mut Vec<String>) -> bool {
    let path = f.path.as_str();
    let Some(found) = lookup_path(data, &f.path) else {
        reasons.push(format!(
            "data {path}: not in the event, so it does not match"
        ));
        return false;
    };
    let mut shown = text(&found);
    // Argo runs the template with `.Input` = the value found (as a string) and compares what
    // it gives instead.
    if let Some(t) = &f.template {
        match t.template.render_input(&Value::String(shown.clone())) {
            Ok(v) => shown = v,
            Err(e) => {
                reasons.push(format!(
                    "data {path}: template {:?} failed ({e}), so it does not match",
                    t.source
                ));
                return false;
            }
        }
    }
    let comparator = f.comparator;
    let ok = match &f.values {
        DataValues::String(patterns) => {
            let hit = patterns.iter().any(|re| re.is_match(&shown));
            match comparator {
                Comparator::Ne => !hit,
                _ => hit,
            }
        }
        DataValues::Number(values) => {
            let Ok(n) = shown.trim().parse::<f64>() else {
                reasons.push(format!(
                    "data {path} = {shown:?}: not a number, so it does not match"
                ));
                return false;
            };
            values.iter().any(|&w| match comparator {
                Comparator::Gt => n > w,
                Comparator::Ge => n >= w,
                Comparator::Lt => n < w,
                Comparator::Le => n <= w,
                Comparator::Ne => n != w,
                Comparator::Eq => n == w,
            })
        }
        DataValues::Bool(values) => {
            let Ok(b) = shown.trim().parse::<bool>() else {
                reasons.push(format!(
                    "data {path} = {shown:?}: not true or false, so it does not match"
                ));
                return false;
            };
            values.iter().any(|&w| match comparator {
                Comparator::Ne => b != w,
                _ => b == w,
            })
        }
    };
    reasons.push(format!(
        "data {path} = {shown:?} {} {} {:?} ({})",
        if ok { "matches" } else { "does not match" },
        comparator.as_str(),
        f.shown,
        f.values.type_name()
    ));
    ok
}

fn expr_filter(f: &ExprFilter, data: &Value, reasons: &mut Vec<String>) -> bool {
    let src = &f.source;
    let mut env = Map::new();
    for (name, path) in &f.fields {
        match lookup_path(data, path) {
            Some(v) => {
                env.insert(name.clone(), v);
            }
            None => {
                reasons.push(format!(
                    "expr {src:?}: field {name} ({}) is not in the event, so it does not match",
                    path.as_str()
                ));
                return false;
            }
        }
    }
    let env = Value::Object(env);
    match expr::eval_govaluate_parsed(&f.expr, &env) {
        Ok(Value::Bool(b)) => {
            reasons.push(format!("expr {src:?} with {env} is {b}"));
            b
        }
        Ok(other) => {
            reasons.push(format!(
                "expr {src:?} gave {other}, not true or false, so it does not match"
            ));
            false
        }
        Err(e) => {
            reasons.push(format!("expr {src:?}: {e}, so it does not match"));
            false
        }
    }
}

fn time_filter(w: &TimeWindow, event_time: &str, reasons: &mut Vec<String>) -> bool {
    let Some(at) = expr::time::parse_rfc3339(event_time).map(|s| s.rem_euclid(86_400)) else {
        reasons.push(format!(
            "time: the event's time {event_time:?} is not readable, so it does not match"
        ));
        return false;
    };
    // A window whose stop is before its start spans midnight.
    let ok = if w.start <= w.stop {
        at >= w.start && at < w.stop
    } else {
        at >= w.start || at < w.stop
    };
    reasons.push(format!(
        "time {event_time} (UTC) {} the window {}–{}",
        if ok { "is in" } else { "is outside" },
        w.start_text,
        w.stop_text
    ));
    ok
}

fn context_filter(want: &[(String, String)], event: &Event, reasons: &mut Vec<String>) -> bool {
    let ctx = event.context();
    let mut ok = true;
    for (k, v) in want {
        let got = ctx.get(k).cloned().unwrap_or(Value::Null);
        let hit = got.as_str() == Some(v.as_str());
        reasons.push(format!(
            "context {k} = {got} {} {v:?}",
            if hit { "matches" } else { "does not match" }
        ));
        ok &= hit;
    }
    ok
}

/// Applies a trigger's `parameters` to `resource` (the workflow or object it creates), from
/// the events of its dependencies. Returns the resource and one line per parameter.
pub fn apply_parameters(
    mut resource: Value,
    parameters: &[Parameter],
    events: &[(String, Event)],
) -> (Value, Vec<String>) {
    let mut notes = Vec::new();
    for p in parameters {
        let dest = p.dest.as_str();
        let event = p
            .dependency
            .as_deref()
            .and_then(|d| events.iter().find(|(n, _)| n == d).map(|(_, e)| e));
        let value = match event {
            Some(e) => source_value(p, e, &mut notes),
            None => None,
        }
        .or_else(|| p.value.clone());
        let Some(value) = value else {
            notes.push(format!(
                "{dest}: no value (the event lacks it and there is no default); left as it was"
            ));
            continue;
        };
        let current = lookup_path(&resource, &p.dest)
            .map(|v| text(&v))
            .unwrap_or_default();
        let new = match p.operation {
            Operation::Append => format!("{current}{value}"),
            Operation::Prepend => format!("{value}{current}"),
            Operation::Overwrite => value,
        };
        notes.push(format!("{dest} = {new:?}"));
        set_path(&mut resource, &p.dest, Value::String(new));
    }
    (resource, notes)
}

/// A parameter's value from its dependency's event, as Argo Events resolves it: the data side
/// (`dataKey`/`dataTemplate`) wins over the context side; a template that fails or gives
/// nothing falls back to the key, and `None` to the parameter's default `value`.
fn source_value(p: &Parameter, e: &Event, notes: &mut Vec<String>) -> Option<String> {
    let data_side = p.data_key.is_some() || p.data_template.is_some();
    let context_side = p.context_key.is_some() || p.context_template.is_some();
    let (input, key, template) = if data_side {
        (e.data.clone(), &p.data_key, &p.data_template)
    } else if context_side {
        (e.context(), &p.context_key, &p.context_template)
    } else {
        return Some(if p.use_raw_data {
            e.data.to_string()
        } else {
            text(&e.data)
        });
    };
    if let Some(t) = template {
        match t.template.render_input(&input) {
            Ok(v) => return Some(v),
            Err(err) => notes.push(format!(
                "{}: template {:?} failed ({err}); falling back to the key or the default",
                p.dest.as_str(),
                t.source
            )),
        }
    }
    key.as_ref()
        .and_then(|k| lookup_path(&input, k))
        .map(|v| text(&v))
}

/// Sets `path` (dot-separated keys, numbers index arrays) in `v`, creating objects on the way.
fn set_path(v: &mut Value, path: &DataPath, value: Value) {
    let segments = path.segments();
    let mut cur = v;
    for (i, seg) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        if let Ok(idx) = seg.parse::<usize>()
            && let Value::Array(a) = cur
        {
            if idx >= a.len() {
                return;
            }
            if last {
                a[idx] = value;
                return;
            }
            cur = &mut a[idx];
            continue;
        }
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else { return };
        if last {
            m.insert(seg.clone(), value);
            return;
        }
        cur = m.entry(seg.clone()).or_insert(Value::Object(Map::new()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A dependency with these filters, compiled as a server compiles it.
    fn dependency(filters: Value) -> Dependency {
        dependency_of(filters).unwrap_or_else(|e| panic!("{e}"))
    }

    fn dependency_of(filters: Value) -> Result<Dependency, spec::sensor::CompileError> {
        let mut dep = json!({"name": "d", "eventSourceName": "s", "eventName": "e"});
        if !filters.is_null() {
            dep["filters"] = filters;
        }
        let sensor = spec::sensor::compile_sensor(&json!({
            "metadata": {"name": "s"},
            "spec": {"dependencies": [dep], "triggers": [{"template": {"name": "t", "log": {}}}]},
        }))?;
        Ok(sensor.dependencies[0].clone())
    }

    fn parameters(list: Value, names: &[&str]) -> Vec<Parameter> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        spec::sensor::compile_parameters(&list, &names).unwrap_or_else(|e| panic!("{e}"))
    }

    fn falco() -> Event {
        Event::from_json(json!({"header": {}, "body": {
            "rule": "Terminal shell in container", "priority": "Warning",
            "output_fields": {"k8s.pod.name": "web-1", "k8s.ns.name": "default", "proc.pid": 42}
        }}))
    }

    #[test]
    fn lookups_follow_gjson() {
        let e = falco();
        assert_eq!(
            lookup(&e.data, "body.output_fields.k8s\\.pod\\.name"),
            Some(json!("web-1"))
        );
        let v = json!({"a": [{"b": 1}, {"b": 2}]});
        assert_eq!(lookup(&v, "a.#"), Some(json!(2)));
        assert_eq!(lookup(&v, "a.#.b"), Some(json!([1, 2])));
        assert_eq!(lookup(&v, "a.1.b"), Some(json!(2)));
        assert_eq!(lookup(&v, "a.9.b"), None);
    }

    #[test]
    fn filters_table() {
        let e = falco();
        type Case<'a> = (&'a str, Value, bool);
        let cases: &[Case] = &[
            (
                "string regex, unanchored",
                json!({"data": [{"path": "body.rule", "type": "string", "value": ["shell"]}]}),
                true,
            ),
            (
                "string !=",
                json!({"data": [{"path": "body.rule", "type": "string", "value": ["shell"], "comparator": "!="}]}),
                false,
            ),
            (
                "number >",
                json!({"data": [{"path": "body.output_fields.proc\\.pid", "type": "number", "value": ["40"], "comparator": ">"}]}),
                true,
            ),
            (
                "missing path",
                json!({"data": [{"path": "body.nope", "type": "string", "value": ["x"]}]}),
                false,
            ),
            (
                "data or",
                json!({"dataLogicalOperator": "or", "data": [
                {"path": "body.nope", "type": "string", "value": ["x"]},
                {"path": "body.priority", "type": "string", "value": ["Warning|Critical"]}]}),
                true,
            ),
            (
                "expr with fields",
                json!({"exprs": [{"expr": "pri == \"Warning\" && ns != \"kube-system\"",
                "fields": [{"name": "pri", "path": "body.priority"}, {"name": "ns", "path": "body.output_fields.k8s\\.ns\\.name"}]}]}),
                true,
            ),
            (
                "expr false",
                json!({"exprs": [{"expr": "pri == \"Critical\"", "fields": [{"name": "pri", "path": "body.priority"}]}]}),
                false,
            ),
            (
                "template gives the compared value",
                json!({"data": [{"path": "body.rule", "type": "string", "value": ["^terminal-shell"],
                "template": "{{ .Input | lower | replace \" \" \"-\" }}"}]}),
                true,
            ),
            (
                "template on a number",
                json!({"data": [{"path": "body.output_fields.proc\\.pid", "type": "number", "value": ["43"],
                "template": "{{ add1 .Input }}"}]}),
                true,
            ),
            (
                "Lua script true",
                json!({"script": "return event.body.priority == \"Warning\" and event.body.output_fields[\"proc.pid\"] == 42"}),
                true,
            ),
            (
                "Lua script false",
                json!({"script": "if event.body.rule == 'x' then return true else return false end"}),
                false,
            ),
            (
                "Lua script that is not a predicate",
                json!({"script": "return event.body"}),
                false,
            ),
            (
                "failing template",
                json!({"data": [{"path": "body.rule", "type": "string", "value": ["x"], "template": "{{ .Input.nope }}"}]}),
                false,
            ),
        ];
        for (what, filters, want) in cases {
            let v = evaluate_dependency(&dependency(filters.clone()), &e);
            assert_eq!(v.matched, *want, "{what}: {:?}", v.reasons);
            assert!(!v.reasons.is_empty(), "{what}: a reason is always given");
        }
    }

    #[test]
    fn time_windows_and_context() {
        let mut e = falco();
        e.time = "2026-12-01T23:30:00Z".into();
        let window = |start: &str, stop: &str| {
            evaluate_dependency(
                &dependency(json!({"time": {"start": start, "stop": stop}})),
                &e,
            )
            .matched
        };
        assert!(window("22:00:00", "02:00:00"), "across midnight");
        assert!(!window("08:00:00", "18:00:00"));
        e.kind = "falco.alert".into();
        let ctx = evaluate_dependency(&dependency(json!({"context": {"type": "falco.alert"}})), &e);
        assert!(ctx.matched, "{:?}", ctx.reasons);
    }

    #[test]
    fn parameters_from_data_with_defaults() {
        let wf = json!({"spec": {"arguments": {"parameters": [{"name": "pod", "value": "x"}]}}});
        let params = parameters(
            json!([
                {"src": {"dependencyName": "shell", "dataKey": "body.output_fields.k8s\\.pod\\.name"},
                       "dest": "spec.arguments.parameters.0.value"},
                {"src": {"dependencyName": "shell", "dataKey": "body.priority"},
                       "dest": "metadata.labels.priority", "operation": "prepend"},
                {"src": {"dependencyName": "audit", "dataKey": "body.x", "value": "fallback"},
                       "dest": "metadata.annotations.note"},
            ]),
            &["shell", "audit"],
        );
        let (out, notes) = apply_parameters(wf, &params, &[("shell".into(), falco())]);
        assert_eq!(out["spec"]["arguments"]["parameters"][0]["value"], "web-1");
        assert_eq!(out["metadata"]["labels"]["priority"], "Warning");
        assert_eq!(out["metadata"]["annotations"]["note"], "fallback");
        assert_eq!(notes.len(), 3);
    }

    /// Argo Events' trigger-with-template example: Go templates over the data and the
    /// context, `append`; a template that fails falls back to the key, then the default.
    #[test]
    fn templated_parameters() {
        let mut e = Event::from_json(
            json!({"header": {}, "body": {"message": "shell in web-1", "name": "Jane Q Doe", "n": 7}}),
        );
        e.subject = "falco alert".into();
        let wf = json!({"metadata": {"generateName": "webhook-"},
                        "spec": {"arguments": {"parameters": [{"name": "message"}, {"name": "subject"}]}}});
        let params = parameters(
            json!([
                {"src": {"dependencyName": "d", "dataTemplate": "{{ .Input.body.message | title }}"},
                       "dest": "spec.arguments.parameters.0.value"},
                {"src": {"dependencyName": "d", "contextTemplate": "{{ .Input.subject | title }}"},
                       "dest": "spec.arguments.parameters.1.value"},
                {"src": {"dependencyName": "d", "dataTemplate": "{{ .Input.body.name | nospace | lower }}-"},
                       "dest": "metadata.generateName", "operation": "append"},
                {"src": {"dependencyName": "d", "dataTemplate": "{{ .Input.body.missing }}", "dataKey": "body.n"},
                       "dest": "metadata.labels.n"},
                {"src": {"dependencyName": "d", "dataTemplate": "{{ .Input.body.missing }}", "value": "none"},
                       "dest": "metadata.labels.default"},
            ]),
            &["d"],
        );
        let (out, notes) = apply_parameters(wf, &params, &[("d".into(), e)]);
        let args = &out["spec"]["arguments"]["parameters"];
        assert_eq!(args[0]["value"], "Shell In Web-1", "{notes:?}");
        assert_eq!(args[1]["value"], "Falco Alert", "{notes:?}");
        assert_eq!(out["metadata"]["generateName"], "webhook-janeqdoe-");
        assert_eq!(out["metadata"]["labels"]["n"], "7");
        assert_eq!(out["metadata"]["labels"]["default"], "none");
        assert!(
            notes
                .iter()
                .any(|n| n.contains("failed") && n.contains("<no value>")),
            "{notes:?}"
        );
    }

    proptest::proptest! {
        /// Any path and any filter text: an answer with reasons, never a panic.
        #[test]
        fn arbitrary_filters_never_panic(path in "[a-z.#0-9\\\\]{0,12}", value in ".{0,8}", ty in "(string|number|bool|x)") {
            let f = json!({"data": [{"path": path, "type": ty, "value": [value]}],
                           "exprs": [{"expr": value, "fields": [{"name": "a", "path": path}]}]});
            // Either it does not compile (lint says why) or it evaluates with reasons.
            if let Ok(d) = dependency_of(f) {
                let v = evaluate_dependency(&d, &falco());
                proptest::prop_assert!(!v.reasons.is_empty());
            }
        }
    }
}
