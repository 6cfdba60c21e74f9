//! MQTT entries: a QoS 1 subscription on a persistent session with manual acknowledgements.
//! A message is acknowledged (PUBACK) after its commit, so the broker re-sends what a crash
//! did not store, and the re-sent message (DUP) is recognised as the event stored before.

use std::time::Duration;

use serde_json::json;
use spec::event_source::Mqtt;

use super::{SourceCtx, SourceError, body_of, connection};

pub(super) async fn run(ctx: &SourceCtx, cfg: &Mqtt) -> Result<(), SourceError> {
    use rumqttc::{AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS};
    let client_id = cfg
        .client_id
        .clone()
        .unwrap_or_else(|| format!("riposte-{}-{}", ctx.event_source, ctx.event_name));
    let mut opts = MqttOptions::new(client_id, cfg.host.as_str(), cfg.port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_manual_acks(true);
    opts.set_clean_session(false);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    client
        .subscribe(cfg.topic.clone(), QoS::AtLeastOnce)
        .await
        .map_err(connection(format!("subscribing to {}", cfg.topic)))?;
    while let Some(polled) = ctx.until_stopped(eventloop.poll()).await {
        match polled {
            Ok(MqttEvent::Incoming(Packet::Publish(p))) => {
                // MQTT gives no message id: the broker re-sends an unacknowledged message
                // with DUP and its packet id on the persistent session, and re-sends a
                // retained one on every subscribe. Both are the message stored before.
                // One packet id is in flight at a time, so it tells apart two messages with
                // one payload; a retained message is re-sent under a new one.
                let pkid = if p.retain {
                    Vec::new()
                } else {
                    p.pkid.to_be_bytes().to_vec()
                };
                let identity = ctx
                    .delivery_identity(&[p.topic.as_bytes(), &pkid, &p.payload], p.dup || p.retain);
                let data =
                    json!({"topic": p.topic, "messageId": p.pkid, "body": body_of(&p.payload)});
                let event = ctx.event("mqtt", String::new(), data);
                ctx.ingest_identified(vec![(event, identity)]).await?;
                client.ack(&p).await.map_err(connection("acknowledging"))?;
            }
            Ok(_) => {}
            Err(e) => return Err(connection(format!("mqtt {}", cfg.url))(e)),
        }
    }
    // The session stays on the broker (clean session off): what arrives meanwhile waits.
    Ok(())
}
