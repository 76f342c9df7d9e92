//! The little HTTP/1.1 this tool needs: writing requests, parsing a response
//! head, and decoding a chunked or sized body incrementally, without copies.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};

/// Connects to `addr`, from `source` (port chosen by the kernel) when given.
pub(crate) async fn connect(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = source {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    match tokio::time::timeout(timeout, socket.connect(addr)).await {
        Ok(result) => result,
        Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
    }
}

/// Writes all of `buf`.
pub(crate) async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A GET for an event stream; `headers` are extra `Name: value\r\n` lines.
pub(crate) fn sse_request(host: &str, headers: &str, path: &str, last_event_id: Option<&str>) -> Vec<u8> {
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n{headers}"
    );
    if let Some(id) = last_event_id {
        req.push_str("Last-Event-ID: ");
        req.push_str(id);
        req.push_str("\r\n");
    }
    req.push_str("\r\n");
    req.into_bytes()
}

/// Appends a JSON POST to `out`; `headers` are extra `Name: value\r\n` lines.
pub(crate) fn post_request(out: &mut Vec<u8>, host: &str, headers: &[u8], path: &[u8], body: &[u8]) {
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(headers);
    out.extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
    push_u64(out, body.len() as u64);
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
}

/// Appends the decimal digits of `v` without allocating.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// What a response head says about the body.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub(crate) status: u16,
    /// Bytes of the head, blank line included.
    pub(crate) len: usize,
    pub(crate) chunked: bool,
    pub(crate) content_length: Option<u64>,
    pub(crate) close: bool,
}

/// Parses a response head if `buf` holds all of it.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > 64 * 1024 {
            return Err("response head over 64 KiB".into());
        }
        return Ok(None);
    };
    let text = std::str::from_utf8(&buf[..end]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut head = Head {
        status,
        len: end + 4,
        chunked: false,
        content_length: None,
        close: version == "HTTP/1.0",
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            head.chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            head.content_length = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                head.close = true;
            } else if v.contains("keep-alive") {
                head.close = false;
            }
        }
    }
    Ok(Some(head))
}

/// Position of `needle` in `hay`.
pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let last_start = hay.len() - needle.len();
    let mut i = 0;
    while i <= last_start {
        match hay[i..=last_start].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Ext,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    Done,
}

/// Incremental body decoder.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// `Transfer-Encoding: chunked`.
    Chunked { state: ChunkState },
    /// `Content-Length`: bytes still to come.
    Length(u64),
    /// Body ends when the connection closes.
    UntilClose,
}

/// State of a chunked decoder.
#[derive(Debug, Clone)]
pub(crate) struct ChunkState {
    state: Chunk,
    size: u64,
}

impl Body {
    /// The decoder for a response with `head` (to a GET).
    pub(crate) fn for_head(head: &Head) -> Body {
        if head.chunked {
            Body::Chunked {
                state: ChunkState {
                    state: Chunk::Size,
                    size: 0,
                },
            }
        } else if let Some(n) = head.content_length {
            Body::Length(n)
        } else {
            Body::UntilClose
        }
    }

    /// Decodes `input`, handing body bytes to `sink`. Returns true when the body is complete.
    pub(crate) fn feed(&mut self, mut input: &[u8], sink: &mut impl FnMut(&[u8])) -> Result<bool, &'static str> {
        match self {
            Body::UntilClose => {
                sink(input);
                Ok(false)
            }
            Body::Length(rest) => {
                let n = (*rest).min(input.len() as u64) as usize;
                if n > 0 {
                    sink(&input[..n]);
                }
                *rest -= n as u64;
                Ok(*rest == 0)
            }
            Body::Chunked { state: st } => {
                while !input.is_empty() {
                    if st.state == Chunk::Data {
                        let n = st.size.min(input.len() as u64) as usize;
                        sink(&input[..n]);
                        st.size -= n as u64;
                        input = &input[n..];
                        if st.size == 0 {
                            st.state = Chunk::DataCr;
                        }
                        continue;
                    }
                    let b = input[0];
                    input = &input[1..];
                    st.state = match (st.state, b) {
                        (Chunk::Size, b'0'..=b'9') => {
                            st.size = st.size * 16 + u64::from(b - b'0');
                            Chunk::Size
                        }
                        (Chunk::Size, b'a'..=b'f') => {
                            st.size = st.size * 16 + u64::from(b - b'a' + 10);
                            Chunk::Size
                        }
                        (Chunk::Size, b'A'..=b'F') => {
                            st.size = st.size * 16 + u64::from(b - b'A' + 10);
                            Chunk::Size
                        }
                        (Chunk::Size | Chunk::Ext, b';' | b' ' | b'\t') => Chunk::Ext,
                        (Chunk::Size | Chunk::Ext, b'\r') => Chunk::SizeLf,
                        (Chunk::Size | Chunk::Ext | Chunk::SizeLf, b'\n') => {
                            if st.size == 0 {
                                Chunk::TrailerStart
                            } else {
                                Chunk::Data
                            }
                        }
                        (Chunk::Ext, _) => Chunk::Ext,
                        (Chunk::DataCr, b'\r') => Chunk::DataLf,
                        (Chunk::DataCr | Chunk::DataLf, b'\n') => {
                            st.size = 0;
                            Chunk::Size
                        }
                        (Chunk::TrailerStart, b'\r') => Chunk::TrailerLf,
                        (Chunk::TrailerStart | Chunk::TrailerLf, b'\n') => Chunk::Done,
                        (Chunk::TrailerLine, b'\n') => Chunk::TrailerStart,
                        (Chunk::TrailerStart | Chunk::TrailerLine, _) => Chunk::TrailerLine,
                        (Chunk::Done, _) => Chunk::Done,
                        _ => return Err("bad chunked encoding"),
                    };
                    if st.state == Chunk::Done {
                        return Ok(true);
                    }
                }
                Ok(st.state == Chunk::Done)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(head: &Head, wire: &[u8], step: usize) -> (Vec<u8>, bool) {
        let mut body = Body::for_head(head);
        let mut out = Vec::new();
        let mut done = false;
        for piece in wire.chunks(step) {
            done = body.feed(piece, &mut |b| out.extend_from_slice(b)).unwrap();
            if done {
                break;
            }
        }
        (out, done)
    }

    #[test]
    fn head_and_chunked() {
        let wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/event-stream\r\n\r\n";
        let head = parse_head(wire).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert!(head.chunked);
        assert_eq!(head.len, wire.len());
        assert!(parse_head(&wire[..20]).unwrap().is_none());
        let body = b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-T: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 1000] {
            let (out, done) = decode_all(&head, body, step);
            assert_eq!(out, b"helloabcdefghijklmnopqrstuvwxyz");
            assert!(done);
        }
        let sized = parse_head(b"HTTP/1.1 201 Created\r\ncontent-length: 3\r\nConnection: close\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(sized.close);
        let (out, done) = decode_all(&sized, b"abcdef", 2);
        assert_eq!(out, b"abc");
        assert!(done);
        let mut v = Vec::new();
        push_u64(&mut v, 0);
        push_u64(&mut v, 1234567890123);
        assert_eq!(v, b"01234567890123");
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
    }
}
