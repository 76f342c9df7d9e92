//! The wire contract in Rust: names, ids, times, bodies, and their validation.
//!
//! Everything that crosses the wire is parsed here and checked against the
//! schema files of `protocol/` (see [`schema`]); the rest of the server works
//! with the typed values these functions return.

pub mod schema;

mod channel;
mod client;
mod frames;
mod id;
mod message;
#[cfg(test)]
mod properties;
mod query;
mod segment;
mod time;

pub(crate) use channel::ChannelName;
pub(crate) use client::{PublicToken, Registration};
pub(crate) use frames::{FailureBody, GapBody, GapReason, TimeoutBody};
pub(crate) use id::{Epoch, MessageId};
pub(crate) use message::{complete_envelope, Draft, Message, Sender};
pub(crate) use query::{ClientListQuery, SubscribeQuery};
pub(crate) use time::Timestamp;

use schema::Violation;

/// Why a request's input was refused, before any state was touched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ProtocolError {
    /// The channel path segment does not match `channel-name.schema.json`.
    #[error(
        "invalid channel name '{0}': use 1 to 128 characters from A-Z a-z 0-9 _ - . : (not starting with '.' or ':')"
    )]
    InvalidChannel(String),
    /// The body is not JSON at all.
    #[error("the body is not valid JSON: {0}")]
    InvalidJson(String),
    /// The body is JSON but fails its schema (named by file).
    #[error("the body does not match {0} ({count} problem(s), see details)", count = .1.len())]
    SchemaViolation(&'static str, Vec<Violation>),
    /// A public token in the path does not match `public-token.schema.json`.
    #[error("invalid public token '{0}': see public-token.schema.json")]
    InvalidToken(String),
    /// A query parameter fails `subscribe-query.schema.json` or a server
    /// limit, or the `Last-Event-ID` header `resume-position.schema.json`.
    #[error("invalid request parameter {}", .0.first().map(ToString::to_string).unwrap_or_default())]
    InvalidQuery(Vec<Violation>),
}

impl ProtocolError {
    /// The `code` of `error.schema.json` (and of `failure.schema.json` where it applies).
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ProtocolError::InvalidChannel(_) => "invalid_channel",
            ProtocolError::InvalidJson(_) => "invalid_json",
            ProtocolError::SchemaViolation(..) => "schema_violation",
            ProtocolError::InvalidToken(_) => "unknown_client",
            ProtocolError::InvalidQuery(_) => "invalid_query",
        }
    }
}

/// Parses `body` as JSON, validates it against `kind`, and deserialises it.
///
/// # Errors
/// [`ProtocolError::InvalidJson`] or [`ProtocolError::SchemaViolation`].
pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    body: &[u8],
    kind: schema::SchemaKind,
) -> Result<T, ProtocolError> {
    let value = validated(body, kind)?;
    // The schema has accepted the shape, so this cannot fail; map it anyway
    // rather than trusting two descriptions of the same rule to agree.
    serde_json::from_value(value).map_err(|e| ProtocolError::InvalidJson(e.to_string()))
}

/// Parses `body` as JSON and validates it against `kind`.
///
/// # Errors
/// [`ProtocolError::InvalidJson`] or [`ProtocolError::SchemaViolation`].
pub(crate) fn validated(body: &[u8], kind: schema::SchemaKind) -> Result<serde_json::Value, ProtocolError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
    schema::Schemas::get()
        .validate(kind, &value)
        .map_err(|v| ProtocolError::SchemaViolation(kind.file_name(), v))?;
    Ok(value)
}
