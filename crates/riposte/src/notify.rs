//! `riposte notify`: one message to a chat or webhook — Slack, Microsoft Teams, Mattermost
//! incoming webhooks or a generic JSON webhook — from a response step. The URL (which is
//! the secret for these services) comes from the environment, so a step takes it from a
//! Kubernetes Secret with `valueFrom.secretKeyRef` and it never appears in the workflow.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub(crate) struct NotifyArgs {
    /// slack, teams, mattermost or webhook (a JSON object with title, text, fields, link).
    #[arg(long, default_value = "webhook", value_parser = ["slack", "teams", "mattermost", "webhook"])]
    kind: String,
    /// The webhook URL. Prefer RIPOSTE_NOTIFY_URL from a Secret: a URL on the command line
    /// is visible in the workflow.
    #[arg(long, env = "RIPOSTE_NOTIFY_URL", hide_env_values = true)]
    url: String,
    /// The headline, e.g. "Pod payments/api isolated".
    #[arg(long)]
    title: String,
    /// The body (Markdown for Slack/Teams/Mattermost).
    #[arg(long, default_value = "")]
    text: String,
    /// A fact shown under the text: --field rule="Terminal shell in container" (repeatable).
    #[arg(long = "field", value_name = "NAME=VALUE")]
    fields: Vec<String>,
    /// Facts as one JSON object ({"rule": "…"}), as a template passes them; after --field.
    #[arg(long = "fields-json", value_name = "JSON")]
    fields_json: Option<String>,
    /// A link to the run (the console or `riposte get`), shown as a button or link.
    #[arg(long)]
    link: Option<String>,
    /// Attempts before giving up (network errors, 429 and 5xx are retried).
    #[arg(long, default_value_t = 3)]
    attempts: u32,
}

/// The request body each service expects for the same message.
pub(crate) fn payload(
    kind: &str,
    title: &str,
    text: &str,
    fields: &[(String, String)],
    link: Option<&str>,
) -> Value {
    let facts_md: String = fields
        .iter()
        .map(|(k, v)| format!("\n• *{k}*: {v}"))
        .collect();
    let link_md = link
        .map(|l| format!("\n<{l}|Open the run>"))
        .unwrap_or_default();
    match kind {
        "slack" => json!({
            "text": format!("*{title}*\n{text}{facts_md}{link_md}"),
        }),
        "mattermost" => {
            let facts: String = fields
                .iter()
                .map(|(k, v)| format!("\n- **{k}**: {v}"))
                .collect();
            let link = link
                .map(|l| format!("\n[Open the run]({l})"))
                .unwrap_or_default();
            json!({"text": format!("#### {title}\n{text}{facts}{link}")})
        }
        "teams" => {
            let mut card = json!({
                "@type": "MessageCard",
                "@context": "https://schema.org/extensions",
                "summary": title,
                "title": title,
                "text": text,
                "sections": [{"facts": fields.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>()}],
            });
            if let Some(l) = link {
                card["potentialAction"] = json!([{"@type": "OpenUri", "name": "Open the run",
                    "targets": [{"os": "default", "uri": l}]}]);
            }
            card
        }
        _ => json!({
            "title": title,
            "text": text,
            "fields": fields.iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
            "link": link,
        }),
    }
}

pub(crate) fn main(a: NotifyArgs) -> Result<()> {
    let fields: Vec<(String, String)> = a
        .fields
        .iter()
        .map(|f| {
            f.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("--field {f:?}: expected NAME=VALUE"))
        })
        .collect::<Result<_>>()?;
    let mut fields = fields;
    if let Some(j) = a.fields_json.as_deref().filter(|j| !j.trim().is_empty()) {
        let v: Value = serde_json::from_str(j)
            .with_context(|| format!("--fields-json {j:?} is not a JSON object"))?;
        let obj = v
            .as_object()
            .with_context(|| format!("--fields-json {j:?} is not a JSON object"))?;
        for (k, v) in obj {
            let v = v
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string());
            fields.push((k.clone(), v));
        }
    }
    let link = a.link.as_deref().filter(|l| !l.is_empty());
    let body = payload(&a.kind, &a.title, &a.text, &fields, link);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into();
    // Where the message went, without the secret part of the URL.
    let shown = a.url.split('/').take(3).collect::<Vec<_>>().join("/");
    let mut last = String::new();
    for attempt in 1..=a.attempts.max(1) {
        match agent.post(&a.url).send_json(&body) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                if status < 300 {
                    println!("notified {} ({shown}): {}", a.kind, a.title);
                    return Ok(());
                }
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                last = format!("{shown} answered {status}: {}", text.trim());
                if status != 429 && status < 500 {
                    bail!("{last}");
                }
            }
            Err(e) => last = format!("{shown}: {e}"),
        }
        if attempt < a.attempts {
            std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
        }
    }
    bail!(
        "notification failed after {} attempts: {last}",
        a.attempts.max(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_service_gets_its_own_shape() {
        let f = vec![("rule".to_string(), "Terminal shell".to_string())];
        let slack = payload("slack", "Pod isolated", "done", &f, Some("http://r/wf"));
        assert_eq!(
            slack["text"],
            "*Pod isolated*\ndone\n• *rule*: Terminal shell\n<http://r/wf|Open the run>"
        );
        let teams = payload("teams", "Pod isolated", "done", &f, Some("http://r/wf"));
        assert_eq!(teams["@type"], "MessageCard");
        assert_eq!(teams["sections"][0]["facts"][0]["value"], "Terminal shell");
        assert_eq!(
            teams["potentialAction"][0]["targets"][0]["uri"],
            "http://r/wf"
        );
        let mm = payload("mattermost", "Pod isolated", "done", &f, None);
        assert_eq!(
            mm["text"],
            "#### Pod isolated\ndone\n- **rule**: Terminal shell"
        );
        let hook = payload("webhook", "Pod isolated", "done", &f, None);
        assert_eq!(hook["fields"]["rule"], "Terminal shell");
    }
}
