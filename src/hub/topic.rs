//! Live fan-out: one [`Topic`] per followed channel, holding a ring of the most
//! recent frames and the subscribers parked for direct delivery.
//!
//! Every delivery is by position: a subscriber remembers the next position it
//! wants and is sent what the ring holds from there. A publish costs one push
//! and one kick of the topic's writer, however many subscribers there are and
//! however slow they are; the writer sends the new frames to the parked
//! subscribers (see `direct.rs`), and a subscriber that falls behind the ring
//! reads the store instead (see `subscription.rs`).

use std::collections::HashMap;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::direct::{self, Parked};
use crate::protocol::{ChannelName, Message, PublicToken};
use crate::shards::{lock, Shard, Shards};
use crate::store::Feed;

/// The live fan-out of every followed channel; the store's [`Feed`].
pub struct Fanout {
    topics: Shards<Arc<Topic>>,
    /// Cancelled (and replaced) when the store's notifications were interrupted.
    interrupted: Mutex<CancellationToken>,
    ring_capacity: usize,
}

/// What a subscriber gets from the ring.
pub(crate) enum Take {
    /// Frames from the wanted position on, coalesced into one chunk; `next` is the
    /// position after the last frame looked at. `chunk` is `None` when every
    /// frame looked at was a direct message for someone else.
    Frames { chunk: Option<Bytes>, next: u64 },
    /// Nothing newer than the wanted position: wait for a push.
    UpToDate,
    /// The ring is empty: only the store can say whether anything is there.
    Empty,
    /// The wanted position is not in the ring (the subscriber fell behind it): ask the store.
    Behind,
}

/// One followed channel.
pub(crate) struct Topic {
    /// Recent frames with consecutive positions. A std mutex: held only to push or
    /// to clone out a few `Bytes`, never across an await.
    ring: Mutex<VecDeque<Arc<Message>>>,
    /// Subscribers that are up to date and gave their socket to the writer.
    pub(crate) parked: Mutex<Parked>,
    /// Wakes the writer after a push (or a park that may have missed one).
    kick: Arc<Notify>,
    /// Streams open on this channel on this node.
    pub(crate) subscribers: AtomicUsize,
    /// Registered clients with streams here, and the token that ends those
    /// streams when the client is removed.
    clients: Mutex<HashMap<PublicToken, ClientStreams>>,
    ring_capacity: usize,
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
    /// A fan-out keeping `ring_capacity` recent frames per followed channel.
    pub fn new(ring_capacity: usize) -> Arc<Self> {
        Arc::new(Fanout {
            topics: Shards::new(),
            interrupted: Mutex::new(CancellationToken::new()),
            ring_capacity: ring_capacity.max(1),
        })
    }

    fn shard(&self, channel: &ChannelName) -> MutexGuard<'_, Shard<Arc<Topic>>> {
        self.topics.lock(channel)
    }

    /// The channel's topic, created if needed, with one more subscriber counted.
    pub(crate) fn follow(&self, channel: &ChannelName) -> Arc<Topic> {
        let mut shard = self.shard(channel);
        let topic = shard.entry(channel.clone()).or_insert_with(|| {
            let kick = Arc::new(Notify::new());
            let topic = Arc::new(Topic {
                ring: Mutex::new(VecDeque::with_capacity(self.ring_capacity.min(64))),
                parked: Mutex::new(Parked::default()),
                kick: Arc::clone(&kick),
                subscribers: AtomicUsize::new(0),
                clients: Mutex::new(HashMap::new()),
                ring_capacity: self.ring_capacity,
            });
            tokio::spawn(direct::run_writer(Arc::downgrade(&topic), kick));
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
}

impl Fanout {
    /// Cancelled when the store's notifications are interrupted.
    pub(crate) fn interruption(&self) -> CancellationToken {
        lock(&self.interrupted).clone()
    }
}

impl Feed for Fanout {
    fn deliver(&self, channel: &ChannelName, message: &Arc<Message>) {
        let topic = self.shard(channel).get(channel).cloned();
        if let Some(topic) = topic {
            topic.push(message);
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
                topic.ring().clear();
            }
        }
        let previous = std::mem::replace(&mut *lock(&self.interrupted), CancellationToken::new());
        previous.cancel();
    }
}

impl Topic {
    fn ring(&self) -> MutexGuard<'_, VecDeque<Arc<Message>>> {
        lock(&self.ring)
    }

    /// Adds a stored message and kicks the writer.
    fn push(&self, message: &Arc<Message>) {
        {
            let mut ring = self.ring();
            match ring.back() {
                Some(last) if message.seq <= last.seq => return, // already have it
                Some(last) if message.seq != last.seq + 1 => ring.clear(), // keep positions consecutive
                _ => {}
            }
            if ring.len() == self.ring_capacity {
                ring.pop_front();
            }
            ring.push_back(Arc::clone(message));
        }
        self.kick();
    }

    /// Makes the writer run a pass (now, or right after the one under way).
    pub(crate) fn kick(&self) {
        self.kick.notify_one();
    }

    /// Whether the ring holds anything at or after position `next`.
    pub(crate) fn holds_after(&self, next: u64) -> bool {
        self.ring().back().is_some_and(|last| last.seq >= next)
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

    /// Frames from position `next` on that `viewer` may see, at most about
    /// `max_bytes` of them.
    pub(crate) fn take(&self, next: u64, max_bytes: usize, viewer: Option<&PublicToken>) -> Take {
        let ring = self.ring();
        let (Some(first), Some(last)) = (ring.front(), ring.back()) else {
            return Take::Empty;
        };
        if next == last.seq + 1 {
            return Take::UpToDate;
        }
        if next < first.seq || next > last.seq {
            return Take::Behind;
        }
        let start = (next - first.seq) as usize;
        if start + 1 == ring.len() {
            // The common case: one new frame, shared without a copy.
            let only = &ring[start];
            let chunk = only.is_visible_to(viewer).then(|| only.frame.clone());
            return Take::Frames {
                chunk,
                next: only.seq + 1,
            };
        }
        // Several frames ready: coalesce them so they leave in one write.
        let mut chunk = BytesMut::new();
        let mut taken = next - 1;
        for message in ring.range(start..) {
            if chunk.len() >= max_bytes {
                break;
            }
            if message.is_visible_to(viewer) {
                chunk.put_slice(&message.frame);
            }
            taken = message.seq;
        }
        let chunk = (!chunk.is_empty()).then(|| chunk.freeze());
        Take::Frames { chunk, next: taken + 1 }
    }
}

impl Drop for Topic {
    /// The writer ends with its topic.
    fn drop(&mut self) {
        self.kick();
    }
}
