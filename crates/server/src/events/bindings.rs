//! WorkflowEventBindings (Argo Workflows' `POST /api/v1/events/{namespace}/{discriminator}`):
//! the API stores the request as an event of the `workflow-event-bindings` source, and the
//! processor — the same one that asks sensors — matches it against the namespace's bindings
//! and submits their templates. A submit that fails for a transient reason, or that a crash
//! interrupts, leaves the event unprocessed and is delivered again until it commits; its
//! idempotency key (binding and event) makes it one workflow.

use std::sync::Arc;

use serde_json::{Value, json};
use spec::binding::{BindingValue, CompiledBinding};
use store::{EventObject, EventRecord};

use super::{BINDING, Events, EventsError};
use crate::controller::ControlError;
use crate::submit::{Origin, SubmitOutcome, SubmitRequest};

/// The event source name Argo's event endpoint stores its events under.
pub const BINDING_EVENT_SOURCE: &str = "workflow-event-bindings";

/// What one binding asks for an event: its template and parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingSubmit {
    pub template: String,
    pub cluster_scope: bool,
    pub parameters: Vec<(String, String)>,
}

/// Whether `binding`'s `spec.event.selector` holds for the event (`payload`, `metadata`,
/// `discriminator`), and if so what it submits; an error names the binding and the
/// expression that could not be evaluated. A selector that cannot be evaluated for this
/// event (or is not a boolean) does not hold.
pub fn submission(binding: &CompiledBinding, env: &Value) -> Result<Option<BindingSubmit>, String> {
    let matched = expr::eval(&binding.selector, env).is_ok_and(|v| v == Value::Bool(true));
    if !matched {
        return Ok(None);
    }
    let mut parameters = Vec::new();
    for p in &binding.parameters {
        let value = match &p.value {
            BindingValue::Fixed(v) => v.clone(),
            BindingValue::Event { source, expr } => match expr::eval(expr, env) {
                Ok(Value::String(s)) => s,
                Ok(other) => other.to_string(),
                Err(err) => {
                    return Err(format!(
                        "binding {}: parameter {}: valueFrom.event {:?}: {err}",
                        binding.name,
                        p.name,
                        source.trim()
                    ));
                }
            },
        };
        parameters.push((p.name.clone(), value));
    }
    Ok(Some(BindingSubmit {
        template: binding.template.clone(),
        cluster_scope: binding.cluster_scope,
        parameters,
    }))
}

/// The decisions' sensor column for a binding.
pub fn decision_key(namespace: &str, binding: &str) -> String {
    format!("{namespace}/binding:{binding}")
}

impl Events {
    /// A stored binding, compiled once per stored body.
    fn compiled_binding(&self, b: &EventObject) -> Result<Arc<CompiledBinding>, String> {
        let key = format!("{}/{}", b.namespace, b.name);
        let mut cache = match self.inner.bindings.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Some((body, compiled)) = cache.get(&key)
            && *body == b.body
        {
            return Ok(compiled.clone());
        }
        let compiled =
            Arc::new(spec::binding::compile_binding(&b.body).map_err(|e| e.to_string())?);
        cache.insert(key, (b.body.clone(), compiled.clone()));
        Ok(compiled)
    }

    /// Matches an event of Argo's event endpoint against its namespace's bindings, submits
    /// what matched and records one decision per binding. Returns whether it is done.
    pub(super) async fn dispatch_bindings(&self, rec: &EventRecord) -> Result<bool, EventsError> {
        let c = self.controller();
        let store = c.store();
        let bindings = store
            .list_event_objects(BINDING, Some(&rec.namespace))
            .await?;
        // Deleted bindings leave the cache.
        if let Ok(mut cache) = self.inner.bindings.lock() {
            let prefix = format!("{}/", rec.namespace);
            cache.retain(|k, _| {
                k.strip_prefix(&prefix)
                    .is_none_or(|name| bindings.iter().any(|b| b.name == name))
            });
        }
        let data = &rec.envelope["data"];
        let env = json!({
            "payload": data["payload"],
            "metadata": data["metadata"],
            "discriminator": data["discriminator"],
        });
        let caller = &data["caller"];
        let mut done = true;
        let mut writes = Vec::new();
        for b in &bindings {
            let (matched, trigger, ok) = match self
                .compiled_binding(b)
                .and_then(|compiled| submission(&compiled, &env))
            {
                Ok(None) => (false, None, true),
                Err(error) => (
                    true,
                    Some(json!({"trigger": "submit", "fired": false, "error": error})),
                    true,
                ),
                Ok(Some(s)) => {
                    let mut req = SubmitRequest::new(
                        &rec.namespace,
                        Origin::Template {
                            name: s.template,
                            cluster: s.cluster_scope,
                        },
                        caller["name"].as_str().unwrap_or("workflow-event-binding"),
                        caller["source"].as_str().unwrap_or("api"),
                    );
                    req.parameters = s.parameters;
                    req.idempotency_key = Some(format!("binding:{}/{}", b.name, rec.seq));
                    req.labels.insert(
                        "workflows.argoproj.io/workflow-event-binding".into(),
                        b.name.clone(),
                    );
                    crate::failpoint::reached(|| "bindings.before-submit".into());
                    match c.submit(req).await {
                        Ok(SubmitOutcome::Created { name, .. }) => (
                            true,
                            Some(
                                json!({"trigger": "submit", "fired": true, "existing": false,
                                "effect": format!("workflows/{}/{name}", rec.namespace)}),
                            ),
                            true,
                        ),
                        Ok(SubmitOutcome::Existing { name, .. }) => (
                            true,
                            Some(json!({"trigger": "submit", "fired": true, "existing": true,
                                "effect": format!("workflows/{}/{name}", rec.namespace)})),
                            true,
                        ),
                        Ok(SubmitOutcome::CronFiringTaken) => (true, None, true),
                        // The store did not answer: delivered again later.
                        Err(ControlError::Store(e)) => {
                            tracing::warn!(binding = %b.name, seq = rec.seq, error = %store::chain(&e), "submitting for a workflow event binding failed; it is retried");
                            (
                                true,
                                Some(
                                    json!({"trigger": "submit", "fired": false, "error": store::chain(&e)}),
                                ),
                                false,
                            )
                        }
                        Err(e) => (
                            true,
                            Some(
                                json!({"trigger": "submit", "fired": false, "error": e.to_string()}),
                            ),
                            true,
                        ),
                    }
                }
            };
            done &= ok;
            writes.push((b.name.clone(), matched, trigger, ok));
        }
        let now = crate::driver::now_ms();
        let last = writes.len().saturating_sub(1);
        for (i, (name, matched, trigger, ok)) in writes.into_iter().enumerate() {
            let reasons = if matched {
                vec![]
            } else {
                vec!["spec.event.selector is not true for this event".to_string()]
            };
            let decision = json!({
                "final": ok,
                "dependencies": [{"name": "selector", "matched": matched, "reasons": reasons}],
                "triggers": trigger.into_iter().collect::<Vec<_>>(),
            });
            self.inner
                .decision_writer
                .call(store::DecisionWrite {
                    decision: store::DecisionRecord {
                        event_seq: rec.seq,
                        sensor: decision_key(&rec.namespace, &name),
                        at: now,
                        decision,
                    },
                    dependencies: Vec::new(),
                    processed_at: (done && i == last).then_some(now),
                })
                .await
                .ok_or_else(|| {
                    EventsError::Bus("the decision writer has stopped (shutting down)".into())
                })??;
        }
        if done && bindings.is_empty() {
            store.set_event_processed(rec.seq, Some(now)).await?;
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(selector: &str, parameters: Value) -> CompiledBinding {
        spec::binding::compile_binding(&json!({"metadata": {"name": "on-alert"},
            "spec": {"event": {"selector": selector}, "submit": {
                "workflowTemplateRef": {"name": "isolate-pod"},
                "arguments": {"parameters": parameters}}}}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn selectors_choose_and_parameters_come_from_the_event() {
        let env = json!({"payload": {"severity": "critical", "pod": "web-1", "n": 3}, "metadata": {}, "discriminator": "scanner"});
        let params = json!([
            {"name": "pod", "valueFrom": {"event": "payload.pod"}},
            {"name": "n", "valueFrom": {"event": "payload.n"}},
            {"name": "fixed", "value": "x"}
        ]);
        let table = [
            (
                "payload.severity == 'critical' && discriminator == 'scanner'",
                true,
            ),
            ("payload.severity == 'low'", false),
            ("payload.n", false),
            ("payload.missing.deeper == 1", false),
        ];
        for (selector, matched) in table {
            let got = submission(&binding(selector, params.clone()), &env).expect("evaluates");
            assert_eq!(got.is_some(), matched, "{selector}");
        }
        let s = submission(&binding("true", params), &env)
            .expect("evaluates")
            .expect("matched");
        assert_eq!(s.template, "isolate-pod");
        assert!(!s.cluster_scope);
        let want = [("pod", "web-1"), ("n", "3"), ("fixed", "x")];
        assert_eq!(
            s.parameters,
            want.map(|(n, v)| (n.to_string(), v.to_string())).to_vec()
        );
        let bad = binding(
            "true",
            json!([{"name": "pod", "valueFrom": {"event": "payload.n / payload.severity"}}]),
        );
        let err = submission(&bad, &env).expect_err("a parameter that cannot be evaluated");
        assert!(err.contains("binding on-alert: parameter pod"), "{err}");
    }
}
