use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::schema::{SchemaKind, Schemas};
use super::{ChannelName, Epoch, MessageId, ProtocolError, Timestamp};
use crate::sse;

/// What a sender asks to publish: a validated `send-request` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Draft {
    /// The message name.
    pub name: String,
    /// Any JSON value.
    pub contents: Value,
}

impl Draft {
    /// Parses and validates a send body against `send-request.schema.json`.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidJson`] for bytes that are not JSON,
    /// [`ProtocolError::SchemaViolation`] with every failing pointer otherwise.
    pub fn from_json(body: &[u8]) -> Result<Self, ProtocolError> {
        let value: Value =
            serde_json::from_slice(body).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
        Schemas::get()
            .validate(SchemaKind::SendRequest, &value)
            .map_err(ProtocolError::SchemaViolation)?;
        // The schema has accepted the shape, so this cannot fail; map it anyway
        // rather than trusting two descriptions of the same rule to agree.
        serde_json::from_value(value).map_err(|e| ProtocolError::InvalidJson(e.to_string()))
    }
}

/// A stored message, already encoded as the SSE frame every subscriber receives.
///
/// The frame is built once, when the message is stored, and shared as `Bytes`
/// (a reference count) by the history, the live ring and every subscriber.
#[derive(Debug, Clone)]
pub struct Message {
    /// Position in the channel.
    pub seq: u64,
    /// When it was stored.
    pub time: Timestamp,
    /// `id: …\ndata: <envelope>\n\n`.
    pub frame: Bytes,
}

#[derive(Serialize)]
struct Envelope<'a> {
    id: String,
    channel: &'a ChannelName,
    name: &'a str,
    contents: &'a Value,
    time: String,
}

impl Message {
    /// Builds the envelope and its frame for a message just given its position.
    pub fn encode(
        epoch: Epoch,
        seq: u64,
        channel: &ChannelName,
        draft: &Draft,
        time: Timestamp,
    ) -> Self {
        let id = MessageId { epoch, seq };
        let envelope = Envelope {
            id: id.to_string(),
            channel,
            name: &draft.name,
            contents: &draft.contents,
            time: time.to_string(),
        };
        let data = serde_json::to_vec(&envelope).expect("a JSON value always serialises");
        Message {
            seq,
            time,
            frame: sse::message(&envelope.id, &data),
        }
    }

    /// The envelope JSON inside the frame (what a durable store keeps).
    pub fn envelope(&self) -> &[u8] {
        sse::data_of(&self.frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_once_into_a_valid_frame() {
        let channel = ChannelName::parse("room").unwrap();
        let draft = Draft {
            name: "chat.message".into(),
            contents: json!({"text": "a\nb"}),
        };
        let message = Message::encode(Epoch(0xabcdef01), 7, &channel, &draft, Timestamp(0));
        let text = std::str::from_utf8(&message.frame).unwrap();
        assert_eq!(
            text,
            "id: abcdef01-7\ndata: {\"id\":\"abcdef01-7\",\"channel\":\"room\",\"name\":\"chat.message\",\"contents\":{\"text\":\"a\\nb\"},\"time\":\"1970-01-01T00:00:00.000Z\"}\n\n"
        );
        let envelope: Value = serde_json::from_slice(message.envelope()).unwrap();
        assert!(Schemas::get().is_valid(SchemaKind::Envelope, &envelope));
    }

    #[test]
    fn drafts_are_checked_by_the_schema() {
        assert!(Draft::from_json(br#"{"name":"a","contents":null}"#).is_ok());
        assert!(matches!(
            Draft::from_json(b"{"),
            Err(ProtocolError::InvalidJson(_))
        ));
        match Draft::from_json(br#"{"name":"","contents":1,"extra":true}"#) {
            Err(ProtocolError::SchemaViolation(v)) => {
                let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
                assert!(
                    pointers.contains(&"/name") && pointers.contains(&""),
                    "{pointers:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
