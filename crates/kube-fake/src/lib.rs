//! A **fake** Kubernetes API server for tests. It is not Kubernetes.
//!
//! What it does, over real HTTP so that kube-rs's own request and watch code is exercised:
//! - keeps objects in memory with a cluster-wide `resourceVersion` counter, `uid`,
//!   `creationTimestamp`, `generation`, `generateName`;
//! - serves discovery (`/api/v1`, `/apis/{group}/{version}`) for the kinds it knows
//!   ([`FakeApiServer::add_resource`] registers CRDs);
//! - `GET` (object and list, with `labelSelector`, `fieldSelector` on `metadata.name` /
//!   `metadata.namespace`, `limit`/`continue`), `POST`, `PUT` (with resourceVersion
//!   preconditions), `PATCH` (merge, JSON patch, strategic merge, server-side apply), `DELETE`
//!   (with `propagationPolicy` and ownerReference cascade; Jobs default to `Orphan` like the
//!   real API);
//! - watches (`?watch=true&resourceVersion=N`): `ADDED`/`MODIFIED`/`DELETED` events after N,
//!   then live ones, ending at `timeoutSeconds`;
//! - errors as Kubernetes `Status` objects: 404 NotFound, 409 AlreadyExists/Conflict,
//!   422 Invalid, 400 BadRequest;
//! - a minimal Job controller: a created Job gets one Pod (labels `job-name`,
//!   `controller-uid`, an ownerReference); when the test finishes that Pod, the Job gets the
//!   `Complete` or `Failed` condition;
//! - pod logs (`/log`, `follow=true` streams until the container ends).
//!
//! The test plays the kubelet: [`FakeApiServer::finish_pod`] moves a pod to Succeeded/Failed
//! with an exit code and a termination message, or [`HostKubelet`] runs each pod's main
//! container command as a host process.
//!
//! What it does not do: admission, authentication, schema validation beyond names and a few
//! Job fields, `activeDeadlineSeconds` enforcement, strategic-merge directives (`$patch`,
//! `$retainKeys`; lists of objects merge by `name`), server-side apply field ownership
//! (apply is a merge by the one manager), watch bookmarks and compaction (410 Gone).

mod kubelet;
mod patch;
mod selector;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::sync::watch;

pub use kubelet::HostKubelet;

/// A kind the fake serves.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// `""` for the core group.
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub namespaced: bool,
}

impl ResourceType {
    pub fn new(group: &str, version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        ResourceType {
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            plural: plural.into(),
            namespaced,
        }
    }
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
    /// `jobs.batch`, `pods`: how Status messages name the resource.
    fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }
}

#[derive(Debug, Clone)]
struct Event {
    rv: u64,
    resource: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

type Key = (String, String, String); // (qualified resource, namespace, name)

#[derive(Default, Clone)]
struct Cluster {
    resources: Vec<ResourceType>,
    objects: BTreeMap<Key, Value>,
    events: Vec<Event>,
    rv: u64,
    uid_counter: u64,
    logs: BTreeMap<(String, String), String>,
    /// Every request as `METHOD path?query`, for tests that check the HTTP shape.
    requests: Vec<String>,
    /// Injected failures: the next request matching (method, path prefix) gets the error.
    faults: Vec<(String, String, StatusError)>,
    /// Whether the kubelets serve the checkpoint API.
    checkpoints: bool,
}

/// A running fake API server. Cheap to clone; all clones share one cluster.
#[derive(Clone)]
pub struct FakeApiServer {
    cluster: Arc<Mutex<Cluster>>,
    changed: Arc<watch::Sender<u64>>,
    url: String,
    watches: Arc<WatchCount>,
}

/// Open watch connections now and at most, for tests that check watches are shared.
#[derive(Debug, Default)]
struct WatchCount {
    open: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
}

/// Counts one open watch for as long as it lives.
struct OpenWatch(Arc<WatchCount>);

impl OpenWatch {
    fn new(count: Arc<WatchCount>) -> OpenWatch {
        use std::sync::atomic::Ordering::SeqCst;
        let now = count.open.fetch_add(1, SeqCst) + 1;
        count.peak.fetch_max(now, SeqCst);
        OpenWatch(count)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0
            .open
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// `(name, object)` of the objects of `plural` in `namespace` (`""`: all namespaces).
fn of_kind<'c>(
    c: &'c Cluster,
    plural: &'c str,
    namespace: &'c str,
) -> impl Iterator<Item = (&'c str, &'c Value)> + 'c {
    c.objects
        .iter()
        .filter(move |((r, ns, _), _)| {
            r.split('.').next() == Some(plural) && (namespace.is_empty() || ns == namespace)
        })
        .map(|((_, _, n), o)| (n.as_str(), o))
}

fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0) as i64;
    // Civil-from-days (Howard Hinnant), to avoid a date crate in a test helper.
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// A Kubernetes `Status` failure.
#[derive(Debug, Clone)]
pub struct StatusError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
}

impl StatusError {
    fn not_found(rt: &ResourceType, name: &str) -> Self {
        StatusError {
            code: 404,
            reason: "NotFound",
            message: format!("{} \"{name}\" not found", rt.qualified()),
        }
    }
    fn bad_request(message: impl Into<String>) -> Self {
        StatusError {
            code: 400,
            reason: "BadRequest",
            message: message.into(),
        }
    }
    fn invalid(rt: &ResourceType, name: &str, cause: &str) -> Self {
        StatusError {
            code: 422,
            reason: "Invalid",
            message: format!("{} \"{name}\" is invalid: {cause}", rt.kind),
        }
    }
    fn body(&self) -> Value {
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": self.message, "reason": self.reason, "code": self.code,
        })
    }
}

impl IntoResponse for StatusError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.body())).into_response()
    }
}

fn default_resources() -> Vec<ResourceType> {
    [
        ("", "v1", "Namespace", "namespaces", false),
        ("", "v1", "Pod", "pods", true),
        ("", "v1", "Service", "services", true),
        ("", "v1", "ConfigMap", "configmaps", true),
        ("", "v1", "Secret", "secrets", true),
        ("", "v1", "ServiceAccount", "serviceaccounts", true),
        ("", "v1", "Node", "nodes", false),
        ("apps", "v1", "Deployment", "deployments", true),
        ("apps", "v1", "ReplicaSet", "replicasets", true),
        ("apps", "v1", "StatefulSet", "statefulsets", true),
        ("apps", "v1", "DaemonSet", "daemonsets", true),
        ("rbac.authorization.k8s.io", "v1", "Role", "roles", true),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "RoleBinding",
            "rolebindings",
            true,
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRole",
            "clusterroles",
            false,
        ),
        (
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
        ),
        ("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", false),
        ("batch", "v1", "Job", "jobs", true),
        (
            "networking.k8s.io",
            "v1",
            "NetworkPolicy",
            "networkpolicies",
            true,
        ),
        (
            "wgpolicyk8s.io",
            "v1alpha2",
            "PolicyReport",
            "policyreports",
            true,
        ),
    ]
    .into_iter()
    .map(|(g, v, k, p, n)| ResourceType::new(g, v, k, p, n))
    .collect()
}

impl FakeApiServer {
    /// Starts the fake on `127.0.0.1` (a free port) in the current tokio runtime, with the
    /// namespaces `default` and `kube-system`.
    pub async fn start() -> std::io::Result<FakeApiServer> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (changed, _) = watch::channel(0u64);
        let fake = FakeApiServer {
            cluster: Arc::new(Mutex::new(Cluster {
                resources: default_resources(),
                ..Cluster::default()
            })),
            changed: Arc::new(changed),
            url: format!("http://{addr}"),
            watches: Arc::default(),
        };
        for ns in ["default", "kube-system"] {
            fake.create_namespace(ns);
        }
        let app = axum::Router::new()
            .route(
                "/api/v1/namespaces/{ns}/pods/{pod}/exec",
                axum::routing::any(exec),
            )
            .fallback(handle)
            .with_state(fake.clone());
        tokio::spawn(async move {
            // The server lives as long as the runtime; an accept error ends it.
            let _ = axum::serve(listener, app).await;
        });
        Ok(fake)
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Watch connections open now.
    pub fn open_watches(&self) -> usize {
        self.watches.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The most watch connections that were open at once.
    pub fn peak_watches(&self) -> usize {
        self.watches.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Writes a kubeconfig that points at the fake (plain HTTP, no credentials).
    pub fn write_kubeconfig(&self, path: &std::path::Path) -> std::io::Result<()> {
        let text = format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\nusers:\n- name: fake\n  user: {{}}\n",
            self.url
        );
        std::fs::write(path, text)
    }

    fn lock(&self) -> MutexGuard<'_, Cluster> {
        self.cluster.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// Registers a kind (a CRD) so that discovery and the resource paths serve it.
    pub fn add_resource(&self, rt: ResourceType) {
        self.lock().resources.push(rt);
    }

    pub fn create_namespace(&self, name: &str) {
        let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let rt = ResourceType::new("", "v1", "Namespace", "namespaces", false);
        // An existing namespace is fine.
        let _ = self.create(&rt, "", obj);
    }

    /// The next `method` request whose path starts with `path_prefix` fails with `code` and
    /// `reason` (e.g. 429 TooManyRequests, 500 ServerTimeout), as a loaded API server does.
    pub fn fail_next(&self, method: &str, path_prefix: &str, code: u16, reason: &'static str) {
        self.lock().faults.push((
            method.to_string(),
            path_prefix.to_string(),
            StatusError {
                code,
                reason,
                message: format!("injected by the test: {reason}"),
            },
        ));
    }

    /// Every request so far as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Objects of a kind (by plural, e.g. `jobs`) in a namespace (`""`: all).
    pub fn list(&self, plural: &str, namespace: &str) -> Vec<Value> {
        let c = self.lock();
        of_kind(&c, plural, namespace)
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub fn get(&self, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        // Only the one object is cloned: a kubelet loop over thousands of pods calls this.
        let c = self.lock();
        of_kind(&c, plural, namespace)
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    /// The names of the objects of `plural` in `namespace` for which `pick` holds, without
    /// cloning them (a kubelet's "which pods are pending").
    pub fn names_where(
        &self,
        plural: &str,
        namespace: &str,
        pick: impl Fn(&Value) -> bool,
    ) -> Vec<String> {
        let c = self.lock();
        of_kind(&c, plural, namespace)
            .filter(|(_, o)| pick(o))
            .map(|(n, _)| n.to_string())
            .collect()
    }

    /// Waits until `pred` holds for some object of the kind; returns it.
    pub async fn wait_for(
        &self,
        plural: &str,
        namespace: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let mut rx = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(o) = self.list(plural, namespace).into_iter().find(|o| pred(o)) {
                return Some(o);
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }

    /// Appends to a pod's `main` container log.
    /// The log of a pod's previous (restarted) container run, served for `previous=true`.
    pub fn append_previous_log(&self, namespace: &str, pod: &str, text: &str) {
        self.append_log(namespace, &format!("{pod}/previous"), text);
    }

    /// The kubelet serves checkpoints (the ContainerCheckpoint feature is on).
    pub fn enable_checkpoints(&self) {
        self.lock().checkpoints = true;
    }

    /// Plays the kubelet for an ephemeral container: its log, then its termination.
    pub fn finish_ephemeral(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        exit_code: i32,
        log: &str,
    ) -> Result<(), StatusError> {
        let mut c = self.lock();
        c.logs.insert(
            (namespace.to_string(), format!("{pod}/c/{container}")),
            log.to_string(),
        );
        let key = ("pods".to_string(), namespace.to_string(), pod.to_string());
        let rv = c.next_rv();
        let obj = c.objects.get_mut(&key).ok_or_else(|| StatusError {
            code: 404,
            reason: "NotFound",
            message: format!("pods \"{pod}\" not found"),
        })?;
        let statuses = obj["status"]["ephemeralContainerStatuses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut statuses: Vec<Value> = statuses
            .into_iter()
            .filter(|s| s["name"] != container)
            .collect();
        statuses.push(json!({"name": container, "ready": false, "restartCount": 0, "image": "", "imageID": "",
            "state": {"terminated": {"exitCode": exit_code, "reason": if exit_code == 0 { "Completed" } else { "Error" }}}}));
        obj["status"]["ephemeralContainerStatuses"] = json!(statuses);
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        drop(c);
        self.notify();
        Ok(())
    }

    pub fn append_log(&self, namespace: &str, pod: &str, text: &str) {
        self.lock()
            .logs
            .entry((namespace.to_string(), pod.to_string()))
            .or_default()
            .push_str(text);
        self.notify();
    }

    /// Plays the kubelet: a container of the pod waits with `reason` (e.g. `ImagePullBackOff`).
    pub fn wait_pod(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        reason: &str,
        message: &str,
    ) -> Result<(), StatusError> {
        self.update_status("pods", namespace, pod, |status| {
            status.insert(
                "containerStatuses".into(),
                json!([{"name": container, "ready": false, "restartCount": 0,
                        "state": {"waiting": {"reason": reason, "message": message}}}]),
            );
        })
    }

    /// Plays the kubelet: the pod's `main` container is running.
    pub fn start_pod(&self, namespace: &str, pod: &str) -> Result<(), StatusError> {
        self.update_status("pods", namespace, pod, |status| {
            status.insert("phase".into(), json!("Running"));
            status.insert("startTime".into(), json!(now_rfc3339()));
            status.insert(
                "containerStatuses".into(),
                json!([{"name": "main", "ready": true, "restartCount": 0,
                        "state": {"running": {"startedAt": now_rfc3339()}}}]),
            );
        })
    }

    /// Plays the kubelet: the pod's `main` container exited with `exit_code` and left
    /// `message` as its termination message. The Job controller then finishes the Job.
    pub fn finish_pod(
        &self,
        namespace: &str,
        pod: &str,
        exit_code: i32,
        message: &str,
    ) -> Result<(), StatusError> {
        self.terminate_main(namespace, pod, exit_code, message)?;
        self.finish_job_of(namespace, pod, exit_code)
    }

    /// Plays the kubelet for an init container that failed: the pod fails without `main`
    /// ever running. The Job controller then fails the Job.
    pub fn fail_init_container(
        &self,
        namespace: &str,
        pod: &str,
        container: &str,
        exit_code: i32,
        message: &str,
    ) -> Result<(), StatusError> {
        self.update_status("pods", namespace, pod, |status| {
            status.insert("phase".into(), json!("Failed"));
            status.insert(
                "initContainerStatuses".into(),
                json!([{"name": container, "ready": false, "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": exit_code,
                    "reason": "StartError",
                    "message": message,
                    "finishedAt": now_rfc3339(),
                }}}]),
            );
            status.insert(
                "containerStatuses".into(),
                json!([{"name": "main", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}}}]),
            );
        })?;
        self.finish_job_of(namespace, pod, exit_code.max(1))
    }

    /// Plays the kubelet only: `main` terminated, and the Job controller has not noticed yet
    /// (on a real cluster it takes seconds); [`FakeApiServer::finish_job_of`] is its part.
    pub fn terminate_main(
        &self,
        namespace: &str,
        pod: &str,
        exit_code: i32,
        message: &str,
    ) -> Result<(), StatusError> {
        let phase = if exit_code == 0 {
            "Succeeded"
        } else {
            "Failed"
        };
        self.update_status("pods", namespace, pod, |status| {
            status.insert("phase".into(), json!(phase));
            status.insert(
                "containerStatuses".into(),
                json!([{"name": "main", "ready": false, "restartCount": 0,
                "state": {"terminated": {
                    "exitCode": exit_code,
                    "reason": if exit_code == 0 { "Completed" } else { "Error" },
                    "message": message,
                    "finishedAt": now_rfc3339(),
                }}}]),
            );
        })
    }

    /// Plays the Job controller after the pod ended: the Job's conditions.
    pub fn finish_job_of(
        &self,
        namespace: &str,
        pod: &str,
        exit_code: i32,
    ) -> Result<(), StatusError> {
        let pod_obj = self.get("pods", namespace, pod);
        let job = pod_obj.as_ref().and_then(|p| {
            p["metadata"]["labels"]["job-name"]
                .as_str()
                .map(str::to_string)
        });
        if let Some(job) = job {
            let now = now_rfc3339();
            self.update_status("jobs", namespace, &job, |status| {
                status.insert("active".into(), json!(0));
                let conditions = if exit_code == 0 {
                    status.insert("succeeded".into(), json!(1));
                    status.insert("completionTime".into(), json!(now));
                    json!([
                        {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now},
                        {"type": "Complete", "status": "True", "reason": "CompletionsReached", "lastTransitionTime": now},
                    ])
                } else {
                    status.insert("failed".into(), json!(1));
                    json!([
                        {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": now},
                        {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastTransitionTime": now},
                    ])
                };
                status.insert("conditions".into(), conditions);
            })?;
        }
        Ok(())
    }

    fn update_status(
        &self,
        plural: &str,
        namespace: &str,
        name: &str,
        f: impl FnOnce(&mut Map<String, Value>),
    ) -> Result<(), StatusError> {
        let mut c = self.lock();
        let rt = c
            .resources
            .iter()
            .find(|r| r.plural == plural)
            .cloned()
            .ok_or_else(|| StatusError::bad_request(format!("unknown resource {plural}")))?;
        let key = (rt.qualified(), namespace.to_string(), name.to_string());
        let mut obj = c
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| StatusError::not_found(&rt, name))?;
        if !obj["status"].is_object() {
            obj["status"] = json!({});
        }
        if let Some(status) = obj["status"].as_object_mut() {
            f(status);
        }
        c.store(&rt, namespace, obj, "MODIFIED");
        drop(c);
        self.notify();
        Ok(())
    }

    /// Creates an object as the API would (used by the HTTP handler and by tests).
    pub fn create(
        &self,
        rt: &ResourceType,
        namespace: &str,
        obj: Value,
    ) -> Result<Value, StatusError> {
        let r = self.lock().create(rt, namespace, obj);
        self.notify();
        r
    }
}

impl Cluster {
    fn resource(&self, group: &str, version: &str, plural: &str) -> Option<ResourceType> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
            .cloned()
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Stores `obj` with a new resourceVersion and records the watch event.
    fn store(&mut self, rt: &ResourceType, namespace: &str, mut obj: Value, kind: &'static str) {
        let rv = self.next_rv();
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let key = (rt.qualified(), namespace.to_string(), name);
        if kind == "DELETED" {
            self.objects.remove(&key);
        } else {
            self.objects.insert(key, obj.clone());
        }
        self.events.push(Event {
            rv,
            resource: rt.qualified(),
            namespace: namespace.to_string(),
            kind,
            object: obj,
        });
    }

    fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&("namespaces".into(), String::new(), ns.into()))
    }

    fn create(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        mut obj: Value,
    ) -> Result<Value, StatusError> {
        if !obj.is_object() {
            return Err(StatusError::bad_request("the body is not a JSON object"));
        }
        if rt.namespaced && !self.namespace_exists(namespace) {
            return Err(StatusError {
                code: 404,
                reason: "NotFound",
                message: format!("namespaces \"{namespace}\" not found"),
            });
        }
        if obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
        {
            match obj["metadata"]["generateName"].as_str() {
                Some(g) if !g.is_empty() => {
                    self.uid_counter += 1;
                    let name = format!("{g}{}", suffix(self.uid_counter));
                    obj["metadata"]["name"] = json!(name);
                }
                _ => {
                    return Err(StatusError::invalid(
                        rt,
                        "",
                        "metadata.name: Required value: name or generateName is required",
                    ));
                }
            }
        }
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        validate(rt, &name, &obj)?;
        if rt.plural == "secrets" {
            fold_string_data(&mut obj);
        }
        if let Some(ns) = obj["metadata"]["namespace"].as_str()
            && rt.namespaced
            && ns != namespace
        {
            return Err(StatusError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let key = (rt.qualified(), namespace.to_string(), name.clone());
        if self.objects.contains_key(&key) {
            return Err(StatusError {
                code: 409,
                reason: "AlreadyExists",
                message: format!("{} \"{name}\" already exists", rt.qualified()),
            });
        }
        self.uid_counter += 1;
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid_counter);
        obj["apiVersion"] = json!(rt.api_version());
        obj["kind"] = json!(rt.kind);
        let meta = &mut obj["metadata"];
        if rt.namespaced {
            meta["namespace"] = json!(namespace);
        }
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!(now_rfc3339());
        meta["generation"] = json!(1);
        self.store(rt, namespace, obj, "ADDED");
        let created = self.objects.get(&key).cloned().unwrap_or(Value::Null);
        if rt.plural == "jobs" && rt.group == "batch" {
            self.job_controller_create_pod(&created);
        }
        Ok(created)
    }

    /// The Job controller: one pod per new Job (parallelism 1, completions 1).
    fn job_controller_create_pod(&mut self, job: &Value) {
        let Some(pod_rt) = self.resource("", "v1", "pods") else {
            return;
        };
        let ns = job["metadata"]["namespace"].as_str().unwrap_or_default();
        let job_name = job["metadata"]["name"].as_str().unwrap_or_default();
        let job_uid = job["metadata"]["uid"].as_str().unwrap_or_default();
        let template = &job["spec"]["template"];
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        for (k, v) in [
            ("job-name", job_name),
            ("batch.kubernetes.io/job-name", job_name),
            ("controller-uid", job_uid),
            ("batch.kubernetes.io/controller-uid", job_uid),
        ] {
            labels[k] = json!(v);
        }
        self.uid_counter += 1;
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": format!("{job_name}-{}", suffix(self.uid_counter)),
                "namespace": ns,
                "labels": labels,
                "annotations": template["metadata"]["annotations"],
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                    "uid": job_uid, "controller": true, "blockOwnerDeletion": true}],
            },
            "spec": template["spec"],
            "status": {"phase": "Pending"},
        });
        if self.create(&pod_rt, ns, pod).is_ok() {
            let key = (
                "jobs.batch".to_string(),
                ns.to_string(),
                job_name.to_string(),
            );
            if let Some(mut j) = self.objects.get(&key).cloned() {
                j["status"] = json!({"active": 1, "startTime": now_rfc3339()});
                self.store(
                    &ResourceType::new("batch", "v1", "Job", "jobs", true),
                    ns,
                    j,
                    "MODIFIED",
                );
            }
        }
    }

    /// Deletes an object and, unless orphaning, its dependents (the garbage collector).
    fn delete(
        &mut self,
        rt: &ResourceType,
        namespace: &str,
        name: &str,
        propagation: &str,
    ) -> Result<Value, StatusError> {
        let key = (rt.qualified(), namespace.to_string(), name.to_string());
        let obj = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| StatusError::not_found(rt, name))?;
        self.store(rt, namespace, obj.clone(), "DELETED");
        if propagation != "Orphan" {
            let uid = obj["metadata"]["uid"].clone();
            let dependents: Vec<(ResourceType, String, String)> = self
                .objects
                .iter()
                .filter(|(_, o)| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"] == uid))
                })
                .filter_map(|((r, ns, n), _)| {
                    let rt = self.resources.iter().find(|x| &x.qualified() == r)?.clone();
                    Some((rt, ns.clone(), n.clone()))
                })
                .collect();
            for (rt, ns, n) in dependents {
                let _ = self.delete(&rt, &ns, &n, "Background");
            }
        }
        Ok(obj)
    }
}

/// Secrets: `stringData` is write-only; the API stores it base64-encoded in `data`.
fn fold_string_data(obj: &mut Value) {
    if let Some(Value::Object(plain)) = obj.as_object_mut().and_then(|o| o.remove("stringData")) {
        if !obj["data"].is_object() {
            obj["data"] = json!({});
        }
        for (k, v) in plain {
            obj["data"][k] = json!(base64_encode(v.as_str().unwrap_or_default().as_bytes()));
        }
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

pub(crate) fn base64_encode(bytes: &[u8]) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (a Secret's `data`); invalid input gives what decoded so far.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let Some(v) = B64.iter().position(|b| *b == c) else {
            continue;
        };
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// Five lowercase alphanumerics, like the API server's generateName suffixes.
fn suffix(n: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5bd1_e995;
    (0..5)
        .map(|_| {
            let c = ALPHABET[(x % ALPHABET.len() as u64) as usize] as char;
            x /= ALPHABET.len() as u64;
            c
        })
        .collect()
}

/// The checks the fake makes: DNS-1123 subdomain names, and a Job's pod template.
fn validate(rt: &ResourceType, name: &str, obj: &Value) -> Result<(), StatusError> {
    let dns = name.len() <= 253
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !dns {
        return Err(StatusError::invalid(
            rt,
            name,
            &format!(
                "metadata.name: Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        ));
    }
    if rt.plural == "jobs" {
        let pod = &obj["spec"]["template"]["spec"];
        if pod["containers"].as_array().is_none_or(|c| c.is_empty()) {
            return Err(StatusError::invalid(
                rt,
                name,
                "spec.template.spec.containers: Required value",
            ));
        }
        match pod["restartPolicy"].as_str() {
            Some("Never") | Some("OnFailure") => {}
            other => {
                return Err(StatusError::invalid(
                    rt,
                    name,
                    &format!(
                        "spec.template.spec.restartPolicy: Unsupported value: {other:?}: supported values: \"OnFailure\", \"Never\""
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A parsed resource path.
struct Target {
    rt: ResourceType,
    namespace: String,
    name: Option<String>,
    subresource: Option<String>,
}

enum Route {
    CoreVersions,
    Groups,
    Discovery { group: String, version: String },
    Resource(Target),
}

fn route(c: &Cluster, path: &str) -> Result<Route, StatusError> {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match seg.as_slice() {
        ["api"] => return Ok(Route::CoreVersions),
        ["apis"] => return Ok(Route::Groups),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found_path(path)),
    };
    let (namespace, rest): (&str, Vec<&str>) = match rest {
        [] => {
            return Ok(Route::Discovery {
                group: group.into(),
                version: version.into(),
            });
        }
        ["namespaces", ns, plural, tail @ ..]
            if c.resource(group, version, plural)
                .is_some_and(|r| r.namespaced) =>
        {
            let mut v = vec![*plural];
            v.extend_from_slice(tail);
            (*ns, v)
        }
        _ => ("", rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [p] => (*p, None, None),
        [p, n] => (*p, Some(*n), None),
        [p, n, s] => (*p, Some(*n), Some(*s)),
        _ => return Err(not_found_path(path)),
    };
    let rt = c
        .resource(group, version, plural)
        .ok_or_else(|| not_found_path(path))?;
    Ok(Route::Resource(Target {
        rt,
        namespace: namespace.to_string(),
        name: name.map(str::to_string),
        subresource: sub.map(str::to_string),
    }))
}

fn not_found_path(path: &str) -> StatusError {
    StatusError {
        code: 404,
        reason: "NotFound",
        message: format!("the server could not find the requested resource ({path})"),
    }
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (code, axum::Json(v.clone())).into_response()
}

async fn handle(
    State(fake): State<FakeApiServer>,
    method: Method,
    uri: Uri,
    Query(q): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    fake.lock().requests.push(format!(
        "{method} {}",
        uri.path_and_query().map(|p| p.as_str()).unwrap_or("")
    ));
    let fault = {
        let mut c = fake.lock();
        let i = c
            .faults
            .iter()
            .position(|(m, p, _)| *m == method.as_str() && uri.path().starts_with(p.as_str()));
        i.map(|i| c.faults.remove(i).2)
    };
    if let Some(e) = fault {
        return e.into_response();
    }
    match serve(&fake, &method, uri.path(), &q, &headers, &body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn serve(
    fake: &FakeApiServer,
    method: &Method,
    path: &str,
    q: &BTreeMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Response, StatusError> {
    if path == "/version" {
        // What readiness checks ask: it says plainly that this is the fake.
        return Ok(json_response(
            StatusCode::OK,
            &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-riposte-fake",
                    "gitCommit": "", "gitTreeState": "clean", "buildDate": "",
                    "goVersion": "", "compiler": "", "platform": "linux/amd64"}),
        ));
    }
    if let Some(rest) = path.strip_prefix("/api/v1/nodes/")
        && let Some((node, target)) = rest.split_once("/proxy/checkpoint/")
    {
        return checkpoint(fake, method, node, target);
    }
    let routed = route(&fake.lock(), path)?;
    let t = match routed {
        Route::CoreVersions => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            ));
        }
        Route::Groups => {
            let c = fake.lock();
            let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for r in c.resources.iter().filter(|r| !r.group.is_empty()) {
                let v = groups.entry(r.group.clone()).or_default();
                if !v.contains(&r.version) {
                    v.push(r.version.clone());
                }
            }
            let groups: Vec<Value> = groups
                .into_iter()
                .map(|(g, vs)| {
                    let versions: Vec<Value> = vs
                        .iter()
                        .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                        .collect();
                    json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
                })
                .collect();
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            ));
        }
        Route::Discovery { group, version } => {
            let c = fake.lock();
            let resources: Vec<Value> = c
                .resources
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .flat_map(|r| {
                    let mut v = vec![json!({
                        "name": r.plural, "singularName": r.kind.to_lowercase(), "namespaced": r.namespaced,
                        "kind": r.kind,
                        "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
                    })];
                    v.push(json!({"name": format!("{}/status", r.plural), "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}));
                    v
                })
                .collect();
            if resources.is_empty() {
                return Err(not_found_path(path));
            }
            let gv = if group.is_empty() {
                version
            } else {
                format!("{group}/{version}")
            };
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
            ));
        }
        Route::Resource(t) => t,
    };
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Writes carry `dryRun=All` in the query; a DELETE may carry it in its DeleteOptions body.
    let dry_in_body = method == Method::DELETE
        && serde_json::from_slice::<Value>(body).ok().is_some_and(|o| {
            o["dryRun"]
                .as_array()
                .is_some_and(|d| d.iter().any(|v| v == "All"))
        });
    if method != Method::GET && (dry_in_body || q.get("dryRun").is_some_and(|v| v == "All")) {
        // Server-side dry run: the write runs, validation and admission included, on a
        // scratch copy of the cluster, and the answer is what it would have stored.
        let scratch = FakeApiServer {
            cluster: Arc::new(Mutex::new(fake.lock().clone())),
            changed: Arc::new(watch::channel(0u64).0),
            url: fake.url.clone(),
            watches: Arc::default(),
        };
        let mut q = q.clone();
        q.remove("dryRun");
        let body = if dry_in_body {
            let mut opts: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            opts["dryRun"] = Value::Null;
            Bytes::from(opts.to_string())
        } else {
            body.clone()
        };
        return Box::pin(serve(&scratch, method, path, &q, headers, &body)).await;
    }
    match (method.as_str(), &t.name, t.subresource.as_deref()) {
        ("GET", None, _) if is_true(q.get("watch")) => Ok(watch_response(fake, &t, q)),
        ("GET", None, _) => list(fake, &t, q),
        ("GET", Some(name), Some("log")) => logs(fake, &t, name, q).await,
        ("GET", Some(name), _) => {
            let c = fake.lock();
            let key = (t.rt.qualified(), t.namespace.clone(), name.clone());
            c.objects
                .get(&key)
                .map(|o| json_response(StatusCode::OK, o))
                .ok_or_else(|| StatusError::not_found(&t.rt, name))
        }
        // The Eviction API: the fake has no PodDisruptionBudgets, so an eviction deletes the
        // pod (tests play a blocking budget with `fail_next(.., 429, "TooManyRequests")`).
        ("POST", Some(name), Some("eviction")) if t.rt.plural == "pods" => {
            let r = fake.lock().delete(&t.rt, &t.namespace, name, "Background");
            fake.notify();
            r.map(|_| {
                json_response(
                    StatusCode::CREATED,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
                )
            })
        }
        ("POST", None, _) => {
            let obj = parse_body(body)?;
            let created = fake.create(&t.rt, &t.namespace, obj)?;
            Ok(json_response(StatusCode::CREATED, &created))
        }
        ("PUT", Some(name), sub) => {
            let obj = parse_body(body)?;
            let r = replace(&mut fake.lock(), &t, name, obj, sub == Some("status"));
            fake.notify();
            r.map(|o| json_response(StatusCode::OK, &o))
        }
        ("PATCH", Some(name), _) => {
            let r = patch::apply(&mut fake.lock(), &t, name, &content_type, body, q);
            fake.notify();
            r.map(|(code, o)| json_response(code, &o))
        }
        ("DELETE", Some(name), _) => {
            let opts: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
            let default = if t.rt.plural == "jobs" {
                "Orphan"
            } else {
                "Background"
            };
            let propagation = q
                .get("propagationPolicy")
                .map(String::as_str)
                .or(opts["propagationPolicy"].as_str())
                .unwrap_or(default)
                .to_string();
            let r = fake.lock().delete(&t.rt, &t.namespace, name, &propagation);
            fake.notify();
            r.map(|o| json_response(StatusCode::OK, &o))
        }
        _ => Err(StatusError {
            code: 405,
            reason: "MethodNotAllowed",
            message: format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            ),
        }),
    }
}

/// The kubelet's checkpoint API through the node proxy: 404 (as a kubelet without the
/// ContainerCheckpoint feature answers) unless [`FakeApiServer::enable_checkpoints`].
fn checkpoint(
    fake: &FakeApiServer,
    method: &Method,
    node: &str,
    target: &str,
) -> Result<Response, StatusError> {
    let target = target.split('?').next().unwrap_or(target);
    let c = fake.lock();
    if method != Method::POST
        || !c.checkpoints
        || !c
            .objects
            .contains_key(&("nodes".to_string(), String::new(), node.to_string()))
    {
        return Err(not_found_path(&format!(
            "/api/v1/nodes/{node}/proxy/checkpoint/{target}"
        )));
    }
    let file = format!(
        "/var/lib/kubelet/checkpoints/checkpoint-{}-2026-12-03T12:00:00Z.tar",
        target.replace('/', "_")
    );
    Ok(json_response(StatusCode::OK, &json!({"items": [file]})))
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true") | Some("1"))
}

fn parse_body(body: &Bytes) -> Result<Value, StatusError> {
    serde_json::from_slice(body)
        .map_err(|e| StatusError::bad_request(format!("the body is not valid JSON: {e}")))
}

fn replace(
    c: &mut Cluster,
    t: &Target,
    name: &str,
    mut obj: Value,
    status_only: bool,
) -> Result<Value, StatusError> {
    let key = (t.rt.qualified(), t.namespace.clone(), name.to_string());
    let current = c
        .objects
        .get(&key)
        .cloned()
        .ok_or_else(|| StatusError::not_found(&t.rt, name))?;
    if obj["metadata"]["name"].as_str().is_some_and(|n| n != name) {
        return Err(StatusError::bad_request(
            "the name of the object does not match the name on the URL",
        ));
    }
    if let Some(rv) = obj["metadata"]["resourceVersion"].as_str()
        && !rv.is_empty()
        && Some(rv) != current["metadata"]["resourceVersion"].as_str()
    {
        return Err(StatusError {
            code: 409,
            reason: "Conflict",
            message: format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                t.rt.qualified()
            ),
        });
    }
    if status_only {
        let mut next = current.clone();
        next["status"] = obj["status"].take();
        obj = next;
    }
    Ok(c_store_update(c, &t.rt, &t.namespace, &current, obj))
}

/// Stores an update, keeping the server-owned metadata and bumping `generation` when the
/// spec changed.
pub(crate) fn c_store_update(
    c: &mut Cluster,
    rt: &ResourceType,
    namespace: &str,
    current: &Value,
    mut obj: Value,
) -> Value {
    if rt.plural == "secrets" {
        fold_string_data(&mut obj);
    }
    obj["apiVersion"] = json!(rt.api_version());
    obj["kind"] = json!(rt.kind);
    for k in ["uid", "creationTimestamp", "name", "namespace"] {
        if !current["metadata"][k].is_null() {
            obj["metadata"][k] = current["metadata"][k].clone();
        }
    }
    let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
    let spec_changed = obj["spec"] != current["spec"];
    obj["metadata"]["generation"] = json!(generation + i64::from(spec_changed));
    c.store(rt, namespace, obj, "MODIFIED");
    let name = current["metadata"]["name"].as_str().unwrap_or_default();
    c.objects
        .get(&(rt.qualified(), namespace.to_string(), name.to_string()))
        .cloned()
        .unwrap_or(Value::Null)
}

fn matches(
    t: &Target,
    q: &BTreeMap<String, String>,
    ns: &str,
    obj: &Value,
) -> Result<bool, StatusError> {
    if t.rt.namespaced && !t.namespace.is_empty() && ns != t.namespace {
        return Ok(false);
    }
    if let Some(sel) = q.get("labelSelector").filter(|s| !s.is_empty()) {
        let reqs = selector::parse_labels(sel).map_err(StatusError::bad_request)?;
        if !selector::labels_match(&reqs, &obj["metadata"]["labels"]) {
            return Ok(false);
        }
    }
    if let Some(sel) = q.get("fieldSelector").filter(|s| !s.is_empty())
        && !selector::fields_match(sel, obj).map_err(StatusError::bad_request)?
    {
        return Ok(false);
    }
    Ok(true)
}

fn list(
    fake: &FakeApiServer,
    t: &Target,
    q: &BTreeMap<String, String>,
) -> Result<Response, StatusError> {
    let c = fake.lock();
    // A paged list is one snapshot, as the real API server's: every page says the first
    // page's resourceVersion, and a page continues after the last key of the one before (an
    // offset would skip objects created meanwhile). Objects that changed since the snapshot
    // show their newer state; the watch from the snapshot's resourceVersion replays those
    // changes, so a list-then-watch client misses nothing.
    let (snapshot, after): (u64, Option<(String, String)>) = match q.get("continue") {
        Some(token) => {
            let mut parts = token.splitn(3, '|');
            let rv = parts.next().and_then(|r| r.parse().ok());
            match (rv, parts.next(), parts.next()) {
                (Some(rv), Some(ns), Some(name)) => (rv, Some((ns.to_string(), name.to_string()))),
                _ => {
                    return Err(StatusError::bad_request(format!(
                        "continue token {token:?} is not one this server gave"
                    )));
                }
            }
        }
        None => (c.rv, None),
    };
    let limit: usize = q
        .get("limit")
        .and_then(|s| s.parse().ok())
        .filter(|l| *l > 0)
        .unwrap_or(usize::MAX);
    let mut page = Vec::new();
    let mut remaining = 0usize;
    let mut last: Option<(String, String)> = None;
    for ((r, ns, name), o) in &c.objects {
        if *r != t.rt.qualified() || !matches(t, q, ns, o)? {
            continue;
        }
        if after.as_ref().is_some_and(|(ans, aname)| {
            (ns.as_str(), name.as_str()) <= (ans.as_str(), aname.as_str())
        }) {
            continue;
        }
        if page.len() < limit {
            page.push(o.clone());
            last = Some((ns.clone(), name.clone()));
        } else {
            remaining += 1;
        }
    }
    let mut meta = json!({"resourceVersion": snapshot.to_string()});
    if remaining > 0
        && let Some((ns, name)) = last
    {
        meta["continue"] = json!(format!("{snapshot}|{ns}|{name}"));
        meta["remainingItemCount"] = json!(remaining);
    }
    Ok(json_response(
        StatusCode::OK,
        &json!({"kind": format!("{}List", t.rt.kind), "apiVersion": t.rt.api_version(), "metadata": meta, "items": page}),
    ))
}

fn watch_response(fake: &FakeApiServer, t: &Target, q: &BTreeMap<String, String>) -> Response {
    let from: u64 = q
        .get("resourceVersion")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800u64);
    let fake = fake.clone();
    let target = Target {
        rt: t.rt.clone(),
        namespace: t.namespace.clone(),
        name: None,
        subresource: None,
    };
    let q = q.clone();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let open = OpenWatch::new(fake.watches.clone());
    tokio::spawn(async move {
        let _open = open;
        let mut changed = fake.changed.subscribe();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        let mut last = from;
        // resourceVersion 0 (or none): start with the current objects as ADDED.
        if from == 0 {
            let (snapshot, rv) = {
                let c = fake.lock();
                let s: Vec<Value> = c
                    .objects
                    .iter()
                    .filter(|((r, ns, _), o)| {
                        *r == target.rt.qualified() && matches(&target, &q, ns, o).unwrap_or(false)
                    })
                    .map(|(_, o)| o.clone())
                    .collect();
                (s, c.rv)
            };
            for o in snapshot {
                if tx.send(Ok(line("ADDED", &o))).await.is_err() {
                    return;
                }
            }
            last = rv;
        }
        loop {
            let events: Vec<Event> = {
                let c = fake.lock();
                // Events are in resourceVersion order: start after the last one sent.
                let start = c.events.partition_point(|e| e.rv <= last);
                c.events[start..]
                    .iter()
                    .filter(|e| e.resource == target.rt.qualified())
                    .cloned()
                    .collect()
            };
            for e in events {
                last = e.rv;
                if matches(&target, &q, &e.namespace, &e.object).unwrap_or(false)
                    && tx.send(Ok(line(e.kind, &e.object))).await.is_err()
                {
                    return;
                }
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn line(kind: &str, obj: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": obj}).to_string();
    s.push('\n');
    Bytes::from(s)
}

async fn logs(
    fake: &FakeApiServer,
    t: &Target,
    name: &str,
    q: &BTreeMap<String, String>,
) -> Result<Response, StatusError> {
    let pod = {
        let c = fake.lock();
        c.objects
            .get(&(t.rt.qualified(), t.namespace.clone(), name.to_string()))
            .cloned()
            .ok_or_else(|| StatusError::not_found(&t.rt, name))?
    };
    let container = q.get("container").map(String::as_str).unwrap_or("main");
    if pod["status"]["phase"] == "Pending" {
        return Err(StatusError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: ContainerCreating"
        )));
    }
    if is_true(q.get("previous")) {
        // The log of the container's last terminated run, kept apart (see append_previous_log).
        let key = (t.namespace.clone(), format!("{name}/previous"));
        return match fake.lock().logs.get(&key).cloned() {
            Some(text) => Ok((StatusCode::OK, text).into_response()),
            None => Err(StatusError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            ))),
        };
    }
    // A container's own log (an ephemeral container's, say), when the test gave it one.
    if let Some(c) = q.get("container")
        && let Some(text) = fake
            .lock()
            .logs
            .get(&(t.namespace.clone(), format!("{name}/c/{c}")))
            .cloned()
    {
        return Ok((StatusCode::OK, text).into_response());
    }
    let key = (t.namespace.clone(), name.to_string());
    if !is_true(q.get("follow")) {
        let text = fake.lock().logs.get(&key).cloned().unwrap_or_default();
        return Ok((StatusCode::OK, text).into_response());
    }
    let fake = fake.clone();
    let rt = t.rt.clone();
    let ns = t.namespace.clone();
    let name = name.to_string();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let mut changed = fake.changed.subscribe();
        let mut sent = 0usize;
        loop {
            let (text, ended) = {
                let c = fake.lock();
                let text = c.logs.get(&key).cloned().unwrap_or_default();
                let pod = c.objects.get(&(rt.qualified(), ns.clone(), name.clone()));
                let ended = pod.is_none_or(|p| {
                    matches!(
                        p["status"]["phase"].as_str(),
                        Some("Succeeded") | Some("Failed")
                    )
                });
                (text, ended)
            };
            if text.len() > sent {
                if tx
                    .send(Ok(Bytes::from(text[sent..].to_string())))
                    .await
                    .is_err()
                {
                    return;
                }
                sent = text.len();
            }
            if ended {
                return;
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "text/plain")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response()))
}

/// `pods/exec` over WebSocket (`v4.channel.k8s.io`, as kubectl and kube-rs speak it): the
/// command runs on this machine (as [`kubelet::HostKubelet`] runs pods' commands), its stdout
/// and stderr go out on channels 1 and 2, and its exit on channel 3 as a `Status`.
async fn exec(
    State(fake): State<FakeApiServer>,
    axum::extract::Path((ns, pod)): axum::extract::Path<(String, String)>,
    mut req: axum::extract::Request,
) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    fake.lock()
        .requests
        .push(format!("EXEC {}?{query}", req.uri().path()));
    let mut command = Vec::new();
    let mut container = None;
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "command" => command.push(v.into_owned()),
            "container" => container = Some(v.into_owned()),
            _ => {}
        }
    }
    let Some(obj) = fake.get("pods", &ns, &pod) else {
        return StatusError {
            code: 404,
            reason: "NotFound",
            message: format!("pods \"{pod}\" not found"),
        }
        .into_response();
    };
    let containers: Vec<String> = obj["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    let container = container
        .or_else(|| containers.first().cloned())
        .unwrap_or_default();
    if !containers.contains(&container) {
        return StatusError::bad_request(format!(
            "container {container} is not valid for pod {pod}"
        ))
        .into_response();
    }
    if command.is_empty() {
        return StatusError::bad_request("you must specify at least 1 command").into_response();
    }
    let protocols = req
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return StatusError::bad_request("pods/exec needs a WebSocket upgrade").into_response();
    };
    if !protocols
        .split(',')
        .any(|p| p.trim() == "v4.channel.k8s.io")
    {
        return StatusError::bad_request("no supported protocol (v4.channel.k8s.io)")
            .into_response();
    }
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let io = hyper_util::rt::TokioIo::new(upgraded);
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        use futures_util::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let out = tokio::process::Command::new(&command[0])
            .args(&command[1..])
            .stdin(std::process::Stdio::null())
            .output()
            .await;
        let frame = |channel: u8, bytes: &[u8]| {
            let mut v = vec![channel];
            v.extend_from_slice(bytes);
            Message::binary(v)
        };
        let status = match out {
            Ok(o) => {
                if !o.stdout.is_empty() {
                    let _ = ws.send(frame(1, &o.stdout)).await;
                }
                if !o.stderr.is_empty() {
                    let _ = ws.send(frame(2, &o.stderr)).await;
                }
                match o.status.code() {
                    Some(0) => json!({"metadata": {}, "status": "Success"}),
                    code => {
                        let code = code.unwrap_or(137);
                        json!({"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
                               "message": format!("command terminated with non-zero exit code: exit status {code}"),
                               "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]}})
                    }
                }
            }
            Err(e) => json!({"metadata": {}, "status": "Failure", "reason": "InternalError",
                             "message": format!("failed to exec in container: {e}")}),
        };
        let _ = ws.send(frame(3, status.to_string().as_bytes())).await;
        let _ = ws.close(None).await;
    });
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .header("sec-websocket-protocol", "v4.channel.k8s.io")
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
