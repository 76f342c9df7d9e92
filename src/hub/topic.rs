//! Live fan-out: one [`Topic`] per followed channel, holding a [`Ring`] of the
//! most recent frames and the subscribers parked for direct delivery.
//!
//! A publish costs one push and one kick of the topic's writer, however many
//! subscribers there are and however slow they are; the writer sends the new
//! frames to the parked subscribers (see `direct.rs`), and a subscriber that
//! falls behind the ring reads the store instead (see `subscription.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::direct::{Direct, Slot};
use super::ring::Ring;
use crate::protocol::{ChannelName, Message, PublicToken};
use crate::shards::{lock, Shard, Shards};
use crate::store::Feed;

/// The live fan-out of every followed channel; the store's [`Feed`].
pub(crate) struct Fanout {
    topics: Shards<Arc<Topic>>,
    /// Cancelled (and replaced) when the store's notifications were interrupted.
    interrupted: Mutex<CancellationToken>,
    ring_capacity: usize,
    /// The server's tasks: every topic's writer runs here.
    tasks: TaskTracker,
}

/// One followed channel.
pub(crate) struct Topic {
    /// Recent frames, for the writer and for subscribers catching up.
    pub(crate) ring: Ring,
    /// Subscribers that are up to date and gave their socket to the writer.
    direct: Direct,
    /// Streams open on this channel on this node.
    subscribers: AtomicUsize,
    /// Registered clients with streams here, and the token that ends those
    /// streams when the client is removed.
    clients: Mutex<HashMap<PublicToken, ClientStreams>>,
}

struct ClientStreams {
    removed: CancellationToken,
    streams: usize,
}

impl std::fmt::Debug for Fanout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fanout")
            .field("ring_capacity", &self.ring_capacity)
            .finish_non_exhaustive()
    }
}

impl Fanout {
    /// A fan-out keeping `ring_capacity` recent frames per followed channel,
    /// whose writers run under `tasks`.
    pub(crate) fn new(ring_capacity: usize, tasks: TaskTracker) -> Arc<Self> {
        Arc::new(Fanout {
            topics: Shards::new(),
            interrupted: Mutex::new(CancellationToken::new()),
            ring_capacity,
            tasks,
        })
    }

    fn shard(&self, channel: &ChannelName) -> MutexGuard<'_, Shard<Arc<Topic>>> {
        self.topics.lock(channel)
    }

    /// The channel's topic, created (with its writer) if needed, with one more
    /// subscriber counted.
    pub(crate) fn follow(&self, channel: &ChannelName) -> Arc<Topic> {
        let mut shard = self.shard(channel);
        let topic = shard.entry(channel.clone()).or_insert_with(|| {
            let topic = Arc::new(Topic {
                ring: Ring::new(self.ring_capacity),
                direct: Direct::new(),
                subscribers: AtomicUsize::new(0),
                clients: Mutex::new(HashMap::new()),
            });
            self.tasks
                .spawn(run_writer(Arc::downgrade(&topic), topic.direct.kicks()));
            topic
        });
        topic.subscribers.fetch_add(1, Ordering::Relaxed);
        Arc::clone(topic)
    }

    /// One subscriber fewer; the topic is dropped with its last subscriber.
    pub(crate) fn unfollow(&self, channel: &ChannelName, topic: &Arc<Topic>) {
        let mut shard = self.shard(channel);
        // Counted under the shard lock, so `follow` cannot revive it concurrently.
        if topic.subscribers.fetch_sub(1, Ordering::Relaxed) == 1 {
            if let Some(current) = shard.get(channel) {
                if Arc::ptr_eq(current, topic) {
                    shard.remove(channel);
                }
            }
        }
    }

    /// Subscribers of one channel now.
    pub(crate) fn subscribers(&self, channel: &ChannelName) -> usize {
        self.shard(channel)
            .get(channel)
            .map_or(0, |t| t.subscribers.load(Ordering::Relaxed))
    }

    /// Cancelled when the store's notifications are interrupted.
    pub(crate) fn interruption(&self) -> CancellationToken {
        lock(&self.interrupted).clone()
    }
}

impl Feed for Fanout {
    fn deliver(&self, channel: &ChannelName, message: &Arc<Message>) {
        let topic = self.shard(channel).get(channel).cloned();
        if let Some(topic) = topic {
            if topic.ring.push(message) {
                topic.direct.kick();
            }
        }
    }

    fn is_followed(&self, channel: &ChannelName) -> bool {
        self.shard(channel).contains_key(channel)
    }

    fn client_removed(&self, channel: &ChannelName, client: &PublicToken) {
        let topic = self.shard(channel).get(channel).cloned();
        if let Some(topic) = topic {
            if let Some(streams) = lock(&topic.clients).remove(client) {
                streams.removed.cancel();
            }
        }
    }

    fn store_interrupted(&self) {
        // Rings may now miss messages: empty them, so every read goes to the store.
        for shard in self.topics.each() {
            for topic in shard.values() {
                topic.ring.clear();
            }
        }
        let previous = std::mem::replace(&mut *lock(&self.interrupted), CancellationToken::new());
        previous.cancel();
    }
}

impl Topic {
    /// Gives `slot`'s socket to this topic's writer from position `next` on.
    pub(crate) fn park(&self, slot: &Arc<Slot>, next: u64) {
        slot.park(&self.direct, &self.ring, next);
    }

    /// `slot`'s stream ended: the writer never touches it again.
    pub(crate) fn close(&self, slot: &Slot) {
        slot.close(&self.direct);
    }

    /// A stream of `client` opens here: the token is cancelled if the client is removed.
    pub(crate) fn watch_client(&self, client: &PublicToken) -> CancellationToken {
        let mut clients = lock(&self.clients);
        let entry = clients.entry(client.clone()).or_insert_with(|| ClientStreams {
            removed: CancellationToken::new(),
            streams: 0,
        });
        entry.streams += 1;
        entry.removed.clone()
    }

    /// A stream of `client` closed here.
    pub(crate) fn unwatch_client(&self, client: &PublicToken) {
        let mut clients = lock(&self.clients);
        if let Some(entry) = clients.get_mut(client) {
            entry.streams -= 1;
            if entry.streams == 0 {
                clients.remove(client);
            }
        }
    }
}

impl Drop for Topic {
    /// The writer ends with its topic.
    fn drop(&mut self) {
        self.direct.kick();
    }
}

/// The writer of one topic: a pass over the parked slots after every kick,
/// until the topic is dropped. It holds the topic only during a pass.
async fn run_writer(topic: Weak<Topic>, kick: Arc<Notify>) {
    loop {
        kick.notified().await;
        let Some(topic) = topic.upgrade() else { return };
        topic.direct.pass(&topic.ring).await;
    }
}
