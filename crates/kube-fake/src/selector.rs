//! Label and field selectors as the API server parses them (the common subset).

use serde_json::Value;

pub(crate) enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Splits on commas that are not inside `( )`.
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, ch) in s.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn set(s: &str) -> Result<Vec<String>, String> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: expected (values), found {s:?}"))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).collect())
}

pub(crate) fn parse_labels(sel: &str) -> Result<Vec<Req>, String> {
    let mut reqs = Vec::new();
    for part in split_top(sel) {
        let p = part.trim();
        if p.is_empty() {
            continue;
        }
        let req = if let Some((k, v)) = p.split_once("!=") {
            Req::NotEq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = p.split_once("==") {
            Req::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = p.split_once('=') {
            Req::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = p.split_once(" notin ") {
            Req::NotIn(k.trim().into(), set(v)?)
        } else if let Some((k, v)) = p.split_once(" in ") {
            Req::In(k.trim().into(), set(v)?)
        } else if let Some(k) = p.strip_prefix('!') {
            Req::NotExists(k.trim().into())
        } else {
            Req::Exists(p.into())
        };
        reqs.push(req);
    }
    Ok(reqs)
}

pub(crate) fn labels_match(reqs: &[Req], labels: &Value) -> bool {
    let get = |k: &str| labels.get(k).and_then(Value::as_str);
    reqs.iter().all(|r| match r {
        Req::Eq(k, v) => get(k) == Some(v.as_str()),
        Req::NotEq(k, v) => get(k) != Some(v.as_str()),
        Req::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
        Req::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
        Req::Exists(k) => get(k).is_some(),
        Req::NotExists(k) => get(k).is_none(),
    })
}

/// Field selectors: `metadata.name` and `metadata.namespace` (every kind supports these),
/// `status.phase` for pods; `=`, `==`, `!=`.
pub(crate) fn fields_match(sel: &str, obj: &Value) -> Result<bool, String> {
    for part in sel.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (field, value, negate) = if let Some((f, v)) = part.split_once("!=") {
            (f, v, true)
        } else if let Some((f, v)) = part.split_once("==") {
            (f, v, false)
        } else if let Some((f, v)) = part.split_once('=') {
            (f, v, false)
        } else {
            return Err(format!("invalid selector: {part:?}; expected field=value"));
        };
        let actual = match field.trim() {
            "metadata.name" => obj["metadata"]["name"].as_str(),
            "metadata.namespace" => obj["metadata"]["namespace"].as_str(),
            "status.phase" => obj["status"]["phase"].as_str(),
            "spec.nodeName" => obj["spec"]["nodeName"].as_str(),
            other => return Err(format!("field label not supported: {other}")),
        };
        if (actual == Some(value.trim())) == negate {
            return Ok(false);
        }
    }
    Ok(true)
}
