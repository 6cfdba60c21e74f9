//! PATCH: JSON merge patch (RFC 7386), JSON patch (RFC 6902), strategic merge (lists of
//! objects merge by `name`; no `$patch` directives) and server-side apply (create or merge).

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::{Cluster, StatusError, Target, c_store_update};

pub(crate) fn apply(
    c: &mut Cluster,
    t: &Target,
    name: &str,
    content_type: &str,
    body: &Bytes,
    q: &BTreeMap<String, String>,
) -> Result<(StatusCode, Value), StatusError> {
    let key = (t.rt.qualified(), t.namespace.clone(), name.to_string());
    let current = c.objects.get(&key).cloned();
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| StatusError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let media = content_type.split(';').next().unwrap_or("").trim();
    if media == "application/apply-patch+yaml" {
        if q.get("fieldManager").is_none_or(|m| m.is_empty()) {
            return Err(StatusError::bad_request(
                "PATCH /apply requires a non-empty fieldManager query parameter",
            ));
        }
        return match current {
            None => {
                let mut obj = patch;
                obj["metadata"]["name"] = json!(name);
                c.create(&t.rt, &t.namespace, obj)
                    .map(|o| (StatusCode::CREATED, o))
            }
            Some(cur) => {
                let mut next = cur.clone();
                strategic(&mut next, &patch);
                Ok((
                    StatusCode::OK,
                    c_store_update(c, &t.rt, &t.namespace, &cur, next),
                ))
            }
        };
    }
    // Every other patch needs the object: a patch never creates.
    let cur = current.ok_or_else(|| StatusError::not_found(&t.rt, name))?;
    let mut next = cur.clone();
    match media {
        "application/merge-patch+json" => merge(&mut next, &patch),
        "application/strategic-merge-patch+json" => {
            if t.rt.group.contains('.') && !t.rt.group.ends_with(".k8s.io") {
                // Custom resources have no strategic merge schema; the real API says so.
                return Err(StatusError {
                    code: 415,
                    reason: "UnsupportedMediaType",
                    message: format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (strategic merge patch is not supported for {})",
                        t.rt.qualified()
                    ),
                });
            }
            strategic(&mut next, &patch)
        }
        "application/json-patch+json" => {
            json_patch(&mut next, &patch).map_err(|m| StatusError {
                code: 422,
                reason: "Invalid",
                message: m,
            })?
        }
        other => {
            return Err(StatusError {
                code: 415,
                reason: "UnsupportedMediaType",
                message: format!("the body of the request was in an unknown format ({other})"),
            });
        }
    }
    if next["metadata"]["name"] != cur["metadata"]["name"] {
        return Err(StatusError::invalid(
            &t.rt,
            name,
            "metadata.name: Invalid value: field is immutable",
        ));
    }
    Ok((
        StatusCode::OK,
        c_store_update(c, &t.rt, &t.namespace, &cur, next),
    ))
}

/// RFC 7386.
pub(crate) fn merge(target: &mut Value, patch: &Value) {
    let Some(p) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    if let Some(t) = target.as_object_mut() {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// Merge patch, except that lists whose items are objects with a `name` merge by name (the
/// strategic merge key of containers, env, volumes, ports...).
fn strategic(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    strategic(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (Value::Array(t), Value::Array(p))
            if p.iter()
                .all(|i| i.get("name").is_some_and(Value::is_string)) =>
        {
            for item in p {
                match t.iter_mut().find(|x| x.get("name") == item.get("name")) {
                    Some(existing) => strategic(existing, item),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn pointer_parts(path: &str) -> Result<Vec<String>, String> {
    if path.is_empty() {
        return Ok(vec![]);
    }
    let rest = path
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {path:?}: must start with /"))?;
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn remove_at(doc: &mut Value, path: &str) -> Result<Value, String> {
    let parts = pointer_parts(path)?;
    let (last, parent) = parts
        .split_last()
        .ok_or_else(|| "cannot remove the whole document".to_string())?;
    let parent_ptr: String = parent
        .iter()
        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
        .collect();
    let target = doc
        .pointer_mut(&parent_ptr)
        .ok_or_else(|| format!("doc is missing path: {path:?}"))?;
    match target {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("doc is missing key: {path:?}")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid index in {path:?}"))?;
            if i < a.len() {
                Ok(a.remove(i))
            } else {
                Err(format!("index out of range in {path:?}"))
            }
        }
        _ => Err(format!("doc is missing path: {path:?}")),
    }
}

fn add_at(doc: &mut Value, path: &str, value: Value, replace: bool) -> Result<(), String> {
    let parts = pointer_parts(path)?;
    let Some((last, parent)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    let parent_ptr: String = parent
        .iter()
        .map(|p| format!("/{}", p.replace('~', "~0").replace('/', "~1")))
        .collect();
    let target = doc
        .pointer_mut(&parent_ptr)
        .ok_or_else(|| format!("doc is missing path: {path:?}"))?;
    match target {
        Value::Object(m) => {
            if replace && !m.contains_key(last) {
                return Err(format!("doc is missing key: {path:?}"));
            }
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            if last == "-" && !replace {
                a.push(value);
                return Ok(());
            }
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid index in {path:?}"))?;
            if replace {
                let slot = a
                    .get_mut(i)
                    .ok_or_else(|| format!("index out of range in {path:?}"))?;
                *slot = value;
            } else if i <= a.len() {
                a.insert(i, value);
            } else {
                return Err(format!("index out of range in {path:?}"));
            }
            Ok(())
        }
        _ => Err(format!("doc is missing path: {path:?}")),
    }
}

/// RFC 6902.
fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), String> {
    let ops = patch
        .as_array()
        .ok_or_else(|| "a JSON patch must be a list of operations".to_string())?;
    for op in ops {
        let path = op["path"].as_str().ok_or("an operation needs a path")?;
        match op["op"].as_str() {
            Some("add") => add_at(doc, path, op["value"].clone(), false)?,
            Some("replace") => add_at(doc, path, op["value"].clone(), true)?,
            Some("remove") => {
                remove_at(doc, path)?;
            }
            Some("test") => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(format!("testing value {path} failed"));
                }
            }
            Some("move") | Some("copy") => {
                let from = op["from"].as_str().ok_or("move/copy needs from")?;
                let v = if op["op"] == "move" {
                    remove_at(doc, from)?
                } else {
                    doc.pointer(from)
                        .cloned()
                        .ok_or(format!("doc is missing path: {from:?}"))?
                };
                add_at(doc, path, v, false)?;
            }
            other => return Err(format!("unexpected kind of operation: {other:?}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for text in ["", "a", "ab", "abc", "abcd", "token-0123456789abcdef"] {
            let enc = crate::base64_encode(text.as_bytes());
            assert_eq!(crate::base64_decode(&enc), text.as_bytes(), "{enc}");
        }
        assert_eq!(crate::base64_encode(b"hi"), "aGk=");
    }

    #[test]
    fn patches_behave_like_the_rfcs() {
        let mut d = json!({"a": {"b": 1, "c": 2}, "l": [1, 2]});
        merge(&mut d, &json!({"a": {"b": null, "d": 3}, "l": [9]}));
        assert_eq!(d, json!({"a": {"c": 2, "d": 3}, "l": [9]}));

        let mut d = json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}});
        strategic(
            &mut d,
            &json!({"spec": {"containers": [{"name": "b", "image": "z"}]}}),
        );
        assert_eq!(d["spec"]["containers"][1]["image"], "z");
        assert_eq!(d["spec"]["containers"][0]["image"], "x");

        let mut d = json!({"metadata": {"labels": {"a": "1"}}, "l": [1]});
        json_patch(
            &mut d,
            &json!([
                {"op": "add", "path": "/metadata/labels/quarantine", "value": "true"},
                {"op": "add", "path": "/l/-", "value": 2},
                {"op": "replace", "path": "/metadata/labels/a", "value": "2"},
                {"op": "test", "path": "/l/1", "value": 2},
            ]),
        )
        .expect("patch");
        assert_eq!(
            d,
            json!({"metadata": {"labels": {"a": "2", "quarantine": "true"}}, "l": [1, 2]})
        );
        assert!(
            json_patch(
                &mut d,
                &json!([{"op": "replace", "path": "/nope", "value": 1}])
            )
            .is_err()
        );
        assert!(json_patch(&mut d, &json!([{"op": "remove", "path": "/metadata/x"}])).is_err());
    }
}
