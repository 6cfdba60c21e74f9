//! Commands on local files and the database: lint, replay, audit, tokens.

#[allow(unused_imports)]
use crate::*;

pub(crate) fn lint(a: LintArgs) -> Result<ExitCode> {
    let (loaded, mut diags, n_files) = files::load_all(&a.paths)?;
    files::lint_with_templates(&loaded, &a.templates, &mut diags)?;
    let (n_events, event_diags) = files::lint_events_in(&a.paths)?;
    diags.extend(event_diags);
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
        loaded.len() + n_events
    );
    Ok(if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub(crate) fn new_token(name: &str, roles: &[String]) -> Result<ExitCode> {
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

pub(crate) async fn replay(name: String, namespace: String, db: DbArgs) -> Result<ExitCode> {
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

pub(crate) async fn audit(cmd: AuditCmd, db: DbArgs) -> Result<ExitCode> {
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
                ..Default::default()
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

/// `riposte bench WORKLOAD`.
pub(crate) fn bench_cmd(workload: BenchCmd) -> ExitCode {
    match workload {
        BenchCmd::Engine { shape, tasks } => {
            report(bench::engine(shape, tasks).map(|()| ExitCode::SUCCESS))
        }
        BenchCmd::Submit {
            workflows,
            concurrency,
            db,
        } => report(block_on(async move {
            let store = open_store(&db).await?;
            let config = server::ControllerConfig {
                runs_dir: std::env::temp_dir().join("riposte-bench-submit"),
                images: ImageTable::with_host_python(BTreeMap::new()),
                argosay_binary: std::env::current_exe()?,
                wrapper_binary: step_wrapper_binary(),
                isolation: Isolation::None("benchmark".into()),
                holder: format!("bench-{}", generate_suffix()),
                lease_ttl_ms: 600_000,
                cluster: None,
            };
            bench::submit(store, config, workflows, concurrency)
                .await
                .map(|()| ExitCode::SUCCESS)
        })),
        BenchCmd::Api { db } => report(block_on(async move {
            let store = open_store(&db).await?;
            let config = server::ControllerConfig {
                runs_dir: std::env::temp_dir().join("riposte-bench-api"),
                images: ImageTable::with_host_python(BTreeMap::new()),
                argosay_binary: std::env::current_exe()?,
                wrapper_binary: step_wrapper_binary(),
                isolation: Isolation::None("benchmark".into()),
                holder: "bench".into(),
                lease_ttl_ms: 15_000,
                cluster: None,
            };
            bench::api(store, config).await.map(|()| ExitCode::SUCCESS)
        })),
        BenchCmd::Events {
            events,
            concurrency,
            rate,
            bus,
            db,
        } => report(block_on(async move {
            let store = open_store(&db).await?;
            let config = server::ControllerConfig {
                runs_dir: std::env::temp_dir().join("riposte-bench-events"),
                images: ImageTable::with_host_python(BTreeMap::new()),
                argosay_binary: std::env::current_exe()?,
                wrapper_binary: step_wrapper_binary(),
                isolation: Isolation::None("benchmark".into()),
                holder: format!("bench-{}", generate_suffix()),
                lease_ttl_ms: 600_000,
                cluster: None,
            };
            let bus = server::events::BusConfig::parse(&bus).map_err(InvalidInput)?;
            bench::events(store, config, bus, events, concurrency, rate)
                .await
                .map(|()| ExitCode::SUCCESS)
        })),
        BenchCmd::Store { shape, tasks, db } => report(block_on(async move {
            let store = open_store(&db).await?;
            bench::store(shape, tasks, store)
                .await
                .map(|_| ExitCode::SUCCESS)
        })),
        BenchCmd::Run {
            workload:
                Workload {
                    shape,
                    tasks,
                    width,
                },
            repeat,
            run_args,
        } => report(
            bench::run_vs_floor(shape, tasks, width, repeat, &run_args).map(|()| ExitCode::SUCCESS),
        ),
        BenchCmd::Server {
            workload:
                Workload {
                    shape,
                    tasks,
                    width,
                },
            concurrent,
            repeat,
            db,
            server_args,
        } => {
            let Some(database_url) = db.database_url else {
                return report(Err(InvalidInput(
                    "bench server needs --database-url URL (the server's database, e.g. postgres://postgres@127.0.0.1/riposte_bench)".into(),
                )
                .into()));
            };
            let run = bench::server_vs_floor(
                shape,
                tasks,
                width,
                concurrent,
                repeat,
                &database_url,
                &server_args,
            );
            report(run.map(|()| ExitCode::SUCCESS))
        }
        BenchCmd::Host {
            processes,
            threads,
            no_isolation,
        } => report(block_on(async {
            let run_dir = riposte_home().join("bench").join(generate_suffix());
            let exec = host_executor(run_dir.clone(), BTreeMap::new(), no_isolation, false)?;
            bench::host(processes, threads, exec, run_dir)
                .await
                .map(|()| ExitCode::SUCCESS)
        })),
    }
}

/// `riposte sensor test SENSOR.yaml --event [DEP=]FILE...`: the sensor's decision for the
/// events, with reasons; nothing is submitted.
pub(crate) fn sensor_test(file: &Path, event_args: &[String], json_out: bool) -> Result<ExitCode> {
    let name = file.display().to_string();
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {name}"))?;
    let (loaded, mut diags) = spec::load_events(&name, &text);
    diags.extend(spec::lint_events(&loaded));
    fail_on_lint_errors(&diags, &name, &name)?;
    let Some(sensor) = loaded.iter().find(|l| l.kind == spec::EventsKind::Sensor) else {
        bail!(InvalidInput(format!("{name} contains no Sensor")));
    };
    let dep_names = spec::sensor::compile_sensor(&sensor.document.value)
        .map_err(|e| InvalidInput(e.to_string()))?
        .dependency_names();
    // Which event each dependency is tested with.
    let mut for_all: Option<events::Event> = None;
    let mut per_dep: Vec<(String, events::Event)> = Vec::new();
    for arg in event_args {
        let (dep, path) = match arg.split_once('=') {
            Some((d, p)) if dep_names.iter().any(|n| n == d) => (Some(d.to_string()), p),
            Some((d, _)) if !Path::new(arg).exists() => bail!(InvalidInput(format!(
                "--event {arg}: {d:?} is not a dependency of {} (dependencies: {})",
                sensor.name,
                dep_names.join(", ")
            ))),
            _ => (None, arg.as_str()),
        };
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
        let docs = spec::yaml::load_documents(&text).map_err(|e| {
            InvalidInput(format!(
                "{path}:{}:{}: {}",
                e.position.line, e.position.col, e.message
            ))
        })?;
        let value = docs.into_iter().next().map(|d| d.value).unwrap_or_default();
        let event = events::Event::from_json(value);
        match dep {
            Some(d) => per_dep.push((d, event)),
            None => for_all = Some(event),
        }
    }
    let mut report =
        server::events::dry_run::dry_run(&sensor.document.value, for_all.as_ref(), &per_dep)
            .map_err(|e| InvalidInput(e.to_string()))?;
    report["sensor"] = serde_json::json!(sensor.name);
    let fired = report["triggers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["fires"] == true)
        .count();
    let mut out = std::io::stdout().lock();
    if json_out {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        writeln!(out, "sensor {}", sensor.name)?;
        for d in report["dependencies"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  dependency {}: {}",
                d["name"].as_str().unwrap_or(""),
                if d["matched"] == true {
                    "matched"
                } else {
                    "not matched"
                }
            )?;
            for r in d["reasons"].as_array().into_iter().flatten() {
                writeln!(out, "    {}", r.as_str().unwrap_or(""))?;
            }
        }
        for t in report["triggers"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "  trigger {} ({}): {} (conditions: {})",
                t["name"].as_str().unwrap_or(""),
                t["type"].as_str().unwrap_or("unsupported type"),
                if t["fires"] == true {
                    "fires"
                } else {
                    "does not fire"
                },
                t["conditions"].as_str().unwrap_or("")
            )?;
            for p in t["parameters"].as_array().into_iter().flatten() {
                writeln!(out, "    parameter {}", p.as_str().unwrap_or(""))?;
            }
            if !t["resource"].is_null() {
                writeln!(
                    out,
                    "    would {} (not submitted):",
                    t["operation"].as_str().unwrap_or("create")
                )?;
                for line in yaml_out::to_yaml(&t["resource"]).lines() {
                    writeln!(out, "      {line}")?;
                }
            }
        }
    }
    Ok(if fired > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
