//! `valueFrom.jsonPath` of resource templates: kubectl's JSONPath templates (pure).
//!
//! Argo runs `kubectl get -o jsonpath=<template>`, so outputs follow kubectl: text outside
//! `{}` is literal, `{.metadata.name}` is a path from the object, several matches are joined
//! by spaces, strings print raw and anything else as JSON. Escaped dots name keys that
//! contain dots (`{.metadata.labels.app\.kubernetes\.io/name}`). `range`/`end` blocks are
//! not supported and say so.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("jsonPath {template:?}: {message}")]
pub struct JsonPathError {
    pub template: String,
    pub message: String,
}

/// Renders a kubectl JSONPath template against `obj`.
pub fn render(obj: &Value, template: &str) -> Result<String, JsonPathError> {
    let err = |message: String| JsonPathError {
        template: template.to_string(),
        message,
    };
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..]
            .find('}')
            .map(|c| open + c)
            .ok_or_else(|| err("unclosed `{`".into()))?;
        let expr = rest[open + 1..close].trim();
        out.push_str(&evaluate(obj, expr).map_err(err)?);
        rest = &rest[close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a template's syntax without an object (for lint).
pub fn check(template: &str) -> Result<(), JsonPathError> {
    match render(&Value::Null, template) {
        Err(e) if e.message.ends_with("is not found in the object") => Ok(()),
        other => other.map(drop),
    }
}

fn evaluate(obj: &Value, expr: &str) -> Result<String, String> {
    if expr.starts_with("range") || expr == "end" {
        return Err("`range`/`end` blocks are not supported; use a path or jqFilter".into());
    }
    let path = to_rfc9535(expr)?;
    let parsed = serde_json_path::JsonPath::parse(&path)
        .map_err(|e| format!("{expr:?} is not a path: {e}"))?;
    let found = parsed.query(obj).all();
    if found.is_empty() {
        return Err(format!("{expr} is not found in the object"));
    }
    Ok(found
        .into_iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" "))
}

/// `.a.b\.c[0]` → `$['a']['b.c'][0]`.
fn to_rfc9535(expr: &str) -> Result<String, String> {
    let body = expr
        .strip_prefix('$')
        .unwrap_or(expr)
        .strip_prefix('.')
        .ok_or_else(|| format!("{expr:?} must start with `.` (like .metadata.name)"))?;
    let mut path = String::from("$");
    if body.is_empty() {
        return Ok(path);
    }
    let mut key = String::new();
    let mut chars = body.chars().peekable();
    let flush = |key: &mut String, path: &mut String| {
        if !key.is_empty() {
            path.push_str(&format!(
                "['{}']",
                key.replace('\\', "\\\\").replace('\'', "\\'")
            ));
            key.clear();
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some(escaped) => key.push(escaped),
                None => return Err(format!("{expr:?} ends with `\\`")),
            },
            '.' => flush(&mut key, &mut path),
            '[' => {
                flush(&mut key, &mut path);
                let mut index = String::from("[");
                for c in chars.by_ref() {
                    index.push(c);
                    if c == ']' {
                        break;
                    }
                }
                if !index.ends_with(']') {
                    return Err(format!("{expr:?} has an unclosed `[`"));
                }
                path.push_str(&index);
            }
            other => key.push(other),
        }
    }
    flush(&mut key, &mut path);
    Ok(path)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn templates_table() {
        let obj = json!({
            "metadata": {"name": "web", "namespace": "shop",
                         "labels": {"app.kubernetes.io/name": "web"}},
            "spec": {"replicas": 3, "template": {"spec": {"containers": [
                {"name": "main", "image": "nginx"}, {"name": "proxy", "image": "envoy"}]}}},
            "status": {"conditions": [{"type": "Available", "status": "True"}]}
        });
        let cases = [
            ("{.metadata.name}", "web"),
            ("{.metadata.name}.{.metadata.namespace}", "web.shop"),
            ("{.spec.replicas}", "3"),
            ("{.spec.template.spec.containers[*].name}", "main proxy"),
            ("{.spec.template.spec.containers[1].image}", "envoy"),
            (
                "{.status.conditions[0]}",
                r#"{"type":"Available","status":"True"}"#,
            ),
            (r"{.metadata.labels.app\.kubernetes\.io/name}", "web"),
            ("{$.metadata.name}", "web"),
            ("name=", "name="),
        ];
        for (template, expected) in cases {
            assert_eq!(
                render(&obj, template).unwrap_or_else(|e| panic!("{e}")),
                expected,
                "{template}"
            );
        }
    }

    #[test]
    fn errors_name_the_template_and_the_problem() {
        let obj = json!({"metadata": {"name": "web"}});
        for (template, fragment) in [
            ("{.metadata.uid}", "is not found"),
            ("{.metadata.name", "unclosed"),
            ("{range .items[*]}{.x}{end}", "not supported"),
            ("{metadata.name}", "must start with `.`"),
        ] {
            let e = render(&obj, template).expect_err(template);
            assert!(e.to_string().contains(fragment), "{template}: {e}");
        }
        assert!(check("{.metadata.uid}").is_ok());
        assert!(check("{.metadata.name").is_err());
    }
}
