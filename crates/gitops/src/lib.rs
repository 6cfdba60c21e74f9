//! Responses as Git changes (GitOps mode): instead of applying a response to the cluster,
//! Riposte commits the manifests it would apply to a branch of the repository a GitOps tool
//! (Argo CD, Flux) deploys from, and waits for a person to merge or reject that branch.
//!
//! - [`propose`]: the files of a [`Change`] committed on top of the target branch (or of the
//!   proposal branch, when a retried step finds it already there) and pushed to the branch.
//!   Retry-safe: proposing the same files again pushes nothing and returns the same commit.
//! - [`review`]: has the proposal reached the target branch (a merge, a fast-forward, or a
//!   squash/rebase that carries the same file contents), was it rejected (its branch deleted
//!   without that), or is it still pending?
//!
//! Everything happens in a bare scratch repository: trees are built in memory, nothing is
//! checked out, so a large GitOps repository costs one fetch of two branches. Remotes that
//! are local paths or `file://` URLs use libgit2's own transport; other URLs (https, ssh) use
//! the `git` command, because this libgit2 is built without TLS or SSH (one TLS stack in the
//! binary). See [`Transport`].

use std::path::{Path, PathBuf};
use std::process::Command;

use git2::{Oid, Repository, Signature};

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{what}: {source}")]
    Git {
        what: String,
        #[source]
        source: git2::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("running git {what}: {detail}")]
    Command { what: String, detail: String },
}

trait Context<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, GitError>;
}

impl<T> Context<T> for Result<T, git2::Error> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T, GitError> {
        self.map_err(|source| GitError::Git {
            what: what(),
            source,
        })
    }
}

/// Credentials for an https remote, sent as HTTP Basic auth by the `git` command (a forge
/// token: GitHub takes any user name with a token, GitLab `oauth2`).
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub token: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

/// How the scratch repository talks to the remote.
#[derive(Debug, Clone)]
pub enum Transport {
    /// libgit2's local transport: the remote is a path or a `file://` URL.
    Libgit2,
    /// The `git` command, for https and ssh remotes (credentials for https; ssh uses the
    /// step's own ssh configuration).
    Command(Option<Credentials>),
}

impl Transport {
    /// libgit2 for paths and `file://`, the `git` command for everything else.
    pub fn for_url(url: &str, credentials: Option<Credentials>) -> Transport {
        if is_local(url) {
            Transport::Libgit2
        } else {
            Transport::Command(credentials)
        }
    }
}

fn is_local(url: &str) -> bool {
    url.starts_with("file://") || url.starts_with('/') || url.starts_with("./")
}

/// A remote repository and how to reach it.
#[derive(Debug, Clone)]
pub struct Remote {
    pub url: String,
    pub transport: Transport,
}

impl Remote {
    pub fn new(url: &str, credentials: Option<Credentials>) -> Remote {
        Remote {
            url: url.to_string(),
            transport: Transport::for_url(url, credentials),
        }
    }

    /// The remote as libgit2 talks to it from the scratch repository.
    fn libgit2_remote<'r>(&self, scratch: &'r Repository) -> Result<git2::Remote<'r>, GitError> {
        scratch
            .remote_anonymous(&self.url)
            .context(|| format!("opening the remote {}", self.url))
    }

    /// The remote's branches and their commits.
    fn heads(&self, scratch: &Repository) -> Result<Vec<(String, Oid)>, GitError> {
        match &self.transport {
            Transport::Libgit2 => {
                let mut remote = self.libgit2_remote(scratch)?;
                remote
                    .connect(git2::Direction::Fetch)
                    .context(|| format!("connecting to {}", self.url))?;
                let heads = remote
                    .list()
                    .context(|| format!("listing the branches of {}", self.url))?
                    .iter()
                    .filter_map(|h| {
                        h.name()
                            .strip_prefix("refs/heads/")
                            .map(|b| (b.to_string(), h.oid()))
                    })
                    .collect();
                Ok(heads)
            }
            Transport::Command(creds) => {
                let out = self.git(scratch, creds, &["ls-remote", "--heads", &self.url])?;
                let mut heads = Vec::new();
                for line in out.lines() {
                    let Some((oid, name)) = line.split_once('\t') else {
                        continue;
                    };
                    if let (Ok(oid), Some(b)) =
                        (Oid::from_str(oid.trim()), name.strip_prefix("refs/heads/"))
                    {
                        heads.push((b.to_string(), oid));
                    }
                }
                Ok(heads)
            }
        }
    }

    /// Fetches `branches` into `refs/remotes/origin/*` of the scratch repository.
    fn fetch(&self, scratch: &Repository, branches: &[&str]) -> Result<(), GitError> {
        let specs: Vec<String> = branches
            .iter()
            .map(|b| format!("+refs/heads/{b}:refs/remotes/origin/{b}"))
            .collect();
        match &self.transport {
            Transport::Libgit2 => {
                let mut remote = self.libgit2_remote(scratch)?;
                remote
                    .fetch(&specs, None, None)
                    .context(|| format!("fetching {} from {}", branches.join(", "), self.url))
            }
            Transport::Command(creds) => {
                let mut args = vec!["fetch", "--no-tags", "--quiet", &self.url];
                args.extend(specs.iter().map(String::as_str));
                self.git(scratch, creds, &args).map(drop)
            }
        }
    }

    /// Pushes the scratch repository's `refs/heads/<branch>` to the remote's branch; refused
    /// if the remote branch moved to a commit this one does not descend from.
    fn push(&self, scratch: &Repository, branch: &str) -> Result<(), GitError> {
        let spec = format!("refs/heads/{branch}:refs/heads/{branch}");
        match &self.transport {
            Transport::Libgit2 => {
                let mut remote = self.libgit2_remote(scratch)?;
                let mut refused: Option<String> = None;
                let mut callbacks = git2::RemoteCallbacks::new();
                callbacks.push_update_reference(|name, status| {
                    if let Some(why) = status {
                        refused = Some(format!("{name}: {why}"));
                    }
                    Ok(())
                });
                let mut options = git2::PushOptions::new();
                options.remote_callbacks(callbacks);
                remote
                    .push(&[spec.as_str()], Some(&mut options))
                    .context(|| format!("pushing {branch} to {}", self.url))?;
                drop(options);
                match refused {
                    Some(why) => Err(GitError::Invalid(format!(
                        "{} refused the push of {branch}: {why}",
                        self.url
                    ))),
                    None => Ok(()),
                }
            }
            Transport::Command(creds) => self
                .git(scratch, creds, &["push", "--quiet", &self.url, &spec])
                .map(drop),
        }
    }

    /// Runs `git` on the scratch repository; the token travels in an environment-provided
    /// config entry, never on the command line or in an error.
    fn git(
        &self,
        scratch: &Repository,
        creds: &Option<Credentials>,
        args: &[&str],
    ) -> Result<String, GitError> {
        let mut cmd = Command::new("git");
        cmd.arg("--git-dir").arg(scratch.path());
        cmd.env("GIT_TERMINAL_PROMPT", "0");
        if let Some(c) = creds {
            use base64::Engine as _;
            let basic = base64::engine::general_purpose::STANDARD
                .encode(format!("{}:{}", c.username, c.token));
            cmd.env("GIT_CONFIG_COUNT", "1")
                .env("GIT_CONFIG_KEY_0", "http.extraHeader")
                .env(
                    "GIT_CONFIG_VALUE_0",
                    format!("Authorization: Basic {basic}"),
                );
        }
        cmd.args(args);
        let what = args.first().copied().unwrap_or("").to_string();
        let out = cmd.output().map_err(|e| GitError::Command {
            what: what.clone(),
            detail: format!("{e} (is git installed? remotes other than local paths need it)"),
        })?;
        if !out.status.success() {
            let mut detail = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if let Some(c) = creds {
                detail = detail.replace(&c.token, "***");
            }
            return Err(GitError::Command { what, detail });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// A proposed change: files written under `dir` of the repository, on `branch`, for review
/// against `target`.
#[derive(Debug, Clone)]
pub struct Change {
    pub target: String,
    pub branch: String,
    /// The directory inside the repository (`responses/payments`); empty for the root.
    pub dir: String,
    /// File names relative to `dir`, and their contents.
    pub files: Vec<(String, Vec<u8>)>,
    pub message: String,
    pub author_name: String,
    pub author_email: String,
    /// Build the commit but push nothing: what would be proposed.
    pub dry_run: bool,
}

/// What [`propose`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposed {
    /// The commit a reviewer merges (hex).
    pub commit: String,
    /// A new commit was pushed (false: the branch already held these files, or the target
    /// already has them).
    pub pushed: bool,
    /// The target branch already holds these exact files: nothing to review.
    pub already_in_target: bool,
    /// The files' paths in the repository.
    pub paths: Vec<String>,
}

/// The scratch repository in `dir` (created, or reused between polls).
pub fn scratch(dir: &Path) -> Result<Repository, GitError> {
    match Repository::open_bare(dir) {
        Ok(r) => Ok(r),
        Err(_) => Repository::init_bare(dir)
            .context(|| format!("creating a scratch repository in {}", dir.display())),
    }
}

fn check_ref_name(what: &str, name: &str) -> Result<(), GitError> {
    if name.is_empty() || !git2::Reference::is_valid_name(&format!("refs/heads/{name}")) {
        return Err(GitError::Invalid(format!(
            "{what} {name:?} is not a valid Git branch name"
        )));
    }
    Ok(())
}

/// The repository path of `file` under `dir`, refusing names that climb out of it.
fn repo_path(dir: &str, file: &str) -> Result<Vec<String>, GitError> {
    let mut parts = Vec::new();
    for p in dir.split('/').chain(file.split('/')) {
        match p {
            "" | "." => {}
            ".." | ".git" => {
                return Err(GitError::Invalid(format!(
                    "the path {dir}/{file} may not contain {p:?}"
                )));
            }
            p => parts.push(p.to_string()),
        }
    }
    if parts.is_empty() {
        return Err(GitError::Invalid(format!(
            "the file name {file:?} is empty"
        )));
    }
    Ok(parts)
}

/// `tree` (or an empty tree) with the blob `blob` at `path`, written; returns the new tree.
fn put(
    repo: &Repository,
    tree: Option<&git2::Tree<'_>>,
    path: &[String],
    blob: Oid,
) -> Result<Oid, GitError> {
    let mut builder = repo
        .treebuilder(tree)
        .context(|| "building a tree".to_string())?;
    match path {
        [] => Err(GitError::Invalid("empty path".into())),
        [name] => {
            builder
                .insert(name, blob, 0o100644)
                .context(|| format!("adding {name}"))?;
            builder.write().context(|| "writing a tree".to_string())
        }
        [dir, rest @ ..] => {
            let sub = match tree.and_then(|t| t.get_name(dir)) {
                Some(entry) if entry.kind() == Some(git2::ObjectType::Tree) => Some(
                    repo.find_tree(entry.id())
                        .context(|| format!("reading {dir}"))?,
                ),
                Some(_) => {
                    return Err(GitError::Invalid(format!(
                        "{dir} is a file in the repository, not a directory"
                    )));
                }
                None => None,
            };
            let sub_oid = put(repo, sub.as_ref(), rest, blob)?;
            builder
                .insert(dir, sub_oid, 0o040000)
                .context(|| format!("adding {dir}/"))?;
            builder.write().context(|| "writing a tree".to_string())
        }
    }
}

fn remote_tip(repo: &Repository, branch: &str) -> Result<Oid, GitError> {
    repo.refname_to_id(&format!("refs/remotes/origin/{branch}"))
        .context(|| format!("reading the fetched {branch}"))
}

/// Commits `change` to its branch and pushes it (see the crate doc).
pub fn propose(remote: &Remote, change: &Change, scratch_dir: &Path) -> Result<Proposed, GitError> {
    check_ref_name("the target branch", &change.target)?;
    check_ref_name("the branch", &change.branch)?;
    if change.branch == change.target {
        return Err(GitError::Invalid(format!(
            "the proposal branch and the target branch are both {:?}; a change for review needs its own branch",
            change.target
        )));
    }
    if change.files.is_empty() {
        return Err(GitError::Invalid("the change has no files".into()));
    }
    let repo = scratch(scratch_dir)?;
    let heads = remote.heads(&repo)?;
    let has = |b: &str| heads.iter().any(|(n, _)| n == b);
    if !has(&change.target) {
        return Err(GitError::Invalid(format!(
            "{} has no branch {:?} (branches: {})",
            remote.url,
            change.target,
            heads
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let branch_exists = has(&change.branch);
    let mut fetch: Vec<&str> = vec![&change.target];
    if branch_exists {
        fetch.push(&change.branch);
    }
    remote.fetch(&repo, &fetch)?;
    let target_tip = remote_tip(&repo, &change.target)?;
    let base = if branch_exists {
        remote_tip(&repo, &change.branch)?
    } else {
        target_tip
    };
    let base_commit = repo
        .find_commit(base)
        .context(|| format!("reading commit {base}"))?;
    let base_tree = base_commit
        .tree()
        .context(|| format!("reading the tree of {base}"))?;

    let mut tree_oid = base_tree.id();
    let mut paths = Vec::new();
    for (name, content) in &change.files {
        let path = repo_path(&change.dir, name)?;
        let blob = repo.blob(content).context(|| format!("storing {name}"))?;
        let current = repo
            .find_tree(tree_oid)
            .context(|| "reading the tree being built".to_string())?;
        tree_oid = put(&repo, Some(&current), &path, blob)?;
        paths.push(path.join("/"));
    }
    if tree_oid == base_tree.id() {
        return Ok(Proposed {
            commit: base.to_string(),
            pushed: false,
            already_in_target: !branch_exists,
            paths,
        });
    }
    let tree = repo
        .find_tree(tree_oid)
        .context(|| "reading the new tree".to_string())?;
    let sig = Signature::now(&change.author_name, &change.author_email)
        .context(|| "making the commit's author".to_string())?;
    let commit = repo
        .commit(None, &sig, &sig, &change.message, &tree, &[&base_commit])
        .context(|| "committing the change".to_string())?;
    repo.reference(
        &format!("refs/heads/{}", change.branch),
        commit,
        true,
        "riposte gitops propose",
    )
    .context(|| format!("setting {}", change.branch))?;
    if !change.dry_run {
        remote.push(&repo, &change.branch)?;
    }
    Ok(Proposed {
        commit: commit.to_string(),
        pushed: !change.dry_run,
        already_in_target: false,
        paths,
    })
}

/// Where a proposal stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Review {
    /// The target branch carries the change; `how` says how it got there.
    Merged { target_commit: String, how: String },
    /// The branch is gone and the target does not carry the change.
    Rejected { reason: String },
    /// The branch is there, not merged yet.
    Pending,
}

/// Where the proposal `commit` on `branch` stands against `target` (see the crate doc).
pub fn review(
    remote: &Remote,
    target: &str,
    branch: &str,
    commit: &str,
    scratch_dir: &Path,
) -> Result<Review, GitError> {
    check_ref_name("the target branch", target)?;
    check_ref_name("the branch", branch)?;
    let proposal = Oid::from_str(commit)
        .map_err(|_| GitError::Invalid(format!("{commit:?} is not a commit id (40 hex digits)")))?;
    let repo = scratch(scratch_dir)?;
    let heads = remote.heads(&repo)?;
    let Some(target_tip) = heads.iter().find(|(n, _)| n == target).map(|(_, o)| *o) else {
        return Err(GitError::Invalid(format!(
            "{} has no branch {target:?} any more",
            remote.url
        )));
    };
    let branch_exists = heads.iter().any(|(n, _)| n == branch);
    let mut fetch = vec![target];
    if branch_exists {
        fetch.push(branch);
    }
    remote.fetch(&repo, &fetch)?;
    if repo.find_commit(proposal).is_err() {
        // Neither the target nor the branch has it: the branch was deleted (or rewritten)
        // before anything carried the commit over. Ask again which: it may have been
        // deleted between the listing and the fetch.
        let branch_exists = remote.heads(&repo)?.iter().any(|(n, _)| n == branch);
        return Ok(if branch_exists {
            Review::Rejected {
                reason: format!("{branch} no longer contains the proposed commit {commit}"),
            }
        } else {
            Review::Rejected {
                reason: format!("{branch} was deleted without being merged into {target}"),
            }
        });
    }
    if target_tip == proposal
        || repo
            .graph_descendant_of(target_tip, proposal)
            .context(|| format!("comparing {target} with {commit}"))?
    {
        return Ok(Review::Merged {
            target_commit: target_tip.to_string(),
            how: format!("{target} contains {commit}"),
        });
    }
    if carries_contents(&repo, target_tip, proposal)? {
        return Ok(Review::Merged {
            target_commit: target_tip.to_string(),
            how: format!("{target} holds the proposed files (squashed or rebased from {commit})"),
        });
    }
    if !branch_exists {
        return Ok(Review::Rejected {
            reason: format!("{branch} was deleted without being merged into {target}"),
        });
    }
    Ok(Review::Pending)
}

/// Every file the proposal changed (against its merge base with the target) has the
/// proposal's content in the target's tip: a squash or rebase merge.
fn carries_contents(repo: &Repository, target_tip: Oid, proposal: Oid) -> Result<bool, GitError> {
    let base = repo
        .merge_base(target_tip, proposal)
        .context(|| "finding the merge base".to_string())?;
    let tree_of = |oid: Oid| -> Result<git2::Tree<'_>, GitError> {
        repo.find_commit(oid)
            .and_then(|c| c.tree())
            .context(|| format!("reading the tree of {oid}"))
    };
    let (base_tree, proposal_tree, target_tree) =
        (tree_of(base)?, tree_of(proposal)?, tree_of(target_tip)?);
    let diff = repo
        .diff_tree_to_tree(Some(&base_tree), Some(&proposal_tree), None)
        .context(|| "comparing the proposal with its base".to_string())?;
    let mut any = false;
    for delta in diff.deltas() {
        let Some(path) = delta.new_file().path() else {
            continue;
        };
        any = true;
        let wanted = delta.new_file().id();
        match target_tree.get_path(path) {
            Ok(entry) if entry.id() == wanted => {}
            _ => return Ok(false),
        }
    }
    Ok(any)
}

/// A directory for the scratch repository of one proposal, under `parent`.
pub fn scratch_dir(parent: &Path, branch: &str) -> PathBuf {
    parent.join(branch.replace('/', "_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_repository() {
        assert_eq!(
            repo_path("responses/payments", "networkpolicy-x.yaml").unwrap(),
            ["responses", "payments", "networkpolicy-x.yaml"]
        );
        assert_eq!(repo_path("", "a.yaml").unwrap(), ["a.yaml"]);
        for bad in ["../a", "x/../../a", ".git/config"] {
            assert!(repo_path("d", bad).is_err(), "{bad}");
        }
        assert!(repo_path("", "").is_err());
    }

    #[test]
    fn urls_choose_their_transport() {
        assert!(matches!(
            Transport::for_url("/srv/git/ops.git", None),
            Transport::Libgit2
        ));
        assert!(matches!(
            Transport::for_url("file:///srv/ops.git", None),
            Transport::Libgit2
        ));
        assert!(matches!(
            Transport::for_url("https://github.com/acme/ops.git", None),
            Transport::Command(None)
        ));
        assert!(matches!(
            Transport::for_url("git@github.com:acme/ops.git", None),
            Transport::Command(_)
        ));
    }
}
