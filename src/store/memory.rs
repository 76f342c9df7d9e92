//! The default store: history in process memory, lost on restart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::{Feed, History, Retention, Store, StoreFuture};
use crate::protocol::{ChannelName, Draft, Epoch, Message, Timestamp};
use crate::shards::{lock, Shards};

/// History in memory, bounded per channel by count and age.
pub struct MemoryStore {
    epoch: Epoch,
    retention: Retention,
    logs: Shards<Log>,
    feed: Arc<dyn Feed>,
    /// The highest position of any channel this store has forgotten. A channel
    /// created again starts after it, so an id is never issued twice in an epoch.
    forgotten_high_water: Mutex<u64>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// One channel's retained history. Positions in `messages` are consecutive.
struct Log {
    messages: VecDeque<Arc<Message>>,
    last_seq: u64,
}

impl Log {
    fn first_seq(&self) -> Option<u64> {
        self.messages.front().map(|m| m.seq)
    }

    fn trim(&mut self, retention: &Retention, now: Timestamp) {
        let max_age_ms = retention.max_age.as_millis() as u64;
        while let Some(front) = self.messages.front() {
            let expired = now.0.saturating_sub(front.time.0) > max_age_ms;
            if expired || self.messages.len() > retention.max_messages {
                self.messages.pop_front();
            } else {
                break;
            }
        }
    }
}

impl MemoryStore {
    /// A store with a fresh random epoch.
    pub fn new(retention: Retention, feed: Arc<dyn Feed>) -> Self {
        MemoryStore {
            epoch: Epoch::random(),
            retention,
            logs: Shards::new(),
            feed,
            forgotten_high_water: Mutex::new(0),
        }
    }

    fn append_now(&self, channel: &ChannelName, draft: &Draft) -> Arc<Message> {
        let now = Timestamp::now();
        let mut shard = self.logs.lock(channel);
        let log = shard.entry(channel.clone()).or_insert_with(|| Log {
            messages: VecDeque::new(),
            last_seq: *lock(&self.forgotten_high_water),
        });
        log.last_seq += 1;
        let message = Arc::new(Message::encode(
            self.epoch,
            log.last_seq,
            channel,
            draft,
            now,
        ));
        log.messages.push_back(Arc::clone(&message));
        log.trim(&self.retention, now);
        // Still under the channel's lock: the feed sees positions in order.
        self.feed.deliver(channel, &message);
        message
    }

    fn read_now(&self, channel: &ChannelName, after: u64, limit: usize) -> History {
        let mut shard = self.logs.lock(channel);
        let Some(log) = shard.get_mut(channel) else {
            return History::default();
        };
        log.trim(&self.retention, Timestamp::now());
        let first_seq = log.first_seq();
        let messages = match first_seq {
            Some(first) if limit > 0 => {
                // Positions are consecutive, so the start is an index, not a search.
                let skip = after.saturating_add(1).saturating_sub(first) as usize;
                log.messages
                    .iter()
                    .skip(skip)
                    .take(limit)
                    .cloned()
                    .collect()
            }
            _ => Vec::new(),
        };
        History {
            messages,
            first_seq,
            last_seq: log.last_seq,
            retained: log.messages.len(),
        }
    }

    fn sweep_now(&self) {
        let now = Timestamp::now();
        for mut shard in self.logs.each() {
            let mut forgotten = 0;
            shard.retain(|channel, log| {
                log.trim(&self.retention, now);
                let keep = !log.messages.is_empty() || self.feed.is_followed(channel);
                if !keep {
                    forgotten = forgotten.max(log.last_seq);
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

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn epoch(&self) -> Epoch {
        self.epoch
    }

    fn append<'a>(
        &'a self,
        channel: &'a ChannelName,
        draft: Draft,
    ) -> StoreFuture<'a, Arc<Message>> {
        let message = self.append_now(channel, &draft);
        Box::pin(std::future::ready(Ok(message)))
    }

    fn read<'a>(
        &'a self,
        channel: &'a ChannelName,
        after: u64,
        limit: usize,
    ) -> StoreFuture<'a, History> {
        let history = self.read_now(channel, after, limit);
        Box::pin(std::future::ready(Ok(history)))
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn sweep(&self) -> StoreFuture<'_, ()> {
        self.sweep_now();
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    struct Recorder(Mutex<Vec<u64>>, bool);

    impl Feed for Recorder {
        fn deliver(&self, _: &ChannelName, message: &Arc<Message>) {
            self.0.lock().unwrap().push(message.seq);
        }
        fn is_followed(&self, _: &ChannelName) -> bool {
            self.1
        }
    }

    fn store(max_messages: usize, followed: bool) -> (MemoryStore, Arc<Recorder>) {
        let feed = Arc::new(Recorder(Mutex::new(Vec::new()), followed));
        let retention = Retention {
            max_messages,
            max_age: Duration::from_secs(3600),
        };
        (MemoryStore::new(retention, feed.clone()), feed)
    }

    fn draft() -> Draft {
        Draft {
            name: "n".into(),
            contents: serde_json::Value::Null,
        }
    }

    #[test]
    fn positions_are_consecutive_and_fed_in_order() {
        let (store, feed) = store(10, false);
        let c = ChannelName::parse("c").unwrap();
        for _ in 0..3 {
            store.append_now(&c, &draft());
        }
        assert_eq!(*feed.0.lock().unwrap(), vec![1, 2, 3]);
        let h = store.read_now(&c, 1, 10);
        assert_eq!(
            h.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!((h.first_seq, h.last_seq), (Some(1), 3));
    }

    #[test]
    fn history_is_bounded_by_count() {
        let (store, _) = store(2, false);
        let c = ChannelName::parse("c").unwrap();
        for _ in 0..5 {
            store.append_now(&c, &draft());
        }
        let h = store.read_now(&c, 0, 10);
        assert_eq!(
            h.messages.iter().map(|m| m.seq).collect::<Vec<_>>(),
            vec![4, 5]
        );
    }

    #[test]
    fn a_forgotten_channel_never_reuses_an_id() {
        let feed = Arc::new(Recorder(Mutex::new(Vec::new()), false));
        let retention = Retention {
            max_messages: 10,
            max_age: Duration::ZERO,
        };
        let store = MemoryStore::new(retention, feed);
        let c = ChannelName::parse("c").unwrap();
        store.append_now(&c, &draft());
        store.append_now(&c, &draft());
        std::thread::sleep(Duration::from_millis(5));
        store.sweep_now();
        assert!(store.logs.lock(&c).get(&c).is_none());
        assert_eq!(store.append_now(&c, &draft()).seq, 3);
    }
}
