//! Builtin functions that take already-evaluated arguments.

use serde_json::Value;

use crate::Error;
use crate::eval::to_template_string;

fn arity(name: &str, args: &[Value], n: usize) -> Result<(), Error> {
    if args.len() != n {
        return Err(Error::Type(format!(
            "{name}() takes {n} argument(s), got {}",
            args.len()
        )));
    }
    Ok(())
}

fn string_arg<'a>(name: &str, v: &'a Value) -> Result<&'a str, Error> {
    v.as_str().ok_or_else(|| {
        Error::Type(format!(
            "{name}() expects a string, got {}",
            to_template_string(v)
        ))
    })
}

fn as_int(name: &str, v: &Value) -> Result<Value, Error> {
    match v {
        Value::Number(n) => Ok(Value::from(n.as_f64().unwrap_or(0.0) as i64)),
        Value::String(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>() {
                return Ok(Value::from(i));
            }
            t.parse::<f64>()
                .map(|f| Value::from(f as i64))
                .map_err(|_| Error::Type(format!("{name}(): cannot convert {s:?} to an integer")))
        }
        Value::Bool(b) => Ok(Value::from(*b as i64)),
        other => Err(Error::Type(format!(
            "{name}(): cannot convert {} to an integer",
            to_template_string(other)
        ))),
    }
}

fn as_float(name: &str, v: &Value) -> Result<Value, Error> {
    match v {
        Value::Number(n) => Ok(Value::from(n.as_f64().unwrap_or(0.0))),
        Value::String(s) => s
            .trim()
            .parse::<f64>()
            .map(Value::from)
            .map_err(|_| Error::Type(format!("{name}(): cannot convert {s:?} to a float"))),
        other => Err(Error::Type(format!(
            "{name}(): cannot convert {} to a float",
            to_template_string(other)
        ))),
    }
}

fn from_json(name: &str, v: &Value) -> Result<Value, Error> {
    let s = string_arg(name, v)?;
    serde_json::from_str(s).map_err(|e| Error::Type(format!("{name}(): invalid JSON: {e}")))
}

/// Argo's `jsonpath(json, path)`: a single match is returned bare, several as a list.
fn jsonpath(json: &Value, path: &str) -> Result<Value, Error> {
    let doc: Value = match json {
        Value::String(s) => serde_json::from_str(s)
            .map_err(|e| Error::Type(format!("jsonpath(): invalid JSON: {e}")))?,
        other => other.clone(),
    };
    let p = serde_json_path::JsonPath::parse(path)
        .map_err(|e| Error::Type(format!("jsonpath(): invalid path {path:?}: {e}")))?;
    let nodes = p.query(&doc).all();
    Ok(match nodes.len() {
        0 => Value::Null,
        1 if !path.contains("[*]") && !path.contains("[?") && !path.contains(':') => {
            nodes[0].clone()
        }
        _ => Value::Array(nodes.into_iter().cloned().collect()),
    })
}

pub(crate) fn call(name: &str, args: Vec<Value>) -> Result<Value, Error> {
    let a = &args;
    let s1 = |f: fn(&str) -> String| -> Result<Value, Error> {
        arity(name, a, 1)?;
        Ok(Value::String(f(&to_template_string(&a[0]))))
    };
    match name {
        // expr-lang's `concat(lists...)`: one list of every element, in order.
        "concat" => {
            let mut out = Vec::new();
            for v in a {
                match v {
                    Value::Array(items) => out.extend(items.iter().cloned()),
                    Value::Null => {}
                    other => {
                        return Err(Error::Type(format!(
                            "concat() expects lists, got {}",
                            to_template_string(other)
                        )));
                    }
                }
            }
            Ok(Value::Array(out))
        }
        "asInt" | "int" | "sprig.int" | "sprig.atoi" | "sprig.int64" => {
            arity(name, a, 1)?;
            as_int(name, &a[0])
        }
        "asFloat" | "float" | "sprig.float64" => {
            arity(name, a, 1)?;
            as_float(name, &a[0])
        }
        "string" | "toString" | "sprig.toString" => s1(|s| s.to_string()),
        "toJson" | "toJSON" | "sprig.toJson" | "sprig.toRawJson" => {
            arity(name, a, 1)?;
            Ok(Value::String(a[0].to_string()))
        }
        "fromJson" | "fromJSON" | "sprig.fromJson" => {
            arity(name, a, 1)?;
            from_json(name, &a[0])
        }
        "jsonpath" => {
            arity(name, a, 2)?;
            jsonpath(&a[0], string_arg(name, &a[1])?)
        }
        "len" => {
            arity(name, a, 1)?;
            Ok(Value::from(match &a[0] {
                Value::Array(v) => v.len(),
                Value::Object(m) => m.len(),
                Value::String(s) => s.chars().count(),
                Value::Null => 0,
                other => {
                    return Err(Error::Type(format!(
                        "len() of {}",
                        to_template_string(other)
                    )));
                }
            } as i64))
        }
        "upper" | "sprig.upper" => s1(|s| s.to_uppercase()),
        "lower" | "sprig.lower" => s1(|s| s.to_lowercase()),
        "trim" | "sprig.trim" => s1(|s| s.trim().to_string()),
        "trimSpace" => s1(|s| s.trim().to_string()),
        "sprig.b64enc" => s1(b64encode),
        "sprig.b64dec" => {
            arity(name, a, 1)?;
            b64decode(string_arg(name, &a[0])?)
                .map(Value::String)
                .ok_or_else(|| Error::Type(format!("{name}(): invalid base64")))
        }
        "sprig.quote" => s1(|s| format!("{s:?}")),
        "sprig.squote" => s1(|s| format!("'{s}'")),
        "split" | "sprig.splitList" => {
            arity(name, a, 2)?;
            // sprig's splitList takes the separator first.
            let (sep, s) = if name == "split" {
                (&a[1], &a[0])
            } else {
                (&a[0], &a[1])
            };
            let (sep, s) = (string_arg(name, sep)?, string_arg(name, s)?);
            Ok(Value::Array(
                s.split(sep).map(|p| Value::String(p.into())).collect(),
            ))
        }
        "join" | "sprig.join" => {
            arity(name, a, 2)?;
            let (list, sep) = if name == "join" {
                (&a[0], &a[1])
            } else {
                (&a[1], &a[0])
            };
            let sep = string_arg(name, sep)?;
            let Value::Array(items) = list else {
                return Err(Error::Type(format!("{name}() expects a list")));
            };
            Ok(Value::String(
                items
                    .iter()
                    .map(to_template_string)
                    .collect::<Vec<_>>()
                    .join(sep),
            ))
        }
        "replace" | "sprig.replace" => {
            arity(name, a, 3)?;
            // expr: replace(s, old, new); sprig: replace old new s.
            let (s, old, new) = if name == "replace" {
                (&a[0], &a[1], &a[2])
            } else {
                (&a[2], &a[0], &a[1])
            };
            Ok(Value::String(
                string_arg(name, s)?.replace(string_arg(name, old)?, string_arg(name, new)?),
            ))
        }
        "hasPrefix" | "sprig.hasPrefix" => {
            arity(name, a, 2)?;
            let (s, p) = if name == "hasPrefix" {
                (&a[0], &a[1])
            } else {
                (&a[1], &a[0])
            };
            Ok(Value::Bool(
                string_arg(name, s)?.starts_with(string_arg(name, p)?),
            ))
        }
        "hasSuffix" | "sprig.hasSuffix" => {
            arity(name, a, 2)?;
            let (s, p) = if name == "hasSuffix" {
                (&a[0], &a[1])
            } else {
                (&a[1], &a[0])
            };
            Ok(Value::Bool(
                string_arg(name, s)?.ends_with(string_arg(name, p)?),
            ))
        }
        "sprig.contains" => {
            arity(name, a, 2)?;
            Ok(Value::Bool(
                string_arg(name, &a[1])?.contains(string_arg(name, &a[0])?),
            ))
        }
        "sprig.default" => {
            arity(name, a, 2)?;
            let empty = matches!(&a[1], Value::Null | Value::Bool(false))
                || a[1].as_str() == Some("")
                || a[1].as_array().is_some_and(|v| v.is_empty());
            Ok(if empty { a[0].clone() } else { a[1].clone() })
        }
        "sprig.empty" => {
            arity(name, a, 1)?;
            Ok(Value::Bool(
                matches!(&a[0], Value::Null | Value::Bool(false)) || a[0].as_str() == Some(""),
            ))
        }
        "sprig.sub" | "sprig.div" | "sprig.mod" => {
            arity(name, a, 2)?;
            let x = as_int(name, &a[0])?.as_i64().unwrap_or(0);
            let y = as_int(name, &a[1])?.as_i64().unwrap_or(0);
            let r = match name {
                "sprig.sub" => x.checked_sub(y),
                "sprig.div" => x.checked_div(y),
                _ => x.checked_rem(y),
            };
            r.map(Value::from).ok_or_else(|| {
                Error::Type(format!("{name}(): arithmetic overflow or division by zero"))
            })
        }
        // sprig's add/mul/max/min take any number of arguments and work on int64s.
        "sprig.add" | "sprig.mul" | "sprig.max" | "sprig.min" => {
            if a.is_empty() {
                return Err(Error::Type(format!("{name}() needs at least one argument")));
            }
            let mut acc = as_int(name, &a[0])?.as_i64().unwrap_or(0);
            for v in &a[1..] {
                let y = as_int(name, v)?.as_i64().unwrap_or(0);
                acc = match name {
                    "sprig.add" => acc.checked_add(y),
                    "sprig.mul" => acc.checked_mul(y),
                    "sprig.max" => Some(acc.max(y)),
                    _ => Some(acc.min(y)),
                }
                .ok_or_else(|| Error::Type(format!("{name}(): arithmetic overflow")))?;
            }
            Ok(Value::from(acc))
        }
        "abs" => {
            arity(name, a, 1)?;
            let f = as_float(name, &a[0])?.as_f64().unwrap_or(0.0);
            Ok(if a[0].is_i64() {
                Value::from(f.abs() as i64)
            } else {
                Value::from(f.abs())
            })
        }
        "max" | "min" => {
            let nums: Vec<f64> = a.iter().filter_map(Value::as_f64).collect();
            if nums.len() != a.len() || nums.is_empty() {
                return Err(Error::Type(format!("{name}() expects numbers")));
            }
            let pick = if name == "max" {
                nums.iter().cloned().fold(f64::MIN, f64::max)
            } else {
                nums.iter().cloned().fold(f64::MAX, f64::min)
            };
            let idx = nums.iter().position(|n| *n == pick).unwrap_or(0);
            Ok(a[idx].clone())
        }
        "first" | "last" => {
            arity(name, a, 1)?;
            let Value::Array(v) = &a[0] else {
                return Ok(Value::Null);
            };
            Ok(if name == "first" { v.first() } else { v.last() }
                .cloned()
                .unwrap_or(Value::Null))
        }
        "keys" | "values" => {
            arity(name, a, 1)?;
            let Value::Object(m) = &a[0] else {
                return Err(Error::Type(format!("{name}() expects a map")));
            };
            Ok(Value::Array(if name == "keys" {
                m.keys().map(|k| Value::String(k.clone())).collect()
            } else {
                m.values().cloned().collect()
            }))
        }
        "sprig.date" => {
            arity(name, a, 2)?;
            let layout = string_arg(name, &a[0])?;
            let ts = string_arg(name, &a[1])?;
            crate::time::format_go_layout(layout, ts)
                .ok_or_else(|| {
                    Error::Type(format!("{name}(): cannot read {ts:?} as an RFC 3339 time"))
                })
                .map(Value::String)
        }
        _ => Err(Error::Type(format!("unknown function {name}()"))),
    }
}

pub(crate) fn b64encode(s: &str) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let b = s.as_bytes();
    let mut out = String::new();
    for chunk in b.chunks(3) {
        let n = (chunk[0] as u32) << 16
            | (*chunk.get(1).unwrap_or(&0) as u32) << 8
            | *chunk.get(2).unwrap_or(&0) as u32;
        out.push(T[(n >> 18) as usize & 63] as char);
        out.push(T[(n >> 12) as usize & 63] as char);
        out.push(if chunk.len() > 1 {
            T[(n >> 6) as usize & 63] as char
        } else {
            '='
        });
        out.push(if chunk.len() > 2 {
            T[n as usize & 63] as char
        } else {
            '='
        });
    }
    out
}

pub(crate) fn b64decode(s: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.bytes().filter(|c| !c.is_ascii_whitespace() && *c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32;
        bits = bits << 6 | v;
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push((bits >> n) as u8);
            bits &= (1 << n) - 1;
        }
    }
    String::from_utf8(out).ok()
}
