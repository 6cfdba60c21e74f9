//! Webhook entries: one HTTP listener per port serving every endpoint configured on it; each
//! request is checked (method, size, bearer token, HMAC signature) and stored before its 2xx.

use std::sync::Arc;

use axum::http::{HeaderMap, Method, StatusCode};
use serde_json::json;
use spec::event_source::Webhook;
use tokio_util::sync::CancellationToken;

use super::Endpoints;
use crate::events::{Events, EventsError};

/// A webhook entry: where it listens and what it checks.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookEntry {
    pub namespace: String,
    pub event_source: String,
    pub event_name: String,
    pub config: Webhook,
}

/// Serves `port` until `stop`; then requests in flight finish (their events are stored and
/// answered) and the socket closes.
pub(super) async fn listen(
    events: Events,
    port: u16,
    endpoints: Endpoints,
    stop: CancellationToken,
) {
    let addr = std::net::SocketAddr::new(events.config().webhook_host, port);
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(port, error = %e, "webhook event source cannot listen");
            return;
        }
    };
    let count = endpoints.read().map(|e| e.len()).unwrap_or(0);
    tracing::info!(port, endpoints = count, "webhook event source listening");
    let app = axum::Router::new().fallback(
        move |method: Method, uri: axum::http::Uri, headers: HeaderMap, body: axum::body::Bytes| {
            let events = events.clone();
            let entries: Arc<Vec<WebhookEntry>> = match endpoints.read() {
                Ok(e) => e.clone(),
                Err(p) => p.into_inner().clone(),
            };
            async move {
                let path = uri.path();
                match entries.iter().find(|e| e.config.endpoint == path) {
                    Some(entry) => receive_webhook(&events, entry, &method, &headers, &body).await,
                    None => (
                        StatusCode::NOT_FOUND,
                        format!("no webhook endpoint {path} on this port\n"),
                    ),
                }
            }
        },
    );
    let app = app.layer(axum::extract::DefaultBodyLimit::max(64 * 1024 * 1024));
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await
    {
        tracing::error!(port, error = %e, "webhook listener stopped");
    }
}

/// Checks and stores one webhook request; the status is the producer's acknowledgement
/// (2xx only after the commit).
pub async fn receive_webhook(
    events: &Events,
    entry: &WebhookEntry,
    method: &Method,
    headers: &HeaderMap,
    body: &[u8],
) -> (StatusCode, String) {
    let cfg = &entry.config;
    if !method.as_str().eq_ignore_ascii_case(&cfg.method) {
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            format!("this endpoint takes {}\n", cfg.method),
        );
    }
    if let Some(max) = cfg.max_payload_size
        && body.len() as u64 > max
    {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the body has {} bytes; this endpoint takes at most {max}\n",
                body.len()
            ),
        );
    }
    if let Some(secret) = &cfg.auth_secret {
        let expected = match events.secret(secret).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "webhook authSecret");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the endpoint's secret is not readable\n".into(),
                );
            }
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                "missing or wrong bearer token\n".into(),
            );
        }
    }
    if let Some(hmac) = &cfg.hmac {
        let key = match events.secret(&hmac.secret).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "webhook hmac secret");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the endpoint's secret is not readable\n".into(),
                );
            }
        };
        let given = headers
            .get(hmac.header.as_str())
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !signature_valid(key.as_bytes(), body, given) {
            return (
                StatusCode::UNAUTHORIZED,
                format!(
                    "missing or wrong {} signature (HMAC-SHA256 of the body, hex, optionally prefixed sha256=)\n",
                    hmac.header
                ),
            );
        }
    }
    let pairs: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k != &axum::http::header::AUTHORIZATION)
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    match events
        .receive_http(
            &entry.namespace,
            &entry.event_source,
            &entry.event_name,
            cfg.format,
            &pairs,
            body,
        )
        .await
    {
        Ok(appended) => {
            let body = json!({
                "events": appended.iter().map(|a| json!({"seq": a.seq, "duplicate": a.duplicate})).collect::<Vec<_>>()
            });
            (StatusCode::OK, format!("{body}\n"))
        }
        Err(EventsError::Invalid(m)) => (StatusCode::BAD_REQUEST, format!("{m}\n")),
        Err(e) => {
            tracing::warn!(error = %store::chain(&e), "storing a webhook event failed; the producer should retry");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the event could not be stored; retry\n".into(),
            )
        }
    }
}

/// Compares the digests, like API tokens are compared, so neither the content nor the length
/// of the secret shows in the time taken.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    crate::auth::constant_time_eq(&Sha256::digest(a).into(), &Sha256::digest(b).into())
}

/// Whether `given` (hex, optionally `sha256=`-prefixed) is the HMAC-SHA256 of `body`.
fn signature_valid(key: &[u8], body: &[u8], given: &str) -> bool {
    use hmac::{Hmac, Mac};
    let given = given.strip_prefix("sha256=").unwrap_or(given);
    let Ok(given) = hex::decode(given) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signatures_are_hmac_sha256_of_the_body_in_hex() {
        use hmac::{Hmac, Mac};
        let key = b"falco-hook-key";
        let body = br#"{"rule":"Terminal shell in container"}"#;
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
        mac.update(body);
        let good: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let mut flipped = good.clone().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = String::from_utf8(flipped).expect("hex");
        let table = [
            (good.clone(), body.as_slice(), true),
            (format!("sha256={good}"), body.as_slice(), true),
            (good.to_uppercase(), body.as_slice(), true),
            (flipped, body.as_slice(), false),
            (good.clone(), b"{}".as_slice(), false),
            (good[..good.len() - 1].to_string(), body.as_slice(), false),
            ("zz".repeat(32), body.as_slice(), false),
            (String::new(), body.as_slice(), false),
        ];
        for (given, body, valid) in table {
            assert_eq!(signature_valid(key, body, &given), valid, "{given:?}");
        }
        assert!(constant_time_eq(b"token", b"token"));
        assert!(!constant_time_eq(b"token", b"token2"));
    }
}
