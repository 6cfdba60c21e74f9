//! Redis entries: pub/sub channels (fire-and-forget on Redis' side: what arrives while no
//! replica listens is gone) and streams read through a consumer group, each entry
//! acknowledged (XACK) after its commit and keyed by stream and entry id.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use spec::event_source::{RedisPubSub, RedisStream};

use super::{SourceCtx, SourceError, body_of, connection, ended};

pub(super) async fn run_pubsub(ctx: &SourceCtx, cfg: &RedisPubSub) -> Result<(), SourceError> {
    let url = &cfg.url;
    let client = redis::Client::open(url.as_str())
        .map_err(|e| SourceError::Config(format!("{url}: {e}")))?;
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .map_err(connection(format!("connecting to {url}")))?;
    for ch in &cfg.channels {
        pubsub
            .subscribe(ch)
            .await
            .map_err(connection(format!("subscribing to {ch}")))?;
    }
    let mut messages = pubsub.on_message();
    while let Some(msg) = ctx.until_stopped(messages.next()).await {
        let Some(msg) = msg else {
            return Err(ended("the Redis subscription"));
        };
        let payload: Vec<u8> = msg.get_payload().unwrap_or_default();
        let data = json!({"channel": msg.get_channel_name(), "pattern": msg.get_pattern::<String>().ok(), "body": body_of(&payload)});
        ctx.ingest(vec![ctx.event(
            "redis",
            uuid::Uuid::new_v4().to_string(),
            data,
        )])
        .await?;
    }
    Ok(())
}

/// Reads streams through a consumer group; entries are acknowledged (XACK) after their
/// commit and keyed by stream and entry id, so a re-read after a crash is one event.
///
/// Each process is its own consumer (`riposte-<pid>`): the entries a crashed process was given
/// and never acknowledged stay pending under its name, so every consumer also claims entries
/// pending longer than [`STREAM_CLAIM_IDLE`] (XAUTOCLAIM) and stores them; one another
/// replica is still storing is the same event by its id.
pub(super) async fn run_stream(ctx: &SourceCtx, cfg: &RedisStream) -> Result<(), SourceError> {
    use redis::AsyncCommands;
    use redis::streams::{
        StreamAutoClaimOptions, StreamAutoClaimReply, StreamReadOptions, StreamReadReply,
    };
    let url = &cfg.url;
    let client = redis::Client::open(url.as_str())
        .map_err(|e| SourceError::Config(format!("{url}: {e}")))?;
    // Reads block for a while on the server; the client must wait longer than that.
    let config =
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(Duration::from_secs(10)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(connection(format!("connecting to {url}")))?;
    let streams = &cfg.streams;
    let group = cfg
        .consumer_group
        .clone()
        .unwrap_or_else(|| format!("riposte-{}", ctx.event_source));
    for s in streams {
        let created: redis::RedisResult<()> = conn.xgroup_create_mkstream(s, &group, "$").await;
        if let Err(e) = created
            && !e.to_string().contains("BUSYGROUP")
        {
            return Err(connection(format!(
                "creating consumer group {group} on {s}"
            ))(e));
        }
    }
    let consumer = format!("riposte-{}", std::process::id());
    let count = cfg.max_msg_count_per_read;
    // Stores one entry, then acknowledges it.
    async fn store_entry(
        ctx: &SourceCtx,
        conn: &mut redis::aio::MultiplexedConnection,
        group: &str,
        stream: &str,
        entry: &redis::streams::StreamId,
    ) -> Result<(), SourceError> {
        let values: serde_json::Map<String, Value> = entry
            .map
            .iter()
            .map(|(k, v)| {
                let s: String = redis::from_redis_value(v.clone()).unwrap_or_default();
                (k.clone(), Value::String(s))
            })
            .collect();
        let data = json!({"stream": stream, "id": entry.id, "values": values});
        ctx.ingest(vec![ctx.event(
            "redisStream",
            format!("{stream}/{}", entry.id),
            data,
        )])
        .await?;
        let _: i64 = conn
            .xack(stream, group, &[&entry.id])
            .await
            .map_err(connection("acknowledging"))?;
        Ok(())
    }
    // First what this consumer was given and did not acknowledge, then new entries.
    let mut cursor = "0".to_string();
    let mut last_claim: Option<tokio::time::Instant> = None;
    while !ctx.stop.is_cancelled() {
        if last_claim.is_none_or(|t| t.elapsed() >= STREAM_CLAIM_IDLE / 2) {
            last_claim = Some(tokio::time::Instant::now());
            for stream in streams {
                let mut start = "0-0".to_string();
                loop {
                    let reply: StreamAutoClaimReply = conn
                        .xautoclaim_options(
                            stream,
                            &group,
                            &consumer,
                            STREAM_CLAIM_IDLE.as_millis() as u64,
                            &start,
                            StreamAutoClaimOptions::default().count(count),
                        )
                        .await
                        .map_err(connection(format!("claiming stale entries of {stream}")))?;
                    for entry in &reply.claimed {
                        store_entry(ctx, &mut conn, &group, stream, entry).await?;
                    }
                    if reply.next_stream_id == "0-0" {
                        break;
                    }
                    start = reply.next_stream_id;
                }
            }
        }
        let ids: Vec<String> = streams.iter().map(|_| cursor.clone()).collect();
        let opts = StreamReadOptions::default()
            .group(&group, &consumer)
            .count(count)
            .block(2000);
        // A read cut short by a stop loses nothing: what XREADGROUP handed out and was not
        // acknowledged stays pending, and is read (or claimed) again.
        let Some(reply) = ctx
            .until_stopped(conn.xread_options::<_, _, StreamReadReply>(streams, &ids, &opts))
            .await
        else {
            break;
        };
        let reply = reply.map_err(connection("reading streams"))?;
        let mut got = 0;
        for key in reply.keys {
            for entry in &key.ids {
                got += 1;
                store_entry(ctx, &mut conn, &group, &key.key, entry).await?;
            }
        }
        if cursor == "0" && got == 0 {
            cursor = ">".into();
        }
    }
    Ok(())
}

/// How long an entry stays pending with a consumer before another one stores it.
const STREAM_CLAIM_IDLE: Duration = Duration::from_secs(10);
