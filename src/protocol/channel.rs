use std::fmt;
use std::sync::Arc;

use super::schema::{SchemaKind, Schemas};
use super::{segment, ProtocolError};

/// A channel name that matched `channel-name.schema.json`.
///
/// Cheap to clone (a shared `str`): it is a key in the hub's and the store's maps
/// and travels with every subscription.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct ChannelName(Arc<str>);

impl ChannelName {
    /// Checks `raw` against the channel-name schema.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidChannel`] when it does not match.
    pub(crate) fn parse(raw: &str) -> Result<Self, ProtocolError> {
        let value = serde_json::Value::String(raw.to_owned());
        if Schemas::get().is_valid(SchemaKind::ChannelName, &value) {
            Ok(ChannelName(Arc::from(raw)))
        } else {
            Err(ProtocolError::InvalidChannel(truncate(raw)))
        }
    }

    /// The channel a `{channel}` path segment names: percent-decoded once,
    /// then checked as [`ChannelName::parse`] does (see `segment`).
    ///
    /// # Errors
    /// [`ProtocolError::InvalidChannel`], quoting the segment as sent.
    pub(crate) fn from_path(segment: &str) -> Result<Self, ProtocolError> {
        segment::decode(segment)
            .and_then(|name| Self::parse(&name).ok())
            .ok_or_else(|| ProtocolError::InvalidChannel(truncate(segment)))
    }

    /// The name as text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

/// Keeps error messages short when someone sends a huge path segment.
fn truncate(raw: &str) -> String {
    match raw.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &raw[..at]),
        None => raw.to_owned(),
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl serde::Serialize for ChannelName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_schema() {
        for good in ["a", "chat", "room-1", "a.b:c_d", "_x", &"x".repeat(128)] {
            assert!(ChannelName::parse(good).is_ok(), "{good}");
        }
        for bad in ["", ".a", ":a", "a b", "a/b", "é", &"x".repeat(129)] {
            assert!(ChannelName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn path_segments_are_decoded_once() {
        assert_eq!(ChannelName::from_path("ops%3Aalerts").unwrap().as_str(), "ops:alerts");
        assert_eq!(ChannelName::from_path("chat").unwrap().as_str(), "chat");
        for bad in ["a%2Fb", "a%00", "a%0A", "a%zz", "a%3", "a%253A", "%FF", "%2Ea"] {
            assert!(
                matches!(ChannelName::from_path(bad), Err(ProtocolError::InvalidChannel(quoted)) if quoted == bad),
                "{bad}"
            );
        }
    }
}
