//! The `batch/v1` Job a `container`/`script` step becomes on Kubernetes (pure).
//!
//! The step's command is wrapped by `riposte exec`, which an init container copies from the
//! Riposte image into a shared `emptyDir` (the way Argo's emissary is installed): the wrapper
//! runs the user command, captures `result`, the exit code and the `valueFrom.path` files,
//! and reports them. The engine owns retries, so `backoffLimit` is 0.
//!
//! The wrapper is `riposte exec` and the init container runs `riposte install-wrapper`
//! (both in the `riposte` binary). Only the manifest is built here; creating and watching
//! Jobs and receiving the callback is the Kubernetes executor's job (not built yet).

use std::collections::BTreeMap;

use engine::ExecuteNode;
use serde_json::{Map, Value, json};

/// Where the wrapper binary is put in the step's pod.
pub const WRAPPER_DIR: &str = "/var/run/riposte";

/// Settings that come from the installation rather than from the workflow.
#[derive(Debug, Clone)]
pub struct JobOptions {
    /// The Riposte image that provides `riposte exec` to the init container.
    pub riposte_image: String,
    /// The init container's `imagePullPolicy` (`IfNotPresent` by default: the image is
    /// pinned to a version, and steps must not depend on a registry being reachable).
    pub riposte_image_pull_policy: String,
    /// `ttlSecondsAfterFinished` of every Job.
    pub ttl_seconds_after_finished: i64,
    /// The namespace Jobs go to when not the workflow's own.
    pub namespace: Option<String>,
    /// The workflow's uid, put on the Job as a label so it can be found again.
    pub workflow_uid: String,
    /// Now (unix ms), to turn the node's absolute deadline into `activeDeadlineSeconds`.
    pub now_ms: i64,
    /// Where the wrapper reports (this node's callback URL), if the server takes reports.
    /// The node's token is then mounted from the Secret named by [`token_secret_name`].
    pub callback_url: Option<String>,
}

/// Where a node's callback token is mounted in the step's main container.
pub const TOKEN_DIR: &str = "/var/run/riposte-token";

/// The Secret that holds a node's callback token: named after its Job.
pub fn token_secret_name(job: &str) -> String {
    format!("{job}-riposte-token")
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JobError {
    #[error("template {template:?} is not a container or script template; only those run as Jobs")]
    NotAPod { template: String },
    #[error(
        "template {template:?}: image {image:?} has no `command`; the Kubernetes executor wraps the command, so name it (for example `command: [sh, -c]`)"
    )]
    NoCommand { template: String, image: String },
}

/// Entrypoints of images that Argo's examples use without a `command`, so that those
/// examples run unchanged (Argo's emissary looks the entrypoint up in the registry).
fn known_entrypoint(image: &str) -> Option<&'static [&'static str]> {
    let repo = image.split(['@', ':']).next().unwrap_or(image);
    match repo {
        "argoproj/argosay" => Some(&["/argosay"]),
        "docker/whalesay" => Some(&["cowsay"]),
        _ => None,
    }
}

/// The Job for `node`, as the JSON the API server accepts.
pub fn job_manifest(node: &ExecuteNode, opts: &JobOptions) -> Result<Value, JobError> {
    let t = &node.template;
    let (container, script) = match (&t.container, &t.script) {
        (Some(c), _) => (c, None),
        (None, Some(s)) => (&s.container, Some(s.source.as_str())),
        _ => {
            return Err(JobError::NotAPod {
                template: t.name.clone(),
            });
        }
    };
    let mut command: Vec<String> = container.command.iter().map(|c| c.0.clone()).collect();
    if command.is_empty() {
        match known_entrypoint(&container.image) {
            Some(e) => command = e.iter().map(|s| s.to_string()).collect(),
            None => {
                return Err(JobError::NoCommand {
                    template: t.name.clone(),
                    image: container.image.clone(),
                });
            }
        }
    }
    let mut wrapped = vec![format!("{WRAPPER_DIR}/riposte"), "exec".to_string()];
    for (name, path) in &node.output_paths {
        wrapped.push(format!("--output={name}={path}"));
    }
    if script.is_some() {
        wrapped.push("--script-from-env=RIPOSTE_SCRIPT".to_string());
    }
    wrapped.push("--".to_string());
    wrapped.extend(command);

    let mut env: Vec<Value> = container
        .env
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))
        .collect();
    env.push(json!({"name": "RIPOSTE_NODE_ID", "value": node.node_id}));
    if let Some(url) = &opts.callback_url {
        // The token is in a Secret of its own, mounted as a file: the Job spec, which more
        // people can read than Secrets, holds only its name.
        env.push(json!({"name": "RIPOSTE_CALLBACK_URL", "value": url}));
        env.push(json!({"name": "RIPOSTE_NODE_TOKEN_FILE", "value": format!("{TOKEN_DIR}/token")}));
    }
    env.push(json!({"name": "RIPOSTE_WORKFLOW", "value": node.workflow_name}));
    if let Some(source) = script {
        env.push(json!({"name": "RIPOSTE_SCRIPT", "value": source}));
    }

    let mut main = Map::new();
    // Kubernetes container fields the template carries verbatim (resources, volumeMounts,
    // securityContext, imagePullPolicy, ...) go first; ours override them.
    for (k, v) in &container.extra {
        main.insert(k.clone(), v.clone());
    }
    main.insert("name".into(), json!("main"));
    main.insert("image".into(), json!(container.image));
    main.insert("command".into(), json!(wrapped));
    let args: Vec<&str> = container.args.iter().map(|a| a.0.as_str()).collect();
    if !args.is_empty() {
        main.insert("args".into(), json!(args));
    }
    main.insert("env".into(), Value::Array(env));
    if let Some(dir) = &container.working_dir {
        main.insert("workingDir".into(), json!(dir));
    }
    main.insert(
        "terminationMessagePolicy".into(),
        json!("FallbackToLogsOnError"),
    );
    let mut mounts = main
        .get("volumeMounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    mounts.push(json!({"name": "riposte-wrapper", "mountPath": WRAPPER_DIR}));
    if opts.callback_url.is_some() {
        mounts.push(json!({"name": "riposte-token", "mountPath": TOKEN_DIR, "readOnly": true}));
    }
    main.insert("volumeMounts".into(), Value::Array(mounts));

    let mut volumes = t
        .extra
        .get("volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    volumes.push(json!({"name": "riposte-wrapper", "emptyDir": {}}));
    if opts.callback_url.is_some() {
        volumes.push(json!({"name": "riposte-token",
            "secret": {"secretName": token_secret_name(&node.pod_name), "defaultMode": 0o444}}));
    }

    let mut pod_spec = Map::new();
    pod_spec.insert("restartPolicy".into(), json!("Never"));
    pod_spec.insert(
        "initContainers".into(),
        json!([{
            "name": "riposte-init",
            "image": opts.riposte_image,
            "imagePullPolicy": opts.riposte_image_pull_policy,
            "command": ["riposte", "install-wrapper", WRAPPER_DIR],
            "volumeMounts": [{"name": "riposte-wrapper", "mountPath": WRAPPER_DIR}],
            // Ours, so it must pass the `restricted` Pod Security profile and namespace
            // quotas wherever the step runs.
            "securityContext": {
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "resources": {
                "requests": {"cpu": "10m", "memory": "16Mi"},
                "limits": {"cpu": "100m", "memory": "64Mi"},
            },
        }]),
    );
    pod_spec.insert("containers".into(), json!([Value::Object(main)]));
    pod_spec.insert("volumes".into(), Value::Array(volumes));
    if let Some(sa) = &t.service_account_name {
        pod_spec.insert("serviceAccountName".into(), json!(sa));
    }
    if !t.node_selector.is_empty() {
        pod_spec.insert("nodeSelector".into(), json!(t.node_selector));
    }
    for key in [
        "tolerations",
        "affinity",
        "securityContext",
        "priorityClassName",
        "runtimeClassName",
        "imagePullSecrets",
    ] {
        if let Some(v) = t.extra.get(key) {
            pod_spec.insert(key.into(), v.clone());
        }
    }

    let labels: BTreeMap<&str, &str> = [
        ("app.kubernetes.io/managed-by", "riposte"),
        (
            "workflows.argoproj.io/workflow",
            node.workflow_name.as_str(),
        ),
        ("riposte.dev/workflow-uid", opts.workflow_uid.as_str()),
        ("riposte.dev/node-id", node.node_id.as_str()),
    ]
    .into_iter()
    .collect();
    let annotations = json!({
        "workflows.argoproj.io/node-name": node.node_name,
        "workflows.argoproj.io/node-id": node.node_id,
    });
    // The template's own pod `metadata` (Argo: labels/annotations for the step's pod, e.g.
    // for NetworkPolicy selectors or sidecar injection); ours win on a clash.
    let mut pod_labels = Map::new();
    let mut pod_annotations = Map::new();
    if let Some(meta) = t.extra.get("metadata") {
        for (into, key) in [
            (&mut pod_labels, "labels"),
            (&mut pod_annotations, "annotations"),
        ] {
            if let Some(m) = meta.get(key).and_then(Value::as_object) {
                for (k, v) in m {
                    if let Some(v) = v.as_str() {
                        into.insert(k.clone(), json!(v));
                    }
                }
            }
        }
    }
    for (k, v) in &labels {
        pod_labels.insert(k.to_string(), json!(v));
    }
    if let Some(m) = annotations.as_object() {
        pod_annotations.extend(m.clone());
    }
    let mut job_spec = json!({
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": opts.ttl_seconds_after_finished,
        "template": {
            "metadata": {"labels": pod_labels, "annotations": pod_annotations},
            "spec": Value::Object(pod_spec),
        },
    });
    if let Some(deadline) = node.deadline {
        // At least one second: Kubernetes rejects 0, and the engine times the node out anyway.
        let secs = ((deadline - opts.now_ms) + 999).div_euclid(1000).max(1);
        job_spec["activeDeadlineSeconds"] = json!(secs);
    }
    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": node.pod_name,
            "namespace": opts.namespace.as_deref().unwrap_or(&node.namespace),
            "labels": labels,
            "annotations": annotations,
        },
        "spec": job_spec,
    }))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn node(template: &str) -> ExecuteNode {
        let template: spec::Template = serde_json::from_str(template).expect("template");
        ExecuteNode {
            node_id: "wf-123".into(),
            node_name: "wf.step".into(),
            pod_name: "wf-step-123".into(),
            workflow_name: "wf".into(),
            namespace: "team-a".into(),
            template: Arc::new(template),
            deadline: Some(10_500),
            output_paths: vec![("verdict".into(), "/tmp/verdict".into())],
        }
    }

    fn opts() -> JobOptions {
        JobOptions {
            riposte_image: "riposte:test".into(),
            riposte_image_pull_policy: "IfNotPresent".into(),
            ttl_seconds_after_finished: 60,
            namespace: None,
            workflow_uid: "uid-1".into(),
            now_ms: 1_000,
            callback_url: None,
        }
    }

    #[test]
    fn container_steps_are_wrapped_and_keep_pod_fields() {
        let n = node(
            r#"{"name": "isolate", "serviceAccountName": "responder", "nodeSelector": {"pool": "quarantine"},
                "runtimeClassName": "gvisor", "tolerations": [{"key": "q", "operator": "Exists"}],
                "container": {"image": "alpine", "command": ["sh", "-c"], "args": ["echo hi"],
                              "resources": {"limits": {"cpu": "100m"}}}}"#,
        );
        let job = job_manifest(&n, &opts()).expect("job");
        assert_eq!(job["metadata"]["namespace"], "team-a");
        assert_eq!(job["metadata"]["labels"]["riposte.dev/node-id"], "wf-123");
        assert_eq!(job["spec"]["backoffLimit"], 0);
        // 9.5 s left rounds up to 10.
        assert_eq!(job["spec"]["activeDeadlineSeconds"], 10);
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["serviceAccountName"], "responder");
        assert_eq!(pod["runtimeClassName"], "gvisor");
        assert_eq!(pod["nodeSelector"]["pool"], "quarantine");
        assert_eq!(pod["tolerations"][0]["key"], "q");
        let main = &pod["containers"][0];
        assert_eq!(
            main["command"],
            json!([
                "/var/run/riposte/riposte",
                "exec",
                "--output=verdict=/tmp/verdict",
                "--",
                "sh",
                "-c"
            ])
        );
        assert_eq!(main["args"], json!(["echo hi"]));
        assert_eq!(main["resources"]["limits"]["cpu"], "100m");
        assert_eq!(main["volumeMounts"][0]["mountPath"], WRAPPER_DIR);
        assert_eq!(pod["initContainers"][0]["image"], "riposte:test");
        // Pinned and pulled once per node: a step must not depend on a registry per run.
        assert_eq!(pod["initContainers"][0]["imagePullPolicy"], "IfNotPresent");
    }

    #[test]
    fn template_pod_metadata_reaches_the_pod_and_ours_wins() {
        let n = node(
            r#"{"name": "s", "metadata": {"labels": {"team": "sec", "riposte.dev/node-id": "spoof"}, "annotations": {"sidecar.istio.io/inject": "false"}},
                "container": {"image": "alpine", "command": ["true"]}}"#,
        );
        let job = job_manifest(&n, &opts()).expect("job");
        let meta = &job["spec"]["template"]["metadata"];
        assert_eq!(meta["labels"]["team"], "sec");
        assert_eq!(meta["labels"]["riposte.dev/node-id"], "wf-123");
        assert_eq!(meta["annotations"]["sidecar.istio.io/inject"], "false");
        assert_eq!(
            meta["annotations"]["workflows.argoproj.io/node-id"],
            "wf-123"
        );
    }

    /// With a callback, the Job names the token's Secret and mounts it; the token itself is
    /// never in the spec.
    #[test]
    fn callbacks_mount_the_token_secret() {
        let n = node(r#"{"name": "s", "container": {"image": "alpine", "command": ["true"]}}"#);
        let opts = JobOptions {
            callback_url: Some("http://riposte:2746/api/v1/riposte/callbacks/uid-1/wf-123".into()),
            ..opts()
        };
        let job = job_manifest(&n, &opts).expect("job");
        let pod = &job["spec"]["template"]["spec"];
        let env = pod["containers"][0]["env"].as_array().expect("env");
        assert!(env.contains(
            &json!({"name": "RIPOSTE_NODE_TOKEN_FILE", "value": "/var/run/riposte-token/token"})
        ));
        assert!(env.iter().any(|e| e["name"] == "RIPOSTE_CALLBACK_URL"));
        assert!(env.iter().all(|e| e["name"] != "RIPOSTE_NODE_TOKEN"));
        let volumes = pod["volumes"].as_array().expect("volumes");
        assert!(
            volumes
                .iter()
                .any(|v| v["secret"]["secretName"] == "wf-step-123-riposte-token")
        );
        let without = job_manifest(&n, &super::tests::opts()).expect("job");
        assert!(!without.to_string().contains("riposte-token"));
    }

    /// The init container is ours: it must pass Pod Security `restricted` in any namespace.
    #[test]
    fn the_injected_init_container_is_restricted_and_bounded() {
        let n = node(r#"{"name": "s", "container": {"image": "alpine", "command": ["true"]}}"#);
        let job = job_manifest(&n, &opts()).expect("job");
        let init = &job["spec"]["template"]["spec"]["initContainers"][0];
        let sc = &init["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        assert!(init["resources"]["limits"]["memory"].is_string());
    }

    #[test]
    fn scripts_travel_in_the_environment() {
        let n = node(
            r#"{"name": "s", "script": {"image": "python:3", "command": ["python"], "source": "print(1)"}}"#,
        );
        let job = job_manifest(&n, &opts()).expect("job");
        let main = &job["spec"]["template"]["spec"]["containers"][0];
        assert!(
            main["command"]
                .as_array()
                .expect("command")
                .contains(&json!("--script-from-env=RIPOSTE_SCRIPT"))
        );
        let env = main["env"].as_array().expect("env");
        assert!(env.contains(&json!({"name": "RIPOSTE_SCRIPT", "value": "print(1)"})));
    }

    #[test]
    fn what_cannot_be_a_job_is_a_clear_error() {
        let no_command = node(r#"{"name": "web", "container": {"image": "nginx:1.25"}}"#);
        let e = job_manifest(&no_command, &opts()).expect_err("no command");
        assert!(
            e.to_string()
                .contains("image \"nginx:1.25\" has no `command`"),
            "{e}"
        );
        let argosay = node(r#"{"name": "say", "container": {"image": "argoproj/argosay:v2"}}"#);
        let job = job_manifest(&argosay, &opts()).expect("known entrypoint");
        assert_eq!(
            job["spec"]["template"]["spec"]["containers"][0]["command"][4],
            "/argosay"
        );
        let suspend = node(r#"{"name": "gate", "suspend": {}}"#);
        assert!(matches!(
            job_manifest(&suspend, &opts()),
            Err(JobError::NotAPod { .. })
        ));
    }
}
