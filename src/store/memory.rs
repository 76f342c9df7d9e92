//! The default store: history and clients in process memory, lost on restart.

use std::collections::VecDeque;
use std::future::ready;
use std::sync::{Arc, Mutex};

use super::clients::ClientRegistry;
use super::{ClientRecord, Feed, History, Registered, Retention, Store, StoreFuture};
use crate::protocol::{ChannelName, Draft, Epoch, Message, PublicToken, Timestamp};
use crate::shards::{lock, Shards};

/// History and clients in memory, history bounded per channel by count and age.
pub struct MemoryStore {
    epoch: Epoch,
    retention: Retention,
    channels: Shards<ChannelState>,
    clients: ClientRegistry,
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
            channels: Shards::new(),
            clients: ClientRegistry::new(),
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
                    let skip = after.saturating_add(1).saturating_sub(first) as usize;
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

impl Store for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
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

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(ready(Ok(())))
    }

    fn sweep(&self) -> StoreFuture<'_, ()> {
        self.sweep_now();
        Box::pin(ready(Ok(())))
    }

    fn register<'a>(&'a self, channel: &'a ChannelName, client: ClientRecord) -> StoreFuture<'a, Registered> {
        Box::pin(ready(Ok(self.clients.register(channel, client))))
    }

    fn client<'a>(
        &'a self,
        channel: &'a ChannelName,
        public: &'a PublicToken,
    ) -> StoreFuture<'a, Option<ClientRecord>> {
        Box::pin(ready(Ok(self.clients.get(channel, public))))
    }

    fn client_by_secret<'a>(
        &'a self,
        channel: &'a ChannelName,
        secret: &'a str,
    ) -> StoreFuture<'a, Option<ClientRecord>> {
        Box::pin(ready(Ok(self.clients.by_secret(channel, secret))))
    }

    fn clients<'a>(&'a self, channel: &'a ChannelName) -> StoreFuture<'a, Vec<ClientRecord>> {
        Box::pin(ready(Ok(self.clients.list(channel))))
    }

    fn remove_client<'a>(
        &'a self,
        channel: &'a ChannelName,
        public: &'a PublicToken,
    ) -> StoreFuture<'a, Option<ClientRecord>> {
        let removed = self.clients.remove(channel, public);
        if removed.is_some() {
            self.feed.client_removed(channel, public);
        }
        Box::pin(ready(Ok(removed)))
    }

    fn attach<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken) -> StoreFuture<'a, Option<bool>> {
        Box::pin(ready(Ok(self.clients.attach(channel, public))))
    }

    fn detach<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken) -> StoreFuture<'a, bool> {
        Box::pin(ready(Ok(self.clients.detach(channel, public))))
    }

    fn expire_clients(&self) -> StoreFuture<'_, Vec<(ChannelName, ClientRecord)>> {
        Box::pin(ready(Ok(self.clients.expire())))
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
        fn client_removed(&self, _: &ChannelName, _: &PublicToken) {}
        fn store_interrupted(&self) {}
    }

    fn store(max_messages: usize, max_age: Duration) -> (MemoryStore, Arc<Recorder>) {
        let feed = Arc::new(Recorder(Mutex::new(Vec::new()), false));
        (
            MemoryStore::new(Retention { max_messages, max_age }, feed.clone()),
            feed,
        )
    }

    fn draft() -> Draft {
        Draft::system("n", serde_json::Value::Null)
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
