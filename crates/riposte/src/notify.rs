//! `riposte notify`: one message to a chat or webhook — Slack, Microsoft Teams, Mattermost
//! incoming webhooks or a generic JSON webhook — or an email over SMTP, from a response
//! step. The URL (which is the secret for these services: a webhook's path, an SMTP URL's
//! credentials) comes from the environment, so a step takes it from a Kubernetes Secret with
//! `valueFrom.secretKeyRef` and it never appears in the workflow.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

#[derive(clap::Args)]
pub(crate) struct NotifyArgs {
    /// slack, teams, mattermost, webhook (a JSON object with title, text, fields, link) or
    /// email (SMTP: --url smtps://USER:PASSWORD@HOST:465, or smtp://…:587?tls=required for
    /// STARTTLS; --from and --to).
    #[arg(long, default_value = "webhook", value_parser = ["slack", "teams", "mattermost", "webhook", "email"])]
    kind: String,
    /// The webhook or SMTP URL. Prefer RIPOSTE_NOTIFY_URL from a Secret: a URL on the
    /// command line is visible in the workflow.
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
    /// email: the sender, e.g. "Riposte <riposte@example.com>".
    #[arg(long, default_value = "Riposte <riposte@localhost>")]
    from: String,
    /// email: the recipients (comma-separated).
    #[arg(long, value_delimiter = ',')]
    to: Vec<String>,
    /// Attempts before giving up (network errors, 429 and 5xx are retried).
    #[arg(long, default_value_t = 3)]
    attempts: u32,
    /// Put signed approval links for this suspended step of the same workflow in the
    /// message (its display name, e.g. `approve`): whoever gets the message decides by
    /// opening one and confirming. Needs the server's --external-url and, on Kubernetes,
    /// --callback-url (the step asks the server it reports to, with its node token).
    #[arg(long, value_name = "STEP")]
    approval_node: Option<String>,
    /// The suspended step's output parameter each link sets (with --approval-choices).
    #[arg(long, default_value = "decision")]
    approval_parameter: String,
    /// One link per choice, setting --approval-parameter to it: terminate,keep. Without
    /// choices, one link that resumes the step as it is.
    #[arg(long, value_delimiter = ',')]
    approval_choices: Vec<String>,
    /// How long the links work (Go duration).
    #[arg(long, default_value = "1h")]
    approval_ttl: String,
    /// Print what would be sent (JSON) and send nothing. Approval links are not minted in a
    /// dry run: the printed output is readable by whoever can read the workflow.
    #[arg(long, value_name = "true|false", default_value = "false", num_args = 0..=1, default_missing_value = "true", value_parser = crate::cli::bool_flag)]
    dry_run: bool,
}

/// Signed approval links for `node` of this step's own workflow, from the server the step
/// reports to (`RIPOSTE_CALLBACK_URL`, authenticated by the node token the wrapper mounts).
fn approval_links(a: &NotifyArgs, node: &str) -> Result<Vec<(String, String)>> {
    let callback = std::env::var("RIPOSTE_CALLBACK_URL").map_err(|_| {
        anyhow::anyhow!(
            "--approval-node needs the step to reach its server: run it with --executor kubernetes and the server's --callback-url (RIPOSTE_CALLBACK_URL is not set)"
        )
    })?;
    let token_file = std::env::var("RIPOSTE_NODE_TOKEN_FILE")
        .context("RIPOSTE_NODE_TOKEN_FILE is not set (the wrapper mounts the node token)")?;
    let token = std::fs::read_to_string(&token_file)
        .with_context(|| format!("reading the node token {token_file}"))?;
    let choices: Vec<&String> = a
        .approval_choices
        .iter()
        .filter(|c| !c.is_empty())
        .collect();
    let decisions: Vec<Value> = if choices.is_empty() {
        vec![json!({"label": "approve", "parameters": {}})]
    } else {
        choices
            .into_iter()
            .map(|c| json!({"label": c, "parameters": {a.approval_parameter.clone(): c}}))
            .collect()
    };
    let to = match a.kind.as_str() {
        "webhook" => "a webhook".to_string(),
        k => format!("{k} ({title})", title = a.title),
    };
    let body = json!({"node": node, "decisions": decisions, "ttl": a.approval_ttl, "to": to});
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("{}/approval-links", callback.trim_end_matches('/'));
    let mut resp = agent
        .post(&url)
        .header("Authorization", &format!("Bearer {}", token.trim()))
        .send_json(&body)
        .with_context(|| format!("asking {url} for approval links"))?;
    let status = resp.status().as_u16();
    let answer: Value = resp.body_mut().read_json().unwrap_or(Value::Null);
    if status >= 300 {
        bail!(
            "the server refused approval links ({status}): {}",
            answer["message"].as_str().unwrap_or("no message")
        );
    }
    Ok(answer["links"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| {
            Some((
                l["label"].as_str()?.to_string(),
                l["url"].as_str()?.to_string(),
            ))
        })
        .collect())
}

/// The plain-text body of an email: the text, the facts, the run's link and the decisions.
pub(crate) fn email_text(
    text: &str,
    fields: &[(String, String)],
    link: Option<&str>,
    links: &[(String, String)],
) -> String {
    let mut out = String::new();
    if !text.is_empty() {
        out.push_str(text.trim_end());
        out.push_str("\n\n");
    }
    for (k, v) in fields {
        out.push_str(&format!("{k}: {v}\n"));
    }
    if let Some(l) = link {
        out.push_str(&format!("\nThe run: {l}\n"));
    }
    if !links.is_empty() {
        out.push_str("\nDecide (open a link, then confirm):\n");
        for (label, url) in links {
            out.push_str(&format!("  {label}: {url}\n"));
        }
    }
    out
}

/// One email through the SMTP server of `--url` (lettre; TLS by rustls). Temporary SMTP
/// failures (4xx) and connection errors are retried, permanent ones (5xx) are not.
fn send_email(
    a: &NotifyArgs,
    fields: &[(String, String)],
    link: Option<&str>,
    links: &[(String, String)],
) -> Result<()> {
    use lettre::message::{Mailbox, header::ContentType};
    use lettre::{Message, SmtpTransport, Transport};
    let to: Vec<&String> = a.to.iter().filter(|t| !t.trim().is_empty()).collect();
    if to.is_empty() {
        bail!("--kind email needs --to (one or more addresses, comma-separated)");
    }
    let from: Mailbox = a
        .from
        .parse()
        .with_context(|| format!("--from {:?} is not an email address", a.from))?;
    let mut message = Message::builder().from(from).subject(a.title.clone());
    for t in &to {
        let mailbox: Mailbox = t
            .trim()
            .parse()
            .with_context(|| format!("--to {t:?} is not an email address"))?;
        message = message.to(mailbox);
    }
    let message = message
        .header(ContentType::TEXT_PLAIN)
        .body(email_text(&a.text, fields, link, links))
        .context("building the email")?;
    // Where it went, without the credentials.
    let shown = match a.url.split_once("://") {
        Some((scheme, rest)) => format!(
            "{scheme}://{}",
            rest.rsplit_once('@').map_or(rest, |(_, host)| host)
        ),
        None => "(not a URL)".into(),
    };
    let mailer = SmtpTransport::from_url(&a.url)
        .map_err(|e| anyhow::anyhow!("the SMTP URL ({shown}) is not usable: {e}; expected smtps://USER:PASSWORD@HOST:465 or smtp://USER:PASSWORD@HOST:587?tls=required"))?
        .timeout(Some(Duration::from_secs(15)))
        .build();
    with_attempts(a.attempts, "the email", || match mailer.send(&message) {
        Ok(_) => Attempt::Done,
        Err(e) if e.is_permanent() => Attempt::Fail(format!("{shown} refused the email: {e}")),
        Err(e) => Attempt::Retry(format!("{shown}: {e}")),
    })?;
    println!(
        "notified email ({shown}, {} recipient(s)): {}",
        to.len(),
        a.title
    );
    Ok(())
}

/// The approval links in each service's own way: Markdown links, card buttons, or a list.
pub(crate) fn add_approvals(kind: &str, body: &mut Value, links: &[(String, String)]) {
    if links.is_empty() {
        return;
    }
    match kind {
        "slack" | "mattermost" => {
            let shown: Vec<String> = links
                .iter()
                .map(|(label, url)| {
                    if kind == "slack" {
                        format!("<{url}|{label}>")
                    } else {
                        format!("[{label}]({url})")
                    }
                })
                .collect();
            let text = body["text"].as_str().unwrap_or_default().to_string();
            body["text"] = json!(format!("{text}\nDecide: {}", shown.join(" · ")));
        }
        "teams" => {
            let mut actions = body["potentialAction"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for (label, url) in links {
                actions.push(
                    json!({"@type": "OpenUri", "name": format!("Decide: {label}"),
                                    "targets": [{"os": "default", "uri": url}]}),
                );
            }
            body["potentialAction"] = json!(actions);
        }
        _ => {
            body["approvals"] = links
                .iter()
                .map(|(label, url)| json!({"label": label, "url": url}))
                .collect();
        }
    }
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
    let approval_node = a.approval_node.as_deref().filter(|n| !n.is_empty());
    let links = match approval_node {
        Some(_) if a.dry_run => a
            .approval_choices
            .iter()
            .filter(|c| !c.is_empty())
            .map(|c| (c.clone(), "(a signed link, minted when sent)".to_string()))
            .collect(),
        Some(node) => approval_links(&a, node)?,
        None => Vec::new(),
    };
    if a.kind == "email" && a.dry_run {
        let would = json!({"subject": a.title, "from": a.from, "to": a.to,
                           "text": email_text(&a.text, &fields, link, &links)});
        println!(
            "{}",
            json!({"dryRun": true, "kind": a.kind, "wouldSend": would})
        );
        return Ok(());
    }
    if a.kind == "email" {
        return send_email(&a, &fields, link, &links);
    }
    let mut body = payload(&a.kind, &a.title, &a.text, &fields, link);
    add_approvals(&a.kind, &mut body, &links);
    if a.dry_run {
        println!(
            "{}",
            json!({"dryRun": true, "kind": a.kind, "wouldSend": body})
        );
        return Ok(());
    }
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(15)))
        .http_status_as_error(false)
        .build()
        .into();
    // Where the message went, without the secret part of the URL.
    let shown = a.url.split('/').take(3).collect::<Vec<_>>().join("/");
    with_attempts(a.attempts, "notification", || {
        match agent.post(&a.url).send_json(&body) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                if status < 300 {
                    return Attempt::Done;
                }
                let text = resp.body_mut().read_to_string().unwrap_or_default();
                let why = format!("{shown} answered {status}: {}", text.trim());
                if status != 429 && status < 500 {
                    Attempt::Fail(why)
                } else {
                    Attempt::Retry(why)
                }
            }
            Err(e) => Attempt::Retry(format!("{shown}: {e}")),
        }
    })?;
    println!("notified {} ({shown}): {}", a.kind, a.title);
    Ok(())
}

/// What one try to deliver came to.
enum Attempt {
    Done,
    /// Worth another try (a network error, 429, 5xx, a temporary SMTP refusal).
    Retry(String),
    /// Not worth one (another 4xx, a permanent SMTP refusal).
    Fail(String),
}

/// Up to `attempts` tries of `try_once` (at least one), 0.5 s × the attempt apart; the last
/// reason when none succeeded.
fn with_attempts(attempts: u32, what: &str, mut try_once: impl FnMut() -> Attempt) -> Result<()> {
    let n = attempts.max(1);
    let mut last = String::new();
    for attempt in 1..=n {
        match try_once() {
            Attempt::Done => return Ok(()),
            Attempt::Fail(why) => bail!("{why}"),
            Attempt::Retry(why) => last = why,
        }
        if attempt < n {
            std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
        }
    }
    bail!("{what} failed after {n} attempts: {last}")
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

    #[test]
    fn approval_links_appear_in_each_services_shape() {
        let links = vec![
            ("terminate".to_string(), "https://r/a/1".to_string()),
            ("keep".to_string(), "https://r/a/2".to_string()),
        ];
        let mut slack = payload("slack", "t", "x", &[], None);
        add_approvals("slack", &mut slack, &links);
        assert!(
            slack["text"]
                .as_str()
                .unwrap()
                .ends_with("\nDecide: <https://r/a/1|terminate> · <https://r/a/2|keep>")
        );
        let mut mm = payload("mattermost", "t", "x", &[], None);
        add_approvals("mattermost", &mut mm, &links);
        assert!(
            mm["text"]
                .as_str()
                .unwrap()
                .ends_with("[keep](https://r/a/2)")
        );
        let mut teams = payload("teams", "t", "x", &[], Some("https://r/wf"));
        add_approvals("teams", &mut teams, &links);
        assert_eq!(teams["potentialAction"].as_array().unwrap().len(), 3);
        assert_eq!(teams["potentialAction"][2]["name"], "Decide: keep");
        let mut hook = payload("webhook", "t", "x", &[], None);
        add_approvals("webhook", &mut hook, &links);
        assert_eq!(
            hook["approvals"][0],
            json!({"label": "terminate", "url": "https://r/a/1"})
        );
        let mut untouched = payload("webhook", "t", "x", &[], None);
        add_approvals("webhook", &mut untouched, &[]);
        assert!(untouched.get("approvals").is_none());
    }
}
