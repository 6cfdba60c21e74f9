//! `valueFrom.jqFilter` of resource templates (pure), with jaq.
//!
//! Argo runs `kubectl get ... -o json | jq -rc '<filter>'`: every output on its own line,
//! strings raw, everything else as compact JSON. The same here, without a process.

use jaq_core::load::{Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, data, unwrap_valr};
use jaq_json::Val;
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("jqFilter {filter:?}: {message}")]
pub struct JqError {
    pub filter: String,
    pub message: String,
}

/// Parses and compiles `filter` without running it (for lint).
pub fn check(filter: &str) -> Result<(), JqError> {
    compile_and(filter, |_| Ok(String::new())).map(drop)
}

/// Runs `filter` over `obj` and prints its outputs like `jq -rc`.
pub fn run(obj: &Value, filter: &str) -> Result<String, JqError> {
    compile_and(filter, |compiled| {
        let input = jaq_json::read::parse_single(obj.to_string().as_bytes())
            .map_err(|e| format!("the object is not JSON: {e}"))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&compiled.lut, Vars::new([]));
        let mut lines = Vec::new();
        for out in compiled.id.run((ctx, input)).map(unwrap_valr) {
            let v = out.map_err(|e| format!("failed: {e}"))?;
            lines.push(match &v {
                Val::TStr(b) | Val::BStr(b) => String::from_utf8_lossy(b).into_owned(),
                other => other.to_string(),
            });
        }
        Ok(lines.join("\n"))
    })
}

/// Runs `filter` over `obj` and returns its first output as JSON (Argo Events' dependency
/// `transform.jq`: the output replaces the event's data). A filter with no output is an error.
pub fn transform(obj: &Value, filter: &str) -> Result<Value, JqError> {
    Program::compile(filter)?.transform(obj)
}

/// A jq filter parsed and compiled once (a sensor's `transform.jq`), run per event.
#[derive(Clone)]
pub struct Program {
    source: String,
    filter: std::sync::Arc<Compiled>,
}

type Compiled = jaq_core::compile::Filter<jaq_core::Native<data::JustLut<Val>>>;

// Compiled sensors are shared by the tasks that process events.
const _: () = {
    const fn shared<T: Send + Sync>() {}
    shared::<Program>()
};

impl std::fmt::Debug for Program {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Program").field(&self.source).finish()
    }
}

impl PartialEq for Program {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Program {
    pub fn compile(filter: &str) -> Result<Program, JqError> {
        Ok(Program {
            source: filter.to_string(),
            filter: std::sync::Arc::new(compile(filter)?),
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// The filter's first output over `obj`, as JSON (see [`transform`]).
    pub fn transform(&self, obj: &Value) -> Result<Value, JqError> {
        let err = |message: String| JqError {
            filter: self.source.clone(),
            message,
        };
        let input = jaq_json::read::parse_single(obj.to_string().as_bytes())
            .map_err(|e| err(format!("the object is not JSON: {e}")))?;
        let ctx = Ctx::<data::JustLut<Val>>::new(&self.filter.lut, Vars::new([]));
        let first = self
            .filter
            .id
            .run((ctx, input))
            .map(unwrap_valr)
            .next()
            .ok_or_else(|| err("produced no output".to_string()))?
            .map_err(|e| err(format!("failed: {e}")))?;
        serde_json::from_str(&first.to_string())
            .map_err(|e| err(format!("produced something that is not JSON: {e}")))
    }
}

fn compile_and(
    filter: &str,
    then: impl FnOnce(&Compiled) -> Result<String, String>,
) -> Result<String, JqError> {
    let compiled = compile(filter)?;
    then(&compiled).map_err(|message| JqError {
        filter: filter.to_string(),
        message,
    })
}

fn compile(filter: &str) -> Result<Compiled, JqError> {
    let err = |message: String| JqError {
        filter: filter.to_string(),
        message,
    };
    let defs = jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs());
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let loader = Loader::new(defs);
    let arena = Arena::default();
    let modules = loader
        .load(
            &arena,
            File {
                code: filter,
                path: (),
            },
        )
        .map_err(|errs| err(format!("does not parse ({} error(s))", errs.len())))?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errs| {
            let names: Vec<String> = errs
                .iter()
                .flat_map(|(_, es)| es.iter().map(|(name, _)| name.to_string()))
                .collect();
            err(format!("does not compile: undefined {}", names.join(", ")))
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn filters_table() {
        let obj = json!({
            "metadata": {"name": "web", "labels": {"app": "web", "tier": "front"}},
            "spec": {"replicas": 3, "containers": [{"name": "main"}, {"name": "proxy"}]}
        });
        let cases = [
            (".metadata.name", "web"),
            (".spec.replicas", "3"),
            (".spec.containers[].name", "main\nproxy"),
            ("[.spec.containers[].name]", r#"["main","proxy"]"#),
            (".metadata.labels | keys", r#"["app","tier"]"#),
            (".spec.containers | map(.name) | join(\",\")", "main,proxy"),
            (".missing", "null"),
        ];
        for (filter, expected) in cases {
            assert_eq!(
                run(&obj, filter).unwrap_or_else(|e| panic!("{e}")),
                expected,
                "{filter}"
            );
        }
    }

    #[test]
    fn bad_filters_are_errors() {
        let obj = json!({"a": 1});
        for filter in [".a |", "nosuchfunction(1)", ".a | keys"] {
            let e = run(&obj, filter).expect_err(filter);
            assert!(e.to_string().starts_with("jqFilter"), "{e}");
        }
        assert!(check(".a |").is_err());
        assert!(check("nosuchfunction(1)").is_err());
        // Valid filters that fail only at run time pass the check.
        assert!(check(".a | keys").is_ok());
    }
}
