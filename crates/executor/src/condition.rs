//! `successCondition` / `failureCondition` of resource templates (pure).
//!
//! Argo parses them as Kubernetes label selectors (`k8s.io/apimachinery/pkg/labels`) whose
//! keys are gjson paths into the object: `status.succeeded > 0`, `status.phase in (Failed,
//! Error)`, `metadata.labels.quarantined`, `!status.failed`; commas are AND. A key's value is
//! its gjson string form (numbers as written, `true`/`false`, objects as JSON). The failure
//! condition is checked first; the resource has succeeded when every success requirement
//! matches, and otherwise it is still being waited for.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
    GreaterThan(i64),
    LessThan(i64),
}

/// One comma-separated part of a condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Requirement {
    key: String,
    op: Op,
    text: String,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("condition {condition:?}: {message}")]
pub struct ConditionError {
    pub condition: String,
    pub message: String,
}

/// What the conditions say about the object right now.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Succeeded,
    /// A failure requirement matched; the message names it like Argo does.
    Failed(String),
    /// Neither condition is met yet: look again later.
    Waiting,
}

/// Parses a condition; an empty one has no requirements.
pub fn parse(condition: &str) -> Result<Vec<Requirement>, ConditionError> {
    let err = |message: String| ConditionError {
        condition: condition.to_string(),
        message,
    };
    split_top_level(condition)
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|part| parse_requirement(part).map_err(err))
        .collect()
}

/// Splits on commas outside parentheses (`a in (x, y), b` is two requirements).
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#'))
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let text = part.to_string();
    let key_of = |k: &str| -> Result<String, String> {
        let k = k.trim();
        if valid_key(k) {
            Ok(k.to_string())
        } else {
            Err(format!(
                "{k:?} is not a key (a path such as status.phase was expected)"
            ))
        }
    };
    let set_of = |rest: &str| -> Result<Vec<String>, String> {
        let rest = rest.trim();
        let inner = rest
            .strip_prefix('(')
            .and_then(|r| r.strip_suffix(')'))
            .ok_or_else(|| {
                format!("expected a parenthesised list after the operator in {part:?}")
            })?;
        Ok(inner
            .split(',')
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .collect())
    };
    if let Some(k) = part.strip_prefix('!') {
        return Ok(Requirement {
            key: key_of(k)?,
            op: Op::DoesNotExist,
            text,
        });
    }
    // Word operators: `key in (..)`, `key notin (..)`.
    let words: Vec<&str> = part.splitn(2, char::is_whitespace).collect();
    if let [key, rest] = words.as_slice() {
        let rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix("notin") {
            return Ok(Requirement {
                key: key_of(key)?,
                op: Op::NotIn(set_of(r)?),
                text,
            });
        }
        if let Some(r) = rest
            .strip_prefix("in")
            .filter(|r| r.is_empty() || r.starts_with(|c: char| c.is_whitespace() || c == '('))
        {
            return Ok(Requirement {
                key: key_of(key)?,
                op: Op::In(set_of(r)?),
                text,
            });
        }
    }
    for (sym, make) in [
        ("!=", (|v: String| Op::NotEquals(v)) as fn(String) -> Op),
        ("==", |v| Op::Equals(v)),
        ("=", |v| Op::Equals(v)),
    ] {
        if let Some((k, v)) = part.split_once(sym) {
            return Ok(Requirement {
                key: key_of(k)?,
                op: make(v.trim().to_string()),
                text,
            });
        }
    }
    for (sym, greater) in [(">", true), ("<", false)] {
        if let Some((k, v)) = part.split_once(sym) {
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| format!("{:?} after {sym} is not an integer", v.trim()))?;
            return Ok(Requirement {
                key: key_of(k)?,
                op: if greater {
                    Op::GreaterThan(n)
                } else {
                    Op::LessThan(n)
                },
                text,
            });
        }
    }
    Ok(Requirement {
        key: key_of(part)?,
        op: Op::Exists,
        text,
    })
}

/// The value at a gjson-style dot path (`status.conditions.0.type`).
fn lookup<'a>(obj: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(obj, |v, part| match v {
        Value::Object(m) => m.get(part),
        Value::Array(a) => part.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

impl Requirement {
    pub fn matches(&self, obj: &Value) -> bool {
        let found = lookup(obj, &self.key).filter(|v| !v.is_null());
        let text = found.map(as_text);
        match &self.op {
            Op::Exists => found.is_some(),
            Op::DoesNotExist => found.is_none(),
            Op::Equals(v) => text.as_deref() == Some(v.as_str()),
            Op::In(set) => text.is_some_and(|t| set.contains(&t)),
            // Like Kubernetes selectors: a missing key is "not equal".
            Op::NotEquals(v) => text.as_deref() != Some(v.as_str()),
            Op::NotIn(set) => !text.is_some_and(|t| set.contains(&t)),
            Op::GreaterThan(n) => text
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Op::LessThan(n) => text
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        }
    }
}

/// Judges the object against both conditions, failure first (as Argo does).
pub fn judge(obj: &Value, success: &[Requirement], failure: &[Requirement]) -> Verdict {
    if let Some(r) = failure.iter().find(|r| r.matches(obj)) {
        return Verdict::Failed(format!("failure condition '{}' evaluated true", r.text));
    }
    if success.iter().all(|r| r.matches(obj)) {
        Verdict::Succeeded
    } else {
        Verdict::Waiting
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn job() -> Value {
        json!({
            "metadata": {"name": "scan", "labels": {"quarantined": "true"}},
            "status": {"succeeded": 1, "active": 0, "phase": "Complete",
                       "conditions": [{"type": "Complete", "status": "True"}]}
        })
    }

    #[test]
    fn requirements_table() {
        let obj = job();
        let cases = [
            ("status.succeeded > 0", true),
            ("status.succeeded > 1", false),
            ("status.active < 1", true),
            ("status.failed > 0", false),
            ("status.phase = Complete", true),
            ("status.phase == Complete", true),
            ("status.phase != Complete", false),
            ("status.phase in (Failed, Complete)", true),
            ("status.phase notin (Failed,Error)", true),
            ("status.missing != x", true),
            ("status.missing notin (x)", true),
            ("status.missing in (x)", false),
            ("metadata.labels.quarantined", true),
            ("metadata.labels.quarantined = true", true),
            ("!status.failed", true),
            ("!status.succeeded", false),
            ("status.conditions.0.type = Complete", true),
            ("status.succeeded > 0, status.phase = Complete", true),
            ("status.succeeded > 0, status.phase = Failed", false),
            ("", true),
        ];
        for (cond, expected) in cases {
            let reqs = parse(cond).unwrap_or_else(|e| panic!("{cond}: {e}"));
            let got = reqs.iter().all(|r| r.matches(&obj));
            assert_eq!(got, expected, "{cond}");
        }
    }

    #[test]
    fn failure_first_then_success_then_waiting() {
        let obj = job();
        let ok = parse("status.succeeded > 0").expect("parse");
        let bad = parse("status.phase in (Complete)").expect("parse");
        assert_eq!(
            judge(&obj, &ok, &bad),
            Verdict::Failed("failure condition 'status.phase in (Complete)' evaluated true".into())
        );
        assert_eq!(judge(&obj, &ok, &[]), Verdict::Succeeded);
        let later = parse("status.succeeded > 5").expect("parse");
        assert_eq!(judge(&obj, &later, &[]), Verdict::Waiting);
    }

    #[test]
    fn bad_conditions_say_what_is_wrong() {
        for (cond, fragment) in [
            ("status.succeeded > many", "is not an integer"),
            ("status.phase in Failed", "parenthesised list"),
            ("status phase = x", "is not a key"),
        ] {
            let e = parse(cond).expect_err(cond);
            assert!(e.to_string().contains(fragment), "{cond}: {e}");
        }
    }
}
