//! Argo Events definitions: `Sensor` and `EventSource` (`argoproj.io/v1alpha1`), loaded with
//! positions and linted like workflows. Every field is either one Riposte implements or a
//! warning naming it.
//!
//! Lint is compilation: a Sensor's ([`crate::sensor::compile`]), an EventSource's
//! ([`crate::event_source::compile`]) and a binding's are what the server runs, with each
//! problem's path turned into `file:line:col`.

use crate::{Diagnostic, Position, Severity, yaml};

/// A Sensor or EventSource with the document it came from.
#[derive(Debug, Clone)]
pub struct LoadedEvents {
    pub file: String,
    pub document: yaml::Document,
    pub kind: EventsKind,
    pub name: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventsKind {
    Sensor,
    EventSource,
    /// Argo Workflows' `WorkflowEventBinding` (events into workflows without a sensor).
    WorkflowEventBinding,
}

impl LoadedEvents {
    fn at(&self, path: &str) -> Position {
        self.document.position(path)
    }
}

/// Every Sensor, EventSource and WorkflowEventBinding in `text` (other kinds are skipped; a YAML error is a
/// diagnostic).
pub fn load_events(file: &str, text: &str) -> (Vec<LoadedEvents>, Vec<Diagnostic>) {
    let docs = match yaml::load_documents(text) {
        Ok(d) => d,
        Err(e) => {
            return (
                Vec::new(),
                vec![Diagnostic {
                    file: file.into(),
                    position: e.position,
                    severity: Severity::Error,
                    message: format!("invalid YAML: {}", e.message),
                }],
            );
        }
    };
    let mut out = Vec::new();
    for document in docs {
        let v = &document.value;
        if v["apiVersion"] != "argoproj.io/v1alpha1" {
            continue;
        }
        let kind = match v["kind"].as_str() {
            Some("Sensor") => EventsKind::Sensor,
            Some("EventSource") => EventsKind::EventSource,
            Some("WorkflowEventBinding") => EventsKind::WorkflowEventBinding,
            _ => continue,
        };
        let name = v["metadata"]["name"].as_str().unwrap_or("").to_string();
        out.push(LoadedEvents {
            file: file.into(),
            document,
            kind,
            name,
        });
    }
    (out, Vec::new())
}

pub use crate::event_source::EVENT_SOURCE_TYPES;
pub use crate::sensor::TRIGGER_TYPES;

struct Lint<'a> {
    l: &'a LoadedEvents,
    out: Vec<Diagnostic>,
}

impl Lint<'_> {
    fn push(&mut self, path: &str, severity: Severity, message: String) {
        self.out.push(Diagnostic {
            file: self.l.file.clone(),
            position: self.l.at(path),
            severity,
            message,
        });
    }
}

/// Lints Sensors and EventSources; every problem, with its position.
pub fn lint_events(loaded: &[LoadedEvents]) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for l in loaded {
        let mut cx = Lint { l, out: Vec::new() };
        match l.kind {
            EventsKind::Sensor => {
                for p in crate::sensor::compile(&l.document.value).problems {
                    cx.push(&p.path, p.severity, p.message);
                }
            }
            EventsKind::WorkflowEventBinding => {
                for p in crate::binding::compile(&l.document.value).problems {
                    cx.push(&p.path, p.severity, p.message);
                }
            }
            EventsKind::EventSource => {
                for p in crate::event_source::compile(&l.document.value).problems {
                    cx.push(&p.path, p.severity, p.message);
                }
            }
        }
        out.extend(cx.out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lint_text(text: &str) -> Vec<String> {
        let (loaded, mut d) = load_events("s.yaml", text);
        d.extend(lint_events(&loaded));
        d.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn sensors_are_linted_with_positions() {
        let text = r#"apiVersion: argoproj.io/v1alpha1
kind: Sensor
metadata:
  name: falco
spec:
  dependencies:
    - name: shell
      eventSourceName: falco
      eventName: alert
      filters:
        data:
          - path: body..rule
            type: strin
            value: []
        exprs:
          - expr: priority ==
            fields: [{name: priority, path: body.priority}]
        time: {start: "25:00:00", stop: "10:00:00"}
        script: "if then"
  triggers:
    - template:
        name: isolate
        conditions: "shell && audit"
        argoWorkflow:
          operation: submit
          parameters:
            - src: {dependencyName: shel, dataKey: body.output_fields.k8s\.pod\.name}
              dest: spec.arguments.parameters.0.value
              operation: replace
            - src: {dependencyName: shell, dataTemplate: "{{ .Input.body.rule | shout }}"}
              dest: metadata.name
    - template:
        name: tell
        slack: {channel: x}
"#;
        let got = lint_text(text);
        let has = |line: usize, what: &str| {
            got.iter()
                .any(|m| m.starts_with(&format!("s.yaml:{line}:")) && m.contains(what))
        };
        assert!(has(12, "segment 2 is empty"), "{got:#?}");
        assert!(
            has(13, "\"strin\" is not string, number or bool"),
            "{got:#?}"
        );
        assert!(
            has(11, "value must list at least one value") || has(12, "value must list"),
            "{got:#?}"
        );
        assert!(has(16, "expression \"priority ==\""), "{got:#?}");
        assert!(has(18, "time \"25:00:00\" is not HH:MM:SS"), "{got:#?}");
        assert!(
            has(
                19,
                "Lua script does not compile: syntax error: script:1: unexpected symbol near 'then'"
            ),
            "{got:#?}"
        );
        assert!(has(23, "\"audit\" is not a dependency"), "{got:#?}");
        assert!(has(27, "dependency \"shel\" is not defined"), "{got:#?}");
        assert!(has(29, "operation \"replace\""), "{got:#?}");
        assert!(
            has(
                30,
                "dataTemplate \"{{ .Input.body.rule | shout }}\": function \"shout\" not defined (at byte 22"
            ),
            "{got:#?}"
        );
        assert!(
            has(34, "warning: trigger type `slack` is not implemented"),
            "{got:#?}"
        );
    }

    #[test]
    fn event_sources_are_linted() {
        let text = r#"apiVersion: argoproj.io/v1alpha1
kind: EventSource
metadata:
  name: inputs
spec:
  webhook:
    falco:
      port: "12000"
      endpoint: falco
      method: SEND
  calendar:
    tick:
      interval: soon
  kafka:
    topic: {url: x}
"#;
        let got = lint_text(text);
        let has = |line: usize, what: &str| {
            got.iter()
                .any(|m| m.starts_with(&format!("s.yaml:{line}:")) && m.contains(what))
        };
        assert!(has(9, "endpoint \"falco\" must start with `/`"), "{got:#?}");
        assert!(has(10, "method \"SEND\""), "{got:#?}");
        assert!(has(13, "interval \"soon\""), "{got:#?}");
        assert!(
            has(15, "warning: event source type `kafka` is not implemented"),
            "{got:#?}"
        );
    }
}

/// Argo Events' own examples, the conformance corpus: every Sensor and EventSource loads, and
/// lint finds no errors in them (only warnings naming what Riposte does not implement).
#[cfg(test)]
mod corpus {
    use super::*;

    #[test]
    fn argo_events_examples_load_and_lint_without_errors() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/conformance/argo-events/examples");
        let mut files = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).expect("the corpus is checked in") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "yaml") {
                    files.push(p);
                }
            }
        }
        let (mut sensors, mut sources, mut errors) = (0, 0, Vec::new());
        for f in &files {
            let text = std::fs::read_to_string(f).expect("readable");
            let (loaded, diags) = load_events(&f.display().to_string(), &text);
            sensors += loaded
                .iter()
                .filter(|l| l.kind == EventsKind::Sensor)
                .count();
            sources += loaded
                .iter()
                .filter(|l| l.kind == EventsKind::EventSource)
                .count();
            errors.extend(
                diags
                    .into_iter()
                    .chain(lint_events(&loaded))
                    .filter(|d| d.severity == Severity::Error)
                    .map(|d| d.to_string()),
            );
        }
        assert!(
            sensors >= 90 && sources >= 30,
            "{sensors} sensors, {sources} sources"
        );
        assert!(errors.is_empty(), "{}", errors.join("\n"));
    }
}
