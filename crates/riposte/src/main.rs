//! The `riposte` command line.

mod argosay;
mod bench;
mod client;
mod exec;
mod files;
mod run;
mod ui;
mod yaml_out;

use server::driver::StepExecutor;
use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use engine::{Phase, Workflow, WorkflowIdentity};
use executor::{HostConfig, HostExecutor, ImageTable, Isolation, Sandbox};
use spec::{Kind, Resource, Severity};

/// Exit code for invalid input (bad flags, files that do not lint).
const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(
    name = "riposte",
    version,
    about = "Automated response for Kubernetes: Argo-compatible workflows, run locally or in a cluster",
    long_about = "Riposte runs Argo Workflows YAML (Workflow, WorkflowTemplate, ClusterWorkflowTemplate) with Argo's semantics.\n\nExamples:\n  riposte run workflows/examples/hello-world.yaml\n  riposte run workflows/examples/dag-diamond.yaml -o json\n  riposte run my.yaml -p message=hi --templates workflows/library\n  riposte lint workflows/"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a Workflow (or a WorkflowTemplate from its entrypoint) to completion on this machine.
    ///
    /// Steps run as local processes (the host executor): busybox/alpine/debian/ubuntu images
    /// run with the host's shell tools, python images with the host's python3, and
    /// argoproj/argosay with a built-in shim. Each step gets a private root filesystem with its
    /// own /tmp where the OS permits (root with mount namespaces). With `--executor
    /// kubernetes` steps run as Jobs on the cluster KUBECONFIG names (results from the pods'
    /// termination messages) and resource steps act on that cluster. Exit code: 0 when the
    /// workflow Succeeded, 1 when it Failed or Errored, 2 for invalid input.
    Run(RunArgs),
    /// Check workflow files for errors, printing `file:line:col: error|warning: message`.
    ///
    /// Reports YAML syntax and type errors, unknown templates and templateRefs, a missing
    /// entrypoint, DAG cycles, unknown dependencies, mixed `dependencies`/`depends`, undefined
    /// `{{inputs.parameters.x}}`, invalid expressions, and warns about every field Riposte
    /// does not implement. Exits 1 when there are errors.
    Lint(LintArgs),
    /// Print the REST API's OpenAPI document (also served at /api/v1/openapi.json).
    Openapi,
    /// Run a documented performance workload and print one JSON line of measurements.
    ///
    /// `engine` drives the engine alone with a no-op executor; `host` runs N parallel
    /// `sh -c 'echo x'` steps through the host executor and compares with spawning the same
    /// processes from a thread pool. Build with --release for meaningful numbers.
    Bench {
        #[command(subcommand)]
        workload: BenchCmd,
    },
    /// Run the controller and the Argo-compatible REST API.
    ///
    /// Workflows submitted through the API run on this machine with the host executor, or on
    /// a cluster with `--executor kubernetes` (Jobs, re-attached after a restart); every step
    /// is recorded in the database, and unfinished workflows continue after a restart.
    /// Without authentication configured, the server only listens on loopback addresses.
    Server {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:2746")]
        listen: String,
        /// Run steps without a private root.
        #[arg(long)]
        no_isolation: bool,
        /// Identities and roles for bearer-token authentication (see `riposte auth new-token`).
        /// Without it the server listens on loopback addresses only.
        #[arg(long, env = "RIPOSTE_AUTH_FILE", value_name = "FILE")]
        auth_file: Option<PathBuf>,
        /// Lease length: when a replica dies, another takes its workflows over after this.
        #[arg(
            long,
            env = "RIPOSTE_LEASE_SECONDS",
            default_value_t = 15.0,
            value_name = "SECONDS"
        )]
        lease_seconds: f64,
        /// Log lines as `text` (for people) or `json` (one object per line, for collectors).
        /// Which lines: `RUST_LOG` (default `info`), e.g. `RUST_LOG=riposte_server=debug`.
        #[arg(long, env = "RIPOSTE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
        log_format: String,
        #[command(flatten)]
        kube: KubeArgs,
        /// Kubernetes: this server's URL as step pods reach it (e.g.
        /// http://riposte.riposte.svc:2746). Step wrappers then report results there at once;
        /// without it the executor reads each pod's termination message when its Job ends.
        #[arg(long, env = "RIPOSTE_CALLBACK_BASE_URL", value_name = "URL")]
        callback_url: Option<String>,
        /// Kubernetes: file holding the key of per-node callback tokens. Give every replica
        /// the same key; without it each process picks a random one.
        #[arg(long, env = "RIPOSTE_CALLBACK_SECRET_FILE", value_name = "FILE")]
        callback_secret_file: Option<PathBuf>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Authentication helpers: `auth new-token NAME --role NAMESPACE=ROLE` prints a new token
    /// and the entry to add to the server's --auth-file.
    Auth {
        #[command(subcommand)]
        cmd: AuthCmd,
    },
    /// Submit a workflow to the server (RIPOSTE_SERVER): a file, or --from workflowtemplate/NAME.
    Submit {
        /// The workflow file (linted locally first).
        file: Option<PathBuf>,
        /// Submit from a stored template: workflowtemplate/NAME or clusterworkflowtemplate/NAME.
        #[arg(long)]
        from: Option<String>,
        #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
        parameters: Vec<String>,
        /// Wait until the workflow finishes; exit 0 if it Succeeded, 1 otherwise.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// List workflows on the server.
    List {
        #[command(flatten)]
        remote: Remote,
    },
    /// Show a workflow and its nodes (`-o json` for Argo's object; `--watch` until it ends).
    Get {
        name: String,
        #[arg(short = 'o', long = "output", value_enum)]
        output: Option<OutputFormat>,
        #[arg(short, long)]
        watch: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Resume a suspended workflow (all suspended nodes, or --node NAME), optionally supplying
    /// output parameters: `--set decision=yes` (an approval).
    Resume {
        name: String,
        #[arg(long)]
        node: Option<String>,
        #[arg(long = "set", value_name = "NAME=VALUE")]
        set: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Retry a finished workflow that did not succeed: its failed nodes run again.
    Retry {
        name: String,
        /// Also run again the succeeded nodes matching --node-field-selector.
        #[arg(long)]
        restart_successful: bool,
        /// A node name, display name, id or template name.
        #[arg(long)]
        node_field_selector: Option<String>,
        #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
        parameters: Vec<String>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Resubmit: a new workflow from the same spec and parameters.
    Resubmit {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Follow a workflow's changes as they happen (the workflow-events stream) until it ends.
    Watch {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Print a workflow's step logs (all nodes, or --node NODE_ID_OR_POD_NAME).
    Logs {
        name: String,
        /// Only this node's log (node id or pod name).
        #[arg(long)]
        node: Option<String>,
        /// Keep streaming new lines until the workflow finishes.
        #[arg(short, long)]
        follow: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// CronWorkflows on the server: create FILE, list, get NAME, delete NAME, suspend NAME,
    /// resume NAME.
    Cron {
        #[command(subcommand)]
        cmd: CronCmd,
        #[command(flatten)]
        remote: Remote,
    },
    /// Suspend a workflow: running steps finish, nothing new starts until `resume`.
    Suspend {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stop a workflow: running steps are failed, exit handlers still run.
    Stop {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Terminate a workflow: running steps are failed, exit handlers do not run.
    Terminate {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Delete a finished workflow from the server.
    Delete {
        name: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// WorkflowTemplates on the server: create FILE, list, get NAME, delete NAME.
    Template {
        #[command(subcommand)]
        cmd: TemplateCmd,
        #[command(flatten)]
        remote: Remote,
    },
    /// Database maintenance: `db migrate` applies the schema migrations.
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Re-fold a workflow's recorded history and check that it gives the stored state.
    ///
    /// Loads what the engine was created from and every batch of inputs from the database,
    /// runs them through the engine again, and compares the result node by node with the
    /// stored projection. Exit code 0 when they match, 1 when they differ.
    Replay {
        /// The workflow's name.
        name: String,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// The audit log: `verify` checks the hash chain, `list` shows entries.
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
        #[command(flatten)]
        db: DbArgs,
    },
    /// The wrapper a step's container runs on Kubernetes: runs the command, reports result,
    /// exit code and output files (termination message, and RIPOSTE_CALLBACK_URL if set).
    #[command(hide = true)]
    Exec(exec::ExecArgs),
    /// Copy this binary into DIR (the init container of a step's pod runs this).
    #[command(hide = true)]
    InstallWrapper { dir: PathBuf },
    /// The argosay shim (used by steps that run the argoproj/argosay image).
    #[command(hide = true)]
    Argosay {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

#[derive(clap::Args, Clone)]
struct Remote {
    /// The server's address.
    #[arg(
        long,
        env = "RIPOSTE_SERVER",
        default_value = "http://127.0.0.1:2746",
        global = true
    )]
    server: String,
    /// Bearer token (when the server has --auth-file).
    #[arg(long, env = "RIPOSTE_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    #[arg(short = 'n', long, default_value = "default", global = true)]
    namespace: String,
}

impl Remote {
    fn client(&self) -> client::Client {
        client::Client::new(&self.server, self.token.clone())
    }
}

#[derive(Subcommand)]
enum CronCmd {
    /// Create the CronWorkflows in FILE; the server lints them and starts their schedules.
    Create { file: PathBuf },
    /// A table of CronWorkflows: schedule, suspended, last run.
    List,
    /// Print one CronWorkflow as YAML.
    Get { name: String },
    /// Delete a CronWorkflow (workflows it already started are kept).
    Delete { name: String },
    /// Stop a CronWorkflow from firing until it is resumed.
    Suspend { name: String },
    /// Let a suspended CronWorkflow fire again from its next scheduled time.
    Resume { name: String },
}

#[derive(Subcommand)]
enum TemplateCmd {
    /// Create the WorkflowTemplates in FILE; the server lints them and answers with errors.
    Create { file: PathBuf },
    /// A table of the namespace's WorkflowTemplates.
    List,
    /// Print one WorkflowTemplate as YAML.
    Get { name: String },
    /// Delete a WorkflowTemplate.
    Delete { name: String },
}

#[derive(Subcommand)]
enum AuthCmd {
    /// Generate a random token for NAME; only its SHA-256 goes into the auth file.
    NewToken {
        name: String,
        /// NAMESPACE=ROLE with ROLE one of viewer, submitter, approver, admin; `*=viewer`
        /// applies to every other namespace (repeatable).
        #[arg(long = "role", value_name = "NAMESPACE=ROLE", required = true)]
        roles: Vec<String>,
    },
}

#[derive(Subcommand)]
enum DbCmd {
    /// Apply all migrations (also done automatically whenever Riposte opens the database).
    Migrate,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Recompute the hash chain; name every edited or deleted row. Exit 1 if any.
    Verify,
    /// Show audit entries, oldest first.
    List {
        /// Only entries about this workflow (name; see --namespace).
        #[arg(long)]
        workflow: Option<String>,
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Only entries by this actor.
        #[arg(long)]
        actor: Option<String>,
        /// Only entries at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only entries at or before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 200)]
        limit: i64,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// The engine alone on a generated DAG.
    Engine {
        #[arg(long, value_enum, default_value = "fanout")]
        shape: bench::Shape,
        #[arg(long, default_value_t = 10_000)]
        tasks: usize,
    },
    /// The engine recording every step in the database, as the server does.
    Store {
        #[arg(long, value_enum, default_value = "fanout")]
        shape: bench::Shape,
        #[arg(long, default_value_t = 10_000)]
        tasks: usize,
        #[command(flatten)]
        db: DbArgs,
    },
    /// The REST API: get of a 10,000-node workflow, list pages of the `bench-list`
    /// namespace (scripts/bench fills it with 1,000,000 workflows).
    Api {
        #[command(flatten)]
        db: DbArgs,
    },
    /// Submissions through the one submit path (`Controller::submit`: lint, one transaction
    /// with workflow, lease, idempotency key and audit row, then the first engine step), from
    /// concurrent submitters; then the same keys again (each answered with the first workflow).
    Submit {
        #[arg(long, default_value_t = 2000)]
        workflows: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        #[command(flatten)]
        db: DbArgs,
    },
    /// The host executor against bare process spawning.
    Host {
        #[arg(long, default_value_t = 1000)]
        processes: usize,
        /// Threads spawning processes for the bare baseline.
        #[arg(long, default_value_t = 8)]
        threads: usize,
        /// Run steps without a private root.
        #[arg(long)]
        no_isolation: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum OutputFormat {
    Json,
    Yaml,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The workflow file (YAML or JSON; the first Workflow in it, else the first WorkflowTemplate).
    file: PathBuf,
    /// Set a workflow parameter: -p name=value (repeatable).
    #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
    parameters: Vec<String>,
    /// Start from this template instead of spec.entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    /// Directory (or file) of WorkflowTemplates and ClusterWorkflowTemplates for templateRef.
    #[arg(long, value_name = "DIR")]
    templates: Vec<PathBuf>,
    /// Print the final workflow as Argo's Workflow object on stdout.
    #[arg(short = 'o', long = "output", value_enum)]
    output: Option<OutputFormat>,
    /// Map an image to a host program: --image node=/usr/bin/node (repeatable).
    #[arg(long = "image", value_name = "IMAGE=PROGRAM")]
    images: Vec<String>,
    /// Namespace reported as workflow.namespace.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Directory for run state and logs [default: $RIPOSTE_HOME/runs/NAME, RIPOSTE_HOME=~/.riposte].
    #[arg(long, value_name = "DIR")]
    run_dir: Option<PathBuf>,
    /// Run steps without a private root filesystem (they share the host's /tmp).
    #[arg(long)]
    no_isolation: bool,
    /// Keep each node's private root directory after it ends (for debugging).
    #[arg(long)]
    keep: bool,
    /// With --executor kubernetes: print the Jobs of the steps that would start first (as
    /// YAML documents, or a JSON list with -o json) and run nothing.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    kube: KubeArgs,
    #[command(flatten)]
    db: DbArgs,
}

#[derive(clap::Args, Clone)]
struct KubeArgs {
    /// Executor for steps: `host` (local processes) or `kubernetes` (each container/script
    /// step a batch/v1 Job, resource steps API calls; the cluster comes from the in-cluster
    /// service account or KUBECONFIG).
    #[arg(
        long,
        env = "RIPOSTE_EXECUTOR",
        default_value = "host",
        value_name = "host|kubernetes"
    )]
    executor: String,
    /// Kubernetes: the Riposte image whose init container installs the step wrapper
    /// (`riposte exec`) into each step's pod.
    #[arg(
        long,
        env = "RIPOSTE_IMAGE",
        default_value = "ghcr.io/riposte/riposte:latest"
    )]
    riposte_image: String,
    /// Kubernetes: create every Job in this namespace instead of the workflow's own.
    #[arg(long, env = "RIPOSTE_JOB_NAMESPACE", value_name = "NAMESPACE")]
    job_namespace: Option<String>,
    /// Kubernetes: `ttlSecondsAfterFinished` of step Jobs. A Job removed while no controller
    /// ran cannot be re-attached to, so keep this longer than a restart takes.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    job_ttl_seconds: i64,
    /// Kubernetes: how long a step may sit in ErrImagePull/ImagePullBackOff before it fails
    /// (InvalidImageName and CreateContainerConfigError fail it at once).
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    image_pull_grace_seconds: u64,
}

impl KubeArgs {
    fn check(&self) -> Result<bool> {
        match self.executor.as_str() {
            "host" => Ok(false),
            "kubernetes" => Ok(true),
            other => bail!(InvalidInput(format!(
                "--executor {other:?} is unknown; use host or kubernetes"
            ))),
        }
    }

    /// Connects to the cluster (in-cluster config or KUBECONFIG).
    async fn connect(
        &self,
        callback_url: Option<String>,
        callback_secret: Vec<u8>,
    ) -> Result<riposte_kube::Cluster> {
        let cluster = riposte_kube::Cluster::connect(riposte_kube::ClusterOptions {
            riposte_image: self.riposte_image.clone(),
            ttl_seconds_after_finished: self.job_ttl_seconds,
            job_namespace: self.job_namespace.clone(),
            callback_url,
            callback_secret,
            image_pull_grace: std::time::Duration::from_secs(self.image_pull_grace_seconds),
        })
        .await?;
        Ok(cluster)
    }
}

#[derive(clap::Args, Clone)]
struct DbArgs {
    /// Database for state, history and audit: postgres://USER@HOST/DB or sqlite://PATH
    /// [default: sqlite://$RIPOSTE_HOME/riposte.db]. `none` (run only) records nothing.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", global = true)]
    database_url: Option<String>,
}

#[derive(clap::Args)]
struct LintArgs {
    /// Files or directories (searched for .yaml, .yml, .json).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Extra WorkflowTemplates to resolve templateRef against.
    #[arg(long, value_name = "DIR")]
    templates: Vec<PathBuf>,
    /// Print errors only.
    #[arg(short, long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    // Steps run the shim as `argosay ...` (argv[0]), like the image's entrypoint.
    match argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
    {
        Some("argosay") => return argosay::main(&argv[1..]),
        Some("cowsay") => return argosay::cowsay(&argv[1..]),
        _ => {}
    }
    let cli = Cli::parse();
    match cli.command {
        Cmd::Argosay { args } => argosay::main(&args),
        Cmd::Exec(a) => report(exec::main(a)),
        Cmd::InstallWrapper { dir } => report(exec::install_wrapper(&dir)),
        Cmd::Lint(a) => report(lint(a)),
        Cmd::Openapi => report((|| {
            println!("{}", serde_json::to_string_pretty(&server::api::openapi())?);
            Ok(ExitCode::SUCCESS)
        })()),
        Cmd::Db {
            cmd: DbCmd::Migrate,
            db,
        } => report(block_on(async move {
            let store = open_store(&db).await?;
            println!("{} database is at the latest schema", store.backend());
            Ok(ExitCode::SUCCESS)
        })),
        Cmd::Replay {
            name,
            namespace,
            db,
        } => report(block_on(replay(name, namespace, db))),
        Cmd::Server {
            listen,
            no_isolation,
            auth_file,
            lease_seconds,
            log_format,
            kube,
            callback_url,
            callback_secret_file,
            db,
        } => report(block_on(serve(ServeArgs {
            listen,
            no_isolation,
            auth_file,
            lease_seconds,
            log_format,
            kube,
            callback_url,
            callback_secret_file,
            db,
        }))),
        Cmd::Auth {
            cmd: AuthCmd::NewToken { name, roles },
        } => report(new_token(&name, &roles)),
        Cmd::Submit {
            file,
            from,
            parameters,
            wait,
            remote,
        } => report(submit_cmd(file, from, parameters, wait, &remote)),
        Cmd::List { remote } => report((|| {
            let v = remote.client().call(
                "GET",
                &format!("/api/v1/workflows/{}", remote.namespace),
                None,
            )?;
            client::print_list(v["items"].as_array().map(Vec::as_slice).unwrap_or(&[]))?;
            Ok(ExitCode::SUCCESS)
        })()),
        Cmd::Get {
            name,
            output,
            watch,
            remote,
        } => report(get_cmd(&name, output, watch, &remote)),
        Cmd::Resume {
            name,
            node,
            set,
            remote,
        } => report((|| {
            let c = remote.client();
            let path = format!("/api/v1/workflows/{}/{name}", remote.namespace);
            let selector = node.map(|n| format!("displayName={n}"));
            if set.is_empty() {
                c.call(
                    "PUT",
                    &format!("{path}/resume"),
                    Some(&serde_json::json!({"nodeFieldSelector": selector})),
                )?;
            } else {
                let outputs: serde_json::Map<String, serde_json::Value> =
                    parse_pairs(&set, "--set")?
                        .into_iter()
                        .map(|(k, v)| (k, serde_json::Value::String(v)))
                        .collect();
                let body = serde_json::json!({"nodeFieldSelector": selector, "outputParameters": serde_json::Value::Object(outputs).to_string()});
                c.call("PUT", &format!("{path}/set"), Some(&body))?;
            }
            println!("workflow {name} resumed");
            Ok(ExitCode::SUCCESS)
        })()),
        Cmd::Stop { name, remote } => report(simple_put(&remote, &name, "stop")),
        Cmd::Suspend { name, remote } => report(simple_put(&remote, &name, "suspend")),
        Cmd::Watch { name, remote } => report(watch_cmd(&name, &remote)),
        Cmd::Logs {
            name,
            node,
            follow,
            remote,
        } => report((|| {
            let mut query = Vec::new();
            if let Some(n) = node {
                query.push(format!("podName={n}"));
            }
            if follow {
                query.push("logOptions.follow=true".to_string());
            }
            let mut path = format!("/api/v1/workflows/{}/{name}/log", remote.namespace);
            if !query.is_empty() {
                path.push('?');
                path.push_str(&query.join("&"));
            }
            let mut out = std::io::stdout().lock();
            for line in remote.client().stream_lines(&path)? {
                let line = line.context("reading the log stream")?;
                let v: serde_json::Value =
                    serde_json::from_str(&line).context("reading the log stream")?;
                writeln!(
                    out,
                    "{}: {}",
                    v["result"]["podName"].as_str().unwrap_or(""),
                    v["result"]["content"].as_str().unwrap_or("")
                )?;
                out.flush()?;
            }
            Ok(ExitCode::SUCCESS)
        })()),
        Cmd::Cron { cmd, remote } => report(cron_cmd(cmd, &remote)),
        Cmd::Retry {
            name,
            restart_successful,
            node_field_selector,
            parameters,
            remote,
        } => report((|| {
            let body = serde_json::json!({
                "restartSuccessful": restart_successful,
                "nodeFieldSelector": node_field_selector.map(|s| format!("name={s}")),
                "parameters": parameters,
            });
            remote.client().call(
                "PUT",
                &format!("/api/v1/workflows/{}/{name}/retry", remote.namespace),
                Some(&body),
            )?;
            println!("workflow {name}: retrying");
            Ok(ExitCode::SUCCESS)
        })()),
        Cmd::Resubmit { name, remote } => report((|| {
            let v = remote.client().call(
                "PUT",
                &format!("/api/v1/workflows/{}/{name}/resubmit", remote.namespace),
                Some(&serde_json::json!({})),
            )?;
            println!("{}", v["metadata"]["name"].as_str().unwrap_or(""));
            Ok(ExitCode::SUCCESS)
        })()),
        Cmd::Terminate { name, remote } => report(simple_put(&remote, &name, "terminate")),
        Cmd::Delete { name, remote } => report((|| {
            remote.client().call(
                "DELETE",
                &format!("/api/v1/workflows/{}/{name}", remote.namespace),
                None,
            )?;
            println!("workflow {name} deleted");
            Ok(ExitCode::SUCCESS)
        })()),
        Cmd::Template { cmd, remote } => report(template_cmd(cmd, &remote)),
        Cmd::Audit { cmd, db } => report(block_on(audit(cmd, db))),
        Cmd::Bench {
            workload: BenchCmd::Engine { shape, tasks },
        } => report(bench::engine(shape, tasks).map(|()| ExitCode::SUCCESS)),
        Cmd::Bench {
            workload:
                BenchCmd::Submit {
                    workflows,
                    concurrency,
                    db,
                },
        } => report(block_on(async move {
            let store = open_store(&db).await?;
            let config = server::ControllerConfig {
                runs_dir: std::env::temp_dir().join("riposte-bench-submit"),
                images: ImageTable::new(host_python(), BTreeMap::new()),
                argosay_binary: std::env::current_exe()?,
                isolation: Isolation::None("benchmark".into()),
                holder: format!("bench-{}", generate_suffix()),
                lease_ttl_ms: 600_000,
                cluster: None,
            };
            bench::submit(store, config, workflows, concurrency)
                .await
                .map(|()| ExitCode::SUCCESS)
        })),
        Cmd::Bench {
            workload: BenchCmd::Api { db },
        } => report(block_on(async move {
            let store = open_store(&db).await?;
            let config = server::ControllerConfig {
                runs_dir: std::env::temp_dir().join("riposte-bench-api"),
                images: ImageTable::new(host_python(), BTreeMap::new()),
                argosay_binary: std::env::current_exe()?,
                isolation: Isolation::None("benchmark".into()),
                holder: "bench".into(),
                lease_ttl_ms: 15_000,
                cluster: None,
            };
            bench::api(store, config).await.map(|()| ExitCode::SUCCESS)
        })),
        Cmd::Bench {
            workload: BenchCmd::Store { shape, tasks, db },
        } => report(block_on(async move {
            let store = open_store(&db).await?;
            bench::store(shape, tasks, store)
                .await
                .map(|_| ExitCode::SUCCESS)
        })),
        Cmd::Bench {
            workload:
                BenchCmd::Host {
                    processes,
                    threads,
                    no_isolation,
                },
        } => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: starting the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            report(rt.block_on(async {
                let run_dir = riposte_home().join("bench").join(generate_suffix());
                let exec = host_executor(run_dir.clone(), BTreeMap::new(), no_isolation, false)?;
                bench::host(processes, threads, exec, run_dir)
                    .await
                    .map(|()| ExitCode::SUCCESS)
            }))
        }
        Cmd::Run(a) => {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: starting the async runtime: {e}");
                    return ExitCode::from(1);
                }
            };
            report(rt.block_on(run(a)))
        }
    }
}

/// An error the user caused: exit 2 instead of 1.
#[derive(Debug)]
pub(crate) struct InvalidInput(pub(crate) String);

impl std::fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

fn report(r: Result<ExitCode>) -> ExitCode {
    match r {
        Ok(c) => c,
        // `riposte audit list | head`: the reader went away; that is not an error.
        Err(e)
            if e.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<InvalidInput>().is_some() {
                ExitCode::from(EXIT_INVALID)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn lint(a: LintArgs) -> Result<ExitCode> {
    let (loaded, mut diags, n_files) = files::load_all(&a.paths)?;
    files::lint_with_templates(&loaded, &a.templates, &mut diags)?;
    diags.sort_by(|x, y| (&x.file, x.position).cmp(&(&y.file, y.position)));
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let warnings = diags.len() - errors;
    let mut out = std::io::stdout().lock();
    for d in &diags {
        if a.quiet && d.severity == Severity::Warning {
            continue;
        }
        writeln!(out, "{d}")?;
    }
    out.flush()?;
    eprintln!(
        "{n_files} file(s), {} resource(s): {errors} error(s), {warnings} warning(s)",
        loaded.len()
    );
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn generate_suffix() -> String {
    server::ids::name_suffix()
}

fn riposte_home() -> PathBuf {
    if let Some(h) = std::env::var_os("RIPOSTE_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".riposte")
}

fn parse_pairs(items: &[String], what: &str) -> Result<Vec<(String, String)>> {
    items
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => Err(InvalidInput(format!("{what} {p:?} must look like NAME=VALUE")).into()),
        })
        .collect()
}

fn host_python() -> PathBuf {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output();
    match probe {
        Ok(o) if o.status.success() => PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()),
        _ => PathBuf::from("/usr/bin/python3"),
    }
}

fn block_on(f: impl std::future::Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

fn local_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions.
            format!("uid-{}", unsafe { libc::getuid() })
        });
    format!("cli:{user}")
}

async fn open_store(db: &DbArgs) -> Result<store::Store> {
    let url = match db.database_url.as_deref() {
        Some(u) if u != "none" => u.to_string(),
        _ => {
            let home = riposte_home();
            std::fs::create_dir_all(&home)
                .with_context(|| format!("creating {}", home.display()))?;
            format!("sqlite://{}", home.join("riposte.db").display())
        }
    };
    store::Store::open(&url)
        .await
        .with_context(|| format!("opening the database {}", store::redact(&url)))
}

fn watch_cmd(name: &str, remote: &Remote) -> Result<ExitCode> {
    let c = remote.client();
    // Print the current state first, then every change.
    let mut last = String::new();
    let mut show = |w: &serde_json::Value| -> Result<bool> {
        let line = format!(
            "{}  {:<10} {:<7} {}",
            w["metadata"]["name"].as_str().unwrap_or(""),
            w["status"]["phase"].as_str().unwrap_or(""),
            w["status"]["progress"].as_str().unwrap_or(""),
            w["status"]["message"].as_str().unwrap_or("")
        );
        if line != last {
            println!("{line}");
            last = line;
        }
        Ok(matches!(
            w["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed" | "Error")
        ))
    };
    let w = c.call(
        "GET",
        &format!("/api/v1/workflows/{}/{name}", remote.namespace),
        None,
    )?;
    if show(&w)? {
        return Ok(ExitCode::SUCCESS);
    }
    let path = format!(
        "/api/v1/workflow-events/{}?listOptions.fieldSelector=metadata.name={name}",
        remote.namespace
    );
    for line in c.stream_lines(&path)? {
        let v: serde_json::Value =
            serde_json::from_str(&line?).context("reading the event stream")?;
        if show(&v["result"]["object"])? {
            break;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn cron_cmd(cmd: CronCmd, remote: &Remote) -> Result<ExitCode> {
    let c = remote.client();
    let base = format!("/api/v1/cron-workflows/{}", remote.namespace);
    match cmd {
        CronCmd::Create { file } => client::create_from_file(
            &c,
            &file,
            "CronWorkflow",
            "cronWorkflow",
            &base,
            &remote.namespace,
        )?,
        CronCmd::List => {
            let v = c.call("GET", &base, None)?;
            println!(
                "{:<32} {:<24} {:<10} LAST RUN",
                "NAME", "SCHEDULE", "SUSPENDED"
            );
            for cw in v["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<32} {:<24} {:<10} {}",
                    cw["metadata"]["name"].as_str().unwrap_or(""),
                    cw["spec"]["schedule"].as_str().unwrap_or(""),
                    cw["spec"]["suspend"].as_bool().unwrap_or(false),
                    cw["status"]["lastScheduledTime"].as_str().unwrap_or("-")
                );
            }
        }
        CronCmd::Get { name } => print!(
            "{}",
            yaml_out::to_yaml(&c.call("GET", &format!("{base}/{name}"), None)?)
        ),
        CronCmd::Delete { name } => {
            c.call("DELETE", &format!("{base}/{name}"), None)?;
            println!("deleted {name}");
        }
        CronCmd::Suspend { name } => {
            c.call(
                "PUT",
                &format!("{base}/{name}/suspend"),
                Some(&serde_json::json!({})),
            )?;
            println!("suspended {name}");
        }
        CronCmd::Resume { name } => {
            c.call(
                "PUT",
                &format!("{base}/{name}/resume"),
                Some(&serde_json::json!({})),
            )?;
            println!("resumed {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn simple_put(remote: &Remote, name: &str, action: &str) -> Result<ExitCode> {
    remote.client().call(
        "PUT",
        &format!("/api/v1/workflows/{}/{name}/{action}", remote.namespace),
        None,
    )?;
    println!("workflow {name}: {action} requested");
    Ok(ExitCode::SUCCESS)
}

fn submit_cmd(
    file: Option<PathBuf>,
    from: Option<String>,
    parameters: Vec<String>,
    wait: bool,
    remote: &Remote,
) -> Result<ExitCode> {
    let params = parse_pairs(&parameters, "parameter")?;
    let c = remote.client();
    let wf = match (file, from) {
        (Some(f), None) => client::submit(&c, &f, &remote.namespace, &params)?,
        (None, Some(from)) => client::submit_from(&c, &from, &remote.namespace, &params)?,
        _ => bail!(InvalidInput(
            "give either a FILE or --from workflowtemplate/NAME".into()
        )),
    };
    let name = wf["metadata"]["name"].as_str().unwrap_or("").to_string();
    println!("{name}");
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    let w = wait_until_finished(&c, &remote.namespace, &name)?;
    client::print_workflow(&w)?;
    Ok(if w["status"]["phase"] == "Succeeded" {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn wait_until_finished(
    c: &client::Client,
    namespace: &str,
    name: &str,
) -> Result<serde_json::Value> {
    loop {
        let w = c.call(
            "GET",
            &format!("/api/v1/workflows/{namespace}/{name}"),
            None,
        )?;
        if matches!(
            w["status"]["phase"].as_str(),
            Some("Succeeded" | "Failed" | "Error")
        ) {
            return Ok(w);
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

fn get_cmd(
    name: &str,
    output: Option<OutputFormat>,
    watch: bool,
    remote: &Remote,
) -> Result<ExitCode> {
    let c = remote.client();
    let w = if watch && output.is_none() {
        // The live node tree: redrawn on a terminal as the workflow changes.
        let tty = std::io::stdout().is_terminal();
        let path = format!("/api/v1/workflows/{}/{name}", remote.namespace);
        let mut last = serde_json::Value::Null;
        loop {
            let w = c.call("GET", &path, None)?;
            if w["status"] != last["status"] {
                if tty {
                    print!("\x1b[H\x1b[2J");
                }
                client::print_workflow(&w)?;
                if !tty {
                    println!();
                }
            }
            if matches!(
                w["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed" | "Error")
            ) {
                return Ok(ExitCode::SUCCESS);
            }
            last = w;
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    } else if watch {
        wait_until_finished(&c, &remote.namespace, name)?
    } else {
        c.call(
            "GET",
            &format!("/api/v1/workflows/{}/{name}", remote.namespace),
            None,
        )?
    };
    match output {
        Some(OutputFormat::Json) => println!("{}", serde_json::to_string_pretty(&w)?),
        Some(OutputFormat::Yaml) => print!("{}", yaml_out::to_yaml(&w)),
        None => client::print_workflow(&w)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn template_cmd(cmd: TemplateCmd, remote: &Remote) -> Result<ExitCode> {
    let c = remote.client();
    let base = format!("/api/v1/workflow-templates/{}", remote.namespace);
    match cmd {
        TemplateCmd::Create { file } => client::create_from_file(
            &c,
            &file,
            "WorkflowTemplate",
            "template",
            &base,
            &remote.namespace,
        )?,
        TemplateCmd::List => {
            let v = c.call("GET", &base, None)?;
            for t in v["items"].as_array().into_iter().flatten() {
                println!("{}", t["metadata"]["name"].as_str().unwrap_or(""));
            }
        }
        TemplateCmd::Get { name } => print!(
            "{}",
            yaml_out::to_yaml(&c.call("GET", &format!("{base}/{name}"), None)?)
        ),
        TemplateCmd::Delete { name } => {
            c.call("DELETE", &format!("{base}/{name}"), None)?;
            println!("deleted {name}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn new_token(name: &str, roles: &[String]) -> Result<ExitCode> {
    let mut entries = Vec::new();
    for (ns, role) in parse_pairs(roles, "--role")? {
        if !matches!(role.as_str(), "viewer" | "submitter" | "approver" | "admin") {
            bail!(InvalidInput(format!(
                "role {role:?} is not viewer, submitter, approver or admin"
            )));
        }
        entries.push(format!("{ns:?}: {role}"));
    }
    let token: String = server::ids::random_bytes::<32>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("# token for {name} (give it to the client; it is not stored anywhere):");
    println!("# {token}");
    println!("  - name: {name}");
    println!("    tokenSha256: {}", server::auth::sha256_hex(&token));
    println!("    roles: {{{}}}", entries.join(", "));
    Ok(ExitCode::SUCCESS)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "riposte".into())
}

struct ServeArgs {
    listen: String,
    no_isolation: bool,
    auth_file: Option<PathBuf>,
    lease_seconds: f64,
    log_format: String,
    kube: KubeArgs,
    callback_url: Option<String>,
    callback_secret_file: Option<PathBuf>,
    db: DbArgs,
}

/// Logs through `tracing`: `RUST_LOG` picks what (default `default_filter`), `format` how.
fn init_tracing(format: &str, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second initialisation (tests calling in twice) keeps the first.
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// The callback token key: from the file, or 32 random bytes for this process.
fn callback_secret(file: Option<&Path>) -> Result<Vec<u8>> {
    match file {
        Some(p) => {
            let key = std::fs::read(p)
                .with_context(|| format!("reading the callback secret {}", p.display()))?;
            if key.len() < 16 {
                bail!(InvalidInput(format!(
                    "{}: the callback secret has {} bytes; use at least 16 (e.g. `head -c 32 /dev/urandom > FILE`)",
                    p.display(),
                    key.len()
                )));
            }
            Ok(key)
        }
        None => {
            let mut key = vec![0u8; 32];
            std::io::Read::read_exact(
                &mut std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?,
                &mut key,
            )
            .context("reading /dev/urandom")?;
            Ok(key)
        }
    }
}

async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let ServeArgs {
        listen,
        no_isolation,
        auth_file,
        lease_seconds,
        log_format,
        kube,
        callback_url,
        callback_secret_file,
        db,
    } = args;
    init_tracing(&log_format, "info");
    if !(lease_seconds.is_finite() && (0.1..=86_400.0).contains(&lease_seconds)) {
        bail!(InvalidInput(format!(
            "--lease-seconds {lease_seconds} must be between 0.1 and 86400"
        )));
    }
    server::metrics::install().map_err(|e| anyhow::anyhow!("installing metrics: {e}"))?;
    let cluster = if kube.check()? {
        let secret = callback_secret(callback_secret_file.as_deref())?;
        let c = kube.connect(callback_url.clone(), secret).await?;
        eprintln!(
            "steps run as Kubernetes Jobs ({})",
            match &callback_url {
                Some(u) => format!("wrappers report to {u}"),
                None =>
                    "results from pod termination messages; set --callback-url for faster reports"
                        .into(),
            }
        );
        Some(c)
    } else {
        None
    };
    let addr: std::net::SocketAddr = listen.parse().map_err(|e| {
        InvalidInput(format!(
            "--listen {listen:?} is not an address like 127.0.0.1:2746: {e}"
        ))
    })?;
    let auth = match &auth_file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading auth file {}", p.display()))?;
            Some(
                server::auth::Auth::parse(&text)
                    .map_err(|e| InvalidInput(format!("{}: {e}", p.display())))?,
            )
        }
        None => None,
    };
    if auth.is_none() && !addr.ip().is_loopback() {
        bail!(InvalidInput(format!(
            "refusing to listen on {addr}: authentication is not configured (--auth-file), so the server only listens on loopback addresses (use --listen 127.0.0.1:{})",
            addr.port()
        )));
    }
    let store = open_store(&db).await?;
    let isolation = if no_isolation {
        Isolation::None("disabled with --no-isolation".into())
    } else {
        Sandbox::probe()
    };
    if let Isolation::None(why) = &isolation
        && cluster.is_none()
    {
        tracing::warn!("steps run without a private root: {why}");
    }
    let executor_kind = if cluster.is_some() {
        "kubernetes"
    } else {
        "host"
    };
    let controller = server::Controller::new(
        store.clone(),
        server::ControllerConfig {
            runs_dir: riposte_home().join("server").join("runs"),
            images: ImageTable::new(host_python(), BTreeMap::new()),
            argosay_binary: std::env::current_exe()
                .context("finding the riposte binary for the argosay shim")?,
            isolation,
            holder: format!(
                "{}-{}-{}",
                hostname(),
                std::process::id(),
                generate_suffix()
            ),
            lease_ttl_ms: (lease_seconds * 1000.0) as i64,
            cluster,
        },
    );
    let recovered = controller
        .recover()
        .await
        .context("recovering unfinished workflows")?;
    tokio::spawn(controller.clone().lease_loop());
    tokio::spawn(controller.clone().listen_loop());
    tokio::spawn(controller.clone().cron_loop());
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let auth_mode = if auth.is_some() {
        "bearer tokens"
    } else {
        "none (loopback only)"
    };
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or(listen);
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        database = store.backend(),
        executor = executor_kind,
        listen = %local,
        auth = auth_mode,
        recovered,
        "riposte server started"
    );
    // Humans starting it by hand look for this line (tests too).
    eprintln!(
        "riposte server listening on http://{local} ({} database; {recovered} unfinished workflow(s) recovered; auth: {auth_mode})",
        store.backend()
    );
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut serving = tokio::spawn(server::serve(
        listener,
        controller.clone(),
        auth,
        async move {
            let _ = stop_rx.await;
        },
    ));
    tokio::select! {
        ended = &mut serving => {
            ended.context("the API task")?.context("serving the API")?;
        }
        _ = shutdown_signal() => {}
    }
    let _ = stop_tx.send(());
    // Steps (processes, Jobs) keep running; whoever claims the leases next re-attaches.
    let released = controller
        .shutdown()
        .await
        .context("releasing leases at shutdown")?;
    // Requests in flight finish; long streams (watch, logs --follow) are cut after a grace.
    if tokio::time::timeout(std::time::Duration::from_secs(3), &mut serving)
        .await
        .is_err()
    {
        serving.abort();
    }
    tracing::info!(
        released_leases = released,
        "riposte server stopped; its workflows are free for other replicas"
    );
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// How long `riposte run`'s lease lasts without renewal (renewed every third of it).
const RUN_LEASE_MS: i64 = 15_000;

/// Keeps `riposte run`'s lease on its workflow while the process lives.
async fn renew_run_lease(store: store::Store, uid: String, holder: String) {
    loop {
        tokio::time::sleep(std::time::Duration::from_millis((RUN_LEASE_MS / 3) as u64)).await;
        match store
            .renew_lease(&uid, &holder, run::now_ms() + RUN_LEASE_MS)
            .await
        {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => eprintln!("warning: renewing the workflow's lease: {e}"),
        }
    }
}

/// SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = async {
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down: no new requests, releasing leases");
}

async fn replay(name: String, namespace: String, db: DbArgs) -> Result<ExitCode> {
    let store = open_store(&db).await?;
    let record = store.get_workflow(&namespace, &name).await?;
    let def = &record.definition;
    let resource: spec::WorkflowResource =
        serde_json::from_value(def["resource"].clone()).context("stored resource")?;
    let library: spec::Library =
        serde_json::from_value(def["library"].clone()).context("stored library")?;
    let identity: WorkflowIdentity =
        serde_json::from_value(def["identity"].clone()).context("stored identity")?;
    let params: Vec<(String, String)> =
        serde_json::from_value(def["parameters"].clone()).context("stored parameters")?;
    let mut wf =
        Workflow::new(resource, library, identity, &params).context("re-creating the workflow")?;
    let history = store.history(&record.uid).await?;
    let mut n_inputs = 0;
    for (i, batch) in history.iter().enumerate() {
        let inputs: Vec<engine::Input> =
            serde_json::from_value(batch.clone()).with_context(|| format!("history batch {i}"))?;
        n_inputs += inputs.len();
        wf.step(&inputs)
            .with_context(|| format!("replaying batch {i}"))?;
    }
    let stored: std::collections::BTreeMap<String, serde_json::Value> = store
        .nodes(&record.uid)
        .await?
        .into_iter()
        .map(|n| (n.id, n.status))
        .collect();
    let ids: Vec<String> = wf.nodes().iter().map(|n| n.id.clone()).collect();
    let replayed: std::collections::BTreeMap<String, serde_json::Value> =
        wf.nodes_json(&ids).into_iter().collect();
    let mut diffs = Vec::new();
    for id in stored
        .keys()
        .chain(replayed.keys())
        .collect::<std::collections::BTreeSet<_>>()
    {
        match (stored.get(id), replayed.get(id)) {
            (Some(a), Some(b)) if a == b => {}
            (Some(_), Some(_)) => {
                diffs.push(format!("node {id}: stored and replayed status differ"))
            }
            (Some(_), None) => diffs.push(format!("node {id}: stored but not produced by replay")),
            (None, Some(_)) => diffs.push(format!("node {id}: produced by replay but not stored")),
            (None, None) => {}
        }
    }
    if wf.phase().as_str() != record.phase {
        diffs.push(format!(
            "workflow phase: stored {}, replayed {}",
            record.phase,
            wf.phase().as_str()
        ));
    }
    println!(
        "{namespace}/{name}: replayed {n_inputs} inputs in {} batches into {} nodes ({})",
        history.len(),
        replayed.len(),
        wf.phase().as_str()
    );
    if diffs.is_empty() {
        println!("replay matches the stored state");
        return Ok(ExitCode::SUCCESS);
    }
    for d in &diffs {
        println!("MISMATCH {d}");
    }
    Ok(ExitCode::from(1))
}

async fn audit(cmd: AuditCmd, db: DbArgs) -> Result<ExitCode> {
    let store = open_store(&db).await?;
    match cmd {
        AuditCmd::Verify => {
            let (n, problems) = store.audit_verify().await?;
            if problems.is_empty() {
                println!("audit chain intact: {n} entries verified");
                return Ok(ExitCode::SUCCESS);
            }
            for p in &problems {
                println!("TAMPERED {p}");
            }
            println!("{} problem(s) in {n} entries", problems.len());
            Ok(ExitCode::from(1))
        }
        AuditCmd::List {
            workflow,
            namespace,
            actor,
            since,
            until,
            limit,
            json,
        } => {
            let time = |s: &Option<String>, what: &str| -> Result<Option<i64>> {
                match s {
                    None => Ok(None),
                    Some(t) => expr::time::parse_rfc3339(t)
                        .map(|secs| Some(secs * 1000))
                        .ok_or_else(|| {
                            InvalidInput(format!(
                                "--{what} {t:?} is not an RFC 3339 time like 2026-11-28T14:00:00Z"
                            ))
                            .into()
                        }),
                }
            };
            let filter = store::AuditFilter {
                object: workflow.map(|w| format!("workflows/{namespace}/{w}")),
                actor,
                since: time(&since, "since")?,
                until: time(&until, "until")?,
                limit,
            };
            let mut out = std::io::stdout().lock();
            for r in store.audit_list(&filter).await? {
                if json {
                    let line = serde_json::json!({
                        "seq": r.seq, "at": expr::time::rfc3339(r.entry.at), "actor": r.entry.actor,
                        "action": r.entry.action, "object": r.entry.object, "source": r.entry.source,
                        "details": r.entry.details, "hash": r.hash,
                    });
                    writeln!(out, "{line}")?;
                } else {
                    writeln!(
                        out,
                        "{:>6}  {}  {:<18} {:<16} {}  {}",
                        r.seq,
                        expr::time::rfc3339(r.entry.at),
                        r.entry.actor,
                        r.entry.action,
                        r.entry.object,
                        r.entry.details
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn host_executor(
    run_dir: PathBuf,
    image_map: BTreeMap<String, String>,
    no_isolation: bool,
    keep: bool,
) -> Result<HostExecutor> {
    let isolation = if no_isolation {
        Isolation::None("disabled with --no-isolation".into())
    } else {
        Sandbox::probe()
    };
    if let Isolation::None(why) = &isolation {
        eprintln!("note: steps run without a private root: {why}");
    }
    let exe = std::env::current_exe().context("finding the riposte binary for the argosay shim")?;
    Ok(HostExecutor::new(HostConfig {
        run_dir,
        images: ImageTable::new(host_python(), image_map),
        argosay_binary: exe,
        isolation,
        keep_node_dirs: keep,
        // `riposte run` drives its workflow to the end itself; nothing re-attaches.
        detach: false,
    }))
}

/// `riposte run --executor kubernetes --dry-run`: the Jobs of the steps the engine starts
/// first. Steps that are not pods (suspend, http, resource) are listed on stderr.
fn print_first_jobs(
    mut workflow: Workflow,
    id: &WorkflowIdentity,
    a: &RunArgs,
) -> Result<ExitCode> {
    let now = run::now_ms();
    let commands = workflow
        .step(&[engine::Input::Start { now }])
        .map_err(|e| InvalidInput(e.to_string()))?;
    let opts = executor::job::JobOptions {
        riposte_image: a.kube.riposte_image.clone(),
        ttl_seconds_after_finished: a.kube.job_ttl_seconds,
        namespace: a.kube.job_namespace.clone(),
        workflow_uid: id.uid.clone(),
        now_ms: now,
        callback_url: None,
    };
    let mut jobs = Vec::new();
    for c in commands {
        let engine::Command::Execute(node) = c else {
            continue;
        };
        match executor::job::job_manifest(&node, &opts) {
            Ok(job) => jobs.push(job),
            Err(executor::job::JobError::NotAPod { .. }) => {
                eprintln!("{}: not a pod (runs in the controller)", node.node_name)
            }
            Err(e) => bail!(InvalidInput(e.to_string())),
        }
    }
    if jobs.is_empty() {
        eprintln!("no step starts as a Job");
    }
    match a.output {
        Some(OutputFormat::Json) => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"apiVersion": "v1", "kind": "List", "items": jobs})
            )?
        ),
        _ => {
            for job in &jobs {
                print!("---\n{}", yaml_out::to_yaml(job));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(a: RunArgs) -> Result<ExitCode> {
    let on_kubernetes = a.kube.check()?;
    if a.dry_run && !on_kubernetes {
        bail!(InvalidInput(
            "--dry-run shows Kubernetes Jobs; use it with --executor kubernetes".into()
        ));
    }
    let params = parse_pairs(&a.parameters, "parameter")?;
    let image_map: BTreeMap<String, String> =
        parse_pairs(&a.images, "--image")?.into_iter().collect();
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let file_name = a.file.display().to_string();
    let (loaded, mut diags) = spec::load(&file_name, &text);
    let library = files::lint_with_templates(&loaded, &a.templates, &mut diags)?;
    let errors: Vec<_> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    if !errors.is_empty() {
        for d in &errors {
            eprintln!("{d}");
        }
        bail!(InvalidInput(format!(
            "{} has {} error(s); fix them or see `riposte lint {}`",
            file_name,
            errors.len(),
            file_name
        )));
    }
    let pick = loaded
        .iter()
        .find(|l| l.kind() == Kind::Workflow)
        .or_else(|| {
            loaded.iter().find(|l| {
                matches!(
                    l.kind(),
                    Kind::WorkflowTemplate | Kind::ClusterWorkflowTemplate
                )
            })
        });
    let Some(pick) = pick else {
        bail!(InvalidInput(format!(
            "{file_name} contains no Workflow or WorkflowTemplate"
        )));
    };
    let Resource::Workflow(_, wf) = &pick.resource else {
        bail!(InvalidInput(format!(
            "{file_name}: CronWorkflows are run by the server"
        )));
    };
    let mut resource = (**wf).clone();
    if resource.metadata.name.is_none() && resource.metadata.generate_name.is_none() {
        resource.metadata.generate_name = Some("workflow-".into());
    }
    // The one submit path, as for the API: build, name, lint, then one transaction.
    let mut req = server::SubmitRequest::new(
        &a.namespace,
        server::Origin::Inline(Box::new(resource)),
        &local_actor(),
        "local",
    );
    req.parameters = params.clone();
    req.entrypoint = a.entrypoint.clone();
    req.details = serde_json::json!({"file": file_name});
    let prepared = server::submit::prepare(
        req,
        library,
        server::ids::new_uid(),
        &generate_suffix(),
        run::now_ms(),
    )
    .map_err(|e| InvalidInput(e.to_string()))?;
    let id = prepared.identity.clone();
    let name = id.name.clone();
    if a.dry_run {
        return print_first_jobs(prepared.workflow, &id, &a);
    }
    let mut lease_holder = None;
    let persist = match a.db.database_url.as_deref() {
        Some("none") => None,
        _ => {
            let store = open_store(&a.db).await?;
            // Held while this process drives the workflow, so a server on the same database
            // does not adopt it; renewed below, released at the end.
            let holder = format!("run:{}:{}", hostname(), std::process::id());
            let outcome = server::submit::record(
                &store,
                &prepared,
                Some((&holder, run::now_ms() + RUN_LEASE_MS)),
            )
            .await
            .map_err(|e| match e {
                server::controller::ControlError::AlreadyExists(m) => {
                    anyhow::Error::new(InvalidInput(format!("{m}; delete it or use generateName")))
                }
                other => anyhow::Error::new(other),
            })?;
            if let server::SubmitOutcome::Existing { name, .. } = outcome {
                eprintln!(
                    "a workflow with this idempotency key exists already: {}/{name}; not running it again",
                    id.namespace
                );
                return Ok(ExitCode::SUCCESS);
            }
            tokio::spawn(renew_run_lease(
                store.clone(),
                id.uid.clone(),
                holder.clone(),
            ));
            lease_holder = Some((store.clone(), holder));
            let object = format!("workflows/{}/{}", id.namespace, id.name);
            Some(server::driver::Persist::new(store, id.uid.clone(), object))
        }
    };
    let workflow = prepared.workflow;

    let run_dir = a
        .run_dir
        .clone()
        .unwrap_or_else(|| riposte_home().join("runs").join(&name));
    let exec = if on_kubernetes {
        // No server to call back: results come from the pods' termination messages.
        let cluster = a.kube.connect(None, Vec::new()).await?;
        StepExecutor::Kubernetes(cluster.executor(&id.uid, Some(run_dir.join("logs"))))
    } else {
        StepExecutor::Host(host_executor(
            run_dir.clone(),
            image_map,
            a.no_isolation,
            a.keep,
        )?)
    };
    let tty = std::io::stderr().is_terminal();
    eprintln!("running {name} (run directory {})", run_dir.display());
    let outcome = run::run_workflow(
        workflow,
        exec,
        run::RunConfig {
            run_dir: run_dir.clone(),
            progress: ui::Progress::new(tty),
            persist,
        },
    )
    .await?;
    if let Some((store, holder)) = lease_holder {
        // Finished (or interrupted): leave the workflow to whoever continues it.
        if let Err(e) = store.release_workflow(&id.uid, &holder).await {
            eprintln!("warning: releasing the workflow's lease: {e}");
        }
        // Staged audit rows into the chain before this process ends (they would otherwise
        // wait, staged and safe, for the next seal).
        if let Err(e) = store.audit_seal().await {
            eprintln!("warning: sealing the audit log: {e}");
        }
    }
    let wf = outcome.workflow;
    let now = run::now_ms();
    let summary = ui::summary(&wf, now);
    match a.output {
        Some(fmt) => {
            eprint!("{summary}");
            let json = wf.to_argo_json();
            let text = match fmt {
                OutputFormat::Json => serde_json::to_string_pretty(&json)? + "\n",
                OutputFormat::Yaml => yaml_out::to_yaml(&json),
            };
            std::io::stdout().lock().write_all(text.as_bytes())?;
        }
        None => {
            if !tty {
                println!();
                for l in ui::tree_lines(&wf, now) {
                    println!("{l}");
                }
            }
            println!();
            print!("{summary}");
            println!("Logs:        {}", run_dir.join("logs").display());
        }
    }
    if outcome.interrupted {
        return Ok(ExitCode::from(130));
    }
    Ok(if wf.phase() == Phase::Succeeded {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
