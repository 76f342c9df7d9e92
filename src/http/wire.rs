//! HTTP/1.1 written by the connection task: answers (with their framing,
//! keep-alive or close), and close-delimited event streams whose socket the
//! hub's writer shares. Every write has a deadline: a client that stops
//! reading cannot hold a task, a subscriber slot or a graceful shutdown.

use std::io::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::net::TcpStream;
use warp::http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use warp::http::{Method, StatusCode, Version};
use warp::reply::Response;

/// An answer whose body is at most this long is written with its head in one write.
const ONE_WRITE: u64 = 64 * 1024;

/// Streams ended because their client read nothing for the write timeout,
/// since the last [`stalled_streams`].
static STALLED: AtomicU64 = AtomicU64::new(0);

/// Streams ended because their client stopped reading, since the last call
/// (the server logs the count now and then, not each one).
pub(crate) fn stalled_streams() -> u64 {
    STALLED.swap(0, Ordering::Relaxed)
}

/// How the answer to one request is written.
pub(super) struct Answer<'a> {
    /// The request's method: a `HEAD` answer has no body.
    pub(super) method: &'a Method,
    /// The request's version: HTTP/1.0 gets no chunked body.
    pub(super) version: Version,
    /// Whether the connection stays open for another request.
    pub(super) keep_alive: bool,
    /// Longest a write may wait for the client to read.
    pub(super) write_timeout: Duration,
}

impl Answer<'static> {
    /// The last answer on a connection, to whatever request it was (or to
    /// none that could be read): the connection closes after it.
    pub(super) fn last(write_timeout: Duration) -> Self {
        Answer {
            method: &Method::GET,
            version: Version::HTTP_11,
            keep_alive: false,
            write_timeout,
        }
    }
}

/// Writes the answer; `Ok(true)` when the connection can carry another
/// request (the client and the answer allow it, and its body was framed).
pub(super) async fn write_answer(stream: &TcpStream, response: Response, answer: Answer<'_>) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let mut keep_alive = answer.keep_alive
        && !parts
            .headers
            .get_all(CONNECTION)
            .iter()
            .any(|value| value.as_bytes().eq_ignore_ascii_case(b"close"));
    let bodiless = answer.method == Method::HEAD
        || parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    let length = http_body::Body::size_hint(&body).exact().or_else(|| {
        parts
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse().ok())
    });
    let chunked = length.is_none() && !bodiless && answer.version == Version::HTTP_11;
    // Without a length or chunks, only closing the connection ends the body.
    keep_alive &= bodiless || length.is_some() || chunked;
    let mut head = head_of(&parts);
    drop(parts);
    match length {
        Some(length) if says_length(bodiless, answer.method) => {
            let _ = write!(head, "content-length: {length}\r\n");
        }
        _ if chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        _ => {}
    }
    if !keep_alive {
        head.extend_from_slice(b"connection: close\r\n");
    } else if answer.version == Version::HTTP_10 {
        head.extend_from_slice(b"connection: keep-alive\r\n");
    }
    head.extend_from_slice(b"\r\n");
    let timeout = answer.write_timeout;
    if bodiless {
        write_all(stream, &head, timeout).await?;
        return Ok(keep_alive);
    }
    if length.is_some_and(|length| length <= ONE_WRITE) {
        // The usual answer (JSON): head and body leave in one write.
        let bytes = body
            .collect()
            .await
            .map_err(|error| io::Error::other(format!("answer body: {error}")))?
            .to_bytes();
        head.extend_from_slice(&bytes);
        write_all(stream, &head, timeout).await?;
        return Ok(keep_alive);
    }
    write_all(stream, &head, timeout).await?;
    drop(head);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| io::Error::other(format!("answer body: {error}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if chunked {
            if data.is_empty() {
                continue;
            }
            write_all(stream, format!("{:x}\r\n", data.len()).as_bytes(), timeout).await?;
            write_all(stream, &data, timeout).await?;
            write_all(stream, b"\r\n", timeout).await?;
        } else {
            write_all(stream, &data, timeout).await?;
        }
    }
    if chunked {
        write_all(stream, b"0\r\n\r\n", timeout).await?;
    }
    Ok(keep_alive)
}

/// Whether a bodiless answer still says its length: a `HEAD` answer does (the
/// length the `GET` would have), a 204 or 304 does not.
fn says_length(bodiless: bool, method: &Method) -> bool {
    !bodiless || method == Method::HEAD
}

/// The status line and headers of an answer as HTTP/1.1 text, with `date`
/// (the format hyper, and every HTTP server, writes) and without the framing headers (`connection`,
/// `content-length`, `transfer-encoding`), which the caller adds.
fn head_of(parts: &warp::http::response::Parts) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    let reason = parts.status.canonical_reason().unwrap_or("");
    let _ = write!(head, "HTTP/1.1 {} {reason}\r\n", parts.status.as_u16());
    for (name, value) in &parts.headers {
        if name == CONNECTION || name == CONTENT_LENGTH || name == TRANSFER_ENCODING || name == DATE {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head.extend_from_slice(b"date: ");
    head.extend_from_slice(&http_date());
    head.extend_from_slice(b"\r\n");
    head
}

/// Now as an HTTP date (`Sat, 21 Nov 2026 06:11:26 GMT`), formatted once a second.
fn http_date() -> [u8; 29] {
    static CACHE: std::sync::Mutex<(u64, [u8; 29])> = std::sync::Mutex::new((0, [0; 29]));
    let now = std::time::SystemTime::now();
    let second = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut cache = crate::shards::lock(&CACHE);
    if cache.0 != second {
        let text = httpdate::fmt_http_date(now);
        if let Ok(bytes) = <[u8; 29]>::try_from(text.as_bytes()) {
            *cache = (second, bytes);
        }
    }
    cache.1
}

/// Writes a response to a subscription: its head, then its body as the stream
/// yields it, until the stream ends, the client goes away, or it reads nothing
/// for `write_timeout`.
pub(super) async fn write_stream(socket: Arc<TcpStream>, response: Response, write_timeout: Duration) {
    let (parts, body) = response.into_parts();
    let mut head = head_of(&parts);
    // Dropped now rather than at the end of the stream, so this future (which
    // lives as long as the stream) need not keep room for it.
    drop(parts);
    if let Some(length) = http_body::Body::size_hint(&body).exact() {
        let _ = write!(head, "content-length: {length}\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    if write_all(&socket, &head, write_timeout).await.is_err() {
        return;
    }
    drop(head);

    // The watcher for the client going away stays registered for the whole
    // stream, rather than once per delivery.
    let mut gone = std::pin::pin!(client_gone(&socket));
    {
        // Scoped: the body (and with it the hub's hold on the socket) is dropped
        // before the socket is shut down.
        let mut body = std::pin::pin!(body);
        loop {
            let step = tokio::select! {
                frame = body.frame() => Ok(frame),
                ended = &mut gone => Err(ended),
            };
            match step {
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if let Err(error) = write_all(&socket, &data, write_timeout).await {
                            count_if_stalled(&error);
                            break;
                        }
                    }
                }
                Ok(Some(Err(error))) => {
                    tracing::debug!(%error, "stream body failed");
                    break;
                }
                Err(Err(error)) => {
                    count_if_stalled(&error);
                    break;
                }
                Ok(None) | Err(Ok(())) => break,
            }
        }
    }
    let _ = socket2::SockRef::from(&*socket).shutdown(std::net::Shutdown::Write);
}

/// Writes all of `bytes`, waiting while the socket is full, but never longer
/// than `timeout` for the client to make room (`TimedOut` then). The socket
/// is shared with the hub's writer, so this goes through `&TcpStream`.
pub(super) async fn write_all(socket: &TcpStream, mut bytes: &[u8], timeout: Duration) -> io::Result<()> {
    while !bytes.is_empty() {
        match socket.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(timeout, socket.writable())
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// A stream ended by a write that timed out: ours (nothing written for the
/// write timeout) or the kernel's (`TCP_USER_TIMEOUT`, set to the same time,
/// which is usually first to notice a client whose window stays shut).
fn count_if_stalled(error: &io::Error) {
    if error.kind() == io::ErrorKind::TimedOut {
        STALLED.fetch_add(1, Ordering::Relaxed);
    }
}

/// Completes when the client has closed its side (`Ok`), or the connection
/// failed (`Err`, `TimedOut` when the kernel gave up on unacknowledged data).
/// A subscriber sends nothing after its request, so anything it does send is
/// read and dropped.
async fn client_gone(stream: &TcpStream) -> io::Result<()> {
    let mut sink = [0u8; 64];
    loop {
        stream.readable().await?;
        match stream.try_read(&mut sink) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
            Err(error) => return Err(error),
        }
    }
}
