//! The `http` template: one HTTP request, its body as `outputs.result`, judged by
//! `successCondition` (an expression over `response.statusCode`, `response.body`,
//! `response.headers`) or, without one, by a status below 400.

use std::collections::BTreeMap;
use std::time::Duration;

use engine::{ExecResult, Phase};
use spec::HttpTemplate;

/// Argo's default request timeout.
const DEFAULT_TIMEOUT_SECONDS: i64 = 30;

pub async fn run(http: HttpTemplate) -> ExecResult {
    match tokio::task::spawn_blocking(move || request(&http)).await {
        Ok(r) => r,
        Err(e) => ExecResult::error(format!("http request task failed: {e}")),
    }
}

fn request(h: &HttpTemplate) -> ExecResult {
    let timeout =
        Duration::from_secs(h.timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS).max(1) as u64);
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let method = h.method.as_deref().unwrap_or("GET").to_uppercase();
    let mut builder = ureq::http::Request::builder()
        .method(method.as_str())
        .uri(&h.url);
    for header in &h.headers {
        if header.value_from.is_some() {
            return ExecResult::error(format!(
                "http header {}: valueFrom (secrets) needs the Kubernetes executor",
                header.name
            ));
        }
        builder = builder.header(&header.name, &header.value);
    }
    let body = h.body.clone().unwrap_or_default();
    let req = match builder.body(body) {
        Ok(r) => r,
        Err(e) => return ExecResult::error(format!("invalid http request to {}: {e}", h.url)),
    };
    let mut resp = match agent.run(req) {
        Ok(r) => r,
        Err(e) => return ExecResult::error(format!("{method} {}: {e}", h.url)),
    };
    let status = resp.status().as_u16();
    let headers: BTreeMap<String, Vec<String>> =
        resp.headers()
            .iter()
            .fold(BTreeMap::new(), |mut m, (k, v)| {
                m.entry(k.as_str().to_string())
                    .or_default()
                    .push(v.to_str().unwrap_or("").to_string());
                m
            });
    let text = match resp.body_mut().read_to_string() {
        Ok(t) => t,
        Err(e) => return ExecResult::error(format!("reading the response body of {}: {e}", h.url)),
    };
    let ok = match &h.success_condition {
        Some(cond) => {
            let env = serde_json::json!({"response": {"statusCode": status, "body": text, "headers": headers}});
            match expr::eval_bool(cond, &env) {
                Ok(b) => b,
                Err(e) => return ExecResult::error(format!("successCondition {cond:?}: {e}")),
            }
        }
        None => status < 400,
    };
    ExecResult {
        phase: if ok { Phase::Succeeded } else { Phase::Failed },
        message: if ok {
            String::new()
        } else {
            format!("received non-success response code {status}")
        },
        exit_code: None,
        result: Some(text),
        parameters: BTreeMap::new(),
    }
}
