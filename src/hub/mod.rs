//! The hub: publishing into the store, and subscriptions that replay history
//! and then follow the channel live.
//!
//! ```text
//! publish:   Hub::publish → Store::append (position, encode once) → Feed (= Fanout) → Topic ring + wake
//! subscribe: Hub::subscribe → resume position from the store → stream: ring or store → bytes
//! ```

mod subscription;
mod topic;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::protocol::{ChannelName, Draft, MessageId};
use crate::store::{Feed, Store, StoreError};

pub use subscription::SubscribeRequest;

/// The live fan-out of every followed channel; give it to the store as its [`Feed`].
pub struct Fanout(topic::Topics);

impl Fanout {
    /// A fan-out keeping `ring_capacity` recent frames per followed channel.
    pub fn new(ring_capacity: usize) -> Arc<Self> {
        Arc::new(Fanout(topic::Topics::new(ring_capacity)))
    }
}

impl Feed for Fanout {
    fn deliver(&self, channel: &ChannelName, message: &Arc<crate::protocol::Message>) {
        self.0.deliver(channel, message);
    }

    fn is_followed(&self, channel: &ChannelName) -> bool {
        self.0.is_followed(channel)
    }
}

/// Stream behaviour the hub applies to every subscription.
#[derive(Debug, Clone)]
pub struct HubSettings {
    /// The `retry:` value of the preamble, in milliseconds.
    pub retry_ms: u64,
    /// Interval of heartbeat comments on an idle stream.
    pub heartbeat: Duration,
    /// Timeout of a stream that did not ask for one.
    pub default_timeout: Duration,
    /// Open streams allowed on this node.
    pub max_subscribers: usize,
    /// Messages read from the store per step of a replay.
    pub replay_batch: usize,
}

/// Why the hub refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HubError {
    /// The store failed.
    Store(StoreError),
    /// The node holds its maximum of open streams.
    TooManySubscribers(usize),
    /// The server is shutting down.
    ShuttingDown,
}

impl From<StoreError> for HubError {
    fn from(e: StoreError) -> Self {
        HubError::Store(e)
    }
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::Store(e) => e.fmt(f),
            HubError::TooManySubscribers(limit) => {
                write!(
                    f,
                    "this server holds its maximum of {limit} open streams; retry later"
                )
            }
            HubError::ShuttingDown => f.write_str("the server is shutting down; reconnect shortly"),
        }
    }
}

impl std::error::Error for HubError {}

/// What a send returns: the stored message's id and time.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// The new message's id.
    pub id: String,
    /// Its channel.
    pub channel: ChannelName,
    /// When it was stored.
    pub time: String,
}

/// `GET /channels/{channel}`.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    /// The channel.
    pub channel: ChannelName,
    /// The oldest retained message.
    pub first_id: Option<String>,
    /// The newest message.
    pub last_id: Option<String>,
    /// Messages retained.
    pub history_size: usize,
    /// Open streams on this node.
    pub subscribers: usize,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    /// `ok`, `degraded` (store down) or `shutting_down`.
    pub status: &'static str,
    /// The store's kind and state.
    pub store: StoreHealth,
    /// This build's version.
    pub version: &'static str,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// Open streams on this node.
    pub subscribers: usize,
}

/// Part of [`Health`].
#[derive(Debug, Clone, Serialize)]
pub struct StoreHealth {
    /// Which store.
    pub kind: &'static str,
    /// `up` or `down`.
    pub status: &'static str,
}

/// A cheap-to-clone handle on the shared state.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

struct Shared {
    fanout: Arc<Fanout>,
    store: Arc<dyn Store>,
    settings: HubSettings,
    /// Open streams on this node, for the subscriber limit and `/healthz`.
    subscribers: AtomicUsize,
    /// Cancelled when the server shuts down: every stream ends.
    shutdown: CancellationToken,
    started: Instant,
}

impl Hub {
    /// A hub over `store`, whose feed must be `fanout`.
    pub fn new(
        settings: HubSettings,
        fanout: Arc<Fanout>,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Self {
        Hub {
            shared: Arc::new(Shared {
                fanout,
                store,
                settings,
                subscribers: AtomicUsize::new(0),
                shutdown,
                started: Instant::now(),
            }),
        }
    }

    /// The store behind this hub.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }

    /// Stores a message; live subscribers are woken before this returns, but it
    /// never waits for any of them.
    ///
    /// # Errors
    /// [`HubError::Store`] when the message could not be stored.
    pub async fn publish(
        &self,
        channel: &ChannelName,
        draft: Draft,
    ) -> Result<Published, HubError> {
        let message = self.shared.store.append(channel, draft).await?;
        let id = MessageId {
            epoch: self.shared.store.epoch(),
            seq: message.seq,
        };
        Ok(Published {
            id: id.to_string(),
            channel: channel.clone(),
            time: message.time.to_string(),
        })
    }

    /// The channel's history bounds and subscriber count.
    ///
    /// # Errors
    /// [`HubError::Store`] when the store cannot answer.
    pub async fn info(&self, channel: &ChannelName) -> Result<ChannelInfo, HubError> {
        let history = self.shared.store.read(channel, 0, 0).await?;
        let epoch = self.shared.store.epoch();
        let id = |seq| MessageId { epoch, seq }.to_string();
        Ok(ChannelInfo {
            channel: channel.clone(),
            first_id: history.first_seq.map(id),
            last_id: (history.last_seq > 0).then(|| id(history.last_seq)),
            history_size: history.retained,
            subscribers: self.shared.fanout.0.subscribers(channel),
        })
    }

    /// The server's state for `/healthz`.
    pub async fn health(&self) -> Health {
        let store_up = self.shared.store.check().await.is_ok();
        let status = if self.shared.shutdown.is_cancelled() {
            "shutting_down"
        } else if store_up {
            "ok"
        } else {
            "degraded"
        };
        Health {
            status,
            store: StoreHealth {
                kind: self.shared.store.kind(),
                status: if store_up { "up" } else { "down" },
            },
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.shared.started.elapsed().as_secs(),
            subscribers: self.shared.subscribers.load(Ordering::Relaxed),
        }
    }

    /// Opens a stream on `channel`: the preamble, a gap frame when the resume
    /// position cannot be honoured, the replay, then live messages.
    ///
    /// # Errors
    /// [`HubError::ShuttingDown`], [`HubError::TooManySubscribers`], or a store
    /// failure while finding the resume position.
    pub async fn subscribe(
        &self,
        channel: ChannelName,
        request: SubscribeRequest,
    ) -> Result<
        impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + Sync + 'static,
        HubError,
    > {
        subscription::open(self.clone(), channel, request).await
    }

    /// A failure frame stream for a subscriber error found before the stream opened.
    pub fn failure_stream(&self, code: &str, message: &str) -> Bytes {
        subscription::failure_only(self.shared.settings.retry_ms, code, message)
    }

    /// Whether the server has begun shutting down.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }
}
