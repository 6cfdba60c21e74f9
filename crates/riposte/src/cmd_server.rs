//! `riposte server`: the controller, the API, tracing and metrics, graceful shutdown.

#[allow(unused_imports)]
use crate::*;

/// Logs through `tracing`: `RUST_LOG` picks what (default `default_filter`), `format` how.
pub(crate) fn init_tracing(format: &str, default_filter: &str) {
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
pub(crate) fn callback_secret(file: Option<&Path>) -> Result<Vec<u8>> {
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
        // One key for this process (replicas need a shared one: --callback-secret-file).
        None => Ok(server::ids::random_bytes::<32>().to_vec()),
    }
}

pub(crate) async fn serve(args: ServeArgs) -> Result<ExitCode> {
    let ServeArgs {
        listen,
        no_isolation,
        auth_file,
        lease_seconds,
        log_format,
        kube,
        callback_url,
        callback_secret_file,
        external_url,
        bus,
        config_dir,
        secrets_dir,
        event_retention,
        db,
    } = args;
    let bus = server::events::BusConfig::parse(&bus).map_err(InvalidInput)?;
    let retention_ms = parse_retention(&event_retention)?;
    init_tracing(&log_format, "info");
    if !(lease_seconds.is_finite() && (0.1..=86_400.0).contains(&lease_seconds)) {
        bail!(InvalidInput(format!(
            "--lease-seconds {lease_seconds} must be between 0.1 and 86400"
        )));
    }
    server::metrics::install().map_err(|e| anyhow::anyhow!("installing metrics: {e}"))?;
    let secret = callback_secret(callback_secret_file.as_deref())?;
    let approvals = match &external_url {
        Some(url) if url.starts_with("http://") || url.starts_with("https://") => {
            Some(server::approval::LinkSigner::new(&secret, url))
        }
        Some(url) => bail!(InvalidInput(format!(
            "--external-url {url:?} must be an http:// or https:// URL (how people reach this server)"
        ))),
        None => None,
    };
    let cluster = if kube.check()? {
        let c = kube.connect(callback_url.clone(), secret.clone()).await?;
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
            images: ImageTable::with_host_python(BTreeMap::new()),
            argosay_binary: std::env::current_exe()
                .context("finding the riposte binary for the argosay shim")?,
            wrapper_binary: step_wrapper_binary(),
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
    tokio::spawn(controller.clone().inbox_sweep_loop());
    tokio::spawn(controller.clone().cron_loop());
    let events = server::events::Events::start(
        controller.clone(),
        server::events::EventsConfig {
            bus,
            retention_ms,
            secrets_dir,
            run_sources: true,
            webhook_host: addr.ip(),
        },
    )
    .await
    .context("starting the events half (bus, sensors, event sources)")?;
    if let Some(dir) = &config_dir {
        apply_config_dir(&events, dir).await?;
    }
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
    let sources = events.clone();
    let mut serving = tokio::spawn(server::serve(
        listener,
        controller.clone(),
        events,
        auth,
        approvals,
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
    // Each event source finishes storing and acknowledging the message in hand, so its
    // broker has nothing to re-deliver.
    sources.stop_sources().await;
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

/// SIGTERM (Kubernetes stopping the pod) or SIGINT (Ctrl-C).
pub(crate) async fn shutdown_signal() {
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

fn parse_retention(s: &str) -> Result<i64> {
    let days = s.strip_suffix('d').and_then(|d| d.parse::<i64>().ok());
    let ms = match days {
        Some(d) => Some(d.saturating_mul(86_400_000)),
        None => expr::time::parse_duration_millis(s),
    };
    match ms {
        Some(ms) if ms > 0 => Ok(ms),
        _ => bail!(InvalidInput(format!(
            "--event-retention {s:?} is not a duration like 7d, 12h or 30m"
        ))),
    }
}

/// Applies every Sensor, EventSource and WorkflowEventBinding in DIR's YAML/JSON files; a lint
/// error in any of them stops the start, with file:line:col.
async fn apply_config_dir(events: &server::events::Events, dir: &Path) -> Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading --config-dir {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            )
        })
        .collect();
    files.sort();
    let mut applied = 0;
    for file in files {
        let name = file.display().to_string();
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {name}"))?;
        let (loaded, mut diags) = spec::load_events(&name, &text);
        diags.extend(spec::lint_events(&loaded));
        fail_on_lint_errors(&diags, &name, &name)?;
        let docs = spec::yaml::load_documents(&text).map_err(|e| {
            InvalidInput(format!(
                "{name}:{}:{}: {}",
                e.position.line, e.position.col, e.message
            ))
        })?;
        for d in docs {
            let kind = d.value["kind"].as_str().unwrap_or("").to_string();
            if !["Sensor", "EventSource", "WorkflowEventBinding"].contains(&kind.as_str()) {
                continue;
            }
            let ns = d.value["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string();
            let what = server::api::apply_event_object(events, "config-dir", &ns, d.value, &kind)
                .await
                .map_err(|e| InvalidInput(format!("{name}: {e}")))?;
            tracing::info!(file = %name, kind = %kind, namespace = %ns, what, "applied from the config directory");
            applied += 1;
        }
    }
    eprintln!("applied {applied} object(s) from {}", dir.display());
    Ok(())
}

/// `riposte-exec` beside this binary (as `cargo build`, `cargo install` and the image put
/// it), for detached steps; without it they run under `riposte exec`, which costs the
/// loading of this whole binary per step.
pub(crate) fn step_wrapper_binary() -> Option<PathBuf> {
    let wrapper = std::env::current_exe().ok()?.with_file_name("riposte-exec");
    if wrapper.is_file() {
        Some(wrapper)
    } else {
        tracing::info!(
            missing = %wrapper.display(),
            "steps run under `riposte exec`: install riposte-exec beside riposte for faster steps"
        );
        None
    }
}
