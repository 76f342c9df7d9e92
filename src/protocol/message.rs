use std::borrow::Cow;

use bytes::Bytes;
use std::ops::Range;

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
    /// The JSON text of `contents`, exactly as the sender wrote it but for
    /// insignificant whitespace: written into the envelope byte for byte, so
    /// numbers (`123456789012345678901234567890`, `-0`) and string escapes
    /// arrive as they were sent, not as a JSON library reads and rewrites
    /// them. Usually a slice of the request body itself.
    pub contents: Bytes,
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
    pub(crate) fn from_json(body: &Bytes) -> Result<Self, ProtocolError> {
        // Taken apart by hand rather than through `Deserialize`: serde's
        // generic path over a `Value` cost twice the schema check, and this
        // is the one body every publish parses. The fields are moved out,
        // never copied.
        let Value::Object(mut fields) = super::validated(body, SchemaKind::SendRequest)? else {
            return Err(not_a_draft("the body is not an object"));
        };
        let name = take::<String>(&mut fields, "name")?.ok_or_else(|| not_a_draft("no name"))?;
        // The schema needed the parsed value; the envelope gets the text.
        fields.remove("contents").ok_or_else(|| not_a_draft("no contents"))?;
        let to = take::<PublicToken>(&mut fields, "to")?;
        if let Some(field) = fields.keys().next() {
            return Err(not_a_draft(&format!("unknown field {field}")));
        }
        Ok(Draft {
            name,
            contents: contents_text(body)?,
            to,
            from: None,
        })
    }

    /// A message the server itself sends (presence events), bypassing the
    /// reserved-name rule that applies to senders.
    pub(crate) fn system(name: &str, contents: &Value) -> Self {
        Draft {
            name: name.to_owned(),
            contents: Bytes::from(serde_json::to_vec(contents).expect("a JSON value always serialises")),
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

/// The JSON text of the `contents` of a body already parsed and validated, as
/// a slice of the body when it has no insignificant whitespace (the usual
/// case), or compacted.
fn contents_text(body: &Bytes) -> Result<Bytes, ProtocolError> {
    let span = contents_span(body).ok_or_else(|| not_a_draft("no contents"))?;
    Ok(match compact(&body[span.clone()]) {
        Cow::Borrowed(_) => body.slice(span),
        Cow::Owned(text) => Bytes::from(text),
    })
}

/// Where the value of the top-level `contents` key is in `json`, an object
/// serde_json has already parsed (so valid JSON); of repeated keys the last
/// counts, as in the parsed value the schema checked, and keys are compared
/// unescaped. A scan rather than a second parse: it runs on every send, and
/// serde_json skipping the other values cost as much again as everything it
/// saves (see the commit that brought it). Only depth and strings matter to
/// find where a top-level value starts and ends.
fn contents_span(json: &[u8]) -> Option<Range<usize>> {
    let (mut depth, mut at) = (0usize, 0);
    let mut expect_key = false;
    let mut key_is_contents = false;
    let mut value_start = None;
    let mut found = None;
    while let Some(&byte) = json.get(at) {
        match byte {
            b'"' => {
                let end = string_end(json, at)?;
                if depth == 1 && expect_key {
                    key_is_contents = is_contents(&json[at..end]);
                    expect_key = false;
                }
                at = end;
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                expect_key = depth == 1;
            }
            b':' if depth == 1 && key_is_contents => value_start = Some(at + 1),
            b',' | b'}' | b']' => {
                if depth == 1 {
                    if let Some(start) = value_start.take() {
                        found = Some(trim(json, start..at));
                    }
                    expect_key = byte == b',';
                }
                if byte != b',' {
                    depth = depth.checked_sub(1)?;
                }
            }
            _ => {}
        }
        at += 1;
    }
    found
}

/// The index after the closing quote of the JSON string opening at `open`.
/// Byte by byte: keys and short values are the usual strings, and `memchr`'s
/// setup cost more than it saved on them.
fn string_end(json: &[u8], open: usize) -> Option<usize> {
    let mut at = open + 1;
    loop {
        match json.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => at += 2, // the backslash and the byte it escapes
            _ => at += 1,
        }
    }
}

/// Whether a quoted key (`"…"`, escapes and all) is `contents`.
fn is_contents(quoted: &[u8]) -> bool {
    quoted == b"\"contents\""
        || quoted.contains(&b'\\') && serde_json::from_slice::<String>(quoted).is_ok_and(|key| key == "contents")
}

/// `range` without the whitespace around the value it holds.
fn trim(json: &[u8], range: Range<usize>) -> Range<usize> {
    let text = &json[range.clone()];
    let start = text.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(text.len());
    let end = text
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |at| at + 1);
    range.start + start..range.start + end
}

/// `json` (valid JSON text) without insignificant whitespace, borrowed when it
/// has none. A sender may pretty-print `contents`, but a frame's `data:` is
/// one line. In valid JSON every byte up to the space is whitespace outside
/// strings (a string holds control characters only escaped), and strings are
/// copied as they are, escapes included.
fn compact(json: &[u8]) -> Cow<'_, [u8]> {
    if !json.iter().any(|byte| *byte <= b' ') {
        return Cow::Borrowed(json);
    }
    let mut out = Vec::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for &byte in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
        } else if byte == b'"' {
            in_string = true;
        } else if matches!(byte, b' ' | b'\t' | b'\n' | b'\r') {
            continue;
        }
        out.push(byte);
    }
    Cow::Owned(out)
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

impl Draft {
    /// The envelope without its id: `"channel":…}` (the fields after
    /// `{"id":"…",`), so a store that assigns the id elsewhere (inside Redis)
    /// can complete it byte for byte as [`Message::encode`] does.
    pub(crate) fn envelope_rest(&self, channel: &ChannelName, time: Timestamp) -> Vec<u8> {
        let mut rest = Vec::with_capacity(self.size_hint(channel));
        self.write_rest(&mut rest, channel, time);
        rest
    }

    /// Room for the envelope, so it is written without growing its buffer.
    fn size_hint(&self, channel: &ChannelName) -> usize {
        // The fixed text, the id, the time and a `from` fit in the 160.
        self.contents.len() + self.name.len() + channel.as_str().len() + 160
    }

    /// Writes the envelope's fields after its id, `"channel":…}`, in the
    /// order of `envelope.schema.json`'s examples. Written by hand rather than
    /// through a serde struct: `contents` is JSON text to copy, not a value
    /// to serialise (serde has no way to say so but `serde_json`'s own
    /// `RawValue`, which would have to be copied out of the body first, and
    /// the struct serialiser cost more than these few writes).
    fn write_rest(&self, out: &mut Vec<u8>, channel: &ChannelName, time: Timestamp) {
        out.extend_from_slice(b"\"channel\":");
        json_string(out, channel.as_str());
        out.extend_from_slice(b",\"name\":");
        json_string(out, &self.name);
        out.extend_from_slice(b",\"contents\":");
        out.extend_from_slice(&self.contents);
        out.extend_from_slice(b",\"time\":\"");
        out.extend_from_slice(&time.rfc3339());
        out.push(b'"');
        if let Some(to) = &self.to {
            out.extend_from_slice(b",\"to\":");
            json_string(out, to.as_str());
        }
        if let Some(from) = &self.from {
            out.extend_from_slice(b",\"from\":");
            serde_json::to_writer(&mut *out, from).expect("a sender serialises into memory");
        }
        out.push(b'}');
    }
}

/// `text` as a JSON string, escaped as JSON needs.
fn json_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(out, text).expect("a string serialises into memory");
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
        // Written once, straight into the frame every subscriber shares.
        let frame = sse::message_with(&id, draft.size_hint(channel), |data| {
            data.extend_from_slice(b"{\"id\":\"");
            data.extend_from_slice(id.as_bytes());
            data.extend_from_slice(b"\",");
            draft.write_rest(data, channel, time);
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
        let draft = Draft::system("chat.message", &json!({"text": "a\nb"}));
        let message = Message::encode(Epoch(0xabcdef01), 7, &channel, &draft, Timestamp(0));
        let text = std::str::from_utf8(&message.frame).unwrap();
        assert_eq!(
            text,
            "id: abcdef01-7\ndata: {\"id\":\"abcdef01-7\",\"channel\":\"room\",\"name\":\"chat.message\",\"contents\":{\"text\":\"a\\nb\"},\"time\":\"1970-01-01T00:00:00.000Z\"}\n\n"
        );
        let envelope: Value = serde_json::from_slice(message.envelope()).unwrap();
        assert!(Schemas::get().is_valid(SchemaKind::Envelope, &envelope));
    }

    fn draft(body: &'static [u8]) -> Result<Draft, ProtocolError> {
        Draft::from_json(&Bytes::from_static(body))
    }

    #[test]
    fn drafts_are_checked_by_the_schema() {
        assert!(draft(br#"{"name":"a","contents":null}"#).is_ok());
        assert!(matches!(draft(b"{"), Err(ProtocolError::InvalidJson(_))));
        match draft(br#"{"name":"","contents":1,"extra":true}"#) {
            Err(ProtocolError::SchemaViolation(_, v)) => {
                let pointers: Vec<&str> = v.iter().map(|v| v.pointer.as_str()).collect();
                assert!(pointers.contains(&"/name") && pointers.contains(&""), "{pointers:?}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn contents_are_kept_as_sent() {
        for (body, contents) in [
            (
                &br#"{"name":"a","contents":123456789012345678901234567890}"#[..],
                &b"123456789012345678901234567890"[..],
            ),
            (br#"{"contents":-0,"name":"a"}"#, b"-0"),
            (br#"{"name":"a","contents":1.50e+3}"#, b"1.50e+3"),
            (
                br#"{"name":"a","contents":"caf\u00e9 \/ \ud83d\ude00"}"#,
                br#""caf\u00e9 \/ \ud83d\ude00""#,
            ),
            (
                b"{\"name\":\"a\",\"contents\" : {\r\n  \"a b\" : [ 1 ,\t2 ]\n} }",
                br#"{"a b":[1,2]}"#,
            ),
            (br#"{"name":"a","contents":1,"contents":[2]}"#, b"[2]"),
            (br#"{"name":"a","cont\u0065nts":{"\"}":"x"}}"#, br#"{"\"}":"x"}"#),
            (
                br#"{"contents":{"contents":[1,{}],"s":"],}\\\"{"},"name":"a"}"#,
                br#"{"contents":[1,{}],"s":"],}\\\"{"}"#,
            ),
            (br#"{"name":"a","contents":"\"contents\":1" }"#, br#""\"contents\":1""#),
            (br#"{"name":"a","contents":true}"#, b"true"),
        ] {
            let draft = draft(body).unwrap();
            assert_eq!(&draft.contents[..], contents, "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(contents_span(br#"{"x":{"contents":1},"contents":2}"#), Some(31..32));
        let body = Bytes::from_static(br#"{"name":"a","contents":[1,2,3]}"#);
        let draft = Draft::from_json(&body).unwrap();
        assert_eq!(
            draft.contents.as_ptr(),
            body[23..].as_ptr(),
            "compact contents are a slice of the body, not a copy"
        );
    }

    #[test]
    fn the_envelope_carries_contents_byte_for_byte() {
        let channel = ChannelName::parse("room").unwrap();
        let mut draft =
            draft(br#"{"name":"n","contents":{"big":123456789012345678901234567890,"z":-0},"to":"bob"}"#).unwrap();
        draft.from = Some(Sender {
            public_token: PublicToken::parse("ann").unwrap(),
            display_name: Some("Ann \"A\"".into()),
        });
        let message = Message::encode(Epoch(1), 2, &channel, &draft, Timestamp(0));
        let expected = r#"{"id":"00000001-2","channel":"room","name":"n","contents":{"big":123456789012345678901234567890,"z":-0},"time":"1970-01-01T00:00:00.000Z","to":"bob","from":{"public_token":"ann","display_name":"Ann \"A\""}}"#;
        assert_eq!(message.envelope(), expected.as_bytes());
        let rest = draft.envelope_rest(&channel, Timestamp(0));
        assert_eq!(complete_envelope("00000001-2", &rest), expected.as_bytes());
        let envelope: Value = serde_json::from_slice(message.envelope()).unwrap();
        assert!(Schemas::get().is_valid(SchemaKind::Envelope, &envelope));
    }
}
