//! `floor`: the cheapest fan-out server there can be, as a yardstick.
//!
//! One blocking `write` per delivery and nothing else: no HTTP parsing beyond
//! finding the head's end and `Content-Length`, no JSON, no history, no ids
//! beyond a counter, no timers, no protection against a slow subscriber (a full
//! socket blocks the publisher). What it costs per delivery is what the kernel
//! costs on this machine for one small write to a loopback TCP socket, so a
//! target above what this reaches is out of reach for any server that writes
//! each delivery with its own system call. It is not a server to use.
//!
//! `GET <anything>/{channel}` subscribes to the channel named by the last
//! path segment; `POST <anything>/{channel}` sends the body, which must be one
//! line, as `data:` to every subscriber of that channel and answers `201`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};

/// Subscribers by channel name.
type Channels = Arc<Mutex<HashMap<Vec<u8>, Vec<TcpStream>>>>;

const STREAM_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";
const CREATED: &[u8] = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}";

/// Serves on `listen` until killed; prints `listening on http://ADDR` first.
pub(crate) fn run(listen: &str) -> io::Result<()> {
    let listener = TcpListener::bind(listen)?;
    println!("listening on http://{}", listener.local_addr()?);
    let channels = Channels::default();
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let channels = Arc::clone(&channels);
        std::thread::spawn(move || {
            let _ = serve(stream, &channels);
        });
    }
    Ok(())
}

/// One connection: a subscription (handed to its channel, and this thread
/// ends), or keep-alive POSTs, each written to every subscriber in turn.
fn serve(mut stream: TcpStream, channels: &Channels) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = Vec::with_capacity(4096);
    let mut seq = 0u64;
    loop {
        let head_len = loop {
            if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            if !read_more(&mut stream, &mut buffer)? {
                return Ok(());
            }
        };
        let head = &buffer[..head_len];
        let channel = channel_of(head).to_vec();
        if head.starts_with(b"GET ") {
            stream.write_all(STREAM_HEAD)?;
            lock(channels).entry(channel).or_default().push(stream);
            return Ok(());
        }
        let body_len = content_length(head);
        while buffer.len() < head_len + body_len {
            if !read_more(&mut stream, &mut buffer)? {
                return Ok(());
            }
        }
        seq += 1;
        let mut frame = format!("id: {seq}\ndata: ").into_bytes();
        frame.extend_from_slice(&buffer[head_len..head_len + body_len]);
        frame.extend_from_slice(b"\n\n");
        buffer.drain(..head_len + body_len);
        if let Some(subscribers) = lock(channels).get_mut(&channel) {
            subscribers.retain(|mut subscriber| subscriber.write_all(&frame).is_ok());
        }
        stream.write_all(CREATED)?;
    }
}

/// Reads what is there; false at the end of the stream.
fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> io::Result<bool> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk)?;
    buffer.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

/// The last segment of the request target's path.
fn channel_of(head: &[u8]) -> &[u8] {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    path.rsplit(|&b| b == b'/').next().unwrap_or_default()
}

fn content_length(head: &[u8]) -> usize {
    String::from_utf8_lossy(head)
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_channel_and_the_length() {
        let head = b"POST /pub/room-1?x=y HTTP/1.1\r\nHost: a\r\ncontent-length: 12\r\n\r\n";
        assert_eq!(channel_of(head), b"room-1");
        assert_eq!(content_length(head), 12);
        assert_eq!(content_length(b"GET /sub/a HTTP/1.1\r\n\r\n"), 0);
    }
}
