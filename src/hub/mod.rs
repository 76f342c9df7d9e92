//! The hub: publishing into the store, and subscriptions that replay history
//! and then follow the channel live.
//!
//! ```text
//! publish:   Hub::publish → Store::append (position, encode once) → Feed (= Fanout) → Topic ring + kick
//! fan-out:   topic writer → one non-blocking write per parked (up-to-date) subscriber's socket
//! subscribe: Hub::subscribe → resume position from the store → stream: ring or store → bytes,
//!            then parked while up to date
//! ```

mod direct;
mod subscription;
mod topic;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::protocol::{ChannelName, Draft, MessageId, PublicToken, Registration, Sender};
use crate::store::{ClientRecord, Registered, Store, StoreError};

pub use direct::Outlet;
pub use subscription::SubscribeRequest;
pub use topic::Fanout;

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
    /// Idle allowance of a client registered without one, in seconds.
    pub client_idle_seconds: u64,
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
    /// A registration's public token is taken on the channel.
    ClientExists,
    /// No client with that token on the channel (never registered, expired or removed).
    UnknownClient,
    /// A direct message's recipient is not a client of the channel.
    UnknownRecipient,
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
                write!(f, "this server holds its maximum of {limit} open streams; retry later")
            }
            HubError::ShuttingDown => f.write_str("the server is shutting down; reconnect shortly"),
            HubError::ClientExists => f.write_str(
                "a client with this public token, or this private token, is already registered on this channel",
            ),
            HubError::UnknownClient => {
                f.write_str("no such client on this channel (never registered, expired after idling, or removed)")
            }
            HubError::UnknownRecipient => f.write_str("'to' names no registered client of this channel"),
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
    /// Registered clients of the channel.
    pub clients_registered: usize,
    /// Registered clients with at least one open stream.
    pub clients_connected: usize,
}

/// A client as presence shows it (`client.schema.json`): never its private token.
#[derive(Debug, Clone, Serialize)]
pub struct ClientView {
    /// Its channel.
    pub channel: ChannelName,
    /// How others address it.
    pub public_token: PublicToken,
    /// Its display name.
    pub display_name: Option<String>,
    /// Whether a stream of it is open now.
    pub connected: bool,
    /// Its streams' timeout.
    pub connection_timeout_seconds: u64,
    /// How long it is kept with no open stream.
    pub connection_idle_seconds: u64,
}

impl ClientView {
    fn of(channel: &ChannelName, client: &ClientRecord) -> Self {
        ClientView {
            channel: channel.clone(),
            public_token: client.public_token.clone(),
            display_name: client.display_name.clone(),
            connected: client.streams > 0,
            connection_timeout_seconds: client.timeout_seconds,
            connection_idle_seconds: client.idle_seconds,
        }
    }
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
    /// Policies: which channels announce presence.
    access: Arc<Access>,
    /// Work a closing stream leaves behind (detaching its client, announcing it),
    /// which the server waits for at shutdown.
    tasks: TaskTracker,
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
        access: Arc<Access>,
        fanout: Arc<Fanout>,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> Self {
        Hub {
            shared: Arc::new(Shared {
                fanout,
                store,
                settings,
                access,
                tasks: TaskTracker::new(),
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

    /// Tasks left behind by closed streams; the server waits for them at shutdown.
    pub fn tasks(&self) -> &TaskTracker {
        &self.shared.tasks
    }

    /// Stores a message; live subscribers are woken before this returns, but it
    /// never waits for any of them.
    ///
    /// # Errors
    /// [`HubError::UnknownRecipient`] for a direct message to no client, and
    /// [`HubError::Store`] when the message could not be stored.
    pub async fn publish(&self, channel: &ChannelName, draft: Draft) -> Result<Published, HubError> {
        if let Some(to) = &draft.to {
            if self.shared.store.client(channel, to).await?.is_none() {
                return Err(HubError::UnknownRecipient);
            }
        }
        let message = self.shared.store.append(channel, draft).await?;
        let id = MessageId {
            epoch: self.shared.store.epoch(),
            seq: message.seq,
        };
        Ok(Published {
            id: id.text(),
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
        let clients = self.shared.store.clients(channel).await?;
        let epoch = self.shared.store.epoch();
        let id = |seq| MessageId { epoch, seq }.to_string();
        Ok(ChannelInfo {
            channel: channel.clone(),
            first_id: history.first_seq.map(id),
            last_id: (history.last_seq > 0).then(|| id(history.last_seq)),
            history_size: history.retained,
            subscribers: self.shared.fanout.subscribers(channel),
            clients_registered: clients.len(),
            clients_connected: clients.iter().filter(|c| c.streams > 0).count(),
        })
    }

    /// Registers a client; returns it with its private token (generated when the
    /// registration has none). Its idle allowance starts now.
    ///
    /// # Errors
    /// [`HubError::ClientExists`], or a store failure.
    pub async fn register(
        &self,
        channel: &ChannelName,
        registration: Registration,
    ) -> Result<(ClientView, String), HubError> {
        let settings = &self.shared.settings;
        // A direct message needs its recipient registered first, so every one
        // for this client will come after this position.
        let registered_after = self.shared.store.read(channel, 0, 0).await?.last_seq;
        let record = ClientRecord {
            public_token: registration.public_token,
            display_name: registration.display_name,
            private_token: registration
                .private_token
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            timeout_seconds: registration
                .connection_timeout_seconds
                .unwrap_or(settings.default_timeout.as_secs()),
            idle_seconds: registration
                .connection_idle_seconds
                .unwrap_or(settings.client_idle_seconds),
            streams: 0,
            idle_since: Some(crate::protocol::Timestamp::now()),
            registered_after,
        };
        match self.shared.store.register(channel, record).await? {
            Registered::Created(client) => Ok((ClientView::of(channel, &client), client.private_token)),
            Registered::Exists => Err(HubError::ClientExists),
        }
    }

    /// One client, as presence shows it.
    ///
    /// # Errors
    /// [`HubError::UnknownClient`], or a store failure.
    pub async fn client(&self, channel: &ChannelName, public: &PublicToken) -> Result<ClientView, HubError> {
        match self.shared.store.client(channel, public).await? {
            Some(client) => Ok(ClientView::of(channel, &client)),
            None => Err(HubError::UnknownClient),
        }
    }

    /// Every client of the channel, ordered by public token.
    ///
    /// # Errors
    /// A store failure.
    pub async fn clients(&self, channel: &ChannelName) -> Result<Vec<ClientView>, HubError> {
        let clients = self.shared.store.clients(channel).await?;
        Ok(clients.iter().map(|c| ClientView::of(channel, c)).collect())
    }

    /// The client whose private token this is, if any.
    ///
    /// # Errors
    /// A store failure.
    pub async fn authenticate(&self, channel: &ChannelName, secret: &str) -> Result<Option<ClientRecord>, HubError> {
        Ok(self.shared.store.client_by_secret(channel, secret).await?)
    }

    /// Removes a client: its open streams get a `client_removed` failure frame
    /// and end; a connected client is announced as disconnected.
    ///
    /// # Errors
    /// [`HubError::UnknownClient`], or a store failure.
    pub async fn remove_client(&self, channel: &ChannelName, public: &PublicToken) -> Result<(), HubError> {
        let removed = self.shared.store.remove_client(channel, public).await?;
        let client = removed.ok_or(HubError::UnknownClient)?;
        if client.streams > 0 {
            self.announce(channel, "client.disconnected", &client).await;
        }
        Ok(())
    }

    /// Removes clients idle past their allowance, announcing each on channels
    /// with presence. Called periodically by the server.
    ///
    /// # Errors
    /// A store failure.
    pub async fn expire_clients(&self) -> Result<usize, HubError> {
        let expired = self.shared.store.expire_clients().await?;
        for (channel, client) in &expired {
            self.announce(channel, "client.expired", client).await;
        }
        Ok(expired.len())
    }

    /// Sends a presence event, if the channel has presence on. A failure is
    /// logged, not returned: presence is a report about an action that happened.
    async fn announce(&self, channel: &ChannelName, name: &str, client: &ClientRecord) {
        if !self.shared.access.policy(channel).presence {
            return;
        }
        let sender = Sender {
            public_token: client.public_token.clone(),
            display_name: client.display_name.clone(),
        };
        let contents = serde_json::to_value(&sender).expect("a sender serialises");
        if let Err(error) = self.shared.store.append(channel, Draft::system(name, contents)).await {
            tracing::warn!(%channel, event = name, %error, "presence event not stored");
        }
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
    ) -> Result<impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + Sync + 'static, HubError> {
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
