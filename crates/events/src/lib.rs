//! The pure core of sensors: Argo Events' dependency filters, trigger conditions and trigger
//! parameters, evaluated against events, with the reason for every decision. No IO, no
//! clock, no async: the same sensor and events give the same verdicts (so `riposte sensor
//! test` shows exactly what a server would decide).
//!
//! Sensors come as the raw JSON of Argo's YAML (positions and shape errors are `spec::events`'
//! business); anything this core cannot evaluate is a "did not match" with a reason, never a
//! silent pass.

pub mod ingest;
pub mod sensor;

use serde_json::{Map, Value};

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
    let segments = split_path(path);
    lookup_segments(v, &segments)
}

fn split_path(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '.' => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out
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
pub fn evaluate_dependency(dependency: &Value, event: &Event) -> Verdict {
    let filters = &dependency["filters"];
    let mut reasons = Vec::new();
    if filters.is_null() {
        return Verdict {
            matched: true,
            reasons: vec!["no filters: every event of this source and name matches".into()],
        };
    }
    let any_of = |op: &Value| op.as_str() == Some("or");
    let mut kinds: Vec<bool> = Vec::new();
    let data: Vec<bool> = filters["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| data_filter(f, &event.data, &mut reasons))
        .collect();
    if !data.is_empty() {
        kinds.push(combine(&data, any_of(&filters["dataLogicalOperator"])));
    }
    let exprs: Vec<bool> = filters["exprs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|f| expr_filter(f, &event.data, &mut reasons))
        .collect();
    if !exprs.is_empty() {
        kinds.push(combine(&exprs, any_of(&filters["exprLogicalOperator"])));
    }
    if !filters["time"].is_null() {
        kinds.push(time_filter(&filters["time"], &event.time, &mut reasons));
    }
    if !filters["context"].is_null() {
        kinds.push(context_filter(&filters["context"], event, &mut reasons));
    }
    if let Some(script) = filters["script"].as_str() {
        kinds.push(match expr::lua::filter(script, &event.data) {
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
        matched: combine(&kinds, any_of(&dependency["filtersLogicalOperator"])),
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

fn data_filter(f: &Value, data: &Value, reasons: &mut Vec<String>) -> bool {
    let path = f["path"].as_str().unwrap_or("");
    let ty = f["type"].as_str().unwrap_or("");
    let comparator = f["comparator"].as_str().unwrap_or("=");
    let values: Vec<String> = f["value"]
        .as_array()
        .into_iter()
        .flatten()
        .map(text)
        .collect();
    let Some(found) = lookup(data, path) else {
        reasons.push(format!(
            "data {path}: not in the event, so it does not match"
        ));
        return false;
    };
    let mut shown = text(&found);
    // Argo runs the template with `.Input` = the value found (as a string) and compares what
    // it gives instead.
    if let Some(t) = f["template"].as_str() {
        match expr::gotemplate::render_input(t, &Value::String(shown.clone())) {
            Ok(v) => shown = v,
            Err(e) => {
                reasons.push(format!(
                    "data {path}: template {t:?} failed ({e}), so it does not match"
                ));
                return false;
            }
        }
    }
    let ok = match ty {
        "string" => {
            let hit = values.iter().find(|v| cached_regex_match(v, &shown));
            match comparator {
                "!=" => hit.is_none(),
                _ => hit.is_some(),
            }
        }
        "number" => {
            let Ok(n) = shown.trim().parse::<f64>() else {
                reasons.push(format!(
                    "data {path} = {shown:?}: not a number, so it does not match"
                ));
                return false;
            };
            values.iter().any(|v| {
                v.trim().parse::<f64>().is_ok_and(|w| match comparator {
                    ">" => n > w,
                    ">=" => n >= w,
                    "<" => n < w,
                    "<=" => n <= w,
                    "!=" => n != w,
                    _ => n == w,
                })
            })
        }
        "bool" => {
            let b = shown.trim().parse::<bool>().ok();
            values.iter().any(|v| {
                v.trim()
                    .parse::<bool>()
                    .ok()
                    .zip(b)
                    .is_some_and(|(w, b)| match comparator {
                        "!=" => b != w,
                        _ => b == w,
                    })
            })
        }
        other => {
            reasons.push(format!(
                "data {path}: unknown type {other:?}, so it does not match"
            ));
            return false;
        }
    };
    reasons.push(format!(
        "data {path} = {shown:?} {} {comparator} {values:?} ({ty})",
        if ok { "matches" } else { "does not match" }
    ));
    ok
}

/// Compiled filter regexes and parsed expressions, per thread: a sensor's filters are the
/// same strings event after event. Bounded (cleared when full) so odd inputs cannot grow it.
const CACHE_LIMIT: usize = 4096;

thread_local! {
    static REGEXES: std::cell::RefCell<std::collections::HashMap<String, Option<regex::Regex>>> =
        Default::default();
    static EXPRS: std::cell::RefCell<std::collections::HashMap<String, Result<expr::Expr, expr::Error>>> =
        Default::default();
}

fn cached_regex_match(pattern: &str, text: &str) -> bool {
    REGEXES.with(|c| {
        let mut c = c.borrow_mut();
        if !c.contains_key(pattern) {
            if c.len() >= CACHE_LIMIT {
                c.clear();
            }
            c.insert(pattern.to_string(), regex::Regex::new(pattern).ok());
        }
        c.get(pattern)
            .and_then(Option::as_ref)
            .is_some_and(|re| re.is_match(text))
    })
}

fn cached_govaluate(src: &str, env: &Value) -> Result<Value, expr::Error> {
    EXPRS.with(|c| {
        let mut c = c.borrow_mut();
        if !c.contains_key(src) {
            if c.len() >= CACHE_LIMIT {
                c.clear();
            }
            c.insert(src.to_string(), expr::parse(src, expr::Dialect::Govaluate));
        }
        match c.get(src) {
            Some(Ok(ast)) => expr::eval_govaluate_parsed(ast, env),
            Some(Err(e)) => Err(e.clone()),
            None => expr::eval_govaluate(src, env),
        }
    })
}

fn expr_filter(f: &Value, data: &Value, reasons: &mut Vec<String>) -> bool {
    let src = f["expr"].as_str().unwrap_or("");
    let mut env = Map::new();
    for field in f["fields"].as_array().into_iter().flatten() {
        let (Some(name), Some(path)) = (field["name"].as_str(), field["path"].as_str()) else {
            continue;
        };
        match lookup(data, path) {
            Some(v) => {
                env.insert(name.to_string(), v);
            }
            None => {
                reasons.push(format!(
                    "expr {src:?}: field {name} ({path}) is not in the event, so it does not match"
                ));
                return false;
            }
        }
    }
    match cached_govaluate(src, &Value::Object(env.clone())) {
        Ok(Value::Bool(b)) => {
            reasons.push(format!("expr {src:?} with {} is {b}", Value::Object(env)));
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

/// Seconds since midnight of an `HH:MM:SS` clock time.
fn clock(t: &str) -> Option<i64> {
    let mut it = t.split(':').map(|p| p.parse::<i64>().ok());
    Some(it.next()?? * 3600 + it.next()?? * 60 + it.next()??)
}

fn time_filter(f: &Value, event_time: &str, reasons: &mut Vec<String>) -> bool {
    let (start, stop) = (
        f["start"].as_str().and_then(clock),
        f["stop"].as_str().and_then(clock),
    );
    let at = expr::time::parse_rfc3339(event_time).map(|s| s.rem_euclid(86_400));
    let (Some(start), Some(stop), Some(at)) = (start, stop, at) else {
        reasons.push(format!(
            "time: the window or the event's time {event_time:?} is not readable, so it does not match"
        ));
        return false;
    };
    // A window whose stop is before its start spans midnight.
    let ok = if start <= stop {
        at >= start && at < stop
    } else {
        at >= start || at < stop
    };
    reasons.push(format!(
        "time {event_time} (UTC) {} the window {}–{}",
        if ok { "is in" } else { "is outside" },
        f["start"].as_str().unwrap_or(""),
        f["stop"].as_str().unwrap_or("")
    ));
    ok
}

fn context_filter(f: &Value, event: &Event, reasons: &mut Vec<String>) -> bool {
    let ctx = event.context();
    let Value::Object(want) = f else {
        return true;
    };
    let mut ok = true;
    for (k, v) in want {
        let got = ctx.get(k).cloned().unwrap_or(Value::Null);
        let hit = got == *v;
        reasons.push(format!(
            "context {k} = {got} {} {v}",
            if hit { "matches" } else { "does not match" }
        ));
        ok &= hit;
    }
    ok
}

/// Whether a trigger's `conditions` hold for the dependencies that are satisfied (without
/// conditions: all of them must be). Names may contain `-` (`test-dep-foo`), so this is its
/// own small grammar: names, `!`, `&&`, `||` and parentheses. An expression that does not
/// parse does not hold.
pub fn conditions_hold(conditions: Option<&str>, all: &[String], satisfied: &[String]) -> bool {
    let Some(src) = conditions.filter(|c| !c.trim().is_empty()) else {
        return all.iter().all(|d| satisfied.contains(d));
    };
    let tokens = condition_tokens(src);
    let mut p = CondParser {
        tokens: &tokens,
        pos: 0,
        satisfied,
        depth: 0,
    };
    matches!(p.or(), Some(v) if p.pos == tokens.len() && v)
}

fn condition_tokens(src: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = src.trim();
    while !rest.is_empty() {
        let (tok, r) = if let Some(r) = rest.strip_prefix("&&") {
            ("&&".to_string(), r)
        } else if let Some(r) = rest.strip_prefix("||") {
            ("||".to_string(), r)
        } else if rest.starts_with(['!', '(', ')']) {
            (rest[..1].to_string(), &rest[1..])
        } else {
            let len = rest
                .find(|c: char| c.is_whitespace() || "&|!()".contains(c))
                .unwrap_or(rest.len())
                .max(1);
            (rest[..len].to_string(), &rest[len..])
        };
        out.push(tok);
        rest = r.trim_start();
    }
    out
}

struct CondParser<'a> {
    tokens: &'a [String],
    pos: usize,
    satisfied: &'a [String],
    depth: usize,
}

impl CondParser<'_> {
    fn or(&mut self) -> Option<bool> {
        let mut v = self.and()?;
        while self.tokens.get(self.pos).is_some_and(|t| t == "||") {
            self.pos += 1;
            v |= self.and()?;
        }
        Some(v)
    }
    fn and(&mut self) -> Option<bool> {
        let mut v = self.unary()?;
        while self.tokens.get(self.pos).is_some_and(|t| t == "&&") {
            self.pos += 1;
            v &= self.unary()?;
        }
        Some(v)
    }
    fn unary(&mut self) -> Option<bool> {
        self.depth += 1;
        if self.depth > expr::MAX_NESTING {
            return None;
        }
        let tok = self.tokens.get(self.pos)?.clone();
        self.pos += 1;
        let v = match tok.as_str() {
            "!" => self.unary().map(|v| !v),
            "(" => {
                let v = self.or()?;
                (self.tokens.get(self.pos)? == ")").then_some(())?;
                self.pos += 1;
                Some(v)
            }
            "&&" | "||" | ")" => None,
            name => Some(self.satisfied.iter().any(|s| s == name)),
        };
        self.depth -= 1;
        v
    }
}

/// Applies a trigger's `parameters` to `resource` (the workflow or object it creates), from
/// the events of its dependencies. Returns the resource and one line per parameter.
pub fn apply_parameters(
    mut resource: Value,
    parameters: &[Value],
    events: &[(String, Event)],
) -> (Value, Vec<String>) {
    let mut notes = Vec::new();
    for p in parameters {
        let src = &p["src"];
        let dest = p["dest"].as_str().unwrap_or("");
        let event = src["dependencyName"]
            .as_str()
            .and_then(|d| events.iter().find(|(n, _)| n == d).map(|(_, e)| e));
        let value = match event {
            Some(e) => source_value(src, e, dest, &mut notes),
            None => None,
        }
        .or_else(|| src["value"].as_str().map(str::to_string));
        let Some(value) = value else {
            notes.push(format!(
                "{dest}: no value (the event lacks it and there is no default); left as it was"
            ));
            continue;
        };
        let current = lookup(&resource, dest)
            .map(|v| text(&v))
            .unwrap_or_default();
        let new = match p["operation"].as_str().unwrap_or("overwrite") {
            "append" => format!("{current}{value}"),
            "prepend" => format!("{value}{current}"),
            _ => value,
        };
        notes.push(format!("{dest} = {new:?}"));
        set_path(&mut resource, dest, Value::String(new));
    }
    (resource, notes)
}

/// A parameter's value from its dependency's event, as Argo Events resolves it: the data side
/// (`dataKey`/`dataTemplate`) wins over the context side; a template that fails or gives
/// nothing falls back to the key, and `None` to the parameter's default `value`.
fn source_value(src: &Value, e: &Event, dest: &str, notes: &mut Vec<String>) -> Option<String> {
    let data_side = src["dataKey"].is_string() || src["dataTemplate"].is_string();
    let context_side = src["contextKey"].is_string() || src["contextTemplate"].is_string();
    let (input, key, template) = if data_side {
        (
            e.data.clone(),
            src["dataKey"].as_str(),
            src["dataTemplate"].as_str(),
        )
    } else if context_side {
        (
            e.context(),
            src["contextKey"].as_str(),
            src["contextTemplate"].as_str(),
        )
    } else {
        return Some(if src["useRawData"] == true {
            e.data.to_string()
        } else {
            text(&e.data)
        });
    };
    if let Some(t) = template {
        match expr::gotemplate::render_input(t, &input) {
            Ok(v) => return Some(v),
            Err(err) => notes.push(format!(
                "{dest}: template {t:?} failed ({err}); falling back to the key or the default"
            )),
        }
    }
    key.and_then(|k| lookup(&input, k)).map(|v| text(&v))
}

/// Sets `path` (dot-separated keys, numbers index arrays) in `v`, creating objects on the way.
fn set_path(v: &mut Value, path: &str, value: Value) {
    let segments = split_path(path);
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
            let v = evaluate_dependency(&json!({"name": "d", "filters": filters}), &e);
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
                &json!({"filters": {"time": {"start": start, "stop": stop}}}),
                &e,
            )
            .matched
        };
        assert!(window("22:00:00", "02:00:00"), "across midnight");
        assert!(!window("08:00:00", "18:00:00"));
        e.kind = "falco.alert".into();
        let ctx = evaluate_dependency(
            &json!({"filters": {"context": {"type": "falco.alert"}}}),
            &e,
        );
        assert!(ctx.matched, "{:?}", ctx.reasons);
    }

    #[test]
    fn conditions_and_parameters() {
        let all = vec!["shell".to_string(), "audit".to_string()];
        assert!(!conditions_hold(None, &all, &["shell".into()]));
        assert!(conditions_hold(
            Some("shell || audit"),
            &all,
            &["shell".into()]
        ));
        assert!(!conditions_hold(
            Some("shell && audit"),
            &all,
            &["shell".into()]
        ));
        let dashed = vec!["test-dep".to_string(), "test-dep-foo".to_string()];
        assert!(conditions_hold(
            Some("test-dep-foo"),
            &dashed,
            &["test-dep-foo".into()]
        ));
        assert!(!conditions_hold(
            Some("test-dep"),
            &dashed,
            &["test-dep-foo".into()]
        ));
        assert!(conditions_hold(
            Some("!(test-dep && test-dep-foo)"),
            &dashed,
            &["test-dep".into()]
        ));
        assert!(!conditions_hold(
            Some("(test-dep"),
            &dashed,
            &["test-dep".into()]
        ));
        let wf = json!({"spec": {"arguments": {"parameters": [{"name": "pod", "value": "x"}]}}});
        let params = vec![
            json!({"src": {"dependencyName": "shell", "dataKey": "body.output_fields.k8s\\.pod\\.name"},
                   "dest": "spec.arguments.parameters.0.value"}),
            json!({"src": {"dependencyName": "shell", "dataKey": "body.priority"},
                   "dest": "metadata.labels.priority", "operation": "prepend"}),
            json!({"src": {"dependencyName": "audit", "dataKey": "body.x", "value": "fallback"},
                   "dest": "metadata.annotations.note"}),
        ];
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
        let params = vec![
            json!({"src": {"dependencyName": "d", "dataTemplate": "{{ .Input.body.message | title }}"},
                   "dest": "spec.arguments.parameters.0.value"}),
            json!({"src": {"dependencyName": "d", "contextTemplate": "{{ .Input.subject | title }}"},
                   "dest": "spec.arguments.parameters.1.value"}),
            json!({"src": {"dependencyName": "d", "dataTemplate": "{{ .Input.body.name | nospace | lower }}-"},
                   "dest": "metadata.generateName", "operation": "append"}),
            json!({"src": {"dependencyName": "d", "dataTemplate": "{{ .Input.body.missing }}", "dataKey": "body.n"},
                   "dest": "metadata.labels.n"}),
            json!({"src": {"dependencyName": "d", "dataTemplate": "{{ .Input.body.missing }}", "value": "none"},
                   "dest": "metadata.labels.default"}),
        ];
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
            let f = json!({"filters": {"data": [{"path": path, "type": ty, "value": [value]}],
                                       "exprs": [{"expr": value, "fields": [{"name": "a", "path": path}]}]}});
            let v = evaluate_dependency(&f, &falco());
            proptest::prop_assert!(!v.reasons.is_empty());
        }
    }
}
