//! Request heads: parsed, checked, and sorted by what the connection task
//! does with them. Not async, so that the parser's header array lives on the
//! stack for the call, not in every connection's future for its lifetime.
//!
//! Every check that HTTP/1.1 itself asks of a server (RFC 9112) is made here,
//! before anything is routed: a head that fails one is answered with the JSON
//! error body and the connection is closed, since what follows it cannot be
//! framed. The checks are strict where leniency has let requests be smuggled
//! past proxies: one `Content-Length`, digits only; `Transfer-Encoding` only as
//! `chunked` alone, never together with `Content-Length`, never on HTTP/1.0.

use warp::http::header::{HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, EXPECT, TRANSFER_ENCODING};
use warp::http::{HeaderMap, Method, Version};

use super::error::ApiError;

/// The largest request head read; a larger one is answered `431`.
pub(super) const HEAD_LIMIT: usize = 32 * 1024;

/// The longest request target; a longer one is answered `414`.
const TARGET_LIMIT: usize = 8 * 1024;

/// Headers parsed; a request with more is answered `431`.
const MAX_HEADERS: usize = 100;

/// A complete request head, checked.
#[derive(Debug)]
pub(super) struct RequestHead {
    pub(super) method: Method,
    /// The request target as sent (origin form, or absolute form from a proxy).
    pub(super) target: String,
    pub(super) version: Version,
    pub(super) headers: HeaderMap,
    /// Bytes of the head, at the start of the connection's buffer.
    pub(super) head_len: usize,
    /// How the body is framed.
    pub(super) body: Framing,
    /// Whether the client lets the connection carry another request after this one.
    pub(super) keep_alive: bool,
    /// `Expect: 100-continue`: the client waits for a go-ahead before its body.
    pub(super) expect_continue: bool,
    pub(super) route: Route,
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// What the connection task does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Route {
    /// `GET /channels/{channel}/events[?…]`: a stream, written by this task.
    Events,
    /// `POST /channels/{channel}/messages[?…]`: answered by the send handler
    /// directly, without warp's route matching around it (those were 40 % of
    /// the CPU a send cost). The channel segment is as sent.
    Send { channel: String },
    /// Everything else: warp's routes.
    Other,
}

/// What a connection's buffer starts with.
#[derive(Debug)]
pub(super) enum Parsed {
    /// Not a whole head yet.
    Partial,
    /// A head, checked.
    Complete(Box<RequestHead>),
    /// A head that cannot be served; the answer, after which the connection closes.
    Invalid(ApiError),
}

/// Parses and checks the head at the start of `buffer`.
pub(super) fn parse(buffer: &[u8]) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let head_len = match parsed.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buffer.len() >= HEAD_LIMIT => {
            return Parsed::Invalid(ApiError::HeadersTooLarge);
        }
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Invalid(ApiError::HeadersTooLarge),
        Err(_) => return Parsed::Invalid(ApiError::BadRequest("the request head is not well-formed HTTP/1.1")),
    };
    match check(&parsed, head_len) {
        Ok(head) => Parsed::Complete(Box::new(head)),
        Err(error) => Parsed::Invalid(error),
    }
}

fn check(parsed: &httparse::Request<'_, '_>, head_len: usize) -> Result<RequestHead, ApiError> {
    let malformed = |why| ApiError::BadRequest(why);
    let (Some(method), Some(target), Some(minor)) = (parsed.method, parsed.path, parsed.version) else {
        return Err(malformed("the request line is incomplete"));
    };
    if target.len() > TARGET_LIMIT {
        return Err(ApiError::UriTooLong);
    }
    let method = Method::from_bytes(method.as_bytes()).map_err(|_| malformed("the method is not a token"))?;
    let version = if minor == 1 { Version::HTTP_11 } else { Version::HTTP_10 };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len());
    let mut length = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive_asked = false;
    let mut expect_continue = false;
    for header in parsed.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| malformed("a header name is invalid"))?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| malformed("a header value is invalid"))?;
        if name == CONTENT_LENGTH {
            // Digits only (`parse` would also take a sign), and only once.
            let digits = header.value;
            if length.is_some() || digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(malformed("Content-Length must be given once, as digits"));
            }
            let text = std::str::from_utf8(digits).map_err(|_| malformed("Content-Length is not digits"))?;
            length = Some(
                text.parse::<u64>()
                    .map_err(|_| malformed("Content-Length is too large"))?,
            );
        } else if name == TRANSFER_ENCODING {
            if chunked || !header.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(ApiError::NotImplemented(
                    "the only Transfer-Encoding this server reads is 'chunked', once",
                ));
            }
            chunked = true;
        } else if name == CONNECTION {
            for option in header.value.split(|b| *b == b',') {
                let option = option.trim_ascii();
                close |= option.eq_ignore_ascii_case(b"close");
                keep_alive_asked |= option.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name == EXPECT {
            expect_continue |= header.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        headers.append(name, value);
    }
    let body = match (length, chunked) {
        (Some(_), true) => {
            return Err(malformed(
                "a request must not have both Content-Length and Transfer-Encoding",
            ))
        }
        (None, true) if version == Version::HTTP_10 => {
            return Err(malformed("Transfer-Encoding is not HTTP/1.0"));
        }
        (None, true) => Framing::Chunked,
        (Some(0) | None, false) => Framing::None,
        (Some(length), false) => Framing::Length(length),
    };
    let keep_alive = !close && (version == Version::HTTP_11 || keep_alive_asked);
    let route = route(&method, target);
    Ok(RequestHead {
        method,
        target: target.to_owned(),
        version,
        headers,
        head_len,
        body,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11,
        route,
    })
}

/// Which of the connection task's own routes a request takes.
fn route(method: &Method, target: &str) -> Route {
    if method == Method::GET && channel_route(target, "events").is_some() {
        return Route::Events;
    }
    match channel_route(target, "messages") {
        Some(channel) if method == Method::POST => Route::Send {
            channel: channel.to_owned(),
        },
        _ => Route::Other,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> RequestHead {
        match parse(raw.as_bytes()) {
            Parsed::Complete(head) => *head,
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    fn refused(raw: &str) -> &'static str {
        match parse(raw.as_bytes()) {
            Parsed::Invalid(error) => error.code(),
            other => panic!("{raw:?}: {other:?}"),
        }
    }

    #[test]
    fn sends_and_streams_are_routed_here() {
        let send =
            head("POST /channels/c/messages HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(send.route, Route::Send { channel: "c".into() });
        assert_eq!(send.body, Framing::Length(7));
        assert!(send.keep_alive);
        assert_eq!(send.headers["content-type"], "application/json");
        assert_eq!(
            head("POST /channels/c/messages?x=1 HTTP/1.0\r\nContent-Length: 0\r\n\r\n").route,
            Route::Send { channel: "c".into() }
        );
        let events = head("GET /channels/c/events?timeout=5 HTTP/1.1\r\nAccept: text/event-stream\r\n\r\n");
        assert_eq!(events.route, Route::Events);
        assert_eq!(events.target, "/channels/c/events?timeout=5");
        for other in [
            "GET /channels/c/messages HTTP/1.1\r\n\r\n",
            "POST /channels/c/clients HTTP/1.1\r\n\r\n",
            "POST /channels//messages HTTP/1.1\r\n\r\n",
            "POST /channels/c/messages/x HTTP/1.1\r\n\r\n",
            "HEAD /channels/c/events HTTP/1.1\r\n\r\n",
            "GET /channels//events HTTP/1.1\r\n\r\n",
            "GET /channels/c/events/x HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(head(other).route, Route::Other, "{other}");
        }
    }

    #[test]
    fn framing_and_keep_alive() {
        assert_eq!(head("GET / HTTP/1.1\r\n\r\n").body, Framing::None);
        assert_eq!(head("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").body, Framing::None);
        assert_eq!(
            head("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n").body,
            Framing::Chunked
        );
        assert!(!head("GET / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n").keep_alive);
        assert!(!head("GET / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(head("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert!(head("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").expect_continue);
        assert!(!head("POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n").expect_continue);
    }

    #[test]
    fn what_cannot_be_framed_is_refused() {
        for (raw, code) in [
            ("GET / HTTP/1.1\r\nContent-Length: +7\r\n\r\n", "bad_request"),
            (
                "GET / HTTP/1.1\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
                "bad_request",
            ),
            (
                "GET / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
                "bad_request",
            ),
            (
                "GET / HTTP/1.1\r\nContent-Length: 7\r\nTransfer-Encoding: chunked\r\n\r\n",
                "bad_request",
            ),
            ("GET / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "bad_request"),
            (
                "GET / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                "not_implemented",
            ),
            (
                "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                "not_implemented",
            ),
            (
                "GET / HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
                "not_implemented",
            ),
            ("GET /\x01 HTTP/1.1\r\n\r\n", "bad_request"),
            ("GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", "bad_request"),
            ("GET / HTTP/2.0\r\n\r\n", "bad_request"),
        ] {
            assert_eq!(refused(raw), code, "{raw:?}");
        }
        let long_target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(TARGET_LIMIT));
        assert_eq!(refused(&long_target), "uri_too_long");
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(refused(&many), "headers_too_large");
        let huge = format!("GET / HTTP/1.1\r\nX: {}", "y".repeat(HEAD_LIMIT));
        assert_eq!(refused(&huge), "headers_too_large");
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nX: y\r\n"), Parsed::Partial));
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        /// A header value: visible ASCII and spaces, not starting or ending with a space.
        fn value() -> impl Strategy<Value = String> {
            "[!-~]([ -~]{0,30}[!-~])?"
        }

        proptest! {
            /// Whatever a client sends, parsing answers (never panics), and a
            /// complete head lies within what was read.
            #[test]
            fn any_bytes_are_answered(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
                if let Parsed::Complete(head) = parse(&bytes) {
                    prop_assert!(head.head_len <= bytes.len());
                }
            }

            /// Head-like text with random damage is answered too.
            #[test]
            fn damaged_heads_are_answered(
                cut in 0usize..200,
                flip in 0usize..200,
                byte in any::<u8>(),
            ) {
                let mut raw = b"POST /channels/c/messages?x=1 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n".to_vec();
                let flip = flip % raw.len();
                raw[flip] = byte;
                raw.truncate(cut.min(raw.len()));
                let _ = parse(&raw);
            }

            /// A well-formed request comes back as it was written, and any
            /// prefix of it is incomplete, not an error.
            #[test]
            fn well_formed_heads_round_trip(
                method in "(GET|POST|DELETE|HEAD|OPTIONS|PATCH)",
                channel in "[A-Za-z0-9_.:-]{1,20}",
                tail in "(events|messages|clients)",
                query in proptest::option::of("[a-z]{1,8}=[A-Za-z0-9%]{0,12}"),
                headers in proptest::collection::vec(("x-[a-z]{1,10}", value()), 0..8),
                length in proptest::option::of(0u64..100_000),
                http10 in any::<bool>(),
            ) {
                let target = match &query {
                    Some(query) => format!("/channels/{channel}/{tail}?{query}"),
                    None => format!("/channels/{channel}/{tail}"),
                };
                let version = if http10 { "1.0" } else { "1.1" };
                let mut raw = format!("{method} {target} HTTP/{version}\r\n");
                for (name, value) in &headers {
                    raw.push_str(&format!("{name}: {value}\r\n"));
                }
                if let Some(length) = length {
                    raw.push_str(&format!("Content-Length: {length}\r\n"));
                }
                raw.push_str("\r\n");
                for end in 0..raw.len() {
                    prop_assert!(matches!(parse(&raw.as_bytes()[..end]), Parsed::Partial), "prefix {end}");
                }
                let Parsed::Complete(head) = parse(raw.as_bytes()) else {
                    return Err(TestCaseError::fail(format!("not parsed: {raw:?}")));
                };
                prop_assert_eq!(head.method.as_str(), method.as_str());
                prop_assert_eq!(&head.target, &target);
                prop_assert_eq!(head.head_len, raw.len());
                prop_assert_eq!(head.keep_alive, !http10);
                prop_assert_eq!(head.body, match length {
                    Some(0) | None => Framing::None,
                    Some(length) => Framing::Length(length),
                });
                for (name, value) in &headers {
                    prop_assert!(head.headers.get_all(name.as_str()).iter().any(|v| v == value.as_str()));
                }
                let expected = match (method.as_str(), tail.as_str()) {
                    ("GET", "events") => Route::Events,
                    ("POST", "messages") => Route::Send { channel: channel.clone() },
                    _ => Route::Other,
                };
                prop_assert_eq!(head.route, expected);
            }
        }
    }
}
