//! Events end to end, the way a user meets them: `riposte server` on PostgreSQL, EventSources
//! and Sensors created through Argo Server's API, alerts posted by HTTP (Falco, CloudEvents,
//! Kubernetes audit batches) and published on the brokers running on this machine; workflows
//! counted in the database. Includes the crash loop (kill -9 at random points) and two
//! replicas sharing sensors over NATS JetStream.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Server, agent, call, database, free_port, query, start_server};

fn start(home: &Path, db_url: &str, extra: &[&str]) -> Server {
    let mut cmd = server_command(home, db_url);
    cmd.args(extra);
    start_server(cmd, |l| eprintln!("[server] {l}"))
}

fn payload(name: &str) -> Value {
    serde_json::from_str(&common::payload_text(name)).expect("JSON payload")
}

/// A template whose one step echoes the pod it isolates (host executor).
fn create_template(base: &str) {
    let (s, v) = call(
        "POST",
        &format!("{base}/api/v1/workflow-templates/default"),
        Some(json!({"template": {
            "metadata": {"name": "isolate-pod"},
            "spec": {
                "entrypoint": "main",
                "arguments": {"parameters": [{"name": "pod"}, {"name": "namespace"}]},
                "templates": [{"name": "main", "script": {"image": "alpine", "command": ["sh"],
                    "source": "echo isolating {{workflow.parameters.namespace}}/{{workflow.parameters.pod}}"}}]
            }
        }})),
    );
    assert_eq!(s, 200, "{v}");
}

fn create(base: &str, collection: &str, key: &str, obj: Value) {
    let (s, v) = call(
        "POST",
        &format!("{base}/api/v1/{collection}/default"),
        Some(json!({ key: obj })),
    );
    assert_eq!(s, 200, "creating {collection}: {v}");
}

/// The Falco sensor of `workflows/examples`, on event source `falco`, event `alerts`.
fn falco_sensor(base: &str, extra_trigger: Value) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../workflows/examples/falco-shell-sensor.yaml"),
    )
    .expect("example sensor");
    let mut sensor: Value = serde_yaml_like(&text);
    if let Value::Object(extra) = extra_trigger {
        for (k, v) in extra {
            sensor["spec"]["triggers"][0][k] = v;
        }
    }
    create(base, "sensors", "sensor", sensor);
}

/// YAML to JSON with the same loader riposte uses (through `riposte lint`'s crate).
fn serde_yaml_like(text: &str) -> Value {
    spec::yaml::load_documents(text)
        .expect("valid YAML")
        .into_iter()
        .next()
        .expect("a document")
        .value
}

fn falco_source(base: &str) {
    let port = free_port().to_string();
    create(
        base,
        "event-sources",
        "eventSource",
        json!({"metadata": {"name": "falco"}, "spec": {"webhook": {
            "alerts": {"port": port, "endpoint": "/falco", "method": "POST"},
            "audit": {"port": port, "endpoint": "/audit", "method": "POST"},
            "any": {"port": port, "endpoint": "/any", "method": "POST"}
        }}}),
    );
}

fn post_raw(url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    let mut req = agent().post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body).expect("POST");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

fn alert_with_uuid(uuid: &str) -> Vec<u8> {
    let mut a = payload("falco-terminal-shell.json");
    a["uuid"] = json!(uuid);
    serde_json::to_vec(&a).expect("JSON")
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until no stored event is left unprocessed (every sensor has decided about each).
fn wait_all_processed(db: &str, within: Duration) {
    wait_until("every event processed", within, || {
        query(db, "SELECT count(*) FROM events WHERE processed_at IS NULL") == "0"
    });
}

fn sensor_workflows(db: &str) -> i64 {
    workflows_of_sensor(db, "falco-shell")
}

#[test]
fn falco_cloudevents_and_audit_batches_are_stored_once_and_fire_once() {
    let db = database("events", "shapes");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    let base = s.base.clone();
    create_template(&base);
    falco_source(&base);
    falco_sensor(&base, json!({}));
    let hook = |event: &str| format!("{base}/api/v1/webhooks/default/falco/{event}");

    // The same alert twice (falcosidekick's retry): one event, one workflow.
    let alert = serde_json::to_vec(&payload("falco-terminal-shell.json")).expect("JSON");
    let (s1, b1) = post_raw(
        &hook("alerts"),
        &[("Content-Type", "application/json")],
        &alert,
    );
    let (s2, b2) = post_raw(
        &hook("alerts"),
        &[("Content-Type", "application/json")],
        &alert,
    );
    assert_eq!((s1, s2), (200, 200), "{b1} {b2}");
    assert!(b2.contains("\"duplicate\":true"), "{b2}");
    wait_until("the workflow", Duration::from_secs(20), || {
        sensor_workflows(&db) == 1
    });
    // The workflow is committed before the sensor's decision that names it (a firing's
    // side effects come first, the record of them after; see ARCHITECTURE.md, "Events"):
    // until then the event reads as still being processed.
    wait_all_processed(&db, Duration::from_secs(20));
    let wf = query(&db, "SELECT definition::text FROM workflows LIMIT 1");
    assert!(
        wf.contains("payments-api-7c9d4f8b7-k2x9q"),
        "parameter from the alert: {wf}"
    );

    // Its journey, as `riposte event get` shows it.
    let (_, events) = call(
        "GET",
        &format!("{base}/api/v1/riposte/events?namespace=default"),
        None,
    );
    let seq = events["items"][0]["seq"].as_i64().expect("seq");
    let (_, ev) = call("GET", &format!("{base}/api/v1/riposte/events/{seq}"), None);
    let sensor = &ev["sensors"][0];
    assert_eq!(sensor["sensor"], "default/falco-shell", "{ev}");
    assert_eq!(sensor["dependencies"][0]["matched"], true, "{ev}");
    assert!(
        sensor["triggers"][0]["effect"]
            .as_str()
            .unwrap_or("")
            .starts_with("workflows/default/isolate-"),
        "{ev}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_riposte"))
        .args(["event", "get", &seq.to_string(), "--server", &base])
        .output()
        .expect("riposte event get");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("dependency shell: matched") && text.contains("trigger isolate: fired"),
        "{text}"
    );

    // A filtered-out alert is stored and explained, and fires nothing.
    let mut quiet = payload("falco-write-below-etc.json");
    quiet["uuid"] = json!("not-a-shell");
    let (s3, _) = post_raw(
        &hook("alerts"),
        &[],
        &serde_json::to_vec(&quiet).expect("JSON"),
    );
    assert_eq!(s3, 200);

    // CloudEvents, binary mode, sent twice: one event.
    let ce = [
        ("ce-id", "ce-1"),
        ("ce-source", "falco.org"),
        ("ce-type", "falco.rule.output.v1"),
        ("ce-specversion", "1.0"),
        ("Content-Type", "application/json"),
    ];
    for _ in 0..2 {
        assert_eq!(post_raw(&hook("any"), &ce, b"{\"rule\":\"x\"}").0, 200);
    }
    // The same id from another source is another event.
    let other = [
        ("ce-id", "ce-1"),
        ("ce-source", "tracee"),
        ("ce-type", "t"),
        ("ce-specversion", "1.0"),
    ];
    assert_eq!(post_raw(&hook("any"), &other, b"{}").0, 200);
    // A structured CloudEvent.
    let structured = json!({"specversion": "1.0", "id": "ce-2", "source": "falco.org", "type": "t", "data": {"a": 1}});
    assert_eq!(
        post_raw(
            &hook("any"),
            &[("Content-Type", "application/cloudevents+json")],
            structured.to_string().as_bytes()
        )
        .0,
        200
    );
    let ces = query(&db, "SELECT count(*) FROM events WHERE event_name = 'any'");
    assert_eq!(ces, "3", "ce-1 from falco.org once, ce-1 from tracee, ce-2");

    // An audit batch is one event per item, never just its first.
    let batch = payload("k8s-audit-eventlist.json");
    let items = batch["items"].as_array().expect("items").len();
    assert_eq!(
        post_raw(&hook("audit"), &[], batch.to_string().as_bytes()).0,
        200
    );
    let stored: usize = query(
        &db,
        "SELECT count(*) FROM events WHERE event_name = 'audit'",
    )
    .parse()
    .expect("n");
    assert_eq!(stored, items);

    // Bad input is refused with what was expected, and nothing is stored.
    let (s4, b4) = post_raw(&hook("any"), &[("ce-id", "x")], b"{}");
    assert_eq!(s4, 400, "{b4}");
    assert!(b4.contains("ce-source"), "{b4}");
    let (s5, _) = post_raw(
        &format!("{base}/api/v1/webhooks/default/falco/nope"),
        &[],
        b"{}",
    );
    assert_eq!(s5, 404);

    // Every event is processed; still exactly one workflow.
    wait_all_processed(&db, Duration::from_secs(20));
    assert_eq!(sensor_workflows(&db), 1);

    // A sensor that does not lint is refused with the reason.
    let (s6, v6) = call(
        "POST",
        &format!("{base}/api/v1/sensors/default"),
        Some(json!({"sensor": {
        "metadata": {"name": "broken"}, "spec": {"dependencies": [], "triggers": []}}})),
    );
    assert_eq!(s6, 400, "{v6}");
    assert!(
        v6["message"]
            .as_str()
            .unwrap_or("")
            .contains("dependencies"),
        "{v6}"
    );
}

#[test]
fn dedupe_window_fires_the_same_logical_alert_once() {
    let db = database("events", "dedupe");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    create_template(&s.base);
    falco_source(&s.base);
    // The same pod and rule within 10 minutes is one response, whatever the alert ids.
    falco_sensor(
        &s.base,
        json!({"dedupe": {
        "key": "event.body.rule + '/' + event.body.output_fields['k8s.pod.name']", "window": "10m"}}),
    );
    let hook = format!("{}/api/v1/webhooks/default/falco/alerts", s.base);
    for i in 0..5 {
        assert_eq!(
            post_raw(&hook, &[], &alert_with_uuid(&format!("dup-{i}"))).0,
            200
        );
    }
    wait_all_processed(&db, Duration::from_secs(20));
    assert_eq!(sensor_workflows(&db), 1);
    let deduplicated = query(
        &db,
        "SELECT count(*) FROM event_decisions WHERE decision->'triggers'->0->>'deduplicated' = 'true'",
    );
    assert_eq!(deduplicated, "4");
}

/// 50 `kill -9`s at random points while alerts arrive: every alert that got a 2xx creates
/// exactly one workflow; none that did not is doubled.
#[test]
fn kill_9_loop_loses_no_acknowledged_alert_and_doubles_none() {
    let db = database("events", "kill9");
    let home = tempfile::tempdir().expect("tempdir");
    let first = start(home.path(), &db, &[]);
    create_template(&first.base);
    falco_source(&first.base);
    falco_sensor(&first.base, json!({}));
    drop(first);
    let mut acked = std::collections::BTreeSet::new();
    let mut sent = std::collections::BTreeSet::new();
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % m
    };
    for n in 0..50u32 {
        let mut s = start(home.path(), &db, &[]);
        let hook = format!("{}/api/v1/webhooks/default/falco/alerts", s.base);
        let posts = 1 + next(4);
        let kill_after = Duration::from_millis(next(40));
        let producer = {
            let hook = hook.clone();
            let ids: Vec<String> = (0..posts).map(|i| format!("alert-{}-{i}", n)).collect();
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for id in ids {
                    let r = agent().post(&hook).send(&alert_with_uuid(&id)[..]);
                    if matches!(r, Ok(ref resp) if resp.status().as_u16() == 200) {
                        ok.push(id);
                    } else {
                        break;
                    }
                }
                ok
            })
        };
        std::thread::sleep(kill_after);
        let _ = s.child.kill();
        let _ = s.child.wait();
        for i in 0..posts {
            sent.insert(format!("alert-{n}-{i}"));
        }
        acked.extend(producer.join().expect("producer"));
    }
    // A last server finishes what the others left.
    let _s = start(home.path(), &db, &[]);
    wait_until(
        "every stored event processed",
        Duration::from_secs(60),
        || {
            query(
                &db,
                "SELECT count(*) FROM events WHERE processed_at IS NULL",
            ) == "0"
        },
    );
    let stored: std::collections::BTreeSet<String> = query(&db, "SELECT event_id FROM events")
        .lines()
        .map(str::to_string)
        .collect();
    for id in &acked {
        assert!(stored.contains(id), "alert {id} got a 200 but was lost");
    }
    let workflows = sensor_workflows(&db) as usize;
    eprintln!(
        "kill -9 loop: {} alerts sent, {} acknowledged, {} stored, {workflows} workflows",
        sent.len(),
        acked.len(),
        stored.len()
    );
    assert_eq!(
        workflows,
        stored.len(),
        "one workflow per stored alert ({} acked of {} sent)",
        acked.len(),
        sent.len()
    );
    let keys = query(
        &db,
        "SELECT count(DISTINCT key) FROM idempotency_keys WHERE key LIKE 'default/sensor:falco-shell/%'",
    );
    assert_eq!(keys, workflows.to_string());
}

/// Two replicas on one PostgreSQL and one NATS JetStream stream: alerts posted to both are
/// processed once each, whichever replica takes them.
#[test]
fn two_replicas_share_sensors_over_nats_jetstream() {
    let db = database("events", "nats");
    let stream = format!("riposte_test_{}", std::process::id());
    let bus = format!("nats://127.0.0.1:4222/{stream}");
    let home = tempfile::tempdir().expect("tempdir");
    let a = start(home.path(), &db, &["--bus", &bus]);
    let b = start(home.path(), &db, &["--bus", &bus]);
    create_template(&a.base);
    falco_source(&a.base);
    falco_sensor(&a.base, json!({}));
    // Replica b learns of the sensor from the store.
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..60 {
        let base = if i % 2 == 0 { &a.base } else { &b.base };
        let hook = format!("{base}/api/v1/webhooks/default/falco/alerts");
        assert_eq!(
            post_raw(&hook, &[], &alert_with_uuid(&format!("nats-{i}"))).0,
            200
        );
        // Every tenth alert is a retry of the one before, through the other replica.
        if i % 10 == 9 {
            let other = if i % 2 == 0 { &b.base } else { &a.base };
            let hook = format!("{other}/api/v1/webhooks/default/falco/alerts");
            assert_eq!(
                post_raw(&hook, &[], &alert_with_uuid(&format!("nats-{i}"))).0,
                200
            );
        }
    }
    wait_until("60 workflows", Duration::from_secs(60), || {
        sensor_workflows(&db) == 60
    });
    wait_all_processed(&db, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(sensor_workflows(&db), 60);
    drop((a, b));
}

/// WorkflowEventBinding + `POST /api/v1/events/{ns}/{discriminator}` (Argo Workflows' own
/// event path): a matching selector submits the template with parameters from the payload.
#[test]
fn workflow_event_binding_submits_on_matching_events() {
    let db = database("events", "binding");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    create_template(&s.base);
    create(
        &s.base,
        "workflow-event-bindings",
        "workflowEventBinding",
        json!({
            "metadata": {"name": "on-alert"},
            "spec": {
                "event": {"selector": "payload.severity == 'critical' && discriminator == 'scanner'"},
                "submit": {
                    "workflowTemplateRef": {"name": "isolate-pod"},
                    "arguments": {"parameters": [
                        {"name": "pod", "valueFrom": {"event": "payload.pod"}},
                        {"name": "namespace", "valueFrom": {"event": "payload.ns"}}
                    ]}
                }
            }
        }),
    );
    let url = format!("{}/api/v1/events/default/scanner", s.base);
    let (st, v) = call(
        "POST",
        &url,
        Some(json!({"severity": "low", "pod": "a", "ns": "x"})),
    );
    assert_eq!(st, 200, "{v}");
    let (st, v) = call(
        "POST",
        &url,
        Some(json!({"severity": "critical", "pod": "web-1", "ns": "prod"})),
    );
    assert_eq!(st, 200, "{v}");
    let rows = query(
        &db,
        "SELECT definition::text FROM workflows WHERE labels->>'workflows.argoproj.io/workflow-event-binding' = 'on-alert'",
    );
    assert_eq!(rows.lines().count(), 1, "{rows}");
    assert!(rows.contains("web-1") && rows.contains("prod"), "{rows}");
}

/// A crash after Argo's event endpoint stored the event and before its binding submitted:
/// the next server submits it (the processor owns bindings, like sensors), and the client's
/// retry with the same `Idempotency-Key` is the same event and the same one workflow.
#[test]
fn a_binding_interrupted_by_a_crash_submits_once_after_the_restart() {
    let db = database("events", "bindingcrash");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    create_template(&s.base);
    create(
        &s.base,
        "workflow-event-bindings",
        "workflowEventBinding",
        json!({"metadata": {"name": "on-alert"}, "spec": {
            "event": {"selector": "payload.severity == 'critical'"},
            "submit": {"workflowTemplateRef": {"name": "isolate-pod"}, "arguments": {"parameters": [
                {"name": "pod", "valueFrom": {"event": "payload.pod"}}, {"name": "namespace", "value": "prod"}]}}
        }}),
    );
    drop(s);
    let mut crashing = {
        let mut cmd = server_command(home.path(), &db);
        cmd.env("RIPOSTE_FAILPOINT", "bindings.before-submit");
        common::start_server(cmd, |_| {})
    };
    let alert = json!({"severity": "critical", "pod": "web-1"});
    let url = format!("{}/api/v1/events/default/scanner", crashing.base);
    let r = agent()
        .post(&url)
        .header("Idempotency-Key", "scan-42")
        .send_json(&alert);
    assert!(r.is_err(), "the server aborted before it answered");
    let status = crashing.child.wait().expect("wait");
    assert!(!status.success(), "aborted at the failpoint");
    assert_eq!(
        query(
            &db,
            "SELECT count(*) FROM events WHERE event_source = 'workflow-event-bindings'"
        ),
        "1"
    );
    let bound = || {
        query(
            &db,
            "SELECT count(*) FROM workflows WHERE labels->>'workflows.argoproj.io/workflow-event-binding' = 'on-alert'",
        )
    };
    assert_eq!(bound(), "0");
    let s = start(home.path(), &db, &[]);
    wait_until(
        "the interrupted binding submitted",
        Duration::from_secs(30),
        || bound() == "1",
    );
    let (st, v) = call_with_header(
        &format!("{}/api/v1/events/default/scanner", s.base),
        ("Idempotency-Key", "scan-42"),
        &alert,
    );
    assert_eq!(st, 200, "{v}");
    wait_all_processed(&db, Duration::from_secs(20));
    assert_eq!(bound(), "1", "the client's retry is the same event");
    assert_eq!(
        query(
            &db,
            "SELECT count(*) FROM events WHERE event_source = 'workflow-event-bindings'"
        ),
        "1"
    );
}

fn call_with_header(url: &str, header: (&str, &str), body: &Value) -> (u16, String) {
    let mut resp = agent()
        .post(url)
        .header(header.0, header.1)
        .send_json(body)
        .expect("POST");
    let status = resp.status().as_u16();
    (status, resp.body_mut().read_to_string().unwrap_or_default())
}

/// A definition changed through one replica takes effect on the other at once (PostgreSQL
/// `NOTIFY`), not at its next periodic reload (every 30 s): an EventSource created through A
/// accepts alerts on B, and once deleted through A, B refuses them.
#[test]
fn definitions_changed_through_one_replica_apply_on_the_other_at_once() {
    let db = database("events", "notify");
    let home = tempfile::tempdir().expect("tempdir");
    let a = start(home.path(), &db, &[]);
    let b = start(home.path(), &db, &[]);
    let hook = format!("{}/api/v1/webhooks/default/notified/alerts", b.base);
    let status = || post_raw(&hook, &[], &alert_with_uuid("n-1")).0;
    assert_eq!(status(), 404, "no such EventSource yet");
    let started = Instant::now();
    create(
        &a.base,
        "event-sources",
        "eventSource",
        json!({"metadata": {"name": "notified"}, "spec": {"webhook": {
            "alerts": {"port": free_port().to_string(), "endpoint": "/alerts", "method": "POST"}}}}),
    );
    wait_until("B to accept alerts", Duration::from_secs(10), || {
        status() == 200
    });
    eprintln!("created through A, live on B after {:?}", started.elapsed());
    let started = Instant::now();
    let (st, v) = call(
        "DELETE",
        &format!("{}/api/v1/event-sources/default/notified", a.base),
        None,
    );
    assert_eq!(st, 200, "{v}");
    wait_until("B to refuse alerts", Duration::from_secs(10), || {
        status() == 404
    });
    eprintln!("deleted through A, gone on B after {:?}", started.elapsed());
}

fn nats_publish(subject: &str, payload: &str) {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect("127.0.0.1:4222").expect("NATS on 4222");
    let mut info = [0u8; 4096];
    let _ = c.read(&mut info).expect("INFO");
    write!(
        c,
        "CONNECT {{\"verbose\":false}}\r\nPUB {subject} {}\r\n{payload}\r\nPING\r\n",
        payload.len()
    )
    .expect("PUB");
    let mut pong = [0u8; 64];
    let _ = c.read(&mut pong).expect("PONG");
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (scripts/test installs it)"));
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn events_of(db: &str, name: &str) -> i64 {
    query(
        db,
        &format!("SELECT count(*) FROM events WHERE event_name = '{name}'"),
    )
    .parse()
    .expect("count")
}

/// Every broker on this machine, a directory and a calendar feed one EventSource; each
/// message is stored (and acknowledged to its broker only then) and reaches the sensor.
#[test]
fn broker_file_and_calendar_sources_deliver_events() {
    let db = database("events", "brokers");
    let home = tempfile::tempdir().expect("tempdir");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    let tag = format!("t{}", std::process::id());
    let d = dir.path().display().to_string();
    create(
        &s.base,
        "event-sources",
        "eventSource",
        json!({
            "metadata": {"name": "brokers"},
            "spec": {
                "nats": {"n": {"url": "nats://127.0.0.1:4222", "subject": format!("{tag}.alerts"), "jsonBody": true}},
                "mqtt": {"m": {"url": "tcp://127.0.0.1:1883", "topic": format!("{tag}/alerts"), "jsonBody": true, "clientId": format!("{tag}-riposte")}},
                "amqp": {"a": {"url": "amqp://guest:guest@127.0.0.1:5672/", "exchangeName": format!("{tag}-ex"), "exchangeType": "topic", "routingKey": "alerts", "jsonBody": true}},
                "redis": {"r": {"hostAddress": "127.0.0.1:6379", "channels": [format!("{tag}-alerts")], "jsonBody": true}},
                "redisStream": {"rs": {"hostAddress": "127.0.0.1:6379", "streams": [format!("{tag}-stream")], "consumerGroup": "riposte"}},
                "file": {"f": {"watchPathConfig": {"directory": d, "pathRegexp": ".*\\.json"}, "eventType": "CREATE"}},
                "calendar": {"c": {"interval": "1s"}}
            }
        }),
    );
    let deps: Vec<Value> = ["n", "m", "a", "r", "rs", "f"]
        .iter()
        .map(|e| json!({"name": format!("dep-{e}"), "eventSourceName": "brokers", "eventName": e}))
        .collect();
    create(
        &s.base,
        "sensors",
        "sensor",
        json!({
            "metadata": {"name": "brokers"},
            "spec": {"dependencies": deps, "triggers": [
                {"template": {"name": "log", "conditions": "dep-n || dep-m || dep-a || dep-r || dep-rs || dep-f", "log": {}}}
            ]}
        }),
    );
    // Let the sources connect and subscribe (pub/sub drops what nobody listens to).
    std::thread::sleep(Duration::from_secs(3));
    for i in 0..3 {
        let body = format!("{{\"i\":{i}}}");
        nats_publish(&format!("{tag}.alerts"), &body);
        run(
            "mosquitto_pub",
            &[
                "-h",
                "127.0.0.1",
                "-q",
                "1",
                "-t",
                &format!("{tag}/alerts"),
                "-m",
                &body,
            ],
        );
        run(
            "amqp-publish",
            &[
                "-u",
                "amqp://guest:guest@127.0.0.1:5672",
                "-e",
                &format!("{tag}-ex"),
                "-r",
                "alerts",
                "-b",
                &body,
            ],
        );
        run(
            "redis-cli",
            &[
                "-h",
                "127.0.0.1",
                "PUBLISH",
                &format!("{tag}-alerts"),
                &body,
            ],
        );
        run(
            "redis-cli",
            &[
                "-h",
                "127.0.0.1",
                "XADD",
                &format!("{tag}-stream"),
                "*",
                "i",
                &i.to_string(),
            ],
        );
        std::fs::write(dir.path().join(format!("alert-{i}.json")), &body).expect("write");
    }
    for name in ["n", "m", "a", "r", "rs", "f"] {
        wait_until(
            &format!("3 events from {name}"),
            Duration::from_secs(30),
            || events_of(&db, name) >= 3,
        );
        assert_eq!(events_of(&db, name), 3, "{name}: each message once");
    }
    wait_until("calendar ticks", Duration::from_secs(10), || {
        events_of(&db, "c") >= 2
    });
    wait_all_processed(&db, Duration::from_secs(20));
    let fired = query(
        &db,
        "SELECT count(*) FROM event_decisions WHERE sensor = 'default/brokers' AND decision->'triggers'->0->>'fired' = 'true'",
    );
    assert_eq!(fired, "18", "every message fired the log trigger");
    let body = query(
        &db,
        "SELECT envelope->'data'->'body'->>'i' FROM events WHERE event_name = 'm' ORDER BY seq LIMIT 1",
    );
    assert_eq!(body, "0", "a JSON body is JSON in the event");
}

/// Hera's EventsService (Argo's Python SDK), unmodified: sensors and event sources created,
/// read, listed, updated and deleted; an alert through the webhook makes the sensor's
/// workflow; `receive_event` with a WorkflowEventBinding submits a template.
#[test]
fn hera_events_service_manages_sensors_and_event_sources() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/hera/events.py");
    let probe = Command::new("python3")
        .args(["-c", "import hera"])
        .output()
        .expect("python3");
    assert!(
        probe.status.success(),
        "hera is not installed: run scripts/test (it installs hera from PyPI) or pip install hera==7.1.0"
    );
    let db = database("events", "hera");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    let out = Command::new("python3")
        .arg(&script)
        .arg(&s.base)
        .output()
        .expect("run the hera script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("hera events ok"), "{text}");
}

/// Posts an alert until it is accepted, as a producer with retries does (falcosidekick,
/// the audit webhook backend): a 5xx or a refused connection is tried again.
fn post_until_accepted(url: &str, body: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(resp) = agent().post(url).send(body)
            && resp.status().as_u16() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url} did not accept the alert in a minute"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// PostgreSQL connections are cut several times while alerts arrive: producers that got an
/// error retry, and in the end every alert made exactly one workflow.
#[test]
fn postgres_connections_cut_mid_stream_lose_and_double_nothing() {
    let db = database("events", "pgcut");
    let dbname = db.rsplit('/').next().expect("database name").to_string();
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    create_template(&s.base);
    falco_source(&s.base);
    falco_sensor(&s.base, json!({}));
    let hook = format!("{}/api/v1/webhooks/default/falco/alerts", s.base);
    let cutter = {
        let dbname = dbname.clone();
        std::thread::spawn(move || {
            for _ in 0..6 {
                std::thread::sleep(Duration::from_millis(300));
                common::psql(
                    "postgres",
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{dbname}' AND pid <> pg_backend_pid()"
                    ),
                );
            }
        })
    };
    for i in 0..80 {
        post_until_accepted(&hook, &alert_with_uuid(&format!("cut-{i}")));
        std::thread::sleep(Duration::from_millis(20));
    }
    cutter.join().expect("cutter");
    wait_until("80 workflows", Duration::from_secs(60), || {
        sensor_workflows(&db) == 80
    });
    wait_all_processed(&db, Duration::from_secs(60));
    assert_eq!(sensor_workflows(&db), 80);
    assert_eq!(query(&db, "SELECT count(*) FROM events"), "80");
}

/// The NATS server behind `--bus` is killed and restarted while alerts arrive: webhooks keep
/// answering (the event is stored first), and every alert makes one workflow once NATS is back.
#[test]
fn nats_restarted_mid_stream_loses_nothing() {
    let nats_dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let start_nats = || {
        Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(nats_dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (scripts/test installs it)")
    };
    let mut nats = start_nats();
    wait_until("NATS", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let db = database("events", "natsrestart");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(
        home.path(),
        &db,
        &["--bus", &format!("nats://127.0.0.1:{port}/restart")],
    );
    create_template(&s.base);
    falco_source(&s.base);
    falco_sensor(&s.base, json!({}));
    let hook = format!("{}/api/v1/webhooks/default/falco/alerts", s.base);
    for i in 0..60 {
        if i == 20 {
            let _ = nats.kill();
            let _ = nats.wait();
        }
        if i == 40 {
            nats = start_nats();
        }
        post_until_accepted(&hook, &alert_with_uuid(&format!("restart-{i}")));
    }
    wait_until("60 workflows", Duration::from_secs(90), || {
        sensor_workflows(&db) == 60
    });
    wait_all_processed(&db, Duration::from_secs(30));
    assert_eq!(sensor_workflows(&db), 60);
    let _ = nats.kill();
    let _ = nats.wait();
}

/// A webhook with `authSecret` takes only the bearer token read from the secrets directory.
#[test]
fn webhook_auth_secret_is_checked() {
    let db = database("events", "authsecret");
    let home = tempfile::tempdir().expect("tempdir");
    let secrets = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(secrets.path().join("hook")).expect("dir");
    std::fs::write(secrets.path().join("hook/token"), "s3cret\n").expect("secret");
    let dir = secrets.path().display().to_string();
    let s = start(home.path(), &db, &["--secrets-dir", &dir]);
    let port = free_port().to_string();
    create(
        &s.base,
        "event-sources",
        "eventSource",
        json!({"metadata": {"name": "guarded"}, "spec": {"webhook": {
        "alerts": {"port": port, "endpoint": "/a", "method": "POST", "authSecret": {"name": "hook", "key": "token"}}}}}),
    );
    let hook = format!("{}/api/v1/webhooks/default/guarded/alerts", s.base);
    assert_eq!(post_raw(&hook, &[], b"{}").0, 401);
    assert_eq!(
        post_raw(&hook, &[("Authorization", "Bearer s3cre")], b"{}").0,
        401
    );
    assert_eq!(
        post_raw(&hook, &[("Authorization", "Bearer s3cret!")], b"{}").0,
        401
    );
    assert_eq!(
        post_raw(&hook, &[("Authorization", "Bearer s3cret")], b"{}").0,
        200
    );
    assert_eq!(query(&db, "SELECT count(*) FROM events"), "1");
}

/// `conditions: shell && other` with `conditionsReset: byTime @every 2s`: an event older
/// than the reset no longer counts, so a late partner does not fire; a fresh pair does, and
/// the workflow's parameter comes from a `dataTemplate` (Go template with Sprig).
#[test]
fn conditions_reset_drops_stale_events_and_templates_fill_parameters() {
    let db = database("events", "reset");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    create_template(&s.base);
    falco_source(&s.base);
    create(
        &s.base,
        "sensors",
        "sensor",
        json!({"metadata": {"name": "pair"}, "spec": {
            "dependencies": [
                {"name": "shell", "eventSourceName": "falco", "eventName": "alerts"},
                {"name": "other", "eventSourceName": "falco", "eventName": "any"}],
            "triggers": [{"template": {"name": "both", "conditions": "shell && other",
                "conditionsReset": [{"byTime": {"cron": "@every 2s"}}],
                "argoWorkflow": {"operation": "submit", "source": {"resource": {
                    "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                    "metadata": {"generateName": "pair-"},
                    "spec": {"workflowTemplateRef": {"name": "isolate-pod"},
                        "arguments": {"parameters": [{"name": "pod", "value": "unknown"},
                                                     {"name": "namespace", "value": "default"}]}}}},
                "parameters": [{"src": {"dependencyName": "shell",
                    "dataTemplate": "{{ index .Input.body.output_fields \"k8s.pod.name\" | upper }}"},
                    "dest": "spec.arguments.parameters.0.value"}]}}}]}}),
    );
    let pairs = || -> i64 {
        query(
            &db,
            "SELECT count(*) FROM workflows WHERE labels->>'events.argoproj.io/sensor' = 'pair'",
        )
        .parse()
        .expect("count")
    };
    let alerts = format!("{}/api/v1/webhooks/default/falco/alerts", s.base);
    let any = format!("{}/api/v1/webhooks/default/falco/any", s.base);
    assert_eq!(post_raw(&alerts, &[], &alert_with_uuid("first")).0, 200);
    wait_all_processed(&db, Duration::from_secs(20));
    // Past the reset: the first alert no longer waits for a partner.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(post_raw(&any, &[], br#"{"late": true}"#).0, 200);
    wait_all_processed(&db, Duration::from_secs(20));
    assert_eq!(pairs(), 0, "a reset event must not complete the condition");
    // A fresh alert while the partner is still fresh: one workflow.
    assert_eq!(post_raw(&alerts, &[], &alert_with_uuid("second")).0, 200);
    wait_all_processed(&db, Duration::from_secs(20));
    wait_until("the pair's workflow", Duration::from_secs(20), || {
        pairs() == 1
    });
    let pod = query(
        &db,
        "SELECT definition->'resource'->'spec'->'arguments'->'parameters'->0->>'value' FROM workflows \
         WHERE labels->>'events.argoproj.io/sensor' = 'pair'",
    );
    let expected = payload("falco-terminal-shell.json")["output_fields"]["k8s.pod.name"]
        .as_str()
        .expect("pod name")
        .to_uppercase();
    assert_eq!(pod, expected);
    // Built from the second alert and the late partner, not the reset first alert.
    let from = query(
        &db,
        "SELECT definition->'resource'->'metadata'->'annotations'->>'riposte.io/events' FROM workflows \
         WHERE labels->>'events.argoproj.io/sensor' = 'pair'",
    );
    assert_eq!(from, "2,3");
}

/// A tiny HTTP endpoint that fails the first `fail_first` requests on each path with 503 and
/// then answers 200 (paths under `/forbidden` always get 403); returns its base URL and the
/// number of requests per path.
fn flaky_endpoint(
    fail_first: usize,
) -> (
    String,
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let counts = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let Ok(clone) = conn.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(clone);
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let path = request_line
                .split_whitespace()
                .nth(1)
                .unwrap_or("")
                .to_string();
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let n = {
                let mut c = counts.lock().expect("counts");
                let n = c.entry(path.clone()).or_insert(0);
                *n += 1;
                *n
            };
            let status = if path.starts_with("/forbidden") {
                "403 Forbidden"
            } else if n <= fail_first {
                "503 Service Unavailable"
            } else {
                "200 OK"
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (base, seen)
}

/// `atLeastOnce: true`: an http trigger whose target fails is tried again (the event is
/// delivered again) until it succeeds; by default (at most once) one failure is final.
#[test]
fn at_least_once_retries_a_failing_trigger_until_it_succeeds() {
    let db = database("events", "atleastonce");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    falco_source(&s.base);
    let (target, seen) = flaky_endpoint(2);
    for (name, at_least_once) in [("persistent", true), ("once", false)] {
        create(
            &s.base,
            "sensors",
            "sensor",
            json!({"metadata": {"name": name}, "spec": {
                "dependencies": [{"name": "shell", "eventSourceName": "falco", "eventName": "alerts"}],
                "triggers": [{"atLeastOnce": at_least_once,
                    "retryStrategy": {"steps": 1},
                    "template": {"name": "page", "http": {"url": format!("{target}/{name}"), "method": "POST"}}}]}}),
        );
    }
    let alerts = format!("{}/api/v1/webhooks/default/falco/alerts", s.base);
    assert_eq!(post_raw(&alerts, &[], &alert_with_uuid("page-me")).0, 200);
    let count = |path: &str| seen.lock().expect("counts").get(path).copied().unwrap_or(0);
    // Two failures, then the third delivery gets through and the event is processed.
    wait_until(
        "the at-least-once trigger to succeed",
        Duration::from_secs(60),
        || count("/persistent") >= 3,
    );
    wait_all_processed(&db, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(count("/persistent"), 3, "no more tries after the success");
    assert_eq!(count("/once"), 1, "at most once: the failure is final");
    // A user's explicit re-delivery asks every sensor again, final decisions included.
    let (code, v) = call(
        "POST",
        &format!("{}/api/v1/riposte/events/1/redeliver", s.base),
        Some(json!({})),
    );
    assert_eq!(code, 200, "{v}");
    wait_until(
        "the at-most-once trigger asked again",
        Duration::from_secs(20),
        || count("/once") == 2,
    );
}

/// A trigger's `retryStrategy` retries what may pass (a 503) and not a refusal (a 403): the
/// same request would be refused again, and each attempt would be one more call to a
/// target that said no.
#[test]
fn a_refused_trigger_is_final_and_an_unavailable_one_is_retried() {
    let db = database("events", "refused");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    falco_source(&s.base);
    let (target, seen) = flaky_endpoint(2);
    for (name, path) in [("refused", "forbidden"), ("unavailable", "unavailable")] {
        create(
            &s.base,
            "sensors",
            "sensor",
            json!({"metadata": {"name": name}, "spec": {
                "dependencies": [{"name": "shell", "eventSourceName": "falco", "eventName": "alerts"}],
                "triggers": [{"retryStrategy": {"steps": 4, "duration": "10ms"},
                    "template": {"name": "page", "http": {"url": format!("{target}/{path}"), "method": "POST"}}}]}}),
        );
    }
    let alerts = format!("{}/api/v1/webhooks/default/falco/alerts", s.base);
    assert_eq!(post_raw(&alerts, &[], &alert_with_uuid("refuse-me")).0, 200);
    wait_all_processed(&db, Duration::from_secs(30));
    let count = |path: &str| seen.lock().expect("counts").get(path).copied().unwrap_or(0);
    assert_eq!(count("/forbidden"), 1, "a 403 is not tried again");
    assert_eq!(count("/unavailable"), 3, "two 503s, then the success");
    let error = query(
        &db,
        "SELECT decision->'triggers'->0->>'error' FROM event_decisions WHERE sensor = 'default/refused'",
    );
    assert!(error.contains("status 403"), "{error}");
}

/// A spent `rateLimit` defers its trigger's firing instead of waiting inline: the other
/// sensors on the same events are answered at once, and the deferred firing is recorded
/// as such (the event stays open until the limit allows it).
#[test]
fn a_rate_limited_trigger_defers_without_holding_up_other_sensors() {
    let db = database("events", "ratelimit");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    falco_source(&s.base);
    let (target, seen) = flaky_endpoint(0);
    // Sensors are asked in name order: the limited one first, as the worst case.
    for (name, limit) in [
        ("a-limited", json!({"unit": "Minute", "requestsPerUnit": 1})),
        ("b-quick", Value::Null),
        (
            "c-per-second",
            json!({"unit": "Second", "requestsPerUnit": 1}),
        ),
    ] {
        create(
            &s.base,
            "sensors",
            "sensor",
            json!({"metadata": {"name": name}, "spec": {
                "dependencies": [{"name": "shell", "eventSourceName": "falco", "eventName": "alerts"}],
                "triggers": [{"rateLimit": limit,
                    "template": {"name": "page", "http": {"url": format!("{target}/{name}"), "method": "POST"}}}]}}),
        );
    }
    let alerts = format!("{}/api/v1/webhooks/default/falco/alerts", s.base);
    for i in 0..3 {
        assert_eq!(
            post_raw(&alerts, &[], &alert_with_uuid(&format!("limited-{i}"))).0,
            200
        );
    }
    let count = |path: &str| seen.lock().expect("counts").get(path).copied().unwrap_or(0);
    wait_until(
        "the unlimited sensor to fire for every alert",
        Duration::from_secs(30),
        || count("/b-quick") == 3,
    );
    wait_until("two firings deferred", Duration::from_secs(30), || {
        query(
            &db,
            "SELECT count(DISTINCT event_seq) FROM event_decisions WHERE sensor = 'default/a-limited' AND decision->'triggers'->0->>'deferredForMs' IS NOT NULL",
        ) == "2"
    });
    assert_eq!(count("/a-limited"), 1, "one firing per minute");
    // Deferred firings happen when their window opens, each once.
    wait_until(
        "every per-second firing, one a second",
        Duration::from_secs(30),
        || count("/c-per-second") == 3,
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(count("/c-per-second"), 3, "each deferred firing once");
    assert_eq!(
        query(
            &db,
            "SELECT count(*) FROM events WHERE processed_at IS NULL"
        ),
        "2",
        "the deferred alerts stay open until the limit allows them"
    );
}

/// Changing an EventSource that shares a port keeps the listener open: alerts posted to an
/// endpoint on it while another endpoint is added and removed are all accepted.
#[test]
fn changing_a_webhook_event_source_never_closes_its_port() {
    let db = database("events", "listener");
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path(), &db, &[]);
    let port = free_port().to_string();
    let definition = |extra: bool| {
        let mut hooks = json!({"alerts": {"port": port, "endpoint": "/falco", "method": "POST"}});
        if extra {
            hooks["audit"] = json!({"port": port, "endpoint": "/audit", "method": "POST"});
        }
        json!({"metadata": {"name": "shared"}, "spec": {"webhook": hooks}})
    };
    create(&s.base, "event-sources", "eventSource", definition(false));
    let hook = format!("http://127.0.0.1:{port}/falco");
    wait_until("the listener", Duration::from_secs(10), || {
        agent()
            .post(&hook)
            .send(&alert_with_uuid("warm-up")[..])
            .is_ok()
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poster = {
        let (hook, stop) = (hook.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut refused = Vec::new();
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                n += 1;
                match agent()
                    .post(&hook)
                    .send(&alert_with_uuid(&format!("during-{n}"))[..])
                {
                    Ok(r) if r.status().as_u16() == 200 => {}
                    Ok(r) => refused.push(format!("{n}: status {}", r.status())),
                    Err(e) => refused.push(format!("{n}: {e}")),
                }
            }
            (n, refused)
        })
    };
    for i in 0..6 {
        let (st, v) = call(
            "PUT",
            &format!("{}/api/v1/event-sources/default/shared", s.base),
            Some(json!({"name": "shared", "eventSource": definition(i % 2 == 0)})),
        );
        assert_eq!(st, 200, "{v}");
        std::thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (posted, refused) = poster.join().expect("poster");
    assert!(
        refused.is_empty(),
        "{} of {posted} refused: {refused:?}",
        refused.len()
    );
    assert!(posted > 6, "alerts were posted throughout ({posted})");
}

/// A broker whose source acknowledges after the commit, with a durable subscription that
/// keeps what is published while no server runs.
struct Broker {
    /// The event type its source stores (`source.<kind>.after-commit` is its failpoint).
    kind: &'static str,
    /// Its EventSource (one entry, `e`).
    event_source: String,
    spec: Value,
    publish: Box<dyn Fn(&str) + Send + Sync>,
}

/// The four acknowledging brokers of this machine, named after `tag`: MQTT (QoS 1, persistent
/// session), AMQP without `message-id`, a NATS JetStream durable consumer, a Redis stream
/// consumer group.
fn brokers(tag: &str) -> Vec<Broker> {
    let stream = format!("{tag}_js");
    nats_request(
        &format!("$JS.API.STREAM.CREATE.{stream}"),
        &json!({"name": stream, "subjects": [format!("{tag}.js")], "storage": "memory"})
            .to_string(),
    );
    let (topic, exchange, subject, rstream) = (
        format!("{tag}/alerts"),
        format!("{tag}-ex"),
        format!("{tag}.js"),
        format!("{tag}-stream"),
    );
    vec![
        Broker {
            kind: "mqtt",
            event_source: format!("{tag}-mqtt"),
            spec: json!({"mqtt": {"e": {"url": "tcp://127.0.0.1:1883", "topic": topic, "jsonBody": true, "clientId": format!("{tag}-riposte")}}}),
            publish: Box::new(move |body| {
                run(
                    "mosquitto_pub",
                    &["-h", "127.0.0.1", "-q", "1", "-t", &topic, "-m", body],
                )
            }),
        },
        Broker {
            kind: "amqp",
            event_source: format!("{tag}-amqp"),
            spec: json!({"amqp": {"e": {"url": "amqp://guest:guest@127.0.0.1:5672/", "exchangeName": exchange, "exchangeType": "topic", "routingKey": "alerts", "jsonBody": true}}}),
            publish: Box::new(move |body| {
                run(
                    "amqp-publish",
                    &[
                        "-u",
                        "amqp://guest:guest@127.0.0.1:5672",
                        "-e",
                        &exchange,
                        "-r",
                        "alerts",
                        "-b",
                        body,
                    ],
                )
            }),
        },
        Broker {
            kind: "nats",
            event_source: format!("{tag}-js"),
            spec: json!({"nats": {"e": {"url": "nats://127.0.0.1:4222", "subject": subject, "jsonBody": true, "jetstream": {"stream": stream}}}}),
            publish: Box::new(move |body| nats_publish(&subject, body)),
        },
        Broker {
            kind: "redisStream",
            event_source: format!("{tag}-rs"),
            spec: json!({"redisStream": {"e": {"hostAddress": "127.0.0.1:6379", "streams": [rstream], "consumerGroup": "riposte"}}}),
            publish: Box::new(move |body| {
                run(
                    "redis-cli",
                    &["-h", "127.0.0.1", "XADD", &rstream, "*", "body", body],
                )
            }),
        },
    ]
}

/// A NATS request (the JetStream API): publishes with a reply inbox and waits for the answer.
fn nats_request(subject: &str, payload: &str) -> String {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect("127.0.0.1:4222").expect("NATS on 4222");
    c.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = vec![0u8; 65536];
    let _ = c.read(&mut buf).expect("INFO");
    write!(
        c,
        "CONNECT {{\"verbose\":false}}\r\nSUB _INBOX.riposte-test 1\r\nPUB {subject} _INBOX.riposte-test {}\r\n{payload}\r\n",
        payload.len()
    )
    .expect("PUB");
    let mut got = String::new();
    while !got.contains("MSG _INBOX.riposte-test")
        || !got.ends_with("\r\n")
        || got.matches("\r\n").count() < 2
    {
        let n = c.read(&mut buf).expect("the JetStream API answers");
        assert!(n > 0, "NATS closed the connection: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    assert!(!got.contains("\"error\""), "{subject}: {got}");
    got
}

/// Creates the brokers' EventSources and one Sensor whose trigger submits a one-step workflow
/// per event of any of them, then publishes probes until every source has stored one (its
/// subscription is live and durable from then on).
fn set_up_brokers(base: &str, db: &str, brokers: &[Broker]) {
    for b in brokers {
        create(
            base,
            "event-sources",
            "eventSource",
            json!({"metadata": {"name": b.event_source}, "spec": b.spec}),
        );
    }
    let deps: Vec<Value> = brokers
        .iter()
        .map(|b| json!({"name": b.kind, "eventSourceName": b.event_source, "eventName": "e"}))
        .collect();
    let triggers: Vec<Value> = brokers
        .iter()
        .map(|b| {
            json!({"template": {"name": b.kind, "conditions": b.kind, "argoWorkflow": {"operation": "submit", "source": {"resource": {
                "apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow",
                "metadata": {"generateName": "redelivered-"},
                "spec": {"entrypoint": "main", "templates": [{"name": "main", "container": {"image": "alpine", "command": ["true"]}}]}
            }}}}})
        })
        .collect();
    create(
        base,
        "sensors",
        "sensor",
        json!({"metadata": {"name": "redelivery"}, "spec": {"dependencies": deps, "triggers": triggers}}),
    );
    for b in brokers {
        wait_until(
            &format!("{} subscribed", b.event_source),
            Duration::from_secs(60),
            || {
                (b.publish)(r#"{"m":"probe"}"#);
                std::thread::sleep(Duration::from_millis(300));
                marked_events(db, &b.event_source, "probe") > 0
            },
        );
    }
}

/// Events of `event_source` whose body's `m` starts with `prefix` (a Redis stream entry
/// carries the body as a string field).
fn marked_events(db: &str, event_source: &str, prefix: &str) -> i64 {
    query(
        db,
        &format!(
            "SELECT count(*) FROM events WHERE event_source = '{event_source}' AND \
             coalesce(envelope->'data'->'body'->>'m', (envelope->'data'->'values'->>'body')::jsonb->>'m') LIKE '{prefix}%'"
        ),
    )
    .parse()
    .expect("count")
}

fn workflows_of_sensor(db: &str, sensor: &str) -> i64 {
    query(
        db,
        &format!(
            "SELECT count(*) FROM workflows WHERE labels->>'events.argoproj.io/sensor' = '{sensor}'"
        ),
    )
    .parse()
    .expect("count")
}

fn server_command(home: &Path, db_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riposte"));
    cmd.args(["server", "--no-isolation", "--lease-seconds", "2"])
        .args(["--listen", "127.0.0.1:0"])
        .args(["--database-url", db_url])
        .env("RIPOSTE_HOME", home)
        .env("RUST_LOG", "warn");
    cmd
}

fn metric(base: &str, needle: &str) -> f64 {
    let text = agent()
        .get(&format!("{base}/metrics"))
        .call()
        .expect("metrics")
        .body_mut()
        .read_to_string()
        .expect("text");
    text.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Per broker, a crash at the worst moment — the event committed, its acknowledgement not
/// sent — then the broker's re-delivery: the re-delivered message is the event stored before
/// (counted as a duplicate), the two later messages with one identical payload are two events,
/// and each of the three makes one workflow.
#[test]
fn a_crash_between_commit_and_ack_is_one_event_after_each_brokers_redelivery() {
    let db = database("events", "redeliver");
    let home = tempfile::tempdir().expect("tempdir");
    let tag = format!("rd{}", std::process::id());
    let brokers = brokers(&tag);
    let s = start(home.path(), &db, &[]);
    set_up_brokers(&s.base, &db, &brokers);
    drop(s);
    for b in &brokers {
        let before_workflows = workflows_of_sensor(&db, "redelivery");
        let before_events: i64 = query(&db, "SELECT count(*) FROM events")
            .parse()
            .expect("count");
        (b.publish)(r#"{"m":"first"}"#);
        (b.publish)(r#"{"m":"same"}"#);
        (b.publish)(r#"{"m":"same"}"#);
        let log = std::fs::File::create(home.path().join(format!("{}.log", b.kind))).expect("log");
        let mut crashing = server_command(home.path(), &db)
            .env(
                "RIPOSTE_FAILPOINT",
                format!("source.{}.after-commit", b.kind),
            )
            .stderr(log)
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("server");
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = crashing.try_wait().expect("wait") {
                break status;
            }
            if Instant::now() > deadline {
                let _ = crashing.kill();
                panic!("{}: the failpoint was never reached", b.kind);
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            !status.success(),
            "{}: the server aborted at the failpoint",
            b.kind
        );
        assert_eq!(
            marked_events(&db, &b.event_source, "first"),
            1,
            "{}: the first message was committed before the crash",
            b.kind
        );
        let s = start(home.path(), &db, &[]);
        // JetStream re-delivers after its 30 s ack wait, a Redis stream entry is claimed once
        // pending for 10 s.
        wait_until(
            &format!("{}: the re-delivery", b.kind),
            Duration::from_secs(90),
            || {
                metric(
                    &s.base,
                    &format!("event_source=\"{}\",duplicate=\"true\"", b.event_source),
                ) >= 1.0
                    || marked_events(&db, &b.event_source, "first") > 1
            },
        );
        wait_until(
            &format!("{}: both messages with one payload stored", b.kind),
            Duration::from_secs(60),
            || marked_events(&db, &b.event_source, "same") >= 2,
        );
        wait_all_processed(&db, Duration::from_secs(60));
        assert_eq!(
            marked_events(&db, &b.event_source, "first"),
            1,
            "{}: re-delivery doubled the event",
            b.kind
        );
        assert_eq!(
            marked_events(&db, &b.event_source, "same"),
            2,
            "{}: one payload, two messages, two events",
            b.kind
        );
        let after_events: i64 = query(&db, "SELECT count(*) FROM events")
            .parse()
            .expect("count");
        assert_eq!(
            after_events - before_events,
            3,
            "{}: three messages, three events",
            b.kind
        );
        wait_until(
            &format!("{}: three workflows", b.kind),
            Duration::from_secs(30),
            || workflows_of_sensor(&db, "redelivery") >= before_workflows + 3,
        );
        assert_eq!(
            workflows_of_sensor(&db, "redelivery"),
            before_workflows + 3,
            "{}: one workflow per message",
            b.kind
        );
        drop(s);
    }
}

/// `kill -9` at 30 random moments while every broker carries a steady stream of distinct
/// messages: in the end each message published is exactly one event and one workflow.
#[test]
fn kill_9_loop_over_every_broker_makes_one_workflow_per_message() {
    let db = database("events", "brokerkill");
    let home = tempfile::tempdir().expect("tempdir");
    let tag = format!("bk{}", std::process::id());
    let brokers = std::sync::Arc::new(brokers(&tag));
    let s = start(home.path(), &db, &[]);
    set_up_brokers(&s.base, &db, &brokers);
    drop(s);
    let probes: i64 = query(&db, "SELECT count(*) FROM events")
        .parse()
        .expect("count");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (brokers, stop) = (brokers.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for b in brokers.iter() {
                    (b.publish)(&format!(r#"{{"m":"k{n}"}}"#));
                }
                n += 1;
                std::thread::sleep(Duration::from_millis(200));
            }
            n
        })
    };
    let mut rng = 0x9E3779B97F4A7C15u64;
    let mut next = |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % m
    };
    for _ in 0..30 {
        let mut s = start(home.path(), &db, &[]);
        std::thread::sleep(Duration::from_millis(100 + next(1200)));
        let _ = s.child.kill();
        let _ = s.child.wait();
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let published = publisher.join().expect("publisher") as i64;
    let _s = start(home.path(), &db, &[]);
    for b in brokers.iter() {
        wait_until(
            &format!("{}: all {published} messages stored", b.kind),
            Duration::from_secs(120),
            || marked_events(&db, &b.event_source, "k") >= published,
        );
    }
    wait_all_processed(&db, Duration::from_secs(60));
    let events: i64 = query(&db, "SELECT count(*) FROM events")
        .parse()
        .expect("count");
    wait_until("a workflow per event", Duration::from_secs(120), || {
        workflows_of_sensor(&db, "redelivery") >= events
    });
    for b in brokers.iter() {
        let distinct: i64 = query(
            &db,
            &format!(
                "SELECT count(DISTINCT coalesce(envelope->'data'->'body'->>'m', (envelope->'data'->'values'->>'body')::jsonb->>'m')) \
                 FROM events WHERE event_source = '{}' AND seq > 0",
                b.event_source
            ),
        )
        .parse()
        .expect("count");
        let stored = marked_events(&db, &b.event_source, "k");
        eprintln!("{}: {published} published, {stored} stored", b.kind);
        assert_eq!(stored, published, "{}: a message doubled or lost", b.kind);
        let probes_of: i64 = marked_events(&db, &b.event_source, "probe");
        assert_eq!(
            distinct,
            published + (probes_of > 0) as i64,
            "{}: every message once",
            b.kind
        );
    }
    assert_eq!(
        workflows_of_sensor(&db, "redelivery"),
        events,
        "one workflow per event ({probes} probes)"
    );
}
