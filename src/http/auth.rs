//! Who is calling, and whether the channel's policy lets them.
//!
//! Credentials are a bearer token (`Authorization: Bearer …`) or, for streams,
//! `?token=` (EventSource cannot set headers). A token is a publisher key or a
//! registered client's private token on that channel; anything else is refused
//! with 401, never treated as anonymous: a malformed `Authorization` header
//! too. Tokens are never logged.

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

/// The token of the request's `Authorization: Bearer` header; `None` when
/// there is no such header.
///
/// # Errors
/// A header that is there but is not one well-formed bearer token (another
/// scheme, no token, junk after the token, bytes that are not text) is a bad
/// credential, never "no credentials": 401, as for a token that names nobody,
/// also where anonymous requests are allowed. Two headers are not one
/// credential, and which one a proxy would pass on is anyone's guess: 400.
pub(super) fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::BadRequest(
            "a repeated Authorization header: send one Authorization: Bearer <token>",
        ));
    }
    value
        .to_str()
        .ok()
        .and_then(|value| {
            let (scheme, token) = value.trim_matches([' ', '\t']).split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim_start_matches(' '))
        })
        .filter(|token| !token.is_empty() && !token.contains([' ', '\t']))
        .map(Some)
        .ok_or(ApiError::Unauthorized(
            "the Authorization header is not 'Bearer <token>' with exactly one token",
        ))
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
