//! The `riposte` command line.

mod argosay;
mod bench;
mod cli;
mod client;
mod cmd_client;
mod cmd_events;
mod cmd_local;
mod cmd_run;
mod cmd_server;
mod demo;
mod evidence;
mod exec;
mod files;
mod gitops;
mod notify;
mod run;
mod ui;
pub(crate) use spec::yaml_out;

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

pub(crate) use cli::*;
pub(crate) use cmd_client::*;
pub(crate) use cmd_events::*;
pub(crate) use cmd_local::*;
pub(crate) use cmd_run::*;
pub(crate) use cmd_server::*;

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
        Cmd::Demo { interactive, keep } => {
            report(demo::main(demo::DemoOptions { keep, interactive }))
        }
        Cmd::Exec(a) => report(exec::main(a)),
        Cmd::Capture(a) => report(evidence::capture(a).map(|()| ExitCode::SUCCESS)),
        Cmd::Checkpoint(a) => report(evidence::checkpoint(a).map(|()| ExitCode::SUCCESS)),
        Cmd::PodCommand(a) => report(evidence::pod_command(a).map(|()| ExitCode::SUCCESS)),
        Cmd::Drain(a) => report(evidence::drain(a).map(|()| ExitCode::SUCCESS)),
        Cmd::Evidence(a) => report(evidence::main(a).map(|()| ExitCode::SUCCESS)),
        Cmd::Gitops { cmd } => report(gitops::main(cmd).map(|()| ExitCode::SUCCESS)),
        Cmd::Notify(a) => report(notify::main(a).map(|()| ExitCode::SUCCESS)),
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
        Cmd::Server(args) => report(block_on(serve(args))),
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
        Cmd::List { remote } => report(list_cmd(&remote)),
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
        } => report(resume_cmd(&name, node, &set, &remote)),
        Cmd::Stop { name, remote } => report(simple_put(&remote, &name, "stop")),
        Cmd::Suspend { name, remote } => report(simple_put(&remote, &name, "suspend")),
        Cmd::Watch { name, remote } => report(watch_cmd(&name, &remote)),
        Cmd::Logs {
            name,
            node,
            follow,
            remote,
        } => report(logs_cmd(&name, node, follow, &remote)),
        Cmd::Cron { cmd, remote } => report(cron_cmd(cmd, &remote)),
        Cmd::Retry {
            name,
            restart_successful,
            node_field_selector,
            parameters,
            remote,
        } => report(retry_cmd(
            &name,
            restart_successful,
            node_field_selector,
            parameters,
            &remote,
        )),
        Cmd::Resubmit { name, remote } => report(resubmit_cmd(&name, &remote)),
        Cmd::Terminate { name, remote } => report(simple_put(&remote, &name, "terminate")),
        Cmd::Delete { name, remote } => report(delete_cmd(&name, &remote)),
        Cmd::Template { cmd, remote } => report(template_cmd(cmd, &remote)),
        Cmd::Library { cmd, remote } => report(library_cmd(cmd, &remote)),
        Cmd::Sensor {
            cmd: SensorCmd::Test { file, events, json },
            ..
        } => report(sensor_test(&file, &events, json)),
        Cmd::Sensor {
            cmd: SensorCmd::Object(cmd),
            remote,
        } => report(object_cmd(cmd, "Sensor", &remote)),
        Cmd::EventSource { cmd, remote } => report(object_cmd(cmd, "EventSource", &remote)),
        Cmd::Event { cmd, remote } => report(event_cmd(cmd, &remote)),
        Cmd::Audit { cmd, db } => report(block_on(audit(cmd, db))),
        Cmd::Bench { workload } => bench_cmd(workload),
        Cmd::Run(a) => report(block_on(run(a))),
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

/// Prints the error diagnostics and fails with `what` when there are any.
pub(crate) fn fail_on_lint_errors(
    diags: &[spec::Diagnostic],
    what: &str,
    file: &str,
) -> Result<()> {
    let errors: Vec<&spec::Diagnostic> = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    for d in &errors {
        eprintln!("{d}");
    }
    bail!(InvalidInput(format!(
        "{what} has {} error(s); fix them or see `riposte lint {file}`",
        errors.len()
    )))
}

pub(crate) fn block_on(f: impl std::future::Future<Output = Result<ExitCode>>) -> Result<ExitCode> {
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "riposte".into())
}
