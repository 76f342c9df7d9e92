//! One task per TCP connection, and what it costs to hold one open.
//!
//! An event stream is a long-lived response that only ever writes, so it is
//! served here directly rather than through hyper's HTTP/1 connection, which
//! keeps an 8 KiB read buffer and an 8 KiB header buffer for the life of every
//! connection: that alone is more than we allow an idle subscriber. The task
//! reads the request head into a small buffer; a `GET` of
//! `/channels/{channel}/events` gets its response from the very same routes as
//! every other request (so validation, credentials, CORS and errors are
//! decided in one place), and the response is written straight to the socket:
//! the head, then each chunk the stream yields, close-delimited
//! (`Connection: close`, which EventSource and proxies handle, and which saves
//! the chunked-encoding framing on every delivery). The socket also goes to the
//! hub with the request (as an [`EventSocket`]), so that while the subscriber is
//! up to date its topic's writer sends new frames to it directly, without
//! waking this task. The head buffer is freed before the first frame.
//!
//! A plain send (`POST /channels/{channel}/messages` with a `Content-Length`
//! body) is also answered here, by the send handler itself, and so is every
//! send after it on the same keep-alive connection (see [`SendHead`]): a
//! publisher's requests are the server's other hot path. Anything else goes to
//! hyper along with the bytes already read.

use std::convert::Infallible;
use std::io::{self, Write as _};
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use std::future::Future;

use futures::FutureExt;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use warp::http::header::{
    HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, DATE, EXPECT, TRANSFER_ENCODING, UPGRADE,
};
use warp::http::{HeaderMap, Method, Request, Version};
use warp::reply::Response;

use super::cors::{allowed_origin, decorate, preflight};
use super::error::internal_error;
use super::{handlers, Api};
use crate::access::Access;
use crate::hub::Outlet;

/// A client that has not sent its request head after this long is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest request head read here; a larger one goes to hyper, which answers it.
const HEAD_LIMIT: usize = 16 * 1024;

/// Headers parsed here; a request with more goes to hyper.
const MAX_HEADERS: usize = 64;

/// The socket of a subscription served here, passed to the route in the
/// request's extensions: the hub's writer may send to it directly.
#[derive(Clone)]
pub(crate) struct EventSocket(pub(crate) Arc<TcpStream>);

impl Outlet for TcpStream {
    /// A plain non-blocking `send`, without tokio's readiness bookkeeping: the
    /// hub's writer calls this for thousands of sockets in a row, and skipping
    /// that bookkeeping saves touching one more cold cache line per socket.
    /// tokio's own view stays correct: it only ever clears readiness on a
    /// `WouldBlock` it saw itself, and the next writable edge sets it again.
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(self).send(bytes)
    }
}

/// What the start of a connection turned out to be.
enum Head {
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
struct SendHead {
    channel: String,
    headers: HeaderMap,
    /// Bytes of the head, at the start of the connection's buffer.
    head_len: usize,
    body_len: usize,
}

/// Serves one connection until it closes or the server stops.
pub(crate) async fn serve_connection<S>(mut stream: TcpStream, service: S, api: Api, stop: CancellationToken)
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible>
        + Service<Request<Empty<Bytes>>, Response = Response, Error = Infallible>
        + Clone
        + Send
        + 'static,
    <S as Service<Request<Incoming>>>::Future: Send + 'static,
    <S as Service<Request<Empty<Bytes>>>>::Future: Send + 'static,
{
    let mut buffer = BytesMut::with_capacity(1024);
    let mut kind = next_head(&mut stream, &mut buffer, api.body_limit, &stop).await;
    loop {
        match kind {
            Head::Closed => return,
            // Boxed, like hyper's connection below: the many connections that
            // stream do not carry the size of a send in their own future.
            Head::Send(send) => match Box::pin(serve_sends(&mut stream, &mut buffer, &api, *send, &stop)).await {
                Some(next) => kind = next,
                None => return,
            },
            Head::Events(mut request) => {
                drop(buffer);
                let socket = Arc::new(stream);
                request.extensions_mut().insert(EventSocket(Arc::clone(&socket)));
                let mut service = service;
                // Boxed: the routes' future is large and needed only until the
                // stream begins, while this task's own future lives as long
                // as the stream (and is what an idle subscriber costs).
                let response = Box::pin(respond(&mut service, &api.access, *request)).await;
                drop((service, api));
                write_stream(socket, response).await;
                return;
            }
            Head::Other => {
                let access = Arc::clone(&api.access);
                drop(api);
                Box::pin(serve_with_hyper(
                    Rewind::new(buffer.freeze(), stream),
                    service,
                    access,
                    stop,
                ))
                .await;
                return;
            }
        }
    }
}

/// Answers `first` and the sends that follow it on this keep-alive
/// connection; the first request that is not a send, or `None` when the
/// connection is done.
async fn serve_sends(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    api: &Api,
    first: SendHead,
    stop: &CancellationToken,
) -> Option<Head> {
    let mut send = first;
    loop {
        serve_send(stream, buffer, api, send, stop).await.ok()?;
        match next_head(stream, buffer, api.body_limit, stop).await {
            Head::Send(next) => send = *next,
            Head::Closed => return None,
            other => return Some(other),
        }
    }
}

/// The next request head, within the header timeout and unless the server stops.
async fn next_head(stream: &mut TcpStream, buffer: &mut BytesMut, body_limit: usize, stop: &CancellationToken) -> Head {
    tokio::select! {
        kind = tokio::time::timeout(HEADER_READ_TIMEOUT, read_head(stream, buffer, body_limit)) => {
            kind.unwrap_or(Head::Closed)
        }
        () = stop.cancelled() => Head::Closed,
    }
}

/// Reads the body of `send` (whose head starts `buffer`), answers it and
/// writes the answer; `Err` when the connection is done (closed, the body
/// slower than the header timeout, or the server stops before the body is
/// in: a send whose body was read is always answered). What follows the body
/// stays in `buffer`.
async fn serve_send(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    api: &Api,
    send: SendHead,
    stop: &CancellationToken,
) -> io::Result<()> {
    let total = send.head_len + send.body_len;
    let read = async {
        while buffer.len() < total {
            buffer.reserve(total - buffer.len());
            if stream.read_buf(buffer).await? == 0 {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
        }
        Ok(())
    };
    tokio::select! {
        read = tokio::time::timeout(HEADER_READ_TIMEOUT, read) => read??,
        () = stop.cancelled() => return Err(io::ErrorKind::Interrupted.into()),
    }
    let body = buffer.split_to(total).split_off(send.head_len).freeze();
    let origin = allowed_origin(&api.access, &send.headers);
    let chunk = futures::stream::iter([Ok::<_, warp::Error>(body)]);
    let response = guarded(origin, handlers::send(api.clone(), send.channel, send.headers, chunk)).await;
    write_response(stream, response).await
}

/// Reads until the request head is complete, and sorts it.
async fn read_head(stream: &mut TcpStream, head: &mut BytesMut, body_limit: usize) -> Head {
    loop {
        if !head.is_empty() {
            if let Some(kind) = sort_head(head, body_limit) {
                return kind;
            }
            if head.len() >= HEAD_LIMIT {
                return Head::Other;
            }
        }
        head.reserve(1024);
        match stream.read_buf(head).await {
            Ok(0) | Err(_) if head.is_empty() => return Head::Closed,
            Ok(0) | Err(_) => return Head::Other,
            Ok(_) => {}
        }
    }
}

/// What a connection's buffer starts with; `None` while the head is
/// incomplete. Not async, so that the parser's header array lives on the
/// stack for the call, not in every connection's future for its lifetime.
fn sort_head(head: &[u8], body_limit: usize) -> Option<Head> {
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

/// The answer to one request, as every connection gives it: a CORS preflight
/// is answered here; everything else by the routes, with a panic answered as a
/// 500 `internal` (logged) instead of a dropped connection, and the CORS
/// headers of an allowed origin added.
async fn respond<S, B>(service: &mut S, access: &Access, request: Request<B>) -> Response
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
{
    if let Some(answer) = preflight(access, request.method(), request.headers()) {
        return answer;
    }
    let origin = allowed_origin(access, request.headers());
    let answer = service.call(request).map(|result| match result {
        Ok(response) => response,
        Err(never) => match never {},
    });
    guarded(origin, answer).await
}

/// `answer`, or a 500 `internal` (logged) if it panics, with the CORS
/// headers of `origin` (an allowed one) added.
///
/// A combinator rather than an `async fn`: an async function that takes a
/// future by value keeps room for it twice in its caller's future (the
/// argument and the callee's copy), and every subscriber's task carries its
/// caller's size for as long as its stream is open.
fn guarded(origin: Option<HeaderValue>, answer: impl Future<Output = Response>) -> impl Future<Output = Response> {
    AssertUnwindSafe(answer).catch_unwind().map(move |result| {
        let mut response = result.unwrap_or_else(|_| {
            tracing::error!("a request handler panicked");
            internal_error()
        });
        decorate(&mut response, origin);
        response
    })
}

/// Writes a complete answer to a keep-alive request in one write: the head
/// as hyper would write it (with `date` and `content-length`), then the body.
async fn write_response(stream: &TcpStream, response: Response) -> io::Result<()> {
    let (parts, body) = response.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|error| io::Error::other(format!("answer body: {error}")))?
        .to_bytes();
    let mut bytes = head_of(&parts);
    let _ = write!(bytes, "content-length: {}\r\n\r\n", body.len());
    bytes.extend_from_slice(&body);
    write_all(stream, &bytes).await
}

/// The status line and headers of an answer as HTTP/1.1 text, with `date`
/// (as hyper writes it) and without the framing headers (`connection`,
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
/// yields it, until the stream ends or the client goes away.
async fn write_stream(socket: Arc<TcpStream>, response: Response) {
    let (parts, body) = response.into_parts();
    let mut head = head_of(&parts);
    // Dropped now rather than at the end of the stream, so this future (which
    // lives as long as the stream) need not keep room for it.
    drop(parts);
    if let Some(length) = http_body::Body::size_hint(&body).exact() {
        let _ = write!(head, "content-length: {length}\r\n");
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    if write_all(&socket, &head).await.is_err() {
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
                frame = body.frame() => Some(frame),
                () = &mut gone => None,
            };
            match step {
                Some(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if write_all(&socket, &data).await.is_err() {
                            break;
                        }
                    }
                }
                Some(Some(Err(error))) => {
                    tracing::debug!(%error, "stream body failed");
                    break;
                }
                Some(None) | None => break,
            }
        }
    }
    let _ = socket2::SockRef::from(&*socket).shutdown(std::net::Shutdown::Write);
}

/// Writes all of `bytes`, waiting while the socket is full. The socket is
/// shared with the hub's writer, so this goes through `&TcpStream`.
async fn write_all(socket: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match socket.try_write(bytes) {
            Ok(written) => bytes = &bytes[written..],
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => socket.writable().await?,
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

/// Completes when the client has closed its side. A subscriber sends nothing
/// after its request, so anything it does send is read and dropped.
async fn client_gone(stream: &TcpStream) {
    let mut sink = [0u8; 64];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

/// Every other request: hyper's HTTP/1 connection, keep-alive and all.
async fn serve_with_hyper<S>(io: Rewind, service: S, access: Arc<Access>, stop: CancellationToken)
where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        let (mut service, access) = (service.clone(), Arc::clone(&access));
        async move { Ok::<_, Infallible>(respond(&mut service, &access, request).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.cancelled() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// A connection whose first bytes were already read: they are read again first.
struct Rewind {
    prefix: Bytes,
    stream: TcpStream,
}

impl Rewind {
    fn new(prefix: Bytes, stream: TcpStream) -> Self {
        Rewind { prefix, stream }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
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
