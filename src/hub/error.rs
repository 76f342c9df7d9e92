//! Why the hub refused, and the wire code of each reason.

use crate::store::StoreError;

/// Why the hub refused, or why a stream ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HubError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node holds its maximum of open streams.
    #[error("this server holds its maximum of {0} open streams; retry later")]
    TooManySubscribers(usize),
    /// The server is shutting down.
    #[error("the server is shutting down; reconnect shortly")]
    ShuttingDown,
    /// A registration's public token is taken on the channel.
    #[error("a client with this public token, or this private token, is already registered on this channel")]
    ClientExists,
    /// No client with that token on the channel (never registered, expired or removed).
    #[error("no such client on this channel (never registered, expired after idling, or removed)")]
    UnknownClient,
    /// A direct message's recipient is not a client of the channel.
    #[error("'to' names no registered client of this channel")]
    UnknownRecipient,
    /// The stream's client was removed while the stream was open.
    #[error("this client was removed from the channel")]
    ClientRemoved,
}

impl HubError {
    /// The `code` of `error.schema.json` and `failure.schema.json`: the one
    /// place a hub error gets its wire name, for an HTTP error body and for a
    /// failure frame alike.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            HubError::Store(_) => "store_unavailable",
            HubError::TooManySubscribers(_) => "too_many_subscribers",
            HubError::ShuttingDown => "shutting_down",
            HubError::ClientExists => "client_exists",
            HubError::UnknownClient => "unknown_client",
            HubError::UnknownRecipient => "unknown_recipient",
            HubError::ClientRemoved => "client_removed",
        }
    }
}
