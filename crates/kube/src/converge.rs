//! Has the cluster converged to a set of manifests? The check after a GitOps merge: the
//! GitOps tool (Argo CD, Flux) applies what was merged, and the response is only done when
//! the live objects carry every field the manifests set (`executor::change::unconverged`).

use std::time::{Duration, Instant};

use kube::api::DynamicObject;
use serde_json::{Value, json};

use crate::resource::{dynamic_api, gvk_of};
use crate::{api_status, describe, with_retries};

/// One manifest's state: `kind/namespace/name` and what is still missing (empty: converged).
#[derive(Debug, Clone)]
pub struct ObjectState {
    pub object: String,
    pub missing: Vec<String>,
}

/// Each manifest against its live object (namespaced kinds without a namespace are looked up
/// in `namespace`). A missing object is "not created yet", not an error.
pub async fn check(
    client: &kube::Client,
    manifests: &[Value],
    namespace: &str,
) -> Result<Vec<ObjectState>, String> {
    let mut states = Vec::with_capacity(manifests.len());
    for m in manifests {
        let (Some(api_version), Some(kind), Some(name)) = (
            m["apiVersion"].as_str(),
            m["kind"].as_str(),
            m["metadata"]["name"].as_str(),
        ) else {
            return Err(format!(
                "a manifest needs apiVersion, kind and metadata.name: {}",
                short(m)
            ));
        };
        let ns = m["metadata"]["namespace"].as_str().unwrap_or(namespace);
        let (api, _) = dynamic_api(client, &gvk_of(api_version, kind), ns).await?;
        let object = format!("{}/{ns}/{name}", kind.to_ascii_lowercase());
        let live: Option<DynamicObject> = match with_retries(|| api.get(name)).await {
            Ok(o) => Some(o),
            Err(e) if matches!(api_status(&e), Some((404, _))) => None,
            Err(e) => return Err(format!("reading {object}: {}", describe(&e))),
        };
        let missing = match live {
            None => vec!["(the object does not exist)".to_string()],
            Some(o) => {
                let live = serde_json::to_value(&o).map_err(|e| format!("{object}: {e}"))?;
                executor::change::unconverged(m, &live)
            }
        };
        states.push(ObjectState { object, missing });
    }
    Ok(states)
}

/// Polls [`check`] every `interval` until every object converged (Ok, the report) or
/// `timeout` passed (Err, naming what is still missing). `progress` hears each round.
pub async fn wait(
    client: &kube::Client,
    manifests: &[Value],
    namespace: &str,
    timeout: Duration,
    interval: Duration,
    mut progress: impl FnMut(&[ObjectState]),
) -> Result<Value, String> {
    let start = Instant::now();
    loop {
        let states = check(client, manifests, namespace).await?;
        progress(&states);
        let pending: Vec<&ObjectState> = states.iter().filter(|s| !s.missing.is_empty()).collect();
        if pending.is_empty() {
            return Ok(json!({
                "converged": states.iter().map(|s| s.object.clone()).collect::<Vec<_>>(),
                "seconds": start.elapsed().as_secs(),
            }));
        }
        if start.elapsed() >= timeout {
            let detail: Vec<String> = pending
                .iter()
                .map(|s| format!("{}: {}", s.object, s.missing.join("; ")))
                .collect();
            return Err(format!(
                "the cluster has not converged to the merged change after {}s (is the GitOps tool syncing this path?): {}",
                timeout.as_secs(),
                detail.join(" | ")
            ));
        }
        tokio::time::sleep(interval).await;
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        format!("{}…", &s[..s.floor_char_boundary(200)])
    } else {
        s
    }
}
