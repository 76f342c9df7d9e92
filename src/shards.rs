//! A map from channel to state, split over independently locked shards so that
//! no single lock is shared by all channels. Used by the memory store (history)
//! and the hub (live topics).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, MutexGuard};

use crate::protocol::ChannelName;

/// Enough shards that two busy channels rarely share a lock on a many-core box.
const SHARDS: usize = 64;

/// One shard's map.
pub(crate) type Shard<V> = HashMap<ChannelName, V>;

/// See the module documentation. Locks are `std::sync::Mutex`: every critical
/// section is a few map operations with no `.await` inside.
pub(crate) struct Shards<V> {
    shards: Box<[Mutex<Shard<V>>]>,
}

impl<V> Shards<V> {
    pub(crate) fn new() -> Self {
        Shards {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// The locked shard that holds `channel`.
    pub(crate) fn lock(&self, channel: &ChannelName) -> MutexGuard<'_, Shard<V>> {
        let mut hasher = DefaultHasher::new();
        channel.hash(&mut hasher);
        let index = hasher.finish() % SHARDS as u64;
        lock(&self.shards[usize::try_from(index).unwrap_or(0)])
    }

    /// Each shard in turn, locked one at a time (for sweeps).
    pub(crate) fn each(&self) -> impl Iterator<Item = MutexGuard<'_, Shard<V>>> {
        self.shards.iter().map(lock)
    }
}

/// Locks, ignoring poisoning: a panic elsewhere must not take every later
/// request down with it, and the maps hold no invariant a panic could break
/// half-way that matters more than that.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}
