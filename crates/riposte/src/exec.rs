//! `riposte exec` and `riposte install-wrapper`: the step wrapper a step's container runs on
//! Kubernetes (the wrapper itself is `step_wrapper`, shared with the small `riposte-exec`).

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

pub use step_wrapper::ExecArgs;

pub fn main(a: ExecArgs) -> Result<ExitCode> {
    Ok(step_wrapper::run(a)?)
}

/// `riposte install-wrapper DIR`: what the init container runs to put this binary where the
/// step's container can exec it.
pub fn install_wrapper(dir: &Path) -> Result<ExitCode> {
    let me = step_wrapper::own_binary().context("finding the riposte binary to install")?;
    let target = dir.join("riposte");
    std::fs::copy(&me, &target)
        .with_context(|| format!("copying {} to {}", me.display(), target.display()))?;
    Ok(ExitCode::SUCCESS)
}
