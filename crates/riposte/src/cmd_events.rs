//! Commands for the events half on a server: sensors, event sources, the event log.

#[allow(unused_imports)]
use crate::*;

use serde_json::{Value, json};

/// API collection and request-body key of an event object kind.
fn collection(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "Sensor" => ("sensors", "sensor"),
        "EventSource" => ("event-sources", "eventSource"),
        _ => ("workflow-event-bindings", "workflowEventBinding"),
    }
}

/// `riposte sensor|eventsource apply|list|get|delete`.
pub(crate) fn object_cmd(cmd: ObjectCmd, kind: &str, remote: &Remote) -> Result<ExitCode> {
    let c = remote.client();
    let (plural, key) = collection(kind);
    let base = format!("/api/v1/{plural}/{}", remote.namespace);
    match cmd {
        ObjectCmd::Apply { file } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            // Lint locally first: errors come with file:line:col, before anything is sent.
            let name = file.display().to_string();
            let (loaded, mut diags) = spec::load_events(&name, &text);
            diags.extend(spec::lint_events(&loaded));
            fail_on_lint_errors(&diags, &name, &name)?;
            for doc in client::documents_of_kind(&file, kind)? {
                let obj_name = doc["metadata"]["name"].as_str().unwrap_or("").to_string();
                let exists = c.call("GET", &format!("{base}/{obj_name}"), None).is_ok();
                if exists {
                    c.call(
                        "PUT",
                        &format!("{base}/{obj_name}"),
                        Some(&json!({"namespace": remote.namespace, "name": obj_name, key: doc})),
                    )?;
                    println!("{} {obj_name} configured", kind.to_lowercase());
                } else {
                    c.call(
                        "POST",
                        &base,
                        Some(&json!({"namespace": remote.namespace, key: doc})),
                    )?;
                    println!("{} {obj_name} created", kind.to_lowercase());
                }
            }
        }
        ObjectCmd::List => {
            let v = c.call("GET", &base, None)?;
            for o in v["items"].as_array().into_iter().flatten() {
                println!("{}", o["metadata"]["name"].as_str().unwrap_or(""));
            }
        }
        ObjectCmd::Get { name } => print!(
            "{}",
            yaml_out::to_yaml(&c.call("GET", &format!("{base}/{name}"), None)?)
        ),
        ObjectCmd::Delete { name } => {
            c.call("DELETE", &format!("{base}/{name}"), None)?;
            println!("{} {name} deleted", kind.to_lowercase());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `riposte event list|get|redeliver`.
pub(crate) fn event_cmd(cmd: EventCmd, remote: &Remote) -> Result<ExitCode> {
    let c = remote.client();
    match cmd {
        EventCmd::List {
            event_source,
            limit,
            all_namespaces,
        } => {
            let mut path = format!("/api/v1/riposte/events?limit={limit}");
            if !all_namespaces {
                path.push_str(&format!("&namespace={}", remote.namespace));
            }
            if let Some(es) = event_source {
                path.push_str(&format!("&eventSource={es}"));
            }
            let v = c.call("GET", &path, None)?;
            println!(
                "{:<8} {:<20} {:<24} {:<24} {:<28} PROCESSED",
                "SEQ", "RECEIVED", "EVENTSOURCE/EVENT", "SOURCE", "TYPE"
            );
            for e in v["items"].as_array().into_iter().flatten() {
                println!(
                    "{:<8} {:<20} {:<24} {:<24} {:<28} {}",
                    e["seq"],
                    e["receivedAt"].as_str().unwrap_or(""),
                    format!(
                        "{}/{}",
                        e["eventSource"].as_str().unwrap_or(""),
                        e["eventName"].as_str().unwrap_or("")
                    ),
                    e["envelope"]["source"].as_str().unwrap_or(""),
                    e["envelope"]["type"].as_str().unwrap_or(""),
                    if e["processedAt"].is_null() {
                        "no"
                    } else {
                        "yes"
                    }
                );
            }
        }
        EventCmd::Get { seq, json } => {
            let v = c.call("GET", &format!("/api/v1/riposte/events/{seq}"), None)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_event(&v);
            }
        }
        EventCmd::Redeliver { seq } => {
            let v = c.call(
                "POST",
                &format!("/api/v1/riposte/events/{seq}/redeliver"),
                None,
            )?;
            print_event(&v);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_event(v: &Value) {
    let env = &v["envelope"];
    println!(
        "Event {}  ({}/{} in {})",
        v["seq"],
        s(&v["eventSource"]),
        s(&v["eventName"]),
        s(&v["namespace"])
    );
    println!("  id:       {}", s(&env["id"]));
    println!("  source:   {}", s(&env["source"]));
    println!("  type:     {}", s(&env["type"]));
    println!("  subject:  {}", s(&env["subject"]));
    println!("  time:     {}", s(&env["time"]));
    println!("  received: {}", s(&v["receivedAt"]));
    println!(
        "  processed: {}",
        v["processedAt"]
            .as_str()
            .unwrap_or("not yet (being processed, or waiting to be re-delivered)")
    );
    let sensors = v["sensors"].as_array().cloned().unwrap_or_default();
    if sensors.is_empty() {
        if v["processedAt"].is_null() {
            // A firing's workflow is committed before the decision that names it: in that
            // window the workflow exists and the event shows no decision yet.
            println!(
                "\nNo sensor has recorded a decision yet (a workflow it fired may already exist)."
            );
        } else {
            println!("\nNo sensor listens to this event source and name.");
        }
    }
    for sensor in sensors {
        println!("\nSensor {}", s(&sensor["sensor"]));
        for d in sensor["dependencies"].as_array().into_iter().flatten() {
            let mark = if d["matched"] == true {
                "matched"
            } else {
                "did not match"
            };
            println!("  dependency {}: {mark}", s(&d["name"]));
            for r in d["reasons"].as_array().into_iter().flatten() {
                println!("    - {}", s(r));
            }
        }
        for t in sensor["triggers"].as_array().into_iter().flatten() {
            let state = if !t["waiting"].is_null() {
                format!(
                    "waiting for {} (has {})",
                    s(&t["waiting"]["conditions"]),
                    t["waiting"]["have"]
                )
            } else if t["deduplicated"] == true {
                "not fired: the same alert fired within the dedupe window".into()
            } else if let Some(e) = t["error"].as_str() {
                format!("FAILED: {e}")
            } else if t["existing"] == true {
                format!("fired before: {}", s(&t["effect"]))
            } else {
                format!("fired: {}", s(&t["effect"]))
            };
            println!("  trigger {}: {state}", s(&t["trigger"]));
            for n in t["notes"].as_array().into_iter().flatten() {
                println!("    - {}", s(n));
            }
        }
    }
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
