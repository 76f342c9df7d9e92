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
//!
//! The pieces: which requests are answered here ([`super::head`]), the
//! HTTP/1.1 this task writes ([`super::wire`]), hyper for the rest
//! ([`super::fallback`]), the panic net and CORS every answer passes
//! ([`super::guard`]), and the socket lent to the hub ([`super::socket`]).

use std::convert::Infallible;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::Empty;
use hyper::body::Incoming;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use warp::http::Request;
use warp::reply::Response;

use super::cors::allowed_origin;
use super::fallback::{serve_with_hyper, Rewind};
use super::guard::{guarded, respond};
use super::head::{sort_head, Head, SendHead};
use super::socket::EventSocket;
use super::wire::{write_response, write_stream};
use super::{handlers, Api};

/// A client that has not sent its request head after this long is dropped.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The largest request head read here; a larger one goes to hyper, which answers it.
const HEAD_LIMIT: usize = 16 * 1024;

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
                    HEADER_READ_TIMEOUT,
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
    let response = guarded(
        origin,
        handlers::send(api.clone(), send.channel, send.headers, Ok(body)),
    )
    .await;
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
