//! Sorting request heads: which requests the connection task answers itself
//! (an event stream, a plain send) and which go to hyper. Not async, so that
//! the parser's header array lives on the stack for the call, not in every
//! connection's future for its lifetime.

use bytes::Bytes;
use http_body_util::Empty;
use warp::http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING, UPGRADE};
use warp::http::{HeaderMap, Method, Request, Version};

/// Headers parsed here; a request with more goes to hyper.
const MAX_HEADERS: usize = 64;

/// What the start of a connection turned out to be.
pub(super) enum Head {
    /// Closed (or silent past the timeout) before a request head arrived.
    Closed,
    /// A subscription, parsed, with nothing after its head.
    Events(Box<Request<Empty<Bytes>>>),
    /// A send with a `Content-Length` body, answered here (see [`SendHead`]).
    Send(Box<SendHead>),
    /// Anything else, for hyper.
    Other,
}

/// A plain `POST /channels/{channel}/messages` (HTTP/1.1, `Content-Length`
/// within the body limit, no `Expect`, `Transfer-Encoding` or `Upgrade`, no
/// `Connection` but `keep-alive`): the request a publisher sends over and
/// over on one keep-alive connection. It is answered here, by the send
/// handler itself, without hyper's connection and warp's route matching
/// around it: those were 40 % of the CPU a send cost. Everything that decides
/// the answer (credentials, content type, size, JSON, schema, the store) is
/// the handler's, as for a send that arrives any other way; the path shape
/// checked here is the one the route matches, and anything else goes to hyper.
pub(super) struct SendHead {
    pub(super) channel: String,
    pub(super) headers: HeaderMap,
    /// Bytes of the head, at the start of the connection's buffer.
    pub(super) head_len: usize,
    pub(super) body_len: usize,
}

/// What a connection's buffer starts with; `None` while the head is incomplete.
pub(super) fn sort_head(head: &[u8], body_limit: usize) -> Option<Head> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let length = match parsed.parse(head) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return None,
        Err(_) => return Some(Head::Other),
    };
    if let Some(send) = send_request(&parsed, length, body_limit) {
        // A pipelined request after the body is hyper's business.
        if head.len() <= length + send.body_len {
            return Some(Head::Send(Box::new(send)));
        }
        return Some(Head::Other);
    }
    // Bytes after the head (a body, a pipelined request) are hyper's business.
    if length != head.len() {
        return Some(Head::Other);
    }
    Some(events_request(&parsed).map_or(Head::Other, |request| Head::Events(Box::new(request))))
}

/// The channel of a request target `/channels/{channel}/{route}[?…]` (the
/// shape warp's `path!` matches: the segment as sent, not empty), or `None`.
fn channel_route<'a>(target: &'a str, route: &str) -> Option<&'a str> {
    let path = target.split('?').next().unwrap_or(target);
    let mut segments = path.strip_prefix('/')?.split('/');
    match (segments.next(), segments.next(), segments.next(), segments.next()) {
        (Some("channels"), Some(channel), Some(last), None) if last == route && !channel.is_empty() => Some(channel),
        _ => None,
    }
}

/// The request, when it is a body-less `GET /channels/{channel}/events[?…]`.
fn events_request(parsed: &httparse::Request<'_, '_>) -> Option<Request<Empty<Bytes>>> {
    if parsed.method != Some("GET") {
        return None;
    }
    let target = parsed.path?;
    channel_route(target, "events")?;
    let version = match parsed.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    let mut request = Request::builder().method(Method::GET).uri(target).version(version);
    for header in parsed.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("transfer-encoding") {
            return None; // a body on a GET: let hyper deal with it
        }
        request = request.header(name, header.value);
    }
    request.body(Empty::new()).ok()
}

/// The send, when the request is one answered here (see [`SendHead`]).
fn send_request(parsed: &httparse::Request<'_, '_>, head_len: usize, body_limit: usize) -> Option<SendHead> {
    if parsed.method != Some("POST") || parsed.version != Some(1) {
        return None;
    }
    let channel = channel_route(parsed.path?, "messages")?;
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut body_len = None;
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).ok()?;
        if name == TRANSFER_ENCODING || name == EXPECT || name == UPGRADE {
            return None;
        }
        // `keep-alive` is what HTTP/1.1 means anyway (many clients say it);
        // `close`, or anything else, is hyper's to honour.
        if name == CONNECTION && !header.value.eq_ignore_ascii_case(b"keep-alive") {
            return None;
        }
        if name == CONTENT_LENGTH {
            if body_len.is_some() {
                return None;
            }
            // Digits only (`parse` would also take a sign): anything else is
            // for hyper to refuse.
            let digits = header.value;
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let text = std::str::from_utf8(digits).ok()?;
            body_len = Some(text.parse::<usize>().ok().filter(|len| *len <= body_limit)?);
        }
        headers.append(name, HeaderValue::from_bytes(header.value).ok()?);
    }
    Some(SendHead {
        channel: channel.to_owned(),
        headers,
        head_len,
        body_len: body_len?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sort(raw: &[u8]) -> Option<Request<Empty<Bytes>>> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        assert!(parsed.parse(raw).unwrap().is_complete());
        events_request(&parsed)
    }

    fn send(raw: &[u8]) -> Option<SendHead> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        let length = match parsed.parse(raw).unwrap() {
            httparse::Status::Complete(length) => length,
            httparse::Status::Partial => panic!("incomplete head"),
        };
        send_request(&parsed, length, 100)
    }

    #[test]
    fn only_plain_sends_are_answered_here() {
        let head = "POST /channels/c/messages HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n";
        let accepted = send(head.as_bytes()).unwrap();
        assert_eq!(accepted.channel, "c");
        assert_eq!(accepted.body_len, 7);
        assert_eq!(accepted.head_len, head.len());
        assert_eq!(accepted.headers["content-type"], "application/json");
        assert!(send(b"POST /channels/c/messages?x=1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n").is_some());
        assert!(
            send(b"POST /channels/c/messages HTTP/1.1\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n")
                .is_some()
        );
        for refused in [
            "GET /channels/c/messages HTTP/1.1\r\nContent-Length: 7\r\n\r\n",
            "POST /channels/c/messages HTTP/1.0\r\nContent-Length: 7\r\n\r\n",
            "POST /channels/c/clients HTTP/1.1\r\nContent-Length: 7\r\n\r\n",
            "POST /channels//messages HTTP/1.1\r\nContent-Length: 7\r\n\r\n",
            "POST /channels/c/messages/x HTTP/1.1\r\nContent-Length: 7\r\n\r\n",
            "POST /channels/c/messages HTTP/1.1\r\n\r\n",
            "POST /channels/c/messages HTTP/1.1\r\nContent-Length: 101\r\n\r\n",
            "POST /channels/c/messages HTTP/1.1\r\nContent-Length: +7\r\n\r\n",
            "POST /channels/c/messages HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
            "POST /channels/c/messages HTTP/1.1\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST /channels/c/messages HTTP/1.1\r\nContent-Length: 7\r\nExpect: 100-continue\r\n\r\n",
            "POST /channels/c/messages HTTP/1.1\r\nContent-Length: 7\r\nConnection: close\r\n\r\n",
            "POST /channels/c/messages HTTP/1.1\r\nContent-Length: 7\r\nConnection: keep-alive, Upgrade\r\n\r\n",
        ] {
            assert!(send(refused.as_bytes()).is_none(), "{refused}");
        }
    }

    #[test]
    fn only_bodiless_event_gets_are_streamed_here() {
        let request = sort(b"GET /channels/c/events?timeout=5 HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n").unwrap();
        assert_eq!(request.uri(), "/channels/c/events?timeout=5");
        assert_eq!(request.headers()["accept"], "text/event-stream");
        assert!(sort(b"POST /channels/c/events HTTP/1.1\r\n\r\n").is_none());
        assert!(sort(b"GET /channels/c/messages HTTP/1.1\r\n\r\n").is_none());
        assert!(sort(b"GET /channels//events HTTP/1.1\r\n\r\n").is_none());
        assert!(sort(b"GET /channels/c/events/x HTTP/1.1\r\n\r\n").is_none());
        assert!(sort(b"GET /channels/c/events HTTP/1.1\r\nContent-Length: 3\r\n\r\n").is_none());
    }
}
