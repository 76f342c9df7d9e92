//! The hub: publishing into the store, and subscriptions that replay history
//! and then follow the channel live.
//!
//! ```text
//! publish:   Hub::publish → MessageLog::append (position, encode once) → Feed (= Fanout) → Topic ring + kick
//! fan-out:   topic writer → one non-blocking write per parked (up-to-date) subscriber's socket
//! subscribe: Hub::subscribe → resume position from the log → stream: ring or log → bytes,
//!            then parked while up to date
//! ```
//!
//! | module | role |
//! |---|---|
//! | `topic` | the followed channels ([`Fanout`], the store's feed) and each one's writer task |
//! | `ring` | a topic's recent frames by position: push, take, holds_after |
//! | `direct` | parked subscribers and the writer's pass over their sockets |
//! | `subscription` | one stream: replay, live, heartbeats, timeout, failure frames |
//! | `resume` | where a stream starts, and its gap frame |
//! | `views`, `error` | what the hub answers with, and why it refuses |

mod direct;
mod error;
mod resume;
mod ring;
mod subscription;
mod topic;
mod views;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access::Access;
use crate::protocol::{ChannelName, Draft, MessageId, PublicToken, Registration, Sender};
use crate::store::{ClientRecord, Page, Registered, Store};

pub(crate) use direct::Outlet;
pub(crate) use error::HubError;
pub(crate) use subscription::SubscribeRequest;
pub(crate) use topic::Fanout;
pub(crate) use views::{ChannelInfo, ClientPage, ClientView, Health, Published, StoreHealth};

/// Stream behaviour the hub applies to every subscription.
#[derive(Debug, Clone)]
pub(crate) struct HubSettings {
    /// The `retry:` value of the preamble, in milliseconds.
    pub(crate) retry_ms: u64,
    /// Interval of heartbeat comments on an idle stream.
    pub(crate) heartbeat: Duration,
    /// Timeout of a stream that did not ask for one.
    pub(crate) default_timeout: Duration,
    /// Open streams allowed on this node.
    pub(crate) max_subscribers: usize,
    /// Messages read from the store per step of a replay.
    pub(crate) replay_batch: usize,
    /// Idle allowance of a client registered without one, in seconds.
    pub(crate) client_idle_seconds: u64,
}

/// A cheap-to-clone handle on the shared state.
#[derive(Clone)]
pub(crate) struct Hub {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("settings", &self.shared.settings)
            .finish_non_exhaustive()
    }
}

struct Shared {
    fanout: Arc<Fanout>,
    store: Store,
    settings: HubSettings,
    /// Policies: which channels announce presence.
    access: Arc<Access>,
    /// The server's tasks: work a closing stream leaves behind (detaching its
    /// client, announcing it) runs here, so the server waits for it at shutdown.
    tasks: TaskTracker,
    /// Open streams on this node, for the subscriber limit and `/healthz`.
    subscribers: AtomicUsize,
    /// Cancelled when the server shuts down: every stream ends.
    shutdown: CancellationToken,
    started: Instant,
}

impl Hub {
    /// A hub over `store`, whose feed must be `fanout`; streams end when
    /// `shutdown` is cancelled, and work they leave behind runs under `tasks`.
    pub(crate) fn new(
        settings: HubSettings,
        access: Arc<Access>,
        fanout: Arc<Fanout>,
        store: Store,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        Hub {
            shared: Arc::new(Shared {
                fanout,
                store,
                settings,
                access,
                tasks,
                subscribers: AtomicUsize::new(0),
                shutdown,
                started: Instant::now(),
            }),
        }
    }

    /// Drops expired history. Called periodically by the server.
    ///
    /// # Errors
    /// [`HubError::Store`] when the store cannot do it now.
    pub(crate) async fn sweep(&self) -> Result<(), HubError> {
        Ok(self.shared.store.log.sweep().await?)
    }

    /// Stores a message; live subscribers are woken before this returns, but it
    /// never waits for any of them.
    ///
    /// # Errors
    /// [`HubError::UnknownRecipient`] for a direct message to no client, and
    /// [`HubError::Store`] when the message could not be stored.
    pub(crate) async fn publish(&self, channel: &ChannelName, draft: Draft) -> Result<Published, HubError> {
        if let Some(to) = &draft.to {
            if self.shared.store.clients.client(channel, to).await?.is_none() {
                return Err(HubError::UnknownRecipient);
            }
        }
        let message = self.shared.store.log.append(channel, draft).await?;
        let id = MessageId {
            epoch: self.shared.store.log.epoch(),
            seq: message.seq,
        };
        Ok(Published {
            id: id.text(),
            channel: channel.clone(),
            time: message.time.to_string(),
        })
    }

    /// The channel's history bounds and subscriber count.
    ///
    /// # Errors
    /// [`HubError::Store`] when the store cannot answer.
    pub(crate) async fn info(&self, channel: &ChannelName) -> Result<ChannelInfo, HubError> {
        let history = self.shared.store.log.read(channel, 0, 0).await?;
        let census = self.shared.store.clients.census(channel).await?;
        let epoch = self.shared.store.log.epoch();
        let id = |seq| MessageId { epoch, seq }.to_string();
        Ok(ChannelInfo {
            channel: channel.clone(),
            first_id: history.first_seq.map(id),
            last_id: (history.last_seq > 0).then(|| id(history.last_seq)),
            history_size: history.retained,
            subscribers: self.shared.fanout.subscribers(channel),
            clients_registered: census.registered,
            clients_connected: census.connected,
        })
    }

    /// Registers a client; returns it with its private token (generated when the
    /// registration has none). Its idle allowance starts now.
    ///
    /// # Errors
    /// [`HubError::ClientExists`], or a store failure.
    pub(crate) async fn register(
        &self,
        channel: &ChannelName,
        registration: Registration,
    ) -> Result<(ClientView, String), HubError> {
        let settings = &self.shared.settings;
        // A direct message needs its recipient registered first, so every one
        // for this client will come after this position.
        let registered_after = self.shared.store.log.read(channel, 0, 0).await?.last_seq;
        let record = ClientRecord {
            public_token: registration.public_token,
            display_name: registration.display_name,
            private_token: registration
                .private_token
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            timeout_seconds: registration
                .connection_timeout_seconds
                .unwrap_or(settings.default_timeout.as_secs()),
            idle_seconds: registration
                .connection_idle_seconds
                .unwrap_or(settings.client_idle_seconds),
            streams: 0,
            idle_since: Some(crate::protocol::Timestamp::now()),
            registered_after,
        };
        match self.shared.store.clients.register(channel, record).await? {
            Registered::Created(client) => Ok((ClientView::of(channel, &client), client.private_token)),
            Registered::Exists => Err(HubError::ClientExists),
        }
    }

    /// One client, as presence shows it.
    ///
    /// # Errors
    /// [`HubError::UnknownClient`], or a store failure.
    pub(crate) async fn client(&self, channel: &ChannelName, public: &PublicToken) -> Result<ClientView, HubError> {
        match self.shared.store.clients.client(channel, public).await? {
            Some(client) => Ok(ClientView::of(channel, &client)),
            None => Err(HubError::UnknownClient),
        }
    }

    /// Up to `limit` clients of the channel after the public token `after`,
    /// ordered by public token, and where the next page starts if there is one.
    ///
    /// # Errors
    /// A store failure.
    pub(crate) async fn clients(
        &self,
        channel: &ChannelName,
        after: Option<PublicToken>,
        limit: usize,
    ) -> Result<ClientPage, HubError> {
        // One more than the page: whether it is there says whether another page follows.
        let page = Page {
            after,
            limit: limit.saturating_add(1),
        };
        let mut clients = self.shared.store.clients.clients(channel, &page).await?;
        let next = if clients.len() > limit {
            clients.truncate(limit);
            clients.last().map(|c| c.public_token.clone())
        } else {
            None
        };
        Ok(ClientPage {
            channel: channel.clone(),
            clients: clients.iter().map(|c| ClientView::of(channel, c)).collect(),
            next,
        })
    }

    /// The client whose private token this is, if any.
    ///
    /// # Errors
    /// A store failure.
    pub(crate) async fn authenticate(
        &self,
        channel: &ChannelName,
        secret: &str,
    ) -> Result<Option<ClientRecord>, HubError> {
        Ok(self.shared.store.clients.client_by_secret(channel, secret).await?)
    }

    /// Removes a client: its open streams get a `client_removed` failure frame
    /// and end; a connected client is announced as disconnected.
    ///
    /// # Errors
    /// [`HubError::UnknownClient`], or a store failure.
    pub(crate) async fn remove_client(&self, channel: &ChannelName, public: &PublicToken) -> Result<(), HubError> {
        let removed = self.shared.store.clients.remove(channel, public).await?;
        let client = removed.ok_or(HubError::UnknownClient)?;
        if client.streams > 0 {
            self.announce(channel, "client.disconnected", &client).await;
        }
        Ok(())
    }

    /// Removes clients idle past their allowance, announcing each on channels
    /// with presence. Called periodically by the server.
    ///
    /// # Errors
    /// A store failure.
    pub(crate) async fn expire_clients(&self) -> Result<usize, HubError> {
        let expired = self.shared.store.clients.expire().await?;
        for (channel, client) in &expired {
            self.announce(channel, "client.expired", client).await;
        }
        Ok(expired.len())
    }

    /// Sends a presence event, if the channel has presence on. A failure is
    /// logged, not returned: presence is a report about an action that happened.
    async fn announce(&self, channel: &ChannelName, name: &str, client: &ClientRecord) {
        if !self.shared.access.policy(channel).presence {
            return;
        }
        let sender = Sender {
            public_token: client.public_token.clone(),
            display_name: client.display_name.clone(),
        };
        let contents = serde_json::to_value(&sender).expect("a sender serialises");
        if let Err(error) = self
            .shared
            .store
            .log
            .append(channel, Draft::system(name, &contents))
            .await
        {
            tracing::warn!(%channel, event = name, %error, "presence event not stored");
        }
    }

    /// The server's state for `/healthz`.
    pub(crate) async fn health(&self) -> Health {
        let store_up = self.shared.store.log.check().await.is_ok();
        let status = if self.shared.shutdown.is_cancelled() {
            "shutting_down"
        } else if store_up {
            "ok"
        } else {
            "degraded"
        };
        Health {
            status,
            store: StoreHealth {
                kind: self.shared.store.log.kind(),
                status: if store_up { "up" } else { "down" },
            },
            version: env!("CARGO_PKG_VERSION"),
            uptime_seconds: self.shared.started.elapsed().as_secs(),
            subscribers: self.shared.subscribers.load(Ordering::Relaxed),
        }
    }

    /// Opens a stream on `channel`: the preamble, a gap frame when the resume
    /// position cannot be honoured, the replay, then live messages.
    ///
    /// # Errors
    /// [`HubError::ShuttingDown`], [`HubError::TooManySubscribers`], or a store
    /// failure while finding the resume position.
    pub(crate) async fn subscribe(
        &self,
        channel: ChannelName,
        request: SubscribeRequest,
    ) -> Result<impl Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + Sync + 'static, HubError> {
        subscription::open(self.clone(), channel, request).await
    }

    /// The whole stream of a subscriber whose error was found before its
    /// stream opened: the preamble and one failure frame.
    pub(crate) fn failure_stream(&self, code: &str, message: &str) -> Bytes {
        subscription::failure_only(self.shared.settings.retry_ms, code, message)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;
    use crate::config::StoreChoice;
    use crate::store::{self, Retention};

    async fn hub() -> Hub {
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let fanout = Fanout::new(16, tasks.clone());
        let retention = Retention {
            max_messages: 100,
            max_age: Duration::from_secs(3600),
        };
        let store = store::open(&StoreChoice::Memory, retention, fanout.clone(), &tasks, &stop)
            .await
            .unwrap();
        let settings = HubSettings {
            retry_ms: 2000,
            heartbeat: Duration::from_secs(15),
            default_timeout: Duration::from_secs(60),
            max_subscribers: 10,
            replay_batch: 64,
            client_idle_seconds: 60,
        };
        let access = Arc::new(Access::new(Vec::new(), Vec::new(), Vec::new()));
        Hub::new(settings, access, fanout, store, tasks, stop)
    }

    /// A stream whose transport cannot lend its socket (no outlet: an HTTP/2
    /// stream, say) is pulled: woken by its topic's writer, it reads the ring
    /// itself, and gets every message, in order.
    #[tokio::test]
    async fn a_stream_without_an_outlet_is_pulled() {
        let hub = hub().await;
        let channel = ChannelName::parse("pulled").unwrap();
        let stream = hub
            .subscribe(channel.clone(), SubscribeRequest::default())
            .await
            .unwrap();
        let mut stream = std::pin::pin!(stream);
        let preamble = stream.next().await.unwrap().unwrap();
        assert!(preamble.starts_with(b"retry: 2000\n"));
        let mut ids = Vec::new();
        for i in 0..3 {
            let draft = Draft::system("n", &serde_json::json!(i));
            ids.push(hub.publish(&channel, draft).await.unwrap().id);
        }
        let mut received = String::new();
        while !ids.iter().all(|id| received.contains(&format!("id: {id}\n"))) {
            let chunk = tokio::time::timeout(Duration::from_secs(5), stream.next())
                .await
                .expect("the pulled stream was woken")
                .unwrap()
                .unwrap();
            received.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        let positions: Vec<usize> = ids.iter().map(|id| received.find(id.as_str()).unwrap()).collect();
        assert!(positions.windows(2).all(|pair| pair[0] < pair[1]), "{received}");
    }
}
