//! The epoch this node issues and reads ids in, and whether its notifications
//! are up: the state the listener and the commands share.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use super::keys;
use crate::protocol::Epoch;
use crate::store::{unavailable, Feed, StoreError};

/// The epoch this node issues and reads ids in, replaced when Redis has a new one.
pub(super) struct SharedEpoch {
    current: AtomicU32,
    /// Whether this node's subscription to the notifications is up: without
    /// it, live fan-out is off, so the store reports itself down.
    listening: AtomicBool,
    feed: Arc<dyn Feed>,
}

impl SharedEpoch {
    pub(super) fn new(epoch: Epoch, feed: Arc<dyn Feed>) -> Self {
        SharedEpoch {
            current: AtomicU32::new(epoch.0),
            listening: AtomicBool::new(false),
            feed,
        }
    }

    pub(super) fn get(&self) -> Epoch {
        Epoch(self.current.load(Ordering::Acquire))
    }

    /// Takes on `epoch`; if it is new, open streams end (their positions mean
    /// nothing in it) and their clients resume with a gap frame.
    pub(super) fn adopt(&self, epoch: Epoch) {
        let previous = self.current.swap(epoch.0, Ordering::AcqRel);
        if previous != epoch.0 {
            tracing::warn!(old = %Epoch(previous), new = %epoch, "redis has a new epoch (its data was lost); streams restart");
            self.feed.store_interrupted();
        }
    }

    pub(super) fn is_listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    pub(super) fn set_listening(&self, up: bool) {
        self.listening.store(up, Ordering::Release);
    }
}

/// Agrees on the epoch with the other nodes: the first to ask draws it.
pub(super) async fn agree(connection: &mut ConnectionManager) -> Result<Epoch, StoreError> {
    let candidate = Epoch::random().to_string();
    let _: bool = connection.set_nx(keys::EPOCH, &candidate).await.map_err(unavailable)?;
    let stored: String = connection.get(keys::EPOCH).await.map_err(unavailable)?;
    parse(&stored).ok_or_else(|| unavailable("ssehub:epoch is not an ssehub epoch"))
}

/// An epoch as Redis keeps it (8 hex digits).
pub(super) fn parse(text: &str) -> Option<Epoch> {
    u32::from_str_radix(text, 16).ok().map(Epoch)
}
