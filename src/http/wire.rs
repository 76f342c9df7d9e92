//! HTTP/1.1 written by the connection task itself: complete answers to
//! keep-alive sends, and close-delimited event streams whose socket the hub's
//! writer shares.

use std::io::{self, Write as _};
use std::sync::Arc;

use http_body_util::BodyExt;
use tokio::net::TcpStream;
use warp::http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use warp::reply::Response;

/// Writes a complete answer to a keep-alive request in one write: the head
/// as hyper would write it (with `date` and `content-length`), then the body.
pub(super) async fn write_response(stream: &TcpStream, response: Response) -> io::Result<()> {
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
pub(super) async fn write_stream(socket: Arc<TcpStream>, response: Response) {
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
