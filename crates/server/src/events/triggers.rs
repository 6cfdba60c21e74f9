//! Carrying out a firing: submit (or resume, stop, ...) a workflow through the one
//! `Controller::submit` with the firing's idempotency key; create/patch/delete a Kubernetes
//! object; POST to a URL; log. With the trigger's `rateLimit`, `retryStrategy` and Riposte's
//! `dedupe` window.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::Input;
use events::sensor::{Firing, TriggerKind};
use serde_json::json;
use spec::sensor::{CompiledSensor, Retry};

use super::{Events, FireOutcome};
use crate::controller::ControlError;
use crate::driver::now_ms;
use crate::submit::{Origin, SubmitOutcome, SubmitRequest};

/// Labels Argo Events puts on what a sensor creates.
pub const SENSOR_LABEL: &str = "events.argoproj.io/sensor";
pub const TRIGGER_LABEL: &str = "events.argoproj.io/trigger";
/// The events (their numbers in `riposte event list`, comma-separated) a triggered workflow
/// was created from: the console shows a responder the alert behind an approval.
pub const EVENTS_ANNOTATION: &str = "riposte.io/events";

enum Failure {
    /// The store did not answer: retry the whole event later.
    Transient(String),
    /// The trigger is wrong or its target refused: retrying the same input will not help
    /// (beyond the trigger's own retryStrategy).
    Permanent(String),
    Retryable(String),
}

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Failure {
        match e {
            ControlError::Store(s) => Failure::Transient(store::chain(&s)),
            other => Failure::Permanent(other.to_string()),
        }
    }
}

/// Where a failing firing stands in its trigger's `retryStrategy`.
#[derive(Debug, Clone)]
pub(super) struct RetryStanding {
    /// Attempts that failed so far.
    failures: u32,
    /// Not tried again before this (ms).
    next_at: i64,
    last_error: String,
}

/// After the failure of attempt `failures + 1`: the failures then and when to try again, or
/// `None` when the strategy's `steps` attempts are spent. The wait is `duration ×
/// factor^(failures)` plus up to `jitter` of it (`sample` in [0, 1)).
fn next_attempt(retry: &Retry, failures: u32, now: i64, sample: f64) -> Option<(u32, i64)> {
    let failures = failures + 1;
    if failures >= retry.steps {
        return None;
    }
    let base = retry.duration_ms as f64 * retry.factor.max(1.0).powi(failures as i32 - 1);
    let wait = base + base * retry.jitter.clamp(0.0, 1.0) * sample;
    Some((failures, now + wait.min(i64::MAX as f64 / 2.0) as i64))
}

impl Events {
    pub(super) async fn fire(&self, sensor: &CompiledSensor, f: &Firing) -> FireOutcome {
        let key = sensor.key();
        let trigger = sensor.trigger(&f.trigger);
        let mut outcome = FireOutcome {
            effect: None,
            error: None,
            existing: false,
            deduplicated: false,
            retry_later: false,
            deferred_for: None,
        };
        if let Some((dedupe_key, window)) = &f.dedupe {
            let now = now_ms();
            match self
                .controller()
                .store()
                .claim_dedupe(
                    &format!("{key}/{}", f.trigger),
                    dedupe_key,
                    &f.key,
                    now,
                    now + window,
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    outcome.deduplicated = true;
                    return outcome;
                }
                Err(e) => {
                    outcome.error = Some(store::chain(&e));
                    outcome.retry_later = true;
                    return outcome;
                }
            }
        }
        // A spent rate limit defers the firing rather than waiting here, where the wait would
        // hold this event's bus slot (and a stateful sensor's lock) from every other alert.
        if let Some(wait) = self.rate_allows(
            &format!("{key}/{}", f.trigger),
            trigger.and_then(|t| t.rate_limit),
        ) {
            outcome.retry_later = true;
            outcome.deferred_for = Some(wait.max(1));
            return outcome;
        }
        // retryStrategy: a failure that may pass is tried again after its backoff, by
        // deferring the firing like a rate limit does (never by sleeping here); where the
        // firing stands is kept per replica by its key.
        let retry = trigger.map(|t| t.retry).unwrap_or_default();
        let now = now_ms();
        let standing = self.retry_standing(&f.key);
        if let Some(s) = &standing
            && s.next_at > now
        {
            outcome.error = Some(s.last_error.clone());
            outcome.retry_later = true;
            outcome.deferred_for = Some(s.next_at - now);
            return outcome;
        }
        let result = self.fire_once(sensor, f).await;
        let failures = standing.map(|s| s.failures).unwrap_or(0);
        match result {
            Ok((effect, existing)) => {
                self.set_retry_standing(&f.key, None);
                outcome.effect = Some(effect);
                outcome.existing = existing;
            }
            Err(Failure::Transient(m)) => {
                outcome.error = Some(m);
                outcome.retry_later = true;
            }
            Err(Failure::Permanent(m)) => {
                self.set_retry_standing(&f.key, None);
                outcome.error = Some(m);
            }
            Err(Failure::Retryable(m)) => {
                let attempt = failures + 1;
                tracing::warn!(sensor = %key, trigger = %f.trigger, attempt, error = %m, "trigger failed");
                let next = next_attempt(&retry, failures, now, rand::random::<f64>());
                match next {
                    Some((failures, next_at)) => {
                        outcome.retry_later = true;
                        outcome.deferred_for = Some((next_at - now).max(1));
                        self.set_retry_standing(
                            &f.key,
                            Some(RetryStanding {
                                failures,
                                next_at,
                                last_error: m.clone(),
                            }),
                        );
                    }
                    None => {
                        self.set_retry_standing(&f.key, None);
                        // Argo's `atLeastOnce`: a trigger that still fails is not given up
                        // on; the event stays unprocessed and is delivered again (every few
                        // seconds) until it succeeds. By default (at most once) the failure
                        // is final and recorded.
                        if trigger.is_some_and(|t| t.at_least_once) {
                            outcome.retry_later = true;
                        }
                    }
                }
                outcome.error = Some(m);
            }
        }
        outcome
    }

    fn retry_standing(&self, key: &str) -> Option<RetryStanding> {
        let r = match self.inner.retries.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        r.get(key).cloned()
    }

    fn set_retry_standing(&self, key: &str, standing: Option<RetryStanding>) {
        let mut r = match self.inner.retries.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        match standing {
            Some(s) => {
                // A firing another replica finished (or an event pruned) leaves its entry:
                // what is long past its next attempt is dropped.
                let stale = s.next_at - 3_600_000;
                r.retain(|_, o| o.next_at > stale);
                r.insert(key.to_string(), s);
            }
            None => {
                r.remove(key);
            }
        }
    }

    async fn fire_once(
        &self,
        sensor: &CompiledSensor,
        f: &Firing,
    ) -> Result<(String, bool), Failure> {
        let namespace = if sensor.namespace.is_empty() {
            "default"
        } else {
            sensor.namespace.as_str()
        };
        let sensor_name = sensor.name.as_str();
        let c = self.controller();
        let actor = format!("system:sensor:{namespace}/{sensor_name}");
        match &f.kind {
            TriggerKind::ArgoWorkflow { operation } => {
                let name_of = || {
                    f.resource["metadata"]["name"]
                        .as_str()
                        .map(str::to_string)
                        .ok_or_else(|| {
                            Failure::Permanent(format!(
                                "argoWorkflow {operation} needs the workflow's name in source.resource.metadata.name"
                            ))
                        })
                };
                let ns = f.resource["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or(namespace)
                    .to_string();
                let input = |now| match operation.as_str() {
                    "resume" => Some(Input::Resume {
                        now,
                        node: None,
                        parameters: BTreeMap::new(),
                    }),
                    "suspend" => Some(Input::Suspend { now }),
                    "terminate" => Some(Input::Stop {
                        now,
                        terminate: true,
                        message: Some(format!("terminated by sensor {sensor_name}")),
                    }),
                    "stop" => Some(Input::Stop {
                        now,
                        terminate: false,
                        message: Some(format!("stopped by sensor {sensor_name}")),
                    }),
                    _ => None,
                };
                if let Some(i) = input(now_ms()) {
                    let name = name_of()?;
                    c.send(
                        &ns,
                        &name,
                        i,
                        &actor,
                        "sensor",
                        &format!("workflow.{operation}"),
                    )
                    .await?;
                    return Ok((format!("workflows/{ns}/{name} {operation}"), false));
                }
                let mut req = match operation.as_str() {
                    "submit" | "" => {
                        let resource: spec::WorkflowResource =
                            serde_json::from_value(f.resource.clone()).map_err(|e| {
                                Failure::Permanent(format!(
                                    "source.resource is not a Workflow: {e}"
                                ))
                            })?;
                        SubmitRequest::new(
                            &ns,
                            Origin::Inline(Box::new(resource)),
                            &actor,
                            "sensor",
                        )
                    }
                    "submit-from" => {
                        let name = name_of()?;
                        match f.resource["kind"].as_str() {
                            Some("CronWorkflow") => {
                                let cron = c
                                    .store()
                                    .get_cron(&ns, &name)
                                    .await
                                    .map_err(ControlError::from)?;
                                let cron: spec::CronWorkflow = serde_json::from_value(cron.body)
                                    .map_err(|e| {
                                        Failure::Permanent(format!(
                                            "stored CronWorkflow {ns}/{name}: {e}"
                                        ))
                                    })?;
                                SubmitRequest::new(
                                    &ns,
                                    Origin::Cron {
                                        cron: Box::new(cron),
                                        scheduled_at: None,
                                    },
                                    &actor,
                                    "sensor",
                                )
                            }
                            Some("WorkflowTemplate") => SubmitRequest::new(
                                &ns,
                                Origin::Template {
                                    name,
                                    cluster: false,
                                },
                                &actor,
                                "sensor",
                            ),
                            Some("ClusterWorkflowTemplate") => SubmitRequest::new(
                                &ns,
                                Origin::Template {
                                    name,
                                    cluster: true,
                                },
                                &actor,
                                "sensor",
                            ),
                            other => {
                                return Err(Failure::Permanent(format!(
                                    "submit-from needs a CronWorkflow or WorkflowTemplate in source.resource, not {other:?}"
                                )));
                            }
                        }
                    }
                    "resubmit" => {
                        let name = name_of()?;
                        let rec = c
                            .store()
                            .get_workflow(&ns, &name)
                            .await
                            .map_err(ControlError::from)?;
                        let definition =
                            crate::controller::Definition::from_value(&rec.definition)?;
                        SubmitRequest::new(
                            &ns,
                            Origin::Resubmit {
                                from: name,
                                definition: Box::new(definition),
                            },
                            &actor,
                            "sensor",
                        )
                    }
                    "retry" => {
                        let name = name_of()?;
                        c.retry(
                            &ns,
                            &name,
                            crate::controller::RetryRequest {
                                restart_successful: false,
                                node_selector: None,
                                parameters: Vec::new(),
                            },
                            &actor,
                            "sensor",
                        )
                        .await?;
                        return Ok((format!("workflows/{ns}/{name} retry"), false));
                    }
                    other => {
                        return Err(Failure::Permanent(format!(
                            "argoWorkflow operation {other:?} is not one of submit, submit-from, resubmit, resume, retry, suspend, stop, terminate"
                        )));
                    }
                };
                req.idempotency_key = Some(f.key.clone());
                req.labels
                    .insert(SENSOR_LABEL.into(), sensor_name.to_string());
                req.labels.insert(TRIGGER_LABEL.into(), f.trigger.clone());
                req.annotations.insert(
                    EVENTS_ANNOTATION.into(),
                    f.events
                        .iter()
                        .map(|(_, s)| s.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                );
                req.details = json!({"sensor": sensor_name, "trigger": f.trigger, "events": f.events.iter().map(|(_, s)| s).collect::<Vec<_>>()});
                let submitted = self.inner.submitter.call(req).await.ok_or_else(|| {
                    Failure::Transient("the submitter has stopped (shutting down)".into())
                })?;
                match submitted? {
                    SubmitOutcome::Created { name, .. } => {
                        Ok((format!("workflows/{ns}/{name}"), false))
                    }
                    SubmitOutcome::Existing { name, .. } => {
                        Ok((format!("workflows/{ns}/{name}"), true))
                    }
                    SubmitOutcome::CronFiringTaken => Ok(("cron firing taken".into(), true)),
                }
            }
            TriggerKind::K8s { operation } => {
                let cluster = c.cluster().ok_or_else(|| {
                    Failure::Permanent("a k8s trigger needs the Kubernetes connection (riposte server --executor kubernetes)".into())
                })?;
                use riposte_kube::resource::ActionError;
                riposte_kube::resource::object_action(cluster, operation, &f.resource, namespace)
                    .await
                    .map(|what| (format!("{what} {operation}"), false))
                    .map_err(|e| match e {
                        ActionError::Permanent(m) => Failure::Permanent(m),
                        ActionError::Retryable(m) => Failure::Retryable(m),
                    })
            }
            TriggerKind::Http => {
                let http = &f.template["http"];
                let url = http["url"]
                    .as_str()
                    .ok_or_else(|| Failure::Permanent("http trigger without url".into()))?
                    .to_string();
                let method = http["method"].as_str().unwrap_or("POST").to_string();
                let mut headers: Vec<(String, String)> = http["headers"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                    .collect();
                for h in http["secureHeaders"].as_array().into_iter().flatten() {
                    let name = h["name"].as_str().unwrap_or("").to_string();
                    let selector: spec::event_source::SecretRef =
                        serde_json::from_value(h["valueFrom"]["secretKeyRef"].clone()).map_err(
                            |e| {
                                Failure::Permanent(format!(
                                    "secureHeaders {name:?}: valueFrom.secretKeyRef must be {{name, key}}: {e}"
                                ))
                            },
                        )?;
                    let value = self.secret(&selector).await.map_err(Failure::Permanent)?;
                    headers.push((name, value));
                }
                let body = f.resource.to_string();
                let timeout = http["timeout"].as_u64().unwrap_or(10).clamp(1, 300);
                let status = tokio::task::spawn_blocking(move || {
                    http_call(&method, &url, &headers, body, timeout)
                })
                .await
                .map_err(|e| Failure::Retryable(format!("http trigger task: {e}")))??;
                Ok((format!("http {status}"), false))
            }
            TriggerKind::Log => {
                tracing::info!(sensor = %sensor_name, trigger = %f.trigger, events = ?f.events, "log trigger fired");
                Ok(("logged".into(), false))
            }
            TriggerKind::Unsupported(kind) => Err(Failure::Permanent(format!(
                "trigger type {kind:?} is not carried out by Riposte (use argoWorkflow, k8s, http or log)"
            ))),
        }
    }
}

fn http_call(
    method: &str,
    url: &str,
    headers: &[(String, String)],
    body: String,
    timeout_s: u64,
) -> Result<u16, Failure> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(timeout_s)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    let mut has_ct = false;
    for (k, v) in headers {
        has_ct |= k.eq_ignore_ascii_case("content-type");
        req = req.header(k, v);
    }
    if !has_ct {
        req = req.header("Content-Type", "application/json");
    }
    let req = req
        .body(body)
        .map_err(|e| Failure::Permanent(format!("http trigger request to {url}: {e}")))?;
    // Not answering (refused, reset, timed out) may pass on another attempt.
    let resp = agent
        .run(req)
        .map_err(|e| Failure::Retryable(format!("http trigger {method} {url}: {e}")))?;
    let status = resp.status().as_u16();
    if status >= 300 {
        let message = format!("http trigger {method} {url}: status {status}");
        return Err(if riposte_kube::resource::retryable_status(status) {
            Failure::Retryable(message)
        } else {
            Failure::Permanent(message)
        });
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use riposte_kube::resource::retryable_status;

    #[test]
    fn refusals_are_final_and_unavailability_is_retried() {
        let table = [
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (409, false),
            (422, false),
            (408, true),
            (429, true),
            (500, true),
            (502, true),
            (503, true),
            (504, true),
        ];
        for (status, retried) in table {
            assert_eq!(retryable_status(status), retried, "{status}");
        }
    }
}

#[cfg(test)]
mod retry_tests {
    use super::*;

    #[test]
    fn retry_waits_grow_by_factor_with_bounded_jitter_until_the_steps_are_spent() {
        let retry = Retry {
            steps: 4,
            duration_ms: 100,
            factor: 2.0,
            jitter: 0.5,
        };
        let table = [
            // (failures so far, jitter sample, expected (failures, next_at))
            (0, 0.0, Some((1, 1_100))),
            (1, 0.0, Some((2, 1_200))),
            (2, 0.0, Some((3, 1_400))),
            (3, 0.0, None),
            (0, 0.99, Some((1, 1_149))),
        ];
        for (failures, sample, want) in table {
            assert_eq!(
                next_attempt(&retry, failures, 1_000, sample),
                want,
                "{failures} {sample}"
            );
        }
        let once = Retry { steps: 1, ..retry };
        assert_eq!(
            next_attempt(&once, 0, 0, 0.5),
            None,
            "one attempt, no retry"
        );
    }
}
