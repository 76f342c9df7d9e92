use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

use super::schema::{SchemaKind, Schemas};
use super::{segment, ProtocolError};

/// A registered client's public token (see `public-token.schema.json`): how
/// others address it. Cheap to clone; compared on every direct message.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct PublicToken(Arc<str>);

impl PublicToken {
    /// Checks `raw` against the public-token schema (for tokens from a URL path).
    ///
    /// # Errors
    /// [`ProtocolError::InvalidToken`].
    pub(crate) fn parse(raw: &str) -> Result<Self, ProtocolError> {
        let value = serde_json::Value::String(raw.to_owned());
        if Schemas::get().is_valid(SchemaKind::PublicToken, &value) {
            Ok(PublicToken(Arc::from(raw)))
        } else {
            Err(ProtocolError::InvalidToken(raw.chars().take(64).collect()))
        }
    }

    /// The public token a `{public_token}` path segment names: percent-decoded
    /// once, then checked as [`PublicToken::parse`] does (see `segment`).
    ///
    /// # Errors
    /// [`ProtocolError::InvalidToken`], quoting the segment as sent.
    pub(crate) fn from_path(segment: &str) -> Result<Self, ProtocolError> {
        segment::decode(segment)
            .and_then(|token| Self::parse(&token).ok())
            .ok_or_else(|| ProtocolError::InvalidToken(segment.chars().take(64).collect()))
    }

    /// The token as text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PublicToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PublicToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl serde::Serialize for PublicToken {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Only ever built from text the schema has already accepted.
impl<'de> Deserialize<'de> for PublicToken {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(PublicToken(Arc::from(String::deserialize(d)?)))
    }
}

/// A validated `client-registration` body.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Registration {
    /// How others address the client.
    pub public_token: PublicToken,
    /// Shown in presence and in `from`.
    #[serde(default)]
    pub display_name: Option<String>,
    /// The client's secret; generated when absent.
    #[serde(default)]
    pub private_token: Option<String>,
    /// Stream timeout for this client, in seconds.
    #[serde(default, deserialize_with = "whole_number")]
    pub connection_timeout_seconds: Option<u64>,
    /// How long the client is kept with no open stream, in seconds.
    #[serde(default, deserialize_with = "whole_number")]
    pub connection_idle_seconds: Option<u64>,
}

/// A number the schema types as `integer`, which it has already checked is
/// whole and positive. JSON Schema counts `60.0` (and `6e1`) as the integer
/// 60, and so does this, where serde alone would refuse such a float as
/// malformed JSON. The schemas cap both fields far below `u64::MAX`; were a
/// cap lifted, one too large would saturate and a limit checked later would
/// refuse it as too large, which is what it is.
fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(exact) = number.as_u64() {
        return Ok(Some(exact));
    }
    match number.as_f64() {
        // `as` from a float saturates at the bounds (and the schema has ruled
        // out fractions and negatives): exactly the meaning wanted here.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(float) if float >= 1.0 && float.fract() == 0.0 => Ok(Some(float as u64)),
        _ => Err(serde::de::Error::custom(format!(
            "{number} is not a whole number of seconds"
        ))),
    }
}

/// Never prints the private token.
impl fmt::Debug for Registration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("public_token", &self.public_token)
            .field("display_name", &self.display_name)
            .field("connection_timeout_seconds", &self.connection_timeout_seconds)
            .field("connection_idle_seconds", &self.connection_idle_seconds)
            .finish_non_exhaustive()
    }
}

impl Registration {
    /// Parses and validates against `client-registration.schema.json`.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidJson`] or [`ProtocolError::SchemaViolation`].
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, ProtocolError> {
        super::from_json(body, SchemaKind::ClientRegistration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_follow_the_schema() {
        let r = Registration::from_json(br#"{"public_token":"alice","display_name":"Alice"}"#).unwrap();
        assert_eq!(r.public_token.as_str(), "alice");
        assert!(Registration::from_json(br#"{"public_token":"a b"}"#).is_err());
        assert!(Registration::from_json(br#"{"public_token":"a","private_token":"short"}"#).is_err());
        assert!(Registration::from_json(br#"{"display_name":"x"}"#).is_err());
        assert!(!format!(
            "{:?}",
            Registration::from_json(br#"{"public_token":"a","private_token":"0123456789abcdefXYZ"}"#).unwrap()
        )
        .contains("XYZ"));
    }

    #[test]
    fn integers_written_as_floats_are_integers() {
        let r = Registration::from_json(
            br#"{"public_token":"a","connection_timeout_seconds":60.0,"connection_idle_seconds":1.2e2}"#,
        )
        .unwrap();
        assert_eq!(
            (r.connection_timeout_seconds, r.connection_idle_seconds),
            (Some(60), Some(120))
        );
        for fraction in [
            // Over the largest --max-timeout any server has: the schema's maximum.
            &br#"{"public_token":"a","connection_timeout_seconds":1e30}"#[..],
            br#"{"public_token":"a","connection_timeout_seconds":60.5}"#,
            br#"{"public_token":"a","connection_idle_seconds":0.0}"#,
        ] {
            assert!(matches!(
                Registration::from_json(fraction),
                Err(ProtocolError::SchemaViolation(..))
            ));
        }
    }
}
