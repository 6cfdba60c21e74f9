//! `riposte-exec`: the step wrapper alone (see `riposte exec --help`), a small binary so the
//! host executor's detached steps do not pay for loading the whole `riposte` per step.

use std::process::ExitCode;

use clap::Parser;

/// Runs a step's command, passes its stdout through and writes a report of how it ended
/// (exit code, `result`, output parameters) to `--report-file` or the termination message.
#[derive(Parser)]
#[command(name = "riposte-exec", version)]
struct Cli {
    #[command(flatten)]
    args: step_wrapper::ExecArgs,
}

fn main() -> ExitCode {
    match step_wrapper::run(Cli::parse().args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("riposte-exec: error: {e}");
            ExitCode::from(2)
        }
    }
}
