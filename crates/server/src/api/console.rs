//! What the web console reads beyond Argo's API (Riposte extensions): the audit log and its
//! verification, the approvals inbox across workflows, lint with positions over a rendered
//! YAML text, and a sensor's dry run against a stored event.
//!
//! Every handler reads through the same store and pure functions the CLI uses, so the
//! console never shows something the CLI would say differently.

use super::*;

#[derive(Debug, serde::Deserialize)]
pub(super) struct AuditQuery {
    /// `workflows/<ns>/<name>`, or just a workflow as `<ns>/<name>`.
    object: Option<String>,
    workflow: Option<String>,
    actor: Option<String>,
    /// RFC 3339 bounds on when the row was written.
    since: Option<String>,
    until: Option<String>,
    /// The next page: rows older than this sequence number.
    before: Option<i64>,
    limit: Option<i64>,
}

/// The audit log, newest first, filtered by object (or workflow), actor and time.
pub(super) async fn list_audit(
    State(c): State<Controller>,
    Query(q): Query<AuditQuery>,
) -> ApiResult {
    let object = match (&q.object, &q.workflow) {
        (Some(o), _) if !o.is_empty() => Some(o.clone()),
        (_, Some(w)) if !w.is_empty() => {
            let (ns, name) = w.split_once('/').ok_or_else(|| {
                ApiError::invalid(format!("workflow {w:?}: expected <namespace>/<name>"))
            })?;
            Some(format!("workflows/{ns}/{name}"))
        }
        _ => None,
    };
    let filter = store::AuditFilter {
        object,
        actor: q.actor.clone().filter(|a| !a.is_empty()),
        since: time_param("since", q.since.as_deref())?,
        until: time_param("until", q.until.as_deref())?,
        before_seq: q.before,
        newest_first: true,
        limit: q.limit.unwrap_or(200).clamp(1, 2000),
    };
    let rows = c.store().audit_list(&filter).await?;
    let next = if rows.len() as i64 == filter.limit {
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "seq": r.seq,
                "at": expr::time::rfc3339(r.entry.at),
                "actor": r.entry.actor,
                "action": r.entry.action,
                "object": r.entry.object,
                "source": r.entry.source,
                "details": r.entry.details,
                "hash": r.hash,
                "prevHash": r.prev_hash,
            })
        })
        .collect();
    Ok(Json(json!({"items": items, "before": next})))
}

/// Recomputes the whole chain: `{"rows": N, "ok": bool, "problems": [...]}`.
pub(super) async fn verify_audit(State(c): State<Controller>) -> ApiResult {
    let (rows, problems) = c.store().audit_verify().await?;
    Ok(Json(json!({
        "rows": rows,
        "ok": problems.is_empty(),
        "problems": problems.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    })))
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct ApprovalsQuery {
    namespace: Option<String>,
}

/// How many running workflows the inbox looks through: a response backlog, not an archive.
const INBOX_WORKFLOWS: i64 = 1000;

/// Every suspended node waiting for a person, across running workflows: what it asks for
/// (the values to supply, with their enums and defaults), its deadline, what the steps before
/// it found or would change (their messages and change reports), and the alert behind it.
pub(super) async fn list_approvals(
    State(e): State<crate::events::Events>,
    Query(q): Query<ApprovalsQuery>,
) -> ApiResult {
    let c = e.controller();
    let lq = store::ListQuery {
        namespace: q.namespace.clone().filter(|n| !n.is_empty()),
        phase: Some("Running".into()),
        limit: INBOX_WORKFLOWS,
        ..Default::default()
    };
    let mut items = Vec::new();
    for rec in c.store().list_workflows_page(&lq).await? {
        // The listed row is the workflow; only its nodes are read (none if it was deleted
        // since, and then nothing is pending).
        let nodes = c.store().nodes(&rec.uid).await?;
        let w = crate::controller::workflow_json(&rec, Some(nodes));
        items.extend(pending_approvals(&w));
    }
    // The alert behind each: the first event the sensor fired on, summarised.
    let store = c.store();
    for item in &mut items {
        let Some(seq) = item["eventSeqs"]
            .as_array()
            .and_then(|s| s.first())
            .and_then(Value::as_i64)
        else {
            continue;
        };
        if let Ok(ev) = store.get_event(seq).await {
            let env = &ev.envelope;
            item["event"] = json!({
                "seq": ev.seq,
                "source": env["source"],
                "type": env["type"],
                "subject": env["subject"],
                "time": env["time"],
                "data": env["data"],
            });
        }
    }
    Ok(Json(json!({"items": items})))
}

/// How much of a finished step's output the inbox shows.
const FINDING_BYTES: usize = 2048;

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The suspended nodes of one workflow (`GET` JSON with nodes) waiting for a decision. Pure.
pub(crate) fn pending_approvals(w: &Value) -> Vec<Value> {
    let ns = w["metadata"]["namespace"].as_str().unwrap_or("");
    let name = w["metadata"]["name"].as_str().unwrap_or("");
    let Some(nodes) = w["status"]["nodes"].as_object() else {
        return Vec::new();
    };
    let waiting: Vec<&Value> = nodes
        .values()
        .filter(|n| n["type"] == "Suspend" && n["phase"] == "Running")
        .collect();
    // Most running workflows wait for nobody: skip gathering what the others need.
    if waiting.is_empty() {
        return Vec::new();
    }
    let templates: Vec<&Value> = w["spec"]["templates"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(
            w["status"]["storedTemplates"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values()),
        )
        .collect();
    let events: Option<Vec<i64>> = w["metadata"]["annotations"]
        [crate::events::triggers::EVENTS_ANNOTATION]
        .as_str()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    // What the steps that finished found or would change: their messages and change reports.
    let mut findings: Vec<(&str, Value)> = nodes
        .values()
        .filter(|n| n["type"] == "Pod" && n["phase"] == "Succeeded")
        .map(|n| {
            let report = n["outputs"]["result"]
                .as_str()
                .and_then(|r| serde_json::from_str::<Value>(r).ok())
                .filter(|r| r.get("changes").is_some());
            (
                n["finishedAt"].as_str().unwrap_or(""),
                json!({
                    "node": n["displayName"],
                    "message": n["message"],
                    // What it printed, when it is not a change report (a check, a lookup).
                    "output": if report.is_none() {
                        n["outputs"]["result"]
                            .as_str()
                            .map(|r| truncate(r, FINDING_BYTES))
                    } else {
                        None
                    },
                    "change": report,
                }),
            )
        })
        .collect();
    findings.sort_by(|a, b| a.0.cmp(b.0));
    let findings: Vec<Value> = findings.into_iter().map(|(_, f)| f).collect();
    let mut out = Vec::new();
    for n in waiting {
        let tname = n["templateName"].as_str().unwrap_or("");
        let template = templates.iter().find(|t| t["name"] == tname);
        let started_ms = n["startedAt"]
            .as_str()
            .and_then(expr::time::parse_rfc3339)
            .map(|s| s * 1000);
        let deadline = template
            .and_then(|t| {
                t["suspend"]["duration"]
                    .as_str()
                    .map(str::to_string)
                    .or_else(|| t["suspend"]["duration"].as_i64().map(|s| s.to_string()))
            })
            .map(|d| with_workflow_parameters(&d, &w["spec"]["arguments"]["parameters"]))
            .and_then(|d| expr::time::parse_duration_millis(&d))
            .zip(started_ms)
            .map(|(d, s)| expr::time::rfc3339(s + d));
        let supplied: Vec<Value> = template
            .and_then(|t| t["outputs"]["parameters"].as_array())
            .into_iter()
            .flatten()
            .filter(|p| p["valueFrom"].get("supplied").is_some())
            .map(|p| {
                json!({
                    "name": p["name"],
                    "default": p["valueFrom"]["default"],
                    "enum": p["enum"],
                    "description": p["description"],
                })
            })
            .collect();
        let boundary = n["boundaryID"].as_str().and_then(|b| nodes.get(b));
        let next = boundary
            .and_then(|b| b["templateName"].as_str())
            .and_then(|t| templates.iter().find(|x| x["name"] == t))
            .map(|parent| next_steps(parent, n["displayName"].as_str().unwrap_or(""), &templates))
            .unwrap_or_default();
        out.push(json!({
            "namespace": ns,
            "workflow": name,
            "next": next,
            "nodeId": n["id"],
            "displayName": n["displayName"],
            "nodeName": n["name"],
            "startedAt": n["startedAt"],
            "deadline": deadline,
            "supply": supplied,
            "parameters": w["spec"]["arguments"]["parameters"],
            "findings": findings,
            "eventSeqs": events,
            "labels": w["metadata"]["labels"],
        }));
    }
    out
}

/// What runs after step `step` of template `parent` (the next step group, or the DAG tasks
/// that depend on it): each with its condition and what it would do — a resource step's
/// action and manifest, a library template's reference, a container's image and command.
/// Parameters are shown as written (`{{...}}`): they are resolved only when the step starts.
fn next_steps(parent: &Value, step: &str, templates: &[&Value]) -> Vec<Value> {
    let mut following: Vec<&Value> = Vec::new();
    if let Some(groups) = parent["steps"].as_array() {
        let at = groups.iter().position(|g| {
            g.as_array()
                .is_some_and(|g| g.iter().any(|s| s["name"] == step))
        });
        if let Some(next) = at.and_then(|i| groups.get(i + 1)).and_then(Value::as_array) {
            following.extend(next);
        }
    } else if let Some(tasks) = parent["dag"]["tasks"].as_array() {
        let word = regex::Regex::new(&format!(r"(^|[^\w-]){}($|[^\w-])", regex::escape(step))).ok();
        following.extend(tasks.iter().filter(|t| {
            t["dependencies"]
                .as_array()
                .is_some_and(|d| d.iter().any(|d| d == step))
                || t["depends"]
                    .as_str()
                    .zip(word.as_ref())
                    .is_some_and(|(d, re)| re.is_match(d))
        }));
    }
    following
        .into_iter()
        .map(|s| {
            let template = s["template"]
                .as_str()
                .and_then(|t| templates.iter().find(|x| x["name"] == t));
            let does = match template {
                Some(t) if t["resource"].is_object() => json!({
                    "action": t["resource"]["action"],
                    "manifest": t["resource"]["manifest"],
                }),
                Some(t) if t["container"].is_object() || t["script"].is_object() => {
                    let c = if t["script"].is_object() {
                        &t["script"]
                    } else {
                        &t["container"]
                    };
                    json!({"image": c["image"], "command": c["command"], "args": c["args"],
                           "source": c["source"]})
                }
                _ => json!({}),
            };
            json!({
                "name": s["name"],
                "when": s["when"],
                "template": s["template"],
                "templateRef": s["templateRef"],
                "arguments": s["arguments"]["parameters"],
                "does": does,
            })
        })
        .collect()
}

/// `text` with `{{workflow.parameters.NAME}}` replaced by the workflow's argument (a suspend's
/// `duration` is often a parameter, e.g. `approvalTimeout`).
fn with_workflow_parameters(text: &str, arguments: &Value) -> String {
    let mut out = text.to_string();
    for p in arguments.as_array().into_iter().flatten() {
        if let (Some(name), Some(value)) = (p["name"].as_str(), p["value"].as_str()) {
            for form in [
                format!("{{{{workflow.parameters.{name}}}}}"),
                format!("{{{{ workflow.parameters.{name} }}}}"),
            ] {
                out = out.replace(&form, value);
            }
        }
    }
    out
}

/// `{"object": {...}}` (rendered as YAML) or `{"yaml": "..."}`: the text and its diagnostics
/// with line and column, the same messages `riposte lint` prints.
pub(super) async fn lint_text(State(c): State<Controller>, Json(body): Json<Value>) -> ApiResult {
    let text = match (body.get("yaml").and_then(Value::as_str), body.get("object")) {
        (Some(t), _) => t.to_string(),
        (None, Some(o)) => {
            let mut o = o.clone();
            // What the server adds is not the author's: the console shows the definition.
            if let Some(m) = o["metadata"].as_object_mut() {
                for k in [
                    "uid",
                    "resourceVersion",
                    "creationTimestamp",
                    "managedFields",
                ] {
                    m.remove(k);
                }
            }
            spec::yaml_out::to_yaml(&o)
        }
        _ => {
            return Err(ApiError::invalid(
                "the body needs `yaml` (text) or `object` (a resource)",
            ));
        }
    };
    let namespace = body["namespace"].as_str().unwrap_or("default");
    let mut diags = Vec::new();
    let kind = spec::yaml::load_documents(&text)
        .ok()
        .and_then(|d| {
            d.first()
                .map(|d| d.value["kind"].as_str().unwrap_or("").to_string())
        })
        .unwrap_or_default();
    if matches!(
        kind.as_str(),
        "Sensor" | "EventSource" | "WorkflowEventBinding"
    ) {
        let (loaded, d) = spec::load_events("console", &text);
        diags.extend(d);
        diags.extend(spec::lint_events(&loaded));
    } else {
        let library = c.library(namespace).await?;
        diags.extend(crate::submit::diagnose("console", &text, &library).1);
    }
    let diagnostics: Vec<Value> = diags
        .iter()
        .map(|d| {
            json!({
                "line": d.position.line,
                "col": d.position.col,
                "severity": match d.severity {
                    spec::Severity::Error => "error",
                    spec::Severity::Warning => "warning",
                },
                "message": d.message,
                "text": d.to_string(),
            })
        })
        .collect();
    Ok(Json(json!({"yaml": text, "diagnostics": diagnostics})))
}

/// `{"event": <seq>}` or `{"data": <payload or envelope>}`: what the stored sensor would
/// decide, and the workflow it would submit, without submitting it.
pub(super) async fn test_sensor(
    State(e): State<crate::events::Events>,
    Path((namespace, name)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> ApiResult {
    let store = e.controller().store();
    let sensor = match store
        .get_event_object(crate::events::SENSOR, &namespace, &name)
        .await
    {
        Ok(o) => o.body,
        Err(store::StoreError::NotFound { .. }) => {
            return Err(ApiError::not_found(format!(
                "sensor {namespace}/{name} not found"
            )));
        }
        Err(err) => return Err(err.into()),
    };
    let event = match (body.get("event").and_then(Value::as_i64), body.get("data")) {
        (Some(seq), _) => match store.get_event(seq).await {
            Ok(r) => ::events::Event::from_json(r.envelope),
            Err(store::StoreError::NotFound { .. }) => {
                return Err(ApiError::not_found(format!("event {seq} not found")));
            }
            Err(err) => return Err(err.into()),
        },
        (None, Some(d)) => ::events::Event::from_json(d.clone()),
        _ => {
            return Err(ApiError::invalid(
                "the body needs `event` (an event's number) or `data` (a payload)",
            ));
        }
    };
    crate::events::dry_run::dry_run(&sensor, Some(&event), &[])
        .map(Json)
        .map_err(|e| ApiError::invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workflow(nodes: Value) -> Value {
        json!({
            "metadata": {"namespace": "ns", "name": "wf", "annotations": {"riposte.io/events": "7,9"}},
            "spec": {
                "arguments": {"parameters": [{"name": "approvalTimeout", "value": "30m"}]},
                "templates": [{"name": "approve",
                    "suspend": {"duration": "{{workflow.parameters.approvalTimeout}}"},
                    "outputs": {"parameters": [{"name": "decision", "enum": ["terminate", "keep"],
                        "valueFrom": {"supplied": {}, "default": "keep"}}]}}]
            },
            "status": {"nodes": nodes}
        })
    }

    #[test]
    fn a_running_suspend_is_pending_with_its_deadline_values_and_findings() {
        let w = workflow(json!({
            "wf-1": {"id": "wf-1", "type": "Suspend", "phase": "Running", "templateName": "approve",
                     "displayName": "approve", "startedAt": "2026-12-04T10:00:00Z"},
            "wf-2": {"id": "wf-2", "type": "Pod", "phase": "Succeeded", "displayName": "isolate",
                     "finishedAt": "2026-12-04T09:59:00Z", "message": "would patch pod/web",
                     "outputs": {"result": "{\"changes\": [\"metadata.labels.a: (unset) → \\\"b\\\"\"]}"}},
            "wf-3": {"id": "wf-3", "type": "Suspend", "phase": "Succeeded", "templateName": "approve"}
        }));
        let pending = pending_approvals(&w);
        assert_eq!(pending.len(), 1, "{pending:#?}");
        let p = &pending[0];
        assert_eq!(p["nodeId"], "wf-1");
        assert_eq!(p["deadline"], "2026-12-04T10:30:00Z");
        assert_eq!(p["supply"][0]["name"], "decision");
        assert_eq!(p["supply"][0]["enum"], json!(["terminate", "keep"]));
        assert_eq!(p["supply"][0]["default"], "keep");
        assert_eq!(p["eventSeqs"], json!([7, 9]));
        assert_eq!(p["findings"][0]["node"], "isolate");
        assert!(p["findings"][0]["change"]["changes"].is_array());
    }

    #[test]
    fn the_next_step_after_approval_is_shown_with_its_manifest() {
        let act = json!({"name": "act", "resource": {"action": "delete", "manifest": "kind: Pod"}});
        let steps = json!({"name": "main", "steps": [[{"name": "approve", "template": "approve"}],
            [{"name": "terminate", "template": "act", "when": "{{steps.approve.outputs.parameters.decision}} == terminate"}]]});
        let next = next_steps(&steps, "approve", &[&act]);
        assert_eq!(next.len(), 1);
        assert_eq!(next[0]["name"], "terminate");
        assert_eq!(next[0]["does"]["action"], "delete");
        assert!(
            next[0]["when"]
                .as_str()
                .is_some_and(|w| w.contains("terminate"))
        );
        let dag = json!({"name": "main", "dag": {"tasks": [
            {"name": "approve", "template": "approve"},
            {"name": "a", "template": "act", "depends": "approve.Succeeded"},
            {"name": "b", "template": "act", "dependencies": ["approve"]},
            {"name": "c", "template": "act", "depends": "approve-not"}]}});
        let names: Vec<Value> = next_steps(&dag, "approve", &[&act])
            .into_iter()
            .map(|n| n["name"].clone())
            .collect();
        assert_eq!(names, vec![json!("a"), json!("b")]);
    }

    #[test]
    fn nothing_is_pending_without_a_running_suspend() {
        let w = workflow(json!({
            "wf-1": {"id": "wf-1", "type": "Pod", "phase": "Running"},
            "wf-2": {"id": "wf-2", "type": "Suspend", "phase": "Failed"}
        }));
        assert!(pending_approvals(&w).is_empty());
        assert!(pending_approvals(&json!({})).is_empty());
    }
}
