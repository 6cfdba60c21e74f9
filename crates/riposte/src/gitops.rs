//! `riposte gitops propose|wait|verify`: the three steps of a response in GitOps mode (the
//! `gitops-change` action). Propose commits the manifests the response would apply to a
//! branch; wait polls the repository until a person merges that branch into the target
//! branch or rejects it (deletes the branch), or the review times out; verify polls the
//! cluster until it carries what was merged (the GitOps tool applies it, not Riposte).
//!
//! Each writes its outputs as files into `--outputs-dir` (for Argo's `valueFrom.path`) and
//! its report as JSON on stdout (the step's `result`). Credentials for https remotes come
//! from `GIT_USERNAME`/`GIT_TOKEN`, which a step takes from a Secret.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use riposte_gitops::{Change, Credentials, Remote, Review};
use serde_json::{Value, json};

#[derive(clap::Subcommand)]
pub(crate) enum GitopsCmd {
    /// Commit the manifests to a branch of the GitOps repository and push it for review.
    Propose(ProposeArgs),
    /// Wait until the proposal branch is merged into the target branch or rejected.
    Wait(WaitArgs),
    /// Wait until the cluster carries every field the manifests set.
    Verify(VerifyArgs),
}

#[derive(clap::Args)]
pub(crate) struct RepoArgs {
    /// The repository: a path or file:// URL (libgit2), or an https/ssh URL (the `git`
    /// command; https credentials from GIT_USERNAME/GIT_TOKEN).
    #[arg(long)]
    repo: String,
    /// The branch the GitOps tool deploys from.
    #[arg(long, default_value = "main")]
    target: String,
    /// The proposal branch (one per response, e.g. riposte/<workflow name>).
    #[arg(long)]
    branch: String,
    /// Write each output as a file into this directory (commit, decision, ...).
    #[arg(long, value_name = "DIR")]
    outputs_dir: Option<PathBuf>,
}

#[derive(clap::Args)]
pub(crate) struct ProposeArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The directory in the repository the manifests go to.
    #[arg(long, default_value = "riposte")]
    dir: String,
    /// The manifests: a JSON object or list, or YAML documents ("-" reads standard input).
    #[arg(long)]
    manifests: String,
    /// The commit's headline, e.g. "Isolate payments/api (Falco: Terminal shell in container)".
    #[arg(long)]
    title: String,
    /// The alert that started the response (JSON), quoted in the commit message.
    #[arg(long, default_value = "")]
    alert: String,
    /// The run, as NAMESPACE/NAME (and uid), quoted in the commit message.
    #[arg(long, default_value = "")]
    run: String,
    /// A link to the run.
    #[arg(long, default_value = "")]
    link: String,
    /// The commit's author.
    #[arg(long, default_value = "Riposte <riposte@localhost>")]
    author: String,
    /// Build the commit and report it, but push nothing.
    #[arg(long, value_name = "true|false", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = crate::cli::bool_flag)]
    dry_run: bool,
}

#[derive(clap::Args)]
pub(crate) struct WaitArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// The proposed commit (propose's `commit` output).
    #[arg(long)]
    commit: String,
    /// Propose's `review` output: `requested` waits; `not-needed` (the target already holds
    /// the change) is merged at once; `dry-run` decides `dry-run` at once.
    #[arg(long, default_value = "requested", value_parser = ["requested", "not-needed", "dry-run"])]
    review: String,
    /// How long a person has to decide (Go duration: 30m, 24h).
    #[arg(long, default_value = "24h")]
    timeout: String,
    /// How often the repository is asked.
    #[arg(long, default_value = "15s")]
    interval: String,
    /// The decision when nobody decides in time: reject (the default; the change is not
    /// applied) or fail (the step fails).
    #[arg(long, default_value = "reject", value_parser = ["reject", "fail"])]
    on_timeout: String,
}

#[derive(clap::Args)]
pub(crate) struct VerifyArgs {
    /// The manifests that were merged (as propose took them).
    #[arg(long)]
    manifests: String,
    /// The namespace of namespaced manifests that name none.
    #[arg(long, short = 'n', default_value = "default")]
    namespace: String,
    /// How long the GitOps tool has to apply the merged change.
    #[arg(long, default_value = "10m")]
    timeout: String,
    /// How often the cluster is read.
    #[arg(long, default_value = "5s")]
    interval: String,
    /// Write the report into this directory as `converged`.
    #[arg(long, value_name = "DIR")]
    outputs_dir: Option<PathBuf>,
}

pub(crate) fn main(cmd: GitopsCmd) -> Result<()> {
    match cmd {
        GitopsCmd::Propose(a) => propose(a),
        GitopsCmd::Wait(a) => wait(a),
        GitopsCmd::Verify(a) => verify(a),
    }
}

fn duration(flag: &str, text: &str) -> Result<Duration> {
    expr::time::parse_duration_millis(text)
        .filter(|ms| *ms >= 0)
        .map(|ms| Duration::from_millis(ms as u64))
        .ok_or_else(|| anyhow!("--{flag} {text:?} is not a duration (e.g. 30s, 15m, 24h)"))
}

fn remote(repo: &str) -> Remote {
    let credentials = std::env::var("GIT_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
        .map(|token| Credentials {
            username: std::env::var("GIT_USERNAME")
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| "x-access-token".into()),
            token,
        });
    Remote::new(repo, credentials)
}

fn write_outputs(dir: Option<&Path>, outputs: &[(&str, &str)]) -> Result<()> {
    let Some(dir) = dir else { return Ok(()) };
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (name, value) in outputs {
        let path = dir.join(name);
        std::fs::write(&path, value).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// The manifests as JSON values: a JSON object or list, or YAML documents; each cleaned of
/// what the API server maintains (a dry run's answer is a fine input).
pub(crate) fn parse_manifests(text: &str) -> Result<Vec<Value>> {
    let text = if text == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the manifests from stdin")?
    } else {
        text.to_string()
    };
    let values: Vec<Value> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(items)) => items,
        Ok(v @ Value::Object(_)) => vec![v],
        Ok(other) => bail!("the manifests are JSON but not an object or a list: {other}"),
        Err(_) => spec::yaml::load_documents(&text)
            .map_err(|e| anyhow!("the manifests are neither JSON nor YAML: {e}"))?
            .into_iter()
            .map(|d| d.value)
            .filter(|v| !v.is_null())
            .collect(),
    };
    let mut out = Vec::new();
    for (i, mut v) in values.into_iter().enumerate() {
        if v["kind"] == "List" {
            out.extend(v["items"].as_array().cloned().unwrap_or_default());
            continue;
        }
        if !(v["apiVersion"].is_string()
            && v["kind"].is_string()
            && v["metadata"]["name"].is_string())
        {
            bail!("manifest {i} needs apiVersion, kind and metadata.name");
        }
        clean(&mut v);
        out.push(v);
    }
    if out.is_empty() {
        bail!("no manifests given");
    }
    Ok(out)
}

/// Drops the fields a GitOps repository must not hold (they belong to one live object).
fn clean(v: &mut Value) {
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
    }
    if let Some(meta) = v["metadata"].as_object_mut() {
        for k in [
            "resourceVersion",
            "uid",
            "managedFields",
            "creationTimestamp",
            "generation",
            "selfLink",
            "deletionTimestamp",
        ] {
            meta.remove(k);
        }
        if let Some(a) = meta.get_mut("annotations").and_then(Value::as_object_mut) {
            a.remove("kubectl.kubernetes.io/last-applied-configuration");
            a.remove("deployment.kubernetes.io/revision");
            if a.is_empty() {
                meta.remove("annotations");
            }
        }
    }
}

/// `kind-namespace-name.yaml` (lowercase; namespace left out for cluster-wide objects).
fn file_name(m: &Value) -> String {
    let kind = m["kind"].as_str().unwrap_or("object").to_ascii_lowercase();
    let name = m["metadata"]["name"].as_str().unwrap_or("unnamed");
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_') {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    };
    match m["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{}-{}-{}.yaml", safe(&kind), safe(ns), safe(name)),
        None => format!("{}-{}.yaml", safe(&kind), safe(name)),
    }
}

fn message(a: &ProposeArgs, paths: &[String]) -> String {
    let mut m = format!("{}\n\n", a.title.trim());
    m.push_str("Proposed by Riposte instead of applying it: merge this branch into ");
    m.push_str(&format!(
        "{} to apply the change, delete the branch to reject it.\n",
        a.repo.target
    ));
    if !a.run.is_empty() {
        m.push_str(&format!("\nRun: {}\n", a.run));
    }
    if !a.link.is_empty() {
        m.push_str(&format!("Link: {}\n", a.link));
    }
    if !a.alert.trim().is_empty() {
        let alert = serde_json::from_str::<Value>(&a.alert)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or_else(|| a.alert.clone());
        let alert: String = alert.chars().take(8000).collect();
        m.push_str("\nAlert:\n");
        for line in alert.lines() {
            m.push_str(&format!("    {line}\n"));
        }
    }
    m.push_str("\nFiles:\n");
    for p in paths {
        m.push_str(&format!("    {p}\n"));
    }
    m
}

fn author(text: &str) -> (String, String) {
    match text.split_once('<') {
        Some((name, rest)) => (
            name.trim().to_string(),
            rest.trim_end_matches('>').trim().to_string(),
        ),
        None => (text.trim().to_string(), "riposte@localhost".to_string()),
    }
}

fn propose(a: ProposeArgs) -> Result<()> {
    let manifests = parse_manifests(&a.manifests)?;
    let files: Vec<(String, Vec<u8>)> = manifests
        .iter()
        .map(|m| (file_name(m), crate::yaml_out::to_yaml(m).into_bytes()))
        .collect();
    let paths: Vec<String> = files
        .iter()
        .map(|(n, _)| {
            if a.dir.trim_matches('/').is_empty() {
                n.clone()
            } else {
                format!("{}/{n}", a.dir.trim_matches('/'))
            }
        })
        .collect();
    let (author_name, author_email) = author(&a.author);
    let change = Change {
        target: a.repo.target.clone(),
        branch: a.repo.branch.clone(),
        dir: a.dir.clone(),
        files,
        message: message(&a, &paths),
        author_name,
        author_email,
        dry_run: a.dry_run,
    };
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let remote = remote(&a.repo.repo);
    let p = riposte_gitops::propose(&remote, &change, scratch.path())
        .map_err(|e| anyhow!("proposing the change to {}: {e}", a.repo.repo))?;
    let review = if a.dry_run {
        eprintln!(
            "dry run: would push {} to {} with {}",
            &p.commit[..12.min(p.commit.len())],
            a.repo.branch,
            paths.join(", ")
        );
        "dry-run"
    } else if p.already_in_target {
        eprintln!(
            "{} already holds these manifests; nothing to review",
            a.repo.target
        );
        "not-needed"
    } else if p.pushed {
        eprintln!(
            "pushed {} to {} ({}); waiting for a review of it against {}",
            &p.commit[..12.min(p.commit.len())],
            a.repo.branch,
            a.repo.repo,
            a.repo.target
        );
        "requested"
    } else {
        eprintln!(
            "{} already holds this proposal ({})",
            a.repo.branch, p.commit
        );
        "requested"
    };
    write_outputs(
        a.repo.outputs_dir.as_deref(),
        &[
            ("commit", &p.commit),
            ("branch", &a.repo.branch),
            ("review", review),
        ],
    )?;
    println!(
        "{}",
        json!({"commit": p.commit, "branch": a.repo.branch, "target": a.repo.target,
               "files": paths, "pushed": p.pushed, "review": review})
    );
    Ok(())
}

fn wait(a: WaitArgs) -> Result<()> {
    let timeout = duration("timeout", &a.timeout)?;
    let interval = duration("interval", &a.interval)?.max(Duration::from_millis(100));
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let remote = remote(&a.repo.repo);
    let start = Instant::now();
    let mut last_said = None::<Instant>;
    let (decision, reason, target_commit) = loop {
        match a.review.as_str() {
            "not-needed" => {
                break (
                    "merged",
                    format!("{} already held the change", a.repo.target),
                    a.commit.clone(),
                );
            }
            "dry-run" => {
                break (
                    "dry-run",
                    "a dry run proposes nothing".to_string(),
                    String::new(),
                );
            }
            _ => {}
        }
        match riposte_gitops::review(
            &remote,
            &a.repo.target,
            &a.repo.branch,
            &a.commit,
            scratch.path(),
        ) {
            Ok(Review::Merged { target_commit, how }) => break ("merged", how, target_commit),
            Ok(Review::Rejected { reason }) => break ("rejected", reason, String::new()),
            Ok(Review::Pending) => {}
            // A repository that cannot be reached for a moment must not decide the review.
            Err(e) => eprintln!("asking {} failed (trying again): {e}", a.repo.repo),
        }
        if start.elapsed() >= timeout {
            if a.on_timeout == "fail" {
                bail!(
                    "nobody merged or rejected {} within {}",
                    a.repo.branch,
                    a.timeout
                );
            }
            break (
                "rejected",
                format!("nobody decided within {}: rejected by default", a.timeout),
                String::new(),
            );
        }
        if last_said.is_none_or(|t| t.elapsed() >= Duration::from_secs(60)) {
            eprintln!(
                "waiting for {} to be merged into {} or rejected ({}s of {})",
                a.repo.branch,
                a.repo.target,
                start.elapsed().as_secs(),
                a.timeout
            );
            last_said = Some(Instant::now());
        }
        std::thread::sleep(interval);
    };
    eprintln!("{decision}: {reason}");
    write_outputs(
        a.repo.outputs_dir.as_deref(),
        &[
            ("decision", decision),
            ("reason", &reason),
            ("targetCommit", &target_commit),
        ],
    )?;
    println!(
        "{}",
        json!({"decision": decision, "reason": reason, "branch": a.repo.branch,
               "commit": a.commit, "targetCommit": target_commit})
    );
    Ok(())
}

fn verify(a: VerifyArgs) -> Result<()> {
    let manifests = parse_manifests(&a.manifests)?;
    let timeout = duration("timeout", &a.timeout)?;
    let interval = duration("interval", &a.interval)?.max(Duration::from_millis(100));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let client = riposte_kube::client_from_env().await?;
        let mut said = String::new();
        riposte_kube::converge::wait(
            &client,
            &manifests,
            &a.namespace,
            timeout,
            interval,
            |states| {
                let now: Vec<String> = states
                    .iter()
                    .map(|s| {
                        if s.missing.is_empty() {
                            format!("{}: converged", s.object)
                        } else {
                            format!("{}: waiting for {}", s.object, s.missing.join("; "))
                        }
                    })
                    .collect();
                let now = now.join("\n");
                if now != said {
                    eprintln!("{now}");
                    said = now;
                }
            },
        )
        .await
    });
    let report = report.map_err(|e| anyhow!(e))?;
    write_outputs(
        a.outputs_dir.as_deref(),
        &[("converged", &report.to_string())],
    )?;
    println!("{report}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_from_json_yaml_and_lists_are_cleaned_and_named() {
        let dry_run_answer = r#"{"apiVersion":"apps/v1","kind":"Deployment",
            "metadata":{"name":"web","namespace":"payments","uid":"u","resourceVersion":"7",
                        "annotations":{"deployment.kubernetes.io/revision":"3"}},
            "spec":{"replicas":2},"status":{"readyReplicas":2}}"#;
        let m = parse_manifests(dry_run_answer).unwrap();
        assert_eq!(
            m[0],
            json!({"apiVersion":"apps/v1","kind":"Deployment",
                   "metadata":{"name":"web","namespace":"payments"},"spec":{"replicas":2}})
        );
        assert_eq!(file_name(&m[0]), "deployment-payments-web.yaml");
        let yaml = "apiVersion: v1\nkind: Namespace\nmetadata: {name: quarantine}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny/all, namespace: p}\n";
        let m = parse_manifests(yaml).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(file_name(&m[0]), "namespace-quarantine.yaml");
        assert_eq!(file_name(&m[1]), "networkpolicy-p-deny_all.yaml");
        let list = r#"{"kind":"List","items":[{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a"}}]}"#;
        assert_eq!(parse_manifests(list).unwrap().len(), 1);
        for bad in ["[]", "42", "{\"kind\": \"Pod\"}", "a: [b"] {
            assert!(parse_manifests(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn author_and_durations_parse() {
        assert_eq!(
            author("Riposte Bot <bot@acme.io>"),
            ("Riposte Bot".into(), "bot@acme.io".into())
        );
        assert_eq!(duration("timeout", "90s").unwrap(), Duration::from_secs(90));
        assert!(
            duration("timeout", "soon")
                .unwrap_err()
                .to_string()
                .contains("--timeout")
        );
    }
}
