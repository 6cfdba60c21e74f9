//! Proposals and reviews against real local bare repositories, with the reviewer's side
//! (merge, squash, delete the branch) done by the `git` command as a person would.

use std::path::{Path, PathBuf};
use std::process::Command;

use riposte_gitops::{Change, Credentials, Remote, Review, Transport, propose, review};

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Reviewer",
            "-c",
            "user.email=reviewer@example.com",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository with `main` holding `apps/web.yaml`, and a reviewer's clone of it.
struct Fixture {
    _dir: tempfile::TempDir,
    bare: PathBuf,
    clone: PathBuf,
    scratch: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let bare = dir.path().join("ops.git");
    let clone = dir.path().join("reviewer");
    git(
        dir.path(),
        &["init", "-q", "--bare", "-b", "main", "ops.git"],
    );
    git(
        dir.path(),
        &["clone", "-q", bare.to_str().unwrap(), "reviewer"],
    );
    std::fs::create_dir_all(clone.join("apps")).unwrap();
    std::fs::write(clone.join("apps/web.yaml"), "kind: Deployment\n").unwrap();
    git(&clone, &["checkout", "-q", "-b", "main"]);
    git(&clone, &["add", "."]);
    git(&clone, &["commit", "-q", "-m", "initial"]);
    git(&clone, &["push", "-q", "origin", "main"]);
    Fixture {
        scratch: dir.path().join("scratch"),
        _dir: dir,
        bare,
        clone,
    }
}

fn change(files: &[(&str, &str)]) -> Change {
    Change {
        target: "main".into(),
        branch: "riposte/isolate-web".into(),
        dir: "responses/payments".into(),
        files: files
            .iter()
            .map(|(n, c)| (n.to_string(), c.as_bytes().to_vec()))
            .collect(),
        message: "Isolate payments/web\n\nFalco: Terminal shell in container".into(),
        author_name: "Riposte".into(),
        author_email: "riposte@example.com".into(),
        dry_run: false,
    }
}

fn remotes(f: &Fixture) -> Vec<Remote> {
    vec![
        Remote::new(f.bare.to_str().unwrap(), None),
        // The `git` command transport, as https remotes use it (with credentials it would
        // send as Basic auth; a file:// remote ignores them).
        Remote {
            url: format!("file://{}", f.bare.display()),
            transport: Transport::Command(Some(Credentials {
                username: "x-access-token".into(),
                token: "not-used".into(),
            })),
        },
    ]
}

#[test]
fn a_proposal_is_a_branch_with_the_files_and_proposing_again_pushes_nothing() {
    for transport in 0..2 {
        let f = fixture();
        let remote = remotes(&f).swap_remove(transport);
        let c = change(&[("networkpolicy-web.yaml", "kind: NetworkPolicy\n")]);
        let p = propose(&remote, &c, &f.scratch).expect("propose");
        assert!(p.pushed && !p.already_in_target, "{p:?}");
        assert_eq!(p.paths, ["responses/payments/networkpolicy-web.yaml"]);
        let on_branch = git(&f.bare, &["rev-parse", "refs/heads/riposte/isolate-web"]);
        assert_eq!(on_branch, p.commit);
        let shown = git(
            &f.bare,
            &[
                "show",
                "riposte/isolate-web:responses/payments/networkpolicy-web.yaml",
            ],
        );
        assert_eq!(shown, "kind: NetworkPolicy");
        // The target's own files are kept, and the commit says why.
        git(&f.bare, &["show", "riposte/isolate-web:apps/web.yaml"]);
        let message = git(&f.bare, &["log", "-1", "--format=%B", &p.commit]);
        assert!(message.contains("Terminal shell in container"), "{message}");
        assert_eq!(
            git(&f.bare, &["log", "-1", "--format=%an <%ae>", &p.commit]),
            "Riposte <riposte@example.com>"
        );

        // A retried step: same files, same commit, nothing pushed.
        let again = propose(&remote, &c, &f.scratch.join("2")).expect("propose again");
        assert_eq!(
            (again.commit.as_str(), again.pushed),
            (p.commit.as_str(), false)
        );

        // Different content: a second commit on the same branch.
        let c2 = change(&[("networkpolicy-web.yaml", "kind: NetworkPolicy\nspec: {}\n")]);
        let p2 = propose(&remote, &c2, &f.scratch.join("3")).expect("propose changed");
        assert!(p2.pushed && p2.commit != p.commit);
        assert_eq!(
            git(&f.bare, &["rev-parse", &format!("{}^", p2.commit)]),
            p.commit
        );
        assert_eq!(
            review(&remote, "main", &c.branch, &p2.commit, &f.scratch.join("r")).unwrap(),
            Review::Pending
        );
    }
}

#[test]
fn merges_fast_forwards_and_squashes_count_as_merged() {
    for how in ["merge", "ff", "squash"] {
        let f = fixture();
        let remote = Remote::new(f.bare.to_str().unwrap(), None);
        let c = change(&[("networkpolicy-web.yaml", "kind: NetworkPolicy\n")]);
        let p = propose(&remote, &c, &f.scratch).expect("propose");
        assert_eq!(
            review(&remote, "main", &c.branch, &p.commit, &f.scratch).unwrap(),
            Review::Pending
        );
        // Someone else's change lands on main meanwhile (so only a real merge carries ours).
        std::fs::write(f.clone.join("README"), "ops\n").unwrap();
        git(&f.clone, &["add", "README"]);
        git(&f.clone, &["commit", "-q", "-m", "readme"]);
        if how == "ff" {
            git(&f.clone, &["reset", "-q", "--hard", "HEAD^"]);
        }
        git(&f.clone, &["fetch", "-q", "origin"]);
        match how {
            "merge" => git(
                &f.clone,
                &[
                    "merge",
                    "-q",
                    "--no-ff",
                    "-m",
                    "Merge",
                    "origin/riposte/isolate-web",
                ],
            ),
            "ff" => git(
                &f.clone,
                &["merge", "-q", "--ff-only", "origin/riposte/isolate-web"],
            ),
            _ => {
                git(
                    &f.clone,
                    &["merge", "-q", "--squash", "origin/riposte/isolate-web"],
                );
                git(&f.clone, &["commit", "-q", "-m", "Squashed"])
            }
        };
        git(&f.clone, &["push", "-q", "origin", "main"]);
        if how == "squash" {
            git(
                &f.clone,
                &["push", "-q", "origin", "--delete", "riposte/isolate-web"],
            );
        }
        let r = review(&remote, "main", &c.branch, &p.commit, &f.scratch).unwrap();
        assert!(matches!(r, Review::Merged { .. }), "{how}: {r:?}");
    }
}

#[test]
fn a_deleted_branch_is_a_rejection_and_files_already_in_the_target_need_no_review() {
    let f = fixture();
    let remote = Remote::new(f.bare.to_str().unwrap(), None);
    let c = change(&[("networkpolicy-web.yaml", "kind: NetworkPolicy\n")]);
    let p = propose(&remote, &c, &f.scratch).expect("propose");
    git(
        &f.clone,
        &["push", "-q", "origin", "--delete", "riposte/isolate-web"],
    );
    // A fresh scratch (another replica, or the step after a restart) has never seen it.
    for scratch in [f.scratch.clone(), f.scratch.join("fresh")] {
        let r = review(&remote, "main", &c.branch, &p.commit, &scratch).unwrap();
        assert!(
            matches!(&r, Review::Rejected { reason } if reason.contains("deleted without being merged")),
            "{r:?}"
        );
    }

    let dry = Change {
        dry_run: true,
        ..change(&[("networkpolicy-web.yaml", "kind: NetworkPolicy\n")])
    };
    let p = propose(&remote, &dry, &f.scratch.join("d")).expect("dry run");
    assert!(!p.pushed && p.commit.len() == 40, "{p:?}");
    assert!(git(&f.bare, &["branch", "--list", "riposte/isolate-web"]).is_empty());

    let existing = Change {
        dir: "apps".into(),
        ..change(&[("web.yaml", "kind: Deployment\n")])
    };
    let p = propose(&remote, &existing, &f.scratch.join("e")).expect("propose existing");
    assert!(p.already_in_target && !p.pushed, "{p:?}");
    assert!(
        git(&f.bare, &["branch", "--list", "riposte/isolate-web"]).is_empty(),
        "no branch is pushed for a change the target already has"
    );
}

#[test]
fn bad_input_is_refused_with_the_reason() {
    let f = fixture();
    let remote = Remote::new(f.bare.to_str().unwrap(), None);
    let mut c = change(&[("../../etc/passwd", "x")]);
    let e = propose(&remote, &c, &f.scratch).unwrap_err().to_string();
    assert!(e.contains("may not contain"), "{e}");
    c = change(&[("a.yaml", "x")]);
    c.branch = "main".into();
    let e = propose(&remote, &c, &f.scratch).unwrap_err().to_string();
    assert!(e.contains("needs its own branch"), "{e}");
    c.branch = "bad..name".into();
    let e = propose(&remote, &c, &f.scratch).unwrap_err().to_string();
    assert!(e.contains("not a valid Git branch name"), "{e}");
    c = change(&[("a.yaml", "x")]);
    c.target = "trunk".into();
    let e = propose(&remote, &c, &f.scratch).unwrap_err().to_string();
    assert!(
        e.contains("has no branch \"trunk\"") && e.contains("main"),
        "{e}"
    );
    let missing = Remote::new("/nonexistent/ops.git", None);
    let e = propose(&missing, &change(&[("a.yaml", "x")]), &f.scratch).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/ops.git"), "{e}");
    let e = review(&remote, "main", "riposte/x", "zz", &f.scratch).unwrap_err();
    assert!(e.to_string().contains("not a commit id"), "{e}");
}
