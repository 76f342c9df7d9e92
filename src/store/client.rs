//! A registered client as the stores keep it, and what a registration returns.

use crate::protocol::{PublicToken, Timestamp};

/// A registered client as the store keeps it.
#[derive(Clone)]
pub(crate) struct ClientRecord {
    /// How others address it.
    pub(crate) public_token: PublicToken,
    /// Shown in presence and in `from`.
    pub(crate) display_name: Option<String>,
    /// The secret it subscribes and sends with. Never logged (see `Debug`).
    pub(crate) private_token: String,
    /// Its streams' timeout.
    pub(crate) timeout_seconds: u64,
    /// How long it is kept with no open stream.
    pub(crate) idle_seconds: u64,
    /// Streams open now, on every node.
    pub(crate) streams: u32,
    /// When its last stream closed (or it was registered), while it has none.
    pub(crate) idle_since: Option<Timestamp>,
    /// The channel's last position when it was registered: a stream of it that
    /// gives no resume position starts after this, so nothing sent to it since
    /// its registration is missed, first connection included.
    pub(crate) registered_after: u64,
}

impl std::fmt::Debug for ClientRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientRecord")
            .field("public_token", &self.public_token)
            .field("display_name", &self.display_name)
            .field("streams", &self.streams)
            .finish_non_exhaustive()
    }
}

impl ClientRecord {
    /// Whether it has stayed away longer than its idle allowance at `now`.
    pub(crate) fn is_expired(&self, now: Timestamp) -> bool {
        self.idle_since
            .is_some_and(|since| now.0.saturating_sub(since.0) >= self.idle_seconds.saturating_mul(1000))
    }
}

/// A registration as the durable stores keep it (as JSON): what survives a
/// restart, without the per-process stream count and idle clock.
#[derive(serde::Serialize, serde::Deserialize)]
pub(crate) struct StoredClient {
    display_name: Option<String>,
    private_token: String,
    timeout_seconds: u64,
    idle_seconds: u64,
    #[serde(default)]
    registered_after: u64,
}

impl StoredClient {
    pub(crate) fn of(client: &ClientRecord) -> Self {
        StoredClient {
            display_name: client.display_name.clone(),
            private_token: client.private_token.clone(),
            timeout_seconds: client.timeout_seconds,
            idle_seconds: client.idle_seconds,
            registered_after: client.registered_after,
        }
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a registration serialises")
    }

    /// Back to a record; `None` for JSON that is not a registration.
    pub(crate) fn parse(
        json: &[u8],
        public_token: PublicToken,
        streams: u32,
        idle_since: Option<Timestamp>,
    ) -> Option<ClientRecord> {
        let stored: StoredClient = serde_json::from_slice(json).ok()?;
        Some(ClientRecord {
            public_token,
            display_name: stored.display_name,
            private_token: stored.private_token,
            timeout_seconds: stored.timeout_seconds,
            idle_seconds: stored.idle_seconds,
            streams,
            idle_since,
            registered_after: stored.registered_after,
        })
    }
}

/// The outcome of a registration.
#[derive(Debug, Clone)]
pub(crate) enum Registered {
    /// Stored.
    Created(ClientRecord),
    /// The public token is already registered on the channel.
    Exists,
}
