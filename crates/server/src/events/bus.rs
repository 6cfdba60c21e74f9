//! The event bus between the store and the sensors. It carries committed events' sequence
//! numbers, never the only copy of an event: a lost message is re-delivered by the sweeper
//! from the store.
//!
//! - `memory` (default): a channel in this process; each replica processes what it received.
//! - `nats://HOST:PORT[/NAME]`: a JetStream work-queue stream (`NAME`, default
//!   `RIPOSTE_EVENTS`; one per installation sharing a NATS) with one durable pull consumer
//!   shared by every replica, so each event goes to one replica and, when that one
//!   dies before acknowledging, to another after the ack wait. Publishing sets `Nats-Msg-Id`
//!   to the sequence number, so the sweeper's re-publication of a message JetStream already
//!   holds is dropped by JetStream's duplicate window.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc};

use super::{Events, EventsError};

/// How many events one replica processes at once: their writes share transactions (group
/// commit), so more in flight means fewer, larger transactions rather than more load.
const CONCURRENCY: usize = 128;
pub const NATS_STREAM: &str = "RIPOSTE_EVENTS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusConfig {
    Memory,
    /// `url` is the server; `stream` names this installation's stream, subject and consumer.
    Nats {
        url: String,
        stream: String,
    },
}

impl BusConfig {
    pub fn parse(s: &str) -> Result<BusConfig, String> {
        if s == "memory" {
            Ok(BusConfig::Memory)
        } else if let Some(rest) = s
            .strip_prefix("nats://")
            .or_else(|| s.strip_prefix("tls://"))
        {
            let scheme = &s[..s.len() - rest.len()];
            let (host, stream) = match rest.split_once('/') {
                Some((h, n)) if !n.is_empty() => (h, n),
                Some((h, _)) => (h, NATS_STREAM),
                None => (rest, NATS_STREAM),
            };
            if !stream
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err(format!(
                    "--bus {s:?}: the stream name {stream:?} may hold letters, digits, - and _ only"
                ));
            }
            Ok(BusConfig::Nats {
                url: format!("{scheme}{host}"),
                stream: stream.to_string(),
            })
        } else {
            Err(format!(
                "--bus {s:?}: use `memory` (one process) or a NATS JetStream URL like nats://127.0.0.1:4222"
            ))
        }
    }
}

pub(super) enum Bus {
    Memory {
        tx: mpsc::UnboundedSender<i64>,
        rx: tokio::sync::Mutex<Option<mpsc::UnboundedReceiver<i64>>>,
    },
    Nats {
        js: async_nats::jetstream::Context,
        stream: String,
    },
}

fn subject(stream: &str) -> String {
    format!("riposte.{stream}.events")
}

fn consumer_name(stream: &str) -> String {
    format!("{stream}-sensors")
}

impl Bus {
    pub(super) async fn connect(config: &BusConfig) -> Result<Bus, EventsError> {
        match config {
            BusConfig::Memory => {
                let (tx, rx) = mpsc::unbounded_channel();
                Ok(Bus::Memory {
                    tx,
                    rx: tokio::sync::Mutex::new(Some(rx)),
                })
            }
            BusConfig::Nats { url, stream } => {
                let client = async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .connection_timeout(Duration::from_secs(5))
                    .connect(url.as_str())
                    .await
                    .map_err(|e| EventsError::Bus(format!("connecting to {url}: {e}")))?;
                let js = async_nats::jetstream::new(client);
                js.get_or_create_stream(async_nats::jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![subject(stream)],
                    retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
                    storage: async_nats::jetstream::stream::StorageType::File,
                    duplicate_window: Duration::from_secs(120),
                    ..Default::default()
                })
                .await
                .map_err(|e| EventsError::Bus(format!("creating stream {stream} on {url}: {e}")))?;
                Ok(Bus::Nats {
                    js,
                    stream: stream.clone(),
                })
            }
        }
    }

    pub(super) async fn publish(&self, seq: i64) -> Result<(), String> {
        match self {
            Bus::Memory { tx, .. } => tx
                .send(seq)
                .map_err(|_| "the processor has stopped".to_string()),
            Bus::Nats { js, stream } => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Nats-Msg-Id", seq.to_string().as_str());
                let ack = js
                    .publish_with_headers(subject(stream), headers, seq.to_string().into())
                    .await
                    .map_err(|e| format!("publishing event {seq}: {e}"))?;
                ack.await
                    .map_err(|e| format!("JetStream did not store event {seq}: {e}"))?;
                Ok(())
            }
        }
    }

    pub(super) async fn start_consumer(&self, events: Events) -> Result<(), EventsError> {
        let permits = Arc::new(Semaphore::new(CONCURRENCY));
        match self {
            Bus::Memory { rx, .. } => {
                let Some(mut rx) = rx.lock().await.take() else {
                    return Err(EventsError::Bus("the consumer runs already".into()));
                };
                tokio::spawn(async move {
                    while let Some(seq) = rx.recv().await {
                        let Ok(permit) = permits.clone().acquire_owned().await else {
                            break;
                        };
                        let events = events.clone();
                        tokio::spawn(async move {
                            events.process(seq).await;
                            drop(permit);
                        });
                    }
                });
                Ok(())
            }
            Bus::Nats { js, stream } => {
                let js = js.clone();
                let stream = stream.clone();
                tokio::spawn(async move {
                    loop {
                        if let Err(e) = consume_nats(&js, &stream, &events, &permits).await {
                            tracing::warn!(error = %e, "NATS consumer stopped; reconnecting in 1 s");
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                });
                Ok(())
            }
        }
    }
}

async fn consume_nats(
    js: &async_nats::jetstream::Context,
    stream_name: &str,
    events: &Events,
    permits: &Arc<Semaphore>,
) -> Result<(), String> {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let stream = js
        .get_stream(stream_name)
        .await
        .map_err(|e| format!("stream {stream_name}: {e}"))?;
    let name = consumer_name(stream_name);
    let consumer = stream
        .get_or_create_consumer(
            &name,
            pull::Config {
                durable_name: Some(name.clone()),
                ack_policy: AckPolicy::Explicit,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 1024,
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {name}: {e}"))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| format!("pulling from {name}: {e}"))?;
    while let Some(msg) = messages.next().await {
        let msg = msg.map_err(|e| format!("receiving: {e}"))?;
        let seq = std::str::from_utf8(&msg.payload)
            .ok()
            .and_then(|s| s.parse::<i64>().ok());
        let Some(seq) = seq else {
            tracing::warn!("dropping a bus message that is not an event sequence number");
            let _ = msg.ack().await;
            continue;
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return Ok(());
        };
        let events = events.clone();
        let redelivered = msg.info().is_ok_and(|i| i.delivered > 1);
        tokio::spawn(async move {
            let done = if redelivered {
                events.process_redelivered(seq).await
            } else {
                events.process(seq).await
            };
            let kind = if done {
                async_nats::jetstream::AckKind::Ack
            } else {
                async_nats::jetstream::AckKind::Nak(Some(Duration::from_secs(2)))
            };
            if let Err(e) = msg.ack_with(kind).await {
                // Unacknowledged: JetStream re-delivers after the ack wait; the firing keys
                // make that harmless.
                tracing::warn!(seq, error = %e, "acknowledging a bus message failed");
            }
            drop(permit);
        });
    }
    Err("the message stream ended".into())
}
