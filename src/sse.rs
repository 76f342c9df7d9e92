//! Server-Sent Events framing: every byte a stream carries is built here.
//!
//! Frames are built once into a buffer and frozen to [`Bytes`], so one message
//! frame is shared by every subscriber as a reference count. The only values
//! written into `id:` and `event:` lines are our own ids and fixed event names
//! (debug assertions keep it that way), and `data:` carries compact JSON,
//! which never contains a raw line break. A message's data is checked anyway,
//! at run time: it may be bytes read back from a store (see [`one_line`]).

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

/// Sent to an idle stream every heartbeat interval: a comment, ignored by clients,
/// that keeps proxies and load balancers from closing the connection.
pub(crate) const HEARTBEAT: &[u8] = b":\n\n";

/// The last bytes of a stream closed by a server shutdown; the client reconnects.
pub(crate) const SHUTDOWN: &[u8] = b": shutdown\n\n";

/// The last bytes of a stream ended because the store's notifications were
/// interrupted; the client reconnects and resumes from the store.
pub(crate) const INTERRUPTED: &[u8] = b": store connection lost, reconnect\n\n";

/// First bytes of every stream: the reconnection delay and a comment, so clients
/// and proxies see the stream open at once.
pub(crate) fn preamble(retry_ms: u64) -> Bytes {
    Bytes::from(format!("retry: {retry_ms}\n: ssehub stream open\n\n"))
}

/// A message frame: `id:` and one `data:` line with the envelope, no `event:`
/// line, so `EventSource.onmessage` fires.
pub(crate) fn message(id: &str, envelope: &[u8]) -> Bytes {
    debug_assert!(!id.contains(['\r', '\n']));
    let mut frame = BytesMut::with_capacity(id.len() + envelope.len() + 14);
    frame.put_slice(b"id: ");
    frame.put_slice(id.as_bytes());
    frame.put_slice(b"\ndata: ");
    let start = frame.len();
    frame.put_slice(envelope);
    one_line(id, &mut frame[start..]);
    frame.put_slice(b"\n\n");
    frame.freeze()
}

/// A message frame whose envelope `write_data` serialises in place (in a
/// buffer of `capacity` bytes, frame included), so the JSON is written once,
/// into the frame itself.
pub(crate) fn message_with(id: &str, capacity: usize, write_data: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    debug_assert!(!id.contains(['\r', '\n']));
    let mut frame = Vec::with_capacity(capacity + id.len() + 14);
    frame.extend_from_slice(b"id: ");
    frame.extend_from_slice(id.as_bytes());
    frame.extend_from_slice(b"\ndata: ");
    let start = frame.len();
    write_data(&mut frame);
    one_line(id, &mut frame[start..]);
    frame.extend_from_slice(b"\n\n");
    Bytes::from(frame)
}

/// Keeps a message's `data` on its one line. A raw CR or LF would end the
/// line, and what follows would be read as fields of its own: another
/// `event:`, `id:` or `data:`, a whole forged frame. The JSON we write never
/// holds one (strings escape them, a sender's `contents` is compacted), but
/// an envelope read back from a store (Redis, the file, a Redis notification)
/// is only as sound as the store. Such a message is still delivered, so no
/// hole opens that no gap frame would announce, with every raw CR and LF
/// written as a space: in valid JSON they can only be whitespace between
/// tokens, so valid JSON keeps its meaning, and anything else can no longer
/// inject a line. It is logged as an error: the stored bytes are damaged.
fn one_line(id: &str, data: &mut [u8]) {
    if memchr::memchr2(b'\n', b'\r', data).is_none() {
        return;
    }
    tracing::error!(
        id,
        "a stored message holds a raw line break (damaged store?); delivered with spaces in its place"
    );
    for byte in data.iter_mut().filter(|byte| matches!(**byte, b'\n' | b'\r')) {
        *byte = b' ';
    }
}

/// A named event (`timeout`, `failure`, `gap`) with a JSON body and no id, so
/// the client's last event id stays that of the last message.
pub(crate) fn event(name: &str, data: &impl Serialize) -> Bytes {
    debug_assert!(!name.contains(['\r', '\n']));
    let json = serde_json::to_vec(data).expect("frame bodies always serialise");
    let mut frame = BytesMut::with_capacity(name.len() + json.len() + 16);
    frame.put_slice(b"event: ");
    frame.put_slice(name.as_bytes());
    frame.put_slice(b"\ndata: ");
    frame.put_slice(&json);
    frame.put_slice(b"\n\n");
    frame.freeze()
}

/// The `data:` value of a single-data-line frame built by [`message`] or [`event`].
pub(crate) fn data_of(frame: &[u8]) -> &[u8] {
    let start = frame.windows(7).position(|w| w == b"\ndata: ").map_or(0, |at| at + 7);
    let end = frame.len().saturating_sub(2).max(start);
    &frame[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn exact_bytes() {
        assert_eq!(&preamble(2000)[..], b"retry: 2000\n: ssehub stream open\n\n");
        assert_eq!(&message("0000000a-1", b"{}")[..], b"id: 0000000a-1\ndata: {}\n\n");
        assert_eq!(
            &event("timeout", &json!({"channel": "c", "seconds": 5}))[..],
            b"event: timeout\ndata: {\"channel\":\"c\",\"seconds\":5}\n\n"
        );
    }

    #[test]
    fn a_line_break_in_data_never_starts_a_line() {
        let forged = b"{\"a\":\r\n1}\nevent: failure\r\ndata: {}\n\nid: x";
        let frame = message("0000000a-1", forged);
        assert_eq!(
            &frame[..],
            b"id: 0000000a-1\ndata: {\"a\":  1} event: failure  data: {}  id: x\n\n"
        );
        let frame = message_with("0000000a-2", 0, |data| data.extend_from_slice(b"[1,\n2]"));
        assert_eq!(&frame[..], b"id: 0000000a-2\ndata: [1, 2]\n\n");
    }

    #[test]
    fn data_is_recovered_from_a_frame() {
        assert_eq!(data_of(&message("0000000a-1", b"{\"a\":1}")), b"{\"a\":1}");
        assert_eq!(data_of(&event("gap", &json!([1]))), b"[1]");
    }
}
