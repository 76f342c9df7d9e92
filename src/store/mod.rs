//! Where messages live: the [`Store`] trait and its implementations.
//!
//! A store owns everything that must be shared or durable: it assigns each
//! message its position (and so its id), keeps the retained history, answers
//! "what came after this id", and tells the hub about every stored message
//! through a [`Feed`], in position order per channel. The hub and the HTTP layer
//! talk only to this trait, so a durable or shared store slots in behind it.

mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use memory::MemoryStore;

use crate::protocol::{ChannelName, Draft, Epoch, Message};

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
    fn append<'a>(
        &'a self,
        channel: &'a ChannelName,
        draft: Draft,
    ) -> StoreFuture<'a, Arc<Message>>;

    /// Up to `limit` retained messages with a position after `after` (0: from the
    /// oldest), and where the retained history stands. `limit` 0 asks only the latter.
    fn read<'a>(
        &'a self,
        channel: &'a ChannelName,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'a, History>;

    /// Whether the store can serve requests now.
    fn check(&self) -> StoreFuture<'_, ()>;

    /// Drops expired history and forgets channels with nothing left to remember.
    /// Called periodically by the server.
    fn sweep(&self) -> StoreFuture<'_, ()>;
}
