//! Who is calling, and whether the channel's policy lets them.
//!
//! Credentials are a bearer token (`Authorization: Bearer …`) or, for streams,
//! `?token=` (EventSource cannot set headers). A token is a publisher key or a
//! registered client's private token on that channel; anything else is refused
//! with 401, never treated as anonymous. Tokens are never logged.

use warp::http::header::AUTHORIZATION;
use warp::http::HeaderMap;

use super::error::ApiError;
use super::Api;
use crate::access::{Policy, Subscribers};
use crate::protocol::ChannelName;
use crate::store::ClientRecord;

/// The party behind a request.
pub(super) enum Caller {
    /// Holds a publisher key (or no key is configured and it sent no credentials).
    Publisher,
    /// A registered client of the channel.
    Client(ClientRecord),
    /// No credentials.
    Anonymous,
}

/// The token of an `Authorization: Bearer` header, if there is one.
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

const BAD_TOKEN: &str = "the token is neither a publisher key nor the private token of a client of this channel";

/// Identifies the caller from `token`.
///
/// # Errors
/// 401 for a token that is not a key or a client of this channel.
pub(super) async fn identify(api: &Api, channel: &ChannelName, token: Option<&str>) -> Result<Caller, ApiError> {
    let Some(token) = token else {
        return Ok(if api.access.is_open() {
            Caller::Publisher
        } else {
            Caller::Anonymous
        });
    };
    if api.access.is_publisher_key(token) {
        return Ok(Caller::Publisher);
    }
    match api.hub.authenticate(channel, token).await? {
        Some(client) => Ok(Caller::Client(client)),
        None => Err(ApiError::Unauthorized(BAD_TOKEN)),
    }
}

/// Sending needs the policy to name the caller's kind.
pub(super) fn may_send(policy: &Policy, caller: &Caller) -> Result<(), ApiError> {
    let send = policy.send;
    let allowed = send.anyone
        || match caller {
            Caller::Publisher => send.publishers,
            Caller::Client(_) => send.clients,
            Caller::Anonymous => false,
        };
    match (allowed, caller) {
        (true, _) => Ok(()),
        (false, Caller::Anonymous) => Err(ApiError::Unauthorized(
            "sending to this channel needs credentials: Authorization: Bearer <publisher key or private token>",
        )),
        (false, _) => Err(ApiError::Forbidden(
            "this channel's policy does not let these credentials send",
        )),
    }
}

/// Registering and removing clients needs a publisher.
pub(super) fn may_manage(caller: &Caller) -> Result<(), ApiError> {
    match caller {
        Caller::Publisher => Ok(()),
        Caller::Client(_) => Err(ApiError::Forbidden(
            "registering and removing clients needs a publisher key",
        )),
        Caller::Anonymous => Err(ApiError::Unauthorized(
            "registering and removing clients needs Authorization: Bearer <publisher key>",
        )),
    }
}

/// Subscribing and reading presence: anyone on open channels, clients and
/// publishers on channels for registered clients.
pub(super) fn may_watch(policy: &Policy, caller: &Caller) -> Result<(), ApiError> {
    match (policy.subscribe, caller) {
        (Subscribers::Clients, Caller::Anonymous) => Err(ApiError::Unauthorized(
            "this channel is for registered clients: present a private token (?token= or Authorization: Bearer)",
        )),
        _ => Ok(()),
    }
}
