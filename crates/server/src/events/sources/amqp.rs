//! AMQP entries: a queue bound to the exchange, consumed with one unacknowledged delivery at
//! a time; each delivery is acknowledged after its commit. A message's `message-id` is its
//! identity; without one, its digest and the `redelivered` flag tell a re-delivery from a
//! second message with the same payload.

use futures_util::StreamExt;
use lapin::options::*;
use lapin::types::FieldTable;
use serde_json::json;
use spec::event_source::{Amqp, ExchangeType};
use store::EventIdentity;

use super::{SourceCtx, SourceError, body_of, connection, ended};

pub(super) async fn run(ctx: &SourceCtx, cfg: &Amqp) -> Result<(), SourceError> {
    let conn = lapin::Connection::connect(&cfg.url, lapin::ConnectionProperties::default())
        .await
        .map_err(connection(format!("connecting to {}", cfg.url)))?;
    let ch = conn
        .create_channel()
        .await
        .map_err(connection("opening a channel"))?;
    let kind = match cfg.exchange_type {
        ExchangeType::Direct => lapin::ExchangeKind::Direct,
        ExchangeType::Fanout => lapin::ExchangeKind::Fanout,
        ExchangeType::Headers => lapin::ExchangeKind::Headers,
        ExchangeType::Topic => lapin::ExchangeKind::Topic,
    };
    let exchange = cfg.exchange_name.as_str();
    ch.exchange_declare(
        exchange.into(),
        kind,
        ExchangeDeclareOptions {
            durable: cfg.exchange_durable,
            auto_delete: cfg.exchange_auto_delete,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(connection(format!("declaring exchange {exchange}")))?;
    let queue_name = cfg.queue_name.clone().unwrap_or_else(|| {
        format!(
            "riposte.{}.{}.{}",
            ctx.namespace, ctx.event_source, ctx.event_name
        )
    });
    ch.queue_declare(
        queue_name.as_str().into(),
        QueueDeclareOptions {
            durable: cfg.queue_durable,
            auto_delete: cfg.queue_auto_delete,
            exclusive: cfg.queue_exclusive,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .map_err(connection(format!("declaring queue {queue_name}")))?;
    ch.queue_bind(
        queue_name.as_str().into(),
        exchange.into(),
        cfg.routing_key.as_str().into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .map_err(connection(format!("binding {queue_name} to {exchange}")))?;
    // One unacknowledged delivery at a time: a message without `message-id` is then the only
    // one in flight with its digest, and a re-delivery is recognised by it (see
    // `store::resolve_delivery`). The commit, not the round trip, bounds the rate.
    ch.basic_qos(1, BasicQosOptions::default())
        .await
        .map_err(connection(format!("setting the prefetch of {queue_name}")))?;
    let tag = cfg
        .consumer_tag
        .clone()
        .unwrap_or_else(|| format!("riposte-{}", ctx.event_name));
    let mut consumer = ch
        .basic_consume(
            queue_name.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(connection(format!("consuming {queue_name}")))?;
    while let Some(delivery) = ctx.until_stopped(consumer.next()).await {
        let Some(delivery) = delivery else {
            return Err(ended("the AMQP consumer"));
        };
        let d = delivery.map_err(connection("receiving a delivery"))?;
        let props = &d.properties;
        // Without a `message-id`, a delivery is its digest: RabbitMQ re-delivers what was
        // not acknowledged (a crash, a dropped connection) with `redelivered` set.
        let identity = match props.message_id() {
            Some(id) => EventIdentity::Id(id.to_string()),
            None => {
                // Quorum queues count deliveries in a header: not part of the message.
                let headers: Vec<_> = props
                    .headers()
                    .iter()
                    .flat_map(|h| h.inner())
                    .filter(|(k, _)| k.as_str() != "x-delivery-count")
                    .collect();
                let properties = format!(
                    "{:?}|{:?}|{:?}|{headers:?}|{:?}",
                    props.content_type(),
                    props.correlation_id(),
                    props.timestamp(),
                    props.kind()
                );
                ctx.delivery_identity(
                    &[
                        d.exchange.as_str().as_bytes(),
                        d.routing_key.as_str().as_bytes(),
                        properties.as_bytes(),
                        &d.data,
                    ],
                    d.redelivered,
                )
            }
        };
        let data = json!({
            "contentType": props.content_type().as_ref().map(|s| s.to_string()),
            "messageId": props.message_id().as_ref().map(|s| s.to_string()),
            "correlationId": props.correlation_id().as_ref().map(|s| s.to_string()),
            "exchange": d.exchange.to_string(),
            "routingKey": d.routing_key.to_string(),
            "body": body_of(&d.data),
        });
        let id = match &identity {
            EventIdentity::Id(id) => id.clone(),
            EventIdentity::Delivery { .. } => String::new(),
        };
        ctx.ingest_identified(vec![(ctx.event("amqp", id, data), identity)])
            .await?;
        d.ack(BasicAckOptions::default())
            .await
            .map_err(connection("acknowledging"))?;
    }
    // Unacknowledged nothing: closing returns no delivery to the queue.
    let _ = ch.close(200, "stopping".into()).await;
    let _ = conn.close(200, "stopping".into()).await;
    Ok(())
}
