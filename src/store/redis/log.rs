//! The message log in Redis: `append.lua` and `read.lua` (see the module
//! documentation for the layout).

use std::sync::Arc;

use super::{epoch, keys, RedisStore};
use crate::protocol::{complete_envelope, ChannelName, Draft, Epoch, Message, MessageId, PublicToken, Timestamp};
use crate::store::{unavailable, History, MessageLog, StoreFuture};

/// The error code `append.lua` answers with when Redis has another epoch, or none.
const EPOCH_CHANGED: &str = "SSEHUB_EPOCH";

/// Entries of a stream as `XRANGE` returns them.
type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

impl RedisStore {
    /// Runs the append script under this node's epoch (an [`EPOCH_CHANGED`]
    /// error when Redis has another, or none).
    async fn append_in_epoch(&self, channel: &ChannelName, draft: &Draft) -> redis::RedisResult<Arc<Message>> {
        let epoch = self.epoch.get();
        let time = Timestamp::now();
        let rest = draft.envelope_rest(channel, time);
        let to = draft.to.as_ref().map_or("", PublicToken::as_str);
        let seq: u64 = self
            .scripts
            .append
            .key(keys::head(channel))
            .key(keys::log(channel))
            .key(keys::EPOCH)
            .arg(epoch.to_string())
            .arg(channel.as_str())
            .arg(self.retention.max_messages)
            .arg(time.0)
            .arg(to)
            .arg(rest.as_slice())
            .arg(self.retention.cutoff(time))
            .arg(keys::EVENTS)
            .invoke_async(&mut self.connection())
            .await?;
        let id = MessageId { epoch, seq }.text();
        let envelope = complete_envelope(&id, &rest);
        Ok(Arc::new(Message::from_envelope(
            epoch,
            seq,
            time,
            draft.to.clone(),
            &envelope,
        )))
    }
}

/// One entry of a channel's stream as a message.
fn parse_entry(epoch: Epoch, (id, fields): (String, Vec<(String, Vec<u8>)>)) -> Option<Arc<Message>> {
    let seq: u64 = id.split('-').next()?.parse().ok()?;
    let (mut time, mut to, mut envelope) = (0, None, Vec::new());
    for (name, value) in fields {
        match name.as_str() {
            "t" => time = std::str::from_utf8(&value).ok()?.parse().ok()?,
            "to" if !value.is_empty() => to = PublicToken::parse(std::str::from_utf8(&value).ok()?).ok(),
            "e" => envelope = value,
            _ => {}
        }
    }
    Some(Arc::new(Message::from_envelope(
        epoch,
        seq,
        Timestamp(time),
        to,
        &envelope,
    )))
}

impl MessageLog for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if !self.epoch.is_listening() {
                return Err(unavailable("not subscribed to redis notifications (yet)"));
            }
            let mut connection = self.connection();
            let _: String = redis::cmd("PING")
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            Ok(())
        })
    }

    fn epoch(&self) -> Epoch {
        self.epoch.get()
    }

    fn append<'a>(&'a self, channel: &'a ChannelName, draft: Draft) -> StoreFuture<'a, Arc<Message>> {
        Box::pin(async move {
            match self.append_in_epoch(channel, &draft).await {
                Err(error) if error.code() == Some(EPOCH_CHANGED) => {
                    // Redis lost its data: agree on a new epoch, then store the message in it.
                    self.epoch.adopt(epoch::agree(&mut self.connection()).await?);
                    self.append_in_epoch(channel, &draft).await.map_err(unavailable)
                }
                result => result.map_err(unavailable),
            }
        })
    }

    fn read<'a>(&'a self, channel: &'a ChannelName, after: u64, limit: usize) -> StoreFuture<'a, History> {
        Box::pin(async move {
            let (stored_epoch, last_seq, first, entries): (Option<String>, Option<u64>, Option<String>, Entries) = self
                .scripts
                .read
                .key(keys::EPOCH)
                .key(keys::head(channel))
                .key(keys::log(channel))
                .arg(self.retention.cutoff(Timestamp::now()))
                .arg(format!("{}-0", after.saturating_add(1)))
                .arg(limit)
                .invoke_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            match stored_epoch.as_deref().and_then(epoch::parse) {
                Some(stored) => self.epoch.adopt(stored),
                None => self.epoch.adopt(epoch::agree(&mut self.connection()).await?),
            }
            let epoch = self.epoch.get();
            let last_seq = last_seq.unwrap_or(0);
            let first_seq = first.and_then(|id| id.split('-').next()?.parse().ok());
            let messages = entries.into_iter().filter_map(|e| parse_entry(epoch, e)).collect();
            let retained = first_seq.map_or(0, |first| last_seq.saturating_sub(first).saturating_add(1));
            Ok(History {
                messages,
                first_seq,
                last_seq,
                retained: usize::try_from(retained).unwrap_or(usize::MAX),
            })
        })
    }

    fn sweep(&self) -> StoreFuture<'_, ()> {
        // The append script trims as it goes and reads skip expired entries;
        // idle channels' old entries go when their key is next written. Nothing
        // periodic to do that would be worth a SCAN of the keyspace.
        Box::pin(std::future::ready(Ok(())))
    }
}
