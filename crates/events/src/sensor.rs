//! One sensor's decision about one event: which dependencies it matches (after their
//! `transform`) and why, which triggers that completes (trigger `conditions` over the latest
//! matching event per dependency, kept per trigger), and for each firing the resolved trigger
//! template, the object it creates and the idempotency key that makes it happen once.
//!
//! Pure: the state comes in (the events each trigger is waiting with) and the updates to it
//! go out, so the server stores them with the decision and `riposte sensor test` calls the
//! same function.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use spec::sensor::{CompiledSensor, Dependency, Transform, Trigger};

use crate::{Event, Verdict, apply_parameters, evaluate_dependency};

/// An event as the sensor core sees it: where it came from and its stored sequence number.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    pub seq: i64,
    pub namespace: String,
    pub event_source: String,
    pub event_name: String,
    pub event: Event,
}

/// The events each trigger has matched and is waiting with (its conditions did not hold yet):
/// trigger name → dependency → event.
pub type Waiting = BTreeMap<String, BTreeMap<String, Incoming>>;

/// What a sensor decided about one event.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The dependencies on this event's source and name, with their verdicts.
    pub dependencies: Vec<DependencyResult>,
    /// Per trigger that a matched dependency feeds: fire, or wait for more.
    pub triggers: Vec<TriggerResult>,
    /// How the waiting state changes: `(trigger, dependency, Some(event seq))` to remember,
    /// `None` to forget.
    pub state: Vec<(String, String, Option<i64>)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DependencyResult {
    pub name: String,
    pub verdict: Verdict,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TriggerResult {
    Fire(Box<Firing>),
    /// The trigger's conditions do not hold yet; `have` are the dependencies it has events for.
    Wait {
        trigger: String,
        conditions: String,
        have: Vec<String>,
    },
}

/// What kind of effect a trigger has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerKind {
    /// `argoWorkflow` (operation `submit`, `submit-from`, `resubmit`, `resume`, `retry`,
    /// `suspend`, `terminate`, `stop`), or a `k8s` trigger whose object is a Workflow.
    ArgoWorkflow {
        operation: String,
    },
    /// `k8s` create/update/patch/delete of any other object.
    K8s {
        operation: String,
    },
    Http,
    Log,
    /// A trigger type Riposte does not carry out (lint warned about it).
    Unsupported(String),
}

/// A trigger that fires.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub trigger: String,
    pub kind: TriggerKind,
    /// The trigger template after the trigger-level `parameters`.
    pub template: Value,
    /// The object to create/patch/delete (Workflow, any Kubernetes object) or, for `http`,
    /// the JSON payload; after the template's own `parameters`.
    pub resource: Value,
    /// One line per parameter applied.
    pub notes: Vec<String>,
    /// The dependency events it fires with.
    pub events: Vec<(String, i64)>,
    /// `sensor:<name>/<trigger>/<seq>[,<seq>…]` (submit scopes it to the namespace): the
    /// same firing, however often it is computed (redelivery, another replica), has the same
    /// key.
    pub key: String,
    /// The dedupe window's key and length, when the trigger has one (Riposte's `dedupe`).
    pub dedupe: Option<(String, i64)>,
}

/// Decides what `sensor` does with `incoming`, given the events its triggers wait with.
pub fn decide(sensor: &CompiledSensor, waiting: &Waiting, incoming: &Incoming) -> Decision {
    let all_names = sensor.dependency_names();
    let mut decision = Decision {
        dependencies: Vec::new(),
        triggers: Vec::new(),
        state: Vec::new(),
    };
    if !sensor.namespace.is_empty() && sensor.namespace != incoming.namespace {
        return decision;
    }
    // Dependencies on this event's source and name, each with the event as its transform
    // leaves it.
    let mut matched: BTreeMap<String, Incoming> = BTreeMap::new();
    for dep in &sensor.dependencies {
        if dep.event_source_name != incoming.event_source || dep.event_name != incoming.event_name {
            continue;
        }
        let (event, transform_note) = transformed(dep, &incoming.event);
        let mut verdict = match &event {
            Some(e) => evaluate_dependency(dep, e),
            None => Verdict {
                matched: false,
                reasons: Vec::new(),
            },
        };
        if let Some(note) = transform_note {
            verdict.reasons.insert(0, note);
        }
        if verdict.matched
            && let Some(event) = event
        {
            matched.insert(
                dep.name.clone(),
                Incoming {
                    event,
                    ..incoming.clone()
                },
            );
        }
        decision.dependencies.push(DependencyResult {
            name: dep.name.clone(),
            verdict,
        });
    }
    if matched.is_empty() {
        return decision;
    }

    for trigger in &sensor.triggers {
        let feeds = &trigger.feeds;
        if !matched.keys().any(|m| feeds.contains(m)) {
            continue;
        }
        let mut have: BTreeMap<String, Incoming> = waiting
            .get(&trigger.name)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|(d, _)| feeds.contains(d))
            .collect();
        for (dep, ev) in &matched {
            if feeds.contains(dep) {
                have.insert(dep.clone(), ev.clone());
            }
        }
        let satisfied: Vec<String> = have.keys().cloned().collect();
        let holds = match &trigger.conditions {
            Some(c) => c.holds(&satisfied),
            None => all_names.iter().all(|d| satisfied.contains(d)),
        };
        if holds {
            // The events it fires with are consumed: the trigger waits afresh.
            for dep in waiting
                .get(&trigger.name)
                .into_iter()
                .flat_map(|w| w.keys())
            {
                decision
                    .state
                    .push((trigger.name.clone(), dep.clone(), None));
            }
            decision.triggers.push(TriggerResult::Fire(Box::new(firing(
                sensor, trigger, &have,
            ))));
        } else {
            for (dep, ev) in &matched {
                if feeds.contains(dep) {
                    decision
                        .state
                        .push((trigger.name.clone(), dep.clone(), Some(ev.seq)));
                }
            }
            decision.triggers.push(TriggerResult::Wait {
                trigger: trigger.name.clone(),
                conditions: trigger
                    .template
                    .get("conditions")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| all_names.join(" && ")),
                have: satisfied,
            });
        }
    }
    decision
}

/// The event as a dependency's `transform` (jq or Lua) leaves it (`None` when the transform fails),
/// with a note saying what the transform did.
fn transformed(dep: &Dependency, event: &Event) -> (Option<Event>, Option<String>) {
    let with = |data| {
        Some(Event {
            data,
            ..event.clone()
        })
    };
    match &dep.transform {
        None => (Some(event.clone()), None),
        Some(Transform::Jq(program)) => match program.transform(&event.data) {
            Ok(data) => (
                with(data),
                Some(format!("transform.jq {:?} applied", program.source())),
            ),
            Err(e) => (None, Some(format!("transform: {e}, so it does not match"))),
        },
        Some(Transform::Lua(script)) => match script.transform(&event.data) {
            Ok(data) => (with(data), Some("transform.script applied".into())),
            Err(e) => (
                None,
                Some(format!("transform.script: {e}, so it does not match")),
            ),
        },
    }
}

fn firing(sensor: &CompiledSensor, trigger: &Trigger, have: &BTreeMap<String, Incoming>) -> Firing {
    let events: Vec<(String, Event)> = have
        .iter()
        .map(|(d, i)| (d.clone(), i.event.clone()))
        .collect();
    let (template, mut notes) =
        apply_parameters(trigger.template.clone(), &trigger.parameters, &events);
    // The type's own parameters, compiled with the sensor unless the trigger-level ones
    // rewrote them just now.
    let names = sensor.dependency_names();
    let type_parameters =
        |body: &Value, list: &str, notes: &mut Vec<String>| match &trigger.type_parameters {
            Some(p) => p.clone(),
            None => spec::sensor::compile_parameters(&body[list], &names).unwrap_or_else(|e| {
                notes.push(format!(
                    "the rewritten {list} do not compile ({e}); none applied"
                ));
                Vec::new()
            }),
        };
    let (kind, resource, resource_notes) = if let Some(w) = template.get("argoWorkflow") {
        let operation = w["operation"].as_str().unwrap_or("submit").to_string();
        let params = type_parameters(w, "parameters", &mut notes);
        let (r, n) = apply_parameters(w["source"]["resource"].clone(), &params, &events);
        (TriggerKind::ArgoWorkflow { operation }, r, n)
    } else if let Some(k) = template.get("k8s") {
        let operation = k["operation"].as_str().unwrap_or("create").to_string();
        let params = type_parameters(k, "parameters", &mut notes);
        let (r, n) = apply_parameters(k["source"]["resource"].clone(), &params, &events);
        let is_workflow = r["kind"] == "Workflow" && operation == "create";
        if is_workflow {
            (
                TriggerKind::ArgoWorkflow {
                    operation: "submit".into(),
                },
                r,
                n,
            )
        } else {
            (TriggerKind::K8s { operation }, r, n)
        }
    } else if let Some(h) = template.get("http") {
        let params = type_parameters(h, "payload", &mut notes);
        let (r, n) = apply_parameters(json!({}), &params, &events);
        (TriggerKind::Http, r, n)
    } else if template.get("log").is_some() {
        (TriggerKind::Log, Value::Null, Vec::new())
    } else {
        let other = trigger.kind.clone().unwrap_or_else(|| "(none)".into());
        (TriggerKind::Unsupported(other), Value::Null, Vec::new())
    };
    notes.extend(resource_notes);
    let seqs: Vec<String> = have.values().map(|i| i.seq.to_string()).collect();
    let key = format!("sensor:{}/{}/{}", sensor.name, trigger.name, seqs.join(","));
    let dedupe = trigger
        .dedupe
        .as_ref()
        .and_then(|d| dedupe_key(d, have, &mut notes));
    Firing {
        trigger: trigger.name.clone(),
        kind,
        template,
        resource,
        notes,
        events: have.iter().map(|(d, i)| (d.clone(), i.seq)).collect(),
        key,
        dedupe,
    }
}

/// Riposte's trigger `dedupe: {key: EXPR, window: DURATION}`: the key is an expr-lang
/// expression over the firing's events (each dependency's data by its name, and `event`, the
/// data of the latest one).
fn dedupe_key(
    dedupe: &spec::sensor::Dedupe,
    have: &BTreeMap<String, Incoming>,
    notes: &mut Vec<String>,
) -> Option<(String, i64)> {
    let window = dedupe.window_ms;
    let mut env = serde_json::Map::new();
    let mut latest: Option<&Incoming> = None;
    for (dep, i) in have {
        env.insert(dep.clone(), i.event.data.clone());
        if latest.is_none_or(|l| l.seq < i.seq) {
            latest = Some(i);
        }
    }
    if let Some(l) = latest {
        env.insert("event".into(), l.event.data.clone());
    }
    match expr::eval(&dedupe.key, &Value::Object(env)) {
        Ok(v) => {
            let key = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            notes.push(format!("dedupe key {key:?} for {window} ms"));
            Some((key, window))
        }
        Err(e) => {
            // A key that cannot be computed must not suppress the response: fire, and say so.
            notes.push(format!(
                "dedupe key {:?} failed ({e}); firing without dedupe",
                dedupe.source
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incoming(seq: i64, name: &str, body: Value) -> Incoming {
        Incoming {
            seq,
            namespace: "default".into(),
            event_source: "webhook".into(),
            event_name: name.into(),
            event: Event {
                id: format!("e{seq}"),
                source: "test".into(),
                kind: "webhook".into(),
                subject: String::new(),
                time: "2026-12-01T00:00:00Z".into(),
                datacontenttype: "application/json".into(),
                data: json!({"header": {}, "body": body}),
            },
        }
    }

    fn sensor(triggers: Value) -> Value {
        json!({
            "metadata": {"name": "s", "namespace": "default"},
            "spec": {
                "dependencies": [
                    {"name": "a", "eventSourceName": "webhook", "eventName": "a",
                     "filters": {"data": [{"path": "body.go", "type": "bool", "value": ["true"]}]}},
                    {"name": "b", "eventSourceName": "webhook", "eventName": "b"},
                ],
                "triggers": triggers,
            }
        })
    }

    fn compiled(v: &Value) -> CompiledSensor {
        spec::sensor::compile_sensor(v).unwrap_or_else(|e| panic!("{e}"))
    }

    fn apply(waiting: &mut Waiting, d: &Decision, events: &[Incoming]) {
        for (t, dep, seq) in &d.state {
            match seq {
                Some(s) => {
                    let e = events.iter().find(|e| e.seq == *s).unwrap().clone();
                    waiting.entry(t.clone()).or_default().insert(dep.clone(), e);
                }
                None => {
                    waiting.entry(t.clone()).or_default().remove(dep);
                }
            }
        }
    }

    fn fired(d: &Decision) -> Vec<String> {
        d.triggers
            .iter()
            .filter_map(|t| match t {
                TriggerResult::Fire(f) => Some(f.key.clone()),
                TriggerResult::Wait { .. } => None,
            })
            .collect()
    }

    #[test]
    fn all_dependencies_by_default_then_consumed() {
        let s = sensor(json!([{"template": {"name": "t", "log": {}}}]));
        let events = [
            incoming(1, "a", json!({"go": true})),
            incoming(2, "b", json!({})),
            incoming(3, "b", json!({})),
        ];
        let mut waiting = Waiting::new();
        let d1 = decide(&compiled(&s), &waiting, &events[0]);
        assert!(fired(&d1).is_empty());
        apply(&mut waiting, &d1, &events);
        let d2 = decide(&compiled(&s), &waiting, &events[1]);
        assert_eq!(fired(&d2), vec!["sensor:s/t/1,2"]);
        apply(&mut waiting, &d2, &events);
        // `a` was consumed by the firing: `b` alone waits again.
        let d3 = decide(&compiled(&s), &waiting, &events[2]);
        assert!(fired(&d3).is_empty());
    }

    #[test]
    fn conditions_or_and_filters() {
        let s = sensor(json!([
            {"template": {"name": "either", "conditions": "a || b", "log": {}}},
            {"template": {"name": "only-a", "conditions": "a", "log": {}}},
        ]));
        let waiting = Waiting::new();
        let d = decide(&compiled(&s), &waiting, &incoming(7, "b", json!({})));
        assert_eq!(fired(&d), vec!["sensor:s/either/7"]);
        // A filtered-out `a` feeds nothing.
        let d = decide(
            &compiled(&s),
            &waiting,
            &incoming(8, "a", json!({"go": false})),
        );
        assert!(fired(&d).is_empty());
        assert!(!d.dependencies[0].verdict.matched);
        let d = decide(
            &compiled(&s),
            &waiting,
            &incoming(9, "a", json!({"go": true})),
        );
        assert_eq!(fired(&d), vec!["sensor:s/either/9", "sensor:s/only-a/9"]);
    }

    #[test]
    fn parameters_transform_and_dedupe() {
        let mut s = sensor(json!([{
            "template": {"name": "wf", "conditions": "b", "argoWorkflow": {"operation": "submit", "source": {"resource": {
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"generateName": "isolate-"},
                "spec": {"workflowTemplateRef": {"name": "isolate"}, "arguments": {"parameters": [{"name": "pod", "value": "x"}]}}
            }}, "parameters": [{"src": {"dependencyName": "b", "dataKey": "body.pod"}, "dest": "spec.arguments.parameters.0.value"}]}},
            "dedupe": {"key": "event.body.pod", "window": "30s"},
        }]));
        s["spec"]["dependencies"][1]["transform"] = json!({"jq": ".body.pod |= ascii_upcase"});
        let d = decide(
            &compiled(&s),
            &Waiting::new(),
            &incoming(3, "b", json!({"pod": "web-1"})),
        );
        let TriggerResult::Fire(f) = &d.triggers[0] else {
            panic!("fires: {d:?}")
        };
        assert_eq!(
            f.kind,
            TriggerKind::ArgoWorkflow {
                operation: "submit".into()
            }
        );
        assert_eq!(
            f.resource["spec"]["arguments"]["parameters"][0]["value"],
            "WEB-1"
        );
        assert_eq!(f.dedupe, Some(("WEB-1".into(), 30_000)));
        // The same through Argo's Lua transform.
        s["spec"]["dependencies"][1]["transform"] = json!({"script": "event.body.pod = string.upper(event.body.pod) .. '-lua'\nreturn event"});
        let d = decide(
            &compiled(&s),
            &Waiting::new(),
            &incoming(4, "b", json!({"pod": "web-1"})),
        );
        let TriggerResult::Fire(f) = &d.triggers[0] else {
            panic!("fires: {d:?}")
        };
        assert_eq!(
            f.resource["spec"]["arguments"]["parameters"][0]["value"],
            "WEB-1-lua"
        );
    }

    #[test]
    fn other_namespaces_and_sources_are_ignored() {
        let s = sensor(json!([{"template": {"name": "t", "log": {}}}]));
        let mut e = incoming(1, "b", json!({}));
        e.namespace = "other".into();
        assert_eq!(
            decide(&compiled(&s), &Waiting::new(), &e)
                .dependencies
                .len(),
            0
        );
        let mut e = incoming(1, "b", json!({}));
        e.event_source = "calendar".into();
        assert_eq!(
            decide(&compiled(&s), &Waiting::new(), &e)
                .dependencies
                .len(),
            0
        );
    }

    fn fold(s: &Value, events: &[Incoming]) -> Vec<Decision> {
        let mut waiting = Waiting::new();
        events
            .iter()
            .map(|e| {
                let d = decide(&compiled(s), &waiting, e);
                apply(&mut waiting, &d, events);
                d
            })
            .collect()
    }

    proptest::proptest! {
        /// The same events in the same order give the same decisions (so `sensor test` and
        /// `event get` explain what the server did), and an `a && b` trigger never fires more
        /// often than the scarcer dependency matched.
        #[test]
        fn decisions_are_a_deterministic_fold(
            seq in proptest::collection::vec((proptest::bool::ANY, proptest::bool::ANY), 0..40)
        ) {
            let s = sensor(json!([
                {"template": {"name": "both", "log": {}}},
                {"template": {"name": "any", "conditions": "a || b", "log": {}}},
            ]));
            let events: Vec<Incoming> = seq
                .iter()
                .enumerate()
                .map(|(i, (is_a, go))| incoming(i as i64 + 1, if *is_a { "a" } else { "b" }, json!({"go": go})))
                .collect();
            let first = fold(&s, &events);
            proptest::prop_assert_eq!(&first, &fold(&s, &events));
            let fired = |name: &str| first.iter().flat_map(|d| &d.triggers).filter(|t| matches!(t, TriggerResult::Fire(f) if f.trigger == name)).count();
            let a = seq.iter().filter(|(is_a, go)| *is_a && *go).count();
            let b = seq.iter().filter(|(is_a, _)| !*is_a).count();
            proptest::prop_assert!(fired("both") <= a.min(b));
            proptest::prop_assert_eq!(fired("any"), a + b);
        }
    }
}
