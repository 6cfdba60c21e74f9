//! Argo's enhanced `depends` logic for DAG tasks: `A && (B.Succeeded || !C.Failed)`.
//!
//! A bare task name `A` means `(A.Succeeded || A.Skipped || A.Daemoned)`, as Argo expands it.

use crate::Error;

/// The result a dependency can be tested for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaskResult {
    Succeeded,
    Failed,
    Errored,
    Skipped,
    Omitted,
    Daemoned,
    AnySucceeded,
    AllFailed,
    /// Not writable in `depends`: asked for a bare task name, it means "ended in a phase the
    /// task's `continueOn` allows" (Argo's `expandDependency`).
    ContinuedOn,
}

impl TaskResult {
    fn parse(s: &str) -> Option<TaskResult> {
        Some(match s {
            "Succeeded" => TaskResult::Succeeded,
            "Failed" => TaskResult::Failed,
            "Errored" => TaskResult::Errored,
            "Skipped" => TaskResult::Skipped,
            "Omitted" => TaskResult::Omitted,
            "Daemoned" => TaskResult::Daemoned,
            "AnySucceeded" => TaskResult::AnySucceeded,
            "AllFailed" => TaskResult::AllFailed,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Depends {
    /// `task` alone (`None`) or `task.Result`.
    Task(String, Option<TaskResult>),
    Not(Box<Depends>),
    And(Box<Depends>, Box<Depends>),
    Or(Box<Depends>, Box<Depends>),
    /// All of these (a `dependencies:` list; flat, so thousands of entries need no deep recursion).
    All(Vec<Depends>),
}

impl Depends {
    /// The task names this expression mentions, in order of first appearance.
    pub fn tasks(&self) -> Vec<&str> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        self.collect(&mut out, &mut seen);
        out
    }

    fn collect<'a>(
        &'a self,
        out: &mut Vec<&'a str>,
        seen: &mut std::collections::HashSet<&'a str>,
    ) {
        match self {
            Depends::Task(t, _) => {
                if seen.insert(t.as_str()) {
                    out.push(t);
                }
            }
            Depends::Not(e) => e.collect(out, seen),
            Depends::And(a, b) | Depends::Or(a, b) => {
                a.collect(out, seen);
                b.collect(out, seen);
            }
            Depends::All(items) => items.iter().for_each(|d| d.collect(out, seen)),
        }
    }

    /// Evaluates with `test(task, result)` answering whether `task` ended with `result`.
    pub fn eval(&self, test: &dyn Fn(&str, TaskResult) -> bool) -> bool {
        match self {
            Depends::Task(t, Some(r)) => test(t, *r),
            Depends::Task(t, None) => {
                test(t, TaskResult::Succeeded)
                    || test(t, TaskResult::Skipped)
                    || test(t, TaskResult::Daemoned)
                    || test(t, TaskResult::ContinuedOn)
            }
            Depends::Not(e) => !e.eval(test),
            Depends::And(a, b) => a.eval(test) && b.eval(test),
            Depends::Or(a, b) => a.eval(test) || b.eval(test),
            Depends::All(items) => items.iter().all(|d| d.eval(test)),
        }
    }

    /// `dependencies: [A, B]` is `A && B`.
    pub fn from_dependencies(deps: &[String]) -> Option<Depends> {
        let mut it = deps.iter();
        let first = Depends::Task(it.next()?.clone(), None);
        Some(it.fold(first, |acc, d| {
            Depends::And(Box::new(acc), Box::new(Depends::Task(d.clone(), None)))
        }))
    }
}

#[derive(Debug, PartialEq)]
enum Tok {
    Name(String),
    And,
    Or,
    Not,
    Open,
    Close,
}

fn tokenize(src: &str) -> Result<Vec<(usize, Tok)>, Error> {
    let mut out = Vec::new();
    let chars: Vec<(usize, char)> = src.char_indices().collect();
    let mut i = 0;
    while i < chars.len() {
        let (at, c) = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push((at, Tok::Open));
                i += 1;
            }
            ')' => {
                out.push((at, Tok::Close));
                i += 1;
            }
            '!' => {
                out.push((at, Tok::Not));
                i += 1;
            }
            '&' | '|' => {
                if chars.get(i + 1).map(|x| x.1) != Some(c) {
                    return Err(Error::Syntax {
                        pos: at,
                        message: format!("expected \"{c}{c}\""),
                    });
                }
                out.push((at, if c == '&' { Tok::And } else { Tok::Or }));
                i += 2;
            }
            c if c.is_alphanumeric() || c == '_' || c == '-' || c == '.' => {
                let mut j = i;
                while j < chars.len()
                    && (chars[j].1.is_alphanumeric() || matches!(chars[j].1, '_' | '-' | '.'))
                {
                    j += 1;
                }
                let end = chars.get(j).map(|x| x.0).unwrap_or(src.len());
                out.push((at, Tok::Name(src[at..end].to_string())));
                i = j;
            }
            other => {
                return Err(Error::Syntax {
                    pos: at,
                    message: format!("unexpected character {other:?}"),
                });
            }
        }
    }
    Ok(out)
}

/// Parses a `depends` expression.
pub fn parse_depends(src: &str) -> Result<Depends, Error> {
    let toks = tokenize(src)?;
    let mut p = P {
        toks,
        pos: 0,
        len: src.len(),
        depth: 0,
    };
    let e = p.or()?;
    if let Some((at, t)) = p.toks.get(p.pos) {
        return Err(Error::Syntax {
            pos: *at,
            message: format!("unexpected {t:?}"),
        });
    }
    Ok(e)
}

struct P {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    len: usize,
    /// Nesting of `!` and `(`, bounded like the expression parser's.
    depth: usize,
}

impl P {
    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|t| t.0).unwrap_or(self.len)
    }
    fn or(&mut self) -> Result<Depends, Error> {
        let mut l = self.and()?;
        while matches!(self.toks.get(self.pos), Some((_, Tok::Or))) {
            self.pos += 1;
            l = Depends::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }
    fn and(&mut self) -> Result<Depends, Error> {
        let mut l = self.unary()?;
        while matches!(self.toks.get(self.pos), Some((_, Tok::And))) {
            self.pos += 1;
            l = Depends::And(Box::new(l), Box::new(self.unary()?));
        }
        Ok(l)
    }
    fn unary(&mut self) -> Result<Depends, Error> {
        if self.depth >= crate::MAX_NESTING {
            return Err(Error::Syntax {
                pos: self.at(),
                message: format!("nested more than {} levels deep", crate::MAX_NESTING),
            });
        }
        self.depth += 1;
        let out = self.unary_at_depth();
        self.depth -= 1;
        out
    }

    fn unary_at_depth(&mut self) -> Result<Depends, Error> {
        let at = self.at();
        match self.toks.get(self.pos) {
            Some((_, Tok::Not)) => {
                self.pos += 1;
                Ok(Depends::Not(Box::new(self.unary()?)))
            }
            Some((_, Tok::Open)) => {
                self.pos += 1;
                let e = self.or()?;
                if !matches!(self.toks.get(self.pos), Some((_, Tok::Close))) {
                    return Err(Error::Syntax {
                        pos: self.at(),
                        message: "expected \")\"".into(),
                    });
                }
                self.pos += 1;
                Ok(e)
            }
            Some((_, Tok::Name(n))) => {
                let n = n.clone();
                self.pos += 1;
                // `A.Succeeded`: split on the last dot when it names a result.
                if let Some((task, result)) = n.rsplit_once('.')
                    && let Some(r) = TaskResult::parse(result)
                {
                    return Ok(Depends::Task(task.to_string(), Some(r)));
                }
                if let Some((_, result)) = n.rsplit_once('.') {
                    return Err(Error::Syntax {
                        pos: at,
                        message: format!(
                            "unknown task result {result:?}; expected one of Succeeded, Failed, Errored, Skipped, Omitted, Daemoned, AnySucceeded, AllFailed"
                        ),
                    });
                }
                Ok(Depends::Task(n, None))
            }
            Some((_, t)) => Err(Error::Syntax {
                pos: at,
                message: format!("unexpected {t:?}"),
            }),
            None => Err(Error::Syntax {
                pos: at,
                message: "unexpected end of expression".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_eval() {
        let d = parse_depends("A && (C.Succeeded || C.Failed)").unwrap();
        assert_eq!(d.tasks(), vec!["A", "C"]);
        let ok = |t: &str, r: TaskResult| {
            matches!(
                (t, r),
                ("A", TaskResult::Succeeded) | ("C", TaskResult::Failed)
            )
        };
        assert!(d.eval(&ok));
        let d = parse_depends("should-execute-2.Succeeded || !should-not-execute").unwrap();
        assert_eq!(d.tasks(), vec!["should-execute-2", "should-not-execute"]);
        assert!(parse_depends("A &").is_err());
        assert!(
            parse_depends("A.Bogus")
                .unwrap_err()
                .to_string()
                .contains("unknown task result")
        );
        assert!(parse_depends("(A").is_err());
    }
}
