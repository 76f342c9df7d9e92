use std::fmt;

use super::schema::{SchemaKind, Schemas};

/// Which run of which store issued an id: 32 bits, written as 8 lowercase hex digits.
///
/// The in-memory store draws a fresh epoch at every start, so an id from an
/// earlier run is recognised as such and answered with a gap frame instead of
/// being compared with numbers that mean something else now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Epoch(pub u32);

impl Epoch {
    /// A random epoch (from a v4 UUID's random bits).
    pub(crate) fn random() -> Self {
        let bytes = uuid::Uuid::new_v4().into_bytes();
        Epoch(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }
}

impl Epoch {
    /// The 8 lowercase hex digits.
    fn hex(self) -> [u8; 8] {
        let mut out = [0u8; 8];
        for (i, slot) in out.iter_mut().enumerate() {
            *slot = b"0123456789abcdef"[((self.0 >> (28 - 4 * i)) & 0xf) as usize];
        }
        out
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.hex()).expect("hex digits"))
    }
}

/// A message id: `<epoch>-<seq>`, see `message-id.schema.json`.
///
/// Within one epoch, ids order by `seq`; `seq` grows by one per message of a
/// channel (it may jump forward after the store forgot an idle channel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct MessageId {
    /// The store run that issued it.
    pub epoch: Epoch,
    /// Position in the channel, from 1.
    pub seq: u64,
}

impl MessageId {
    /// Parses an id a client sent back; `None` when it is not of the id format.
    pub(crate) fn parse(raw: &str) -> Option<Self> {
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

impl MessageId {
    /// The id's text, built without `core::fmt` (this runs for every message).
    pub(crate) fn text(&self) -> String {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut seq = self.seq;
        loop {
            at -= 1;
            digits[at] = b'0' + (seq % 10) as u8;
            seq /= 10;
            if seq == 0 {
                break;
            }
        }
        let mut text = String::with_capacity(9 + digits.len() - at);
        text.push_str(std::str::from_utf8(&self.epoch.hex()).expect("hex digits"));
        text.push('-');
        text.push_str(std::str::from_utf8(&digits[at..]).expect("decimal digits"));
        text
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
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
        assert_eq!(
            MessageId {
                epoch: Epoch(u32::MAX),
                seq: u64::MAX
            }
            .text(),
            "ffffffff-18446744073709551615"
        );
        assert_eq!(
            MessageId {
                epoch: Epoch(0),
                seq: 1
            }
            .text(),
            "00000000-1"
        );
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
