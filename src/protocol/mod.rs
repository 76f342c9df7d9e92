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
mod query;
mod time;

pub use channel::ChannelName;
pub use client::{PublicToken, Registration};
pub use frames::{FailureBody, GapBody, GapReason, TimeoutBody};
pub use id::{Epoch, MessageId};
pub use message::{complete_envelope, Draft, Message, Sender};
pub use query::SubscribeQuery;
pub use time::Timestamp;

use schema::Violation;

/// Why a request's input was refused, before any state was touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// The channel path segment does not match `channel-name.schema.json`.
    InvalidChannel(String),
    /// The body is not JSON at all.
    InvalidJson(String),
    /// The body is JSON but fails its schema (named by file).
    SchemaViolation(&'static str, Vec<Violation>),
    /// A public token in the path does not match `public-token.schema.json`.
    InvalidToken(String),
    /// A query parameter fails `subscribe-query.schema.json` or a server limit.
    InvalidQuery(Vec<Violation>),
}

impl std::fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProtocolError::InvalidChannel(name) => write!(
                f,
                "invalid channel name '{name}': use 1 to 128 characters from A-Z a-z 0-9 _ - . : (not starting with '.' or ':')"
            ),
            ProtocolError::InvalidJson(reason) => write!(f, "the body is not valid JSON: {reason}"),
            ProtocolError::SchemaViolation(schema, v) => {
                write!(f, "the body does not match {schema} ({} problem(s), see details)", v.len())
            }
            ProtocolError::InvalidToken(token) => {
                write!(f, "invalid public token '{token}': see public-token.schema.json")
            }
            ProtocolError::InvalidQuery(v) => {
                let first = v.first().map(|v| v.to_string()).unwrap_or_default();
                write!(f, "invalid query parameter {first}")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

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
