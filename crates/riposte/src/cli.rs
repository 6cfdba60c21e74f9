//! The command line: every command, its arguments and their `--help` text.

#[allow(unused_imports)]
use crate::*;

/// Exit code for invalid input (bad flags, files that do not lint).
pub(crate) const EXIT_INVALID: u8 = 2;

#[derive(Parser)]
#[command(
    name = "riposte",
    version,
    about = "Automated response for Kubernetes: Argo-compatible workflows, run locally or in a cluster",
    long_about = "Riposte runs Argo Workflows YAML (Workflow, WorkflowTemplate, ClusterWorkflowTemplate) with Argo's semantics, and Argo Events' Sensors and EventSources that start them.\n\nExamples:\n  riposte demo\n  riposte run workflows/examples/hello-world.yaml\n  riposte run workflows/examples/fan-out-fan-in.yaml -o json\n  riposte run workflows/examples/triage-shell-in-container.yaml -p pod=web-1\n  riposte lint workflows/\n  riposte sensor test workflows/examples/falco-shell-sensor.yaml --event tests/fixtures/falco-terminal-shell.json"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Cmd,
}

#[derive(Subcommand)]
pub(crate) enum Cmd {
    /// Show a whole response on this machine: a Falco alert in, an isolated pod out.
    ///
    /// No cluster, broker or service is needed. The demo starts a fake Kubernetes API holding
    /// a small application (Deployment payments-api in namespace prod-payments), a `riposte
    /// server` on SQLite in a temporary directory with the shipped library and playbooks, and
    /// a local stand-in for the kubelet and for Slack. It then posts the shipped Falco
    /// "Terminal shell in container" alert as falcosidekick does and shows the event, the
    /// sensor's decision, each step, the approval, the pod's labels and NetworkPolicy, the
    /// audit trail and the time from the alert to the NetworkPolicy. Exit code 0 when the pod
    /// ended isolated. Ctrl-C stops everything it started.
    ///
    /// Examples:
    ///   riposte demo
    ///   riposte demo --interactive --keep    # decide the approval yourself, then explore
    #[command(verbatim_doc_comment)]
    Demo {
        /// Leave the approval to you (CLI, console or signed link) instead of deciding it as
        /// the demo's responder.
        #[arg(long)]
        interactive: bool,
        /// Keep the server and the fake cluster running after the response and print the
        /// console's URL, until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
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
    Server(ServeArgs),
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
    /// Argo Events Sensors: `sensor test SENSOR.yaml --event EVENT.json` (offline) shows what
    /// the sensor would decide for an event and why; `apply FILE`, `list`, `get NAME`,
    /// `delete NAME` manage the sensors a server has armed.
    Sensor {
        #[command(subcommand)]
        cmd: SensorCmd,
        #[command(flatten)]
        remote: Remote,
    },
    /// Argo Events EventSources on the server (webhook, calendar, resource, nats, mqtt, amqp,
    /// redis, redisStream, file): `apply FILE`, `list`, `get NAME`, `delete NAME`.
    #[command(name = "eventsource", alias = "event-source")]
    EventSource {
        #[command(subcommand)]
        cmd: ObjectCmd,
        #[command(flatten)]
        remote: Remote,
    },
    /// Stored events: `list`, `get SEQ` (the envelope and every sensor's decision: which
    /// dependencies matched and why, what fired, which workflows it created), `redeliver SEQ`.
    Event {
        #[command(subcommand)]
        cmd: EventCmd,
        #[command(flatten)]
        remote: Remote,
    },
    /// The response library built into this binary: ClusterWorkflowTemplates, one response
    /// action each (pod-isolate, pod-terminate, workload-sandbox, serviceaccount-rotate, ...),
    /// and playbooks (Sensors + WorkflowTemplates wiring alerts to them).
    ///
    /// Examples:
    ///   riposte library list
    ///   riposte library install                       # the actions (cluster-wide)
    ///   riposte library install --playbooks -n prod   # and the playbooks, in namespace prod
    ///   riposte library export ./riposte-library      # as files, for a GitOps repository
    #[command(verbatim_doc_comment)]
    Library {
        #[command(subcommand)]
        cmd: LibraryCmd,
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
    /// Save a pod's manifest, its owners' manifests and its containers' logs (current and
    /// previous) into a Secret of a forensic namespace, each with its SHA-256, before the pod
    /// is isolated or deleted; prints the report as JSON. What the `pod-evidence` action runs.
    ///
    /// Example: riposte evidence -n payments --pod api-7c9d4-k2x9q --to-namespace forensics
    Evidence(crate::evidence::EvidenceArgs),
    /// Capture a pod's network traffic with tcpdump in an ephemeral debug container (the
    /// pod's own network namespace) and save the pcap, with its SHA-256, into a Secret of a
    /// forensic namespace. What the `pod-capture` action runs.
    ///
    /// Example: riposte capture -n payments --pod api-7c9d4-k2x9q --seconds 60 --filter "port 443"
    Capture(crate::evidence::CaptureArgs),
    /// Checkpoint a running container through the kubelet's checkpoint API (the
    /// ContainerCheckpoint feature; CRI-O or containerd 2 with CRIU): the archive is written
    /// on the node and the container keeps running. What the `pod-checkpoint` action runs.
    ///
    /// Example: riposte checkpoint -n payments --pod api-7c9d4-k2x9q --container api
    Checkpoint(crate::evidence::CheckpointArgs),
    /// Run a command or a script in a pod's container (pods/exec, as `kubectl exec`: Falco
    /// Talon's exec and script) and print its exit code, stdout and stderr as JSON; a
    /// non-zero exit fails unless --allow-failure. What the `pod-command` action runs.
    ///
    /// Examples:
    ///   riposte pod-command -n payments --pod api-7c9d4-k2x9q -- ps aux
    ///   riposte pod-command -n payments --pod api-7c9d4-k2x9q --script 'ls -la /tmp; netstat -tnp'
    #[command(verbatim_doc_comment)]
    PodCommand(crate::evidence::PodCommandArgs),
    /// Cordon a node and evict its pods through the Eviction API (PodDisruptionBudgets are
    /// respected: refused evictions are retried until --timeout); DaemonSet and static pods
    /// stay. Prints the report as JSON. What the `node-drain` action runs.
    ///
    /// Example: riposte drain worker-2 --grace-period 30 --timeout 600
    Drain(crate::evidence::DrainArgs),
    /// Send one message to Slack, Microsoft Teams, Mattermost or a JSON webhook (the URL from
    /// RIPOSTE_NOTIFY_URL, i.e. from a Secret); what the library's `notify` action runs.
    ///
    /// Example:
    ///   RIPOSTE_NOTIFY_URL=https://hooks.slack.com/services/… riposte notify --kind slack \
    ///     --title "Pod payments/api isolated" --field rule="Terminal shell in container"
    Notify(crate::notify::NotifyArgs),
    /// A response as a Git change (GitOps mode; what the `gitops-change` action runs):
    /// `propose` commits the manifests to a branch and pushes it, `wait` waits until a person
    /// merges it into the target branch or rejects it (deletes the branch), `verify` waits
    /// until the cluster carries what was merged.
    ///
    /// Example:
    ///   riposte gitops propose --repo https://git.acme.io/ops.git --branch riposte/iso-web \
    ///     --dir clusters/prod/responses --manifests "$(cat policy.yaml)" --title "Isolate web"
    Gitops {
        #[command(subcommand)]
        cmd: crate::gitops::GitopsCmd,
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
pub(crate) struct Remote {
    /// The server's address.
    #[arg(
        long,
        env = "RIPOSTE_SERVER",
        default_value = "http://127.0.0.1:2746",
        global = true
    )]
    pub(crate) server: String,
    /// Bearer token (when the server has --auth-file).
    #[arg(long, env = "RIPOSTE_TOKEN", hide_env_values = true, global = true)]
    pub(crate) token: Option<String>,
    #[arg(short = 'n', long, default_value = "default", global = true)]
    pub(crate) namespace: String,
}

impl Remote {
    pub(crate) fn client(&self) -> client::Client {
        client::Client::new(&self.server, self.token.clone())
    }
}

#[derive(Subcommand)]
pub(crate) enum CronCmd {
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
pub(crate) enum LibraryCmd {
    /// Each shipped object: kind, name and what it does (no server needed).
    List,
    /// Create or update the library on the server (`RIPOSTE_SERVER`): every action as a
    /// ClusterWorkflowTemplate and, with --playbooks, the playbooks in --namespace.
    Install {
        /// Also the playbooks' Sensors, EventSources and WorkflowTemplates.
        #[arg(long)]
        playbooks: bool,
    },
    /// Write the shipped files under DIR (library/, playbooks/), e.g. into a Git checkout.
    Export { dir: PathBuf },
}

/// `riposte server`'s settings.
#[derive(clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:2746")]
    pub(crate) listen: String,
    /// Run steps without a private root.
    #[arg(long)]
    pub(crate) no_isolation: bool,
    /// Identities and roles for bearer-token authentication (see `riposte auth new-token`).
    /// Without it the server listens on loopback addresses only.
    #[arg(long, env = "RIPOSTE_AUTH_FILE", value_name = "FILE")]
    pub(crate) auth_file: Option<PathBuf>,
    /// Lease length: when a replica dies, another takes its workflows over after this.
    #[arg(
        long,
        env = "RIPOSTE_LEASE_SECONDS",
        default_value_t = 15.0,
        value_name = "SECONDS"
    )]
    pub(crate) lease_seconds: f64,
    /// Log lines as `text` (for people) or `json` (one object per line, for collectors).
    /// Which lines: `RUST_LOG` (default `info`), e.g. `RUST_LOG=riposte_server=debug`.
    #[arg(long, env = "RIPOSTE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub(crate) log_format: String,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
    /// Kubernetes: this server's URL as step pods reach it (e.g.
    /// http://riposte.riposte.svc:2746). Step wrappers then report results there at once;
    /// without it the executor reads each pod's termination message when its Job ends.
    #[arg(long, env = "RIPOSTE_CALLBACK_BASE_URL", value_name = "URL")]
    pub(crate) callback_url: Option<String>,
    /// File holding the installation's secret key: per-node callback tokens (Kubernetes)
    /// and approval links are derived from it. Give every replica the same key; without it
    /// each process picks a random one (links then work only on the replica that made them).
    #[arg(long, env = "RIPOSTE_CALLBACK_SECRET_FILE", value_name = "FILE")]
    pub(crate) callback_secret_file: Option<PathBuf>,
    /// This server's URL as people reach it (https://riposte.example.com). Turns on signed
    /// approval links: notifications carry them, and a person decides a suspended step by
    /// opening one and confirming, without a token (POST /api/v1/workflows/NS/NAME/approval-links).
    #[arg(long, env = "RIPOSTE_EXTERNAL_URL", value_name = "URL")]
    pub(crate) external_url: Option<String>,
    /// The event bus between stored events and sensors: `memory` (one process) or a NATS
    /// JetStream URL (nats://HOST:4222) so that replicas share the sensors' work.
    #[arg(
        long,
        env = "RIPOSTE_BUS",
        default_value = "memory",
        value_name = "memory|nats://…"
    )]
    pub(crate) bus: String,
    /// Sensors, EventSources and WorkflowEventBindings to apply at start (every .yaml/.yml/.json
    /// file in DIR): a GitOps checkout as the source of truth. Applied like `apply`, audited.
    #[arg(long, env = "RIPOSTE_CONFIG_DIR", value_name = "DIR")]
    pub(crate) config_dir: Option<PathBuf>,
    /// Where secrets that event sources and triggers reference (`{name, key}`) are read:
    /// DIR/NAME/KEY, the layout of a mounted Kubernetes Secret.
    #[arg(
        long,
        env = "RIPOSTE_SECRETS_DIR",
        default_value = "/var/run/riposte/secrets",
        value_name = "DIR"
    )]
    pub(crate) secrets_dir: PathBuf,
    /// How long processed events are kept (e.g. 7d, 12h).
    #[arg(
        long,
        env = "RIPOSTE_EVENT_RETENTION",
        default_value = "7d",
        value_name = "DURATION"
    )]
    pub(crate) event_retention: String,
    #[command(flatten)]
    pub(crate) db: DbArgs,
}

/// Managing stored objects of one kind.
#[derive(Subcommand)]
pub(crate) enum ObjectCmd {
    /// Create the objects in FILE, or replace them when they exist (like `kubectl apply`).
    Apply { file: PathBuf },
    /// The objects' names.
    List,
    /// Print one object as YAML.
    Get { name: String },
    /// Delete an object.
    Delete { name: String },
}

#[derive(Subcommand)]
pub(crate) enum EventCmd {
    /// Stored events, newest first: number, time, source, type, subject, processed.
    List {
        /// Only events from this EventSource.
        #[arg(long)]
        event_source: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Every namespace (default: --namespace's).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// One event: its envelope and, for each sensor, which dependencies matched and why,
    /// which triggers fired and what they created.
    Get {
        seq: i64,
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Hand a stored event to the sensors armed now (earlier firings are not repeated).
    Redeliver { seq: i64 },
}

#[derive(Subcommand)]
pub(crate) enum SensorCmd {
    /// Try a sensor before you arm it: for each dependency, whether the event passes its
    /// filters and why; for each trigger, whether its conditions hold, the parameters taken
    /// from the event, and the workflow (or object) it would create. Nothing is submitted.
    ///
    /// Exit code 0 when a trigger would fire, 1 when none would, 2 for invalid input.
    ///
    /// Examples:
    ///   riposte sensor test workflows/examples/falco-shell-sensor.yaml --event tests/fixtures/falco-terminal-shell.json
    ///   riposte sensor test workflows/playbooks/runtime-alert.yaml --event falco=tests/fixtures/falco-terminal-shell.json
    #[command(verbatim_doc_comment)]
    Test {
        /// The file with the Sensor (the first Sensor in it).
        file: PathBuf,
        /// An event: FILE for every dependency, or DEPENDENCY=FILE for one. A CloudEvents
        /// envelope (with `specversion`) or just its data, such as a webhook's
        /// `{"body": ...}`. JSON or YAML.
        #[arg(long = "event", value_name = "[DEP=]FILE", required = true)]
        events: Vec<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    #[command(flatten)]
    Object(ObjectCmd),
}

#[derive(Subcommand)]
pub(crate) enum TemplateCmd {
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
pub(crate) enum AuthCmd {
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
pub(crate) enum DbCmd {
    /// Apply all migrations (also done automatically whenever Riposte opens the database).
    Migrate,
}

#[derive(Subcommand)]
pub(crate) enum AuditCmd {
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
pub(crate) enum BenchCmd {
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
    /// Events end to end: concurrent HTTP producers post distinct Falco alerts to a webhook
    /// event source on the API port; each is stored, put on the bus, decided by the Falco
    /// sensor and turns into a workflow (a suspended one: no process is spawned). Reports
    /// throughput and the p50/p99 latency from HTTP request to workflow row (`latency_ms_*`:
    /// to the row's creation time, taken just before its commit; `processed_ms_*`: to the
    /// event marked processed, after that commit); then the pure filter evaluation rate on
    /// one core.
    ///
    /// Examples: riposte bench events --database-url postgres://postgres@127.0.0.1/bench
    ///           riposte bench events --rate 500 --events 5000 --database-url ...
    #[command(verbatim_doc_comment)]
    Events {
        #[arg(long, default_value_t = 5000)]
        events: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Offered load in events per second (open loop: each event is due at its time and
        /// its latency counts from then, so a backlog shows in p99). Without it, the
        /// producers post as fast as the server answers (closed loop: peak throughput).
        #[arg(long, value_parser = positive_rate)]
        rate: Option<f64>,
        /// `memory` or nats://HOST:PORT[/STREAM].
        #[arg(long, default_value = "memory")]
        bus: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// The default path end to end (the performance issue's W1–W3): `riposte run` of a
    /// generated workflow of `sh -c 'echo N'` steps — SQLite and the host executor in a fresh
    /// home, as a new user runs it — against spawning the same processes in the same order
    /// (each layer at once), measured in the same run; prints both and the ratio.
    ///
    /// Examples: riposte bench run --shape chain --tasks 200
    ///           riposte bench run --shape fanout --tasks 1000
    ///           riposte bench run --shape lattice --tasks 1000 --width 50
    #[command(verbatim_doc_comment)]
    Run {
        #[command(flatten)]
        workload: Workload,
        /// Runs of each; the best is reported (a shared machine's noise is added, not removed).
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// Extra arguments for `riposte run` (after --), e.g. -- --database-url none.
        #[arg(last = true)]
        run_args: Vec<String>,
    },
    /// The server path (the performance issue): a `riposte server` process on the database
    /// (host executor), the workload submitted through the API and timed from the POST until
    /// the API lists it Succeeded; then `--concurrent` copies at once, until all are. Both
    /// against spawning the same processes, measured in the same run.
    ///
    /// Examples: riposte bench server --database-url postgres://postgres@127.0.0.1/bench
    ///           riposte bench server --shape fanout --tasks 1000 --concurrent 1 --database-url ...
    #[command(verbatim_doc_comment)]
    Server {
        #[command(flatten)]
        workload: Workload,
        /// Copies submitted at once after the single run (1: only the single run).
        #[arg(long, default_value_t = 100)]
        concurrent: usize,
        /// Rounds of each; the best is reported.
        #[arg(long, default_value_t = 3)]
        repeat: usize,
        /// The server's database (--database-url; required: a server needs one).
        #[command(flatten)]
        db: DbArgs,
        /// Extra arguments for `riposte server` (after --), e.g. -- --no-isolation.
        #[arg(last = true)]
        server_args: Vec<String>,
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

/// One of the performance issue's end-to-end workloads (W1 chain, W2 fan-out, W3 lattice).
#[derive(clap::Args, Clone, Copy)]
pub(crate) struct Workload {
    #[arg(long, value_enum, default_value = "chain")]
    pub(crate) shape: bench::RunShape,
    #[arg(long, default_value_t = 200)]
    pub(crate) tasks: usize,
    /// The lattice's layer width.
    #[arg(long, default_value_t = 50)]
    pub(crate) width: usize,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum OutputFormat {
    Json,
    Yaml,
}

#[derive(clap::Args)]
pub(crate) struct RunArgs {
    /// The workflow file (YAML or JSON; the first Workflow in it, else the first WorkflowTemplate).
    pub(crate) file: PathBuf,
    /// Set a workflow parameter: -p name=value (repeatable).
    #[arg(short = 'p', long = "parameter", value_name = "NAME=VALUE")]
    pub(crate) parameters: Vec<String>,
    /// Start from this template instead of spec.entrypoint.
    #[arg(long)]
    pub(crate) entrypoint: Option<String>,
    /// Directory (or file) of WorkflowTemplates and ClusterWorkflowTemplates for templateRef.
    #[arg(long, value_name = "DIR")]
    pub(crate) templates: Vec<PathBuf>,
    /// Print the final workflow as Argo's Workflow object on stdout.
    #[arg(short = 'o', long = "output", value_enum)]
    pub(crate) output: Option<OutputFormat>,
    /// Map an image to a host program: --image node=/usr/bin/node (repeatable).
    #[arg(long = "image", value_name = "IMAGE=PROGRAM")]
    pub(crate) images: Vec<String>,
    /// Namespace reported as workflow.namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub(crate) namespace: String,
    /// Directory for run state and logs [default: $RIPOSTE_HOME/runs/NAME, RIPOSTE_HOME=~/.riposte].
    #[arg(long, value_name = "DIR")]
    pub(crate) run_dir: Option<PathBuf>,
    /// Run steps without a private root filesystem (they share the host's /tmp).
    #[arg(long)]
    pub(crate) no_isolation: bool,
    /// Keep each node's private root directory after it ends (for debugging).
    #[arg(long)]
    pub(crate) keep: bool,
    /// With --executor kubernetes: print the Jobs of the steps that would start first (as
    /// YAML documents, or a JSON list with -o json) and run nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) kube: KubeArgs,
    #[command(flatten)]
    pub(crate) db: DbArgs,
}

#[derive(clap::Args, Clone)]
pub(crate) struct KubeArgs {
    /// Executor for steps: `host` (local processes) or `kubernetes` (each container/script
    /// step a batch/v1 Job, resource steps API calls; the cluster comes from the in-cluster
    /// service account or KUBECONFIG).
    #[arg(
        long,
        env = "RIPOSTE_EXECUTOR",
        default_value = "host",
        value_name = "host|kubernetes"
    )]
    pub(crate) executor: String,
    /// Kubernetes: the Riposte image whose init container installs the step wrapper
    /// (`riposte exec`) into each step's pod. Defaults to this build's own version, so the
    /// wrapper matches the server.
    #[arg(
        long,
        env = "RIPOSTE_IMAGE",
        default_value = concat!("ghcr.io/riposte/riposte:v", env!("CARGO_PKG_VERSION"))
    )]
    pub(crate) riposte_image: String,
    /// Kubernetes: the init container's `imagePullPolicy`. `IfNotPresent` pulls the wrapper
    /// image once per node, not once per step.
    #[arg(
        long,
        env = "RIPOSTE_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent",
        value_parser = ["IfNotPresent", "Always", "Never"]
    )]
    pub(crate) riposte_image_pull_policy: String,
    /// Kubernetes: create every Job in this namespace instead of the workflow's own.
    #[arg(long, env = "RIPOSTE_JOB_NAMESPACE", value_name = "NAMESPACE")]
    pub(crate) job_namespace: Option<String>,
    /// Kubernetes: `ttlSecondsAfterFinished` of step Jobs. A Job removed while no controller
    /// ran cannot be re-attached to, so keep this longer than a restart takes.
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub(crate) job_ttl_seconds: i64,
    /// Kubernetes: how long a step may sit in ErrImagePull/ImagePullBackOff before it fails
    /// (InvalidImageName and CreateContainerConfigError fail it at once).
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub(crate) image_pull_grace_seconds: u64,
}

impl KubeArgs {
    pub(crate) fn check(&self) -> Result<bool> {
        match self.executor.as_str() {
            "host" => Ok(false),
            "kubernetes" => Ok(true),
            other => bail!(InvalidInput(format!(
                "--executor {other:?} is unknown; use host or kubernetes"
            ))),
        }
    }

    /// Connects to the cluster (in-cluster config or KUBECONFIG).
    pub(crate) async fn connect(
        &self,
        callback_url: Option<String>,
        callback_secret: Vec<u8>,
    ) -> Result<riposte_kube::Cluster> {
        let cluster = riposte_kube::Cluster::connect(riposte_kube::ClusterOptions {
            riposte_image: self.riposte_image.clone(),
            riposte_image_pull_policy: self.riposte_image_pull_policy.clone(),
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
pub(crate) struct DbArgs {
    /// Database for state, history and audit: postgres://USER@HOST/DB or sqlite://PATH
    /// [default: sqlite://$RIPOSTE_HOME/riposte.db]. `none` (run only) records nothing.
    #[arg(long, env = "DATABASE_URL", value_name = "URL", global = true)]
    pub(crate) database_url: Option<String>,
}

#[derive(clap::Args)]
pub(crate) struct LintArgs {
    /// Files or directories (searched for .yaml, .yml, .json).
    #[arg(required = true)]
    pub(crate) paths: Vec<PathBuf>,
    /// Extra WorkflowTemplates to resolve templateRef against.
    #[arg(long, value_name = "DIR")]
    pub(crate) templates: Vec<PathBuf>,
    /// Print errors only.
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

/// A `true|false` flag (`--dry-run`, `--allow-failure`) read as the resource template's
/// `--dry-run` is (`executor::flags::dry_run`): anything else is an error, not "no".
pub(crate) fn bool_flag(value: &str) -> Result<bool, String> {
    executor::flags::dry_run(Some(value))
}

/// `--rate`: a positive, finite number of events per second.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!(
            "expected a positive number of events per second (e.g. 500), got {s:?}"
        )),
    }
}
