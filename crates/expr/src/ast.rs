//! The expression syntax tree and its parser (one Pratt parser, two dialects).

use serde_json::Value;

use crate::Error;

/// Which language a source text is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// expr-lang (github.com/expr-lang/expr), used by `{{= }}`, `expression:` fields and
    /// `retryStrategy.expression`.
    Expr,
    /// govaluate, used by `when` after `{{}}` substitution. Bare identifiers are strings
    /// (Argo rewrites govaluate variables into string literals), `=~`/`!~` match regexes.
    Govaluate,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Literal(Value),
    /// A variable, or in govaluate a bare word standing for itself.
    Ident(String),
    /// The element of the current predicate (`#`).
    Pointer,
    Array(Vec<Expr>),
    Map(Vec<(String, Expr)>),
    Member {
        object: Box<Expr>,
        key: Box<Expr>,
        optional: bool,
    },
    Slice {
        object: Box<Expr>,
        from: Option<Box<Expr>>,
        to: Option<Box<Expr>>,
    },
    Call {
        name: String,
        args: Vec<Expr>,
    },
    /// `x.f(args)` on a value, e.g. a duration's `.Seconds()`.
    MethodCall {
        object: Box<Expr>,
        name: String,
        args: Vec<Expr>,
    },
    Unary {
        op: UnaryOp,
        expr: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Ternary {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// expr-lang's `let name = value; body`.
    Let {
        name: String,
        value: Box<Expr>,
        body: Box<Expr>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
    Plus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinaryOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    NotIn,
    Matches,
    NotMatches,
    Contains,
    StartsWith,
    EndsWith,
    Range,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Coalesce,
}

impl BinaryOp {
    fn precedence(self) -> u16 {
        use BinaryOp::*;
        match self {
            Or => 10,
            And => 15,
            Eq | Ne | Lt | Le | Gt | Ge | In | NotIn | Matches | NotMatches | Contains
            | StartsWith | EndsWith => 20,
            Range => 25,
            Add | Sub => 30,
            Mul | Div | Mod => 60,
            Pow => 100,
            Coalesce => 500,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Value),
    Str(String),
    Ident(String),
    Punct(&'static str),
    Hash,
}

const PUNCTS: &[&str] = &[
    "?.", "??", "==", "!=", "<=", ">=", "=~", "!~", "&&", "||", "**", "..", "(", ")", "[", "]",
    "{", "}", ",", ":", "?", ".", "+", "-", "*", "/", "%", "^", "<", ">", "!", "=", ";",
];

fn tokenize(src: &str, dialect: Dialect) -> Result<Vec<(usize, Tok)>, Error> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        // expr-lang's comments: `// to the end of the line` and `/* ... */`.
        if dialect == Dialect::Expr && c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if dialect == Dialect::Expr && c == '/' && chars.get(i + 1) == Some(&'*') {
            let end = (i + 2..chars.len().saturating_sub(1))
                .find(|&j| chars[j] == '*' && chars[j + 1] == '/');
            let Some(end) = end else {
                return Err(Error::Syntax {
                    pos: i,
                    message: "unterminated comment".into(),
                });
            };
            i = end + 2;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_ascii_digit()
                    || chars[j] == '_'
                    || (chars[j] == '.' && chars.get(j + 1).is_some_and(|d| d.is_ascii_digit())))
            {
                j += 1;
            }
            if j < chars.len() && (chars[j] == 'e' || chars[j] == 'E') {
                j += 1;
                if j < chars.len() && (chars[j] == '-' || chars[j] == '+') {
                    j += 1;
                }
                while j < chars.len() && chars[j].is_ascii_digit() {
                    j += 1;
                }
            }
            let text: String = chars[i..j].iter().filter(|c| **c != '_').collect();
            let v = if let Ok(n) = text.parse::<i64>() {
                Value::from(n)
            } else {
                let f: f64 = text.parse().map_err(|_| Error::Syntax {
                    pos: i,
                    message: format!("bad number {text:?}"),
                })?;
                Value::from(f)
            };
            toks.push((start, Tok::Num(v)));
            i = j;
            continue;
        }
        if c == '"' || c == '\'' || c == '`' {
            let mut j = i + 1;
            let mut s = String::new();
            loop {
                let Some(&d) = chars.get(j) else {
                    return Err(Error::Syntax {
                        pos: i,
                        message: "unterminated string".into(),
                    });
                };
                if d == c {
                    break;
                }
                if d == '\\' && c != '`' {
                    j += 1;
                    let e = chars.get(j).copied().unwrap_or('\\');
                    s.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        other => other,
                    });
                } else {
                    s.push(d);
                }
                j += 1;
            }
            toks.push((start, Tok::Str(s)));
            i = j + 1;
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            let mut j = i;
            while j < chars.len()
                && (chars[j].is_alphanumeric()
                    || chars[j] == '_'
                    || chars[j] == '$'
                    // govaluate keeps `.` inside variable names; Argo then treats them as strings.
                    || (dialect == Dialect::Govaluate && chars[j] == '.'))
            {
                j += 1;
            }
            toks.push((start, Tok::Ident(chars[i..j].iter().collect())));
            i = j;
            continue;
        }
        if c == '#' {
            // `#acc` (reduce's accumulator) and `#index` are variables; `#` alone is the element.
            let mut j = i + 1;
            while j < chars.len() && chars[j].is_alphanumeric() {
                j += 1;
            }
            if j > i + 1 {
                toks.push((start, Tok::Ident(chars[i..j].iter().collect())));
            } else {
                toks.push((start, Tok::Hash));
            }
            i = j;
            continue;
        }
        let rest: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let Some(p) = PUNCTS.iter().find(|p| rest.starts_with(**p)) else {
            return Err(Error::Syntax {
                pos: i,
                message: format!("unexpected character {c:?}"),
            });
        };
        toks.push((start, Tok::Punct(p)));
        i += p.chars().count();
    }
    Ok(toks)
}

/// Parses `src` in the given dialect.
pub fn parse(src: &str, dialect: Dialect) -> Result<Expr, Error> {
    let toks = tokenize(src, dialect)?;
    let mut p = Parser {
        toks,
        pos: 0,
        dialect,
        len: src.len(),
        depth: 0,
    };
    let e = p.expr(0)?;
    if let Some((at, t)) = p.toks.get(p.pos) {
        return Err(Error::Syntax {
            pos: *at,
            message: format!("unexpected {}", describe(t)),
        });
    }
    Ok(e)
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(n) => format!("number {n}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Ident(s) => format!("identifier {s:?}"),
        Tok::Punct(p) => format!("{p:?}"),
        Tok::Hash => "\"#\"".into(),
    }
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    dialect: Dialect,
    len: usize,
    /// Current nesting of subexpressions (see [`crate::MAX_NESTING`]).
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.1)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|t| t.0).unwrap_or(self.len)
    }
    fn eat(&mut self, p: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Punct(q)) if *q == p) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect(&mut self, p: &str) -> Result<(), Error> {
        if self.eat(p) {
            return Ok(());
        }
        let found = self
            .peek()
            .map(describe)
            .unwrap_or_else(|| "end of expression".into());
        Err(Error::Syntax {
            pos: self.at(),
            message: format!("expected {p:?}, found {found}"),
        })
    }

    fn binary_op(&self) -> Option<(BinaryOp, usize)> {
        use BinaryOp::*;
        let op = match self.peek()? {
            Tok::Punct(p) => match *p {
                "||" => Or,
                "&&" => And,
                "==" => Eq,
                "!=" => Ne,
                "<" => Lt,
                "<=" => Le,
                ">" => Gt,
                ">=" => Ge,
                "=~" => Matches,
                "!~" => NotMatches,
                ".." => Range,
                "+" => Add,
                "-" => Sub,
                "*" => Mul,
                "/" => Div,
                "%" => Mod,
                "**" | "^" => Pow,
                "??" => Coalesce,
                _ => return None,
            },
            Tok::Ident(w) => match w.as_str() {
                "or" | "OR" => Or,
                "and" | "AND" => And,
                "in" | "IN" => In,
                "matches" => Matches,
                "contains" => Contains,
                "startsWith" => StartsWith,
                "endsWith" => EndsWith,
                "not" => {
                    // `not in`
                    if matches!(self.toks.get(self.pos + 1), Some((_, Tok::Ident(n))) if n == "in")
                    {
                        return Some((NotIn, 2));
                    }
                    return None;
                }
                _ => return None,
            },
            _ => return None,
        };
        Some((op, 1))
    }

    /// Every nested subexpression passes here, so this bounds the recursion (a stack
    /// overflow would abort the whole controller).
    fn expr(&mut self, min_prec: u16) -> Result<Expr, Error> {
        if self.depth >= crate::MAX_NESTING {
            return Err(Error::Syntax {
                pos: self.toks.get(self.pos).map(|t| t.0).unwrap_or(self.len),
                message: format!(
                    "expression nested more than {} levels deep",
                    crate::MAX_NESTING
                ),
            });
        }
        self.depth += 1;
        let out = self.expr_at_depth(min_prec);
        self.depth -= 1;
        out
    }

    fn expr_at_depth(&mut self, min_prec: u16) -> Result<Expr, Error> {
        let mut left = self.unary()?;
        loop {
            if min_prec == 0 && self.eat("?") {
                let then = self.expr(0)?;
                self.expect(":")?;
                let otherwise = self.expr(0)?;
                left = Expr::Ternary {
                    cond: Box::new(left),
                    then: Box::new(then),
                    otherwise: Box::new(otherwise),
                };
                continue;
            }
            let Some((op, width)) = self.binary_op() else {
                break;
            };
            let prec = op.precedence();
            if prec < min_prec || (prec == min_prec && op != BinaryOp::Pow) {
                break;
            }
            self.pos += width;
            // `**` is right-associative; everything else is left-associative.
            let next_min = if op == BinaryOp::Pow { prec } else { prec + 1 };
            let right = self.expr(next_min)?;
            left = Expr::Binary {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, Error> {
        if self.eat("!")
            || matches!(self.peek(), Some(Tok::Ident(w)) if w == "not") && {
                self.pos += 1;
                true
            }
        {
            let e = self.expr(50)?;
            return Ok(Expr::Unary {
                op: UnaryOp::Not,
                expr: Box::new(e),
            });
        }
        if self.eat("-") {
            let e = self.expr(90)?;
            return Ok(Expr::Unary {
                op: UnaryOp::Neg,
                expr: Box::new(e),
            });
        }
        if self.eat("+") {
            let e = self.expr(90)?;
            return Ok(Expr::Unary {
                op: UnaryOp::Plus,
                expr: Box::new(e),
            });
        }
        let primary = self.primary()?;
        self.postfix(primary)
    }

    fn postfix(&mut self, mut e: Expr) -> Result<Expr, Error> {
        loop {
            if self.dialect == Dialect::Expr && (self.eat(".") || self.eat("?.")) {
                let optional = matches!(self.toks.get(self.pos - 1), Some((_, Tok::Punct("?."))));
                let name = match self.peek() {
                    Some(Tok::Ident(n)) => n.clone(),
                    _ => {
                        return Err(Error::Syntax {
                            pos: self.at(),
                            message: "expected a field name after \".\"".into(),
                        });
                    }
                };
                self.pos += 1;
                if self.eat("(") {
                    let args = self.args(")")?;
                    e = Expr::MethodCall {
                        object: Box::new(e),
                        name,
                        args,
                    };
                } else {
                    e = Expr::Member {
                        object: Box::new(e),
                        key: Box::new(Expr::Literal(Value::String(name))),
                        optional,
                    };
                }
                continue;
            }
            if self.dialect == Dialect::Expr && self.eat("[") {
                // Index or slice.
                let from = if matches!(self.peek(), Some(Tok::Punct(":"))) {
                    None
                } else {
                    Some(self.expr(0)?)
                };
                if self.eat(":") {
                    let to = if matches!(self.peek(), Some(Tok::Punct("]"))) {
                        None
                    } else {
                        Some(Box::new(self.expr(0)?))
                    };
                    self.expect("]")?;
                    e = Expr::Slice {
                        object: Box::new(e),
                        from: from.map(Box::new),
                        to,
                    };
                } else {
                    self.expect("]")?;
                    let key = from.ok_or_else(|| Error::Syntax {
                        pos: self.at(),
                        message: "empty index".into(),
                    })?;
                    e = Expr::Member {
                        object: Box::new(e),
                        key: Box::new(key),
                        optional: false,
                    };
                }
                continue;
            }
            break;
        }
        Ok(e)
    }

    fn args(&mut self, close: &str) -> Result<Vec<Expr>, Error> {
        let mut args = Vec::new();
        if self.eat(close) {
            return Ok(args);
        }
        loop {
            // A `{ ... }` argument is a predicate closure; its body is evaluated per element.
            let is_map_literal =
                matches!(
                    self.toks.get(self.pos + 1),
                    Some((_, Tok::Str(_) | Tok::Ident(_) | Tok::Num(_)))
                ) && matches!(self.toks.get(self.pos + 2), Some((_, Tok::Punct(":"))));
            if !is_map_literal && self.eat("{") {
                args.push(self.expr(0)?);
                self.expect("}")?;
            } else {
                args.push(self.expr(0)?);
            }
            if self.eat(close) {
                return Ok(args);
            }
            self.expect(",")?;
        }
    }

    fn primary(&mut self) -> Result<Expr, Error> {
        let at = self.at();
        let Some((_, tok)) = self.toks.get(self.pos).cloned() else {
            return Err(Error::Syntax {
                pos: at,
                message: "unexpected end of expression".into(),
            });
        };
        self.pos += 1;
        match tok {
            Tok::Num(n) => Ok(Expr::Literal(n)),
            Tok::Str(s) => Ok(Expr::Literal(Value::String(s))),
            Tok::Hash => Ok(Expr::Pointer),
            Tok::Ident(name) => match name.as_str() {
                "true" => Ok(Expr::Literal(Value::Bool(true))),
                "false" => Ok(Expr::Literal(Value::Bool(false))),
                "nil" | "null" if self.dialect == Dialect::Expr => Ok(Expr::Literal(Value::Null)),
                "let"
                    if self.dialect == Dialect::Expr
                        && matches!(self.peek(), Some(Tok::Ident(_)))
                        && matches!(self.toks.get(self.pos + 1), Some((_, Tok::Punct("=")))) =>
                {
                    let Some(Tok::Ident(name)) = self.peek().cloned() else {
                        unreachable!("checked above")
                    };
                    self.pos += 2;
                    let value = self.expr(0)?;
                    self.expect(";")?;
                    let body = self.expr(0)?;
                    Ok(Expr::Let {
                        name,
                        value: Box::new(value),
                        body: Box::new(body),
                    })
                }
                _ => {
                    if self.dialect == Dialect::Expr && self.eat("(") {
                        let args = self.args(")")?;
                        return Ok(Expr::Call { name, args });
                    }
                    Ok(Expr::Ident(name))
                }
            },
            Tok::Punct("(") => {
                let first = self.expr(0)?;
                if self.dialect == Dialect::Govaluate && self.eat(",") {
                    // govaluate array literal, used with `in`.
                    let mut items = vec![first];
                    items.extend(self.args(")")?);
                    return Ok(Expr::Array(items));
                }
                self.expect(")")?;
                Ok(first)
            }
            Tok::Punct("[") => Ok(Expr::Array(self.args("]")?)),
            Tok::Punct("{") => {
                let mut entries = Vec::new();
                if self.eat("}") {
                    return Ok(Expr::Map(entries));
                }
                loop {
                    let key = match self.toks.get(self.pos).map(|t| t.1.clone()) {
                        Some(Tok::Str(s)) | Some(Tok::Ident(s)) => s,
                        Some(Tok::Num(n)) => n.to_string(),
                        _ => {
                            return Err(Error::Syntax {
                                pos: self.at(),
                                message: "expected a map key".into(),
                            });
                        }
                    };
                    self.pos += 1;
                    self.expect(":")?;
                    entries.push((key, self.expr(0)?));
                    if self.eat("}") {
                        return Ok(Expr::Map(entries));
                    }
                    self.expect(",")?;
                }
            }
            Tok::Punct(".") if self.dialect == Dialect::Expr => {
                // `.field` inside a predicate is `#.field`.
                let name = match self.peek() {
                    Some(Tok::Ident(n)) => n.clone(),
                    _ => {
                        return Err(Error::Syntax {
                            pos: self.at(),
                            message: "expected a field name".into(),
                        });
                    }
                };
                self.pos += 1;
                Ok(Expr::Member {
                    object: Box::new(Expr::Pointer),
                    key: Box::new(Expr::Literal(Value::String(name))),
                    optional: false,
                })
            }
            other => Err(Error::Syntax {
                pos: at,
                message: format!("unexpected {}", describe(&other)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        let e = parse("1 + 2 * 3 == 7 && !false", Dialect::Expr).unwrap();
        assert!(matches!(
            e,
            Expr::Binary {
                op: BinaryOp::And,
                ..
            }
        ));
        let e = parse("a ?? b ? 1 : 2", Dialect::Expr).unwrap();
        assert!(matches!(e, Expr::Ternary { .. }));
        assert!(parse("1 +", Dialect::Expr).is_err());
        assert!(parse("(1", Dialect::Expr).is_err());
        assert!(parse("a b", Dialect::Expr).is_err());
    }
}
