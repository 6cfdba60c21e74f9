//! A sensor's decision for given events without acting on it: what `riposte sensor test`
//! prints and the console's "test this sensor against this event" shows.
//!
//! It runs the server's own decision (`events::sensor::decide`), one event per dependency in
//! the order the dependencies are listed, so what it reports is what a server would do.

use std::collections::BTreeMap;

use events::Event;
use events::sensor::{Firing, Incoming, TriggerResult, Waiting, decide};
use serde_json::{Value, json};
use spec::sensor::CompileError;

/// The report: `{"sensor", "dependencies": [{name, matched, reasons}], "triggers": [{name,
/// fires, conditions, type, parameters?, resource?, settings?}]}`. `for_all` is the event for
/// every dependency without its own in `per_dependency`. A sensor that does not compile is
/// the compile error (lint reports it with positions first).
pub fn dry_run(
    sensor: &Value,
    for_all: Option<&Event>,
    per_dependency: &[(String, Event)],
) -> Result<Value, CompileError> {
    let mut sensor_value = sensor.clone();
    if sensor_value["metadata"]["namespace"].is_null() {
        sensor_value["metadata"]["namespace"] = json!("default");
    }
    let compiled = spec::sensor::compile_sensor(&sensor_value)?;
    let mut waiting = Waiting::new();
    let mut dep_reports: Vec<Value> = Vec::new();
    let mut fired: Vec<Firing> = Vec::new();
    let mut waits: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (i, d) in compiled.dependencies.iter().enumerate() {
        let dname = d.name.clone();
        let event = per_dependency
            .iter()
            .find(|(n, _)| *n == dname)
            .map(|(_, e)| e)
            .or(for_all);
        let Some(event) = event else {
            dep_reports.push(json!({"name": dname, "matched": false, "reasons": ["no event given for this dependency"]}));
            continue;
        };
        let incoming = Incoming {
            seq: i as i64 + 1,
            namespace: compiled.namespace.clone(),
            event_source: d.event_source_name.clone(),
            event_name: d.event_name.clone(),
            event: event.clone(),
        };
        let decision = decide(&compiled, &waiting, &incoming);
        if let Some(r) = decision.dependencies.iter().find(|r| r.name == dname) {
            dep_reports.push(
                json!({"name": dname, "eventSource": d.event_source_name, "eventName": d.event_name,
                "matched": r.verdict.matched, "reasons": r.verdict.reasons}),
            );
        }
        for (trigger, dep, seq) in &decision.state {
            let slot = waiting.entry(trigger.clone()).or_default();
            match seq {
                Some(_) => {
                    slot.insert(dep.clone(), incoming.clone());
                }
                None => {
                    slot.remove(dep);
                }
            }
        }
        for t in decision.triggers {
            match t {
                TriggerResult::Fire(f) => {
                    waits.remove(&f.trigger);
                    fired.push(*f);
                }
                TriggerResult::Wait { trigger, have, .. } => {
                    waits.insert(trigger, have);
                }
            }
        }
    }
    let mut trigger_reports = Vec::new();
    for t in &compiled.triggers {
        let tpl = &t.template;
        let tname = t.name.as_str();
        let ty = t
            .kind
            .as_deref()
            .filter(|k| spec::sensor::TRIGGER_TYPES.contains(k));
        let firing = fired.iter().find(|f| f.trigger == tname);
        let mut entry = json!({"name": tname, "fires": firing.is_some(),
            "conditions": tpl["conditions"].as_str().unwrap_or("all dependencies"), "type": ty});
        if let Some(have) = waits.get(tname) {
            entry["waitingWith"] = json!(have);
        }
        if let Some(f) = firing {
            entry["parameters"] = json!(f.notes);
            entry["idempotencyKey"] = json!(f.key);
            if !f.resource.is_null() {
                entry["operation"] = ty
                    .map(|ty| tpl[ty]["operation"].clone())
                    .unwrap_or_default();
                entry["resource"] = f.resource.clone();
            } else {
                entry["settings"] = ty.map(|ty| f.template[ty].clone()).unwrap_or_default();
            }
        }
        trigger_reports.push(entry);
    }
    Ok(json!({"sensor": compiled.name, "dependencies": dep_reports,
           "triggers": trigger_reports}))
}
