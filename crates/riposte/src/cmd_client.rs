//! Commands that talk to a server: submit, get, watch, templates, cron workflows.

#[allow(unused_imports)]
use crate::*;

pub(crate) fn watch_cmd(name: &str, remote: &Remote) -> Result<ExitCode> {
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

pub(crate) fn cron_cmd(cmd: CronCmd, remote: &Remote) -> Result<ExitCode> {
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

pub(crate) fn simple_put(remote: &Remote, name: &str, action: &str) -> Result<ExitCode> {
    remote.client().call(
        "PUT",
        &format!("/api/v1/workflows/{}/{name}/{action}", remote.namespace),
        None,
    )?;
    println!("workflow {name}: {action} requested");
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn submit_cmd(
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

pub(crate) fn wait_until_finished(
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

pub(crate) fn get_cmd(
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

pub(crate) fn template_cmd(cmd: TemplateCmd, remote: &Remote) -> Result<ExitCode> {
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

/// `riposte library list|install|export`.
pub(crate) fn library_cmd(cmd: LibraryCmd, remote: &Remote) -> Result<ExitCode> {
    use server::library::{FILES, is_playbook};
    match cmd {
        LibraryCmd::List => {
            for f in FILES {
                let docs = spec::yaml::load_documents(f.text)
                    .map_err(|e| anyhow::anyhow!("shipped file {}: {}", f.path, e.message))?;
                for d in docs {
                    let v = &d.value;
                    println!(
                        "{:<24} {:<32} {}{}",
                        v["kind"].as_str().unwrap_or(""),
                        v["metadata"]["name"].as_str().unwrap_or(""),
                        if is_playbook(f) { "[playbook] " } else { "" },
                        v["metadata"]["annotations"]["riposte.dev/description"]
                            .as_str()
                            .unwrap_or("")
                    );
                }
            }
        }
        LibraryCmd::Install { playbooks } => {
            let v = remote.client().call(
                "POST",
                &format!("/api/v1/riposte/library/{}", remote.namespace),
                Some(&serde_json::json!({"playbooks": playbooks})),
            )?;
            for item in v["items"].as_array().into_iter().flatten() {
                let ns = item["namespace"].as_str().unwrap_or("");
                println!(
                    "{} {}{} {}",
                    item["kind"].as_str().unwrap_or(""),
                    if ns.is_empty() {
                        String::new()
                    } else {
                        format!("{ns}/")
                    },
                    item["name"].as_str().unwrap_or(""),
                    item["action"].as_str().unwrap_or("")
                );
            }
        }
        LibraryCmd::Export { dir } => {
            for f in FILES {
                let path = dir.join(f.path);
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .with_context(|| format!("creating {}", parent.display()))?;
                }
                std::fs::write(&path, f.text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `riposte list`.
pub(crate) fn list_cmd(remote: &Remote) -> Result<ExitCode> {
    let v = remote.client().call(
        "GET",
        &format!("/api/v1/workflows/{}", remote.namespace),
        None,
    )?;
    client::print_list(v["items"].as_array().map(Vec::as_slice).unwrap_or(&[]))?;
    Ok(ExitCode::SUCCESS)
}

/// `riposte resume NAME [--node N] [--set k=v]` (an approval with `--set`).
pub(crate) fn resume_cmd(
    name: &str,
    node: Option<String>,
    set: &[String],
    remote: &Remote,
) -> Result<ExitCode> {
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
        let outputs: serde_json::Map<String, serde_json::Value> = parse_pairs(set, "--set")?
            .into_iter()
            .map(|(k, v)| (k, serde_json::Value::String(v)))
            .collect();
        let body = serde_json::json!({"nodeFieldSelector": selector, "outputParameters": serde_json::Value::Object(outputs).to_string()});
        c.call("PUT", &format!("{path}/set"), Some(&body))?;
    }
    println!("workflow {name} resumed");
    Ok(ExitCode::SUCCESS)
}

/// `riposte logs NAME [--node N] [--follow]`.
pub(crate) fn logs_cmd(
    name: &str,
    node: Option<String>,
    follow: bool,
    remote: &Remote,
) -> Result<ExitCode> {
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
        let v: serde_json::Value = serde_json::from_str(&line).context("reading the log stream")?;
        writeln!(
            out,
            "{}: {}",
            v["result"]["podName"].as_str().unwrap_or(""),
            v["result"]["content"].as_str().unwrap_or("")
        )?;
        out.flush()?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `riposte retry NAME`.
pub(crate) fn retry_cmd(
    name: &str,
    restart_successful: bool,
    node_field_selector: Option<String>,
    parameters: Vec<String>,
    remote: &Remote,
) -> Result<ExitCode> {
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
}

/// `riposte resubmit NAME`.
pub(crate) fn resubmit_cmd(name: &str, remote: &Remote) -> Result<ExitCode> {
    let v = remote.client().call(
        "PUT",
        &format!("/api/v1/workflows/{}/{name}/resubmit", remote.namespace),
        Some(&serde_json::json!({})),
    )?;
    println!("{}", v["metadata"]["name"].as_str().unwrap_or(""));
    Ok(ExitCode::SUCCESS)
}

/// `riposte delete NAME`.
pub(crate) fn delete_cmd(name: &str, remote: &Remote) -> Result<ExitCode> {
    remote.client().call(
        "DELETE",
        &format!("/api/v1/workflows/{}/{name}", remote.namespace),
        None,
    )?;
    println!("workflow {name} deleted");
    Ok(ExitCode::SUCCESS)
}
