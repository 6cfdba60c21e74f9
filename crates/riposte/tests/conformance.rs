//! Runs Argo's own examples with `riposte run` and checks that every example Argo expects to
//! succeed ends `Succeeded`.
//!
//! Eligible: `kind: Workflow` files without the `workflows.argoproj.io/no-test` label that need
//! no artifacts, volumes, Kubernetes resources, sidecars, daemons, synchronization or
//! memoization, and use only busybox, alpine, debian, ubuntu, python and argosay images.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

const SKIP_WORDS: &[&str] = &[
    "artifacts:",
    "volumes:",
    "volumeMounts",
    "volumeClaimTemplates",
    "sidecars:",
    "daemon: true",
    "synchronization:",
    "memoize:",
    "podSpecPatch",
    "configMapKeyRef",
    "secretKeyRef",
    "artifactRepositoryRef",
    "executor:",
];
const TEMPLATE_TYPES_NOT_RUN: &[&str] = &["data", "http", "resource", "plugin", "containerSet"];
const IMAGES: &[&str] = &[
    "busybox",
    "alpine",
    "argoproj/argosay",
    "python",
    "debian",
    "ubuntu",
];

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/conformance/argo-workflows/examples")
}

fn is_eligible(text: &str) -> bool {
    let lines: Vec<&str> = text.lines().collect();
    if !lines.iter().any(|l| l.trim_end() == "kind: Workflow")
        || text.contains("workflows.argoproj.io/no-test")
    {
        return false;
    }
    if SKIP_WORDS.iter().any(|w| text.contains(w)) {
        return false;
    }
    for l in &lines {
        let t = l.trim_start().trim_start_matches("- ");
        if TEMPLATE_TYPES_NOT_RUN
            .iter()
            .any(|k| t.starts_with(&format!("{k}:")))
        {
            return false;
        }
        if let Some(image) = t.strip_prefix("image:") {
            let image = image.trim().trim_matches(['"', '\'', ',']);
            let repo = image.split([':', '@']).next().unwrap_or("");
            if !image.contains("{{") && !IMAGES.contains(&repo) {
                return false;
            }
        }
    }
    true
}

fn eligible_examples() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![examples_dir()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("the conformance corpus is checked in") {
            let p = e.expect("readable directory entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml")
                && is_eligible(&std::fs::read_to_string(&p).expect("readable example"))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Runs one example; returns its final phase and message (or why it could not run).
fn run_example(path: &Path, run_root: &Path) -> Result<(String, String), String> {
    let dir = path.parent().expect("an example lives in a directory");
    let root = examples_dir();
    let name = path
        .strip_prefix(&root)
        .unwrap_or(path)
        .display()
        .to_string()
        .replace('/', "_");
    let out = Command::new("timeout")
        .arg("300")
        .arg(env!("CARGO_BIN_EXE_riposte"))
        .arg("run")
        .arg(path)
        .args(["-o", "json", "--templates"])
        .arg(dir)
        .arg("--templates")
        .arg(root.join("workflow-template"))
        .arg("--templates")
        .arg(root.join("cluster-workflow-template"))
        .arg("--run-dir")
        .arg(run_root.join(name))
        .output()
        .map_err(|e| format!("starting riposte: {e}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "exit {:?}, no workflow JSON ({e}); stderr:\n{stderr}",
            out.status.code()
        )
    })?;
    let phase = json["status"]["phase"].as_str().unwrap_or("").to_string();
    let mut message = json["status"]["message"].as_str().unwrap_or("").to_string();
    if phase != "Succeeded" {
        // Which leaf failed and why, so a failure in CI explains itself.
        for n in json["status"]["nodes"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.values())
        {
            if n["type"] == "Pod" && matches!(n["phase"].as_str(), Some("Failed" | "Error")) {
                message.push_str(&format!(
                    " [{}: {}]",
                    n["displayName"].as_str().unwrap_or(""),
                    n["message"].as_str().unwrap_or("")
                ));
            }
        }
    }
    // The exit code must agree with the phase.
    let want_code = if phase == "Succeeded" { 0 } else { 1 };
    if out.status.code() != Some(want_code) {
        return Err(format!(
            "phase {phase} but exit code {:?}",
            out.status.code()
        ));
    }
    Ok((phase, message))
}

/// Examples whose steps fail at random on purpose (and are retried): a run that exhausts its
/// retries is bad luck, not a bug.
const RANDOM_BY_DESIGN: &[&str] = &["retry-container.yaml", "retry-script.yaml"];

#[test]
fn argo_examples_that_argo_expects_to_succeed_succeed() {
    let examples = eligible_examples();
    // Guards the filter itself: the corpus has 57 eligible examples.
    assert!(
        examples.len() >= 57,
        "only {} eligible examples found",
        examples.len()
    );
    let run_root = tempfile::tempdir().expect("temporary directory");
    let queue = Mutex::new(examples.clone());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue lock").pop();
                    let Some(p) = next else { break };
                    let mut r = run_example(&p, run_root.path());
                    // Probabilistic by design: retry-container and retry-script fail each attempt with
                    // p = 2/3, so all 11 attempts fail in ~1.2% of runs. A whole failed run
                    // is run again (up to 3 runs: ~1.6e-6), so CI does not flake on dice.
                    for _ in 0..2 {
                        let dice = p.file_name().is_some_and(|f| {
                            RANDOM_BY_DESIGN.contains(&f.to_string_lossy().as_ref())
                        });
                        match &r {
                            Ok((phase, msg))
                                if dice
                                    && phase == "Failed"
                                    && msg.starts_with("No more retries left") =>
                            {
                                r = run_example(&p, run_root.path());
                            }
                            _ => break,
                        }
                    }
                    results.lock().expect("results lock").push((p, r));
                }
            });
        }
    });
    let results = results.into_inner().expect("results lock");
    let failures: Vec<String> = results
        .iter()
        .filter_map(|(p, r)| match r {
            Ok((phase, _)) if phase == "Succeeded" => None,
            Ok((phase, msg)) => Some(format!("{}: {phase}: {msg}", p.display())),
            Err(e) => Some(format!("{}: {e}", p.display())),
        })
        .collect();
    eprintln!(
        "conformance: {}/{} eligible Argo examples Succeeded",
        results.len() - failures.len(),
        results.len()
    );
    assert!(
        failures.is_empty(),
        "{} example(s) did not succeed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
