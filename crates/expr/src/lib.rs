//! Expressions for Riposte workflows, with no knowledge of workflows themselves.
//!
//! # Brief overview
//! - [`template`]: `{{tag}}` and `{{= expr}}` substitution ([`render`]).
//! - [`ast`] + [`eval`]: one parser for two dialects: the expr-lang subset Argo's expression
//!   tags, `expression:` fields and `retryStrategy.expression` use, and govaluate for `when`
//!   ([`eval_when`]).
//! - [`depends`]: Argo's enhanced DAG `depends` logic.
//! - [`jq`]: jq filters (jaq), printed like `jq -rc`.
//! - [`time`]: RFC 3339 and Go duration helpers (pure; callers pass the time in).
//!
//! # Example
//! ```
//! use std::collections::HashMap;
//! use riposte_expr::{render, Unresolved};
//! let vars: HashMap<String, String> = [("inputs.parameters.n".to_string(), "4".to_string())].into();
//! assert_eq!(render("n*2={{=asInt(inputs.parameters.n) * 2}}", &vars, Unresolved::Fail).unwrap(), "n*2=8");
//! assert!(riposte_expr::eval_when("heads == heads").unwrap());
//! ```

pub mod ast;
pub mod depends;
pub mod eval;
mod functions;
pub mod gotemplate;
pub mod jq;
pub mod lua;
pub mod template;
pub mod time;

pub use ast::{Dialect, Expr, parse};

/// How deeply expressions and `depends` may nest (parentheses, `!`, lists). Bounded because
/// the parsers recurse, and a stack overflow would abort the whole controller.
pub const MAX_NESTING: usize = 128;
pub use depends::{Depends, TaskResult, parse_depends};
pub use eval::{
    eval, eval_bool, eval_govaluate, eval_govaluate_parsed, eval_when, to_template_string,
};
pub use template::{Scope, Segment, Unresolved, env_from_flat, render, segments, tags};

/// Why an expression or template could not be parsed or evaluated.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    #[error("syntax error at offset {pos}: {message}")]
    Syntax { pos: usize, message: String },
    #[error("{0}")]
    Type(String),
    #[error("failed to resolve {{{{{0}}}}}")]
    Unresolved(String),
}
