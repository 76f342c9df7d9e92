//! Where state lives: the [`MessageLog`] and the [`ClientRegistry`], and the
//! stores that implement them.
//!
//! A store owns everything that must be shared or durable. Its log assigns
//! each message its position (and so its id), keeps the retained history,
//! answers "what came after this id", and tells the hub about every stored
//! message through a [`Feed`], in position order per channel. Its registry
//! keeps registered clients, their open-stream counts and idle clocks. The
//! hub talks only to these two traits, so a durable or shared store slots in
//! behind them.
//!
//! | store | log | registry |
//! |---|---|---|
//! | `memory` | [`memory`]: per-channel rings in process memory | [`local`]: in process memory |
//! | `file:PATH` | [`file`]: a redb file, one writer thread | [`local`], registrations saved in the same file |
//! | `redis://` | [`redis`]: one Redis stream per channel | [`redis`]: hashes and an idle set, changed by Lua scripts |

mod client;
mod file;
mod local;
mod memory;
mod redis;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub(crate) use client::{ClientRecord, Registered, StoredClient};

use crate::config::StoreChoice;
use crate::protocol::{ChannelName, Draft, Epoch, Message, PublicToken};

/// The boxed future every store method returns, so the store can be chosen at run time.
pub(crate) type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Receives every stored message, exactly once, in position order per channel.
///
/// Implemented by the hub's topic map. A store calls it while it still holds
/// whatever makes positions ordered (the memory store: the channel's lock), so
/// live subscribers see messages in the order their ids were assigned.
pub(crate) trait Feed: Send + Sync + 'static {
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

/// How much history a store retains per channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Retention {
    /// Most messages kept per channel.
    pub(crate) max_messages: usize,
    /// Messages older than this are dropped.
    pub(crate) max_age: Duration,
}

impl Retention {
    /// The oldest time (ms since the epoch) a message retained at `now` may have.
    pub(crate) fn cutoff(&self, now: crate::protocol::Timestamp) -> u64 {
        let max_age = u64::try_from(self.max_age.as_millis()).unwrap_or(u64::MAX);
        now.0.saturating_sub(max_age)
    }
}

/// A slice of a channel's history and where the retained history stands.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    /// Messages after the asked position, oldest first, at most the asked limit.
    pub(crate) messages: Vec<Arc<Message>>,
    /// Position of the oldest retained message, if any is retained.
    pub(crate) first_seq: Option<u64>,
    /// Position of the newest message ever stored in this channel (0: none).
    pub(crate) last_seq: u64,
    /// How many messages are retained.
    pub(crate) retained: usize,
}

/// A page of a channel's clients, in public-token order (byte by byte).
#[derive(Debug, Clone)]
pub(crate) struct Page {
    /// Only clients whose public token sorts after this one (it need not be registered).
    pub(crate) after: Option<PublicToken>,
    /// At most this many.
    pub(crate) limit: usize,
}

/// How many clients a channel has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Census {
    /// Registered.
    pub(crate) registered: usize,
    /// With at least one open stream.
    pub(crate) connected: usize,
}

/// A store could not do what was asked; the HTTP layer answers 503.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backing service cannot be reached or refused the operation.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// A store's failure from anything that can be displayed.
pub(crate) fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

/// The message log: positions, history, retention, the epoch.
pub(crate) trait MessageLog: Send + Sync + 'static {
    /// A short name for `/healthz` (`memory`).
    fn kind(&self) -> &'static str;

    /// Whether the store can serve requests now.
    fn check(&self) -> StoreFuture<'_, ()>;

    /// The epoch of every id this log issues.
    fn epoch(&self) -> Epoch;

    /// Stores a message: assigns its position and time, encodes it once, keeps it
    /// in the history, and hands it to the feed before returning.
    fn append<'a>(&'a self, channel: &'a ChannelName, draft: Draft) -> StoreFuture<'a, Arc<Message>>;

    /// Up to `limit` retained messages with a position after `after` (0: from the
    /// oldest), and where the retained history stands. `limit` 0 asks only the latter.
    fn read<'a>(&'a self, channel: &'a ChannelName, after: u64, limit: usize) -> StoreFuture<'a, History>;

    /// Drops expired history and forgets channels with nothing left to remember.
    /// Called periodically by the server.
    fn sweep(&self) -> StoreFuture<'_, ()>;
}

/// Registered clients: registrations, open-stream counts, idle expiry.
pub(crate) trait ClientRegistry: Send + Sync + 'static {
    /// Registers a client unless its public or private token is taken on the channel.
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

    /// One page of a channel's clients, ordered by public token: a store reads
    /// no more of them than the page holds.
    fn clients<'a>(&'a self, channel: &'a ChannelName, page: &'a Page) -> StoreFuture<'a, Vec<ClientRecord>>;

    /// How many clients a channel has, and how many are connected, without
    /// reading their registrations.
    fn census<'a>(&'a self, channel: &'a ChannelName) -> StoreFuture<'a, Census>;

    /// Removes a client and tells the feed, so its streams end. Returns it as it was.
    fn remove<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken)
        -> StoreFuture<'a, Option<ClientRecord>>;

    /// Counts one more open stream of the client. `None` when it is not (or no
    /// longer) registered; `Some(true)` when this is its first open stream.
    fn attach<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken) -> StoreFuture<'a, Option<bool>>;

    /// Counts one stream fewer; `true` when that was its last (it starts idling).
    fn detach<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken) -> StoreFuture<'a, bool>;

    /// Removes every client idle past its allowance and returns them.
    fn expire(&self) -> StoreFuture<'_, Vec<(ChannelName, ClientRecord)>>;
}

/// One store, opened: its log and its registry.
#[derive(Clone)]
pub(crate) struct Store {
    pub(crate) log: Arc<dyn MessageLog>,
    pub(crate) clients: Arc<dyn ClientRegistry>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("kind", &self.log.kind())
            .finish_non_exhaustive()
    }
}

/// Opens the store `choice` names, feeding every stored message to `feed`.
/// A store's background work (the Redis listener) runs under `tasks` and ends
/// when `stop` is cancelled.
///
/// # Errors
/// The file cannot be opened, or Redis cannot be reached at start.
pub(crate) async fn open(
    choice: &StoreChoice,
    retention: Retention,
    feed: Arc<dyn Feed>,
    tasks: &TaskTracker,
    stop: &CancellationToken,
) -> Result<Store, StoreError> {
    Ok(match choice {
        StoreChoice::Memory => {
            let clients = Arc::new(local::ClientTable::new());
            Store {
                log: Arc::new(memory::MemoryLog::new(
                    retention,
                    Arc::clone(&feed),
                    Arc::clone(&clients),
                )),
                clients: Arc::new(local::LocalClients::new(clients, local::InMemory, feed)),
            }
        }
        StoreChoice::File(path) => {
            // Opening reads every registration from disk: off the async threads.
            let (path, opened_feed) = (path.clone(), Arc::clone(&feed));
            let (log, registrations) =
                tokio::task::spawn_blocking(move || file::FileLog::open(&path, retention, opened_feed))
                    .await
                    .map_err(unavailable)??;
            Store {
                log: Arc::new(log),
                clients: Arc::new(local::LocalClients::new(registrations.table, registrations.saved, feed)),
            }
        }
        StoreChoice::Redis(url) => {
            let redis = Arc::new(redis::RedisStore::open(url, retention, feed, tasks, stop).await?);
            Store {
                log: Arc::clone(&redis) as Arc<dyn MessageLog>,
                clients: redis,
            }
        }
    })
}
