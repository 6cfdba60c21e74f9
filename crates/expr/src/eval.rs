//! Evaluation of [`Expr`] over JSON values, with the builtins Argo's expressions use:
//! expr-lang's (`len`, `filter`, `map`, `upper`, ...), Argo's (`asInt`, `asFloat`, `jsonpath`,
//! `toJson`) and a useful part of `sprig.*`.

use serde_json::{Map, Value};

use crate::Error;
use crate::ast::{BinaryOp, Dialect, Expr, UnaryOp};

/// Evaluates `expr` with `env` (a JSON object of top-level variables).
pub fn eval(expr: &Expr, env: &Value) -> Result<Value, Error> {
    Evaluator {
        env: std::borrow::Cow::Borrowed(env),
        dialect: Dialect::Expr,
    }
    .eval(expr, None)
}

/// Evaluates a govaluate expression with parameters (`env`'s keys), as Argo Events' filter
/// `exprs` do; bare words that are not parameters are strings.
pub fn eval_govaluate(src: &str, env: &Value) -> Result<Value, Error> {
    let ast = crate::parse(src, Dialect::Govaluate)?;
    Evaluator {
        env: std::borrow::Cow::Borrowed(env),
        dialect: Dialect::Govaluate,
    }
    .eval(&ast, None)
}

/// Evaluates a parsed govaluate expression (see [`eval_govaluate`]); callers that evaluate
/// the same expression often parse it once.
pub fn eval_govaluate_parsed(ast: &Expr, env: &Value) -> Result<Value, Error> {
    Evaluator {
        env: std::borrow::Cow::Borrowed(env),
        dialect: Dialect::Govaluate,
    }
    .eval(ast, None)
}

/// Evaluates a govaluate `when` expression (already `{{}}`-substituted) to a boolean, with
/// Argo's rule that bare identifiers are string literals.
pub fn eval_when(src: &str) -> Result<bool, Error> {
    let ast = crate::parse(src, Dialect::Govaluate)?;
    let v = Evaluator {
        env: std::borrow::Cow::Owned(Value::Null),
        dialect: Dialect::Govaluate,
    }
    .eval(&ast, None)?;
    match v {
        Value::Bool(b) => Ok(b),
        other => Err(Error::Type(format!(
            "expected boolean evaluation for '{src}', got {}",
            to_template_string(&other)
        ))),
    }
}

/// Evaluates an expr-lang source to a boolean (retry `expression`, hook `expression`).
pub fn eval_bool(src: &str, env: &Value) -> Result<bool, Error> {
    let ast = crate::parse(src, Dialect::Expr)?;
    match eval(&ast, env)? {
        Value::Bool(b) => Ok(b),
        other => Err(Error::Type(format!(
            "expected a boolean from '{src}', got {}",
            to_template_string(&other)
        ))),
    }
}

/// How a value prints when substituted into a template: strings bare, others as JSON.
pub fn to_template_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        Value::Number(n) => format_number(n),
        other => other.to_string(),
    }
}

fn format_number(n: &serde_json::Number) -> String {
    if let Some(f) = n.as_f64()
        && n.is_f64()
        && f.fract() == 0.0
        && f.abs() < 1e15
    {
        return format!("{}", f as i64);
    }
    n.to_string()
}

struct Evaluator<'a> {
    /// Borrowed from the caller; owned once `let` or `reduce` add a variable.
    env: std::borrow::Cow<'a, Value>,
    dialect: Dialect,
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn is_int(v: &Value) -> bool {
    v.is_i64() || v.is_u64()
}

fn truthy(v: &Value, what: &str) -> Result<bool, Error> {
    match v {
        Value::Bool(b) => Ok(*b),
        other => Err(Error::Type(format!(
            "{what} expects a boolean, got {}",
            to_template_string(other)
        ))),
    }
}

fn number_value(f: f64, as_int: bool) -> Value {
    if as_int && f.fract() == 0.0 && f.abs() < 9.2e18 {
        Value::from(f as i64)
    } else {
        Value::from(f)
    }
}

fn values_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn compare(a: &Value, b: &Value, op: BinaryOp) -> Result<bool, Error> {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Value::Number(_), Value::Number(_)) => num(a)
            .unwrap_or(0.0)
            .partial_cmp(&num(b).unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Value::String(x), Value::String(y)) => x.cmp(y),
        _ => {
            return Err(Error::Type(format!(
                "cannot compare {} and {}",
                to_template_string(a),
                to_template_string(b)
            )));
        }
    };
    Ok(match op {
        BinaryOp::Lt => ord == Ordering::Less,
        BinaryOp::Le => ord != Ordering::Greater,
        BinaryOp::Gt => ord == Ordering::Greater,
        _ => ord != Ordering::Less,
    })
}

fn regex_match(s: &Value, pattern: &Value) -> Result<bool, Error> {
    let (Value::String(s), Value::String(p)) = (s, pattern) else {
        return Err(Error::Type("matches expects strings on both sides".into()));
    };
    let re = regex::Regex::new(p)
        .map_err(|e| Error::Type(format!("invalid regular expression {p:?}: {e}")))?;
    Ok(re.is_match(s))
}

impl Evaluator<'_> {
    fn eval(&self, e: &Expr, pointer: Option<&Value>) -> Result<Value, Error> {
        match e {
            Expr::Literal(v) => Ok(v.clone()),
            Expr::Ident(name) => {
                if self.dialect == Dialect::Govaluate {
                    // govaluate's parameters (Argo Events' expr fields); otherwise, as in
                    // Argo's `when`, a bare word is a string.
                    if let Some(v) = self.env.get(name) {
                        return Ok(v.clone());
                    }
                    return Ok(Value::String(name.clone()));
                }
                Ok(self.env.get(name).cloned().unwrap_or(Value::Null))
            }
            Expr::Pointer => pointer
                .cloned()
                .ok_or_else(|| Error::Type("`#` used outside of a predicate".into())),
            Expr::Array(items) => Ok(Value::Array(
                items
                    .iter()
                    .map(|i| self.eval(i, pointer))
                    .collect::<Result<_, _>>()?,
            )),
            Expr::Map(entries) => {
                let mut m = Map::new();
                for (k, v) in entries {
                    m.insert(k.clone(), self.eval(v, pointer)?);
                }
                Ok(Value::Object(m))
            }
            Expr::Member {
                object,
                key,
                optional: _,
            } => {
                let obj = self.eval(object, pointer)?;
                let key = self.eval(key, pointer)?;
                Ok(member(&obj, &key))
            }
            Expr::Slice { object, from, to } => {
                let obj = self.eval(object, pointer)?;
                let len = match &obj {
                    Value::Array(a) => a.len(),
                    Value::String(s) => s.chars().count(),
                    other => {
                        return Err(Error::Type(format!(
                            "cannot slice {}",
                            to_template_string(other)
                        )));
                    }
                } as i64;
                let idx = |x: &Option<Box<Expr>>, default: i64| -> Result<usize, Error> {
                    let i = match x {
                        Some(x) => self
                            .eval(x, pointer)?
                            .as_i64()
                            .ok_or_else(|| Error::Type("slice bounds must be integers".into()))?,
                        None => default,
                    };
                    let i = if i < 0 { len + i } else { i };
                    Ok(i.clamp(0, len) as usize)
                };
                let (a, b) = (idx(from, 0)?, idx(to, len)?);
                let b = b.max(a);
                Ok(match obj {
                    Value::Array(arr) => Value::Array(arr[a..b].to_vec()),
                    Value::String(s) => Value::String(s.chars().skip(a).take(b - a).collect()),
                    _ => Value::Null,
                })
            }
            Expr::Unary { op, expr } => {
                let v = self.eval(expr, pointer)?;
                match op {
                    UnaryOp::Not => Ok(Value::Bool(!truthy(&v, "!")?)),
                    UnaryOp::Neg => {
                        let n = num(&v).ok_or_else(|| {
                            Error::Type(format!("cannot negate {}", to_template_string(&v)))
                        })?;
                        Ok(number_value(-n, is_int(&v)))
                    }
                    UnaryOp::Plus => Ok(v),
                }
            }
            Expr::Ternary {
                cond,
                then,
                otherwise,
            } => {
                if truthy(&self.eval(cond, pointer)?, "?:")? {
                    self.eval(then, pointer)
                } else {
                    self.eval(otherwise, pointer)
                }
            }
            Expr::Let { name, value, body } => {
                let value = self.eval(value, pointer)?;
                self.with(name, value).eval(body, pointer)
            }
            Expr::Binary { op, left, right } => self.binary(*op, left, right, pointer),
            Expr::Call { name, args } => self.call(name, args, pointer),
            Expr::MethodCall { object, name, args } => {
                // `sprig.upper(x)`: Argo exposes sprig's functions under the `sprig` namespace.
                if matches!(object.as_ref(), Expr::Ident(ns) if ns == "sprig") {
                    return self.call(&format!("sprig.{name}"), args, pointer);
                }
                let obj = self.eval(object, pointer)?;
                Err(Error::Type(format!(
                    "unknown method {name}() on {}",
                    to_template_string(&obj)
                )))
            }
        }
    }

    fn binary(
        &self,
        op: BinaryOp,
        left: &Expr,
        right: &Expr,
        pointer: Option<&Value>,
    ) -> Result<Value, Error> {
        use BinaryOp::*;
        // Short-circuiting operators first.
        match op {
            Or => {
                let l = self.eval(left, pointer)?;
                if truthy(&l, "||")? {
                    return Ok(Value::Bool(true));
                }
                return Ok(Value::Bool(truthy(&self.eval(right, pointer)?, "||")?));
            }
            And => {
                let l = self.eval(left, pointer)?;
                if !truthy(&l, "&&")? {
                    return Ok(Value::Bool(false));
                }
                return Ok(Value::Bool(truthy(&self.eval(right, pointer)?, "&&")?));
            }
            Coalesce => {
                let l = self.eval(left, pointer)?;
                if !l.is_null() {
                    return Ok(l);
                }
                return self.eval(right, pointer);
            }
            _ => {}
        }
        let l = self.eval(left, pointer)?;
        let r = self.eval(right, pointer)?;
        let b = |x: bool| Ok(Value::Bool(x));
        match op {
            Eq => b(values_equal(&l, &r)),
            Ne => b(!values_equal(&l, &r)),
            Lt | Le | Gt | Ge => b(compare(&l, &r, op)?),
            Matches => b(regex_match(&l, &r)?),
            NotMatches => b(!regex_match(&l, &r)?),
            In | NotIn => {
                let found = match &r {
                    Value::Array(a) => a.iter().any(|x| values_equal(x, &l)),
                    Value::Object(m) => l.as_str().is_some_and(|k| m.contains_key(k)),
                    Value::String(s) => l.as_str().is_some_and(|x| s.contains(x)),
                    _ => false,
                };
                b(found == (op == In))
            }
            Contains | StartsWith | EndsWith => {
                let (Value::String(s), Value::String(t)) = (&l, &r) else {
                    return Err(Error::Type(format!("{op:?} expects strings")));
                };
                b(match op {
                    Contains => s.contains(t.as_str()),
                    StartsWith => s.starts_with(t.as_str()),
                    _ => s.ends_with(t.as_str()),
                })
            }
            Range => {
                let (Some(a), Some(z)) = (l.as_i64(), r.as_i64()) else {
                    return Err(Error::Type("`..` expects integers".into()));
                };
                Ok(Value::Array((a..=z).map(Value::from).collect()))
            }
            Add => match (&l, &r) {
                (Value::String(a), Value::String(c)) => Ok(Value::String(format!("{a}{c}"))),
                (Value::Array(a), Value::Array(c)) => {
                    Ok(Value::Array(a.iter().chain(c).cloned().collect()))
                }
                _ => arith(&l, &r, op),
            },
            Sub | Mul | Div | Mod | Pow => arith(&l, &r, op),
            Or | And | Coalesce => unreachable!("handled above"),
        }
    }

    /// The same evaluation with one more variable (`let`, reduce's `#acc`).
    fn with(&self, name: &str, value: Value) -> Evaluator<'static> {
        let mut env = match self.env.as_ref() {
            Value::Object(m) => m.clone(),
            _ => Map::new(),
        };
        env.insert(name.to_string(), value);
        Evaluator {
            env: std::borrow::Cow::Owned(Value::Object(env)),
            dialect: self.dialect,
        }
    }

    /// expr-lang's `reduce(list, body[, initial])`: `#` is each element, `#acc` what the
    /// body gave for the one before (the initial value, or else the first element).
    fn reduce(&self, args: &[Expr], pointer: Option<&Value>) -> Result<Value, Error> {
        let (list, body, initial) = match args {
            [list, body] => (list, body, None),
            [list, body, initial] => (list, body, Some(initial)),
            _ => return Err(Error::Type("reduce() takes 2 or 3 arguments".into())),
        };
        let items = match self.eval(list, pointer)? {
            Value::Array(a) => a,
            Value::Null => Vec::new(),
            other => {
                return Err(Error::Type(format!(
                    "reduce() expects a list, got {}",
                    to_template_string(&other)
                )));
            }
        };
        let mut items = items.into_iter();
        let mut acc = match initial {
            Some(i) => self.eval(i, pointer)?,
            None => match items.next() {
                Some(first) => first,
                None => {
                    return Err(Error::Type(
                        "reduce() of an empty list without an initial value".into(),
                    ));
                }
            },
        };
        for item in items {
            acc = self.with("#acc", acc).eval(body, Some(&item))?;
        }
        Ok(acc)
    }

    fn call(&self, name: &str, args: &[Expr], pointer: Option<&Value>) -> Result<Value, Error> {
        if name == "reduce" {
            return self.reduce(args, pointer);
        }
        // Predicate builtins evaluate their second argument once per element.
        if let Some(kind) = Predicate::from_name(name) {
            let [list, pred] = args else {
                return Err(Error::Type(format!("{name}() takes 2 arguments")));
            };
            let list = self.eval(list, pointer)?;
            let items = match list {
                Value::Array(a) => a,
                Value::Null => Vec::new(),
                other => {
                    return Err(Error::Type(format!(
                        "{name}() expects a list, got {}",
                        to_template_string(&other)
                    )));
                }
            };
            return kind.apply(items, |item| self.eval(pred, Some(item)));
        }
        let vals: Vec<Value> = args
            .iter()
            .map(|a| self.eval(a, pointer))
            .collect::<Result<_, _>>()?;
        crate::functions::call(name, vals)
    }
}

fn member(obj: &Value, key: &Value) -> Value {
    match (obj, key) {
        (Value::Object(m), Value::String(k)) => m.get(k).cloned().unwrap_or(Value::Null),
        (Value::Array(a), k) => match k.as_i64() {
            Some(i) if i < 0 => a
                .get((a.len() as i64 + i) as usize)
                .cloned()
                .unwrap_or(Value::Null),
            Some(i) => a.get(i as usize).cloned().unwrap_or(Value::Null),
            None => Value::Null,
        },
        _ => Value::Null,
    }
}

fn arith(l: &Value, r: &Value, op: BinaryOp) -> Result<Value, Error> {
    let (Some(a), Some(b)) = (num(l), num(r)) else {
        return Err(Error::Type(format!(
            "cannot apply {op:?} to {} and {}",
            to_template_string(l),
            to_template_string(r)
        )));
    };
    let ints = is_int(l) && is_int(r);
    Ok(match op {
        BinaryOp::Add => number_value(a + b, ints),
        BinaryOp::Sub => number_value(a - b, ints),
        BinaryOp::Mul => number_value(a * b, ints),
        // expr-lang's `/` always yields a float.
        BinaryOp::Div => {
            if b == 0.0 {
                return Err(Error::Type("division by zero".into()));
            }
            Value::from(a / b)
        }
        BinaryOp::Mod => {
            if b == 0.0 {
                return Err(Error::Type("modulo by zero".into()));
            }
            number_value(a % b, ints)
        }
        _ => number_value(a.powf(b), false),
    })
}

#[derive(Clone, Copy)]
enum Predicate {
    Filter,
    Map,
    All,
    Any,
    None,
    One,
    Count,
    Find,
    FindIndex,
}

impl Predicate {
    fn from_name(name: &str) -> Option<Predicate> {
        Some(match name {
            "filter" => Predicate::Filter,
            "map" => Predicate::Map,
            "all" => Predicate::All,
            "any" => Predicate::Any,
            "none" => Predicate::None,
            "one" => Predicate::One,
            "count" => Predicate::Count,
            "find" => Predicate::Find,
            "findIndex" => Predicate::FindIndex,
            _ => return None,
        })
    }

    fn apply(
        self,
        items: Vec<Value>,
        mut f: impl FnMut(&Value) -> Result<Value, Error>,
    ) -> Result<Value, Error> {
        let mut test = |v: &Value| -> Result<bool, Error> { truthy(&f(v)?, "predicate") };
        Ok(match self {
            Predicate::Map => {
                let mut out = Vec::with_capacity(items.len());
                for i in &items {
                    out.push(f(i)?);
                }
                Value::Array(out)
            }
            Predicate::Filter => {
                let mut out = Vec::new();
                for i in items {
                    if test(&i)? {
                        out.push(i);
                    }
                }
                Value::Array(out)
            }
            Predicate::All => {
                for i in &items {
                    if !test(i)? {
                        return Ok(Value::Bool(false));
                    }
                }
                Value::Bool(true)
            }
            Predicate::Any | Predicate::None => {
                let mut any = false;
                for i in &items {
                    if test(i)? {
                        any = true;
                        break;
                    }
                }
                Value::Bool(if matches!(self, Predicate::Any) {
                    any
                } else {
                    !any
                })
            }
            Predicate::One | Predicate::Count => {
                let mut n = 0i64;
                for i in &items {
                    if test(i)? {
                        n += 1;
                    }
                }
                if matches!(self, Predicate::One) {
                    Value::Bool(n == 1)
                } else {
                    Value::from(n)
                }
            }
            Predicate::Find => {
                for i in items {
                    if test(&i)? {
                        return Ok(i);
                    }
                }
                Value::Null
            }
            Predicate::FindIndex => {
                for (n, i) in items.iter().enumerate() {
                    if test(i)? {
                        return Ok(Value::from(n as i64));
                    }
                }
                Value::from(-1)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;
    use serde_json::json;

    fn check(src: &str, env: Value, want: Result<Value, &str>) {
        let got = parse(src, Dialect::Expr)
            .and_then(|ast| eval(&ast, &env))
            .map_err(|e| e.to_string());
        match want {
            Ok(v) => assert_eq!(got, Ok(v), "{src}"),
            Err(msg) => assert!(
                got.as_ref().is_err_and(|e| e.contains(msg)),
                "{src}: {got:?}"
            ),
        }
    }

    /// expr-lang's `let`, comments, `reduce` with `#acc`, and `concat`, as Argo's
    /// github-path-filter WorkflowEventBinding uses them.
    #[test]
    fn let_comments_reduce_and_concat() {
        let env = json!({"commits": [{"added": ["a/x"], "removed": []}, {"added": ["b/y", "c/z"], "removed": ["a/w"]}]});
        for (src, want) in [
            ("let x = 2; x * 3", Ok(json!(6))),
            (
                "let x = 2; let y = x + 1; x * y // two lets\n",
                Ok(json!(6)),
            ),
            ("/* a note */ 1 + /* another */ 1", Ok(json!(2))),
            ("reduce([1, 2, 3], #acc + #)", Ok(json!(6))),
            ("reduce([1, 2, 3], #acc + #, 10)", Ok(json!(16))),
            ("reduce([], #acc + #)", Err("empty list")),
            (
                "reduce(commits, { let c = #; concat(#acc, c.added, c.removed) }, [])",
                Ok(json!(["a/x", "b/y", "c/z", "a/w"])),
            ),
            ("concat([1], [2, 3], [])", Ok(json!([1, 2, 3]))),
            ("concat([1], 2)", Err("concat() expects lists")),
            (
                "any(commits, { let c = #; any(c.added, { hasPrefix(#, 'b/') && len(c.added) == 2 }) })",
                Ok(json!(true)),
            ),
            // `let` is only a keyword before `name =`.
            ("let", Ok(Value::Null)),
            ("let x = 1", Err("expected \";\"")),
            ("1 /* open", Err("unterminated comment")),
        ] {
            check(src, env.clone(), want);
        }
    }

    #[test]
    fn expr_table() {
        let env = json!({
            "inputs": {"parameters": {"foo": "3", "should-print": "true", "week-temps": "{\"avg\": 1.5, \"max\": 3}"}},
            "steps": {"flip-coin": {"outputs": {"result": "heads"}}, "heads": {"outputs": {"result": "H"}}, "tails": {"outputs": {"result": "T"}}},
            "tasks": {"producer": {"outputs": {"parameters": {}}}},
            "data": ["a/main.log", "b.txt"],
        });
        let cases: Vec<(&str, Result<Value, &str>)> = vec![
            ("asInt(inputs.parameters.foo) * 10", Ok(json!(30))),
            (
                "inputs.parameters[\"should-print\"] == 'true'",
                Ok(json!(true)),
            ),
            (
                "steps['flip-coin'].outputs.result == 'heads' ? steps.heads.outputs.result : steps.tails.outputs.result",
                Ok(json!("H")),
            ),
            (
                "tasks.producer.outputs.parameters.msg ?? 'expr-fallback'",
                Ok(json!("expr-fallback")),
            ),
            (
                "filter(data, {# endsWith \"main.log\"})",
                Ok(json!(["a/main.log"])),
            ),
            ("toJson(filter([1, 3], {# > 1}))", Ok(json!("[3]"))),
            ("map([1, 2], # * 2)", Ok(json!([2, 4]))),
            (
                "jsonpath(inputs.parameters['week-temps'], '$.avg')",
                Ok(json!(1.5)),
            ),
            ("len(data) + 1", Ok(json!(3))),
            ("upper('a') + lower('B')", Ok(json!("Ab"))),
            ("1 / 2", Ok(json!(0.5))),
            ("2 ** 3", Ok(json!(8.0))),
            ("'abc' matches '^a'", Ok(json!(true))),
            ("3 in [1, 2, 3] && !(4 in [1])", Ok(json!(true))),
            ("1 + 'a'", Err("cannot apply")),
            ("sprig.upper('x')", Ok(json!("X"))),
            ("asFloat('1.5') + 1", Ok(json!(2.5))),
            ("nope(1)", Err("unknown function")),
        ];
        for (src, want) in cases {
            check(src, env.clone(), want);
        }
    }

    #[test]
    fn when_table() {
        let cases: &[(&str, Result<bool, &str>)] = &[
            ("heads == heads", Ok(true)),
            ("heads == tails", Ok(false)),
            ("Succeeded != Succeeded", Ok(false)),
            ("5 < 10", Ok(true)),
            ("1.10 == 1.1", Ok(true)),
            ("3 != 1 && 3 != 2", Ok(true)),
            ("true == true", Ok(true)),
            ("heads =~ hea", Ok(true)),
            ("tails =~ 'hea'", Ok(false)),
            ("\"a b\" == 'a b'", Ok(true)),
            ("false", Ok(false)),
            ("foo in (foo, bar)", Ok(true)),
            ("!(1 > 2)", Ok(true)),
            ("1 +", Err("unexpected end")),
            ("hello", Err("expected boolean")),
        ];
        for (src, want) in cases {
            let got = eval_when(src).map_err(|e| e.to_string());
            match want {
                Ok(b) => assert_eq!(got, Ok(*b), "{src}"),
                Err(m) => assert!(got.as_ref().is_err_and(|e| e.contains(m)), "{src}: {got:?}"),
            }
        }
    }
}
