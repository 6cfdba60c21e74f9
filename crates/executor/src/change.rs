//! What a resource step changed (or, in a dry run, would change): the difference between the
//! object before and after the write, as short `path: old → new` lines a responder reads in
//! the node's message, the audit log and a notification. Pure.

use serde_json::Value;

/// Fields the API server maintains itself; a change there is not something the step did.
const MAINTAINED: &[&str] = &[
    "metadata.resourceVersion",
    "metadata.managedFields",
    "metadata.generation",
    "metadata.uid",
    "metadata.creationTimestamp",
    "metadata.deletionTimestamp",
    "metadata.deletionGracePeriodSeconds",
    "status",
];

/// At most this many lines; a replaced object can differ everywhere.
const MAX_LINES: usize = 40;

/// The changes from `before` to `after`, one line per changed leaf (objects are walked, lists
/// and scalars compared whole), in path order.
pub fn changes(before: &Value, after: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    if out.len() > MAX_LINES {
        let more = out.len() - MAX_LINES;
        out.truncate(MAX_LINES);
        out.push(format!("… and {more} more changes"));
    }
    out
}

/// The API server omits empty maps and lists, so `{}` and `[]` are the same as unset.
fn is_unset(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn walk(path: &str, before: &Value, after: &Value, out: &mut Vec<String>) {
    if MAINTAINED.contains(&path) || before == after || (is_unset(before) && is_unset(after)) {
        return;
    }
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{}", escape(k))
                };
                walk(
                    &p,
                    b.get(k).unwrap_or(&Value::Null),
                    a.get(k).unwrap_or(&Value::Null),
                    out,
                );
            }
        }
        _ => out.push(format!("{path}: {} → {}", show(before), show(after))),
    }
}

/// Where `live` does not (yet) have what `desired` sets: one `path: live → desired` line per
/// differing field of the manifest, for "has the cluster converged to what was merged?".
/// Only the manifest's own fields are compared (the server adds defaults and status); maps
/// key by key, lists element by element (same length, each element the same way), and a
/// number equals the string of it (a Quantity `cpu: 1` reads back as `"1"`).
pub fn unconverged(desired: &Value, live: &Value) -> Vec<String> {
    let mut out = Vec::new();
    subset("", desired, live, &mut out);
    out
}

fn subset(path: &str, desired: &Value, live: &Value, out: &mut Vec<String>) {
    if MAINTAINED.contains(&path) || (is_unset(desired) && is_unset(live)) {
        return;
    }
    let child = |k: &str| {
        if path.is_empty() {
            k.to_string()
        } else {
            format!("{path}.{}", escape(k))
        }
    };
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            for (k, v) in d {
                subset(&child(k), v, l.get(k).unwrap_or(&Value::Null), out);
            }
        }
        (Value::Array(d), Value::Array(l)) if d.len() == l.len() => {
            for (i, (dv, lv)) in d.iter().zip(l).enumerate() {
                subset(&child(&i.to_string()), dv, lv, out);
            }
        }
        (Value::Number(n), Value::String(s)) | (Value::String(s), Value::Number(n))
            if n.to_string() == *s => {}
        (d, l) if d == l => {}
        (d, l) => out.push(format!("{path}: {} → {}", show(l), show(d))),
    }
}

/// Dots inside a key (`app.kubernetes.io/name`) are escaped the gjson way, so the path is
/// unambiguous.
fn escape(key: &str) -> String {
    key.replace('.', "\\.")
}

fn show(v: &Value) -> String {
    match v {
        Value::Null => "(unset)".into(),
        other => {
            let s = other.to_string();
            if s.chars().count() > 120 {
                format!("{}…", s.chars().take(120).collect::<String>())
            } else {
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changes_name_each_changed_leaf_and_skip_what_the_server_maintains() {
        let before = json!({
            "metadata": {"name": "web-1", "resourceVersion": "1",
                         "labels": {"app": "web", "tier": "front"}},
            "spec": {"containers": [{"name": "web"}], "nodeName": "n1"},
            "status": {"phase": "Running"}
        });
        let after = json!({
            "metadata": {"name": "web-1", "resourceVersion": "2",
                         "labels": {"app": "web", "status": "compromised",
                                    "app.kubernetes.io/part-of": "shop"}},
            "spec": {"containers": [{"name": "web"}, {"name": "debug"}], "nodeName": "n1"},
            "status": {"phase": "Failed"}
        });
        assert_eq!(
            changes(&before, &after),
            vec![
                r#"metadata.labels.app\.kubernetes\.io/part-of: (unset) → "shop""#.to_string(),
                r#"metadata.labels.status: (unset) → "compromised""#.to_string(),
                r#"metadata.labels.tier: "front" → (unset)"#.to_string(),
                r#"spec.containers: [{"name":"web"}] → [{"name":"web"},{"name":"debug"}]"#
                    .to_string(),
            ]
        );
        assert!(changes(&before, &before).is_empty());
        assert!(changes(&json!({"a": {}}), &json!({"a": null, "b": []})).is_empty());
    }

    #[test]
    fn unconverged_compares_only_what_the_manifest_sets() {
        let desired = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"template": {"spec": {
                "runtimeClassName": "gvisor",
                "containers": [{"name": "web", "resources": {"limits": {"cpu": 1}}}]}}}
        });
        let mut live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web", "extra": "x"},
                         "resourceVersion": "9", "uid": "u"},
            "spec": {"replicas": 3, "template": {"spec": {
                "runtimeClassName": "gvisor",
                "containers": [{"name": "web", "imagePullPolicy": "Always",
                                "resources": {"limits": {"cpu": "1"}}}]}}},
            "status": {"readyReplicas": 3}
        });
        assert!(
            unconverged(&desired, &live).is_empty(),
            "{:?}",
            unconverged(&desired, &live)
        );
        live["spec"]["template"]["spec"]["runtimeClassName"] = Value::Null;
        live["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] =
            json!("2");
        assert_eq!(
            unconverged(&desired, &live),
            vec![
                r#"spec.template.spec.runtimeClassName: (unset) → "gvisor""#.to_string(),
                r#"spec.template.spec.containers.0.resources.limits.cpu: "2" → 1"#.to_string(),
            ]
        );
        let two =
            json!({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "b"}]}}}});
        assert_eq!(unconverged(&two, &desired).len(), 1);
    }

    #[test]
    fn changes_of_a_new_object_list_its_fields_and_are_capped() {
        let lines = changes(
            &json!({}),
            &json!({"spec": {"podSelector": {"matchLabels": {"a": "b"}}}}),
        );
        assert_eq!(
            lines,
            vec![r#"spec: (unset) → {"podSelector":{"matchLabels":{"a":"b"}}}"#.to_string()]
        );
        let big: serde_json::Map<String, Value> =
            (0..100).map(|i| (format!("k{i:03}"), json!(i))).collect();
        let lines = changes(&json!({}), &Value::Object(big));
        assert_eq!(lines.len(), MAX_LINES + 1);
        assert_eq!(lines[MAX_LINES], "… and 60 more changes");
    }
}
