//! Client commands: talk to `riposte server` (or any Argo Server-compatible API) at
//! `RIPOSTE_SERVER` with `RIPOSTE_TOKEN`.

use std::io::Write;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Client {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        Client {
            base: base.trim_end_matches('/').to_string(),
            token,
            agent,
        }
    }

    /// Sends a request; a non-2xx answer becomes an error with the server's message.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder()
            .method(method)
            .uri(&url)
            .header("Accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let text = body.map(Value::to_string).unwrap_or_default();
        if body.is_some() {
            req = req.header("Content-Type", "application/json");
        }
        let req = req
            .body(text)
            .with_context(|| format!("building a request to {url}"))?;
        let mut resp = self.agent.run(req).with_context(|| {
            format!("{method} {url}: is `riposte server` running there? (set RIPOSTE_SERVER)")
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer of {url}"))?;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        if !(200..300).contains(&status) {
            let msg = v["message"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            bail!("{method} {path}: HTTP {status}: {msg}");
        }
        Ok(v)
    }
}

impl Client {
    fn request(&self, method: &str, path: &str) -> Result<ureq::http::Response<ureq::Body>> {
        let url = format!("{}{path}", self.base);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(())
            .with_context(|| format!("building a request to {url}"))?;
        let resp = self.agent.run(req).with_context(|| {
            format!("{method} {url}: is `riposte server` running there? (set RIPOSTE_SERVER)")
        })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let mut resp = resp;
            let body = resp.body_mut().read_to_string().unwrap_or_default();
            bail!("{method} {path}: HTTP {status}: {body}");
        }
        Ok(resp)
    }

    /// The lines of a streaming answer, as they arrive.
    pub fn stream_lines(
        &self,
        path: &str,
    ) -> Result<impl Iterator<Item = std::io::Result<String>>> {
        use std::io::BufRead;
        let resp = self.request("GET", path)?;
        Ok(std::io::BufReader::new(resp.into_body().into_reader()).lines())
    }
}

/// `riposte submit FILE`: lint locally, then create the workflow on the server.
pub fn submit(
    c: &Client,
    file: &std::path::Path,
    namespace: &str,
    params: &[(String, String)],
) -> Result<Value> {
    let mut wf = documents_of_kind(file, "Workflow")?.swap_remove(0);
    if !params.is_empty() {
        let list = wf["spec"]["arguments"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut list = list;
        for (k, v) in params {
            match list.iter_mut().find(|p| p["name"] == k.as_str()) {
                Some(p) => p["value"] = json!(v),
                None => bail!("parameter {k:?} is not declared in spec.arguments.parameters"),
            }
        }
        wf["spec"]["arguments"]["parameters"] = Value::Array(list);
    }
    c.call(
        "POST",
        &format!("/api/v1/workflows/{namespace}"),
        Some(&json!({"namespace": namespace, "workflow": wf})),
    )
}

/// The documents of `kind` in a YAML file; an error (with file:line:col for bad YAML)
/// when there are none.
pub(crate) fn documents_of_kind(file: &std::path::Path, kind: &str) -> Result<Vec<Value>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let docs = spec::yaml::load_documents(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: {}",
            file.display(),
            e.position.line,
            e.position.col,
            e.message
        )
    })?;
    let found: Vec<Value> = docs
        .into_iter()
        .filter(|d| d.value["kind"] == kind)
        .map(|d| d.value)
        .collect();
    if found.is_empty() {
        bail!(crate::InvalidInput(format!(
            "{} contains no {kind}",
            file.display()
        )));
    }
    Ok(found)
}

/// `riposte template create` / `riposte cron create`: POSTs every document of `kind`
/// in `file` to `collection` as `{"namespace": .., body_key: doc}`.
pub fn create_from_file(
    c: &Client,
    file: &std::path::Path,
    kind: &str,
    body_key: &str,
    collection: &str,
    namespace: &str,
) -> Result<()> {
    for doc in documents_of_kind(file, kind)? {
        let created = c.call(
            "POST",
            collection,
            Some(&json!({"namespace": namespace, body_key: doc})),
        )?;
        println!(
            "created {}",
            created["metadata"]["name"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// `riposte submit --from workflowtemplate/NAME`.
pub fn submit_from(
    c: &Client,
    from: &str,
    namespace: &str,
    params: &[(String, String)],
) -> Result<Value> {
    let (kind, name) = from
        .split_once('/')
        .with_context(|| format!("--from {from:?} must look like workflowtemplate/NAME"))?;
    let kind = match kind.to_ascii_lowercase().as_str() {
        "workflowtemplate" | "wftmpl" => "WorkflowTemplate",
        "clusterworkflowtemplate" | "cwftmpl" => "ClusterWorkflowTemplate",
        other => bail!("--from kind {other:?}: use workflowtemplate or clusterworkflowtemplate"),
    };
    let parameters: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    c.call(
        "POST",
        &format!("/api/v1/workflows/{namespace}/submit"),
        Some(&json!({"namespace": namespace, "resourceKind": kind, "resourceName": name, "submitOptions": {"parameters": parameters}})),
    )
}

pub fn print_list(items: &[Value]) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<40} {:<10} {:<22} {:<9} MESSAGE",
        "NAME", "STATUS", "CREATED", "PROGRESS"
    )?;
    for w in items {
        writeln!(
            out,
            "{:<40} {:<10} {:<22} {:<9} {}",
            w["metadata"]["name"].as_str().unwrap_or(""),
            w["status"]["phase"].as_str().unwrap_or(""),
            w["metadata"]["creationTimestamp"].as_str().unwrap_or(""),
            w["status"]["progress"].as_str().unwrap_or(""),
            w["status"]["message"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}

/// A summary and the node tree of an Argo workflow object.
pub fn print_workflow(w: &Value) -> Result<()> {
    let mut out = std::io::stdout().lock();
    let st = &w["status"];
    writeln!(
        out,
        "Name:        {}",
        w["metadata"]["name"].as_str().unwrap_or("")
    )?;
    writeln!(
        out,
        "Namespace:   {}",
        w["metadata"]["namespace"].as_str().unwrap_or("")
    )?;
    writeln!(out, "Status:      {}", st["phase"].as_str().unwrap_or(""))?;
    if let Some(m) = st["message"].as_str() {
        writeln!(out, "Message:     {m}")?;
    }
    writeln!(
        out,
        "Progress:    {}",
        st["progress"].as_str().unwrap_or("")
    )?;
    for p in st["outputs"]["parameters"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "Output:      {} = {}",
            p["name"].as_str().unwrap_or(""),
            p["value"].as_str().unwrap_or("")
        )?;
    }
    let Some(nodes) = st["nodes"].as_object() else {
        return Ok(());
    };
    writeln!(out)?;
    let mut rows: Vec<&Value> = nodes
        .values()
        .filter(|n| n["type"] != "StepGroup")
        .collect();
    rows.sort_by(|a, b| {
        (a["startedAt"].as_str(), a["name"].as_str())
            .cmp(&(b["startedAt"].as_str(), b["name"].as_str()))
    });
    for n in rows {
        let depth = n["name"]
            .as_str()
            .unwrap_or("")
            .matches(['.', '['])
            .count()
            .min(8);
        writeln!(
            out,
            "{}{:<10} {:<36} {:<18} {}",
            "  ".repeat(depth),
            n["phase"].as_str().unwrap_or(""),
            n["displayName"].as_str().unwrap_or(""),
            n["templateName"].as_str().unwrap_or(""),
            n["message"].as_str().unwrap_or("")
        )?;
    }
    Ok(())
}
