//! Cluster events (`herd events`): published to a JetStream stream so they outlive the
//! Control node, and read back newest last.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::stream;
use bytes::Bytes;
use futures::StreamExt;
use herd_broker::Broker;
use herd_proto::api::Event;
use herd_proto::{now_millis, subjects};

#[derive(Clone)]
pub struct Events {
    broker: Broker,
    stream: stream::Stream,
}

impl Events {
    pub async fn open(broker: &Broker) -> anyhow::Result<Events> {
        let stream = broker.event_stream().await?;
        Ok(Events { broker: broker.clone(), stream })
    }

    /// Records an event; a failure is logged, never returned (events must not fail operations).
    pub async fn emit(&self, kind: &str, action: &str, name: &str, node: Option<&str>, message: String) {
        let ev = Event {
            seq: 0, // the stream's sequence number, known once stored
            time: now_millis(),
            kind: kind.to_string(),
            action: action.to_string(),
            name: name.to_string(),
            node: node.map(str::to_string),
            message,
        };
        // Events are kept in their stream (herd events); the log has them at debug level only,
        // since at thousands of containers a second a line per event costs a share of a core.
        tracing::debug!(kind, action, name, node, "{}", ev.message);
        if let Err(e) = self.broker.check_fence() {
            tracing::warn!("event not published: {e}");
            return;
        }
        let payload = match serde_json::to_vec(&ev) {
            Ok(p) => Bytes::from(p),
            Err(_) => return,
        };
        match self.broker.js.publish(subjects::event(kind), payload).await {
            Ok(ack) => {
                if let Err(e) = ack.await {
                    tracing::warn!("event not stored: {e}");
                }
            }
            Err(e) => tracing::warn!("event not published: {e}"),
        }
    }

    /// The newest `limit` events, oldest first.
    pub async fn recent(&self, limit: usize) -> anyhow::Result<Vec<Event>> {
        let mut stream = self.stream.clone();
        let state = stream.info().await?.state.clone();
        if state.messages == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let start = state.last_sequence.saturating_sub(limit as u64 - 1).max(state.first_sequence);
        let consumer = stream
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: start },
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut out = Vec::new();
        loop {
            let next = tokio::time::timeout(Duration::from_secs(5), messages.next()).await;
            let Ok(Some(Ok(msg))) = next else { break };
            let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(u64::MAX);
            if let Ok(mut ev) = serde_json::from_slice::<Event>(&msg.payload) {
                ev.seq = seq;
                out.push(ev);
            }
            if seq >= state.last_sequence {
                break;
            }
        }
        Ok(out)
    }

    /// Up to `limit` events after sequence number `after`, waiting up to `wait` for the first
    /// one if there is none yet (a long poll, for `herd events --follow`).
    pub async fn after(&self, after: u64, limit: usize, wait: Duration) -> anyhow::Result<Vec<Event>> {
        let consumer = self
            .stream
            .clone()
            .create_consumer(OrderedConfig {
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
                ..Default::default()
            })
            .await?;
        let mut messages = consumer.messages().await?;
        let mut out = Vec::new();
        let mut timeout = wait;
        while out.len() < limit {
            let Ok(Some(Ok(msg))) = tokio::time::timeout(timeout, messages.next()).await else { break };
            let seq = msg.info().map(|i| i.stream_sequence).unwrap_or(0);
            if let Ok(mut ev) = serde_json::from_slice::<Event>(&msg.payload) {
                ev.seq = seq;
                out.push(ev);
            }
            // After the first, take only what is there already.
            timeout = Duration::from_millis(50);
        }
        Ok(out)
    }
}
