//! The commands README.md and `riposte --help` show, run as pasted with `riposte` on the PATH
//! (as the README's install step puts it there), from a directory that looks like the
//! checkout, with an empty HOME. Commands that need a cluster, or that the other suites run
//! (the first command, `scripts/test`, `riposte demo`, the benchmarks) are left out, each
//! for a stated reason.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A working directory with the checkout's files the examples name, and an empty HOME.
struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().expect("tempdir");
        for entry in ["workflows", "tests", "deploy", "api"] {
            std::os::unix::fs::symlink(repo().join(entry), dir.path().join(entry))
                .expect("symlink");
        }
        std::fs::create_dir(dir.path().join("home")).expect("home");
        Sandbox { dir }
    }

    fn shell(&self, script: &str) -> Output {
        let bin = Path::new(env!("CARGO_BIN_EXE_riposte"))
            .parent()
            .expect("bin dir")
            .to_path_buf();
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(script)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path().join("home"))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env_remove("DATABASE_URL")
            .env_remove("KUBECONFIG")
            .stdin(std::process::Stdio::null());
        for (k, _) in std::env::vars_os() {
            if k.to_str().is_some_and(|k| k.starts_with("RIPOSTE_")) {
                cmd.env_remove(k);
            }
        }
        cmd.output().expect("bash")
    }
}

fn explain(what: &str, out: &Output) -> String {
    format!(
        "{what}: {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The ```sh blocks of the README, each as its lines.
fn sh_blocks(text: &str) -> Vec<Vec<String>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in text.lines() {
        match (&mut current, line.trim_start().starts_with("```")) {
            (None, true) if line.trim() == "```sh" => current = Some(Vec::new()),
            (Some(_), true) => blocks.extend(current.take()),
            (Some(b), false) => b.push(line.to_string()),
            _ => {}
        }
    }
    blocks
}

/// Why a README line is not run here, if it is not.
fn readme_skip(line: &str) -> Option<&'static str> {
    let l = line.trim();
    if l.starts_with("cargo run -p riposte -- run ") {
        Some("the first command: scripts/test runs it, read from the README")
    } else if l == "scripts/test" || l.starts_with("scripts/test ") {
        Some("the test suite itself")
    } else if l.starts_with("cargo run -p riposte -- demo") {
        Some("tests/demo.rs runs the demo")
    } else if l.starts_with("cargo install") {
        Some("the PATH step: this test puts the built riposte on the PATH")
    } else if l.starts_with("kubectl ") {
        Some("needs a cluster")
    } else {
        None
    }
}

/// Every ```sh block after the first, in order, as one shell session (the events walk-through
/// starts a server the later blocks talk to).
#[test]
fn readme_commands_work_as_pasted() {
    let text = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let blocks = sh_blocks(&text);
    assert!(blocks.len() >= 3, "README.md has too few ```sh blocks");
    let mut script = String::from(
        "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null || true' EXIT\n",
    );
    let mut ran = 0;
    for line in blocks.iter().flatten() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(why) = readme_skip(l) {
            eprintln!("skipped ({why}): {l}");
            continue;
        }
        script.push_str(&format!("echo '+ {}'\n{l}\n", l.replace('\'', "'\\''")));
        ran += 1;
    }
    assert!(ran >= 10, "only {ran} README commands to run:\n{script}");
    let sandbox = Sandbox::new();
    let out = sandbox.shell(&script);
    assert!(
        out.status.success(),
        "{}",
        explain("README.md's commands", &out)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The walk-through's alert reached its sensor, and its decision is shown.
    assert!(
        stdout.contains("trigger"),
        "{}",
        explain("riposte event get 1", &out)
    );
    assert!(
        sandbox.dir.path().join("gitops/riposte").is_dir(),
        "riposte library export wrote nothing"
    );
}

/// The "in one command each" table.
#[test]
fn readme_one_command_table_works_as_pasted() {
    let text = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let commands: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("| ") && l.contains("| `riposte "))
        .filter_map(|l| {
            let start = l.find("| `riposte ")? + 3;
            let end = start + l[start..].find('`')?;
            Some(l[start..end].to_string())
        })
        .collect();
    assert!(commands.len() >= 6, "{commands:?}");
    let sandbox = Sandbox::new();
    for c in &commands {
        if c == "riposte server" || c.starts_with("riposte demo") {
            eprintln!(
                "skipped (runs until stopped; tests/demo.rs and tests/server.rs run it): {c}"
            );
            continue;
        }
        let out = sandbox.shell(c);
        assert!(out.status.success(), "{}", explain(c, &out));
    }
}

/// The examples of `riposte --help` and of every subcommand's help.
#[test]
fn help_examples_work_as_pasted() {
    let sandbox = Sandbox::new();
    let mut examples = Vec::new();
    let mut pending = vec![Vec::<String>::new()];
    while let Some(path) = pending.pop() {
        let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
            .args(&path)
            .arg("--help")
            .output()
            .expect("riposte --help");
        let help = String::from_utf8_lossy(&out.stdout).to_string();
        let mut in_commands = false;
        let mut in_examples = false;
        for line in help.lines() {
            let t = line.trim();
            if t == "Commands:" {
                in_commands = true;
                continue;
            }
            if in_commands {
                match t.split_whitespace().next() {
                    Some(sub) if line.starts_with("  ") && sub != "help" => {
                        let mut p = path.clone();
                        p.push(sub.to_string());
                        pending.push(p);
                        continue;
                    }
                    Some(_) if line.starts_with("  ") => continue,
                    _ => in_commands = false,
                }
            }
            let t = t.strip_prefix("Examples:").map(str::trim).map_or_else(
                || t,
                |rest| {
                    in_examples = true;
                    rest
                },
            );
            if in_examples {
                if t.starts_with("riposte ") || t == "riposte" {
                    let command = t.split(" #").next().unwrap_or(t).trim().to_string();
                    examples.push(command);
                } else if !t.is_empty() {
                    in_examples = false;
                }
            }
        }
    }
    examples.sort();
    examples.dedup();
    assert!(examples.len() >= 8, "{examples:?}");
    let mut ran = 0;
    for e in &examples {
        let skip = if e.starts_with("riposte demo") {
            Some("tests/demo.rs runs the demo")
        } else if e.starts_with("riposte bench") {
            Some("a benchmark: scripts/bench runs them")
        } else if e.starts_with("riposte library install") {
            Some("needs a server; the README test installs the library")
        } else if e.starts_with("riposte pod-command") || e.starts_with("riposte gitops") {
            Some("needs a cluster or a Git remote")
        } else if e.contains("...") || e.ends_with('\\') {
            Some("not a whole command")
        } else {
            None
        };
        if let Some(why) = skip {
            eprintln!("skipped ({why}): {e}");
            continue;
        }
        let out = sandbox.shell(e);
        assert!(out.status.success(), "{}", explain(e, &out));
        ran += 1;
    }
    assert!(ran >= 6, "only {ran} examples ran: {examples:?}");
}
