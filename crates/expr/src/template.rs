//! `{{ ... }}` templating as Argo does it: simple tags (`{{inputs.parameters.x}}`) are looked up
//! verbatim in a flat map of variables, and expression tags (`{{= expr }}`) are evaluated with
//! the expr-lang subset in [`crate::eval`].

use std::collections::HashMap;

use serde_json::Value;

use crate::ast::Dialect;
use crate::{Error, eval, parse};

/// One piece of a template string.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment<'a> {
    Literal(&'a str),
    /// A `{{name}}` tag, trimmed.
    Tag(&'a str),
    /// A `{{= expr}}` tag: the expression source.
    Expression(&'a str),
}

/// Splits `s` into literals and tags. An unterminated `{{` is kept as literal text, as Argo does.
pub fn segments(s: &str) -> Vec<Segment<'_>> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = find_close(after) else { break };
        if start > 0 {
            out.push(Segment::Literal(&rest[..start]));
        }
        let inner = &after[..end];
        if let Some(e) = inner.strip_prefix('=') {
            out.push(Segment::Expression(e.trim()));
        } else {
            out.push(Segment::Tag(inner.trim()));
        }
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Segment::Literal(rest));
    }
    out
}

/// Finds the `}}` closing a tag, skipping quoted strings inside expression tags so that
/// `{{= "}}" }}` works.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let is_expr = bytes.first() == Some(&b'=');
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) => {
                if b == b'\\' {
                    i += 1;
                } else if b == q {
                    quote = None;
                }
            }
            None => {
                if is_expr && (b == b'"' || b == b'\'' || b == b'`') {
                    quote = Some(b);
                } else if b == b'}' && bytes.get(i + 1) == Some(&b'}') {
                    // `{{= {"a": {"b": 1}} }}`: let `}}}` close on the last pair.
                    if is_expr && bytes.get(i + 2) == Some(&b'}') {
                        i += 1;
                        continue;
                    }
                    return Some(i);
                }
            }
        }
        i += 1;
    }
    None
}

/// Every simple tag name in `s`.
pub fn tags(s: &str) -> Vec<&str> {
    segments(s)
        .into_iter()
        .filter_map(|seg| match seg {
            Segment::Tag(t) => Some(t),
            _ => None,
        })
        .collect()
}

/// Variables visible to a substitution: flat `name -> string` for simple tags (Argo's
/// `map[string]string`), plus a structured environment for expression tags.
pub trait Scope {
    fn lookup(&self, name: &str) -> Option<String>;
    /// The expression environment: a JSON object whose keys are top-level identifiers.
    fn env(&self) -> Value;
}

impl Scope for HashMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
    fn env(&self) -> Value {
        env_from_flat(self.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }
}

/// Builds a nested object from dotted names: `inputs.parameters.x = 1` becomes
/// `{"inputs": {"parameters": {"x": "1"}}}`. A JSON-looking value of `outputs.result` and
/// parameters stays a string, as in Argo.
pub fn env_from_flat<'a>(vars: impl Iterator<Item = (&'a str, &'a str)>) -> Value {
    let mut root = serde_json::Map::new();
    let mut sorted: Vec<_> = vars.collect();
    // Shorter names first, so that `item` is set before `item.x` may extend it.
    sorted.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then(a.0.cmp(b.0)));
    for (name, value) in sorted {
        let parts: Vec<&str> = name.split('.').collect();
        insert_path(&mut root, &parts, Value::String(value.to_string()));
    }
    Value::Object(root)
}

fn insert_path(map: &mut serde_json::Map<String, Value>, parts: &[&str], value: Value) {
    let Some((first, rest)) = parts.split_first() else {
        return;
    };
    if rest.is_empty() {
        // Keep an existing object: `item` might be a map whose fields are also listed.
        if !matches!(map.get(*first), Some(Value::Object(_))) {
            map.insert((*first).to_string(), value);
        }
        return;
    }
    let entry = map
        .entry((*first).to_string())
        .or_insert_with(|| Value::Object(Default::default()));
    if !entry.is_object() {
        // `item` was a string and `item.x` also exists: the object view wins for lookups.
        *entry = Value::Object(Default::default());
    }
    if let Value::Object(m) = entry {
        insert_path(m, rest, value);
    }
}

/// How to treat a simple tag that no variable matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unresolved {
    /// Leave `{{tag}}` in the output (Argo does this for tags resolved later, e.g. `pod.name`).
    Keep,
    /// Fail with [`Error::Unresolved`].
    Fail,
}

/// Substitutes every tag in `s`.
pub fn render(s: &str, scope: &dyn Scope, unresolved: Unresolved) -> Result<String, Error> {
    if !s.contains("{{") {
        return Ok(s.to_string());
    }
    let mut out = String::with_capacity(s.len());
    let mut env: Option<Value> = None;
    for seg in segments(s) {
        match seg {
            Segment::Literal(l) => out.push_str(l),
            Segment::Tag(t) => match scope.lookup(t) {
                Some(v) => out.push_str(&v),
                None if unresolved == Unresolved::Keep => {
                    out.push_str("{{");
                    out.push_str(t);
                    out.push_str("}}");
                }
                None => return Err(Error::Unresolved(t.to_string())),
            },
            Segment::Expression(src) => {
                let env = env.get_or_insert_with(|| scope.env());
                let ast = parse(src, Dialect::Expr)?;
                let v = eval(&ast, env)?;
                out.push_str(&crate::eval::to_template_string(&v));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn table() {
        let s = scope(&[
            ("inputs.parameters.message", "hi"),
            ("inputs.parameters.foo", "3"),
            ("workflow.name", "wf-1"),
            ("item.a", "x"),
        ]);
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("plain", Ok("plain")),
            ("{{inputs.parameters.message}}!", Ok("hi!")),
            ("{{ inputs.parameters.message }}", Ok("hi")),
            ("a {{workflow.name}} b {{item.a}}", Ok("a wf-1 b x")),
            ("{{=asInt(inputs.parameters.foo) * 10}}", Ok("30")),
            ("{{= inputs.parameters['message'] + '!' }}", Ok("hi!")),
            ("{{nope}}", Err("failed to resolve {{nope}}")),
            ("{{ unterminated", Ok("{{ unterminated")),
            ("{{=toJson({\"a\": 1})}}", Ok("{\"a\":1}")),
        ];
        for (input, want) in cases {
            let got = render(input, &s, Unresolved::Fail).map_err(|e| e.to_string());
            assert_eq!(
                got.as_deref().map_err(|e| e.as_str()),
                *want,
                "input {input:?}"
            );
        }
        assert_eq!(
            render("{{pod.name}}", &s, Unresolved::Keep).unwrap(),
            "{{pod.name}}"
        );
    }
}
