use std::fmt;

use super::schema::{SchemaKind, Schemas};

/// Which run of which store issued an id: 32 bits, written as 8 lowercase hex digits.
///
/// The in-memory store draws a fresh epoch at every start, so an id from an
/// earlier run is recognised as such and answered with a gap frame instead of
/// being compared with numbers that mean something else now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(pub u32);

impl Epoch {
    /// A random epoch (from a v4 UUID's random bits).
    pub fn random() -> Self {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        Epoch(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:08x}", self.0)
    }
}

/// A message id: `<epoch>-<seq>`, see `message-id.schema.json`.
///
/// Within one epoch, ids order by `seq`; `seq` grows by one per message of a
/// channel (it may jump forward after the store forgot an idle channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId {
    /// The store run that issued it.
    pub epoch: Epoch,
    /// Position in the channel, from 1.
    pub seq: u64,
}

impl MessageId {
    /// Parses an id a client sent back; `None` when it is not of the id format.
    pub fn parse(raw: &str) -> Option<Self> {
        let value = serde_json::Value::String(raw.to_owned());
        if !Schemas::get().is_valid(SchemaKind::MessageId, &value) {
            return None;
        }
        let (epoch, seq) = raw.split_once('-')?;
        Some(MessageId {
            epoch: Epoch(u32::from_str_radix(epoch, 16).ok()?),
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.epoch, self.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip() {
        let id = MessageId {
            epoch: Epoch(0x0a1b2c3d),
            seq: 42,
        };
        assert_eq!(id.to_string(), "0a1b2c3d-42");
        assert_eq!(MessageId::parse("0a1b2c3d-42"), Some(id));
    }

    #[test]
    fn malformed_ids_do_not_parse() {
        for bad in [
            "",
            "42",
            "0a1b2c3d-0",
            "0a1b2c3d-01",
            "0A1B2C3D-1",
            "0a1b2c3-1",
            "0a1b2c3d-99999999999999999999",
        ] {
            assert_eq!(MessageId::parse(bad), None, "{bad}");
        }
    }
}
