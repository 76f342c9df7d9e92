//! Many nodes, one service: state in Redis, shared by every ssehub process
//! pointed at it.
//!
//! - History: one Redis stream per channel (`ssehub:log:{channel}`), entry id
//!   `<seq>-0`, fields `t` (time, ms), `to` (recipient or empty), `e` (envelope).
//!   Positions come from `INCR ssehub:head:{channel}` inside the same Lua script
//!   that adds the entry, so they are unique and ordered across nodes, and the
//!   script completes the envelope with its id there (`{"id":"<id>",` + the rest
//!   the node encoded). The stream is capped with `MAXLEN` (count) and trimmed
//!   from the front by age. The head counter outlives the history, so an id is
//!   never issued twice.
//! - Live fan-out: the same script `PUBLISH`es the message on one Redis channel,
//!   `ssehub:events`; each node holds one subscription to it (not one per
//!   browser) and hands every message to its hub. Scripts run one at a time and
//!   Redis delivers a connection's messages in order, so every node sees each
//!   channel's messages in position order.
//! - Clients: hashes per channel for registrations, secrets and open-stream
//!   counts, and one sorted set of idle deadlines; every change is one script,
//!   so two nodes never half-apply one. Expiry claims due clients atomically,
//!   so exactly one node announces each.
//! - Faults: a command that fails answers `StoreError::Unavailable` (503). When
//!   the subscription drops, the node ends its open streams (clients reconnect
//!   and resume) and resubscribes with backoff.
//! - Epoch: `ssehub:epoch`, drawn by the first node. If Redis comes back
//!   without its data (no persistence), the key is gone with the history and
//!   the counters: the append script refuses to issue ids under the old epoch,
//!   and the nodes agree on a new one, so an id is never issued twice and
//!   clients holding old ids get a gap frame (`other_epoch`).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, Script, Value};
use tokio_util::sync::CancellationToken;

use super::{ClientRecord, Feed, History, Registered, Retention, Store, StoreError, StoreFuture, StoredClient};
use crate::protocol::{complete_envelope, ChannelName, Draft, Epoch, Message, MessageId, PublicToken, Timestamp};

/// The Redis pub/sub channel every node subscribes to.
const EVENTS: &str = "ssehub:events";
const EPOCH_KEY: &str = "ssehub:epoch";
const IDLE_KEY: &str = "ssehub:idle";

/// How long a command may take before the store counts as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Appends one message: position, entry, count cap, a few expired entries
/// dropped from the front, and the notification to every node.
const APPEND: &str = r#"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return redis.error_reply('SSEHUB_EPOCH the epoch changed') end
local seq = redis.call('INCR', KEYS[1])
local envelope = '{"id":"' .. ARGV[1] .. '-' .. seq .. '",' .. ARGV[6]
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], seq .. '-0', 't', ARGV[4], 'to', ARGV[5], 'e', envelope)
local front = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 8)
for _, entry in ipairs(front) do
  if tonumber(entry[2][2]) < tonumber(ARGV[7]) then redis.call('XDEL', KEYS[2], entry[1]) else break end
end
redis.call('PUBLISH', ARGV[8], 'm\n' .. ARGV[2] .. '\n' .. ARGV[1] .. '\n' .. seq .. '\n' .. ARGV[4] .. '\n' .. ARGV[5] .. '\n' .. envelope)
return seq
"#;

/// Reads a channel: the epoch, the head, the oldest retained position (dropping
/// expired entries from the front first), and up to ARGV[3] entries from ARGV[2].
const READ: &str = r#"
local epoch = redis.call('GET', KEYS[1])
local head = redis.call('GET', KEYS[2])
local first = false
repeat
  local front = redis.call('XRANGE', KEYS[3], '-', '+', 'COUNT', 64)
  local more = #front == 64
  for _, entry in ipairs(front) do
    if tonumber(entry[2][2]) < tonumber(ARGV[1]) then
      redis.call('XDEL', KEYS[3], entry[1])
    else
      first = entry[1]
      more = false
      break
    end
  end
until not more
local entries = {}
if tonumber(ARGV[3]) > 0 then entries = redis.call('XRANGE', KEYS[3], ARGV[2], '+', 'COUNT', ARGV[3]) end
return {epoch, head, first, entries}
"#;

/// Registers unless the public or private token is taken; the idle clock starts.
const REGISTER: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], ARGV[1], 0)
redis.call('ZADD', KEYS[4], ARGV[5], ARGV[4])
return 1
"#;

/// Removes a client and tells every node; returns its record and stream count.
const REMOVE: &str = r#"
local json = redis.call('HGET', KEYS[1], ARGV[1])
if not json then return false end
local streams = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], cjson.decode(json)['private_token'])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[2])
redis.call('PUBLISH', ARGV[3], 'r\n' .. ARGV[4] .. '\n' .. ARGV[1])
return {json, streams}
"#;

/// One more stream: -1 when the client is gone or idled out, else the count.
const ATTACH: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return -1 end
local deadline = redis.call('ZSCORE', KEYS[3], ARGV[2])
if deadline and tonumber(deadline) <= tonumber(ARGV[3]) then return -1 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
if n == 1 then redis.call('ZREM', KEYS[3], ARGV[2]) end
return n
"#;

/// One stream fewer: 1 when it was the last (the idle clock starts), else 0.
const DETACH: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
if n > 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], 0)
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[2])
return 1
"#;

/// Claims every client whose idle deadline passed: removed here, returned once.
const EXPIRE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, 256)
local out = {}
for _, member in ipairs(due) do
  redis.call('ZREM', KEYS[1], member)
  local split = string.find(member, '\n', 1, true)
  local channel = string.sub(member, 1, split - 1)
  local public = string.sub(member, split + 1)
  local clients = 'ssehub:clients:' .. channel
  local json = redis.call('HGET', clients, public)
  if json then
    redis.call('HDEL', clients, public)
    redis.call('HDEL', 'ssehub:secrets:' .. channel, cjson.decode(json)['private_token'])
    redis.call('HDEL', 'ssehub:streams:' .. channel, public)
    table.insert(out, channel)
    table.insert(out, public)
    table.insert(out, json)
  end
end
return out
"#;

fn unavailable(error: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn head_key(channel: &ChannelName) -> String {
    format!("ssehub:head:{channel}")
}
fn log_key(channel: &ChannelName) -> String {
    format!("ssehub:log:{channel}")
}
fn clients_key(channel: &ChannelName) -> String {
    format!("ssehub:clients:{channel}")
}
fn secrets_key(channel: &ChannelName) -> String {
    format!("ssehub:secrets:{channel}")
}
fn streams_key(channel: &ChannelName) -> String {
    format!("ssehub:streams:{channel}")
}
/// A client's member in the idle set: channel and public token cannot contain a newline.
fn idle_member(channel: &ChannelName, public: &PublicToken) -> String {
    format!("{channel}\n{public}")
}

struct Scripts {
    append: Script,
    read: Script,
    register: Script,
    remove: Script,
    attach: Script,
    detach: Script,
    expire: Script,
}

/// See the module documentation.
pub struct RedisStore {
    connection: ConnectionManager,
    epoch: Arc<SharedEpoch>,
    retention: Retention,
    scripts: Scripts,
    /// Stops the subscription task when the store is dropped.
    stop: CancellationToken,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("epoch", &self.epoch.get())
            .finish_non_exhaustive()
    }
}

/// The epoch this node issues and reads ids in, replaced when Redis has a new one.
struct SharedEpoch {
    current: AtomicU32,
    /// Whether this node's subscription to `ssehub:events` is up: without it,
    /// live fan-out is off, so the store reports itself down.
    listening: AtomicBool,
    feed: Arc<dyn Feed>,
}

impl SharedEpoch {
    fn get(&self) -> Epoch {
        Epoch(self.current.load(Ordering::Acquire))
    }

    /// Takes on `epoch`; if it is new, open streams end (their positions mean
    /// nothing in it) and their clients resume with a gap frame.
    fn adopt(&self, epoch: Epoch) {
        let previous = self.current.swap(epoch.0, Ordering::AcqRel);
        if previous != epoch.0 {
            tracing::warn!(old = %Epoch(previous), new = %epoch, "redis has a new epoch (its data was lost); streams restart");
            self.feed.store_interrupted();
        }
    }
}

/// Agrees on the epoch with the other nodes: the first to ask draws it.
async fn agree_on_epoch(connection: &mut ConnectionManager) -> Result<Epoch, StoreError> {
    let candidate = Epoch::random().to_string();
    let _: bool = connection.set_nx(EPOCH_KEY, &candidate).await.map_err(unavailable)?;
    let stored: String = connection.get(EPOCH_KEY).await.map_err(unavailable)?;
    u32::from_str_radix(&stored, 16)
        .map(Epoch)
        .map_err(|_| unavailable("ssehub:epoch is not an ssehub epoch"))
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RedisStore {
    /// Connects, agrees on the epoch with the other nodes (the first one to
    /// start draws it), and starts the one subscription of this node.
    ///
    /// # Errors
    /// An invalid URL, or Redis unreachable at start.
    pub async fn open(url: &str, retention: Retention, feed: Arc<dyn Feed>) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let mut connection = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(unavailable)?;
        let epoch = agree_on_epoch(&mut connection).await?;
        let epoch = Arc::new(SharedEpoch {
            current: AtomicU32::new(epoch.0),
            listening: AtomicBool::new(false),
            feed: Arc::clone(&feed),
        });
        let stop = CancellationToken::new();
        tokio::spawn(listen(client, Arc::clone(&epoch), feed, stop.clone()));
        // Serve only once live fan-out works.
        let started = tokio::time::Instant::now();
        while !epoch.listening.load(Ordering::Acquire) {
            if started.elapsed() > COMMAND_TIMEOUT {
                stop.cancel();
                return Err(unavailable("could not subscribe to redis notifications"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let scripts = Scripts {
            append: Script::new(APPEND),
            read: Script::new(READ),
            register: Script::new(REGISTER),
            remove: Script::new(REMOVE),
            attach: Script::new(ATTACH),
            detach: Script::new(DETACH),
            expire: Script::new(EXPIRE),
        };
        Ok(RedisStore {
            connection,
            epoch,
            retention,
            scripts,
            stop,
        })
    }

    /// Runs the append script under this node's epoch (an `SSEHUB_EPOCH` error
    /// when Redis has another, or none).
    async fn append_in_epoch(&self, channel: &ChannelName, draft: &Draft) -> redis::RedisResult<Arc<Message>> {
        let epoch = self.epoch.get();
        let time = Timestamp::now();
        let rest = draft.envelope_rest(channel, time);
        let to = draft.to.as_ref().map_or("", PublicToken::as_str);
        let seq: u64 = self
            .scripts
            .append
            .key(head_key(channel))
            .key(log_key(channel))
            .key(EPOCH_KEY)
            .arg(epoch.to_string())
            .arg(channel.as_str())
            .arg(self.retention.max_messages)
            .arg(time.0)
            .arg(to)
            .arg(rest.as_slice())
            .arg(self.cutoff())
            .arg(EVENTS)
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

    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }

    fn cutoff(&self) -> u64 {
        Timestamp::now()
            .0
            .saturating_sub(self.retention.max_age.as_millis() as u64)
    }

    /// A registration read back; idle clocks live in the idle set, not here.
    fn record(public: PublicToken, json: &[u8], streams: u32) -> Option<ClientRecord> {
        StoredClient::parse(json, public, streams, None)
    }

    async fn client_now(
        &self,
        channel: &ChannelName,
        public: &PublicToken,
    ) -> Result<Option<ClientRecord>, StoreError> {
        let mut connection = self.connection();
        let (json, streams): (Option<Vec<u8>>, Option<u32>) = redis::pipe()
            .hget(clients_key(channel), public.as_str())
            .hget(streams_key(channel), public.as_str())
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        Ok(json.and_then(|json| Self::record(public.clone(), &json, streams.unwrap_or(0))))
    }
}

/// A Redis hash as `HGETALL` returns it.
type Hash<V> = Vec<(String, V)>;

/// Entries of a stream as `XRANGE` returns them.
type Entries = Vec<(String, Vec<(String, Vec<u8>)>)>;

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

/// The node's one subscription: every stored message and client removal, from
/// every node, handed to the hub. Reconnects with backoff; while it is down the
/// hub ends its streams, so no subscriber waits for messages that cannot come.
async fn listen(client: redis::Client, epoch: Arc<SharedEpoch>, feed: Arc<dyn Feed>, stop: CancellationToken) {
    let mut backoff = Duration::from_millis(100);
    let mut first = true;
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(EVENTS).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            pubsub = session => pubsub,
            () = stop.cancelled() => return,
        };
        match pubsub {
            Ok(mut pubsub) => {
                backoff = Duration::from_millis(100);
                if !first {
                    // Streams opened while notifications were off may have missed
                    // some: end them too, so their clients resume from the store.
                    feed.store_interrupted();
                }
                first = false;
                epoch.listening.store(true, Ordering::Release);
                tracing::info!("subscribed to redis notifications");
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        () = stop.cancelled() => return,
                    };
                    match message {
                        Some(message) => dispatch(&epoch, &*feed, message.get_payload_bytes()),
                        None => break,
                    }
                }
                tracing::warn!("redis notification subscription lost; ending streams so clients resume");
            }
            Err(error) => tracing::warn!(%error, "cannot subscribe to redis notifications"),
        }
        epoch.listening.store(false, Ordering::Release);
        feed.store_interrupted();
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Decodes one notification: `m\n<channel>\n<epoch>\n<seq>\n<time>\n<to>\n<envelope>`
/// or `r\n<channel>\n<public token>`.
fn dispatch(epoch: &SharedEpoch, feed: &dyn Feed, payload: &[u8]) {
    let mut parts = payload.splitn(7, |b| *b == b'\n');
    let kind = parts.next();
    let channel = parts
        .next()
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| ChannelName::parse(c).ok());
    let Some(channel) = channel else { return };
    match kind {
        Some(b"m") => {
            let mut text = || parts.next().and_then(|p| std::str::from_utf8(p).ok());
            let (Some(issued), Some(seq), Some(time), Some(to)) = (text(), text(), text(), text()) else {
                return;
            };
            let (Ok(issued), Ok(seq), Ok(time)) = (u32::from_str_radix(issued, 16), seq.parse(), time.parse()) else {
                return;
            };
            epoch.adopt(Epoch(issued));
            let to = if to.is_empty() {
                None
            } else {
                PublicToken::parse(to).ok()
            };
            let Some(envelope) = parts.next() else { return };
            let message = Message::from_envelope(Epoch(issued), seq, Timestamp(time), to, envelope);
            feed.deliver(&channel, &Arc::new(message));
        }
        Some(b"r") => {
            let public = parts
                .next()
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| PublicToken::parse(p).ok());
            if let Some(public) = public {
                feed.client_removed(&channel, &public);
            }
        }
        _ => {}
    }
}

impl Store for RedisStore {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn epoch(&self) -> Epoch {
        self.epoch.get()
    }

    fn append<'a>(&'a self, channel: &'a ChannelName, draft: Draft) -> StoreFuture<'a, Arc<Message>> {
        Box::pin(async move {
            match self.append_in_epoch(channel, &draft).await {
                Err(error) if error.to_string().contains("SSEHUB_EPOCH") => {
                    // Redis lost its data: agree on a new epoch, then store the message in it.
                    self.epoch.adopt(agree_on_epoch(&mut self.connection()).await?);
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
                .key(EPOCH_KEY)
                .key(head_key(channel))
                .key(log_key(channel))
                .arg(self.cutoff())
                .arg(format!("{}-0", after.saturating_add(1)))
                .arg(limit)
                .invoke_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            match stored_epoch.and_then(|e| u32::from_str_radix(&e, 16).ok()) {
                Some(stored) => self.epoch.adopt(Epoch(stored)),
                None => self.epoch.adopt(agree_on_epoch(&mut self.connection()).await?),
            }
            let epoch = self.epoch.get();
            let last_seq = last_seq.unwrap_or(0);
            let first_seq = first.and_then(|id| id.split('-').next()?.parse().ok());
            let messages = entries.into_iter().filter_map(|e| parse_entry(epoch, e)).collect();
            let retained = first_seq.map_or(0, |first| (last_seq.saturating_sub(first) + 1) as usize);
            Ok(History {
                messages,
                first_seq,
                last_seq,
                retained,
            })
        })
    }

    fn check(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if !self.epoch.listening.load(Ordering::Acquire) {
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

    fn sweep(&self) -> StoreFuture<'_, ()> {
        // The append script trims as it goes and reads skip expired entries;
        // idle channels' old entries go when their key is next written. Nothing
        // periodic to do that would be worth a SCAN of the keyspace.
        Box::pin(std::future::ready(Ok(())))
    }

    fn register<'a>(&'a self, channel: &'a ChannelName, client: ClientRecord) -> StoreFuture<'a, Registered> {
        Box::pin(async move {
            let stored = StoredClient::of(&client);
            let json = stored.to_json();
            let deadline = Timestamp::now().0 + client.idle_seconds * 1000;
            let created: i64 = self
                .scripts
                .register
                .key(clients_key(channel))
                .key(secrets_key(channel))
                .key(streams_key(channel))
                .key(IDLE_KEY)
                .arg(client.public_token.as_str())
                .arg(client.private_token.as_str())
                .arg(json)
                .arg(idle_member(channel, &client.public_token))
                .arg(deadline)
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
                .hget(secrets_key(channel), secret)
                .await
                .map_err(unavailable)?;
            match public.and_then(|p| PublicToken::parse(&p).ok()) {
                Some(public) => self.client_now(channel, &public).await,
                None => Ok(None),
            }
        })
    }

    fn clients<'a>(&'a self, channel: &'a ChannelName) -> StoreFuture<'a, Vec<ClientRecord>> {
        Box::pin(async move {
            let mut connection = self.connection();
            let (records, streams): (Hash<Vec<u8>>, Hash<u32>) = redis::pipe()
                .hgetall(clients_key(channel))
                .hgetall(streams_key(channel))
                .query_async(&mut connection)
                .await
                .map_err(unavailable)?;
            let mut clients: Vec<ClientRecord> = records
                .into_iter()
                .filter_map(|(public, json)| {
                    let count = streams.iter().find(|(p, _)| *p == public).map_or(0, |(_, n)| *n);
                    Self::record(PublicToken::parse(&public).ok()?, &json, count)
                })
                .collect();
            clients.sort_by(|a, b| a.public_token.cmp(&b.public_token));
            Ok(clients)
        })
    }

    fn remove_client<'a>(
        &'a self,
        channel: &'a ChannelName,
        public: &'a PublicToken,
    ) -> StoreFuture<'a, Option<ClientRecord>> {
        Box::pin(async move {
            let removed: Option<(Vec<u8>, u32)> = self
                .scripts
                .remove
                .key(clients_key(channel))
                .key(secrets_key(channel))
                .key(streams_key(channel))
                .key(IDLE_KEY)
                .arg(public.as_str())
                .arg(idle_member(channel, public))
                .arg(EVENTS)
                .arg(channel.as_str())
                .invoke_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            Ok(removed.and_then(|(json, streams)| Self::record(public.clone(), &json, streams)))
        })
    }

    fn attach<'a>(&'a self, channel: &'a ChannelName, public: &'a PublicToken) -> StoreFuture<'a, Option<bool>> {
        Box::pin(async move {
            let streams: i64 = self
                .scripts
                .attach
                .key(clients_key(channel))
                .key(streams_key(channel))
                .key(IDLE_KEY)
                .arg(public.as_str())
                .arg(idle_member(channel, public))
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
            let deadline = Timestamp::now().0 + client.idle_seconds * 1000;
            let last: i64 = self
                .scripts
                .detach
                .key(clients_key(channel))
                .key(streams_key(channel))
                .key(IDLE_KEY)
                .arg(public.as_str())
                .arg(idle_member(channel, public))
                .arg(deadline)
                .invoke_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            Ok(last == 1)
        })
    }

    fn expire_clients(&self) -> StoreFuture<'_, Vec<(ChannelName, ClientRecord)>> {
        Box::pin(async move {
            let claimed: Vec<Value> = self
                .scripts
                .expire
                .key(IDLE_KEY)
                .arg(Timestamp::now().0)
                .invoke_async(&mut self.connection())
                .await
                .map_err(unavailable)?;
            let text = |value: &Value| match value {
                Value::BulkString(bytes) => Some(bytes.clone()),
                _ => None,
            };
            let mut expired = Vec::new();
            for triple in claimed.chunks(3) {
                let [channel, public, json] = triple else { continue };
                let (Some(channel), Some(public), Some(json)) = (text(channel), text(public), text(json)) else {
                    continue;
                };
                let channel = String::from_utf8_lossy(&channel).into_owned();
                let public = String::from_utf8_lossy(&public).into_owned();
                let (Ok(channel), Ok(public)) = (ChannelName::parse(&channel), PublicToken::parse(&public)) else {
                    continue;
                };
                if let Some(client) = Self::record(public, &json, 0) {
                    expired.push((channel, client));
                }
            }
            Ok(expired)
        })
    }
}
