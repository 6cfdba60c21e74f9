//! Long-lived responses: workflow logs (with `follow`) and the workflow-events watch.

#[allow(unused_imports)]
use super::*;

/// `GET .../log`: every node's log lines as NDJSON `{"result": {"content", "podName"}}`
/// (`podName` may name one node by id or pod name).
/// The log lines of each node of a workflow, and the pod name each is reported under.
pub(super) struct NodeLogs {
    /// Node id → lines, in the order the nodes started.
    pub(super) lines: Vec<(String, Vec<String>)>,
    pub(super) pods: HashMap<String, String>,
    pub(super) finished: bool,
}

pub(super) async fn node_logs(c: &Controller, namespace: &str, name: &str) -> ApiResult<NodeLogs> {
    let rec = c.store().get_workflow(namespace, name).await?;
    let nodes: HashMap<String, store::NodeRow> = c
        .store()
        .nodes(&rec.uid)
        .await?
        .into_iter()
        .map(|n| (n.id.clone(), n))
        .collect();
    // Finished nodes' logs are in the database (any replica can serve them); running nodes'
    // logs are read from this replica's files (host processes, or followed pod logs).
    let mut by_node: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for (id, line) in c.store().node_logs(&rec.uid).await? {
        by_node.entry(id).or_default().push(line);
    }
    let dir = c.logs_dir(name);
    for id in nodes.keys() {
        if !by_node.contains_key(id)
            && let Ok(text) = std::fs::read_to_string(dir.join(format!("{id}.log")))
        {
            by_node.insert(id.clone(), text.lines().map(str::to_string).collect());
        }
    }
    let mut lines: Vec<(String, Vec<String>)> = by_node.into_iter().collect();
    lines.sort_by_key(|(id, _)| {
        nodes.get(id).map(|n| {
            (
                n.status["startedAt"].as_str().unwrap_or("").to_string(),
                n.name.clone(),
            )
        })
    });
    let pods = nodes
        .iter()
        .map(|(id, n)| {
            let pod = engine::pod_name(
                name,
                &n.name,
                n.status["templateName"].as_str().unwrap_or(""),
            );
            (id.clone(), pod)
        })
        .collect();
    let finished = engine::Phase::parse(&rec.phase).is_some_and(engine::Phase::completed);
    Ok(NodeLogs {
        lines,
        pods,
        finished,
    })
}

/// `GET .../log`: NDJSON `{"result": {"content", "podName"}}` per line (`podName` selects a
/// node by pod name or id). With `logOptions.follow=true` the response stays open and new
/// lines follow as they are written, until the workflow has finished.
pub(super) async fn workflow_logs(
    State(c): State<Controller>,
    Path((namespace, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let only = q.get("podName").filter(|p| !p.is_empty()).cloned();
    let follow = q.get("logOptions.follow").is_some_and(|v| v == "true");
    // How many lines of each node were sent; a node's file lines are a prefix of what the
    // database keeps once it ends, so counting lines is enough to resume.
    let mut sent: HashMap<String, usize> = HashMap::new();
    let mut render = move |logs: &NodeLogs| -> String {
        let mut out = String::new();
        for (id, lines) in &logs.lines {
            let pod = logs.pods.get(id).cloned().unwrap_or_else(|| id.clone());
            if only.as_ref().is_some_and(|p| p != &pod && p != id) {
                continue;
            }
            let from = sent.entry(id.clone()).or_default();
            for line in lines.iter().skip(*from) {
                out.push_str(&json!({"result": {"content": line, "podName": pod}}).to_string());
                out.push('\n');
            }
            *from = (*from).max(lines.len());
        }
        out
    };
    let first = node_logs(&c, &namespace, &name).await?;
    let head = render(&first);
    let ndjson = [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")];
    if !follow || first.finished {
        return Ok((ndjson, head).into_response());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(16);
    tokio::spawn(async move {
        if tx.send(Ok(head)).await.is_err() {
            return;
        }
        let mut changes = c.subscribe();
        let mut failures = 0u32;
        loop {
            // A step's output grows without a recorded step: look at least every 250 ms.
            tokio::select! {
                _ = changes.recv() => {}
                _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
            }
            let logs = match node_logs(&c, &namespace, &name).await {
                Ok(logs) => logs,
                // A busy or reconnecting database is waited out; a stream that ends cleanly
                // would tell the reader the log is complete.
                Err(e) if failures < 120 => {
                    failures += 1;
                    tracing::debug!(workflow = %name, error = %e.message, "reading logs to follow; retrying");
                    continue;
                }
                Err(e) => {
                    // Cut the response instead of ending it, so the client reports an error.
                    let _ = tx.send(Err(std::io::Error::other(e.message))).await;
                    return;
                }
            };
            failures = 0;
            let chunk = render(&logs);
            if !chunk.is_empty() && tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            if logs.finished {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((ndjson, axum::body::Body::from_stream(stream)).into_response())
}

/// `GET /api/v1/workflow-events/{ns}`: an NDJSON stream of `{"result": {"type", "object"}}`,
/// one event per recorded step of a workflow in the namespace (optionally one workflow:
/// `listOptions.fieldSelector=metadata.name=NAME`).
pub(super) async fn watch_workflows(
    State(c): State<Controller>,
    Path(namespace): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
) -> Response {
    // Server-sent events when asked for, NDJSON otherwise.
    let sse = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let only = q
        .get("listOptions.fieldSelector")
        .and_then(|f| f.strip_prefix("metadata.name="))
        .map(str::to_string);
    let rx = c.subscribe();
    // A watch of one workflow also looks every few seconds by itself, so a change whose
    // notification was missed still reaches the watcher (sent only when it differs from what
    // was sent last).
    let last: Option<Value> = None;
    let stream = futures_util::stream::unfold(
        (rx, c, namespace, only, sse, last),
        |(mut rx, c, ns, only, sse, mut last)| async move {
            loop {
                let received = match &only {
                    Some(_) => {
                        match tokio::time::timeout(std::time::Duration::from_secs(3), rx.recv())
                            .await
                        {
                            Ok(r) => r,
                            Err(_) => Ok((ns.clone(), only.clone().unwrap_or_default())),
                        }
                    }
                    None => rx.recv().await,
                };
                match received {
                    Ok((wns, wname)) => {
                        // An empty namespace watches every namespace (the console's list).
                        if (!ns.is_empty() && wns != ns)
                            || only.as_ref().is_some_and(|o| o != &wname)
                        {
                            continue;
                        }
                        let Ok(obj) = c.workflow_json(&wns, &wname, true).await else {
                            continue;
                        };
                        if only.is_some() {
                            if last.as_ref() == Some(&obj) {
                                continue;
                            }
                            last = Some(obj.clone());
                        }
                        let event = json!({"result": {"type": "MODIFIED", "object": obj}});
                        let line = if sse {
                            format!("data: {event}\n\n")
                        } else {
                            format!("{event}\n")
                        };
                        return Some((
                            Ok::<_, std::convert::Infallible>(line),
                            (rx, c, ns, only, sse, last),
                        ));
                    }
                    // A slow reader skips ahead; the next event carries the whole state anyway.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    let content_type = if sse {
        "text/event-stream"
    } else {
        "application/x-ndjson"
    };
    (
        [(axum::http::header::CONTENT_TYPE, content_type)],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}
