//! Registered clients kept in process memory: registrations, open-stream
//! counts and idle clocks. This is the registry of the memory store and of the
//! file store; the file store also saves registrations in its file (see
//! [`Saved`]) and loads them here at start, since open streams and idle clocks
//! only mean something while the process runs.

use std::collections::{BTreeMap, HashMap};
use std::future::ready;
use std::ops::Bound;
use std::sync::Arc;

use super::{Census, ClientRecord, ClientRegistry, Feed, Page, Registered, StoreFuture};
use crate::protocol::{ChannelName, PublicToken, Timestamp};
use crate::shards::Shards;

/// One channel's clients.
#[derive(Default)]
struct Clients {
    /// Ordered, so a page of the presence list is a range, not a sort of all.
    by_public: BTreeMap<PublicToken, ClientRecord>,
    /// Private token → public token.
    by_secret: HashMap<String, PublicToken>,
}

/// Every channel's clients, sharded like the rest of the state.
pub(super) struct ClientTable {
    channels: Shards<Clients>,
}

impl ClientTable {
    pub(super) fn new() -> Self {
        ClientTable {
            channels: Shards::new(),
        }
    }

    /// Adds the client unless its public or private token is taken on the channel.
    pub(super) fn register(&self, channel: &ChannelName, client: ClientRecord) -> Registered {
        let mut shard = self.channels.lock(channel);
        let clients = shard.entry(channel.clone()).or_default();
        if clients.by_public.contains_key(&client.public_token) || clients.by_secret.contains_key(&client.private_token)
        {
            return Registered::Exists;
        }
        clients
            .by_secret
            .insert(client.private_token.clone(), client.public_token.clone());
        clients.by_public.insert(client.public_token.clone(), client.clone());
        Registered::Created(client)
    }

    fn with<T>(&self, channel: &ChannelName, f: impl FnOnce(&mut Clients) -> Option<T>) -> Option<T> {
        self.channels.lock(channel).get_mut(channel).and_then(f)
    }

    pub(super) fn get(&self, channel: &ChannelName, public: &PublicToken) -> Option<ClientRecord> {
        self.with(channel, |c| c.by_public.get(public).cloned())
    }

    pub(super) fn by_secret(&self, channel: &ChannelName, secret: &str) -> Option<ClientRecord> {
        self.with(channel, |c| {
            c.by_secret
                .get(secret)
                .and_then(|public| c.by_public.get(public))
                .cloned()
        })
    }

    /// One page of the channel's clients, ordered by public token.
    pub(super) fn page(&self, channel: &ChannelName, page: &Page) -> Vec<ClientRecord> {
        let from = page.after.as_ref().map_or(Bound::Unbounded, Bound::Excluded);
        self.with(channel, |c| {
            Some(
                c.by_public
                    .range((from, Bound::Unbounded))
                    .take(page.limit)
                    .map(|(_, client)| client.clone())
                    .collect(),
            )
        })
        .unwrap_or_default()
    }

    pub(super) fn census(&self, channel: &ChannelName) -> Census {
        self.with(channel, |c| {
            Some(Census {
                registered: c.by_public.len(),
                connected: c.by_public.values().filter(|client| client.streams > 0).count(),
            })
        })
        .unwrap_or_default()
    }

    pub(super) fn remove(&self, channel: &ChannelName, public: &PublicToken) -> Option<ClientRecord> {
        let mut shard = self.channels.lock(channel);
        let clients = shard.get_mut(channel)?;
        let client = clients.by_public.remove(public)?;
        clients.by_secret.remove(&client.private_token);
        if clients.by_public.is_empty() {
            shard.remove(channel);
        }
        Some(client)
    }

    /// One more open stream; `Some(true)` for the first. A client whose idle
    /// allowance ran out is gone even if the periodic expiry has not run yet.
    pub(super) fn attach(&self, channel: &ChannelName, public: &PublicToken) -> Option<bool> {
        let now = Timestamp::now();
        self.with(channel, |c| {
            let client = c.by_public.get_mut(public)?;
            if client.is_expired(now) {
                return None;
            }
            client.streams += 1;
            client.idle_since = None;
            Some(client.streams == 1)
        })
    }

    /// One stream fewer; `true` when it was the last (the idle clock starts).
    pub(super) fn detach(&self, channel: &ChannelName, public: &PublicToken) -> bool {
        let now = Timestamp::now();
        self.with(channel, |c| {
            let client = c.by_public.get_mut(public)?;
            client.streams = client.streams.saturating_sub(1);
            let last = client.streams == 0;
            if last {
                client.idle_since = Some(now);
            }
            Some(last)
        })
        .unwrap_or(false)
    }

    /// Removes and returns every client idle past its allowance.
    pub(super) fn expire(&self) -> Vec<(ChannelName, ClientRecord)> {
        let now = Timestamp::now();
        let mut expired = Vec::new();
        for mut shard in self.channels.each() {
            for (channel, clients) in shard.iter_mut() {
                let gone: Vec<PublicToken> = clients
                    .by_public
                    .values()
                    .filter(|c| c.is_expired(now))
                    .map(|c| c.public_token.clone())
                    .collect();
                for public in gone {
                    if let Some(client) = clients.by_public.remove(&public) {
                        clients.by_secret.remove(&client.private_token);
                        expired.push((channel.clone(), client));
                    }
                }
            }
            shard.retain(|_, clients| !clients.by_public.is_empty());
        }
        expired
    }

    /// Whether the channel has any client (a store keeps such a channel).
    pub(super) fn has_clients(&self, channel: &ChannelName) -> bool {
        self.channels.lock(channel).contains_key(channel)
    }
}

/// Where a local registry saves registrations beyond this process: nowhere
/// ([`InMemory`]) or the file store's database.
pub(super) trait Saved: Send + Sync + 'static {
    /// Saves a new registration.
    fn save<'a>(&'a self, channel: &'a ChannelName, client: &ClientRecord) -> StoreFuture<'a, ()>;

    /// Forgets registrations (removed or expired clients).
    fn forget(&self, clients: Vec<(ChannelName, PublicToken)>) -> StoreFuture<'_, ()>;
}

/// The memory store's registrations: kept in the table only.
pub(super) struct InMemory;

impl Saved for InMemory {
    fn save<'a>(&'a self, _: &'a ChannelName, _: &ClientRecord) -> StoreFuture<'a, ()> {
        Box::pin(ready(Ok(())))
    }

    fn forget(&self, _: Vec<(ChannelName, PublicToken)>) -> StoreFuture<'_, ()> {
        Box::pin(ready(Ok(())))
    }
}

/// The registry of a single-node store: the table, what saves it, and the
/// feed told of removals. A registration is in the table only once it is
/// saved; a removal is saved before it leaves the table.
pub(super) struct LocalClients<S> {
    table: Arc<ClientTable>,
    saved: S,
    feed: Arc<dyn Feed>,
}

impl<S: Saved> LocalClients<S> {
    pub(super) fn new(table: Arc<ClientTable>, saved: S, feed: Arc<dyn Feed>) -> Self {
        LocalClients { table, saved, feed }
    }
}

impl<S: Saved> ClientRegistry for LocalClients<S> {
    fn register<'a>(&'a self, channel: &'a ChannelName, client: ClientRecord) -> StoreFuture<'a, Registered> {
        Box::pin(async move {
            let Registered::Created(client) = self.table.register(channel, client) else {
                return Ok(Registered::Exists);
            };
            if let Err(error) = self.saved.save(channel, &client).await {
                self.table.remove(channel, &client.public_token);
                return Err(error);
            }
            Ok(Registered::Created(client))
        })
    }

    fn client<'a>(
        &'a self,
        channel: &'a ChannelName,
        public: &'a PublicToken,
    ) -> StoreFuture<'a, Option<ClientRecord>> {
        Box::pin(ready(Ok(self.table.get(channel, public))))
    }

    fn client_by_secret<'a>(
        &'a self,
        channel: &'a ChannelName,
        secret: &'a str,
    ) -> StoreFuture<'a, Option<ClientRecord>> {
        Box::pin(ready(Ok(self.table.by_secret(channel, secret))))
    }

    fn clients<'a>(&'a self, channel: &'a ChannelName, page: &'a Page) -> StoreFuture<'a, Vec<ClientRecord>> {
        Box::pin(ready(Ok(self.table.page(channel, page))))
    }

    fn census<'a>(&'a self, channel: &'a ChannelName) -> StoreFuture<'a, Census> {
        Box::pin(ready(Ok(self.table.census(channel))))
    }

    fn remove<'a>(
        &'a self,
        channel: &'a ChannelName,
        public: &'a PublicToken,
    ) -> StoreFuture<'a, Option<ClientRecord>> {
        Box::pin(async move {
            if self.table.get(channel, public).is_none() {
                return Ok(None);
            }
            self.saved.forget(vec![(channel.clone(), public.clone())]).await?;
            let removed = self.table.remove(channel, public);
            if removed.is_some() {
                self.feed.client_removed(channel, public);
            }
            Ok(removed)
        })
    }

    fn attach<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken) -> StoreFuture<'a, Option<bool>> {
        Box::pin(ready(Ok(self.table.attach(channel, public))))
    }

    fn detach<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken) -> StoreFuture<'a, bool> {
        Box::pin(ready(Ok(self.table.detach(channel, public))))
    }

    fn expire(&self) -> StoreFuture<'_, Vec<(ChannelName, ClientRecord)>> {
        Box::pin(async move {
            let expired = self.table.expire();
            if !expired.is_empty() {
                let keys = expired
                    .iter()
                    .map(|(channel, client)| (channel.clone(), client.public_token.clone()))
                    .collect();
                self.saved.forget(keys).await?;
            }
            Ok(expired)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(public: &str, secret: &str, idle_seconds: u64) -> ClientRecord {
        ClientRecord {
            public_token: PublicToken::parse(public).unwrap(),
            display_name: None,
            private_token: secret.into(),
            timeout_seconds: 60,
            idle_seconds,
            streams: 0,
            idle_since: Some(Timestamp::now()),
            registered_after: 0,
        }
    }

    #[test]
    fn register_attach_detach_expire() {
        let registry = ClientTable::new();
        let channel = ChannelName::parse("c").unwrap();
        let alice = PublicToken::parse("alice").unwrap();
        assert!(matches!(
            registry.register(&channel, record("alice", "s1s1s1s1s1s1s1s1", 0)),
            Registered::Created(_)
        ));
        assert!(matches!(
            registry.register(&channel, record("alice", "s2s2s2s2s2s2s2s2", 0)),
            Registered::Exists
        ));
        assert!(matches!(
            registry.register(&channel, record("bob", "s1s1s1s1s1s1s1s1", 0)),
            Registered::Exists
        ));
        assert_eq!(
            registry.by_secret(&channel, "s1s1s1s1s1s1s1s1").unwrap().public_token,
            alice
        );
        // Idle allowance 0: already expired, so a stream cannot attach.
        assert_eq!(registry.attach(&channel, &alice), None);
        assert_eq!(registry.expire().len(), 1);
        assert!(!registry.has_clients(&channel));

        registry.register(&channel, record("alice", "s1s1s1s1s1s1s1s1", 60));
        assert_eq!(registry.attach(&channel, &alice), Some(true));
        assert_eq!(registry.attach(&channel, &alice), Some(false));
        assert!(!registry.detach(&channel, &alice));
        assert!(registry.detach(&channel, &alice));
        assert!(registry.expire().is_empty());
    }

    #[test]
    fn pages_follow_the_public_token_order() {
        let registry = ClientTable::new();
        let channel = ChannelName::parse("c").unwrap();
        for (n, public) in ["b", "a", "B", "a.b", "c"].into_iter().enumerate() {
            registry.register(&channel, record(public, &format!("secret-{n}-0123456789"), 60));
        }
        let page = |after: Option<&str>, limit| {
            let after = after.map(|a| PublicToken::parse(a).unwrap());
            let publics: Vec<String> = registry
                .page(&channel, &Page { after, limit })
                .into_iter()
                .map(|c| c.public_token.to_string())
                .collect();
            publics
        };
        assert_eq!(page(None, 10), ["B", "a", "a.b", "b", "c"]);
        assert_eq!(page(None, 2), ["B", "a"]);
        assert_eq!(page(Some("a"), 2), ["a.b", "b"]);
        assert_eq!(page(Some("aa"), 2), ["b", "c"]);
        assert!(page(Some("c"), 2).is_empty());
        registry.attach(&channel, &PublicToken::parse("c").unwrap());
        assert_eq!(
            registry.census(&channel),
            Census {
                registered: 5,
                connected: 1
            }
        );
    }
}
