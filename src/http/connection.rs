//! One task per TCP connection, and what it costs to hold one open.
//!
//! The task speaks HTTP/1.1 itself: it reads request heads into a small
//! buffer (checked by [`super::head`]), reads bodies ([`super::incoming`]),
//! calls the routes, and writes the answers ([`super::wire`]), keeping the
//! connection alive between requests as the client asks. Every request gets
//! its answer from the very same routes (so validation, credentials, CORS and
//! errors are decided in one place), through the panic net and CORS headers
//! of [`super::guard`]; every error, down to a head that cannot be parsed, is
//! the JSON error body.
//!
//! Two requests take a shorter path, because they are the server's hot ones:
//! - An event stream (`GET /channels/{channel}/events`) ends the connection's
//!   life as an HTTP connection: its answer is written straight to the socket,
//!   close-delimited (`Connection: close`, which EventSource and proxies
//!   handle, and which saves the chunked-encoding framing on every delivery),
//!   and the socket goes to the hub with the request ([`super::socket`]), so
//!   that while the subscriber is up to date its topic's writer sends new
//!   frames to it directly, without waking this task. The buffer is freed
//!   before the first frame: an idle subscriber costs this task's future and
//!   the socket, not 16 KiB of HTTP buffers.
//! - A send (`POST /channels/{channel}/messages`) is answered by the send
//!   handler itself, without warp's route matching around it.
//!
//! Time is bounded everywhere: a head, and then a body, must arrive within the
//! request timeout (an idle keep-alive connection is closed when its next head
//! does not); every write waits at most the write timeout for the client to
//! read. A connection this task closes lingers (see [`Conn::linger`]) so that
//! its last answer reaches the client.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body_util::Full;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use warp::http::{Request, Uri};
use warp::reply::Response;

use super::body::BodyTooLarge;
use super::cors::allowed_origin;
use super::error::ApiError;
use super::guard::{guarded, respond};
use super::head::{Framing, Parsed, RequestHead, Route};
use super::incoming::{Body, Conn};
use super::limits::ConnectionPermit;
use super::socket::EventSocket;
use super::wire::{write_all, write_answer, write_stream, Answer};
use super::{handlers, Api};

/// What a connection does after an answer.
enum After {
    /// Reads the next request.
    KeepAlive,
    /// Closes, lingering so that the answer reaches the client.
    Close,
    /// Closes at once: the client is gone or too slow to wait for.
    Drop,
}

/// How long the answer to a connection over the limit may take to write.
const REFUSAL_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Serves one connection until it closes or the server stops; `permit` is
/// its place among the open connections, held as long as it is open.
pub(crate) async fn serve_connection<S>(
    stream: TcpStream,
    permit: ConnectionPermit,
    service: S,
    api: Api,
    stop: CancellationToken,
) where
    S: Service<Request<Full<Bytes>>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let _permit = permit;
    let Ok(peer) = stream.peer_addr() else { return };
    let mut conn = Conn::new(stream);
    let (conn, head) = match next_head(&mut conn, &api, &stop).await {
        Some(Ok(head)) if head.route == Route::Events => (conn, head),
        // Boxed: the many connections that stream do not carry the size of
        // the request loop in their own future.
        Some(Ok(head)) => match Box::pin(serve_requests(conn, peer, &service, &api, head, &stop)).await {
            Some(events) => events,
            None => return,
        },
        Some(Err(error)) => return refuse(conn, error, &api).await,
        None => return,
    };
    serve_events(conn, peer, service, api, *head).await;
}

/// Answers a connection that came when all places were taken with
/// `503 too_many_connections`, and closes it.
pub(crate) async fn refuse_connection(stream: TcpStream) {
    let answer = Answer::last(REFUSAL_WRITE_TIMEOUT);
    let _ = write_answer(&stream, ApiError::TooManyConnections.into_response(), answer).await;
}

/// The next request head, within the request timeout and unless the server
/// stops; `None` when the connection is done, `Err` for a head that cannot be
/// served.
async fn next_head(conn: &mut Conn, api: &Api, stop: &CancellationToken) -> Option<Result<Box<RequestHead>, ApiError>> {
    let parsed = tokio::select! {
        parsed = tokio::time::timeout(api.request_timeout, conn.head()) => parsed.ok()??,
        () = stop.cancelled() => return None,
    };
    Some(match parsed {
        Parsed::Complete(head) => Ok(head),
        Parsed::Invalid(error) => Err(error),
        Parsed::Partial => Err(ApiError::BadRequest("the request head is incomplete")),
    })
}

/// Answers `first` and the requests after it on this keep-alive connection;
/// the first event stream asked for (with the connection), or `None` when the
/// connection is done.
async fn serve_requests<S>(
    mut conn: Conn,
    peer: SocketAddr,
    service: &S,
    api: &Api,
    first: Box<RequestHead>,
    stop: &CancellationToken,
) -> Option<(Conn, Box<RequestHead>)>
where
    S: Service<Request<Full<Bytes>>, Response = Response, Error = Infallible> + Clone,
{
    let mut head = first;
    loop {
        match serve_request(&mut conn, peer, service, api, head, stop).await {
            After::KeepAlive => {}
            After::Close => {
                conn.linger().await;
                return None;
            }
            After::Drop => return None,
        }
        head = match next_head(&mut conn, api, stop).await? {
            Ok(head) if head.route == Route::Events => return Some((conn, head)),
            Ok(head) => head,
            Err(error) => {
                refuse(conn, error, api).await;
                return None;
            }
        };
    }
}

/// Reads one request's body, answers the request and writes the answer.
async fn serve_request<S>(
    conn: &mut Conn,
    peer: SocketAddr,
    service: &S,
    api: &Api,
    head: Box<RequestHead>,
    stop: &CancellationToken,
) -> After
where
    S: Service<Request<Full<Bytes>>, Response = Response, Error = Infallible> + Clone,
{
    let head = *head;
    conn.buffer.advance(head.head_len);
    // A request is in flight from its head to its answer, body included: a
    // client cannot hold more places than its maximum by sending bodies slowly.
    let Some(permit) = api.limits.request(api.limits.client(peer, &head.headers)) else {
        let refusal = ApiError::TooManyRequests("this client has its maximum of requests in flight; retry later");
        answer_error(conn, refusal, api).await;
        return After::Close;
    };
    if head.expect_continue && head.body != Framing::None && !conn.holds_body(head.body) {
        let fits = match head.body {
            Framing::Length(length) => usize::try_from(length).is_ok_and(|length| length <= api.body_limit),
            _ => true,
        };
        // Only a body that will be read is asked for.
        if fits
            && write_all(&conn.stream, b"HTTP/1.1 100 Continue\r\n\r\n", api.write_timeout)
                .await
                .is_err()
        {
            return After::Drop;
        }
    }
    // A request whose head has arrived is served to the end, even while the
    // server stops (within the request timeout and the shutdown grace).
    let read = tokio::time::timeout(api.request_timeout, conn.body(head.body, api.body_limit)).await;
    let body = match read {
        Ok(Ok(body)) => body,
        Ok(Err(error)) if error.kind() == std::io::ErrorKind::InvalidData => {
            answer_error(conn, ApiError::BadRequest("the chunked body is not well-formed"), api).await;
            return After::Close;
        }
        Ok(Err(_)) => return After::Drop,
        Err(_elapsed) => {
            answer_error(conn, ApiError::RequestTimeout, api).await;
            return After::Drop;
        }
    };
    let RequestHead {
        method,
        target,
        version,
        headers,
        keep_alive,
        route,
        ..
    } = head;
    let read_whole = matches!(body, Body::Whole(_));
    let response = match route {
        Route::Send { channel } => {
            let origin = allowed_origin(&api.access, &headers);
            let body = match body {
                Body::Whole(bytes) => Ok(bytes),
                Body::TooLarge => Err(ApiError::BodyTooLarge { limit: api.body_limit }),
            };
            guarded(origin, handlers::send(api.clone(), channel, headers, body)).await
        }
        _ => {
            let Ok(uri) = target.parse::<Uri>() else {
                answer_error(conn, ApiError::BadRequest("the request target is not a URI"), api).await;
                return After::Close;
            };
            let (bytes, refused) = match body {
                Body::Whole(bytes) => (bytes, None),
                Body::TooLarge => (Bytes::new(), Some(BodyTooLarge { limit: api.body_limit })),
            };
            let mut request = Request::new(Full::new(bytes));
            *request.method_mut() = method.clone();
            *request.uri_mut() = uri;
            *request.version_mut() = version;
            *request.headers_mut() = headers;
            if let Some(refused) = refused {
                request.extensions_mut().insert(refused);
            }
            let mut service = service.clone();
            respond(&mut service, &api.access, request).await
        }
    };
    let answer = Answer {
        method: &method,
        version,
        // A body left unread, or a server stopping, ends the connection.
        keep_alive: keep_alive && read_whole && !stop.is_cancelled(),
        write_timeout: api.write_timeout,
    };
    let written = write_answer(&conn.stream, response, answer).await;
    drop(permit);
    match written {
        Ok(true) => After::KeepAlive,
        Ok(false) => After::Close,
        Err(_) => After::Drop,
    }
}

/// Answers a request that cannot be served with `error` (the connection is
/// then closed).
async fn answer_error(conn: &Conn, error: ApiError, api: &Api) {
    let _ = write_answer(&conn.stream, error.into_response(), Answer::last(api.write_timeout)).await;
}

/// Answers a head that cannot be served, and closes.
async fn refuse(conn: Conn, error: ApiError, api: &Api) {
    answer_error(&conn, error, api).await;
    conn.linger().await;
}

/// An event stream: the routes decide the answer, and this task writes it
/// for as long as the stream lasts. Whatever the client sends after its head
/// is read and dropped.
async fn serve_events<S>(conn: Conn, peer: SocketAddr, service: S, api: Api, head: RequestHead)
where
    S: Service<Request<Full<Bytes>>, Response = Response, Error = Infallible>,
{
    let Conn { stream, buffer } = conn;
    drop(buffer);
    // Held as long as the stream is open.
    let Some(_permit) = api.limits.stream(api.limits.client(peer, &head.headers)) else {
        let error =
            ApiError::TooManyRequests("this client has its maximum of open streams; close some, or retry later");
        let response = handlers::stream_refused(&api, &head.headers, error);
        return write_stream(Arc::new(stream), response, api.write_timeout).await;
    };
    let Ok(uri) = head.target.parse::<Uri>() else {
        return refuse(
            Conn::new(stream),
            ApiError::BadRequest("the request target is not a URI"),
            &api,
        )
        .await;
    };
    let socket = Arc::new(stream);
    let mut request = Request::new(Full::new(Bytes::new()));
    *request.method_mut() = head.method;
    *request.uri_mut() = uri;
    *request.version_mut() = head.version;
    *request.headers_mut() = head.headers;
    request.extensions_mut().insert(EventSocket(Arc::clone(&socket)));
    let mut service = service;
    let write_timeout = api.write_timeout;
    // Boxed: the routes' future is large and needed only until the stream
    // begins, while this task's own future lives as long as the stream (and
    // is what an idle subscriber costs).
    let response = Box::pin(respond(&mut service, &api.access, request)).await;
    drop((service, api));
    write_stream(socket, response, write_timeout).await;
}
