//! Go's `text/template` with Sprig's functions: what Argo Events evaluates for a trigger
//! parameter's `dataTemplate` and `contextTemplate` (`{{ .Input.body.name | nospace | lower }}`).
//!
//! The data is JSON, seen the way Argo sees it (gjson's `Value()`): objects are maps printed
//! with sorted keys, every number is a `float64` (so `1000000` prints as `1e+06`, as in Argo),
//! a missing key is nil and prints as `<no value>`. Supported: text and actions with `{{-`/`-}}`
//! trimming and comments, pipelines, parenthesised pipelines, field chains on `.`, string,
//! number and boolean literals, `if`/`else if`/`else`, `with`, `range` (the element becomes
//! `.`), Go's builtins (`and or not len index print printf println eq ne lt le gt ge
//! urlquery`) and Sprig's string, list, math, encoding and regex functions. Not supported
//! (a parse error that names them): variables (`$x`), `define`/`template`/`block`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

/// A template that did not parse or could not be evaluated: what and where (a byte offset in
/// the template's text).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct TemplateError {
    pub message: String,
    pub offset: usize,
}

fn err<T>(offset: usize, message: impl Into<String>) -> Result<T, TemplateError> {
    Err(TemplateError {
        message: message.into(),
        offset,
    })
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        cond: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        value: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Range {
        over: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
struct Pipeline {
    offset: usize,
    commands: Vec<Vec<Operand>>,
}

#[derive(Debug, Clone)]
enum Operand {
    /// `.a.b` (empty: `.` itself), optionally after a parenthesised pipeline.
    Field(Vec<String>),
    Function(String),
    Literal(GoValue),
    Nested(Box<Pipeline>, Vec<String>),
}

/// A value as Go's template package sees JSON data.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum GoValue {
    #[default]
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<GoValue>),
    Map(BTreeMap<String, GoValue>),
}

impl GoValue {
    /// JSON as gjson's `Value()` gives it: every number a float64.
    pub fn from_json(v: &Value) -> GoValue {
        match v {
            Value::Null => GoValue::Nil,
            Value::Bool(b) => GoValue::Bool(*b),
            Value::Number(n) => GoValue::Float(n.as_f64().unwrap_or(0.0)),
            Value::String(s) => GoValue::Str(s.clone()),
            Value::Array(a) => GoValue::List(a.iter().map(GoValue::from_json).collect()),
            Value::Object(m) => GoValue::Map(
                m.iter()
                    .map(|(k, v)| (k.clone(), GoValue::from_json(v)))
                    .collect(),
            ),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            GoValue::Nil => Value::Null,
            GoValue::Bool(b) => Value::Bool(*b),
            GoValue::Int(i) => Value::from(*i),
            GoValue::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(*f as i64),
            GoValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null),
            GoValue::Str(s) => Value::String(s.clone()),
            GoValue::List(l) => Value::Array(l.iter().map(GoValue::to_json).collect()),
            GoValue::Map(m) => {
                Value::Object(m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
        }
    }

    /// Go's truth: false, 0, nil and empty strings, lists and maps are false.
    fn truthy(&self) -> bool {
        match self {
            GoValue::Nil => false,
            GoValue::Bool(b) => *b,
            GoValue::Int(i) => *i != 0,
            GoValue::Float(f) => *f != 0.0,
            GoValue::Str(s) => !s.is_empty(),
            GoValue::List(l) => !l.is_empty(),
            GoValue::Map(m) => !m.is_empty(),
        }
    }

    /// `fmt.Sprint` of the value, as the template prints it.
    fn print(&self) -> String {
        let mut out = String::new();
        self.print_into(&mut out, true);
        out
    }

    fn print_into(&self, out: &mut String, top: bool) {
        match self {
            // A nil printed by the template itself is `<no value>`; inside a list or map,
            // `fmt` prints `<nil>`.
            GoValue::Nil => out.push_str(if top { "<no value>" } else { "<nil>" }),
            GoValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            GoValue::Int(i) => {
                let _ = write!(out, "{i}");
            }
            GoValue::Float(f) => out.push_str(&go_float(*f)),
            GoValue::Str(s) => out.push_str(s),
            GoValue::List(l) => {
                out.push('[');
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    v.print_into(out, false);
                }
                out.push(']');
            }
            GoValue::Map(m) => {
                out.push_str("map[");
                for (i, (k, v)) in m.iter().enumerate() {
                    if i > 0 {
                        out.push(' ');
                    }
                    out.push_str(k);
                    out.push(':');
                    v.print_into(out, false);
                }
                out.push(']');
            }
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            GoValue::Int(i) => Some(*i as f64),
            GoValue::Float(f) => Some(*f),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            GoValue::Nil => "nil",
            GoValue::Bool(_) => "bool",
            GoValue::Int(_) => "int",
            GoValue::Float(_) => "float64",
            GoValue::Str(_) => "string",
            GoValue::List(_) => "[]interface {}",
            GoValue::Map(_) => "map[string]interface {}",
        }
    }
}

/// `%v` of a float64 (`strconv`'s shortest `%g`): exponent form when the decimal exponent is
/// below -4 or at least 6 — why a JSON `1000000` prints as `1e+06` in Argo's templates.
fn go_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return "0".into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        format!("{f}")
    } else {
        format!(
            "{mantissa}e{}{:02}",
            if exp < 0 { '-' } else { '+' },
            exp.abs()
        )
    }
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut p = Parser {
            src: text,
            pos: 0,
            trim_next_text: false,
        };
        let (nodes, end) = p.nodes()?;
        if let Some((kw, at)) = end {
            return err(at, format!("unexpected {{{{{kw}}}}}"));
        }
        Ok(Template { nodes })
    }

    /// Executes the template with `.` = `data`.
    pub fn execute(&self, data: &GoValue) -> Result<String, TemplateError> {
        let mut out = String::new();
        exec_nodes(&self.nodes, data, &mut out)?;
        Ok(out)
    }
}

/// Argo Events' `getValueWithTemplate`: the template run with `.Input` = the JSON `input`; an
/// empty result or `<no value>` is an error (the caller falls back to the key or the default).
pub fn render_input(template: &str, input: &Value) -> Result<String, TemplateError> {
    Template::parse(template)?.render_input(input)
}

impl Template {
    /// [`render_input`] with a template parsed once.
    pub fn render_input(&self, input: &Value) -> Result<String, TemplateError> {
        let t = self;
        let data = GoValue::Map(BTreeMap::from([(
            "Input".to_string(),
            GoValue::from_json(input),
        )]));
        let out = t.execute(&data)?;
        if out.is_empty() || out == "<no value>" {
            return err(0, format!("the template gives {out:?}"));
        }
        Ok(out)
    }
}

struct Parser<'a> {
    src: &'a str,
    pos: usize,
    trim_next_text: bool,
}

/// The keyword that ended a list of nodes (`end`, `else`, `else if …`), with its offset.
type EndTag = Option<(String, usize)>;

impl Parser<'_> {
    /// Nodes up to the end of the text or an `{{end}}`/`{{else}}`, which is returned.
    fn nodes(&mut self) -> Result<(Vec<Node>, EndTag), TemplateError> {
        let mut nodes = Vec::new();
        loop {
            let rest = &self.src[self.pos..];
            let open = rest.find("{{");
            let mut text = &rest[..open.unwrap_or(rest.len())];
            if std::mem::take(&mut self.trim_next_text) {
                text = text.trim_start();
            }
            let Some(open) = open else {
                if !text.is_empty() {
                    nodes.push(Node::Text(text.to_string()));
                }
                self.pos = self.src.len();
                return Ok((nodes, None));
            };
            let action_at = self.pos + open;
            let mut inner_start = action_at + 2;
            let trim_left = self.src[inner_start..].starts_with("- ")
                || self.src[inner_start..].starts_with("-\t")
                || self.src[inner_start..].starts_with("-\n");
            if trim_left {
                text = text.trim_end();
                inner_start += 1;
            }
            if !text.is_empty() {
                nodes.push(Node::Text(text.to_string()));
            }
            let Some(close_rel) = find_close(&self.src[inner_start..]) else {
                return err(action_at, "unclosed action: no }}");
            };
            let mut inner_end = inner_start + close_rel;
            let trim_right = inner_end > inner_start
                && self.src[..inner_end].ends_with('-')
                && self.src[..inner_end - 1].ends_with([' ', '\t', '\n']);
            if trim_right {
                inner_end -= 1;
            }
            self.pos = inner_start + close_rel + 2;
            self.trim_next_text = trim_right;
            let inner = self.src[inner_start..inner_end].trim();
            let inner_at = inner_start
                + (self.src[inner_start..inner_end].len()
                    - self.src[inner_start..inner_end].trim_start().len());
            if inner.starts_with("/*") {
                if !inner.ends_with("*/") {
                    return err(action_at, "unclosed comment");
                }
                continue;
            }
            let (word, after) = match inner.split_once(char::is_whitespace) {
                Some((w, a)) => (w, a.trim_start()),
                None => (inner, ""),
            };
            let after_at = inner_at + (inner.len() - after.len());
            match word {
                "end" => return Ok((nodes, Some(("end".into(), action_at)))),
                "else" => return Ok((nodes, Some((format!("else {after}"), after_at)))),
                "if" | "with" | "range" => {
                    let cond = parse_pipeline(after, after_at)?;
                    let (body, end) = self.nodes()?;
                    let otherwise = self.branch_end(end, action_at, word)?;
                    nodes.push(match word {
                        "if" => Node::If {
                            cond,
                            then: body,
                            otherwise,
                        },
                        "with" => Node::With {
                            value: cond,
                            then: body,
                            otherwise,
                        },
                        _ => Node::Range {
                            over: cond,
                            body,
                            otherwise,
                        },
                    });
                }
                "define" | "template" | "block" | "break" | "continue" => {
                    return err(
                        inner_at,
                        format!("{{{{{word}}}}} is not supported in trigger parameter templates"),
                    );
                }
                _ => nodes.push(Node::Action(parse_pipeline(inner, inner_at)?)),
            }
        }
    }

    /// After the body of `if`/`with`/`range`: `{{end}}`, or `{{else}}`/`{{else if …}}` and
    /// what follows up to the `{{end}}`.
    fn branch_end(
        &mut self,
        end: EndTag,
        opened_at: usize,
        word: &str,
    ) -> Result<Vec<Node>, TemplateError> {
        match end {
            None => err(opened_at, format!("{{{{{word}}}}} has no {{{{end}}}}")),
            Some((kw, _)) if kw == "end" => Ok(Vec::new()),
            Some((kw, at)) => {
                let rest = kw.trim_start_matches("else").trim();
                if rest.is_empty() {
                    let (nodes, end) = self.nodes()?;
                    match end {
                        Some((kw, _)) if kw == "end" => Ok(nodes),
                        Some((_, at)) => err(at, "a second {{else}}"),
                        None => err(opened_at, format!("{{{{{word}}}}} has no {{{{end}}}}")),
                    }
                } else if let Some(cond) = rest.strip_prefix("if ") {
                    // `else if C` is an `if` nested in the else branch, sharing its `end`.
                    let cond = parse_pipeline(cond.trim(), at + 3)?;
                    let (then, end) = self.nodes()?;
                    let otherwise = self.branch_end(end, opened_at, word)?;
                    Ok(vec![Node::If {
                        cond,
                        then,
                        otherwise,
                    }])
                } else {
                    err(at, format!("unexpected {{{{else {rest}}}}}"))
                }
            }
        }
    }
}

/// The `}}` that closes an action, skipping string literals.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if bytes.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Pipe,
    Open,
    Close,
    Word(String),
    Str(String),
}

fn tokenize(s: &str, base: usize) -> Result<Vec<(Token, usize)>, TemplateError> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        let at = base + at;
        match c {
            c if c.is_whitespace() => i += 1,
            '|' => {
                out.push((Token::Pipe, at));
                i += 1;
            }
            '(' => {
                out.push((Token::Open, at));
                i += 1;
            }
            ')' => {
                out.push((Token::Close, at));
                i += 1;
            }
            '"' => {
                let mut text = String::new();
                i += 1;
                loop {
                    let Some(&(_, c)) = chars.get(i) else {
                        return err(at, "unterminated string");
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let Some(&(_, e)) = chars.get(i) else {
                                return err(at, "unterminated string");
                            };
                            i += 1;
                            text.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '0' => '\0',
                                other => other,
                            });
                        }
                        c => text.push(c),
                    }
                }
                out.push((Token::Str(text), at));
            }
            '`' => {
                let mut text = String::new();
                i += 1;
                loop {
                    let Some(&(_, c)) = chars.get(i) else {
                        return err(at, "unterminated raw string");
                    };
                    i += 1;
                    if c == '`' {
                        break;
                    }
                    text.push(c);
                }
                out.push((Token::Str(text), at));
            }
            '$' => return err(at, "template variables ($x) are not supported"),
            _ => {
                let start = i;
                while i < chars.len() {
                    let c = chars[i].1;
                    if c.is_whitespace() || matches!(c, '|' | '(' | ')' | '"' | '`') {
                        break;
                    }
                    i += 1;
                }
                let word: String = chars[start..i].iter().map(|(_, c)| c).collect();
                out.push((Token::Word(word), at));
            }
        }
    }
    Ok(out)
}

fn parse_pipeline(s: &str, base: usize) -> Result<Pipeline, TemplateError> {
    let tokens = tokenize(s, base)?;
    let mut pos = 0;
    let p = pipeline_from(&tokens, &mut pos, base)?;
    if let Some((_, at)) = tokens.get(pos) {
        return err(*at, "unexpected )");
    }
    Ok(p)
}

fn pipeline_from(
    tokens: &[(Token, usize)],
    pos: &mut usize,
    base: usize,
) -> Result<Pipeline, TemplateError> {
    let offset = tokens.get(*pos).map(|t| t.1).unwrap_or(base);
    let mut commands = vec![Vec::new()];
    while let Some((tok, at)) = tokens.get(*pos) {
        match tok {
            Token::Close => break,
            Token::Pipe => {
                if commands.last().is_some_and(Vec::is_empty) {
                    return err(*at, "missing command before |");
                }
                commands.push(Vec::new());
                *pos += 1;
            }
            Token::Open => {
                *pos += 1;
                let inner = pipeline_from(tokens, pos, *at)?;
                if !matches!(tokens.get(*pos), Some((Token::Close, _))) {
                    return err(*at, "unclosed (");
                }
                *pos += 1;
                // `(pipeline).field`: the fields that follow the parenthesis.
                let mut fields = Vec::new();
                if let Some((Token::Word(w), _)) = tokens.get(*pos)
                    && w.starts_with('.')
                {
                    fields = field_chain(w, *at)?;
                    *pos += 1;
                }
                if let Some(cmd) = commands.last_mut() {
                    cmd.push(Operand::Nested(Box::new(inner), fields));
                }
            }
            Token::Str(s) => {
                if let Some(cmd) = commands.last_mut() {
                    cmd.push(Operand::Literal(GoValue::Str(s.clone())));
                }
                *pos += 1;
            }
            Token::Word(w) => {
                let operand = operand(w, *at)?;
                if let Some(cmd) = commands.last_mut() {
                    cmd.push(operand);
                }
                *pos += 1;
            }
        }
    }
    if commands.iter().any(Vec::is_empty) {
        return err(offset, "missing value for command");
    }
    Ok(Pipeline { offset, commands })
}

fn field_chain(w: &str, at: usize) -> Result<Vec<String>, TemplateError> {
    if w == "." {
        return Ok(Vec::new());
    }
    let fields: Vec<String> = w[1..].split('.').map(str::to_string).collect();
    if fields.iter().any(String::is_empty) {
        return err(at, format!("bad field chain {w:?}"));
    }
    Ok(fields)
}

fn operand(w: &str, at: usize) -> Result<Operand, TemplateError> {
    if w.starts_with('.') {
        return field_chain(w, at).map(Operand::Field);
    }
    Ok(match w {
        "true" => Operand::Literal(GoValue::Bool(true)),
        "false" => Operand::Literal(GoValue::Bool(false)),
        "nil" => Operand::Literal(GoValue::Nil),
        _ if w.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '+') => {
            if let Ok(i) = w.parse::<i64>() {
                Operand::Literal(GoValue::Int(i))
            } else if let Ok(f) = w.parse::<f64>() {
                Operand::Literal(GoValue::Float(f))
            } else {
                return err(at, format!("bad number {w:?}"));
            }
        }
        _ if w.chars().all(|c| c.is_alphanumeric() || c == '_') => {
            if !is_function(w) {
                return err(at, format!("function {w:?} not defined"));
            }
            Operand::Function(w.to_string())
        }
        _ => return err(at, format!("unexpected {w:?}")),
    })
}

fn exec_nodes(nodes: &[Node], dot: &GoValue, out: &mut String) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => out.push_str(&eval_pipeline(p, dot)?.print()),
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                let branch = if eval_pipeline(cond, dot)?.truthy() {
                    then
                } else {
                    otherwise
                };
                exec_nodes(branch, dot, out)?;
            }
            Node::With {
                value,
                then,
                otherwise,
            } => {
                let v = eval_pipeline(value, dot)?;
                if v.truthy() {
                    exec_nodes(then, &v, out)?;
                } else {
                    exec_nodes(otherwise, dot, out)?;
                }
            }
            Node::Range {
                over,
                body,
                otherwise,
            } => {
                let items: Vec<GoValue> = match eval_pipeline(over, dot)? {
                    GoValue::List(l) => l,
                    GoValue::Map(m) => m.into_values().collect(),
                    GoValue::Nil => Vec::new(),
                    GoValue::Int(n) => (0..n.max(0)).map(GoValue::Int).collect(),
                    other => {
                        return err(
                            over.offset,
                            format!("range can't iterate over {}", other.print()),
                        );
                    }
                };
                if items.is_empty() {
                    exec_nodes(otherwise, dot, out)?;
                }
                for item in &items {
                    exec_nodes(body, item, out)?;
                }
            }
        }
    }
    Ok(())
}

fn field(v: &GoValue, fields: &[String], at: usize) -> Result<GoValue, TemplateError> {
    let mut cur = v.clone();
    for f in fields {
        cur = match cur {
            GoValue::Map(mut m) => m.remove(f).unwrap_or(GoValue::Nil),
            GoValue::Nil => {
                return err(at, format!("nil pointer evaluating interface {{}}.{f}"));
            }
            other => {
                return err(
                    at,
                    format!("can't evaluate field {f} in type {}", other.type_name()),
                );
            }
        };
    }
    Ok(cur)
}

fn eval_pipeline(p: &Pipeline, dot: &GoValue) -> Result<GoValue, TemplateError> {
    let mut prev: Option<GoValue> = None;
    for cmd in &p.commands {
        prev = Some(eval_command(cmd, dot, prev.take(), p.offset)?);
    }
    Ok(prev.unwrap_or(GoValue::Nil))
}

fn eval_operand(o: &Operand, dot: &GoValue, at: usize) -> Result<GoValue, TemplateError> {
    match o {
        Operand::Field(f) => field(dot, f, at),
        Operand::Literal(v) => Ok(v.clone()),
        Operand::Nested(p, f) => field(&eval_pipeline(p, dot)?, f, at),
        Operand::Function(name) => call(name, Vec::new(), at),
    }
}

fn eval_command(
    cmd: &[Operand],
    dot: &GoValue,
    piped: Option<GoValue>,
    at: usize,
) -> Result<GoValue, TemplateError> {
    let Some((first, rest)) = cmd.split_first() else {
        return err(at, "empty command");
    };
    match first {
        Operand::Function(name) => {
            let mut args = rest
                .iter()
                .map(|o| eval_operand(o, dot, at))
                .collect::<Result<Vec<_>, _>>()?;
            args.extend(piped);
            call(name, args, at)
        }
        _ if !rest.is_empty() || piped.is_some() => {
            err(at, "only a function can take arguments or a piped value")
        }
        other => eval_operand(other, dot, at),
    }
}

const FUNCTIONS: &[&str] = &[
    // Go's builtins.
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "printf",
    "println",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "urlquery",
    "html",
    "js",
    // Sprig: strings.
    "lower",
    "upper",
    "title",
    "untitle",
    "trim",
    "trimAll",
    "trimPrefix",
    "trimSuffix",
    "nospace",
    "substr",
    "trunc",
    "abbrev",
    "replace",
    "repeat",
    "quote",
    "squote",
    "cat",
    "indent",
    "nindent",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "snakecase",
    "kebabcase",
    "camelcase",
    "toString",
    "toJson",
    "toRawJson",
    "toPrettyJson",
    "fromJson",
    "b64enc",
    "b64dec",
    "sha256sum",
    "splitList",
    "join",
    "regexMatch",
    "regexFind",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    // Sprig: values, lists, math.
    "default",
    "empty",
    "coalesce",
    "ternary",
    "first",
    "last",
    "list",
    "int",
    "int64",
    "atoi",
    "float64",
    "add",
    "add1",
    "sub",
    "mul",
    "div",
    "mod",
    "max",
    "min",
];

fn is_function(name: &str) -> bool {
    FUNCTIONS.contains(&name)
}

fn string_of(v: &GoValue) -> String {
    match v {
        GoValue::Nil => String::new(),
        other => other.print(),
    }
}

fn int_of(v: &GoValue) -> i64 {
    match v {
        GoValue::Int(i) => *i,
        GoValue::Float(f) => *f as i64,
        GoValue::Str(s) => s.trim().parse().unwrap_or(0),
        GoValue::Bool(b) => *b as i64,
        _ => 0,
    }
}

/// Go's `eq` on basic values: numbers compare by value whatever their type.
fn basic_eq(a: &GoValue, b: &GoValue) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn compare(name: &str, a: &GoValue, b: &GoValue, at: usize) -> Result<bool, TemplateError> {
    let ord = match (a, b) {
        (GoValue::Str(x), GoValue::Str(y)) => x.cmp(y),
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
            _ => {
                return err(
                    at,
                    format!(
                        "{name}: incompatible types for comparison ({} and {})",
                        a.type_name(),
                        b.type_name()
                    ),
                );
            }
        },
    };
    Ok(match name {
        "lt" => ord.is_lt(),
        "le" => ord.is_le(),
        "gt" => ord.is_gt(),
        _ => ord.is_ge(),
    })
}

/// Go's `printf` for the verbs templates use: `%s %v %d %q %f %.Nf %x %t %%`.
fn printf(format: &str, args: &[GoValue]) -> String {
    let mut out = String::new();
    let mut args = args.iter();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            precision = digits.parse::<usize>().ok();
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        match verb {
            'd' => {
                let _ = write!(out, "{}", int_of(arg));
            }
            'f' => {
                let f = arg.as_f64().unwrap_or(0.0);
                let _ = write!(out, "{f:.*}", precision.unwrap_or(6));
            }
            'q' => {
                let _ = write!(out, "{:?}", string_of(arg));
            }
            'x' => match arg {
                GoValue::Int(_) | GoValue::Float(_) => {
                    let _ = write!(out, "{:x}", int_of(arg));
                }
                other => {
                    for b in string_of(other).bytes() {
                        let _ = write!(out, "{b:02x}");
                    }
                }
            },
            _ => out.push_str(&arg.print()),
        }
    }
    for extra in args {
        let _ = write!(out, "%!(EXTRA {})", extra.print());
    }
    out
}

fn title(s: &str, upper: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_word_start = true;
    for c in s.chars() {
        if at_word_start && c.is_alphanumeric() {
            if upper {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
        } else {
            out.push(c);
        }
        at_word_start = !c.is_alphanumeric() && c != '\'';
    }
    out
}

/// Words of `s` for snake/kebab/camel case: split at non-alphanumerics and before an
/// upper-case letter that follows a lower-case one.
fn words(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn json_fn(name: &str, args: Vec<GoValue>, at: usize) -> Result<GoValue, TemplateError> {
    let value = args.into_iter().next().unwrap_or(GoValue::Nil).to_json();
    if name == "fromJson" {
        let text = match &value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        return serde_json::from_str::<Value>(&text)
            .map(|v| GoValue::from_json(&v))
            .or_else(|e| err(at, format!("fromJson: {e}")));
    }
    let text = if name == "toPrettyJson" {
        serde_json::to_string_pretty(&value)
    } else {
        serde_json::to_string(&value)
    };
    text.map(GoValue::Str)
        .or_else(|e| err(at, format!("{name}: {e}")))
}

fn call(name: &str, mut args: Vec<GoValue>, at: usize) -> Result<GoValue, TemplateError> {
    let n = args.len();
    let need = |k: usize| -> Result<(), TemplateError> {
        if n == k {
            Ok(())
        } else {
            err(
                at,
                format!("wrong number of args for {name}: want {k} got {n}"),
            )
        }
    };
    let s = |i: usize, args: &[GoValue]| string_of(&args[i]);
    let regex = |pattern: &str| {
        regex::Regex::new(pattern).or_else(|e| err(at, format!("{name}: bad regex: {e}")))
    };
    Ok(match name {
        "and" | "or" => {
            if n == 0 {
                return err(
                    at,
                    format!("wrong number of args for {name}: want at least 1"),
                );
            }
            let want = name == "or";
            let pick = args
                .iter()
                .position(|a| a.truthy() == want)
                .unwrap_or(n - 1);
            args.swap_remove(pick)
        }
        "not" => {
            need(1)?;
            GoValue::Bool(!args[0].truthy())
        }
        "len" => {
            need(1)?;
            GoValue::Int(match &args[0] {
                GoValue::Str(s) => s.len() as i64,
                GoValue::List(l) => l.len() as i64,
                GoValue::Map(m) => m.len() as i64,
                other => return err(at, format!("len of type {}", other.type_name())),
            })
        }
        "index" => {
            if n == 0 {
                return err(at, "wrong number of args for index: want at least 1");
            }
            let mut cur = args.remove(0);
            for key in args {
                cur = match (cur, &key) {
                    (GoValue::List(l), k) => {
                        let i = int_of(k);
                        usize::try_from(i)
                            .ok()
                            .and_then(|i| l.get(i).cloned())
                            .map_or_else(|| err(at, format!("index out of range: {i}")), Ok)?
                    }
                    (GoValue::Map(mut m), k) => m.remove(&string_of(k)).unwrap_or(GoValue::Nil),
                    (GoValue::Nil, _) => return err(at, "index of untyped nil"),
                    (other, _) => {
                        return err(
                            at,
                            format!("can't index item of type {}", other.type_name()),
                        );
                    }
                };
            }
            cur
        }
        "print" | "println" => {
            let parts: Vec<String> = args.iter().map(|a| a.print()).collect();
            let mut text = if name == "println" {
                parts.join(" ")
            } else {
                // Go's Sprint puts spaces only between operands that are not strings.
                let mut t = String::new();
                for (i, a) in args.iter().enumerate() {
                    if i > 0
                        && !matches!(a, GoValue::Str(_))
                        && !matches!(args[i - 1], GoValue::Str(_))
                    {
                        t.push(' ');
                    }
                    t.push_str(&parts[i]);
                }
                t
            };
            if name == "println" {
                text.push('\n');
            }
            GoValue::Str(text)
        }
        "printf" => {
            if n == 0 {
                return err(at, "wrong number of args for printf: want at least 1");
            }
            GoValue::Str(printf(&s(0, &args), &args[1..]))
        }
        "eq" => {
            if n < 2 {
                return err(at, "wrong number of args for eq: want at least 2");
            }
            GoValue::Bool(args[1..].iter().any(|b| basic_eq(&args[0], b)))
        }
        "ne" => {
            need(2)?;
            GoValue::Bool(!basic_eq(&args[0], &args[1]))
        }
        "lt" | "le" | "gt" | "ge" => {
            need(2)?;
            GoValue::Bool(compare(name, &args[0], &args[1], at)?)
        }
        "urlquery" => {
            let text: String = args.iter().map(string_of).collect();
            let mut out = String::new();
            for b in text.bytes() {
                match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                        out.push(b as char)
                    }
                    b' ' => out.push('+'),
                    _ => {
                        let _ = write!(out, "%{b:02X}");
                    }
                }
            }
            GoValue::Str(out)
        }
        "html" | "js" => {
            let text: String = args.iter().map(string_of).collect();
            GoValue::Str(
                text.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&#34;")
                    .replace('\'', "&#39;"),
            )
        }
        "lower" | "upper" | "title" | "untitle" | "trim" | "nospace" | "snakecase"
        | "kebabcase" | "camelcase" | "toString" | "b64enc" | "b64dec" | "sha256sum" => {
            need(1)?;
            let text = s(0, &args);
            GoValue::Str(match name {
                "lower" => text.to_lowercase(),
                "upper" => text.to_uppercase(),
                "title" => title(&text, true),
                "untitle" => title(&text, false),
                "trim" => text.trim().to_string(),
                "nospace" => text.chars().filter(|c| !c.is_whitespace()).collect(),
                "snakecase" | "kebabcase" => {
                    let sep = if name == "snakecase" { "_" } else { "-" };
                    words(&text)
                        .iter()
                        .map(|w| w.to_lowercase())
                        .collect::<Vec<_>>()
                        .join(sep)
                }
                "camelcase" => words(&text)
                    .iter()
                    .map(|w| title(&w.to_lowercase(), true))
                    .collect(),
                "b64enc" => crate::functions::b64encode(&text),
                "b64dec" => match crate::functions::b64decode(&text) {
                    Some(d) => d,
                    None => return err(at, "b64dec: invalid base64"),
                },
                "sha256sum" => {
                    use sha2::Digest;
                    sha2::Sha256::digest(text.as_bytes())
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                }
                _ => text,
            })
        }
        "toJson" | "toRawJson" | "toPrettyJson" | "fromJson" => {
            need(1)?;
            json_fn(name, args, at)?
        }
        "trimAll" | "trimPrefix" | "trimSuffix" | "contains" | "hasPrefix" | "hasSuffix" => {
            need(2)?;
            let (arg, text) = (s(0, &args), s(1, &args));
            match name {
                "trimAll" => GoValue::Str(text.trim_matches(|c| arg.contains(c)).to_string()),
                "trimPrefix" => GoValue::Str(text.strip_prefix(&arg).unwrap_or(&text).to_string()),
                "trimSuffix" => GoValue::Str(text.strip_suffix(&arg).unwrap_or(&text).to_string()),
                "contains" => GoValue::Bool(text.contains(&arg)),
                "hasPrefix" => GoValue::Bool(text.starts_with(&arg)),
                _ => GoValue::Bool(text.ends_with(&arg)),
            }
        }
        "substr" => {
            need(3)?;
            // Sprig works on bytes; cut on character boundaries so the result stays text.
            let text = s(2, &args);
            let (start, end) = (int_of(&args[0]), int_of(&args[1]));
            let len = text.len() as i64;
            let start = start.clamp(0, len) as usize;
            let end = if end < 0 || end > len { len } else { end } as usize;
            GoValue::Str(byte_range(&text, start, end.max(start)))
        }
        "trunc" => {
            need(2)?;
            let (k, text) = (int_of(&args[0]), s(1, &args));
            let len = text.len() as i64;
            GoValue::Str(if k >= 0 {
                byte_range(&text, 0, k.min(len) as usize)
            } else {
                byte_range(&text, (len + k).max(0) as usize, len as usize)
            })
        }
        "abbrev" => {
            need(2)?;
            let (k, text) = (int_of(&args[0]).max(0) as usize, s(1, &args));
            GoValue::Str(if text.chars().count() <= k || k < 4 {
                text
            } else {
                format!("{}...", text.chars().take(k - 3).collect::<String>())
            })
        }
        "replace" => {
            need(3)?;
            GoValue::Str(s(2, &args).replace(&s(0, &args), &s(1, &args)))
        }
        "repeat" => {
            need(2)?;
            GoValue::Str(s(1, &args).repeat(int_of(&args[0]).clamp(0, 10_000) as usize))
        }
        "quote" | "squote" => GoValue::Str(
            args.iter()
                .filter(|a| **a != GoValue::Nil)
                .map(|a| {
                    if name == "quote" {
                        format!("{:?}", string_of(a))
                    } else {
                        format!("'{}'", string_of(a))
                    }
                })
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "cat" => GoValue::Str(
            args.iter()
                .filter(|a| **a != GoValue::Nil)
                .map(string_of)
                .collect::<Vec<_>>()
                .join(" "),
        ),
        "indent" | "nindent" => {
            need(2)?;
            let pad = " ".repeat(int_of(&args[0]).clamp(0, 1000) as usize);
            let text = s(1, &args);
            let indented = text
                .split('\n')
                .map(|l| format!("{pad}{l}"))
                .collect::<Vec<_>>()
                .join("\n");
            GoValue::Str(if name == "nindent" {
                format!("\n{indented}")
            } else {
                indented
            })
        }
        "splitList" => {
            need(2)?;
            GoValue::List(
                s(1, &args)
                    .split(&s(0, &args))
                    .map(|p| GoValue::Str(p.to_string()))
                    .collect(),
            )
        }
        "join" => {
            need(2)?;
            let sep = s(0, &args);
            match &args[1] {
                GoValue::List(l) => {
                    GoValue::Str(l.iter().map(string_of).collect::<Vec<_>>().join(&sep))
                }
                other => GoValue::Str(string_of(other)),
            }
        }
        "regexMatch" => {
            need(2)?;
            GoValue::Bool(regex(&s(0, &args))?.is_match(&s(1, &args)))
        }
        "regexFind" => {
            need(2)?;
            let text = s(1, &args);
            GoValue::Str(
                regex(&s(0, &args))?
                    .find(&text)
                    .map(|m| m.as_str().to_string())
                    .unwrap_or_default(),
            )
        }
        "regexReplaceAll" | "regexReplaceAllLiteral" => {
            need(3)?;
            let re = regex(&s(0, &args))?;
            let (text, with) = (s(1, &args), s(2, &args));
            GoValue::Str(if name == "regexReplaceAll" {
                re.replace_all(&text, with.as_str()).into_owned()
            } else {
                re.replace_all(&text, regex::NoExpand(&with)).into_owned()
            })
        }
        "default" => {
            need(2)?;
            let given = args.pop().unwrap_or(GoValue::Nil);
            if given.truthy() {
                given
            } else {
                args.pop().unwrap_or(GoValue::Nil)
            }
        }
        "empty" => {
            need(1)?;
            GoValue::Bool(!args[0].truthy())
        }
        "coalesce" => args
            .into_iter()
            .find(GoValue::truthy)
            .unwrap_or(GoValue::Nil),
        "ternary" => {
            need(3)?;
            let cond = args[2].truthy();
            args.swap_remove(if cond { 0 } else { 1 })
        }
        "first" | "last" => {
            need(1)?;
            match args.pop() {
                Some(GoValue::List(mut l)) => {
                    let item = if name == "first" {
                        l.first_mut()
                    } else {
                        l.last_mut()
                    };
                    item.map(std::mem::take).unwrap_or(GoValue::Nil)
                }
                _ => GoValue::Nil,
            }
        }
        "list" => GoValue::List(args),
        "int" | "int64" | "atoi" => {
            need(1)?;
            GoValue::Int(int_of(&args[0]))
        }
        "float64" => {
            need(1)?;
            GoValue::Float(match &args[0] {
                GoValue::Str(t) => t.trim().parse().unwrap_or(0.0),
                other => other.as_f64().unwrap_or(0.0),
            })
        }
        "add1" => {
            need(1)?;
            GoValue::Int(int_of(&args[0]).saturating_add(1))
        }
        "add" | "mul" | "max" | "min" => {
            if n == 0 {
                return err(
                    at,
                    format!("wrong number of args for {name}: want at least 1"),
                );
            }
            let mut acc = int_of(&args[0]);
            for v in &args[1..] {
                let y = int_of(v);
                acc = match name {
                    "add" => acc.saturating_add(y),
                    "mul" => acc.saturating_mul(y),
                    "max" => acc.max(y),
                    _ => acc.min(y),
                };
            }
            GoValue::Int(acc)
        }
        "sub" | "div" | "mod" => {
            need(2)?;
            let (x, y) = (int_of(&args[0]), int_of(&args[1]));
            GoValue::Int(match name {
                "sub" => x.saturating_sub(y),
                _ if y == 0 => return err(at, format!("{name}: division by zero")),
                "div" => x / y,
                _ => x % y,
            })
        }
        other => return err(at, format!("function {other:?} not defined")),
    })
}

/// Bytes `start..end` of `s`, widened to character boundaries.
fn byte_range(s: &str, mut start: usize, mut end: usize) -> String {
    while start > 0 && !s.is_char_boundary(start) {
        start -= 1;
    }
    while end < s.len() && !s.is_char_boundary(end) {
        end += 1;
    }
    s[start..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn run(t: &str, input: Value) -> Result<String, TemplateError> {
        render_input(t, &input)
    }

    /// The templates of Argo Events' own example sensors, and Go's printing rules.
    #[test]
    fn argo_examples_and_go_printing() {
        let body = json!({"body": {"message": "hello world", "name": "Jane Q Doe",
            "pull_request": {"number": 42, "head": {"sha": "0123456789abcdef"}},
            "big": 1000000, "ratio": 0.25, "tags": ["a", "b"], "m": {"b": 2, "a": "x"}}});
        let cases: &[(&str, &str)] = &[
            ("{{ .Input.body.message | title }}", "Hello World"),
            ("{{ .Input.body.name | nospace | lower }}-", "janeqdoe-"),
            (
                "{{ .Input.body.pull_request.head.sha | substr 0 7 }}",
                "0123456",
            ),
            (
                "{{ .Input.body.pull_request.number }}-{{ .Input.body.pull_request.head.sha | substr 0 7 }}",
                "42-0123456",
            ),
            (
                "Hi {{.Input.body.name}},\n\n\tHello",
                "Hi Jane Q Doe,\n\n\tHello",
            ),
            // gjson gives float64: Go prints a million as 1e+06.
            ("{{ .Input.body.big }}", "1e+06"),
            ("{{ .Input.body.ratio }}", "0.25"),
            ("{{ .Input.body.tags }}", "[a b]"),
            ("{{ .Input.body.m }}", "map[a:x b:2]"),
            ("{{ .Input.body.missing }}x", "<no value>x"),
            ("{{ .Input.body.tags | toJson }}", r#"["a","b"]"#),
            ("{{ .Input.body.big | toJson }}", "1000000"),
            ("{{ .Input.body.big | int }}", "1000000"),
            (
                "{{ printf \"%s/%d\" .Input.body.name .Input.body.pull_request.number }}",
                "Jane Q Doe/42",
            ),
            (
                "{{ if eq .Input.body.pull_request.number 42.0 }}yes{{ else }}no{{ end }}",
                "yes",
            ),
            (
                "{{ if gt .Input.body.ratio 1.0 }}big{{ else if gt .Input.body.ratio 0.1 }}mid{{ else }}small{{ end }}",
                "mid",
            ),
            (
                "{{ with .Input.body.pull_request }}#{{ .number }}{{ end }}",
                "#42",
            ),
            ("{{ range .Input.body.tags }}<{{ . }}>{{ end }}", "<a><b>"),
            ("{{ .Input.body.missing | default \"none\" }}", "none"),
            ("{{- \"  a  \" -}}  |", "  a  |"),
            ("x {{- /* note */ -}} y", "xy"),
            ("{{ index .Input.body.tags 1 }}", "b"),
            ("{{ .Input.body.name | kebabcase }}", "jane-q-doe"),
            (
                "{{ \"a.b\" | replace \".\" \"-\" | upper | quote }}",
                "\"A-B\"",
            ),
            (
                "{{ (.Input.body.pull_request).head.sha | trunc 4 }}",
                "0123",
            ),
            ("{{ .Input.body.message | b64enc | b64dec }}", "hello world"),
            (
                "{{ regexReplaceAll \"[^a-z]+\" .Input.body.message \"_\" }}",
                "hello_world",
            ),
        ];
        for (t, want) in cases {
            assert_eq!(run(t, body.clone()).as_deref(), Ok(*want), "{t}");
        }
    }

    /// What Argo treats as a failed template (and falls back on): parse errors that say
    /// where, unknown functions, fields of nil, an empty or `<no value>` result.
    #[test]
    fn errors_say_what_and_where() {
        let input = json!({"body": {"s": "x"}});
        let cases: &[(&str, &str, usize)] = &[
            (
                "{{ .Input.body.s | shout }}",
                "function \"shout\" not defined",
                19,
            ),
            ("ab {{ .Input.body.s ", "unclosed action", 3),
            ("{{ if .Input }}x", "has no {{end}}", 0),
            ("{{ $x := 1 }}", "variables", 3),
            ("{{ .Input.body.none.deeper }}", "nil pointer", 3),
            (
                "{{ .Input.body.s.deeper }}",
                "can't evaluate field deeper in type string",
                3,
            ),
            (
                "{{ .Input.body.none }}",
                "the template gives \"<no value>\"",
                0,
            ),
            ("{{ \"\" }}", "the template gives \"\"", 0),
            ("{{ substr 1 }}", "wrong number of args for substr", 3),
            ("{{ end }}", "unexpected {{end}}", 0),
        ];
        for (t, want, at) in cases {
            let e = run(t, input.clone()).expect_err(t);
            assert!(e.message.contains(want), "{t}: {e}");
            assert_eq!(e.offset, *at, "{t}: {e}");
        }
    }

    #[test]
    fn go_float_formatting() {
        for (f, want) in [
            (42.0, "42"),
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-2.5, "-2.5"),
            (1e21, "1e+21"),
        ] {
            assert_eq!(go_float(f), want, "{f}");
        }
    }

    proptest::proptest! {
        /// Any text, including broken actions and multi-byte characters: a result or an
        /// error, never a panic.
        #[test]
        fn arbitrary_templates_never_panic(t in "[{}|()\\-. a-zé\"`$0-9/*]{0,40}") {
            let _ = render_input(&t, &json!({"a": {"b": "é"}, "n": 1.5}));
        }

        /// Text without actions comes out as it went in.
        #[test]
        fn plain_text_is_kept(t in "[^{}]{1,40}") {
            proptest::prop_assert_eq!(render_input(&t, &json!({})).ok(), Some(t.clone()));
        }
    }
}
