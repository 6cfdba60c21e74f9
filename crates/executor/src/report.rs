//! What `riposte exec` reports about a finished step (the Kubernetes wrapper's callback and
//! termination message, the host executor's detached steps' report file).

use std::collections::{BTreeMap, HashMap};

use engine::{ExecResult, Phase};
use serde_json::Value;

/// The exit code of a step whose program was not found (a shell's 127).
pub const EXIT_NOT_FOUND: i32 = 127;

/// Argo's message for a step whose program is not on its `PATH` (what Go's `exec` says).
pub fn not_found_message(program: &str) -> String {
    format!("exec: {program:?}: executable file not found in $PATH")
}

/// The wrapper's report (see `riposte exec`): sent to the callback and kept as the pod's
/// termination message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    pub exit_code: i32,
    pub result: String,
    pub outputs: HashMap<String, String>,
    /// Output names whose file was missing.
    pub missing_outputs: Vec<String>,
    /// Set when the command could not start.
    pub error: Option<String>,
}

impl Report {
    /// Parses a report; `None` when `v` is not one (a termination message written by
    /// something other than the wrapper, or cut).
    pub fn from_json(v: &Value) -> Option<Report> {
        let exit_code = i32::try_from(v.get("exitCode")?.as_i64()?).ok()?;
        Some(Report {
            exit_code,
            result: v["result"].as_str().unwrap_or_default().to_string(),
            outputs: v["outputs"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                        .collect()
                })
                .unwrap_or_default(),
            missing_outputs: v["missingOutputs"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m["name"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            error: v["error"].as_str().map(str::to_string),
        })
    }

    /// The engine's view: Argo's messages, outputs by name (`None` for a missing file).
    pub fn into_exec_result(self) -> ExecResult {
        let mut r = ExecResult::exited(self.exit_code, &self.result);
        if let Some(e) = self.error {
            // A program that is not there is the step's own failure (Argo: `Failed`, "exec:
            // \"x\": executable file not found in $PATH"); anything else kept it from running.
            r.phase = if self.exit_code == EXIT_NOT_FOUND {
                Phase::Failed
            } else {
                Phase::Error
            };
            r.message = e;
        }
        let mut parameters: BTreeMap<String, Option<String>> = self
            .outputs
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for m in self.missing_outputs {
            parameters.insert(m, None);
        }
        r.parameters = parameters;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_become_results_with_argo_messages() {
        let ok = Report::from_json(&json!({"exitCode": 0, "result": "hi", "outputs": {"a": "1"}, "missingOutputs": [{"name": "b"}]}))
            .expect("report");
        let r = ok.into_exec_result();
        assert_eq!(r.phase, Phase::Succeeded);
        assert_eq!(r.result.as_deref(), Some("hi"));
        assert_eq!(r.parameters["a"].as_deref(), Some("1"));
        assert_eq!(r.parameters["b"], None);

        let failed = Report::from_json(&json!({"exitCode": 3, "result": ""})).expect("report");
        let r = failed.into_exec_result();
        assert_eq!(
            (r.phase, r.message.as_str()),
            (Phase::Failed, "main: Error (exit code 3)")
        );

        let missing = Report::from_json(
            &json!({"exitCode": 127, "result": "", "error": not_found_message("nope")}),
        )
        .expect("report")
        .into_exec_result();
        assert_eq!(
            (missing.phase, missing.message.as_str()),
            (
                Phase::Failed,
                "exec: \"nope\": executable file not found in $PATH"
            )
        );
        let unrunnable = Report::from_json(
            &json!({"exitCode": 126, "result": "", "error": "cannot start \"x\": permission denied"}),
        )
        .expect("report");
        assert_eq!(unrunnable.into_exec_result().phase, Phase::Error);

        assert_eq!(Report::from_json(&json!("plain text")), None);
    }
}
