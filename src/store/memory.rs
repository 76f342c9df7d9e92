//! The default store's log: history in process memory, lost on restart.
//! (Its registry is [`super::local`].)

use std::collections::VecDeque;
use std::future::ready;
use std::sync::{Arc, Mutex};

use super::local::ClientTable;
use super::{Feed, History, MessageLog, Retention, StoreFuture};
use crate::protocol::{ChannelName, Draft, Epoch, Message, Timestamp};
use crate::shards::{lock, Shards};

/// History in memory, bounded per channel by count and age.
pub(super) struct MemoryLog {
    epoch: Epoch,
    retention: Retention,
    channels: Shards<ChannelState>,
    /// The registry's table: a channel with clients is kept, so that their
    /// registration positions stay meaningful (see [`MemoryLog::sweep_now`]).
    clients: Arc<ClientTable>,
    feed: Arc<dyn Feed>,
    /// The highest position of any channel this store has forgotten. A channel
    /// created again starts after it, so an id is never issued twice in an epoch.
    forgotten_high_water: Mutex<u64>,
}

/// One channel's retained history, with consecutive positions.
#[derive(Default)]
struct ChannelState {
    messages: VecDeque<Arc<Message>>,
    last_seq: u64,
}

impl ChannelState {
    fn first_seq(&self) -> Option<u64> {
        self.messages.front().map(|m| m.seq)
    }

    fn trim(&mut self, retention: &Retention, now: Timestamp) {
        let cutoff = retention.cutoff(now);
        while let Some(front) = self.messages.front() {
            let expired = front.time.0 < cutoff;
            if expired || self.messages.len() > retention.max_messages {
                self.messages.pop_front();
            } else {
                break;
            }
        }
    }
}

impl MemoryLog {
    /// A log with a fresh random epoch.
    pub(super) fn new(retention: Retention, feed: Arc<dyn Feed>, clients: Arc<ClientTable>) -> Self {
        MemoryLog {
            epoch: Epoch::random(),
            retention,
            channels: Shards::new(),
            clients,
            feed,
            forgotten_high_water: Mutex::new(0),
        }
    }

    /// Runs `f` on the channel's state, creating it if needed.
    fn with_channel<T>(&self, channel: &ChannelName, f: impl FnOnce(&mut ChannelState) -> T) -> T {
        let mut shard = self.channels.lock(channel);
        let state = shard.entry(channel.clone()).or_insert_with(|| ChannelState {
            last_seq: *lock(&self.forgotten_high_water),
            ..ChannelState::default()
        });
        f(state)
    }

    /// Runs `f` on the channel's state if it exists.
    fn with_existing<T>(&self, channel: &ChannelName, f: impl FnOnce(&mut ChannelState) -> T) -> Option<T> {
        self.channels.lock(channel).get_mut(channel).map(f)
    }

    fn append_now(&self, channel: &ChannelName, draft: &Draft) -> Arc<Message> {
        let now = Timestamp::now();
        self.with_channel(channel, |state| {
            state.last_seq += 1;
            let message = Arc::new(Message::encode(self.epoch, state.last_seq, channel, draft, now));
            state.messages.push_back(Arc::clone(&message));
            state.trim(&self.retention, now);
            // Still under the channel's lock: the feed sees positions in order.
            self.feed.deliver(channel, &message);
            message
        })
    }

    fn read_now(&self, channel: &ChannelName, after: u64, limit: usize) -> History {
        let now = Timestamp::now();
        self.with_existing(channel, |state| {
            state.trim(&self.retention, now);
            let first_seq = state.first_seq();
            let messages = match first_seq {
                Some(first) if limit > 0 => {
                    // Positions are consecutive, so the start is an index, not a search.
                    let skip = usize::try_from(after.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
                    state.messages.iter().skip(skip).take(limit).cloned().collect()
                }
                _ => Vec::new(),
            };
            History {
                messages,
                first_seq,
                last_seq: state.last_seq,
                retained: state.messages.len(),
            }
        })
        .unwrap_or_default()
    }

    /// Trims every channel, and forgets the ones with no history, no clients
    /// and no subscribers. A client's registration position must stay
    /// comparable with the channel's head (a forgotten channel comes back at
    /// the high-water mark, which would look like lost history to it).
    fn sweep_now(&self) {
        let now = Timestamp::now();
        for mut shard in self.channels.each() {
            let mut forgotten = 0;
            shard.retain(|channel, state| {
                state.trim(&self.retention, now);
                let keep =
                    !state.messages.is_empty() || self.clients.has_clients(channel) || self.feed.is_followed(channel);
                if !keep {
                    forgotten = forgotten.max(state.last_seq);
                }
                keep
            });
            if forgotten > 0 {
                let mut high = lock(&self.forgotten_high_water);
                *high = (*high).max(forgotten);
            }
        }
    }
}

impl MessageLog for MemoryLog {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(ready(Ok(())))
    }

    fn epoch(&self) -> Epoch {
        self.epoch
    }

    fn append<'a>(&'a self, channel: &'a ChannelName, draft: Draft) -> StoreFuture<'a, Arc<Message>> {
        Box::pin(ready(Ok(self.append_now(channel, &draft))))
    }

    fn read<'a>(&'a self, channel: &'a ChannelName, after: u64, limit: usize) -> StoreFuture<'a, History> {
        Box::pin(ready(Ok(self.read_now(channel, after, limit))))
    }

    fn sweep(&self) -> StoreFuture<'_, ()> {
        self.sweep_now();
        Box::pin(ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PublicToken;
    use std::time::Duration;

    struct Recorder(Mutex<Vec<u64>>, bool);

    impl Feed for Recorder {
        fn deliver(&self, _: &ChannelName, message: &Arc<Message>) {
            self.0.lock().unwrap().push(message.seq);
        }
        fn is_followed(&self, _: &ChannelName) -> bool {
            self.1
        }
        fn client_removed(&self, _: &ChannelName, _: &PublicToken) {}
        fn store_interrupted(&self) {}
    }

    fn store(max_messages: usize, max_age: Duration) -> (MemoryLog, Arc<Recorder>) {
        let feed = Arc::new(Recorder(Mutex::new(Vec::new()), false));
        let clients = Arc::new(ClientTable::new());
        (
            MemoryLog::new(Retention { max_messages, max_age }, feed.clone(), clients),
            feed,
        )
    }

    fn draft() -> Draft {
        Draft::system("n", &serde_json::Value::Null)
    }

    #[test]
    fn positions_are_consecutive_and_fed_in_order() {
        let (store, feed) = store(10, Duration::from_secs(3600));
        let c = ChannelName::parse("c").unwrap();
        for _ in 0..3 {
            store.append_now(&c, &draft());
        }
        assert_eq!(*feed.0.lock().unwrap(), vec![1, 2, 3]);
        let h = store.read_now(&c, 1, 10);
        assert_eq!(h.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![2, 3]);
        assert_eq!((h.first_seq, h.last_seq, h.retained), (Some(1), 3, 3));
    }

    #[test]
    fn history_is_bounded_by_count() {
        let (store, _) = store(2, Duration::from_secs(3600));
        let c = ChannelName::parse("c").unwrap();
        for _ in 0..5 {
            store.append_now(&c, &draft());
        }
        let h = store.read_now(&c, 0, 10);
        assert_eq!(h.messages.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![4, 5]);
    }

    #[test]
    fn a_forgotten_channel_never_reuses_an_id() {
        let (store, _) = store(10, Duration::ZERO);
        let c = ChannelName::parse("c").unwrap();
        store.append_now(&c, &draft());
        store.append_now(&c, &draft());
        std::thread::sleep(Duration::from_millis(5));
        store.sweep_now();
        assert!(store.channels.lock(&c).get(&c).is_none());
        assert_eq!(store.append_now(&c, &draft()).seq, 3);
    }
}
