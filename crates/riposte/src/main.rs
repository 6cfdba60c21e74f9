//! The `riposte` command line.

mod argosay;
mod bench;
mod files;
mod run;
mod ui;
mod yaml_out;

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
    /// own /tmp where the OS permits (root with mount namespaces). Exit code: 0 when the
    /// workflow Succeeded, 1 when it Failed or Errored, 2 for invalid input.
    Run(RunArgs),
    /// Check workflow files for errors, printing `file:line:col: error|warning: message`.
    ///
    /// Reports YAML syntax and type errors, unknown templates and templateRefs, a missing
    /// entrypoint, DAG cycles, unknown dependencies, mixed `dependencies`/`depends`, undefined
    /// `{{inputs.parameters.x}}`, invalid expressions, and warns about every field Riposte
    /// does not implement. Exits 1 when there are errors.
    Lint(LintArgs),
    /// Run a documented performance workload and print one JSON line of measurements.
    ///
    /// `engine` drives the engine alone with a no-op executor; `host` runs N parallel
    /// `sh -c 'echo x'` steps through the host executor and compares with spawning the same
    /// processes from a thread pool. Build with --release for meaningful numbers.
    Bench {
        #[command(subcommand)]
        workload: BenchCmd,
    },
    /// The argosay shim (used by steps that run the argoproj/argosay image).
    #[command(hide = true)]
    Argosay {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
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
    /// Executor for steps. Only `host` is available in this build.
    #[arg(long, default_value = "host")]
    executor: String,
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
        Cmd::Lint(a) => report(lint(a)),
        Cmd::Bench {
            workload: BenchCmd::Engine { shape, tasks },
        } => report(bench::engine(shape, tasks).map(|()| ExitCode::SUCCESS)),
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
struct InvalidInput(String);

impl std::fmt::Display for InvalidInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InvalidInput {}

fn report(r: Result<ExitCode>) -> ExitCode {
    match r {
        Ok(c) => c,
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
    let (extra, extra_diags, _) = if a.templates.is_empty() {
        Default::default()
    } else {
        files::load_all(&a.templates)?
    };
    diags.extend(extra_diags);
    let mut library = files::library_of(&extra);
    for l in &loaded {
        library.add(l);
    }
    diags.extend(spec::lint(&loaded, &library));
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

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        use std::io::Read;
        if f.read_exact(&mut buf).is_ok() {
            return buf;
        }
    }
    // Without /dev/urandom, fall back to the clock; names need only be unlikely to collide.
    let t = run::now_ms() as u128 * 6_364_136_223_846_793_005;
    for (i, b) in buf.iter_mut().enumerate() {
        *b = (t >> ((i % 16) * 8)) as u8;
    }
    buf
}

fn generate_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes::<5>()
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

fn generate_uid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
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
    }))
}

async fn run(a: RunArgs) -> Result<ExitCode> {
    if a.executor != "host" {
        bail!(InvalidInput(format!(
            "executor {:?} is not available in this build; use --executor host",
            a.executor
        )));
    }
    let params = parse_pairs(&a.parameters, "parameter")?;
    let image_map: BTreeMap<String, String> =
        parse_pairs(&a.images, "--image")?.into_iter().collect();
    let text = std::fs::read_to_string(&a.file)
        .with_context(|| format!("reading {}", a.file.display()))?;
    let file_name = a.file.display().to_string();
    let (loaded, mut diags) = spec::load(&file_name, &text);
    let (extra, extra_diags, _) = if a.templates.is_empty() {
        Default::default()
    } else {
        files::load_all(&a.templates)?
    };
    diags.extend(extra_diags);
    let mut library = files::library_of(&extra);
    for l in &loaded {
        library.add(l);
    }
    diags.extend(spec::lint(&loaded, &library));
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
    if let Some(e) = &a.entrypoint {
        resource.spec.entrypoint = Some(e.clone());
    }
    let name = match (&resource.metadata.name, &resource.metadata.generate_name) {
        (Some(n), _) => n.clone(),
        (None, Some(g)) => format!("{g}{}", generate_suffix()),
        (None, None) => format!("workflow-{}", generate_suffix()),
    };
    let id = WorkflowIdentity {
        name: name.clone(),
        namespace: a.namespace.clone(),
        uid: generate_uid(),
    };
    let workflow =
        Workflow::new(resource, library, id, &params).map_err(|e| InvalidInput(e.to_string()))?;

    let run_dir = a
        .run_dir
        .clone()
        .unwrap_or_else(|| riposte_home().join("runs").join(&name));
    let isolation = if a.no_isolation {
        Isolation::None("disabled with --no-isolation".into())
    } else {
        Sandbox::probe()
    };
    if let Isolation::None(why) = &isolation {
        eprintln!("note: steps run without a private root: {why}");
    }
    let exe = std::env::current_exe().context("finding the riposte binary for the argosay shim")?;
    let exec = HostExecutor::new(HostConfig {
        run_dir: run_dir.clone(),
        images: ImageTable::new(host_python(), image_map),
        argosay_binary: exe,
        isolation,
        keep_node_dirs: a.keep,
    });
    let tty = std::io::stderr().is_terminal();
    eprintln!("running {name} (run directory {})", run_dir.display());
    let outcome = run::run_workflow(
        workflow,
        exec,
        run::RunConfig {
            run_dir: run_dir.clone(),
            progress: ui::Progress::new(tty),
        },
    )
    .await?;
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
