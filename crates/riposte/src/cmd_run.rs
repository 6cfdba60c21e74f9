//! `riposte run FILE`: one workflow on this machine through the one submit path, driven by
//! this process with a live view.

#[allow(unused_imports)]
use crate::*;

/// How long `riposte run`'s lease lasts without renewal (renewed every third of it).
pub(crate) const RUN_LEASE_MS: i64 = 15_000;

/// Keeps `riposte run`'s lease on its workflow while the process lives.
pub(crate) async fn renew_run_lease(store: store::Store, uid: String, holder: String) {
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

pub(crate) fn host_executor(
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
        images: ImageTable::with_host_python(image_map),
        argosay_binary: exe,
        isolation,
        keep_node_dirs: keep,
        // `riposte run` drives its workflow to the end itself; nothing re-attaches.
        detach: false,
        wrapper_binary: None,
        workflow_uid: None,
    }))
}

/// `riposte run --executor kubernetes --dry-run`: the Jobs of the steps the engine starts
/// first. Steps that are not pods (suspend, http, resource) are listed on stderr.
pub(crate) fn print_first_jobs(
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
        riposte_image_pull_policy: a.kube.riposte_image_pull_policy.clone(),
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

pub(crate) async fn run(a: RunArgs) -> Result<ExitCode> {
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
    fail_on_lint_errors(&diags, &file_name, &file_name)?;
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
