//! [`RedisBus`]: change notices across nodes through Redis pub/sub (`REDIS_URL`).
//!
//! `publish` delivers the notice to this process's subscribers at once (the local
//! `tokio::sync::broadcast`, exactly as [`LocalBus`](super::LocalBus)) and queues it for a
//! background task that `PUBLISH`es it on the channel `<redis.prefix>events`. A second task
//! holds a `SUBSCRIBE` on that channel and feeds every notice from another node into the same
//! local broadcast; notices this bus sent itself are recognised by an origin id and skipped,
//! since they were delivered locally already.
//!
//! Neither task can hold a publisher up or lose an event: the events table stays the source
//! of truth and every feed re-reads it every [`SAFETY_POLL`](super::SAFETY_POLL) anyway. So:
//! - a full outbox (Redis slower than the notices) drops notices, counted;
//! - while Redis is unreachable, publishing is skipped for a second after each failure
//!   (one warning per outage) and the subscriber reconnects every second;
//! - after a reconnect the subscriber announces [`Change::anyone`] locally, so every feed
//!   re-reads at once instead of waiting for its poll for what it may have missed.
//!
//! Message (JSON): `{"o": "<origin bus id>", "t": "<tenant id>" | null, "j": "<job id>" | null}`.
//! A message that does not parse wakes every feed (`Change::anyone`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Change, EventBus, Subscription};

/// Notices queued per local subscriber (as [`LocalBus`](super::LocalBus)).
const CAPACITY: usize = 1024;
/// Notices waiting to be sent to Redis before new ones are dropped.
const OUTBOX: usize = 4096;
/// Notices sent in one pipeline.
const BATCH: usize = 64;
/// Bound on every Redis round trip and connection attempt of the bus.
const TIMEOUT: Duration = Duration::from_secs(1);
/// Pause after a failure before publishing or subscribing again.
const RETRY: Duration = Duration::from_secs(1);

/// The channel notices travel on, under the configured key prefix.
pub fn channel_name(prefix: &str) -> String {
    format!("{prefix}events")
}

#[derive(Serialize, Deserialize)]
struct Wire {
    o: String,
    t: Option<String>,
    j: Option<String>,
    /// [`Change::open`], sent only when set (older nodes read its absence as `false`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    s: bool,
}

/// What the bus has done since it started.
#[derive(Debug, Default)]
pub struct BusCounters {
    /// Notices sent to Redis.
    pub sent: AtomicU64,
    /// Notices from other nodes delivered to local subscribers.
    pub received: AtomicU64,
    /// Notices not sent (outbox full, or Redis unreachable).
    pub dropped: AtomicU64,
}

/// Change notices shared by every node on one Redis. See the module docs.
pub struct RedisBus {
    sender: broadcast::Sender<Change>,
    outbox: mpsc::Sender<Change>,
    /// Closes subscriptions (shutdown); cancels the tasks too.
    closed: CancellationToken,
    /// Stops the tasks (also when the bus is dropped without being closed).
    tasks: CancellationToken,
    channel: String,
    counters: Arc<BusCounters>,
}

impl RedisBus {
    /// Starts the publisher and subscriber tasks for `url`; nothing connects yet, so this
    /// works while Redis is down (the tasks keep trying). Only a malformed URL is an error.
    /// Must run inside a Tokio runtime.
    pub fn start(url: &str, prefix: &str) -> Result<RedisBus, redis::RedisError> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(100))
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT));
        let publisher = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        let (sender, _) = broadcast::channel(CAPACITY);
        let (outbox, queued) = mpsc::channel(OUTBOX);
        let closed = CancellationToken::new();
        let tasks = closed.child_token();
        let channel = channel_name(prefix);
        let origin = ulid::Ulid::new().to_string();
        let counters = Arc::new(BusCounters::default());
        tokio::spawn(publish_loop(
            publisher,
            channel.clone(),
            origin.clone(),
            queued,
            counters.clone(),
            tasks.clone(),
        ));
        tokio::spawn(subscribe_loop(
            client,
            channel.clone(),
            origin,
            sender.clone(),
            counters.clone(),
            tasks.clone(),
        ));
        Ok(RedisBus {
            sender,
            outbox,
            closed,
            tasks,
            channel,
            counters,
        })
    }

    /// The Redis channel of the notices.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    pub fn counters(&self) -> &BusCounters {
        &self.counters
    }
}

impl Drop for RedisBus {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}

impl EventBus for RedisBus {
    fn publish(&self, change: Change) {
        // Local subscribers first and at once; an error only means nobody listens here.
        let _ = self.sender.send(change.clone());
        if self.outbox.try_send(change).is_err() {
            self.counters.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn subscribe(&self) -> Subscription {
        Subscription::new(self.sender.subscribe(), self.closed.clone())
    }

    fn close(&self) {
        self.closed.cancel();
    }
}

fn encode(origin: &str, change: &Change) -> String {
    let wire = Wire {
        o: origin.to_owned(),
        t: change.tenant_id.as_deref().map(str::to_owned),
        j: change.job_id.as_deref().map(str::to_owned),
        s: change.open,
    };
    serde_json::to_string(&wire).unwrap_or_default()
}

/// The notice in a message, or `None` when this bus sent it.
fn decode(origin: &str, payload: &[u8]) -> Option<Change> {
    match serde_json::from_slice::<Wire>(payload) {
        Ok(wire) if wire.o == origin => None,
        Ok(wire) => Some(Change {
            tenant_id: wire.t.map(Into::into),
            job_id: wire.j.map(Into::into),
            open: wire.s,
        }),
        Err(_) => Some(Change::anyone()),
    }
}

async fn publish_loop(
    mut conn: ConnectionManager,
    channel: String,
    origin: String,
    mut queued: mpsc::Receiver<Change>,
    counters: Arc<BusCounters>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    let mut paused_until: Option<Instant> = None;
    let mut failing = false;
    loop {
        batch.clear();
        let received = tokio::select! {
            n = queued.recv_many(&mut batch, BATCH) => n,
            _ = stop.cancelled() => return,
        };
        if received == 0 {
            return; // the bus is gone
        }
        if paused_until.is_some_and(|until| Instant::now() < until) {
            counters
                .dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            continue;
        }
        let mut pipe = redis::pipe();
        for change in &batch {
            pipe.cmd("PUBLISH")
                .arg(&channel)
                .arg(encode(&origin, change))
                .ignore();
        }
        let sent = tokio::time::timeout(TIMEOUT, pipe.query_async::<()>(&mut conn)).await;
        match sent {
            Ok(Ok(())) => {
                counters
                    .sent
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                paused_until = None;
                if failing {
                    failing = false;
                    tracing::info!("event bus: publishing to Redis again");
                }
            }
            failure => {
                counters
                    .dropped
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                paused_until = Some(Instant::now() + RETRY);
                if !failing {
                    failing = true;
                    let error = failure_text(&failure);
                    tracing::warn!(
                        error,
                        "event bus: cannot publish to Redis; other nodes see this node's \
                         job events by their periodic re-read until it is back"
                    );
                }
            }
        }
    }
}

async fn subscribe_loop(
    client: redis::Client,
    channel: String,
    origin: String,
    local: broadcast::Sender<Change>,
    counters: Arc<BusCounters>,
    stop: CancellationToken,
) {
    let mut ever_subscribed = false;
    let mut failing = false;
    loop {
        let connect = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let connected = tokio::select! {
            c = tokio::time::timeout(TIMEOUT, connect) => c,
            _ = stop.cancelled() => return,
        };
        match connected {
            Ok(Ok(pubsub)) => {
                if ever_subscribed {
                    // Notices sent while unsubscribed are gone: every feed re-reads now.
                    let _ = local.send(Change::anyone());
                }
                if failing {
                    tracing::info!("event bus: subscribed to Redis again");
                }
                ever_subscribed = true;
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        m = messages.next() => m,
                        _ = stop.cancelled() => return,
                    };
                    let Some(message) = message else {
                        break; // the connection ended
                    };
                    if let Some(change) = decode(&origin, message.get_payload_bytes()) {
                        counters.received.fetch_add(1, Ordering::Relaxed);
                        let _ = local.send(change);
                    }
                }
                // Reported once here; the reconnect attempts that fail after it stay quiet.
                failing = true;
                tracing::warn!(
                    "event bus: Redis subscription lost; reconnecting (live streams re-read \
                     the events table every second meanwhile)"
                );
            }
            failure => {
                if !failing {
                    failing = true;
                    let error = failure_text(&failure);
                    tracing::warn!(
                        error,
                        "event bus: cannot subscribe to Redis; retrying every second (live \
                         streams re-read the events table every second meanwhile)"
                    );
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(RETRY) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// What went wrong with a Redis call bounded by [`TIMEOUT`], for the log.
fn failure_text<T, E: std::fmt::Display>(
    failure: &Result<Result<T, E>, tokio::time::error::Elapsed>,
) -> String {
    match failure {
        Ok(Err(e)) => e.to_string(),
        _ => format!("no answer within {TIMEOUT:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_round_trip_and_own_notices_skipped() {
        let change = Change::job("ten_1", "job_1");
        let text = encode("me", &change);
        assert_eq!(decode("other", text.as_bytes()), Some(change));
        assert_eq!(decode("me", text.as_bytes()), None);
        let anyone = encode("me", &Change::anyone());
        assert_eq!(decode("other", anyone.as_bytes()), Some(Change::anyone()));
        assert_eq!(decode("other", b"not json"), Some(Change::anyone()));
        // The open hint travels, and is left out (read as false) when not set.
        let open = Change::job_open("ten_1", "job_1");
        assert_eq!(decode("other", encode("me", &open).as_bytes()), Some(open));
        assert!(!text.contains("\"s\""));
    }

    /// With nothing listening on the port, publishing still delivers locally and never
    /// blocks, and close ends subscriptions.
    #[tokio::test]
    async fn works_locally_while_redis_is_unreachable() {
        let bus = RedisBus::start("redis://127.0.0.1:1/", "t:").expect("lazy start");
        assert_eq!(bus.channel(), "t:events");
        let mut sub = bus.subscribe();
        for i in 0..10 {
            bus.publish(Change::job("t", &i.to_string()));
        }
        assert_eq!(
            sub.recv().await,
            super::super::Wake::Changed(Change::job("t", "0"))
        );
        bus.close();
        sub.drain();
        assert_eq!(sub.recv().await, super::super::Wake::Closed);
    }
}
