//! What a connection reads: its buffer, request heads as they arrive, request
//! bodies (`Content-Length` or chunked, within the body limit), and the
//! lingering close that lets an early answer reach its client.

use std::io;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::head::{self, Framing, Parsed};

/// Longest chunk-size line (with extensions) and trailer section read.
const CHUNK_META_LIMIT: usize = 4 * 1024;

/// How long a closing connection keeps reading (and dropping) what its client
/// still sends, so that the answer written before is not lost to a reset: at
/// most this long in all (as nginx's `lingering_time`)…
const LINGER_TIME: Duration = Duration::from_secs(30);

/// …and this long without a byte (as nginx's `lingering_timeout`).
const LINGER_IDLE: Duration = Duration::from_secs(5);

/// One connection's socket and what has been read from it but not yet used.
pub(super) struct Conn {
    pub(super) stream: TcpStream,
    pub(super) buffer: BytesMut,
}

/// A request body as the connection read it.
#[derive(Debug)]
pub(super) enum Body {
    /// All of it.
    Whole(Bytes),
    /// Larger than the limit: not read (or not all of it), so the connection
    /// cannot carry another request.
    TooLarge,
}

impl Conn {
    pub(super) fn new(stream: TcpStream) -> Self {
        Conn {
            stream,
            buffer: BytesMut::with_capacity(1024),
        }
    }

    /// More bytes into the buffer; `Ok(0)` when the client closed its side.
    async fn fill(&mut self) -> io::Result<usize> {
        self.buffer.reserve(1024);
        self.stream.read_buf(&mut self.buffer).await
    }

    /// Reads until the buffer starts with a whole head; `None` when the
    /// connection closed (or failed) before one arrived.
    pub(super) async fn head(&mut self) -> Option<Parsed> {
        loop {
            if !self.buffer.is_empty() {
                match head::parse(&self.buffer) {
                    Parsed::Partial => {}
                    parsed => return Some(parsed),
                }
            }
            match self.fill().await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Reads the body that starts the buffer (its head already taken off).
    ///
    /// # Errors
    /// The connection closed or failed first, or (`InvalidData`) a chunked
    /// body is not well-formed.
    pub(super) async fn body(&mut self, framing: Framing, limit: usize) -> io::Result<Body> {
        match framing {
            Framing::None => Ok(Body::Whole(Bytes::new())),
            Framing::Length(length) => {
                let Some(length) = usize::try_from(length).ok().filter(|length| *length <= limit) else {
                    return Ok(Body::TooLarge);
                };
                self.buffer.reserve(length.saturating_sub(self.buffer.len()));
                while self.buffer.len() < length {
                    if self.fill().await? == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Ok(Body::Whole(self.buffer.split_to(length).freeze()))
            }
            Framing::Chunked => self.chunked(limit).await,
        }
    }

    /// Whether the whole body framed by `framing` is already in the buffer.
    pub(super) fn holds_body(&self, framing: Framing) -> bool {
        match framing {
            Framing::None => true,
            Framing::Length(length) => usize::try_from(length).is_ok_and(|length| self.buffer.len() >= length),
            Framing::Chunked => false,
        }
    }

    /// Decodes a chunked body (RFC 9112, section 7.1): chunk extensions and
    /// trailer fields are read and dropped.
    async fn chunked(&mut self, limit: usize) -> io::Result<Body> {
        let mut body = BytesMut::new();
        loop {
            let line = self.line().await?;
            let digits = line.split(|b| *b == b';').next().unwrap_or_default();
            let size = chunk_size(digits.trim_ascii_end())?;
            if size == 0 {
                break;
            }
            let Some(size) = usize::try_from(size).ok().filter(|size| body.len() + size <= limit) else {
                return Ok(Body::TooLarge);
            };
            while self.buffer.len() < size + 2 {
                if self.fill().await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            body.extend_from_slice(&self.buffer[..size]);
            self.buffer.advance(size);
            if !self.buffer.starts_with(b"\r\n") {
                return Err(malformed("a chunk does not end with CRLF"));
            }
            self.buffer.advance(2);
        }
        // Trailer fields, up to the empty line.
        let mut trailers = 0;
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                return Ok(Body::Whole(body.freeze()));
            }
            trailers += line.len();
            if trailers > CHUNK_META_LIMIT {
                return Err(malformed("the trailer section is too large"));
            }
        }
    }

    /// The next CRLF-terminated line, without its CRLF.
    async fn line(&mut self) -> io::Result<Bytes> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\r\n") {
                let line = self.buffer.split_to(end).freeze();
                self.buffer.advance(2);
                return Ok(line);
            }
            if self.buffer.len() > CHUNK_META_LIMIT {
                return Err(malformed("a chunk-size line is too long"));
            }
            if self.fill().await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Closes the connection after its last answer: the write side now, and
    /// the read side once the client has closed its own, or after a short
    /// while, reading and dropping whatever it still sends meanwhile. Closing
    /// a socket with unread bytes makes the kernel answer them with a reset,
    /// which destroys the answer before the client reads it (a client that
    /// writes its whole body first, as most HTTP clients do, would see
    /// `EPIPE` or `ECONNRESET` instead of a 413).
    pub(super) async fn linger(self) {
        let Conn { stream, buffer } = self;
        drop(buffer);
        if socket2::SockRef::from(&stream)
            .shutdown(std::net::Shutdown::Write)
            .is_err()
        {
            return;
        }
        let end = Instant::now() + LINGER_TIME;
        let mut sink = vec![0u8; 16 * 1024];
        loop {
            let deadline = end.min(Instant::now() + LINGER_IDLE);
            match tokio::time::timeout_at(deadline, stream.readable()).await {
                Ok(Ok(())) => match stream.try_read(&mut sink) {
                    Ok(0) => return, // the client closed its side
                    Ok(_) => {}
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                },
                Ok(Err(_)) | Err(_) => return,
            }
        }
    }
}

/// A chunk size: hex digits only.
fn chunk_size(digits: &[u8]) -> io::Result<u64> {
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(malformed("a chunk size is not hex digits"));
    }
    let text = std::str::from_utf8(digits).map_err(|_| malformed("a chunk size is not hex digits"))?;
    u64::from_str_radix(text, 16).map_err(|_| malformed("a chunk size is too large"))
}

fn malformed(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// Reads a body framed by `framing` from what `sent` writes, in `pieces`.
    fn read_body(sent: Vec<u8>, pieces: Vec<usize>, framing: Framing, limit: usize) -> io::Result<Body> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            let writer = tokio::spawn(async move {
                let mut socket = TcpStream::connect(address).await.unwrap();
                let mut rest = &sent[..];
                for piece in pieces.into_iter().chain(std::iter::once(usize::MAX)) {
                    let (now, later) = rest.split_at(piece.min(rest.len()));
                    if socket.write_all(now).await.is_err() {
                        return;
                    }
                    rest = later;
                    tokio::task::yield_now().await;
                }
            });
            let (stream, _) = listener.accept().await.unwrap();
            let mut conn = Conn::new(stream);
            let body = conn.body(framing, limit).await;
            drop(conn);
            let _ = writer.await;
            body
        })
    }

    /// `body` in chunks of the given sizes (the rest in a last one), with
    /// extensions and trailers for good measure.
    fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        for size in sizes.iter().copied().chain(std::iter::once(usize::MAX)) {
            if rest.is_empty() {
                break;
            }
            let (chunk, later) = rest.split_at(size.clamp(1, rest.len()));
            out.extend_from_slice(format!("{:X};ext=1\r\n", chunk.len()).as_bytes());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
            rest = later;
        }
        out.extend_from_slice(b"0\r\nTrailer: x\r\n\r\n");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// A chunked body comes out as it went in, however it is split into
        /// chunks and however the bytes arrive.
        #[test]
        fn chunked_bodies_round_trip(
            body in proptest::collection::vec(any::<u8>(), 0..3000),
            sizes in proptest::collection::vec(1usize..700, 0..8),
            pieces in proptest::collection::vec(1usize..500, 0..12),
        ) {
            let read = read_body(chunked(&body, &sizes), pieces, Framing::Chunked, 4096).unwrap();
            prop_assert!(matches!(read, Body::Whole(ref bytes) if bytes[..] == body[..]), "{read:?}");
        }

        /// Over the limit, a chunked body is refused, however it is split.
        #[test]
        fn chunked_bodies_over_the_limit_are_refused(
            extra in 1usize..500,
            sizes in proptest::collection::vec(1usize..300, 0..8),
        ) {
            let body = vec![b'x'; 1000 + extra];
            let read = read_body(chunked(&body, &sizes), Vec::new(), Framing::Chunked, 1000).unwrap();
            prop_assert!(matches!(read, Body::TooLarge), "{read:?}");
        }

        /// Damaged chunked framing is an error, never a panic or a wrong body.
        #[test]
        fn damaged_chunked_bodies_are_refused_or_exact(
            body in proptest::collection::vec(any::<u8>(), 1..400),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut sent = chunked(&body, &[50]);
            let at = at.index(sent.len());
            sent[at] = byte;
            if let Ok(Body::Whole(read)) = read_body(sent, Vec::new(), Framing::Chunked, 4096) {
                // Only a change inside the data itself can still frame.
                prop_assert_eq!(read.len(), body.len());
            }
        }
    }

    #[test]
    fn lengths_and_limits() {
        let read = read_body(b"hello, world".to_vec(), vec![3, 4], Framing::Length(5), 100).unwrap();
        assert!(matches!(read, Body::Whole(ref bytes) if &bytes[..] == b"hello"));
        assert!(matches!(
            read_body(Vec::new(), Vec::new(), Framing::Length(101), 100).unwrap(),
            Body::TooLarge
        ));
        let short = read_body(b"hel".to_vec(), Vec::new(), Framing::Length(5), 100);
        assert_eq!(short.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        for bad in [
            &b"g\r\nxx"[..],
            b"1\r\nxy\r\n",
            b"-1\r\n",
            b"\r\n",
            b"1ffffffffffffffff\r\n",
        ] {
            let read = read_body(bad.to_vec(), Vec::new(), Framing::Chunked, 100);
            assert!(read.is_err(), "{:?}: {read:?}", String::from_utf8_lossy(bad));
        }
    }
}
