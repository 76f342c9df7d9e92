//! What the hub answers with: the bodies of `protocol/` as Rust values.

use serde::Serialize;

use crate::protocol::{ChannelName, PublicToken};
use crate::store::ClientRecord;

/// What a send returns: the stored message's id and time.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Published {
    /// The new message's id.
    pub(crate) id: String,
    /// Its channel.
    pub(crate) channel: ChannelName,
    /// When it was stored.
    pub(crate) time: String,
}

/// `GET /channels/{channel}`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ChannelInfo {
    /// The channel.
    pub(crate) channel: ChannelName,
    /// The oldest retained message.
    pub(crate) first_id: Option<String>,
    /// The newest message.
    pub(crate) last_id: Option<String>,
    /// Messages retained.
    pub(crate) history_size: usize,
    /// Open streams on this node.
    pub(crate) subscribers: usize,
    /// Registered clients of the channel.
    pub(crate) clients_registered: usize,
    /// Registered clients with at least one open stream.
    pub(crate) clients_connected: usize,
}

/// A client as presence shows it (`client.schema.json`): never its private token.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClientView {
    /// Its channel.
    pub(crate) channel: ChannelName,
    /// How others address it.
    pub(crate) public_token: PublicToken,
    /// Its display name.
    pub(crate) display_name: Option<String>,
    /// Whether a stream of it is open now.
    pub(crate) connected: bool,
    /// Its streams' timeout.
    pub(crate) connection_timeout_seconds: u64,
    /// How long it is kept with no open stream.
    pub(crate) connection_idle_seconds: u64,
}

impl ClientView {
    pub(super) fn of(channel: &ChannelName, client: &ClientRecord) -> Self {
        ClientView {
            channel: channel.clone(),
            public_token: client.public_token.clone(),
            display_name: client.display_name.clone(),
            connected: client.streams > 0,
            connection_timeout_seconds: client.timeout_seconds,
            connection_idle_seconds: client.idle_seconds,
        }
    }
}

/// One page of the presence list (`client-list.schema.json`).
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ClientPage {
    /// The channel.
    pub(crate) channel: ChannelName,
    /// Its clients in the page, ordered by public token.
    pub(crate) clients: Vec<ClientView>,
    /// Where the next page starts, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) next: Option<PublicToken>,
}

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Health {
    /// `ok`, `degraded` (store down) or `shutting_down`.
    pub(crate) status: &'static str,
    /// The store's kind and state.
    pub(crate) store: StoreHealth,
    /// This build's version.
    pub(crate) version: &'static str,
    /// Seconds since start.
    pub(crate) uptime_seconds: u64,
    /// Open streams on this node.
    pub(crate) subscribers: usize,
}

/// Part of [`Health`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct StoreHealth {
    /// Which store.
    pub(crate) kind: &'static str,
    /// `up` or `down`.
    pub(crate) status: &'static str,
}
