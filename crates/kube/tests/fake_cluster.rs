//! The Kubernetes executor end to end against the FAKE API server (`riposte-kube-fake`):
//! real HTTP, real kube-rs requests and watches; the test plays the kubelet.

use std::sync::Arc;
use std::time::Duration;

use engine::{ExecResult, ExecuteNode, Phase};
use kube_fake::{FakeApiServer, ResourceType};
use riposte_kube::{Cluster, ClusterOptions, KubeExecutor, Report};
use serde_json::{Value, json};
use tokio::sync::watch;

async fn setup() -> (FakeApiServer, Cluster) {
    let fake = FakeApiServer::start().await.expect("fake api server");
    fake.create_namespace("team-a");
    let uri: http::Uri = fake.url().parse().expect("uri");
    let client = kube::Client::try_from(kube::Config::new(uri)).expect("client");
    let cluster = Cluster::with_client(
        client,
        ClusterOptions {
            riposte_image: "ghcr.io/riposte/riposte:test".into(),
            riposte_image_pull_policy: "IfNotPresent".into(),
            ttl_seconds_after_finished: 600,
            job_namespace: None,
            callback_url: None,
            callback_secret: b"test-secret".to_vec(),
            image_pull_grace: Duration::from_secs(1),
        },
    );
    (fake, cluster)
}

fn node(id: &str, template: Value) -> ExecuteNode {
    let template: spec::Template = serde_json::from_value(template).expect("template");
    let output_paths = template
        .outputs
        .parameters
        .iter()
        .filter_map(|p| Some((p.name.clone(), p.value_from.as_ref()?.path.clone()?)))
        .collect();
    ExecuteNode {
        node_id: format!("wf-{id}"),
        node_name: format!("wf.{id}"),
        pod_name: format!("wf-{id}-1234"),
        workflow_name: "wf".into(),
        namespace: "team-a".into(),
        template: Arc::new(template),
        deadline: None,
        output_paths,
    }
}

fn never() -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    std::mem::forget(tx);
    rx
}

async fn run(exec: &KubeExecutor, n: &ExecuteNode) -> ExecResult {
    tokio::time::timeout(Duration::from_secs(20), exec.run(n, never(), None, false))
        .await
        .expect("the node finished")
}

fn resource(action: &str, manifest: &str) -> Value {
    json!({"name": "r", "resource": {"action": action, "manifest": manifest}})
}

#[tokio::test]
async fn resource_actions_create_apply_patch_replace_delete() {
    let (fake, cluster) = setup().await;
    let exec = cluster.executor("uid-1", None);

    // create, with outputs by jsonPath and jqFilter
    let mut t = resource(
        "create",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: evidence\n  labels: {cleanup: \"true\"}\ndata:\n  pod: web-1\n",
    );
    t["outputs"] = json!({"parameters": [
        {"name": "uid", "valueFrom": {"jsonPath": "{.metadata.uid}"}},
        {"name": "pod", "valueFrom": {"jqFilter": ".data.pod"}},
    ]});
    let r = run(&exec, &node("create", t)).await;
    assert_eq!(r.phase, Phase::Succeeded, "{r:?}");
    assert!(
        r.parameters["uid"]
            .as_deref()
            .is_some_and(|u| u.starts_with("00000000-"))
    );
    assert_eq!(r.parameters["pod"].as_deref(), Some("web-1"));
    let created = fake
        .get("configmaps", "team-a", "evidence")
        .expect("created");
    assert_eq!(created["data"]["pod"], "web-1");

    // create again: AlreadyExists is an error with the API's message
    let again = run(
        &exec,
        &node(
            "create2",
            resource(
                "create",
                "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: evidence\n",
            ),
        ),
    )
    .await;
    assert_eq!(again.phase, Phase::Error);
    assert!(
        again.message.contains("already exists"),
        "{}",
        again.message
    );

    // apply creates, then updates (server-side apply)
    let np = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: isolate-web-1\nspec:\n  podSelector: {matchLabels: {quarantine: \"true\"}}\n  policyTypes: [Ingress, Egress]\n";
    assert_eq!(
        run(&exec, &node("apply", resource("apply", np)))
            .await
            .phase,
        Phase::Succeeded
    );
    let first = fake
        .get("networkpolicies", "team-a", "isolate-web-1")
        .expect("applied");
    let np2 = np.replace("[Ingress, Egress]", "[Ingress]");
    assert_eq!(
        run(&exec, &node("apply2", resource("apply", &np2)))
            .await
            .phase,
        Phase::Succeeded
    );
    let second = fake
        .get("networkpolicies", "team-a", "isolate-web-1")
        .expect("applied");
    assert_eq!(second["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(second["metadata"]["uid"], first["metadata"]["uid"]);
    assert!(fake.requests().iter().any(|r| r.starts_with(
        "PATCH /apis/networking.k8s.io/v1/namespaces/team-a/networkpolicies/isolate-web-1?"
    ) && r.contains("fieldManager=riposte")
        && r.contains("force=true")));

    // patch: merge labels onto a pod; strategic into a Deployment; json with flags
    fake.create(&ResourceType::new("", "v1", "Pod", "pods", true), "team-a",
        json!({"metadata": {"name": "web-1", "labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx"}]}})).expect("pod");
    let mut t = resource("patch", "metadata:\n  labels:\n    quarantine: \"true\"\n");
    t["resource"]["mergeStrategy"] = json!("merge");
    t["resource"]["flags"] = json!(["pod", "web-1"]);
    let r = run(&exec, &node("label", t)).await;
    assert_eq!(r.phase, Phase::Succeeded, "{r:?}");
    let pod = fake.get("pods", "team-a", "web-1").expect("pod");
    assert_eq!(
        pod["metadata"]["labels"],
        json!({"app": "web", "quarantine": "true"})
    );

    fake.create(&ResourceType::new("apps", "v1", "Deployment", "deployments", true), "team-a",
        json!({"metadata": {"name": "web"}, "spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx"}, {"name": "sidecar", "image": "envoy"}]}}}})).expect("deployment");
    let t = resource(
        "patch",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  template:\n    spec:\n      runtimeClassName: gvisor\n      nodeSelector: {pool: quarantine}\n      containers: [{name: web, image: nginx:1.27}]\n",
    );
    assert_eq!(run(&exec, &node("gvisor", t)).await.phase, Phase::Succeeded);
    let d = fake
        .get("deployments", "team-a", "web")
        .expect("deployment");
    assert_eq!(d["spec"]["template"]["spec"]["runtimeClassName"], "gvisor");
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][1]["image"], "envoy",
        "strategic merge keeps the other container"
    );
    assert_eq!(d["metadata"]["generation"], 2);

    let mut t = resource(
        "patch",
        "- op: add\n  path: /metadata/annotations\n  value: {riposte.dev/isolated: \"true\"}\n",
    );
    t["resource"]["mergeStrategy"] = json!("json");
    t["resource"]["flags"] = json!(["pod", "web-1"]);
    assert_eq!(
        run(&exec, &node("jsonpatch", t)).await.phase,
        Phase::Succeeded
    );
    assert_eq!(
        fake.get("pods", "team-a", "web-1").expect("pod")["metadata"]["annotations"]["riposte.dev/isolated"],
        "true"
    );

    // a patch never creates
    let t = resource(
        "patch",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: ghost, labels: {quarantine: \"true\"}}\n",
    );
    let r = run(&exec, &node("ghost", t)).await;
    assert_eq!(r.phase, Phase::Error);
    assert!(
        r.message.contains("does not exist") && r.message.contains("404"),
        "{}",
        r.message
    );
    assert!(fake.get("pods", "team-a", "ghost").is_none());

    // replace
    let r = run(
        &exec,
        &node(
            "replace",
            resource(
                "replace",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: evidence}\ndata: {pod: web-2}\n",
            ),
        ),
    )
    .await;
    assert_eq!(r.phase, Phase::Succeeded, "{r:?}");
    assert_eq!(
        fake.get("configmaps", "team-a", "evidence").expect("cm")["data"],
        json!({"pod": "web-2"})
    );
    let r = run(
        &exec,
        &node(
            "replace-missing",
            resource(
                "replace",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: nope}\n",
            ),
        ),
    )
    .await;
    assert_eq!(r.phase, Phase::Error);

    // delete by name, missing is fine; delete by selector
    let r = run(
        &exec,
        &node(
            "delete",
            resource(
                "delete",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1}\n",
            ),
        ),
    )
    .await;
    assert_eq!(r.phase, Phase::Succeeded);
    assert!(fake.get("pods", "team-a", "web-1").is_none());
    let r = run(
        &exec,
        &node(
            "delete-again",
            resource(
                "delete",
                "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1}\n",
            ),
        ),
    )
    .await;
    assert_eq!(r.phase, Phase::Succeeded, "{r:?}");
    for name in ["evidence-a", "evidence-b"] {
        let m = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, labels: {{cleanup: \"true\"}}}}\n"
        );
        assert_eq!(
            run(&exec, &node(name, resource("create", &m))).await.phase,
            Phase::Succeeded
        );
    }
    let t = json!({"name": "d", "resource": {"action": "delete", "flags": ["configmap", "--selector", "cleanup=true"]}});
    assert_eq!(
        run(&exec, &node("delete-sel", t)).await.phase,
        Phase::Succeeded
    );
    assert!(fake.get("configmaps", "team-a", "evidence-a").is_none());
    assert!(fake.get("configmaps", "team-a", "evidence-b").is_none());
    assert!(
        fake.get("configmaps", "team-a", "evidence").is_some(),
        "unlabelled since the replace"
    );

    // an unknown kind names the problem
    let r = run(
        &exec,
        &node(
            "crd",
            resource(
                "create",
                "apiVersion: route.openshift.io/v1\nkind: Route\nmetadata: {name: r}\n",
            ),
        ),
    )
    .await;
    assert!(r.message.contains("is the CRD installed"), "{}", r.message);
}

#[tokio::test]
async fn resource_conditions_are_watched_until_they_decide() {
    let (fake, cluster) = setup().await;
    fake.add_resource(ResourceType::new(
        "aquasecurity.github.io",
        "v1alpha1",
        "VulnerabilityReport",
        "vulnerabilityreports",
        true,
    ));
    let exec = cluster.executor("uid-1", None);
    let mut t = resource(
        "create",
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: scan}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers: [{name: main, image: trivy, command: [trivy]}]\n",
    );
    t["resource"]["successCondition"] = json!("status.succeeded > 0");
    t["resource"]["failureCondition"] = json!("status.failed > 0");
    let n = node("scan", t);
    let task = tokio::spawn({
        let exec = exec.clone();
        async move { run(&exec, &n).await }
    });
    let pod = fake
        .wait_for("pods", "team-a", Duration::from_secs(10), |p| {
            p["metadata"]["labels"]["job-name"] == "scan"
        })
        .await
        .expect("the job controller made a pod");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!task.is_finished(), "waits for the condition");
    fake.finish_pod(
        "team-a",
        pod["metadata"]["name"].as_str().expect("name"),
        0,
        "",
    )
    .expect("finish");
    let r = task.await.expect("join");
    assert_eq!(r.phase, Phase::Succeeded, "{r:?}");

    // failureCondition on a CRD
    let mut t = resource(
        "create",
        "apiVersion: aquasecurity.github.io/v1alpha1\nkind: VulnerabilityReport\nmetadata: {name: web}\nreport: {summary: {criticalCount: 2}}\n",
    );
    t["resource"]["failureCondition"] = json!("report.summary.criticalCount > 0");
    let r = run(&exec, &node("vuln", t)).await;
    assert_eq!(r.phase, Phase::Failed);
    assert!(r.message.contains("criticalCount"), "{}", r.message);

    // Strategic merge (the default) on a custom resource: the API refuses; we say what to do.
    let t = resource(
        "patch",
        "apiVersion: aquasecurity.github.io/v1alpha1\nkind: VulnerabilityReport\nmetadata: {name: web, labels: {triaged: \"true\"}}\n",
    );
    let r = run(&exec, &node("vuln-label", t)).await;
    assert!(
        r.message.contains("set mergeStrategy: merge"),
        "{}",
        r.message
    );
}

/// The kubelet's part for one Job: the pod ran and the wrapper left `report`.
async fn finish_job_pod(fake: &FakeApiServer, job: &str, exit: i32, report: Value) {
    let pod = fake
        .wait_for("pods", "team-a", Duration::from_secs(10), |p| {
            p["metadata"]["labels"]["job-name"] == job
        })
        .await
        .expect("pod");
    let name = pod["metadata"]["name"].as_str().expect("name").to_string();
    fake.start_pod("team-a", &name).expect("start");
    fake.append_log("team-a", &name, "scanning\nfound 2\n");
    fake.finish_pod("team-a", &name, exit, &report.to_string())
        .expect("finish");
}

#[tokio::test]
async fn jobs_report_through_the_termination_message_and_logs_are_followed() {
    let (fake, cluster) = setup().await;
    let logs = tempfile::tempdir().expect("tmp");
    let exec = cluster.executor("uid-1", Some(logs.path().to_path_buf()));
    let t = json!({"name": "scan", "container": {"image": "alpine:3.20", "command": ["sh", "-c"], "args": ["echo found 2 > /tmp/n"]},
        "outputs": {"parameters": [{"name": "n", "valueFrom": {"path": "/tmp/n"}}]}});
    let n = node("scan", t);
    let task = tokio::spawn({
        let exec = exec.clone();
        let n = n.clone();
        async move { run(&exec, &n).await }
    });
    finish_job_pod(
        &fake,
        "wf-scan-1234",
        0,
        json!({"exitCode": 0, "result": "found 2", "outputs": {"n": "2"}, "missingOutputs": []}),
    )
    .await;
    let r = task.await.expect("join");
    assert_eq!(r.phase, Phase::Succeeded, "{r:?}");
    assert_eq!(r.result.as_deref(), Some("found 2"));
    assert_eq!(r.parameters["n"].as_deref(), Some("2"));
    let job = fake.get("jobs", "team-a", "wf-scan-1234").expect("job");
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(
        job["metadata"]["labels"]["riposte.dev/workflow-uid"],
        "uid-1"
    );
    let log = std::fs::read_to_string(logs.path().join("wf-scan.log")).expect("log file");
    assert_eq!(log, "scanning\nfound 2\n");
    // Completion is watched (the namespace's shared watch of Riposte's Jobs: LIST, then
    // WATCH), not polled with GETs.
    let reqs = fake.requests();
    assert!(
        reqs.iter().any(
            |r| r.starts_with("GET /apis/batch/v1/namespaces/team-a/jobs?")
                && r.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Driposte")
        ),
        "{reqs:#?}"
    );
    assert!(
        !reqs
            .iter()
            .any(|r| r.starts_with("GET /apis/batch/v1/namespaces/team-a/jobs/wf-scan-1234"))
    );

    // A failing step: Argo's message; a wrapper that could not start the command: Error.
    let n = node(
        "fail",
        json!({"name": "fail", "container": {"image": "alpine", "command": ["false"]}}),
    );
    let task = tokio::spawn({
        let exec = exec.clone();
        async move { run(&exec, &n).await }
    });
    finish_job_pod(
        &fake,
        "wf-fail-1234",
        1,
        json!({"exitCode": 1, "result": ""}),
    )
    .await;
    let r = task.await.expect("join");
    assert_eq!(
        (r.phase, r.message.as_str()),
        (Phase::Failed, "main: Error (exit code 1)")
    );

    // A pod whose termination message is not a report (the wrapper never ran).
    let n = node(
        "noreport",
        json!({"name": "x", "container": {"image": "alpine", "command": ["true"]}}),
    );
    let task = tokio::spawn({
        let exec = exec.clone();
        async move { run(&exec, &n).await }
    });
    let pod = fake
        .wait_for("pods", "team-a", Duration::from_secs(10), |p| {
            p["metadata"]["labels"]["job-name"] == "wf-noreport-1234"
        })
        .await
        .expect("pod");
    fake.finish_pod(
        "team-a",
        pod["metadata"]["name"].as_str().expect("name"),
        126,
        "exec format error",
    )
    .expect("finish");
    let r = task.await.expect("join");
    assert_eq!(r.phase, Phase::Failed);
    assert!(
        r.message.contains("exit code 126") && r.message.contains("exec format error"),
        "{}",
        r.message
    );
}

#[tokio::test]
async fn callbacks_finish_the_node_before_the_job_does() {
    let (fake, cluster) = setup().await;
    let cluster = Cluster::with_client(
        cluster.client().clone(),
        ClusterOptions {
            callback_url: Some("http://riposte.riposte.svc:2746".into()),
            ..cluster.options().clone()
        },
    );
    let exec = cluster.executor("uid-9", None);
    let n = node(
        "cb",
        json!({"name": "cb", "container": {"image": "alpine", "command": ["echo", "hi"]}}),
    );
    let task = tokio::spawn({
        let exec = exec.clone();
        let n = n.clone();
        async move { run(&exec, &n).await }
    });
    let job = fake
        .wait_for("jobs", "team-a", Duration::from_secs(10), |j| {
            j["metadata"]["name"] == "wf-cb-1234"
        })
        .await
        .expect("job");
    let env = job["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .expect("env")
        .clone();
    assert!(
        env.iter().all(|e| e["name"] != "RIPOSTE_NODE_TOKEN"),
        "no token in the Job spec"
    );
    let url = env
        .iter()
        .find(|e| e["name"] == "RIPOSTE_CALLBACK_URL")
        .expect("url")["value"]
        .clone();
    assert_eq!(
        url,
        "http://riposte.riposte.svc:2746/api/v1/riposte/callbacks/uid-9/wf-cb"
    );
    // The token is in a Secret owned by the Job (gone with it), mounted as a file.
    let secret = fake
        .wait_for("secrets", "team-a", Duration::from_secs(10), |s| {
            s["metadata"]["name"] == "wf-cb-1234-riposte-token"
        })
        .await
        .expect("token secret");
    assert_eq!(
        secret["metadata"]["ownerReferences"][0]["uid"],
        job["metadata"]["uid"]
    );
    let token = String::from_utf8(kube_fake::base64_decode(
        secret["data"]["token"].as_str().expect("token"),
    ))
    .expect("utf-8");
    assert!(cluster.token_is_valid("uid-9", "wf-cb", &token));
    assert!(!cluster.token_is_valid("uid-9", "wf-other", &token));
    let report = Report::from_json(&json!({"exitCode": 0, "result": "hi"})).expect("report");
    // The waiter is registered before the Job is created, so this cannot race.
    assert!(cluster.deliver("uid-9", "wf-cb", report.clone()));
    let r = task.await.expect("join");
    assert_eq!(
        (r.phase, r.result.as_deref()),
        (Phase::Succeeded, Some("hi"))
    );
    assert!(
        !cluster.deliver("uid-9", "wf-cb", report),
        "a second report finds no waiter"
    );
}

#[tokio::test]
async fn cancel_deletes_the_job_with_its_pod_and_reattach_never_creates_twice() {
    let (fake, cluster) = setup().await;
    let exec = cluster.executor("uid-1", None);
    let n = node(
        "long",
        json!({"name": "long", "container": {"image": "alpine", "command": ["sleep", "3600"]}}),
    );
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let task = tokio::spawn({
        let exec = exec.clone();
        let n = n.clone();
        async move { exec.run(&n, cancel_rx, None, false).await }
    });
    fake.wait_for("pods", "team-a", Duration::from_secs(10), |p| {
        p["metadata"]["labels"]["job-name"] == "wf-long-1234"
    })
    .await
    .expect("pod");
    cancel_tx.send(true).expect("cancel");
    let r = tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("cancelled in time")
        .expect("join");
    assert_eq!((r.phase, r.message.as_str()), (Phase::Error, "cancelled"));
    assert!(fake.get("jobs", "team-a", "wf-long-1234").is_none());
    assert!(
        fake.list("pods", "team-a").is_empty(),
        "background propagation removed the pod"
    );
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.starts_with("DELETE /apis/batch/v1/namespaces/team-a/jobs/wf-long-1234"))
    );

    // A controller restarted while a node ran: its Job is found again, not created again.
    let n = node(
        "again",
        json!({"name": "again", "container": {"image": "alpine", "command": ["true"]}}),
    );
    let first = tokio::spawn({
        let exec = exec.clone();
        let n = n.clone();
        async move { run(&exec, &n).await }
    });
    fake.wait_for("jobs", "team-a", Duration::from_secs(10), |j| {
        j["metadata"]["name"] == "wf-again-1234"
    })
    .await
    .expect("job");
    first.abort(); // the controller died
    let second = tokio::spawn({
        let exec = exec.clone();
        let n = n.clone();
        async move { exec.run(&n, never(), None, true).await }
    });
    finish_job_pod(
        &fake,
        "wf-again-1234",
        0,
        json!({"exitCode": 0, "result": "ok"}),
    )
    .await;
    let r = tokio::time::timeout(Duration::from_secs(10), second)
        .await
        .expect("finished")
        .expect("join");
    assert_eq!(r.result.as_deref(), Some("ok"));
    let creates = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /apis/batch/v1/namespaces/team-a/jobs"))
        .count();
    assert_eq!(creates, 2, "one create for 'long', one for 'again'");

    // Re-attaching to a Job that is gone says so instead of re-running the step.
    let n = node(
        "gone",
        json!({"name": "gone", "container": {"image": "alpine", "command": ["true"]}}),
    );
    let r = exec.run(&n, never(), None, true).await;
    assert_eq!(r.phase, Phase::Error);
    assert!(r.message.contains("no longer exists"), "{}", r.message);
}

#[tokio::test]
async fn set_owner_reference_ties_objects_to_the_workflow_until_it_is_deleted() {
    let (fake, cluster) = setup().await;
    let exec = cluster.executor("uid-7", None);
    let mut t = resource(
        "create",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: owned-eg-\ndata:\n  some: value\n",
    );
    t["resource"]["setOwnerReference"] = json!(true);
    let r = run(&exec, &node("owned", t)).await;
    assert_eq!(r.phase, Phase::Succeeded, "{r:?}");
    let owned = fake
        .list("configmaps", "team-a")
        .into_iter()
        .find(|c| {
            c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("owned-eg-"))
        })
        .expect("created");
    let anchor = fake
        .get("configmaps", "team-a", "riposte-owner-uid-7")
        .expect("owner anchor");
    assert_eq!(
        owned["metadata"]["ownerReferences"][0]["uid"],
        anchor["metadata"]["uid"]
    );
    assert_eq!(
        owned["metadata"]["labels"]["riposte.dev/workflow-uid"],
        "uid-7"
    );

    // A second owned object reuses the anchor.
    let mut t = resource(
        "apply",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: owned-too}\n",
    );
    t["resource"]["setOwnerReference"] = json!(true);
    assert_eq!(run(&exec, &node("owned2", t)).await.phase, Phase::Succeeded);
    assert_eq!(
        fake.list("configmaps", "team-a")
            .iter()
            .filter(|c| c["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("riposte-owner-")))
            .count(),
        1
    );

    // Cluster-scoped objects cannot have a namespaced owner: said plainly.
    let mut t = resource(
        "create",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: quarantine}\n",
    );
    t["resource"]["setOwnerReference"] = json!(true);
    let r = run(&exec, &node("ns", t)).await;
    assert!(r.message.contains("cluster-scoped"), "{}", r.message);

    // Deleting the workflow: the anchor goes, the garbage collector takes what it owned.
    let deleted = cluster
        .delete_workflow_objects("uid-7")
        .await
        .expect("delete");
    assert_eq!(deleted, 1);
    assert!(
        fake.get("configmaps", "team-a", "riposte-owner-uid-7")
            .is_none()
    );
    assert!(fake.get("configmaps", "team-a", "owned-too").is_none());
    assert!(
        fake.get(
            "configmaps",
            "team-a",
            owned["metadata"]["name"].as_str().unwrap_or_default()
        )
        .is_none()
    );
}

#[tokio::test]
async fn a_pod_that_cannot_start_fails_the_node_instead_of_hanging() {
    let (fake, cluster) = setup().await;
    let exec = cluster.executor("uid-1", None);
    for (id, reason) in [
        ("badname", "InvalidImageName"),
        ("backoff", "ImagePullBackOff"),
    ] {
        let n = node(
            id,
            json!({"name": id, "container": {"image": "nope::", "command": ["true"]}}),
        );
        let task = tokio::spawn({
            let exec = exec.clone();
            async move { run(&exec, &n).await }
        });
        let job = format!("wf-{id}-1234");
        let pod = fake
            .wait_for("pods", "team-a", Duration::from_secs(10), |p| {
                p["metadata"]["labels"]["job-name"] == job.as_str()
            })
            .await
            .expect("pod");
        let pod_name = pod["metadata"]["name"].as_str().expect("name").to_string();
        fake.wait_pod(
            "team-a",
            &pod_name,
            "main",
            reason,
            "image \"nope::\" is bad",
        )
        .expect("waiting");
        // ImagePullBackOff fails after the grace (1 s here); InvalidImageName at once.
        let r = task.await.expect("join");
        assert_eq!(r.phase, Phase::Error);
        assert!(
            r.message.starts_with(&format!("main: {reason}")),
            "{}",
            r.message
        );
        assert!(
            fake.get("jobs", "team-a", &job).is_none(),
            "the Job is deleted"
        );
    }
}

/// A playbook reads a Kyverno PolicyReport (a CRD) to find the pods to act on.
#[tokio::test]
async fn policy_reports_are_read_like_any_other_kind() {
    let (fake, cluster) = setup().await;
    fake.create_namespace("payments");
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/payloads/policyreport-fail.yaml"),
    )
    .expect("payload");
    let report = spec::yaml::load_documents(&text)
        .expect("yaml")
        .remove(0)
        .value;
    fake.create(
        &ResourceType::new(
            "wgpolicyk8s.io",
            "v1alpha2",
            "PolicyReport",
            "policyreports",
            true,
        ),
        "payments",
        report,
    )
    .expect("report");
    let exec = cluster.executor("uid-1", None);
    let mut t = resource(
        "get",
        "apiVersion: wgpolicyk8s.io/v1alpha2\nkind: PolicyReport\nmetadata: {name: polr-ns-payments, namespace: payments}\n",
    );
    t["resource"]["successCondition"] = json!("summary.fail > 0");
    t["outputs"] = json!({"parameters": [
        {"name": "failed", "valueFrom": {"jsonPath": "{.summary.fail}"}},
        {"name": "pods", "valueFrom": {"jqFilter": "[.results[] | select(.result == \"fail\") | .resources[].name] | unique | join(\",\")"}},
    ]});
    let r = run(&exec, &node("polr", t)).await;
    assert_eq!(r.phase, Phase::Succeeded, "{r:?}");
    assert_eq!(r.parameters["failed"].as_deref(), Some("2"));
    assert_eq!(
        r.parameters["pods"].as_deref(),
        Some("payments-api-7c9d4f8b7-k2x9q")
    );
}

/// A loaded API server answers 429 or 500 ServerTimeout; those calls are made again.
#[tokio::test]
async fn transient_api_errors_are_retried() {
    let (fake, cluster) = setup().await;
    let exec = cluster.executor("uid-1", None);
    fake.fail_next(
        "POST",
        "/api/v1/namespaces/team-a/configmaps",
        429,
        "TooManyRequests",
    );
    fake.fail_next(
        "POST",
        "/api/v1/namespaces/team-a/configmaps",
        500,
        "ServerTimeout",
    );
    let r = run(
        &exec,
        &node(
            "busy",
            resource(
                "create",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: busy}\n",
            ),
        ),
    )
    .await;
    assert_eq!(r.phase, Phase::Succeeded, "{r:?}");
    let posts = fake
        .requests()
        .iter()
        .filter(|r| r.starts_with("POST /api/v1/namespaces/team-a/configmaps"))
        .count();
    assert_eq!(posts, 3);

    // Jobs too; and a real refusal (403) is not retried.
    fake.fail_next(
        "POST",
        "/apis/batch/v1/namespaces/team-a/jobs",
        503,
        "ServiceUnavailable",
    );
    let n = node(
        "busyjob",
        json!({"name": "j", "container": {"image": "alpine", "command": ["true"]}}),
    );
    let task = tokio::spawn({
        let exec = exec.clone();
        async move { run(&exec, &n).await }
    });
    finish_job_pod(
        &fake,
        "wf-busyjob-1234",
        0,
        json!({"exitCode": 0, "result": "ok"}),
    )
    .await;
    assert_eq!(task.await.expect("join").result.as_deref(), Some("ok"));
    fake.fail_next(
        "POST",
        "/api/v1/namespaces/team-a/configmaps",
        403,
        "Forbidden",
    );
    let r = run(
        &exec,
        &node(
            "denied",
            resource(
                "create",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: denied}\n",
            ),
        ),
    )
    .await;
    assert_eq!(r.phase, Phase::Error);
    assert!(r.message.contains("Forbidden"), "{}", r.message);
}

/// The result is taken when the pod's `main` container has terminated with the wrapper's
/// report, not seconds later when the Job controller marks the Job `Complete` (which here
/// never happens).
#[tokio::test]
async fn the_result_comes_from_the_terminated_pod_before_the_job_completes() {
    let (fake, cluster) = setup().await;
    let exec = cluster.executor("uid-1", None);
    let n = node(
        "quick",
        json!({"name": "quick", "container": {"image": "alpine", "command": ["echo", "hi"]}}),
    );
    let task = tokio::spawn({
        let exec = exec.clone();
        async move { run(&exec, &n).await }
    });
    let pod = fake
        .wait_for("pods", "team-a", Duration::from_secs(10), |p| {
            p["metadata"]["labels"]["job-name"] == "wf-quick-1234"
        })
        .await
        .expect("pod");
    let name = pod["metadata"]["name"].as_str().expect("name").to_string();
    fake.start_pod("team-a", &name).expect("start");
    let report = json!({"exitCode": 0, "result": "hi", "outputs": {}, "missingOutputs": []});
    fake.terminate_main("team-a", &name, 0, &report.to_string())
        .expect("terminate");
    let r = task.await.expect("join");
    assert_eq!(
        (r.phase, r.result.as_deref()),
        (Phase::Succeeded, Some("hi"))
    );
    let job = fake.get("jobs", "team-a", "wf-quick-1234").expect("job");
    assert!(
        job["status"]["conditions"].is_null(),
        "the Job was not finished yet: {job}"
    );
}

/// An init container that fails (the wrapper cannot be installed) is reported with its own
/// reason and message, like a failing main container, not as a vague Job failure.
#[tokio::test]
async fn a_failed_init_container_is_reported_with_its_message() {
    let (fake, cluster) = setup().await;
    let exec = cluster.executor("uid-1", None);
    let n = node(
        "noinit",
        json!({"name": "noinit", "container": {"image": "alpine", "command": ["true"]}}),
    );
    let task = tokio::spawn({
        let exec = exec.clone();
        async move { run(&exec, &n).await }
    });
    let pod = fake
        .wait_for("pods", "team-a", Duration::from_secs(10), |p| {
            p["metadata"]["labels"]["job-name"] == "wf-noinit-1234"
        })
        .await
        .expect("pod");
    let name = pod["metadata"]["name"].as_str().expect("name").to_string();
    let kubelet =
        "failed to create containerd task: exec: \"riposte\": executable file not found in $PATH";
    fake.fail_init_container("team-a", &name, "riposte-init", 128, kubelet)
        .expect("fail init");
    let r = task.await.expect("join");
    assert_eq!(r.phase, Phase::Error, "{}", r.message);
    assert_eq!(
        r.message,
        format!("riposte-init: StartError (exit code 128): {kubelet}")
    );
}

/// Many steps at once share one Job watch and one pod watch per namespace: the number of
/// watch connections is a constant, not one (or three) per running step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_steps_share_one_job_watch_and_one_pod_watch() {
    let (fake, cluster) = setup().await;
    let logs = tempfile::tempdir().expect("tmp");
    let exec = cluster.executor("uid-many", Some(logs.path().to_path_buf()));
    let kubelet = {
        let fake = fake.clone();
        tokio::spawn(async move {
            let mut done = std::collections::BTreeSet::new();
            loop {
                for p in fake.list("pods", "team-a") {
                    let name = p["metadata"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string();
                    if p["status"]["phase"] == "Pending" && done.insert(name.clone()) {
                        let _ = fake.start_pod("team-a", &name);
                        fake.append_log("team-a", &name, &format!("{name}\n"));
                        let _ =
                            fake.finish_pod("team-a", &name, 0, r#"{"exitCode":0,"result":"ok"}"#);
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let steps: Vec<_> = (0..40)
        .map(|i| {
            let exec = exec.clone();
            let n = node(
                &format!("s{i}"),
                json!({"name": "s", "container": {"image": "alpine", "command": ["true"]}}),
            );
            tokio::spawn(async move { run(&exec, &n).await })
        })
        .collect();
    for s in steps {
        let r = s.await.expect("join");
        assert_eq!(r.result.as_deref(), Some("ok"), "{r:?}");
    }
    kubelet.abort();
    assert!(
        fake.peak_watches() <= 2,
        "40 concurrent steps opened {} watches at once (one Job and one pod watch expected)",
        fake.peak_watches()
    );
    // Every step's log was still followed.
    let log = std::fs::read_to_string(logs.path().join("wf-s7.log")).expect("log file");
    assert!(log.starts_with("wf-s7-1234"), "{log}");
}

/// A paged LIST is one snapshot: objects created between pages neither shift the pages (an
/// offset would skip one) nor advance the resourceVersion a watcher resumes from.
#[tokio::test]
async fn paged_lists_are_consistent_while_objects_are_created() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    let (fake, cluster) = setup().await;
    let pods = ResourceType::new("", "v1", "Pod", "pods", true);
    let make = |name: &str| {
        fake.create(
            &pods,
            "team-a",
            json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
        )
        .expect("pod");
    };
    for name in ["p-b", "p-d", "p-f", "p-h"] {
        make(name);
    }
    let api: Api<Pod> = Api::namespaced(cluster.client().clone(), "team-a");
    let first = api
        .list(&ListParams::default().limit(2))
        .await
        .expect("page 1");
    let rv = first.metadata.resource_version.clone();
    // Created between the pages, sorting before everything already listed.
    make("p-a");
    let token = first.metadata.continue_.clone().expect("a next page");
    let second = api
        .list(&ListParams::default().limit(2).continue_token(&token))
        .await
        .expect("page 2");
    let names: Vec<String> = first
        .items
        .iter()
        .chain(second.items.iter())
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["p-b", "p-d", "p-f", "p-h"]);
    assert_eq!(second.metadata.resource_version, rv, "one snapshot");
}
