//! Where messages live: the [`Store`] trait and its implementations.
//!
//! A store owns everything that must be shared or durable: it assigns each
//! message its position (and so its id), keeps the retained history, answers
//! "what came after this id", and tells the hub about every stored message
//! through a [`Feed`], in position order per channel. The hub and the HTTP layer
//! talk only to this trait, so a durable or shared store slots in behind it.

mod clients;
mod file;
mod memory;
mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use self::redis::RedisStore;
pub use file::FileStore;
pub use memory::MemoryStore;

use crate::protocol::{ChannelName, Draft, Epoch, Message, PublicToken, Timestamp};

/// The boxed future every store method returns, so `dyn Store` can be chosen at run time.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Receives every stored message, exactly once, in position order per channel.
///
/// Implemented by the hub's topic map. A store calls it while it still holds
/// whatever makes positions ordered (the memory store: the channel's lock), so
/// live subscribers see messages in the order their ids were assigned.
pub trait Feed: Send + Sync + 'static {
    /// A message was stored in `channel`.
    fn deliver(&self, channel: &ChannelName, message: &Arc<Message>);

    /// Whether anyone follows `channel` now (a store keeps such a channel's state).
    fn is_followed(&self, channel: &ChannelName) -> bool;

    /// A registered client was removed: its open streams must end.
    fn client_removed(&self, channel: &ChannelName, client: &PublicToken);

    /// The store's notifications were interrupted, so some messages may never
    /// reach the feed: every open stream must end (its client resumes from the
    /// store when it reconnects).
    fn store_interrupted(&self);
}

/// A registered client as the store keeps it.
#[derive(Clone)]
pub struct ClientRecord {
    /// How others address it.
    pub public_token: PublicToken,
    /// Shown in presence and in `from`.
    pub display_name: Option<String>,
    /// The secret it subscribes and sends with. Never logged (see `Debug`).
    pub private_token: String,
    /// Its streams' timeout.
    pub timeout_seconds: u64,
    /// How long it is kept with no open stream.
    pub idle_seconds: u64,
    /// Streams open now, on every node.
    pub streams: u32,
    /// When its last stream closed (or it was registered), while it has none.
    pub idle_since: Option<Timestamp>,
    /// The channel's last position when it was registered: a stream of it that
    /// gives no resume position starts after this, so nothing sent to it since
    /// its registration is missed, first connection included.
    pub registered_after: u64,
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("public_token", &self.public_token)
            .field("display_name", &self.display_name)
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl ClientRecord {
    /// Whether it has stayed away longer than its idle allowance at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.idle_since
            .is_some_and(|since| now.0.saturating_sub(since.0) >= self.idle_seconds.saturating_mul(1000))
    }
}

/// A registration as the durable stores keep it (as JSON): what survives a
/// restart, without the per-process stream count and idle clock.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredClient {
    display_name: Option<String>,
    private_token: String,
    timeout_seconds: u64,
    idle_seconds: u64,
    #[serde(default)]
    registered_after: u64,
}

impl StoredClient {
    pub(crate) fn of(client: &ClientRecord) -> Self {
        StoredClient {
            display_name: client.display_name.clone(),
            private_token: client.private_token.clone(),
            timeout_seconds: client.timeout_seconds,
            idle_seconds: client.idle_seconds,
            registered_after: client.registered_after,
        }
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a registration serialises")
    }

    /// Back to a record; `None` for JSON that is not a registration.
    pub(crate) fn parse(
        json: &[u8],
        public_token: PublicToken,
        streams: u32,
        idle_since: Option<Timestamp>,
    ) -> Option<ClientRecord> {
        let stored: StoredClient = serde_json::from_slice(json).ok()?;
        Some(ClientRecord {
            public_token,
            display_name: stored.display_name,
            private_token: stored.private_token,
            timeout_seconds: stored.timeout_seconds,
            idle_seconds: stored.idle_seconds,
            streams,
            idle_since,
            registered_after: stored.registered_after,
        })
    }
}

/// The outcome of a registration.
#[derive(Debug, Clone)]
pub enum Registered {
    /// Stored.
    Created(ClientRecord),
    /// The public token is already registered on the channel.
    Exists,
}

/// How much history a store retains per channel.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Most messages kept per channel.
    pub max_messages: usize,
    /// Messages older than this are dropped.
    pub max_age: Duration,
}

/// A slice of a channel's history and where the retained history stands.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Messages after the asked position, oldest first, at most the asked limit.
    pub messages: Vec<Arc<Message>>,
    /// Position of the oldest retained message, if any is retained.
    pub first_seq: Option<u64>,
    /// Position of the newest message ever stored in this channel (0: none).
    pub last_seq: u64,
    /// How many messages are retained.
    pub retained: usize,
}

/// A store could not do what was asked; the HTTP layer answers 503.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The backing service cannot be reached or refused the operation.
    Unavailable(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Unavailable(reason) => write!(f, "store unavailable: {reason}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// The state behind the hub. See the module documentation.
pub trait Store: Send + Sync + 'static {
    /// A short name for `/healthz` (`memory`).
    fn kind(&self) -> &'static str;

    /// The epoch of every id this store issues.
    fn epoch(&self) -> Epoch;

    /// Stores a message: assigns its position and time, encodes it once, keeps it
    /// in the history, and hands it to the feed before returning.
    fn append<'a>(&'a self, channel: &'a ChannelName, draft: Draft) -> StoreFuture<'a, Arc<Message>>;

    /// Up to `limit` retained messages with a position after `after` (0: from the
    /// oldest), and where the retained history stands. `limit` 0 asks only the latter.
    fn read<'a>(&'a self, channel: &'a ChannelName, after: u64, limit: usize) -> StoreFuture<'a, History>;

    /// Whether the store can serve requests now.
    fn check(&self) -> StoreFuture<'_, ()>;

    /// Drops expired history and forgets channels with nothing left to remember.
    /// Called periodically by the server.
    fn sweep(&self) -> StoreFuture<'_, ()>;

    /// Registers a client unless its public token is taken on the channel.
    fn register<'a>(&'a self, channel: &'a ChannelName, client: ClientRecord) -> StoreFuture<'a, Registered>;

    /// One client by public token.
    fn client<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken)
        -> StoreFuture<'a, Option<ClientRecord>>;

    /// One client by private token (a subscriber's or sender's credentials).
    fn client_by_secret<'a>(
        &'a self,
        channel: &'a ChannelName,
        secret: &'a str,
    ) -> StoreFuture<'a, Option<ClientRecord>>;

    /// Every client of a channel, ordered by public token.
    fn clients<'a>(&'a self, channel: &'a ChannelName) -> StoreFuture<'a, Vec<ClientRecord>>;

    /// Removes a client and tells the feed, so its streams end. Returns it as it was.
    fn remove_client<'a>(
        &'a self,
        channel: &'a ChannelName,
        public: &'a PublicToken,
    ) -> StoreFuture<'a, Option<ClientRecord>>;

    /// Counts one more open stream of the client. `None` when it is not (or no
    /// longer) registered; `Some(true)` when this is its first open stream.
    fn attach<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken) -> StoreFuture<'a, Option<bool>>;

    /// Counts one stream fewer; `true` when that was its last (it starts idling).
    fn detach<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken) -> StoreFuture<'a, bool>;

    /// Removes every client idle past its allowance and returns them.
    fn expire_clients(&self) -> StoreFuture<'_, Vec<(ChannelName, ClientRecord)>>;
}
