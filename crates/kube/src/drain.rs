//! `riposte drain`: cordon a node, then evict its pods through the Eviction API, which
//! respects PodDisruptionBudgets (an eviction a budget forbids answers 429 and is retried
//! until the timeout). DaemonSet pods (their controller would put them back at once) and
//! static mirror pods (the kubelet owns them) are left, as `kubectl drain
//! --ignore-daemonsets` does.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::{api_status, describe, resource::FIELD_MANAGER, with_retries};

pub struct DrainRequest {
    pub node: String,
    /// Seconds each pod gets to stop; `None`: the pod's own.
    pub grace_period: Option<u32>,
    /// How long to keep retrying evictions a disruption budget refuses.
    pub timeout: Duration,
    pub dry_run: bool,
}

/// Cordons and drains; returns the report (evicted, skipped and why, blocked). Pods still
/// blocked at the timeout make it an error, with the report in the message.
pub async fn drain(client: &kube::Client, req: &DrainRequest) -> Result<Value, String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let pp = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        dry_run: req.dry_run,
        ..PatchParams::default()
    };
    let cordon = Patch::Merge(json!({"spec": {"unschedulable": true}}));
    with_retries(|| nodes.patch(&req.node, &pp, &cordon))
        .await
        .map_err(|e| format!("cordon node/{}: {}", req.node, describe(&e)))?;

    let all: Api<Pod> = Api::all(client.clone());
    let on_node = ListParams::default().fields(&format!("spec.nodeName={}", req.node));
    let pods = with_retries(|| all.list(&on_node))
        .await
        .map_err(|e| format!("listing the pods of node/{}: {}", req.node, describe(&e)))?
        .items;
    let mut skipped = Vec::new();
    let mut pending = Vec::new();
    for p in pods {
        let ns = p.metadata.namespace.clone().unwrap_or_default();
        let name = p.metadata.name.clone().unwrap_or_default();
        let id = format!("{ns}/{name}");
        let phase = p
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        let daemon = p
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.kind == "DaemonSet");
        let mirror = p
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
        if daemon {
            skipped.push(json!({"pod": id, "why": "DaemonSet pod"}));
        } else if mirror {
            skipped.push(json!({"pod": id, "why": "static (mirror) pod"}));
        } else if phase == "Succeeded" || phase == "Failed" {
            skipped.push(json!({"pod": id, "why": format!("already {phase}")}));
        } else {
            pending.push((ns, name));
        }
    }
    let ep = EvictParams {
        delete_options: Some(DeleteParams {
            grace_period_seconds: req.grace_period,
            dry_run: req.dry_run,
            ..DeleteParams::default()
        }),
        post_options: PostParams {
            dry_run: req.dry_run,
            ..PostParams::default()
        },
    };
    let deadline = Instant::now() + req.timeout;
    let mut evicted = Vec::new();
    let mut blocked: Vec<(String, String, String)> = Vec::new();
    loop {
        for (ns, name) in std::mem::take(&mut pending) {
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            match api.evict(&name, &ep).await {
                Ok(_) => evicted.push(format!("{ns}/{name}")),
                Err(e) if api_status(&e).is_some_and(|(c, _)| c == 404) => {
                    skipped.push(json!({"pod": format!("{ns}/{name}"), "why": "gone already"}));
                }
                // A PodDisruptionBudget refuses for now (429), or the API is busy (5xx).
                Err(e) if api_status(&e).is_some_and(|(c, _)| c == 429 || c >= 500) => {
                    blocked.push((ns, name, describe(&e)));
                }
                Err(e) => return Err(format!("evicting pod {ns}/{name}: {}", describe(&e))),
            }
        }
        if blocked.is_empty() || Instant::now() >= deadline {
            break;
        }
        pending = blocked.drain(..).map(|(ns, n, _)| (ns, n)).collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let report = json!({
        "node": req.node,
        "dryRun": req.dry_run,
        "evicted": evicted,
        "skipped": skipped,
        "blocked": blocked.iter().map(|(ns, n, why)| json!({"pod": format!("{ns}/{n}"), "why": why})).collect::<Vec<_>>(),
    });
    if blocked.is_empty() {
        Ok(report)
    } else {
        Err(format!(
            "node/{} is cordoned but {} pod(s) could not be evicted within {}s (a PodDisruptionBudget?): {report}",
            req.node,
            blocked.len(),
            req.timeout.as_secs()
        ))
    }
}
