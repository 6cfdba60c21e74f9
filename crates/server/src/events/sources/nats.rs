//! NATS entries: a core NATS subscription (at most once, like NATS itself: what arrives
//! while no replica listens is gone), or with `jetstream: {stream, consumer}` (Riposte's) a
//! durable JetStream consumer, each message acknowledged after its commit and keyed by its
//! stream sequence, so a re-delivery is the event already stored.

use futures_util::StreamExt;
use serde_json::{Value, json};
use spec::event_source::{JetStream, Nats};

use super::{SourceCtx, SourceError, body_of, connection, ended};

pub(super) async fn run(ctx: &SourceCtx, cfg: &Nats) -> Result<(), SourceError> {
    let client = async_nats::connect(cfg.url.as_str())
        .await
        .map_err(connection(format!("connecting to {}", cfg.url)))?;
    match &cfg.jetstream {
        Some(js) => jetstream(ctx, cfg, js, client).await,
        None => core(ctx, cfg, client).await,
    }
}

async fn jetstream(
    ctx: &SourceCtx,
    cfg: &Nats,
    js_cfg: &JetStream,
    client: async_nats::Client,
) -> Result<(), SourceError> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(&js_cfg.stream)
        .await
        .map_err(connection(format!("JetStream stream {}", js_cfg.stream)))?;
    let durable = js_cfg
        .consumer
        .clone()
        .unwrap_or_else(|| format!("riposte-{}-{}", ctx.event_source, ctx.event_name));
    let consumer = stream
        .get_or_create_consumer(
            &durable,
            pull::Config {
                durable_name: Some(durable.clone()),
                filter_subject: cfg.subject.clone(),
                ack_policy: AckPolicy::Explicit,
                ..Default::default()
            },
        )
        .await
        .map_err(connection(format!("JetStream consumer {durable}")))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(connection(format!("pulling from consumer {durable}")))?;
    while let Some(msg) = ctx.until_stopped(messages.next()).await {
        let Some(msg) = msg else {
            return Err(ended("the JetStream message stream ended"));
        };
        let msg = msg.map_err(connection("receiving from JetStream"))?;
        let info = msg
            .info()
            .map_err(connection("reading the message's metadata"))?;
        let id = format!("{}/{}", info.stream, info.stream_sequence);
        let data = json!({"subject": msg.subject.as_str(), "body": body_of(&msg.payload)});
        ctx.ingest(vec![ctx.event("nats", id, data)]).await?;
        msg.ack().await.map_err(connection("acknowledging"))?;
    }
    Ok(())
}

async fn core(ctx: &SourceCtx, cfg: &Nats, client: async_nats::Client) -> Result<(), SourceError> {
    let mut sub = client
        .subscribe(cfg.subject.clone())
        .await
        .map_err(connection(format!("subscribing to {}", cfg.subject)))?;
    while let Some(msg) = ctx.until_stopped(sub.next()).await {
        let Some(msg) = msg else {
            return Err(ended("the NATS subscription ended"));
        };
        let headers: Value = msg
            .headers
            .as_ref()
            .map(|h| {
                Value::Object(
                    h.iter()
                        .map(|(k, v)| {
                            (
                                k.to_string(),
                                json!(v.iter().map(|x| x.as_str()).collect::<Vec<_>>()),
                            )
                        })
                        .collect(),
                )
            })
            .unwrap_or(Value::Null);
        // Core NATS does not re-deliver: without the producer's `Nats-Msg-Id` every message
        // is a new event.
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id").map(|v| v.as_str().to_string()))
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let data = json!({"subject": msg.subject.as_str(), "header": headers, "body": body_of(&msg.payload)});
        ctx.ingest(vec![ctx.event("nats", id, data)]).await?;
    }
    Ok(())
}
