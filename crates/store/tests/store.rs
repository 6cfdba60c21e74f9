//! The store against a real PostgreSQL (a fresh database per test) and SQLite: history and
//! projection in one transaction, listing, and the audit chain catching tampering.

use riposte_store::{
    AuditEntry, AuditFilter, ChainProblem, NewWorkflow, NodeLogLines, NodeRow, StepRecord, Store,
    StoreError, WorkflowState,
};
use serde_json::json;

/// The PostgreSQL server tests use; `RIPOSTE_TEST_PG` overrides it.
fn pg_admin_url() -> String {
    std::env::var("RIPOSTE_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Drops a test database after its store is closed.
async fn drop_pg(store: Store, db: String) {
    use sqlx::Connection;
    store.close().await;
    let mut conn = sqlx::PgConnection::connect(&pg_admin_url())
        .await
        .expect("connect");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {db}")))
        .execute(&mut conn)
        .await
        .expect("drop test database");
}

/// A new, empty PostgreSQL database for one test.
async fn fresh_pg() -> (Store, String) {
    use sqlx::Connection;
    let admin = pg_admin_url();
    let db = format!(
        "riposte_test_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_nanos()
            % 1_000_000_000
    );
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .expect("PostgreSQL must be running for store tests (scripts/test starts it)");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db}")))
        .execute(&mut conn)
        .await
        .expect("create test database");
    let url = match admin.rfind('/') {
        Some(i) => format!("{}/{db}", &admin[..i]),
        None => panic!("bad admin URL {admin}"),
    };
    (Store::open(&url).await.expect("open postgres store"), db)
}

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}", dir.path().join("riposte.db").display());
    (Store::open(&url).await.expect("open sqlite store"), dir)
}

fn workflow(name: &str, created_at: i64) -> NewWorkflow {
    NewWorkflow {
        uid: format!("uid-{name}"),
        namespace: "ns".into(),
        name: name.into(),
        labels: json!({"app": "x"}),
        created_at,
        definition: json!({"resource": {"kind": "Workflow"}}),
    }
}

fn state(phase: &str) -> WorkflowState {
    WorkflowState {
        phase: phase.into(),
        message: String::new(),
        started_at: Some(1),
        finished_at: None,
        status: json!({"phase": phase}),
    }
}

async fn history_and_projection(store: &Store) {
    store
        .create_workflow(&workflow("a", 10))
        .await
        .expect("create");
    let dup = store.create_workflow(&workflow("a", 11)).await.unwrap_err();
    assert!(matches!(dup, StoreError::AlreadyExists { .. }), "{dup}");
    let node = |phase: &str| NodeRow {
        id: "a".into(),
        name: "a".into(),
        phase: phase.into(),
        status: json!({"phase": phase, "x": [1, 2]}),
    };
    store
        .append_step(
            "uid-a",
            0,
            &json!([{"Start": {"now": 1}}]),
            1,
            &[node("Pending")],
            &state("Running"),
        )
        .await
        .expect("step 0");
    store
        .append_step(
            "uid-a",
            1,
            &json!([{"Tick": {"now": 2}}]),
            2,
            &[node("Succeeded")],
            &state("Succeeded"),
        )
        .await
        .expect("step 1");
    // A step recorded twice (or out of order) is refused, and leaves nothing behind.
    let again = store
        .append_step(
            "uid-a",
            1,
            &json!([]),
            3,
            &[node("Failed")],
            &state("Failed"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(again, StoreError::Query { .. } | StoreError::Corrupt { .. }),
        "{again}"
    );
    let w = store.get_workflow("ns", "a").await.expect("get");
    assert_eq!((w.phase.as_str(), w.history_len), ("Succeeded", 2));
    assert_eq!(w.labels, json!({"app": "x"}));
    assert_eq!(
        store.history("uid-a").await.expect("history"),
        vec![
            json!([{"Start": {"now": 1}}]),
            json!([{"Tick": {"now": 2}}])
        ]
    );
    let nodes = store.nodes("uid-a").await.expect("nodes");
    assert_eq!(nodes, vec![node("Succeeded")]);
    store
        .create_workflow(&workflow("b", 20))
        .await
        .expect("create b");
    // A step's log lines go in its transaction, after the lines shipped while the node ran;
    // a step that is refused stores none of them.
    store
        .append_node_logs("uid-b", "b", 21, &["one".into()])
        .await
        .expect("running node's log");
    let running = state("Running");
    let logs = |lines: &[&str]| {
        vec![NodeLogLines {
            node_id: "b".into(),
            at: 22,
            lines: lines.iter().map(|l| l.to_string()).collect(),
        }]
    };
    let inputs = json!([]);
    fn step<'a>(
        seq: i64,
        inputs: &'a serde_json::Value,
        state: &'a WorkflowState,
        logs: &'a [NodeLogLines],
    ) -> StepRecord<'a> {
        StepRecord {
            uid: "uid-b",
            seq,
            inputs,
            recorded_at: 22,
            nodes: &[],
            removed: &[],
            state,
            consumed_inbox: &[],
            audit: &[],
            notify: None,
            logs,
        }
    }
    let (two, never) = (logs(&["two", "thr\0ee"]), logs(&["never"]));
    store
        .record_step(&step(0, &inputs, &running, &two))
        .await
        .expect("step with logs");
    assert!(
        store
            .record_step(&step(0, &inputs, &running, &never))
            .await
            .is_err()
    );
    let stored: Vec<String> = store
        .node_logs("uid-b")
        .await
        .expect("logs")
        .into_iter()
        .map(|(_, line)| line)
        .collect();
    // A NUL byte (which PostgreSQL's text cannot hold) is stored as U+FFFD on both backends.
    assert_eq!(stored, vec!["one", "two", "thr\u{FFFD}ee"]);
    // A step's stdout may hold a NUL byte (its `outputs.result` in the history's inputs, the
    // node's and the workflow's status): PostgreSQL's jsonb rejects `\u0000`, so it is stored
    // as U+FFFD on both backends rather than making the step unrecordable.
    let nul_inputs = json!([{"NodeFinished": {"result": "a\u{0}b", "k\u{0}": ["\u{0}"]}}]);
    let nul_state = WorkflowState {
        status: json!({"phase": "Running", "message": "x\u{0}"}),
        ..state("Running")
    };
    let nul_node = [NodeRow {
        id: "b-1".into(),
        name: "b[0]".into(),
        phase: "Succeeded".into(),
        status: json!({"outputs": {"result": "a\u{0}b"}}),
    }];
    store
        .record_step(&StepRecord {
            nodes: &nul_node,
            ..step(1, &nul_inputs, &nul_state, &[])
        })
        .await
        .expect("a step whose output holds a NUL byte is recorded");
    let history = store.history("uid-b").await.expect("history");
    assert_eq!(
        history.last(),
        Some(&json!([{"NodeFinished": {"result": "a\u{FFFD}b", "k\u{FFFD}": ["\u{FFFD}"]}}]))
    );
    let nodes = store.nodes("uid-b").await.expect("nodes");
    assert_eq!(
        nodes.iter().find(|n| n.id == "b-1").map(|n| &n.status),
        Some(&json!({"outputs": {"result": "a\u{FFFD}b"}}))
    );
    let b = store.get_workflow("ns", "b").await.expect("b");
    assert_eq!(b.status["message"], "x\u{FFFD}");
    let names: Vec<String> = store
        .list_workflows(Some("ns"), 10)
        .await
        .expect("list")
        .into_iter()
        .map(|w| w.name)
        .collect();
    assert_eq!(names, vec!["b", "a"]);
    assert!(
        store
            .list_workflows(Some("other"), 10)
            .await
            .expect("list")
            .is_empty()
    );
    let missing = store.get_workflow("ns", "zz").await.unwrap_err();
    assert_eq!(missing.to_string(), "workflow ns/zz not found");
}

fn entry(i: i64) -> AuditEntry {
    AuditEntry {
        at: 1000 + i,
        actor: if i % 2 == 0 {
            "alice".into()
        } else {
            "bob".into()
        },
        action: "workflow.create".into(),
        object: format!("workflows/ns/w{i}"),
        source: "127.0.0.1".into(),
        details: json!({"b": i, "a": {"z": 1, "y": [i]}}),
    }
}

/// Runs raw SQL on the store's database (to play the attacker).
async fn tamper(url_or_path: &Tamper, sql: &str) {
    use sqlx::Connection;
    match url_or_path {
        Tamper::Pg(url) => {
            let mut c = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut c)
                .await
                .expect("tamper");
        }
        Tamper::Sqlite(url) => {
            let mut c = sqlx::SqliteConnection::connect(url).await.expect("connect");
            sqlx::query(sqlx::AssertSqlSafe(sql.to_string()))
                .execute(&mut c)
                .await
                .expect("tamper");
        }
    }
}

enum Tamper {
    Pg(String),
    Sqlite(String),
}

async fn audit_chain(store: &Store, raw: Tamper) {
    let seqs = store
        .audit_append(&(1..=5).map(entry).collect::<Vec<_>>())
        .await
        .expect("append");
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    store.audit_append(&[entry(6)]).await.expect("append");
    assert_eq!(store.audit_verify().await.expect("verify"), (6, vec![]));
    let bob = store
        .audit_list(&AuditFilter {
            actor: Some("bob".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(bob.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 3, 5]);
    let w2 = store
        .audit_list(&AuditFilter {
            object: Some("workflows/ns/w2".into()),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(w2.len(), 1);
    let window = store
        .audit_list(&AuditFilter {
            since: Some(1002),
            until: Some(1003),
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(window.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![2, 3]);

    tamper(&raw, "UPDATE audit_log SET actor = 'mallory' WHERE seq = 3").await;
    assert_eq!(
        store.audit_verify().await.expect("verify").1,
        vec![ChainProblem::Edited { seq: 3 }]
    );
    tamper(&raw, "UPDATE audit_log SET actor = 'bob' WHERE seq = 3").await;
    assert_eq!(store.audit_verify().await.expect("verify").1, vec![]);

    tamper(&raw, "DELETE FROM audit_log WHERE seq = 4").await;
    assert_eq!(
        store.audit_verify().await.expect("verify").1,
        vec![ChainProblem::Gap {
            before: 3,
            after: 5,
            from: 4,
            to: 4
        }]
    );

    tamper(&raw, "DELETE FROM audit_log WHERE seq = 6").await;
    let problems = store.audit_verify().await.expect("verify").1;
    assert!(
        problems.contains(&ChainProblem::Truncated {
            head_seq: 6,
            last_seq: 5
        }),
        "{problems:?}"
    );
}

#[tokio::test]
async fn sqlite_history_and_projection() {
    let (store, _dir) = sqlite().await;
    history_and_projection(&store).await;
}

#[tokio::test]
async fn postgres_history_and_projection() {
    let (store, db) = fresh_pg().await;
    history_and_projection(&store).await;
    drop_pg(store, db).await;
}

#[tokio::test]
async fn sqlite_audit_chain_detects_tampering() {
    let (store, dir) = sqlite().await;
    let url = format!("sqlite://{}", dir.path().join("riposte.db").display());
    audit_chain(&store, Tamper::Sqlite(url)).await;
}

#[tokio::test]
async fn postgres_audit_chain_detects_tampering() {
    let (store, db) = fresh_pg().await;
    let admin = pg_admin_url();
    let url = format!(
        "{}/{db}",
        &admin[..admin.rfind('/').expect("url has a database")]
    );
    audit_chain(&store, Tamper::Pg(url)).await;
    drop_pg(store, db).await;
}

#[tokio::test]
async fn concurrent_audit_appends_keep_one_chain() {
    let (store, db) = fresh_pg().await;
    let mut handles = Vec::new();
    for t in 0..4 {
        let s = store.clone();
        handles.push(tokio::spawn(async move {
            for i in 0..10 {
                s.audit_append(&[entry(t * 100 + i)]).await.expect("append");
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    assert_eq!(store.audit_verify().await.expect("verify"), (40, vec![]));
    drop_pg(store, db).await;
}

#[tokio::test]
async fn bad_urls_are_explained() {
    let err = Store::open("mysql://x").await.unwrap_err();
    assert!(
        err.to_string()
            .contains("use postgres://USER@HOST/DB or sqlite://PATH"),
        "{err}"
    );
    assert_eq!(
        riposte_store::redact("postgres://u:secret@h/db"),
        "postgres://u:***@h/db"
    );
}

async fn listing(store: &Store) {
    for i in 0..7 {
        let mut w = workflow(&format!("w{i}"), 100 + i);
        w.labels = json!({"team": if i % 2 == 0 { "red" } else { "blue" }, "app": "x"});
        store.create_workflow(&w).await.expect("create");
    }
    store
        .append_step("uid-w3", 0, &json!([]), 1, &[], &state("Succeeded"))
        .await
        .expect("step");
    let page = |after: Option<(i64, String)>, labels: Vec<(&str, &str)>, phase: Option<&str>| {
        riposte_store::ListQuery {
            namespace: Some("ns".into()),
            phase: phase.map(str::to_string),
            labels: labels
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            after,
            limit: 3,
            ..Default::default()
        }
    };
    let names =
        |v: Vec<riposte_store::WorkflowRecord>| v.into_iter().map(|w| w.name).collect::<Vec<_>>();
    let first = store
        .list_workflows_page(&page(None, vec![], None))
        .await
        .expect("page 1");
    let last = first.last().map(|w| (w.created_at, w.uid.clone()));
    assert_eq!(names(first), vec!["w6", "w5", "w4"]);
    assert_eq!(
        names(
            store
                .list_workflows_page(&page(last, vec![], None))
                .await
                .expect("page 2")
        ),
        vec!["w3", "w2", "w1"]
    );
    assert_eq!(
        names(
            store
                .list_workflows_page(&page(None, vec![("team", "blue")], None))
                .await
                .expect("blue")
        ),
        vec!["w5", "w3", "w1"]
    );
    assert_eq!(
        names(
            store
                .list_workflows_page(&page(None, vec![("team", "red"), ("app", "x")], None))
                .await
                .expect("red")
        ),
        vec!["w6", "w4", "w2"]
    );
    assert_eq!(
        names(
            store
                .list_workflows_page(&page(None, vec![], Some("Succeeded")))
                .await
                .expect("phase")
        ),
        vec!["w3"]
    );
}

#[tokio::test]
async fn sqlite_listing_filters_and_pages() {
    let (store, _dir) = sqlite().await;
    listing(&store).await;
}

#[tokio::test]
async fn postgres_listing_filters_and_pages() {
    let (store, db) = fresh_pg().await;
    listing(&store).await;
    drop_pg(store, db).await;
}

fn audit(action: &str, object: &str) -> AuditEntry {
    AuditEntry {
        at: 7,
        actor: "alice".into(),
        action: action.into(),
        object: object.into(),
        source: "127.0.0.1".into(),
        details: json!({}),
    }
}

/// The submit transaction, the inbox and audited changes, on both backends: a repeated
/// idempotency key returns the first workflow and writes nothing; a taken cron firing writes
/// nothing; inbox entries are consumed exactly once with the step that uses them; every change
/// has its audit row, sealed into a chain that verifies.
async fn shared_state_rules(store: &Store) {
    use riposte_store::{StepRecord, Submission, Submitted, TemplateRecord};
    let w = workflow("keyed", 1);
    let create = audit("workflow.create", "workflows/ns/keyed");
    let first = store
        .submit_workflow(&Submission {
            workflow: &w,
            lease: Some(("replica-a", 10_000)),
            idempotency_key: Some("ns/k1"),
            cron_firing: None,
            audit: &create,
        })
        .await
        .expect("submit");
    assert_eq!(first, Submitted::Created);
    let mut again = workflow("keyed-2", 2);
    again.uid = "uid-other".into();
    let second = store
        .submit_workflow(&Submission {
            workflow: &again,
            lease: Some(("replica-b", 10_000)),
            idempotency_key: Some("ns/k1"),
            cron_firing: None,
            audit: &create,
        })
        .await
        .expect("submit again");
    assert_eq!(
        second,
        Submitted::Existing {
            uid: "uid-keyed".into(),
            namespace: "ns".into(),
            name: "keyed".into()
        }
    );
    assert!(store.get_workflow("ns", "keyed-2").await.is_err());
    // The submitter holds the lease: another replica's claim does not take it.
    assert!(
        store
            .claim_workflows("replica-b", 5, 20_000)
            .await
            .expect("claim")
            .is_empty()
    );

    // A cron firing: the second claim of the same time creates nothing.
    let t = |name: &str| TemplateRecord {
        cluster: false,
        namespace: "ns".into(),
        name: name.into(),
        body: json!({}),
        created_at: 1,
        updated_at: 1,
    };
    store
        .put_cron(
            "ns",
            "nightly",
            &json!({"spec": {}}),
            1,
            true,
            &audit("cron.create", "cron-workflows/ns/nightly"),
        )
        .await
        .expect("cron");
    for (i, want) in [(0, Submitted::Created), (1, Submitted::CronFiringTaken)] {
        let mut run = workflow(&format!("nightly-{i}"), 3);
        run.uid = format!("uid-nightly-{i}");
        let got = store
            .submit_workflow(&Submission {
                workflow: &run,
                lease: None,
                idempotency_key: None,
                cron_firing: Some(("ns", "nightly", 1000)),
                audit: &create,
            })
            .await
            .expect("cron submit");
        assert_eq!(got, want);
    }
    assert!(store.get_workflow("ns", "nightly-1").await.is_err());

    // The inbox: stored, then consumed with the step that uses it, once.
    let id = store
        .enqueue_input(
            "uid-keyed",
            &json!({"Resume": {"now": 5, "node": null, "parameters": {}}}),
            5,
            &audit("workflow.resume", "workflows/ns/keyed"),
        )
        .await
        .expect("enqueue");
    assert_eq!(
        store
            .pending_inputs("uid-keyed")
            .await
            .expect("inbox")
            .len(),
        1
    );
    let inputs = json!([]);
    let running = WorkflowState {
        phase: "Running".into(),
        message: String::new(),
        started_at: Some(1),
        finished_at: None,
        status: json!({}),
    };
    let ids = [id];
    let step = |seq: i64| StepRecord {
        uid: "uid-keyed",
        seq,
        inputs: &inputs,
        recorded_at: 6,
        nodes: &[],
        removed: &[],
        state: &running,
        consumed_inbox: &ids,
        audit: &[],
        notify: None,
        logs: &[],
    };
    store.record_step(&step(0)).await.expect("step");
    assert!(
        store
            .pending_inputs("uid-keyed")
            .await
            .expect("inbox")
            .is_empty()
    );
    // Consuming it again (a stale replica) fails the whole step.
    assert!(store.record_step(&step(1)).await.is_err());
    let wf = store.get_workflow("ns", "keyed").await.expect("wf");
    assert_eq!(wf.history_len, 1, "the failed step left no trace");

    // Audited changes: templates and crons, deleted, suspended.
    store
        .put_template(
            &t("tpl"),
            true,
            &audit("template.create", "workflow-templates/ns/tpl"),
        )
        .await
        .expect("template");
    assert!(
        store
            .delete_template(
                false,
                "ns",
                "tpl",
                &audit("template.delete", "workflow-templates/ns/tpl")
            )
            .await
            .expect("delete")
    );
    store
        .set_cron_suspended(
            "ns",
            "nightly",
            true,
            9,
            &audit("cron.suspend", "cron-workflows/ns/nightly"),
        )
        .await
        .expect("suspend");
    assert!(
        store
            .delete_cron(
                "ns",
                "nightly",
                &audit("cron.delete", "cron-workflows/ns/nightly")
            )
            .await
            .expect("delete cron")
    );
    // A delete of nothing writes no audit row.
    assert!(
        !store
            .delete_cron(
                "ns",
                "nightly",
                &audit("cron.delete", "cron-workflows/ns/nightly")
            )
            .await
            .expect("delete again")
    );
    let actions: Vec<String> = store
        .audit_list(&AuditFilter::default())
        .await
        .expect("audit")
        .into_iter()
        .map(|r| r.entry.action)
        .collect();
    for want in [
        "workflow.create",
        "cron.create",
        "workflow.resume",
        "template.create",
        "template.delete",
        "cron.suspend",
        "cron.delete",
    ] {
        assert!(actions.iter().any(|a| a == want), "{want} in {actions:?}");
    }
    assert_eq!(
        actions.iter().filter(|a| *a == "cron.delete").count(),
        1,
        "{actions:?}"
    );
    let (_, problems) = store.audit_verify().await.expect("verify");
    assert!(problems.is_empty(), "{problems:?}");
    // Deleting the workflow frees its idempotency key.
    store
        .delete_workflow(
            "ns",
            "keyed",
            &audit("workflow.delete", "workflows/ns/keyed"),
        )
        .await
        .expect("delete workflow");
    let again = store
        .submit_workflow(&Submission {
            workflow: &workflow("keyed-3", 4),
            lease: None,
            idempotency_key: Some("ns/k1"),
            cron_firing: None,
            audit: &create,
        })
        .await
        .expect("submit after delete");
    assert_eq!(again, Submitted::Created);
}

#[tokio::test]
async fn postgres_shared_state_rules() {
    let (store, db) = fresh_pg().await;
    shared_state_rules(&store).await;
    drop_pg(store, db).await;
}

#[tokio::test]
async fn sqlite_shared_state_rules() {
    let (store, _dir) = sqlite().await;
    shared_state_rules(&store).await;
}

fn new_event(namespace: &str, source: &str, id: &str) -> riposte_store::NewEvent {
    riposte_store::NewEvent {
        source: source.into(),
        identity: riposte_store::EventIdentity::Id(id.into()),
        namespace: namespace.into(),
        event_source: "falco".into(),
        event_name: "alerts".into(),
        received_at: 1,
        envelope: json!({"id": id, "source": source}),
    }
}

/// An event is one per namespace, source and id: a producer's retry is a duplicate, the same
/// alert posted to another namespace's webhook (or from another source) is its own event.
async fn event_keys_and_batched_submissions(store: &Store) {
    use riposte_store::{Submission, Submitted};
    let first = store
        .append_events(&[
            new_event("team-a", "falco", "u1"),
            new_event("team-a", "falco", "u1"),
            new_event("team-a", "tracee", "u1"),
            new_event("team-b", "falco", "u1"),
        ])
        .await
        .expect("append");
    let dup: Vec<bool> = first.iter().map(|a| a.duplicate).collect();
    assert_eq!(dup, [false, true, false, false]);
    assert_eq!(first[0].seq, first[1].seq);
    let retry = store
        .append_events(&[new_event("team-b", "falco", "u1")])
        .await
        .expect("retry");
    assert_eq!((retry[0].seq, retry[0].duplicate), (first[3].seq, true));
    assert_eq!(store.count_events("team-a").await.expect("count"), (2, 0));

    // Several submissions in one transaction: each has its own outcome, and one that says no
    // leaves nothing behind while the others are committed.
    let create = audit("workflow.create", "workflows/ns/batch");
    let taken = workflow("batch-taken", 1);
    store
        .submit_workflow(&Submission {
            workflow: &taken,
            lease: None,
            idempotency_key: Some("ns/b0"),
            cron_firing: None,
            audit: &create,
        })
        .await
        .expect("first");
    let mut same_name = workflow("batch-taken", 2);
    same_name.uid = "uid-same-name".into();
    let fresh = workflow("batch-fresh", 3);
    let mut repeat = workflow("batch-repeat", 4);
    repeat.uid = "uid-repeat".into();
    let out = store
        .submit_workflows(&[
            Submission {
                workflow: &same_name,
                lease: None,
                idempotency_key: Some("ns/b1"),
                cron_firing: None,
                audit: &create,
            },
            Submission {
                workflow: &fresh,
                lease: Some(("replica-a", 10_000)),
                idempotency_key: Some("ns/b2"),
                cron_firing: None,
                audit: &create,
            },
            Submission {
                workflow: &repeat,
                lease: None,
                idempotency_key: Some("ns/b0"),
                cron_firing: None,
                audit: &create,
            },
        ])
        .await
        .expect("batch");
    assert!(
        matches!(out[0], Err(StoreError::AlreadyExists { .. })),
        "{:?}",
        out[0]
    );
    assert!(matches!(out[1], Ok(Submitted::Created)), "{:?}", out[1]);
    assert!(
        matches!(&out[2], Ok(Submitted::Existing { name, .. }) if name == "batch-taken"),
        "{:?}",
        out[2]
    );
    // The refused one's key is free: nothing of it was kept.
    let again = store
        .submit_workflow(&Submission {
            workflow: &workflow("batch-other", 5),
            lease: None,
            idempotency_key: Some("ns/b1"),
            cron_firing: None,
            audit: &create,
        })
        .await
        .expect("key b1 again");
    assert_eq!(again, Submitted::Created);
    assert!(store.get_workflow("ns", "batch-fresh").await.is_ok());
    assert!(store.get_workflow("ns", "batch-repeat").await.is_err());
}

#[tokio::test]
async fn postgres_event_keys_and_batched_submissions() {
    let (store, db) = fresh_pg().await;
    event_keys_and_batched_submissions(&store).await;
    drop_pg(store, db).await;
}

#[tokio::test]
async fn sqlite_event_keys_and_batched_submissions() {
    let (store, _dir) = sqlite().await;
    event_keys_and_batched_submissions(&store).await;
}

fn delivery(source: &str, digest: &str, redelivered: bool) -> riposte_store::NewEvent {
    riposte_store::NewEvent {
        identity: riposte_store::EventIdentity::Delivery {
            digest: digest.into(),
            redelivered,
        },
        ..new_event("ns", source, "unused")
    }
}

/// Deliveries without a producer id: every first delivery is a new event, even with the
/// payload of one stored before; a re-delivery is the latest event with its digest, and a new
/// one when nothing with its digest was stored (the crash came before the commit).
async fn deliveries_keyed_by_digest(store: &Store) {
    let appended = |events: Vec<riposte_store::NewEvent>| async move {
        store
            .append_events(&events)
            .await
            .expect("append")
            .into_iter()
            .map(|a| (a.seq, a.duplicate))
            .collect::<Vec<_>>()
    };
    let first = appended(vec![
        delivery("mqtt", "d1", false),
        delivery("mqtt", "d1", false),
        delivery("mqtt", "d1", true),
        delivery("mqtt", "d2", true),
        delivery("amqp", "d1", true),
    ])
    .await;
    let new: Vec<bool> = first.iter().map(|a| !a.1).collect();
    assert_eq!(new, [true, true, false, true, true]);
    assert_eq!(first[2].0, first[1].0, "a re-delivery is the latest stored");
    let again = appended(vec![delivery("mqtt", "d1", true)]).await;
    assert_eq!(again[0], (first[1].0, true));
    let third = appended(vec![delivery("mqtt", "d1", false)]).await;
    assert!(!third[0].1, "a first delivery after a re-delivery is new");
    let stored = store.get_event(third[0].0).await.expect("event");
    assert_eq!(stored.event_id, "d1#3");
    assert_eq!(
        stored.envelope["id"], "d1#3",
        "the envelope carries the stored id"
    );
    assert_eq!(
        store.get_event(first[3].0).await.expect("event").event_id,
        "d2#1"
    );
    // A first delivery after #3 that a crash kept from being stored: the mark it left makes
    // its re-delivery a new event, not #3 again.
    let pending = delivery("mqtt", "d1", false);
    let marked = store
        .append_events(std::slice::from_ref(&pending))
        .await
        .expect("append");
    assert!(!marked[0].duplicate, "#4 stored");
    let redelivered = appended(vec![delivery("mqtt", "d1", true)]).await;
    assert_eq!(
        redelivered[0],
        (marked[0].seq, true),
        "its re-delivery is #4"
    );
    assert!(
        store
            .mark_delivery_superseded("ns", "mqtt", "d1")
            .await
            .expect("mark")
    );
    let after_crash = appended(vec![delivery("mqtt", "d1", true)]).await;
    assert!(
        !after_crash[0].1,
        "a re-delivery after the mark is new (#5)"
    );
    assert_eq!(
        store
            .get_event(after_crash[0].0)
            .await
            .expect("event")
            .event_id,
        "d1#5"
    );
}

#[tokio::test]
async fn postgres_deliveries_keyed_by_digest() {
    let (store, db) = fresh_pg().await;
    deliveries_keyed_by_digest(&store).await;
    drop_pg(store, db).await;
}

#[tokio::test]
async fn sqlite_deliveries_keyed_by_digest() {
    let (store, _dir) = sqlite().await;
    deliveries_keyed_by_digest(&store).await;
}

/// A calendar's catch-up reads its own entry's last firing, however many events its siblings
/// stored after it.
async fn an_entrys_latest_event(store: &Store) {
    let entry = |name: &str, id: &str| riposte_store::NewEvent {
        event_name: name.into(),
        ..new_event("ns", "cal", id)
    };
    let mut events = vec![
        entry("nightly", "100/nightly"),
        entry("nightly", "200/nightly"),
    ];
    events.extend((0..60).map(|i| entry("every-second", &format!("{}/every-second", 300 + i))));
    store.append_events(&events).await.expect("append");
    let last = |name: &'static str| store.last_event_id("ns", "falco", name);
    assert_eq!(
        last("nightly").await.expect("read").as_deref(),
        Some("200/nightly")
    );
    assert_eq!(
        last("every-second").await.expect("read").as_deref(),
        Some("359/every-second")
    );
    assert_eq!(last("weekly").await.expect("read"), None);
}

#[tokio::test]
async fn postgres_an_entrys_latest_event() {
    let (store, db) = fresh_pg().await;
    an_entrys_latest_event(&store).await;
    drop_pg(store, db).await;
}

#[tokio::test]
async fn sqlite_an_entrys_latest_event() {
    let (store, _dir) = sqlite().await;
    an_entrys_latest_event(&store).await;
}

/// Every kind of named object goes through one put/get/list/delete: create refuses an
/// existing key, replace a missing one, collections sharing a table never see each other's
/// rows, and each change is audited with it.
async fn named_objects(store: &Store) {
    use riposte_store::{Collection, NamedObject};
    let object = |namespace: &str, name: &str, at: i64, body: serde_json::Value| NamedObject {
        namespace: namespace.into(),
        name: name.into(),
        body,
        created_at: at,
        updated_at: at,
    };
    let collections = [
        Collection::WorkflowTemplates,
        Collection::ClusterWorkflowTemplates,
        Collection::CronWorkflows,
        Collection::Events("Sensor"),
        Collection::Events("EventSource"),
    ];
    for (i, c) in collections.iter().enumerate() {
        let o = object("ns", "same-name", 1, json!({"collection": i}));
        store
            .put_object(*c, &o, true, &audit("object.create", &format!("{c:?}")))
            .await
            .expect("create");
        let again = store
            .put_object(*c, &o, true, &audit("object.create", "x"))
            .await;
        assert!(
            matches!(again, Err(StoreError::AlreadyExists { .. })),
            "{c:?}: {again:?}"
        );
        let missing = object("ns", "missing", 2, json!({}));
        let replaced = store
            .put_object(*c, &missing, false, &audit("object.update", "x"))
            .await;
        assert!(
            matches!(replaced, Err(StoreError::NotFound { .. })),
            "{c:?}: {replaced:?}"
        );
        store
            .put_object(
                *c,
                &object("other", "b", 3, json!({})),
                true,
                &audit("object.create", "y"),
            )
            .await
            .expect("create in another namespace");
    }
    for (i, c) in collections.iter().enumerate() {
        let got = store.get_object(*c, "ns", "same-name").await.expect("get");
        assert_eq!(
            got.body,
            json!({"collection": i}),
            "{c:?} sees only its own row"
        );
        let replacement = object("ns", "same-name", 9, json!({"collection": i, "v": 2}));
        store
            .put_object(*c, &replacement, false, &audit("object.update", "z"))
            .await
            .expect("replace");
        let got = store.get_object(*c, "ns", "same-name").await.expect("get");
        assert_eq!(
            (got.created_at, got.updated_at),
            (1, 9),
            "a replace keeps created_at"
        );
        let names = |v: Vec<NamedObject>| {
            v.into_iter()
                .map(|o| format!("{}/{}", o.namespace, o.name))
                .collect::<Vec<_>>()
        };
        let in_ns = store.list_objects(*c, Some("ns")).await.expect("list");
        assert_eq!(names(in_ns), ["ns/same-name"], "{c:?}");
        let all = store.list_objects(*c, None).await.expect("list all");
        assert_eq!(names(all), ["ns/same-name", "other/b"], "{c:?}");
    }
    // A CronWorkflow's `suspended` column follows its body.
    let suspended = object(
        "ns",
        "paused",
        1,
        json!({"spec": {"suspend": true, "schedule": "* * * * *"}}),
    );
    store
        .put_object(
            Collection::CronWorkflows,
            &suspended,
            true,
            &audit("cron.create", "c"),
        )
        .await
        .expect("cron");
    assert!(
        store
            .get_cron("ns", "paused")
            .await
            .expect("cron")
            .suspended
    );
    for c in collections {
        assert!(
            store
                .delete_object(c, "ns", "same-name", &audit("object.delete", "d"))
                .await
                .expect("delete")
        );
        assert!(
            !store
                .delete_object(c, "ns", "same-name", &audit("object.delete", "d"))
                .await
                .expect("delete")
        );
        let gone = store.get_object(c, "ns", "same-name").await;
        assert!(
            matches!(gone, Err(StoreError::NotFound { .. })),
            "{c:?}: {gone:?}"
        );
    }
    let audited = store
        .audit_list(&AuditFilter::default())
        .await
        .expect("audit")
        .into_iter()
        .filter(|r| r.entry.action.starts_with("object."))
        .count();
    // 5 × (create, create elsewhere, replace, delete): refusals and no-op deletes leave none.
    assert_eq!(audited, 5 * 4);
}

#[tokio::test]
async fn postgres_named_objects() {
    let (store, db) = fresh_pg().await;
    named_objects(&store).await;
    drop_pg(store, db).await;
}

#[tokio::test]
async fn sqlite_named_objects() {
    let (store, _dir) = sqlite().await;
    named_objects(&store).await;
}
