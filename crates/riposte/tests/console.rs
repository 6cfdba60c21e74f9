//! The web console in a real browser: Debian's headless Chromium driven over WebDriver
//! (`chromedriver`), against a real `riposte server` with real workflows, as a responder uses
//! it: sign in → list → open → watch a node finish live → read its logs → approve a suspended
//! step → see the workflow finish → find the approval in the audit page; the event timeline
//! and a sensor's dry run; templates with lint and the submit form; HTML/JS payloads in
//! names, parameters and logs rendered as text; what a viewer may not do.
//!
//! Screenshots of every page are saved under `target/tmp/console-screenshots/` (test
//! artefacts). `scripts/test` installs `chromium` and `chromium-driver`; without them this
//! suite fails and says so (set `RIPOSTE_SKIP_BROWSER=1` to skip it knowingly).
//!
//! The 10,000-node benchmark (`console_bench_10k_node_graph`, ignored by default) is run by
//! `scripts/bench console`: it measures, in the browser, the time to render the graph and to
//! answer the first click, and writes them to `target/tmp/console-bench.json`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod common;
use common::{Server, agent, free_port, start_server};

const ADMIN: &str = "admin-token-0123456789";
const ALICE: &str = "alice-token-0123456789";
const VICTOR: &str = "victor-token-0123456789";
// No single quotes: the step echoes them inside '...'.
const XSS_IMG: &str = "<img src=x onerror=\"window.__xss=1\">";
const XSS_SCRIPT: &str = "<script>window.__xss=2</script>";

fn skip() -> bool {
    if std::env::var_os("RIPOSTE_SKIP_BROWSER").is_some() {
        eprintln!("RIPOSTE_SKIP_BROWSER is set: the browser suite is skipped");
        return true;
    }
    false
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

// --- the server and its API -----------------------------------------------------------------

fn start(home: &Path) -> Server {
    let auth = home.join("identities.yaml");
    std::fs::write(
        &auth,
        format!(
            "identities:\n  - {{name: root, tokenSha256: {}, roles: {{\"*\": admin}}}}\n  - {{name: alice, tokenSha256: {}, roles: {{default: approver}}}}\n  - {{name: victor, tokenSha256: {}, roles: {{default: viewer}}}}\n",
            server::auth::sha256_hex(ADMIN),
            server::auth::sha256_hex(ALICE),
            server::auth::sha256_hex(VICTOR),
        ),
    )
    .expect("identities file");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riposte"));
    cmd.args(["server", "--no-isolation", "--listen", "127.0.0.1:0"])
        .arg("--auth-file")
        .arg(&auth)
        .env("RIPOSTE_HOME", home)
        .env("RUST_LOG", "warn")
        .env_remove("DATABASE_URL");
    start_server(cmd, |l| eprintln!("[server] {l}"))
}

fn api(method: &str, url: &str, token: &str, body: Option<Value>) -> (u16, Value) {
    let a = agent();
    let auth = format!("Bearer {token}");
    let resp = match (method, body) {
        ("GET", _) => a.get(url).header("Authorization", &auth).call(),
        ("POST", Some(b)) => a.post(url).header("Authorization", &auth).send_json(b),
        ("PUT", Some(b)) => a.put(url).header("Authorization", &auth).send_json(b),
        (m, _) => panic!("unsupported {m}"),
    };
    let mut resp = resp.expect("request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn create_workflow(base: &str, wf: Value) -> String {
    let (s, v) = api(
        "POST",
        &format!("{base}/api/v1/workflows/default"),
        ADMIN,
        Some(json!({ "workflow": wf })),
    );
    assert_eq!(s, 200, "creating a workflow: {v}");
    v["metadata"]["name"].as_str().expect("name").to_string()
}

/// Checks a pod, waits for a person's decision, then acts on it: the responder's loop.
fn gate_workflow(name: &str) -> Value {
    json!({
        "metadata": {"name": name, "labels": {"team": "blue"}},
        "spec": {
            "entrypoint": "main",
            "arguments": {"parameters": [{"name": "pod", "value": "web-1"}]},
            "templates": [
                {"name": "main", "steps": [
                    [{"name": "check", "template": "check"}],
                    [{"name": "approve", "template": "approve"}],
                    [{"name": "act", "template": "act",
                      "arguments": {"parameters": [{"name": "decision", "value": "{{steps.approve.outputs.parameters.decision}}"}]}}]
                ]},
                {"name": "check", "script": {"image": "alpine", "command": ["sh"],
                    "source": "echo checking pod {{workflow.parameters.pod}}; sleep 4; echo check done"}},
                {"name": "approve", "suspend": {"duration": "1h"}, "outputs": {"parameters": [
                    {"name": "decision", "enum": ["terminate", "keep"], "description": "terminate the pod or keep it",
                     "valueFrom": {"supplied": {}, "default": "keep"}}]}},
                {"name": "act", "inputs": {"parameters": [{"name": "decision"}]},
                 "script": {"image": "alpine", "command": ["sh"], "source": "echo decision={{inputs.parameters.decision}}"}}
            ]
        }
    })
}

fn wait_api(base: &str, name: &str, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, wf) = api(
            "GET",
            &format!("{base}/api/v1/workflows/default/{name}"),
            ADMIN,
            None,
        );
        if ok(&wf) {
            return wf;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {wf}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

// --- a minimal WebDriver client -------------------------------------------------------------

/// `chromedriver` and one headless Chromium session; both ended when dropped.
struct Browser {
    driver: Child,
    url: String,
    shots: PathBuf,
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start() -> Browser {
        let chromedriver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "chromedriver not found: install Debian's chromium and chromium-driver \
                     (`apt-get install -y chromium chromium-driver`; scripts/test does), or set \
                     RIPOSTE_SKIP_BROWSER=1 to skip the browser suite"
                )
            });
        let port = free_port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while agent()
            .get(&format!("{base}/status"))
            .call()
            .map(|r| r.status().as_u16() != 200)
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let binary = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("chromium is installed with chromium-driver");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": binary, "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1500,1000", "--no-first-run", "--disable-extensions"]}
        }}});
        let mut b = Browser {
            driver,
            url: base.clone(),
            shots: screenshots(),
        };
        let (s, v) = b.raw("POST", &format!("{base}/session"), Some(caps));
        assert_eq!(s, 200, "a Chromium session: {v}");
        let id = v["value"]["sessionId"].as_str().expect("session id");
        b.url = format!("{base}/session/{id}");
        b
    }

    fn raw(&self, method: &str, url: &str, body: Option<Value>) -> (u16, Value) {
        let a = agent();
        let resp = match method {
            "GET" => a.get(url).call(),
            "DELETE" => a.delete(url).call(),
            _ => a.post(url).send_json(body.unwrap_or(json!({}))),
        };
        let mut resp = resp.expect("WebDriver request");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let (s, v) = self.raw(method, &format!("{}{path}", self.url), body);
        assert_eq!(s, 200, "WebDriver {method} {path}: {v}");
        v["value"].clone()
    }

    fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url })));
    }

    fn js(&self, script: &str, args: Value) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            Some(json!({"script": script, "args": args})),
        )
    }

    /// A script's numeric answer (NaN when it is not a number).
    fn js_number(&self, script: &str) -> f64 {
        self.js(script, json!([])).as_f64().unwrap_or(f64::NAN)
    }

    fn find(&self, css: &str) -> Option<String> {
        let (s, v) = self.raw(
            "POST",
            &format!("{}/element", self.url),
            Some(json!({"using": "css selector", "value": css})),
        );
        (s == 200).then(|| v["value"][ELEMENT].as_str().unwrap_or("").to_string())
    }

    /// Waits (bounded) until `css` matches an element, and returns it.
    fn wait(&self, css: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = self.find(css) {
                return e;
            }
            if Instant::now() > deadline {
                self.shot("timeout");
                panic!(
                    "no element {css} within 30 s on {}; page text: {}",
                    self.js("return location.href", json!([])),
                    self.text("body")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits (bounded) until the text of `css` contains `needle`.
    fn wait_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            let t = self.find(css).map(|_| self.text(css)).unwrap_or_default();
            if t.contains(needle) {
                return t;
            }
            if Instant::now() > deadline {
                self.shot("timeout");
                panic!("{css} never contained {needle:?}; it says: {t}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn text(&self, css: &str) -> String {
        self.js(
            "const e = document.querySelector(arguments[0]); return e ? e.textContent : ''",
            json!([css]),
        )
        .as_str()
        .unwrap_or("")
        .to_string()
    }

    fn click(&self, css: &str) {
        let e = self.wait(css);
        self.cmd("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.wait(css);
        self.cmd("POST", &format!("/element/{e}/clear"), Some(json!({})));
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        );
    }

    fn shot(&self, name: &str) -> PathBuf {
        use base64::Engine;
        let png = self.cmd("GET", "/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap_or(""))
            .expect("a PNG screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
        path
    }

    /// The id of the drawn graph node whose name is `name` (waits for it).
    fn node_named(&self, name: &str) -> String {
        let css = format!("g.node[aria-label^='{name} (']");
        self.wait(&css);
        self.js(
            "return document.querySelector(arguments[0]).dataset.node",
            json!([css]),
        )
        .as_str()
        .unwrap_or_else(|| panic!("graph node {name} has no id"))
        .to_string()
    }

    fn sign_in(&self, base: &str, token: &str) {
        self.go(&format!("{base}/login"));
        self.type_into("#token", token);
        self.click("#signin");
        self.wait("body[data-page=workflows]");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.raw("DELETE", &self.url.clone(), None);
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

// --- the tests ------------------------------------------------------------------------------

#[test]
fn responder_signs_in_watches_a_node_finish_reads_logs_approves_and_finds_it_audited() {
    if skip() {
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let base = s.base.clone();
    let b = Browser::start();

    // Not signed in: the console asks for a token and comes back to the page.
    b.go(&format!("{base}/workflows"));
    b.wait("#token");
    b.shot("01-sign-in");
    b.type_into("#token", ALICE);
    b.click("#signin");
    b.wait("body[data-page=workflows]");
    assert!(b.text("#who").contains("alice"), "{}", b.text("#who"));

    let name = create_workflow(&base, gate_workflow("gate-1"));
    // The list updates live: the new workflow appears without a reload.
    b.wait_text("#workflow-rows", &name);
    b.shot("02-workflows");

    // Open it; `check` is running, then finishes while we look.
    b.click(&format!(
        "#workflow-rows a[href='/workflows/default/{name}']"
    ));
    b.wait("#graph svg");
    b.wait("g.node[data-phase=Running]");
    b.wait_text("#wf-summary", "Started");
    let check_id = b.node_named("check");
    b.click(&format!("g.node[data-node='{check_id}']"));
    b.wait_text("#node-logs", "checking pod web-1");
    b.wait(&format!(
        "g.node[data-node='{check_id}'][data-phase=Succeeded]"
    ));
    b.wait_text("#node-logs", "check done");
    // The suspended step is drawn as waiting.
    b.wait("g.node.type-Suspend[data-phase=Running]");
    b.shot("03-workflow");

    // The inbox shows the step, its values and the deadline; approve with `terminate`.
    b.click("#nav a[data-page=approvals]");
    b.wait(&format!("article.approval[data-workflow='{name}']"));
    let card = b.text(&format!("article.approval[data-workflow='{name}']"));
    assert!(card.contains("left"), "a deadline countdown: {card}");
    assert!(card.contains("web-1"), "the workflow's parameters: {card}");
    assert!(card.contains("check"), "what the step before said: {card}");
    assert!(
        card.contains("checking pod web-1"),
        "what the step before printed: {card}"
    );
    assert!(
        card.contains("If approved, next") && card.contains("echo decision="),
        "what approving will run: {card}"
    );
    b.js(
        "const s = document.querySelector(arguments[0]); s.value = 'terminate'; return s.value",
        json!([format!("article.approval[data-workflow='{name}'] select")]),
    );
    b.shot("04-approvals");
    b.click(&format!(
        "article.approval[data-workflow='{name}'] button[data-approve]"
    ));
    b.wait("dialog[open]");
    b.click("#confirm-ok");
    b.wait_text("#banner", "Approved");

    // Back on the workflow: it finishes with the decision.
    b.go(&format!("{base}/workflows/default/{name}"));
    b.wait_text("#wf-phase", "Succeeded");
    let act = b.node_named("act");
    b.click(&format!("g.node[data-node='{act}']"));
    b.wait_text("#node-logs", "decision=terminate");
    b.shot("05-finished");

    // The audit page has the approval, by alice, and the chain verifies.
    b.go(&format!("{base}/audit?workflow=default/{name}"));
    b.wait_text("#chain-status", "Chain verified");
    b.wait("#audit-rows tr[data-action='workflow.approve'][data-actor=alice]");
    b.shot("06-audit");
}

#[test]
fn payloads_in_names_parameters_and_logs_are_text_and_roles_limit_actions() {
    if skip() {
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let base = s.base.clone();

    // HTML and script in a parameter, a label-free message, a log line and a result.
    let xss = create_workflow(
        &base,
        json!({
            "metadata": {"name": "xss"},
            "spec": {"entrypoint": "main",
                "arguments": {"parameters": [{"name": "payload", "value": XSS_IMG}]},
                "templates": [{"name": "main", "inputs": {"parameters": [{"name": "payload", "value": "{{workflow.parameters.payload}}"}]},
                    "script": {"image": "alpine", "command": ["sh"],
                        "source": format!("echo '{XSS_SCRIPT}'; echo '{XSS_IMG}'; exit 3")}}]}
        }),
    );
    wait_api(&base, &xss, "the payload workflow to fail", |w| {
        w["status"]["phase"] == "Failed"
    });
    // One gate waiting, for the viewer's read-only inbox.
    let gate = create_workflow(&base, gate_workflow("gate-2"));
    wait_api(&base, &gate, "the gate to suspend", |w| {
        w["status"]["nodes"].as_object().is_some_and(|n| {
            n.values()
                .any(|n| n["type"] == "Suspend" && n["phase"] == "Running")
        })
    });

    let b = Browser::start();
    b.sign_in(&base, ADMIN);
    b.go(&format!("{base}/workflows/default/{xss}"));
    b.wait_text("#wf-phase", "Failed");
    let node = b
        .js(
            "const n = [...document.querySelectorAll('g.node')].find(g => g.dataset.phase === 'Failed' && !g.classList.contains('type-Steps')); return n ? n.dataset.node : null",
            json!([]),
        )
        .as_str()
        .expect("the failed node")
        .to_string();
    b.click(&format!("g.node[data-node='{node}']"));
    b.wait_text("#node-logs", XSS_SCRIPT);
    b.wait_text("#node-logs", XSS_IMG);
    b.wait_text("#node-inputs", "<img src=x");
    b.shot("07-payloads-as-text");
    // Nothing ran: no global set, no element created from the payloads.
    assert_eq!(
        b.js("return window.__xss === undefined", json!([])),
        json!(true)
    );
    assert_eq!(
        b.js(
            "return document.querySelectorAll('main img, main script, #node-panel img').length",
            json!([])
        ),
        json!(0)
    );
    // Every response carries the policy that forbids inline script.
    let resp = agent()
        .get(&format!("{base}/workflows"))
        .call()
        .expect("GET /");
    let csp = resp
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(
        resp.headers()
            .get("x-content-type-options")
            .and_then(|v| v.to_str().ok()),
        Some("nosniff")
    );

    // The admin sees every action; stop/terminate need admin, retry needs submitter.
    b.go(&format!("{base}/workflows/default/{gate}"));
    b.wait("#wf-actions button[data-action=terminate]");
    assert!(b.find("#wf-actions button[data-action=resume]").is_some());

    // A viewer: no action buttons, a read-only inbox, and a clear 403 elsewhere.
    b.click("#signout");
    b.wait("#token");
    b.sign_in(&base, VICTOR);
    b.go(&format!("{base}/workflows/default/{gate}"));
    b.wait_text("#wf-actions", "Read-only");
    assert!(
        b.find("#wf-actions button").is_none(),
        "a viewer sees no action"
    );
    b.go(&format!("{base}/approvals"));
    b.wait_text(
        &format!("article.approval[data-workflow='{gate}']"),
        "Read-only",
    );
    assert!(b.find("button[data-approve]").is_none());
    b.shot("08-viewer-inbox");
    b.go(&format!("{base}/templates?namespace=prod"));
    b.wait_text("#banner", "Not allowed");
    assert!(
        b.text("#banner").contains("victor"),
        "{}",
        b.text("#banner")
    );
    b.shot("09-forbidden");

    // A wrong token: the sign-in page says so.
    b.click("#signout");
    b.go(&format!("{base}/login"));
    b.type_into("#token", "not-a-token");
    b.click("#signin");
    b.wait_text("#banner", "unknown token");
}

#[test]
fn templates_lint_inline_submit_from_a_form_and_events_show_their_journey() {
    if skip() {
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let base = s.base.clone();
    let (st, v) = api(
        "POST",
        &format!("{base}/api/v1/workflow-templates/default"),
        ADMIN,
        Some(json!({"template": {
            "metadata": {"name": "isolate-pod"},
            "spec": {"entrypoint": "main",
                "arguments": {"parameters": [
                    {"name": "pod", "value": "web-1"},
                    {"name": "namespace", "value": "default"},
                    {"name": "mode", "value": "label", "enum": ["label", "netpol"]}]},
                "templates": [{"name": "main", "script": {"image": "alpine", "command": ["sh"],
                    "source": "echo isolating {{workflow.parameters.namespace}}/{{workflow.parameters.pod}} by {{workflow.parameters.mode}}"}}]}
        }})),
    );
    assert_eq!(st, 200, "{v}");

    // Lint positions: the same `file:line:col` messages as `riposte lint`.
    let (st, lint) = api(
        "POST",
        &format!("{base}/api/v1/riposte/lint"),
        VICTOR,
        Some(
            json!({"yaml": "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata: {name: x}\nspec:\n  entrypoint: nope\n  templates:\n    - name: main\n      container: {image: alpine}\n"}),
        ),
    );
    assert_eq!(st, 200, "{lint}");
    let d = &lint["diagnostics"][0];
    assert_eq!(d["severity"], "error", "{lint}");
    assert_eq!(d["line"], 5, "{lint}");
    assert!(
        d["text"].as_str().unwrap_or("").starts_with("console:5:"),
        "{lint}"
    );

    let b = Browser::start();
    b.sign_in(&base, ADMIN);
    b.click("#nav a[data-page=templates]");
    b.click("a[href='/templates/default/isolate-pod']");
    b.wait_text("#lint-summary", "0 error(s)");
    assert!(
        b.text(".yaml").contains("entrypoint: main"),
        "{}",
        b.text(".yaml")
    );
    // The form: an enum is a select with its default chosen.
    assert_eq!(
        b.js("return document.querySelector('#p-mode').tagName + ':' + document.querySelector('#p-mode').value", json!([])),
        json!("SELECT:label")
    );
    b.js(
        "document.querySelector('#p-mode').value = 'netpol'",
        json!([]),
    );
    b.type_into("#p-pod", "api-7");
    b.shot("10-template");
    b.click("#submit-form button[type=submit]");
    b.wait("body[data-page=workflows] #graph svg");
    b.wait_text("#wf-phase", "Succeeded");
    let url = b.js("return location.pathname", json!([]));
    let wf = url
        .as_str()
        .unwrap_or("")
        .rsplit('/')
        .next()
        .unwrap_or("")
        .to_string();
    let (_, w) = api(
        "GET",
        &format!("{base}/api/v1/workflows/default/{wf}"),
        ADMIN,
        None,
    );
    let params = w["spec"]["arguments"]["parameters"].to_string();
    assert!(
        params.contains("api-7") && params.contains("netpol"),
        "{params}"
    );

    // Events: a Falco alert through a webhook, a sensor that fires, the journey shown.
    let port = free_port();
    let (st, v) = api(
        "POST",
        &format!("{base}/api/v1/event-sources/default"),
        ADMIN,
        Some(
            json!({"eventSource": {"metadata": {"name": "falco"}, "spec": {"webhook": {
            "alerts": {"port": port.to_string(), "endpoint": "/falco", "method": "POST"}}}}}),
        ),
    );
    assert_eq!(st, 200, "{v}");
    let sensor_text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../workflows/examples/falco-shell-sensor.yaml"),
    )
    .expect("example sensor");
    let sensor = spec::yaml::load_documents(&sensor_text).expect("YAML")[0]
        .value
        .clone();
    let (st, v) = api(
        "POST",
        &format!("{base}/api/v1/sensors/default"),
        ADMIN,
        Some(json!({ "sensor": sensor })),
    );
    assert_eq!(st, 200, "{v}");
    let alert = common::payload_text("falco-terminal-shell.json");
    let mut resp = agent()
        .post(&format!("{base}/api/v1/webhooks/default/falco/alerts"))
        .header("Authorization", &format!("Bearer {ADMIN}"))
        .header("Content-Type", "application/json")
        .send(alert.as_bytes())
        .expect("post the alert");
    assert!(
        resp.status().is_success(),
        "{}",
        resp.body_mut().read_to_string().unwrap_or_default()
    );

    b.click("#nav a[data-page=events]");
    b.click("#events tbody a");
    b.wait_text(".decision", "shell: matched");
    b.wait_text(".decision", "fired");
    b.wait(".decision a[href^='/workflows/default/isolate-']");
    b.shot("11-event");
    // Try the sensor against this event: it would fire, nothing is submitted.
    let before = count_workflows(&base);
    b.click("#test-sensor + button");
    b.wait_text("#test-result", "fires");
    assert!(b.text("#test-result").contains("dependency shell: matched"));
    assert_eq!(count_workflows(&base), before, "a dry run submits nothing");
    b.shot("12-sensor-test");
    b.click("#nav a[data-page=sensors]");
    b.wait_text("#sensors", "isolate-");
    b.shot("13-sensors");
    b.go(&format!("{base}/cron-workflows"));
    b.wait("body[data-page=cron-workflows] h1");
    b.shot("14-cron-workflows");
}

/// A 1 → 300 → 1 fan-out of skipped tasks and a join, as a DAG.
fn wide_workflow(name: &str, count: usize) -> Value {
    json!({
        "metadata": {"name": name},
        "spec": {"entrypoint": "main", "templates": [
            {"name": "main", "dag": {"tasks": [
                {"name": "start", "template": "noop"},
                {"name": "item", "template": "noop", "depends": "start", "when": "{{item}} < 0",
                 "withSequence": {"count": count.to_string()}},
                {"name": "join", "template": "noop", "depends": "item"}
            ]}},
            {"name": "noop", "script": {"image": "alpine", "command": ["sh"], "source": "true"}}
        ]}
    })
}

#[test]
fn a_wide_fan_out_draws_as_one_group_that_expands_in_steps_and_collapses() {
    if skip() {
        return;
    }
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let base = s.base.clone();
    let name = create_workflow(&base, wide_workflow("wide-300", 300));
    wait_api(&base, &name, "the fan-out to finish", |w| {
        w["status"]["finishedAt"].is_string()
    });
    let b = Browser::start();
    b.sign_in(&base, ADMIN);
    b.go(&format!("{base}/workflows/default/{name}"));
    let drawn =
        || b.js_number("return document.querySelectorAll('g.node[data-node]').length") as u64;
    b.wait_text("g.node.group", "+289 more");
    // DAG, start, the items' task group, 11 of the items, join: never 300 boxes at once.
    assert_eq!(drawn(), 15);
    b.click("g.node.group");
    b.wait_text("g.node.group", "+189 more");
    assert_eq!(drawn(), 115);
    // Keyboard: Enter on the group shows the next hundred.
    let g = b.wait("g.node.group");
    b.cmd(
        "POST",
        &format!("/element/{g}/value"),
        Some(json!({"text": "\u{E007}"})),
    );
    b.wait_text("g.node.group", "+89 more");
    // The parent's collapse control folds them back.
    b.click("g.node text.toggle");
    b.wait_text("g.node.group", "+289 more");
    assert_eq!(drawn(), 15);
}

/// A benchmark's measurements, printed and kept as `target/tmp/NAME` for `scripts/bench`.
fn write_bench(name: &str, out: &Value) {
    let text = serde_json::to_string_pretty(out).expect("JSON");
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::write(&path, &text).expect("write the benchmark's results");
    println!("{text}");
}

fn count_workflows(base: &str) -> usize {
    let (_, l) = api(
        "GET",
        &format!("{base}/api/v1/workflows/default?fields=items.metadata.name"),
        ADMIN,
        None,
    );
    l["items"].as_array().map(Vec::len).unwrap_or(0)
}

/// Benchmark (run by `scripts/bench console`): a 10,000-node workflow (a fan-out of 10,000
/// skipped tasks and a join), rendered in the browser; render and first-click times written to
/// `target/tmp/console-bench.json`. Measured, not asserted.
#[test]
#[ignore = "a benchmark: scripts/bench console"]
fn console_bench_10k_node_graph() {
    let home = tempfile::tempdir().expect("tempdir");
    let s = start(home.path());
    let base = s.base.clone();
    let name = create_workflow(&base, wide_workflow("wide", 10_000));
    let started = Instant::now();
    let w = wait_api(&base, &name, "the 10k workflow to finish", |w| {
        w["status"]["finishedAt"].is_string()
    });
    let nodes = w["status"]["nodes"]
        .as_object()
        .map(|m| m.len())
        .unwrap_or(0);
    eprintln!("{nodes} nodes, ran in {:?}", started.elapsed());
    let b = Browser::start();
    b.sign_in(&base, ADMIN);
    let mut runs = Vec::new();
    for _ in 0..3 {
        b.go(&format!("{base}/workflows/default/{name}"));
        b.wait("body[data-graph-ready]");
        let render_ms = b.js_number("return Number(document.body.dataset.graphReady)");
        let click_ms = b.js_number("const g = document.querySelector('g.node[data-node]'); const t0 = performance.now(); g.dispatchEvent(new MouseEvent('click', {bubbles: true})); return performance.now() - t0");
        let drawn = b.js(
            "return document.querySelectorAll('g.node').length",
            json!([]),
        );
        runs.push(json!({"renderMs": render_ms, "firstClickMs": click_ms, "drawnNodes": drawn}));
    }
    b.shot("15-10k-nodes");
    write_bench("console-bench.json", &json!({"nodes": nodes, "runs": runs}));
}

/// Benchmark (run by `scripts/bench console` after it stores 1,000,000 workflows in
/// `RIPOSTE_BENCH_CONSOLE_DB`, namespace `bench-list`): the workflow list in the browser, first
/// page, a phase filter and the next page through the keyset. Measured, not asserted.
#[test]
#[ignore = "a benchmark: scripts/bench console"]
fn console_bench_million_row_list() {
    let Ok(db) = std::env::var("RIPOSTE_BENCH_CONSOLE_DB") else {
        panic!(
            "set RIPOSTE_BENCH_CONSOLE_DB to a database holding the bench-list rows (scripts/bench does)"
        );
    };
    let home = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_riposte"));
    cmd.args(["server", "--no-isolation", "--listen", "127.0.0.1:0"])
        .args(["--database-url", &db])
        .env("RIPOSTE_HOME", home.path())
        .env("RUST_LOG", "warn");
    let s = start_server(cmd, |l| eprintln!("[server] {l}"));
    let b = Browser::start();
    let mut runs = Vec::new();
    for url in [
        "/workflows?namespace=bench-list",
        "/workflows?namespace=bench-list&phase=Failed",
        "/workflows?namespace=bench-list&labels=team%3Dt3",
    ] {
        b.go(&format!("{}{url}", s.base));
        b.wait("body[data-list-ready]");
        let first_page_ms = b.js_number("return Number(document.body.dataset.listReady)");
        let rows_before =
            b.js_number("return document.querySelectorAll('#workflow-rows tr').length") as u64;
        let t0 = b.js_number("return performance.now()");
        b.click("#more");
        b.wait("body[data-more-ready]");
        let next_page_ms = b.js_number("return Number(document.body.dataset.moreReady)") - t0;
        let rows_after =
            b.js_number("return document.querySelectorAll('#workflow-rows tr').length") as u64;
        runs.push(
            json!({"url": url, "firstPageMs": first_page_ms, "rows": rows_before,
            "nextPageMs": next_page_ms, "rowsAfterNext": rows_after}),
        );
    }
    b.shot("16-million-rows");
    write_bench("console-bench-list.json", &json!({"list": runs}));
}
