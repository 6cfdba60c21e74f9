//! Evidence before disruption (Falco Talon's `log` and `download` outputs): a pod's manifest,
//! its owners' manifests and its containers' logs (current and, after a restart, previous),
//! saved into one Secret in a forensic namespace with the SHA-256 of each item, so that
//! isolating or deleting the pod afterwards loses nothing an investigator needs.
//!
//! A Secret rather than a ConfigMap because logs and manifests carry credentials more often
//! than not. Kubernetes caps an object at 1 MiB, so logs are cut to their last bytes to fit.

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, LogParams, PostParams};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::resource::{dynamic_api, gvk_of};
use crate::{api_status, describe, with_retries};

/// What to collect and where to put it.
pub struct EvidenceRequest {
    pub namespace: String,
    pub pod: String,
    /// The forensic namespace (it must exist; access to it is the access to the evidence).
    pub to_namespace: String,
    /// The most of one log kept (its end), before the 1 MiB object limit is shared out.
    pub max_log_bytes: usize,
    pub dry_run: bool,
    /// Seconds since the epoch, part of the Secret's name (a caller's clock, for tests).
    pub now: i64,
}

/// Room for the logs in one Secret: the 1 MiB object limit less manifests and metadata.
const SECRET_BUDGET: usize = 900 * 1024;
/// How far up the ownerReferences to follow (pod → ReplicaSet → Deployment).
const OWNER_DEPTH: usize = 3;

/// Collects and stores the evidence; returns the report (the Secret's name, each item with
/// its size and SHA-256, what was cut), which is also stored in the Secret as `index.json`.
pub async fn collect(client: &kube::Client, req: &EvidenceRequest) -> Result<Value, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &req.namespace);
    let pod = with_retries(|| pods.get(&req.pod))
        .await
        .map_err(|e| format!("pod {}/{}: {}", req.namespace, req.pod, describe(&e)))?;
    let mut items: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let pod_json = strip(serde_json::to_value(&pod).map_err(|e| e.to_string())?);
    let mut owners = Vec::new();
    let mut refs = pod_json["metadata"]["ownerReferences"].clone();
    for depth in 0..OWNER_DEPTH {
        let Some(owner) = refs
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["controller"] == true))
            .cloned()
        else {
            break;
        };
        let obj = match owner_object(client, &req.namespace, &owner).await {
            Ok(o) => o,
            // Evidence is collected as far as it goes: a vanished owner is noted, not fatal.
            Err(e) => {
                owners.push(json!({"ref": owner, "error": e}));
                break;
            }
        };
        refs = obj["metadata"]["ownerReferences"].clone();
        let key = format!(
            "owner-{depth}-{}-{}.json",
            owner["kind"].as_str().unwrap_or("").to_lowercase(),
            owner["name"].as_str().unwrap_or("")
        );
        items.insert(key.clone(), pretty(&obj));
        owners.push(json!({"kind": owner["kind"], "name": owner["name"], "item": key}));
    }
    items.insert("pod.json".into(), pretty(&pod_json));

    let spec = pod.spec.clone().unwrap_or_default();
    let restarted: BTreeMap<String, bool> = pod
        .status
        .as_ref()
        .map(|s| {
            s.container_statuses
                .iter()
                .flatten()
                .chain(s.init_container_statuses.iter().flatten())
                .map(|c| (c.name.clone(), c.restart_count > 0))
                .collect()
        })
        .unwrap_or_default();
    let containers: Vec<String> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| c.name.clone())
        .collect();
    let mut wanted: Vec<(String, String, bool)> = Vec::new();
    for c in &containers {
        wanted.push((format!("logs-{c}.txt"), c.clone(), false));
        if restarted.get(c).copied().unwrap_or(false) {
            wanted.push((format!("logs-{c}-previous.txt"), c.clone(), true));
        }
    }
    let per_log = req
        .max_log_bytes
        .min(SECRET_BUDGET / wanted.len().max(1))
        .max(1024);
    let mut missing = Vec::new();
    for (key, container, previous) in wanted {
        let lp = LogParams {
            container: Some(container.clone()),
            previous,
            limit_bytes: None,
            timestamps: true,
            ..LogParams::default()
        };
        match with_retries(|| pods.logs(&req.pod, &lp)).await {
            Ok(text) => {
                let bytes = text.into_bytes();
                let cut = bytes.len().saturating_sub(per_log);
                items.insert(key, bytes[cut..].to_vec());
            }
            // A container that never started has no log; say so instead of failing.
            Err(e) if api_status(&e).is_some_and(|(c, _)| c == 400 || c == 404) => {
                missing.push(json!({"item": key, "why": describe(&e)}));
            }
            Err(e) => return Err(format!("logs of {}/{container}: {}", req.pod, describe(&e))),
        }
    }

    let index: Vec<Value> = items
        .iter()
        .map(|(k, v)| json!({"item": k, "bytes": v.len(), "sha256": sha256_hex(v)}))
        .collect();
    let name = secret_name(&req.pod, req.now);
    let report = json!({
        "secret": name,
        "namespace": req.to_namespace,
        "source": format!("{}/{}", req.namespace, req.pod),
        "dryRun": req.dry_run,
        "items": index,
        "owners": owners,
        "missing": missing,
        "maxLogBytes": per_log,
    });
    save(
        client,
        &Saved {
            to_namespace: &req.to_namespace,
            name: &name,
            namespace: &req.namespace,
            pod: &req.pod,
            pod_uid: pod.metadata.uid.as_deref().unwrap_or_default(),
            dry_run: req.dry_run,
        },
        items,
        &report,
    )
    .await?;
    Ok(report)
}

/// Where a piece of evidence goes, and what it is about.
pub(crate) struct Saved<'a> {
    pub to_namespace: &'a str,
    pub name: &'a str,
    pub namespace: &'a str,
    pub pod: &'a str,
    pub pod_uid: &'a str,
    pub dry_run: bool,
}

/// Stores `items` and the `report` (as `index.json`) in one Secret of the forensic
/// namespace, labelled with the pod it is about.
pub(crate) async fn save(
    client: &kube::Client,
    to: &Saved<'_>,
    mut items: BTreeMap<String, Vec<u8>>,
    report: &Value,
) -> Result<(), String> {
    items.insert("index.json".into(), pretty(report));
    let data: BTreeMap<String, k8s_openapi::ByteString> = items
        .into_iter()
        .map(|(k, v)| (k, k8s_openapi::ByteString(v)))
        .collect();
    let name = to.name;
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/managed-by": "riposte",
                "riposte.dev/evidence": "true",
                "riposte.dev/evidence-namespace": label_value(to.namespace),
                "riposte.dev/evidence-pod": label_value(to.pod),
            },
            "annotations": {
                "riposte.dev/evidence-source": format!("{}/{}", to.namespace, to.pod),
                "riposte.dev/evidence-pod-uid": to.pod_uid,
            },
        },
        "type": "Opaque",
    }))
    .map_err(|e| e.to_string())?;
    let secret = Secret {
        data: Some(data),
        ..secret
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), to.to_namespace);
    let pp = PostParams {
        dry_run: to.dry_run,
        ..PostParams::default()
    };
    with_retries(|| secrets.create(&pp, &secret))
        .await
        .map_err(|e| {
            if api_status(&e).is_some_and(|(c, _)| c == 404) {
                format!(
                    "the forensic namespace {} does not exist: create it (kubectl create namespace {}) and restrict who may read its Secrets",
                    to.to_namespace, to.to_namespace
                )
            } else {
                format!("storing evidence as secret {}/{name}: {}", to.to_namespace, describe(&e))
            }
        })?;
    Ok(())
}

async fn owner_object(
    client: &kube::Client,
    namespace: &str,
    owner: &Value,
) -> Result<Value, String> {
    let api_version = owner["apiVersion"].as_str().unwrap_or("");
    let kind = owner["kind"].as_str().unwrap_or("");
    let name = owner["name"].as_str().unwrap_or("");
    let (api, _) = dynamic_api(client, &gvk_of(api_version, kind), namespace).await?;
    let o = with_retries(|| api.get(name))
        .await
        .map_err(|e| format!("{kind} {name}: {}", describe(&e)))?;
    Ok(strip(serde_json::to_value(o).map_err(|e| e.to_string())?))
}

/// managedFields say who wrote which field, at length; not evidence of the attack.
fn strip(mut v: Value) -> Value {
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    v
}

fn pretty(v: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `evidence-<pod>-<seconds>`, within the 253 characters of a name.
fn secret_name(pod: &str, now: i64) -> String {
    prefixed_name("evidence", pod, now)
}

/// `<prefix>-<pod>-<seconds>`, within the 253 characters of a name.
pub(crate) fn prefixed_name(prefix: &str, pod: &str, now: i64) -> String {
    let suffix = format!("-{now}");
    let room = 253 - prefix.len() - 1 - suffix.len();
    let pod: String = pod.chars().take(room).collect();
    format!("{prefix}-{}{suffix}", pod.trim_end_matches('-'))
}

/// A label value: at most 63 characters, ending alphanumeric.
fn label_value(s: &str) -> String {
    let v: String = s.chars().take(63).collect();
    v.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_labels_fit_kubernetes_limits() {
        assert_eq!(
            secret_name("web-1", 1_700_000_000),
            "evidence-web-1-1700000000"
        );
        assert!(secret_name(&"p".repeat(300), 1).len() <= 253);
        assert_eq!(label_value(&format!("{}-", "a".repeat(62))), "a".repeat(62));
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
