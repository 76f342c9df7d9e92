use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::schema::SchemaKind;
#[cfg(test)]
use super::schema::Schemas;
use super::{ChannelName, Epoch, MessageId, ProtocolError, PublicToken, Timestamp};
use crate::sse;

/// What a sender asks to publish: a validated `send-request` body, plus the
/// sender the server established (never taken from the body).
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    /// The message name.
    pub name: String,
    /// Any JSON value.
    pub contents: Value,
    /// The one recipient of a direct message.
    pub to: Option<PublicToken>,
    /// The registered client that sent it, set by the server from its credentials.
    pub from: Option<Sender>,
}

/// Who sent a message, as the envelope's `from` shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Sender {
    /// The sender's public token.
    pub public_token: PublicToken,
    /// Its display name.
    pub display_name: Option<String>,
}

impl Draft {
    /// Parses and validates a send body against `send-request.schema.json`.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidJson`] for bytes that are not JSON,
    /// [`ProtocolError::SchemaViolation`] with every failing pointer otherwise.
    pub(crate) fn from_json(body: &[u8]) -> Result<Self, ProtocolError> {
        // Taken apart by hand rather than through `Deserialize`: serde's
        // generic path over a `Value` cost twice the schema check, and this
        // is the one body every publish parses. The fields are moved out,
        // never copied.
        let Value::Object(mut fields) = super::validated(body, SchemaKind::SendRequest)? else {
            return Err(not_a_draft("the body is not an object"));
        };
        let name = take::<String>(&mut fields, "name")?.ok_or_else(|| not_a_draft("no name"))?;
        let contents = fields.remove("contents").ok_or_else(|| not_a_draft("no contents"))?;
        let to = take::<PublicToken>(&mut fields, "to")?;
        if let Some(field) = fields.keys().next() {
            return Err(not_a_draft(&format!("unknown field {field}")));
        }
        Ok(Draft {
            name,
            contents,
            to,
            from: None,
        })
    }

    /// A message the server itself sends (presence events), bypassing the
    /// reserved-name rule that applies to senders.
    pub(crate) fn system(name: &str, contents: Value) -> Self {
        Draft {
            name: name.to_owned(),
            contents,
            to: None,
            from: None,
        }
    }
}

/// Moves `key` out of a validated body as a `T`.
fn take<T: DeserializeOwned>(
    fields: &mut serde_json::Map<String, Value>,
    key: &str,
) -> Result<Option<T>, ProtocolError> {
    fields
        .remove(key)
        .map(T::deserialize)
        .transpose()
        .map_err(|e| not_a_draft(&format!("{key}: {e}")))
}

/// A body the schema accepted but that is not a draft: the schema and this
/// code disagree, which the tests rule out; answered as bad input anyway.
fn not_a_draft(why: &str) -> ProtocolError {
    ProtocolError::InvalidJson(format!("the body is not a send request ({why})"))
}

/// A stored message, already encoded as the SSE frame every subscriber receives.
///
/// The frame is built once, when the message is stored, and shared as `Bytes`
/// (a reference count) by the history, the live ring and every subscriber.
#[derive(Debug, Clone)]
pub(crate) struct Message {
    /// Position in the channel.
    pub seq: u64,
    /// When it was stored.
    pub time: Timestamp,
    /// `id: …\ndata: <envelope>\n\n`.
    pub frame: Bytes,
    /// The recipient of a direct message: only its streams get it.
    pub to: Option<PublicToken>,
}

/// The envelope after its `id`: an envelope is `{"id":"<id>",` followed by
/// these fields, so a store that assigns the id elsewhere (inside Redis) can
/// complete it byte for byte as [`Message::encode`] does.
#[derive(Serialize)]
struct EnvelopeRest<'a> {
    channel: &'a ChannelName,
    name: &'a str,
    contents: &'a Value,
    time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<&'a PublicToken>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a Sender>,
}

impl Draft {
    /// The envelope without its id: `"channel":…}` (the fields after `{"id":"…",`).
    pub(crate) fn envelope_rest(&self, channel: &ChannelName, time: Timestamp) -> Vec<u8> {
        let mut json = serde_json::to_vec(&self.fields(channel, time)).expect("a JSON value always serialises");
        json.remove(0); // the opening brace; the id comes first
        json
    }

    fn fields<'a>(&'a self, channel: &'a ChannelName, time: Timestamp) -> EnvelopeRest<'a> {
        EnvelopeRest {
            channel,
            name: &self.name,
            contents: &self.contents,
            time: time.to_string(),
            to: self.to.as_ref(),
            from: self.from.as_ref(),
        }
    }
}

/// `{"id":"<id>",` + `rest`: the whole envelope.
pub(crate) fn complete_envelope(id: &str, rest: &[u8]) -> Vec<u8> {
    let mut envelope = Vec::with_capacity(rest.len() + id.len() + 8);
    envelope.extend_from_slice(b"{\"id\":\"");
    envelope.extend_from_slice(id.as_bytes());
    envelope.extend_from_slice(b"\",");
    envelope.extend_from_slice(rest);
    envelope
}

impl Message {
    /// Builds the envelope and its frame for a message just given its position.
    pub(crate) fn encode(epoch: Epoch, seq: u64, channel: &ChannelName, draft: &Draft, time: Timestamp) -> Self {
        let id = MessageId { epoch, seq }.text();
        // Serialised once, straight into the frame every subscriber shares:
        // `{"id":"<id>"`, then the other fields, whose own opening brace
        // becomes the comma (cheaper than serde's `flatten`).
        let frame = sse::message_with(&id, |data| {
            data.extend_from_slice(b"{\"id\":\"");
            data.extend_from_slice(id.as_bytes());
            data.push(b'"');
            let brace = data.len();
            serde_json::to_writer(&mut *data, &draft.fields(channel, time)).expect("a JSON value always serialises");
            debug_assert_eq!(data[brace], b'{', "a struct serialises as an object");
            data[brace] = b',';
        });
        Message {
            seq,
            time,
            frame,
            to: draft.to.clone(),
        }
    }

    /// Whether a stream of `viewer` (a client's public token, or none) may see it.
    pub(crate) fn is_visible_to(&self, viewer: Option<&PublicToken>) -> bool {
        match &self.to {
            None => true,
            Some(to) => viewer == Some(to),
        }
    }

    /// The envelope JSON inside the frame (what a durable store keeps).
    pub(crate) fn envelope(&self) -> &[u8] {
        sse::data_of(&self.frame)
    }

    /// Rebuilds a message a store kept as its envelope.
    pub(crate) fn from_envelope(
        epoch: Epoch,
        seq: u64,
        time: Timestamp,
        to: Option<PublicToken>,
        envelope: &[u8],
    ) -> Self {
        let id = MessageId { epoch, seq }.text();
        Message {
            seq,
            time,
            frame: sse::message(&id, envelope),
            to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_once_into_a_valid_frame() {
        let channel = ChannelName::parse("room").unwrap();
        let draft = Draft::system("chat.message", json!({"text": "a\nb"}));
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
        assert!(matches!(Draft::from_json(b"{"), Err(ProtocolError::InvalidJson(_))));
        match Draft::from_json(br#"{"name":"","contents":1,"extra":true}"#) {
            Err(ProtocolError::SchemaViolation(_, v)) => {
                let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
                assert!(pointers.contains(&"/name") && pointers.contains(&""), "{pointers:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}
