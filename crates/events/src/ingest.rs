//! Turning what a producer sent into CloudEvents envelopes, and the key each is stored under.
//!
//! Pure: the HTTP request (or broker message) comes in as bytes and headers, the receive time
//! and a fresh id come in as inputs. Recognised shapes:
//!
//! - CloudEvents over HTTP, binary mode (`ce-id`, `ce-source`, ... headers) and structured
//!   mode (`application/cloudevents+json`, or a body with `specversion`, `id`, `source`):
//!   keyed by the producer's `source` and `id`, so its retry is the same event;
//! - a Falco alert (falcosidekick's webhook output): keyed by the alert's `uuid`;
//! - a Tracee event: keyed by a hash of its body (Tracee sends no id; a retry is byte-equal);
//! - a Kubernetes audit `EventList`: one event per item, keyed by `auditID` and stage;
//! - anything else (Argo's webhook): keyed by the request's `Idempotency-Key` or
//!   `X-Request-Id` header when present, otherwise a fresh id.
//!
//! The event's data is Argo's webhook shape, `{"header": {name: [values]}, "body": …}`, so
//! sensors written for Argo Events' webhook read the same paths.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::Event;

/// Which shape a request has (the webhook entry's `format`).
pub use spec::event_source::Format;

/// A request that did not make events, with what the producer should change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IngestError(pub String);

/// What the receiver knows about the request.
pub struct Received<'a> {
    /// Header names and values as sent (a name may repeat).
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// The receiving event source's name (CloudEvents `source` of plain webhook events).
    pub event_source: &'a str,
    pub event_name: &'a str,
    /// RFC 3339, for events that carry no time.
    pub now: &'a str,
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Headers the way Go's `http.Header` marshals them (canonical names, arrays of values).
pub fn header_object(headers: &[(String, String)]) -> Value {
    let mut m: Map<String, Value> = Map::new();
    for (k, v) in headers {
        let name = canonical_header(k);
        match m.entry(name).or_insert_with(|| json!([])) {
            Value::Array(a) => a.push(Value::String(v.clone())),
            _ => unreachable!("header entries are arrays"),
        }
    }
    Value::Object(m)
}

fn canonical_header(k: &str) -> String {
    k.split('-')
        .map(|part| {
            let mut c = part.chars();
            match c.next() {
                Some(f) => f.to_ascii_uppercase().to_string() + &c.as_str().to_ascii_lowercase(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn body_value(body: &[u8]) -> Value {
    if body.is_empty() {
        return Value::Null;
    }
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The digest that identifies a broker delivery without a producer id: the parts the broker
/// keeps across a re-delivery (entry, topic, packet id, properties, payload), each
/// length-prefixed so that no two different part lists share a digest.
pub fn delivery_digest(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p);
    }
    h.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hash_id(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The events in a request. `new_id` gives an id to events that carry none.
pub fn envelopes(
    r: &Received<'_>,
    format: Format,
    new_id: &mut dyn FnMut() -> String,
) -> Result<Vec<Event>, IngestError> {
    let body = body_value(r.body);
    let format = match format {
        Format::Auto => detect(r.headers, &body),
        f => f,
    };
    let headers = header_object(r.headers);
    let wrap = |b: Value| json!({"header": headers.clone(), "body": b});
    match format {
        Format::CloudEvents => cloudevent(r, &body, wrap),
        Format::Falco => {
            let Some(rule) = body["rule"].as_str() else {
                return Err(IngestError(
                    "this is not a Falco alert: it has no `rule` (falcosidekick's webhook output sends `uuid`, `rule`, `priority`, `output`, `output_fields`)".into(),
                ));
            };
            let id = match body["uuid"].as_str() {
                Some(u) if !u.is_empty() => u.to_string(),
                _ => hash_id(r.body),
            };
            Ok(vec![Event {
                id,
                source: "falco".into(),
                kind: "falco.alert".into(),
                subject: rule.to_string(),
                time: body["time"].as_str().unwrap_or(r.now).to_string(),
                datacontenttype: "application/json".into(),
                data: wrap(body),
            }])
        }
        Format::Tracee => {
            if !body.is_object() {
                return Err(IngestError(
                    "this is not a Tracee event: the body is not a JSON object".into(),
                ));
            }
            let name = body["eventName"].as_str().unwrap_or("").to_string();
            let time = body["timestamp"]
                .as_i64()
                .map(|ns| expr::time::rfc3339(ns / 1_000_000))
                .unwrap_or_else(|| r.now.to_string());
            Ok(vec![Event {
                id: hash_id(r.body),
                source: "tracee".into(),
                kind: "tracee.event".into(),
                subject: name,
                time,
                datacontenttype: "application/json".into(),
                data: wrap(body),
            }])
        }
        Format::Audit => {
            let items: Vec<Value> = if body["kind"] == "EventList" {
                body["items"].as_array().cloned().unwrap_or_default()
            } else if body["kind"] == "Event" {
                vec![body.clone()]
            } else {
                return Err(IngestError(
                    "this is not a Kubernetes audit batch: expected `kind: EventList` (apiVersion audit.k8s.io/v1) from the API server's audit webhook backend".into(),
                ));
            };
            items
                .into_iter()
                .enumerate()
                .map(|(i, item)| {
                    let audit_id = item["auditID"].as_str().unwrap_or("");
                    if audit_id.is_empty() {
                        return Err(IngestError(format!("items[{i}] has no auditID")));
                    }
                    let stage = item["stage"].as_str().unwrap_or("");
                    let subject = item["objectRef"]
                        .as_object()
                        .map(|o| {
                            let get = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
                            [
                                get("namespace"),
                                get("resource"),
                                get("name"),
                                get("subresource"),
                            ]
                            .iter()
                            .filter(|s| !s.is_empty())
                            .cloned()
                            .collect::<Vec<_>>()
                            .join("/")
                        })
                        .unwrap_or_else(|| text_of(&item["requestURI"]));
                    Ok(Event {
                        id: format!("{audit_id}/{stage}"),
                        source: "kubernetes-audit".into(),
                        kind: "audit.k8s.io/v1.Event".into(),
                        subject,
                        time: item["stageTimestamp"].as_str().unwrap_or(r.now).to_string(),
                        datacontenttype: "application/json".into(),
                        data: wrap(item),
                    })
                })
                .collect()
        }
        Format::Webhook | Format::Auto => {
            let id = header(r.headers, "idempotency-key")
                .or_else(|| header(r.headers, "x-request-id"))
                .map(str::to_string)
                .unwrap_or_else(new_id);
            Ok(vec![Event {
                id,
                source: r.event_source.to_string(),
                kind: "webhook".into(),
                subject: r.event_name.to_string(),
                time: r.now.to_string(),
                datacontenttype: "application/json".into(),
                data: wrap(body),
            }])
        }
    }
}

/// Which shape a request has, by its headers and body.
pub fn detect(headers: &[(String, String)], body: &Value) -> Format {
    let ct = header(headers, "content-type").unwrap_or("");
    if header(headers, "ce-id").is_some() || ct.starts_with("application/cloudevents") {
        return Format::CloudEvents;
    }
    if body["specversion"].is_string() && body["id"].is_string() && body["source"].is_string() {
        return Format::CloudEvents;
    }
    if body["apiVersion"]
        .as_str()
        .is_some_and(|a| a.starts_with("audit.k8s.io/"))
        && (body["kind"] == "EventList" || body["kind"] == "Event")
    {
        return Format::Audit;
    }
    if body["rule"].is_string() && (body["output_fields"].is_object() || body["uuid"].is_string()) {
        return Format::Falco;
    }
    if body["eventName"].is_string()
        && (body["processName"].is_string() || !body["eventId"].is_null())
    {
        return Format::Tracee;
    }
    Format::Webhook
}

fn cloudevent(
    r: &Received<'_>,
    body: &Value,
    wrap: impl Fn(Value) -> Value,
) -> Result<Vec<Event>, IngestError> {
    let required = |v: Option<String>, name: &str| {
        v.filter(|s| !s.is_empty()).ok_or_else(|| {
            IngestError(format!(
                "CloudEvents request without `{name}` (binary mode: the ce-{name} header; structured mode: the `{name}` attribute)"
            ))
        })
    };
    if let Some(id) = header(r.headers, "ce-id") {
        // Binary mode: attributes in headers, the body is the data.
        let attr = |n: &str| header(r.headers, &format!("ce-{n}")).map(str::to_string);
        return Ok(vec![Event {
            id: required(Some(id.to_string()), "id")?,
            source: required(attr("source"), "source")?,
            kind: required(attr("type"), "type")?,
            subject: attr("subject").unwrap_or_default(),
            time: attr("time").unwrap_or_else(|| r.now.to_string()),
            datacontenttype: header(r.headers, "content-type")
                .unwrap_or("application/json")
                .to_string(),
            data: wrap(body.clone()),
        }]);
    }
    let one = |e: &Value| -> Result<Event, IngestError> {
        let attr = |n: &str| e[n].as_str().map(str::to_string);
        let data = if e.get("data").is_some() {
            e["data"].clone()
        } else if let Some(b64) = e["data_base64"].as_str() {
            Value::String(b64.to_string())
        } else {
            Value::Null
        };
        Ok(Event {
            id: required(attr("id"), "id")?,
            source: required(attr("source"), "source")?,
            kind: required(attr("type"), "type")?,
            subject: attr("subject").unwrap_or_default(),
            time: attr("time").unwrap_or_else(|| r.now.to_string()),
            datacontenttype: attr("datacontenttype").unwrap_or_else(|| "application/json".into()),
            data: wrap(data),
        })
    };
    match body {
        // Batched mode (`application/cloudevents-batch+json`).
        Value::Array(items) => items.iter().map(one).collect(),
        Value::Object(_) => Ok(vec![one(body)?]),
        _ => Err(IngestError(
            "a structured CloudEvents request needs a JSON object body".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_digests_differ_when_any_part_or_boundary_does() {
        let base = delivery_digest(&[b"m", b"alerts", b"7", b"{}"]);
        assert_eq!(base.len(), 32);
        assert_eq!(base, delivery_digest(&[b"m", b"alerts", b"7", b"{}"]));
        for other in [
            delivery_digest(&[b"m", b"alerts", b"8", b"{}"]),
            delivery_digest(&[b"m", b"alert", b"s7", b"{}"]),
            delivery_digest(&[b"m", b"alerts7", b"", b"{}"]),
            delivery_digest(&[b"n", b"alerts", b"7", b"{}"]),
        ] {
            assert_ne!(base, other);
        }
    }

    fn payload(name: &str) -> Vec<u8> {
        let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/payloads")
            .join(name);
        std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    fn ingest(
        headers: &[(&str, &str)],
        body: &[u8],
        format: Format,
    ) -> Result<Vec<Event>, IngestError> {
        let headers: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let r = Received {
            headers: &headers,
            body,
            event_source: "webhook",
            event_name: "example",
            now: "2026-12-01T00:00:00Z",
        };
        let mut n = 0;
        envelopes(&r, format, &mut || {
            n += 1;
            format!("fresh-{n}")
        })
    }

    #[test]
    fn shapes_and_keys() {
        let falco = payload("falco-terminal-shell.json");
        let e = ingest(
            &[("Content-Type", "application/json")],
            &falco,
            Format::Auto,
        )
        .unwrap();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].source, "falco");
        assert!(!e[0].id.starts_with("fresh"), "keyed by the alert's uuid");
        assert_eq!(
            e[0].data["header"]["Content-Type"],
            json!(["application/json"])
        );
        assert!(e[0].data["body"]["output_fields"]["k8s.pod.name"].is_string());

        let audit = payload("k8s-audit-eventlist.json");
        let items = serde_json::from_slice::<Value>(&audit).unwrap()["items"]
            .as_array()
            .unwrap()
            .len();
        let e = ingest(&[], &audit, Format::Auto).unwrap();
        assert_eq!(e.len(), items, "one event per audit item");
        assert!(items > 1);
        assert_eq!(e[0].source, "kubernetes-audit");

        let tracee = payload("tracee-event.json");
        let a = ingest(&[], &tracee, Format::Auto).unwrap();
        let b = ingest(&[], &tracee, Format::Auto).unwrap();
        assert_eq!(a[0].source, "tracee");
        assert_eq!(
            a[0].id, b[0].id,
            "a retry of the same Tracee event is one event"
        );

        let binary = ingest(
            &[
                ("ce-id", "42"),
                ("ce-source", "s"),
                ("ce-type", "t"),
                ("ce-specversion", "1.0"),
            ],
            br#"{"x":1}"#,
            Format::Auto,
        )
        .unwrap();
        assert_eq!(
            (binary[0].id.as_str(), binary[0].source.as_str()),
            ("42", "s")
        );
        assert_eq!(binary[0].data["body"], json!({"x": 1}));

        let structured = ingest(
            &[("Content-Type", "application/cloudevents+json")],
            br#"{"specversion":"1.0","id":"7","source":"falco.org","type":"falco.rule.output.v1","data":{"rule":"r"}}"#,
            Format::Auto,
        )
        .unwrap();
        assert_eq!(structured[0].id, "7");
        assert_eq!(structured[0].data["body"], json!({"rule": "r"}));

        let plain = ingest(&[], br#"{"a":1}"#, Format::Auto).unwrap();
        assert_eq!(plain[0].id, "fresh-1");
        assert_eq!(plain[0].source, "webhook");
        let keyed = ingest(&[("Idempotency-Key", "k1")], br#"{"a":1}"#, Format::Auto).unwrap();
        assert_eq!(keyed[0].id, "k1");
        let text = ingest(&[], b"not json", Format::Webhook).unwrap();
        assert_eq!(text[0].data["body"], json!("not json"));
    }

    #[test]
    fn errors_say_what_is_expected() {
        let e = ingest(&[("ce-id", "1")], b"{}", Format::Auto).unwrap_err();
        assert!(e.0.contains("ce-source"), "{e}");
        let e = ingest(&[], br#"{"a":1}"#, Format::Falco).unwrap_err();
        assert!(e.0.contains("rule"), "{e}");
        let e = ingest(&[], br#"{"a":1}"#, Format::Audit).unwrap_err();
        assert!(e.0.contains("EventList"), "{e}");
    }
}
