//! Prometheus metrics, through the `metrics` facade: without an installed recorder (tests,
//! `riposte run`) every call is a no-op; `riposte server` installs the Prometheus recorder
//! ([`install`]) and serves it at `/metrics`.
//!
//! Names follow Prometheus conventions: `riposte_` prefix, base units (seconds), `_total` for
//! counters.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// A counter without labels, as a value so call sites read `WORKFLOWS_SUBMITTED.inc()`.
pub struct Counter(&'static str);

impl Counter {
    pub fn inc(&self) {
        metrics::counter!(self.0).increment(1);
    }
}

pub static WORKFLOWS_SUBMITTED: Counter = Counter("riposte_workflows_submitted_total");
pub static INBOX_INPUTS: Counter = Counter("riposte_inbox_inputs_total");
pub static LEASE_TAKEOVERS: Counter = Counter("riposte_lease_takeovers_total");
pub static DRIVER_PANICS: Counter = Counter("riposte_driver_panics_total");

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns its handle.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
            ],
        )
        .map_err(|e| e.to_string())?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
    describe();
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "riposte_workflows_submitted_total",
        "Workflows created through the submit path by this replica"
    );
    describe_counter!(
        "riposte_workflows_finished_total",
        "Workflows that finished on this replica, by final phase"
    );
    describe_gauge!(
        "riposte_workflows_running",
        "Workflows this replica drives now"
    );
    describe_counter!(
        "riposte_node_transitions_total",
        "Node phase transitions recorded by this replica"
    );
    describe_histogram!(
        "riposte_step_duration_seconds",
        Unit::Seconds,
        "How long leaf steps ran (start to finish), by final phase"
    );
    describe_histogram!(
        "riposte_db_commit_seconds",
        Unit::Seconds,
        "Latency of recording one engine step (one transaction)"
    );
    describe_histogram!(
        "riposte_group_commit_batch_size",
        "Writes carried by one shared transaction (received events, sensor firings, decisions)"
    );
    describe_gauge!(
        "riposte_inbox_pending",
        "Outside inputs (resume, approve, stop, ...) stored and not yet consumed, all replicas"
    );
    describe_counter!(
        "riposte_inbox_inputs_total",
        "Outside inputs stored through this replica"
    );
    describe_counter!(
        "riposte_lease_takeovers_total",
        "Workflows this replica took over (after a restart or another replica's death)"
    );
    describe_counter!(
        "riposte_api_requests_total",
        "API requests by route, method and status code"
    );
    describe_histogram!(
        "riposte_api_request_duration_seconds",
        Unit::Seconds,
        "API request latency by route"
    );
    describe_counter!(
        "riposte_step_results_total",
        "Kubernetes step results by how they arrived: callback, pod_status (the main container's termination message) or job_condition"
    );
    describe_counter!(
        "riposte_events_received_total",
        "Events stored by event source; duplicate=true for a producer's retry of a stored event"
    );
    describe_counter!(
        "riposte_sensor_filter_results_total",
        "Sensor dependency verdicts by sensor and result (matched or not)"
    );
    describe_counter!(
        "riposte_trigger_firings_total",
        "Trigger firings by sensor, trigger and result (fired, existing, deduplicated, failed)"
    );
    describe_counter!(
        "riposte_event_source_errors_total",
        "Event source task failures (each is retried with backoff)"
    );
    describe_counter!(
        "riposte_driver_panics_total",
        "Workflow drivers that panicked (the workflow ended Error)"
    );
}

/// After each recorded step: commit latency, transitions, finished steps' durations.
pub fn record_step(commit: Duration, transitions: usize, nodes: &[store::NodeRow]) {
    metrics::histogram!("riposte_db_commit_seconds").record(commit.as_secs_f64());
    if transitions > 0 {
        metrics::counter!("riposte_node_transitions_total").increment(transitions as u64);
    }
    for n in nodes {
        let is_leaf = matches!(n.status["type"].as_str(), Some("Pod" | "Container"));
        let finished = engine::Phase::parse(&n.phase).is_some_and(engine::Phase::completed);
        if !(is_leaf && finished) {
            continue;
        }
        let parse = |k: &str| n.status[k].as_str().and_then(expr::time::parse_rfc3339);
        if let (Some(a), Some(b)) = (parse("startedAt"), parse("finishedAt")) {
            metrics::histogram!("riposte_step_duration_seconds", "phase" => n.phase.clone())
                .record((b - a).max(0) as f64);
        }
    }
}

pub fn workflow_finished(phase: &str) {
    metrics::counter!("riposte_workflows_finished_total", "phase" => phase.to_string())
        .increment(1);
}

pub fn set_running(n: usize) {
    metrics::gauge!("riposte_workflows_running").set(n as f64);
}

pub fn set_inbox_pending(n: i64) {
    metrics::gauge!("riposte_inbox_pending").set(n as f64);
}

pub fn api_request(route: &str, method: &str, code: u16, took: Duration) {
    metrics::counter!("riposte_api_requests_total", "route" => route.to_string(), "method" => method.to_string(), "code" => code.to_string()).increment(1);
    metrics::histogram!("riposte_api_request_duration_seconds", "route" => route.to_string())
        .record(took.as_secs_f64());
}

pub fn event_received(event_source: &str, duplicate: bool) {
    metrics::counter!("riposte_events_received_total", "event_source" => event_source.to_string(), "duplicate" => duplicate.to_string()).increment(1);
}

/// How many writes one group commit carried (see `group_commit`).
pub fn group_commit_batch(size: usize) {
    metrics::histogram!("riposte_group_commit_batch_size").record(size as f64);
}

pub fn filter_result(sensor: &str, matched: bool) {
    metrics::counter!("riposte_sensor_filter_results_total", "sensor" => sensor.to_string(), "matched" => matched.to_string()).increment(1);
}

pub fn trigger_fired(sensor: &str, trigger: &str, result: &str) {
    metrics::counter!("riposte_trigger_firings_total", "sensor" => sensor.to_string(), "trigger" => trigger.to_string(), "result" => result.to_string()).increment(1);
}

pub fn source_error(event_source: &str) {
    metrics::counter!("riposte_event_source_errors_total", "event_source" => event_source.to_string()).increment(1);
}
