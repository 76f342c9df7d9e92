//! Many nodes, one service: state in Redis, shared by every ssehub process
//! pointed at it.
//!
//! - History ([`log`]): one Redis stream per channel, entry id `<seq>-0`,
//!   fields `t` (time, ms), `to` (recipient or empty), `e` (envelope).
//!   Positions come from the channel's head counter inside the same script
//!   that adds the entry (`append.lua`), so they are unique and ordered across
//!   nodes, and the script completes the envelope with its id there
//!   (`{"id":"<id>",` + the rest the node encoded). The stream is capped with
//!   `MAXLEN` (count) and trimmed from the front by age. The head counter
//!   outlives the history, so an id is never issued twice.
//! - Live fan-out ([`listener`]): the same script `PUBLISH`es the message on
//!   one Redis channel; each node holds one subscription to it (not one per
//!   browser) and hands every message to its hub. Scripts run one at a time and
//!   Redis delivers a connection's messages in order, so every node sees each
//!   channel's messages in position order.
//! - Clients ([`clients`]): hashes per channel for registrations, secrets and
//!   open-stream counts, a sorted index of public tokens per channel (so a
//!   page of the presence list reads only that page: `list.lua`), and one
//!   sorted set of idle deadlines; every change is one script, so two nodes
//!   never half-apply one. Expiry claims each due
//!   client atomically, so exactly one node announces it.
//! - Keys ([`keys`]): every key a script touches is passed through `KEYS`.
//! - Faults: a command that fails answers `StoreError::Unavailable` (503). When
//!   the subscription drops, the node ends its open streams (clients reconnect
//!   and resume) and resubscribes with backoff.
//! - Epoch ([`epoch`]): drawn by the first node. If Redis comes back without
//!   its data (no persistence), the key is gone with the history and the
//!   counters: the append script refuses to issue ids under the old epoch
//!   (error code `SSEHUB_EPOCH`), and the nodes agree on a new one, so an id is
//!   never issued twice and clients holding old ids get a gap frame
//!   (`other_epoch`).

mod clients;
mod epoch;
mod keys;
mod listener;
mod log;
mod scripts;

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::epoch::SharedEpoch;
use self::scripts::Scripts;
use super::{unavailable, Feed, Retention, StoreError};

/// How long a command may take before the store counts as unavailable.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// See the module documentation.
pub(super) struct RedisStore {
    connection: ConnectionManager,
    epoch: Arc<SharedEpoch>,
    retention: Retention,
    scripts: Scripts,
    /// Stops the listener when the store is dropped (it also stops with the server).
    stop: CancellationToken,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl RedisStore {
    /// Connects, agrees on the epoch with the other nodes (the first one to
    /// start draws it), and starts this node's one subscription under `tasks`;
    /// answers once live fan-out works.
    ///
    /// # Errors
    /// An invalid URL, or Redis unreachable at start.
    pub(super) async fn open(
        url: &str,
        retention: Retention,
        feed: Arc<dyn Feed>,
        tasks: &TaskTracker,
        server_stop: &CancellationToken,
    ) -> Result<Self, StoreError> {
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
        let epoch = Arc::new(SharedEpoch::new(
            epoch::agree(&mut connection).await?,
            Arc::clone(&feed),
        ));
        let stop = server_stop.child_token();
        let (ready, subscribed) = oneshot::channel();
        tasks.spawn(listener::listen(client, Arc::clone(&epoch), feed, ready, stop.clone()));
        if !matches!(tokio::time::timeout(COMMAND_TIMEOUT, subscribed).await, Ok(Ok(()))) {
            stop.cancel();
            return Err(unavailable("could not subscribe to redis notifications"));
        }
        Ok(RedisStore {
            connection,
            epoch,
            retention,
            scripts: Scripts::load(),
            stop,
        })
    }

    /// A handle on the shared connection (a clone is cheap and multiplexed).
    fn connection(&self) -> ConnectionManager {
        self.connection.clone()
    }
}
