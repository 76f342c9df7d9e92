//! The client registry in Redis: `register.lua`, `remove.lua`, `attach.lua`,
//! `detach.lua`, `expire.lua` and `list.lua`, and plain reads of the
//! channel's hashes.

use redis::AsyncCommands;

use super::{keys, RedisStore};
use crate::protocol::{ChannelName, PublicToken, Timestamp};
use crate::store::{
    unavailable, Census, ClientRecord, ClientRegistry, Page, Registered, StoreError, StoreFuture, StoredClient,
};

/// Idle clients claimed per expiry call; the rest wait for the next one.
const EXPIRE_BATCH: isize = 256;

/// A registration read back; idle clocks live in the idle set, not here.
fn record(public: PublicToken, json: &[u8], streams: u32) -> Option<ClientRecord> {
    StoredClient::parse(json, public, streams, None)
}

/// A client's idle deadline (ms) if its clock started now.
fn idle_deadline(client: &ClientRecord) -> u64 {
    Timestamp::now()
        .0
        .saturating_add(client.idle_seconds.saturating_mul(1000))
}

impl RedisStore {
    async fn client_now(
        &self,
        channel: &ChannelName,
        public: &PublicToken,
    ) -> Result<Option<ClientRecord>, StoreError> {
        let mut connection = self.connection();
        let (json, streams): (Option<Vec<u8>>, Option<u32>) = redis::pipe()
            .hget(keys::clients(channel), public.as_str())
            .hget(keys::streams(channel), public.as_str())
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(json.and_then(|json| record(public.clone(), &json, streams.unwrap_or(0))))
    }

    /// Claims one due idle client (see `expire.lua`); `None` when it is not
    /// due any more or another node claimed it first.
    async fn claim_expired(
        &self,
        channel: &ChannelName,
        public: &PublicToken,
        now: Timestamp,
    ) -> Result<Option<ClientRecord>, StoreError> {
        let json: Option<Vec<u8>> = self
            .scripts
            .expire
            .key(keys::IDLE)
            .key(keys::clients(channel))
            .key(keys::secrets(channel))
            .key(keys::streams(channel))
            .key(keys::index(channel))
            .arg(keys::idle_member(channel, public))
            .arg(public.as_str())
            .arg(now.0)
            .invoke_async(&mut self.connection())
            .await
            .map_err(unavailable)?;
        Ok(json.and_then(|json| record(public.clone(), &json, 0)))
    }
}

impl ClientRegistry for RedisStore {
    fn register<'a>(&'a self, channel: &'a ChannelName, client: ClientRecord) -> StoreFuture<'a, Registered> {
        Box::pin(async move {
            let json = StoredClient::of(&client).to_json();
            let created: i64 = self
                .scripts
                .register
                .key(keys::clients(channel))
                .key(keys::secrets(channel))
                .key(keys::streams(channel))
                .key(keys::IDLE)
                .key(keys::index(channel))
                .arg(client.public_token.as_str())
                .arg(client.private_token.as_str())
                .arg(json)
                .arg(keys::idle_member(channel, &client.public_token))
                .arg(idle_deadline(&client))
                .invoke_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            Ok(if created == 1 {
                Registered::Created(client)
            } else {
                Registered::Exists
            })
        })
    }

    fn client<'a>(
        &'a self,
        channel: &'a ChannelName,
        public: &'a PublicToken,
    ) -> StoreFuture<'a, Option<ClientRecord>> {
        Box::pin(self.client_now(channel, public))
    }

    fn client_by_secret<'a>(
        &'a self,
        channel: &'a ChannelName,
        secret: &'a str,
    ) -> StoreFuture<'a, Option<ClientRecord>> {
        Box::pin(async move {
            let public: Option<String> = self
                .connection()
                .hget(keys::secrets(channel), secret)
                .await
                .map_err(unavailable)?;
            match public.and_then(|p| PublicToken::parse(&p).ok()) {
                Some(public) => self.client_now(channel, &public).await,
                None => Ok(None),
            }
        })
    }

    fn clients<'a>(&'a self, channel: &'a ChannelName, page: &'a Page) -> StoreFuture<'a, Vec<ClientRecord>> {
        Box::pin(async move {
            let start = page
                .after
                .as_ref()
                .map_or_else(|| "-".to_owned(), |after| format!("({after}"));
            let flat: Vec<Vec<u8>> = self
                .scripts
                .list
                .key(keys::clients(channel))
                .key(keys::streams(channel))
                .key(keys::index(channel))
                .arg(start)
                .arg(page.limit)
                .invoke_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            Ok(flat
                .chunks_exact(3)
                .filter_map(|client| {
                    let public = PublicToken::parse(std::str::from_utf8(&client[0]).ok()?).ok()?;
                    let streams = std::str::from_utf8(&client[2]).ok()?.parse().unwrap_or(0);
                    record(public, &client[1], streams)
                })
                .collect())
        })
    }

    fn census<'a>(&'a self, channel: &'a ChannelName) -> StoreFuture<'a, Census> {
        Box::pin(async move {
            let (registered, streams): (usize, Vec<u32>) = redis::pipe()
                .hlen(keys::clients(channel))
                .hvals(keys::streams(channel))
                .query_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            Ok(Census {
                registered,
                connected: streams.iter().filter(|n| **n > 0).count(),
            })
        })
    }

    fn remove<'a>(
        &'a self,
        channel: &'a ChannelName,
        public: &'a PublicToken,
    ) -> StoreFuture<'a, Option<ClientRecord>> {
        Box::pin(async move {
            let removed: Option<(Vec<u8>, u32)> = self
                .scripts
                .remove
                .key(keys::clients(channel))
                .key(keys::secrets(channel))
                .key(keys::streams(channel))
                .key(keys::IDLE)
                .key(keys::index(channel))
                .arg(public.as_str())
                .arg(keys::idle_member(channel, public))
                .arg(keys::EVENTS)
                .arg(channel.as_str())
                .invoke_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            Ok(removed.and_then(|(json, streams)| record(public.clone(), &json, streams)))
        })
    }

    fn attach<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken) -> StoreFuture<'a, Option<bool>> {
        Box::pin(async move {
            let streams: i64 = self
                .scripts
                .attach
                .key(keys::clients(channel))
                .key(keys::streams(channel))
                .key(keys::IDLE)
                .arg(public.as_str())
                .arg(keys::idle_member(channel, public))
                .arg(Timestamp::now().0)
                .invoke_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            Ok((streams > 0).then_some(streams == 1))
        })
    }

    fn detach<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let Some(client) = self.client_now(channel, public).await? else {
                return Ok(false);
            };
            let last: i64 = self
                .scripts
                .detach
                .key(keys::clients(channel))
                .key(keys::streams(channel))
                .key(keys::IDLE)
                .arg(public.as_str())
                .arg(keys::idle_member(channel, public))
                .arg(idle_deadline(&client))
                .invoke_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            Ok(last == 1)
        })
    }

    fn expire(&self) -> StoreFuture<'_, Vec<(ChannelName, ClientRecord)>> {
        Box::pin(async move {
            let now = Timestamp::now();
            let due: Vec<String> = self
                .connection()
                .zrangebyscore_limit(keys::IDLE, "-inf", now.0, 0, EXPIRE_BATCH)
                .await
                .map_err(unavailable)?;
            let mut expired = Vec::new();
            for member in due {
                let Some((channel, public)) = keys::parse_idle_member(&member) else {
                    // Not one of ours: dropped, so it cannot hold up the others.
                    let _: i64 = self.connection().zrem(keys::IDLE, &member).await.map_err(unavailable)?;
                    continue;
                };
                if let Some(client) = self.claim_expired(&channel, &public, now).await? {
                    expired.push((channel, client));
                }
            }
            Ok(expired)
        })
    }
}
