//! Raw HTTP/1.1 over a socket: what a client library would hide, for tests
//! of the connection itself (framing, keep-alive, early answers, closes).

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{TestServer, READ};

/// One answer read off a socket.
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// Header lines, lowercased names.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Value,
}

impl Answer {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// A keep-alive connection with what it has read and not yet consumed.
pub(crate) struct Connection {
    pub(crate) socket: TcpStream,
    pub(crate) unread: Vec<u8>,
}

impl Connection {
    pub(crate) async fn open(server: &TestServer) -> Connection {
        Connection::with(TcpStream::connect(server.addr()).await.unwrap())
    }

    /// A connection over a socket already connected.
    pub(crate) fn with(socket: TcpStream) -> Connection {
        Connection {
            socket,
            unread: Vec::new(),
        }
    }

    pub(crate) async fn write(&mut self, bytes: &[u8]) {
        self.socket.write_all(bytes).await.unwrap();
    }

    /// Reads until `unread` holds `wanted` bytes (or fails after [`READ`]).
    pub(crate) async fn fill(&mut self, wanted: usize) {
        tokio::time::timeout(READ, async {
            while self.unread.len() < wanted {
                let mut chunk = [0u8; 4096];
                let n = self.socket.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed early: {:?}", String::from_utf8_lossy(&self.unread));
                self.unread.extend_from_slice(&chunk[..n]);
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no answer; read so far: {:?}", String::from_utf8_lossy(&self.unread)));
    }

    /// The next answer: its head, then exactly `Content-Length` bytes of body.
    pub(crate) async fn answer(&mut self) -> Answer {
        let head_len = loop {
            if let Some(at) = self.unread.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            self.fill(self.unread.len() + 1).await;
        };
        let head = String::from_utf8(self.unread[..head_len].to_vec()).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status_line = lines.next().unwrap();
        assert!(status_line.starts_with("HTTP/1.1 "), "{status_line}");
        let status = status_line[9..12].parse().unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.trim().to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map(|(_, v)| v.parse().unwrap())
            .unwrap_or_else(|| panic!("no content-length in {head:?}"));
        self.fill(head_len + length).await;
        let body = serde_json::from_slice(&self.unread[head_len..head_len + length]).unwrap();
        self.unread.drain(..head_len + length);
        Answer { status, headers, body }
    }

    /// Whether the server closed the connection (nothing more to read).
    pub(crate) async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(READ, self.socket.read(&mut chunk)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}
