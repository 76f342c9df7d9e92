//! Client connections: an SSE subscriber stream and a keep-alive publisher.

use std::cell::RefCell;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::http::{self, Body, Head};
use crate::sse::{Handler, Parser};

thread_local! {
    /// One read buffer per thread, shared by every connection of that thread:
    /// an idle stream holds no buffer, and reads are handled before the next await.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch {
        buf: vec![0u8; 256 * 1024].into_boxed_slice(),
        cmsg: nix::cmsg_space!(TimeSpec),
    });
}

/// The per-thread buffers of [`SseConn::read`].
struct Scratch {
    /// Received bytes.
    buf: Box<[u8]>,
    /// Room for one `SCM_TIMESTAMPNS` control message; allocated once, as
    /// `cmsg_space!` does, so that it has the alignment a `cmsghdr` needs.
    cmsg: Vec<u8>,
}

/// What a read of an event stream ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// Bytes were handled; the stream goes on.
    More,
    /// The server ended the body or closed the connection.
    End,
}

/// An open event stream (response head already read, status 200).
pub(crate) struct SseConn {
    stream: TcpStream,
    body: Body,
    parser: Parser,
    pending: Vec<u8>,
    /// Bytes received after the head.
    pub(crate) bytes: u64,
}

/// What every batch of received bytes also tells the handler.
pub(crate) trait Batch: Handler {
    /// Called once per read before its bytes are parsed, with the kernel's
    /// software receive timestamp of that read (ns since the UNIX epoch,
    /// `CLOCK_REALTIME`) when the stream asked for one
    /// ([`SseConn::stamp_arrivals`]) and the kernel gave it.
    ///
    /// For TCP the kernel reports the timestamp of the last segment that the
    /// read consumed, and the read may return several frames that arrived at
    /// different times: for every frame but the last one of a read the value is
    /// an upper bound of its arrival time.
    fn batch_start(&mut self, _arrival_ns: Option<u64>) {}
}

impl SseConn {
    /// Connects, sends `request`, reads the head; fails unless the status is 200.
    pub(crate) async fn open(
        addr: SocketAddr,
        source: Option<IpAddr>,
        request: &[u8],
        timeout: Duration,
    ) -> Result<SseConn, String> {
        match tokio::time::timeout(timeout, Self::open_inner(addr, source, request, timeout)).await {
            Ok(r) => r,
            Err(_) => Err(format!("subscribe: no response head within {timeout:?}")),
        }
    }

    async fn open_inner(
        addr: SocketAddr,
        source: Option<IpAddr>,
        request: &[u8],
        timeout: Duration,
    ) -> Result<SseConn, String> {
        let stream = http::connect(addr, source, timeout)
            .await
            .map_err(|e| format!("connect {addr} from {source:?}: {e}"))?;
        // Closing with RST leaves no TIME_WAIT behind: runs of 19,000 connections
        // can follow each other from the same source addresses.
        let _ = stream.set_zero_linger();
        http::write_all(&stream, request)
            .await
            .map_err(|e| format!("send subscribe request: {e}"))?;
        let mut head_buf = Vec::with_capacity(512);
        let head: Head = loop {
            let mut tmp = [0u8; 4096];
            stream.readable().await.map_err(|e| format!("read head: {e}"))?;
            match stream.try_read(&mut tmp) {
                Ok(0) => return Err("connection closed before the response head".into()),
                Ok(n) => head_buf.extend_from_slice(&tmp[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(format!("read head: {e}")),
            }
            if let Some(head) = http::parse_head(&head_buf)? {
                break head;
            }
        };
        if head.status != 200 {
            let body = String::from_utf8_lossy(&head_buf[head.len..]);
            let body: String = body.chars().take(300).collect();
            return Err(format!("subscribe: HTTP {} {body}", head.status));
        }
        let pending = head_buf[head.len..].to_vec();
        Ok(SseConn {
            stream,
            body: Body::for_head(&head),
            parser: Parser::new(),
            pending,
            bytes: 0,
        })
    }

    /// Asks the kernel to timestamp what this socket receives (`SO_TIMESTAMPNS`):
    /// from then on every read hands [`Batch::batch_start`] the time its bytes
    /// were queued to the socket. On loopback that happens in the sender's
    /// `send`, so the time does not include how long the load generator took to
    /// come round to this socket.
    ///
    /// # Errors
    ///
    /// The kernel's refusal, as text; the stream still works, without timestamps.
    pub(crate) fn stamp_arrivals(&self) -> Result<(), String> {
        setsockopt(&self.stream, sockopt::ReceiveTimestampns, &true).map_err(|e| format!("SO_TIMESTAMPNS: {e}"))
    }

    /// Waits for bytes and hands them to `h`.
    pub(crate) async fn read(&mut self, h: &mut impl Batch) -> Result<Read, String> {
        if !self.pending.is_empty() {
            // Read together with the response head, before any timestamp was asked for.
            let pending = std::mem::take(&mut self.pending);
            self.bytes += pending.len() as u64;
            h.batch_start(None);
            if self.feed(&pending, h)? {
                return Ok(Read::End);
            }
            return Ok(Read::More);
        }
        loop {
            self.stream.readable().await.map_err(|e| format!("read: {e}"))?;
            let step = SCRATCH.with(|cell| {
                let Scratch { buf, cmsg } = &mut *cell.borrow_mut();
                let received = self
                    .stream
                    .try_io(Interest::READABLE, || recv_stamped(&self.stream, buf, cmsg));
                match received {
                    Ok((0, _)) => Ok(Some(Read::End)),
                    Ok((n, arrival_ns)) => {
                        self.bytes += n as u64;
                        h.batch_start(arrival_ns);
                        if self.feed(&buf[..n], h)? {
                            Ok(Some(Read::End))
                        } else {
                            Ok(Some(Read::More))
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
                    Err(e) => Err(format!("read: {e}")),
                }
            });
            if let Some(r) = step? {
                return Ok(r);
            }
        }
    }

    /// Returns true when the body is complete.
    fn feed(&mut self, data: &[u8], h: &mut impl Handler) -> Result<bool, String> {
        let SseConn { body, parser, .. } = self;
        let mut error = None;
        let done = body.feed(data, &mut |piece| {
            if error.is_none() {
                if let Err(e) = parser.feed(piece, h) {
                    error = Some(e);
                }
            }
        })?;
        match error {
            Some(e) => Err(e),
            None => Ok(done),
        }
    }
}

/// One `recvmsg` into `buf`: the byte count and the `SCM_TIMESTAMPNS` time,
/// if the kernel attached one (ns since the UNIX epoch).
fn recv_stamped(stream: &TcpStream, buf: &mut [u8], cmsg: &mut [u8]) -> io::Result<(usize, Option<u64>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(stream.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty())?;
    // A truncated control buffer (`cmsgs` fails) only loses the timestamp.
    let arrival_ns = msg.cmsgs().ok().and_then(|mut cmsgs| {
        cmsgs.find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(ts) => u64::try_from(ts.tv_sec())
                .ok()
                .map(|s| s * 1_000_000_000 + ts.tv_nsec() as u64),
            _ => None,
        })
    });
    Ok((msg.bytes, arrival_ns))
}

/// A keep-alive connection for POSTs, one request at a time.
pub(crate) struct PubConn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    timeout: Duration,
    /// Room for one `SCM_TIMESTAMPNS` control message.
    cmsg: Vec<u8>,
    /// Kernel receive time of the last bytes of the latest response (ns since
    /// the UNIX epoch), when the kernel gave one.
    answered_ns: Option<u64>,
    /// Connections opened (1 + reconnects).
    pub(crate) connects: u64,
}

impl PubConn {
    /// A connection to `addr`, opened at the first request.
    pub(crate) fn new(addr: SocketAddr, timeout: Duration) -> PubConn {
        PubConn {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            timeout,
            cmsg: nix::cmsg_space!(TimeSpec),
            answered_ns: None,
            connects: 0,
        }
    }

    /// When the kernel received the end of the latest response: on loopback,
    /// when the server sent it, however late this process came to read it.
    pub(crate) fn answered_ns(&self) -> Option<u64> {
        self.answered_ns
    }

    /// Sends one complete request and reads the whole response; returns its status.
    /// A keep-alive connection that the server closed before answering is
    /// reopened once.
    pub(crate) async fn request(&mut self, req: &[u8]) -> Result<u16, String> {
        for attempt in 0..2 {
            let fresh = self.stream.is_none();
            if fresh {
                let s = http::connect(self.addr, None, self.timeout)
                    .await
                    .map_err(|e| format!("connect {}: {e}", self.addr))?;
                let _ = s.set_nodelay(true);
                // Without timestamps, answered_ns() is just None.
                let _ = setsockopt(&s, sockopt::ReceiveTimestampns, &true);
                self.connects += 1;
                self.stream = Some(s);
            }
            let result = match tokio::time::timeout(self.timeout, self.exchange(req)).await {
                Ok(r) => r,
                Err(_) => Err(Exchange::Failed(format!(
                    "no complete response within {:?}",
                    self.timeout
                ))),
            };
            match result {
                Ok((status, close)) => {
                    if close {
                        self.stream = None;
                    }
                    return Ok(status);
                }
                Err(Exchange::ClosedEarly) if attempt == 0 && !fresh => {
                    self.stream = None;
                }
                Err(Exchange::ClosedEarly) => {
                    self.stream = None;
                    return Err("connection closed before a response".into());
                }
                Err(Exchange::Failed(e)) => {
                    self.stream = None;
                    return Err(e);
                }
            }
        }
        Err("connection closed before a response (twice)".into())
    }

    async fn exchange(&mut self, req: &[u8]) -> Result<(u16, bool), Exchange> {
        let stream = self.stream.as_ref().expect("connected");
        if let Err(e) = http::write_all(stream, req).await {
            return Err(match e.kind() {
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset => Exchange::ClosedEarly,
                _ => Exchange::Failed(format!("send: {e}")),
            });
        }
        self.buf.clear();
        self.answered_ns = None;
        let mut tmp = [0u8; 8192];
        let cmsg = &mut self.cmsg;
        let answered = &mut self.answered_ns;
        let head = loop {
            let n = read_some(stream, &mut tmp, cmsg, answered).await?;
            if n == 0 {
                return Err(if self.buf.is_empty() {
                    Exchange::ClosedEarly
                } else {
                    Exchange::Failed("connection closed inside the response head".into())
                });
            }
            self.buf.extend_from_slice(&tmp[..n]);
            if let Some(head) = http::parse_head(&self.buf).map_err(Exchange::Failed)? {
                break head;
            }
        };
        let no_body = head.status == 204 || head.status == 304 || (100..200).contains(&head.status);
        if no_body {
            return Ok((head.status, head.close));
        }
        let mut body = Body::for_head(&head);
        let until_close = matches!(body, Body::UntilClose);
        let mut done = body
            .feed(&self.buf[head.len..], &mut |_| {})
            .map_err(|e| Exchange::Failed(e.into()))?;
        while !done {
            let n = read_some(stream, &mut tmp, cmsg, answered).await?;
            if n == 0 {
                if until_close {
                    return Ok((head.status, true));
                }
                return Err(Exchange::Failed("connection closed inside the body".into()));
            }
            done = body
                .feed(&tmp[..n], &mut |_| {})
                .map_err(|e| Exchange::Failed(e.into()))?;
        }
        Ok((head.status, head.close || until_close))
    }
}

enum Exchange {
    ClosedEarly,
    Failed(String),
}

/// One read of a response; `stamp` becomes the kernel's receive time of what
/// it read, when there is one.
async fn read_some(
    stream: &TcpStream,
    buf: &mut [u8],
    cmsg: &mut [u8],
    stamp: &mut Option<u64>,
) -> Result<usize, Exchange> {
    loop {
        if let Err(e) = stream.readable().await {
            return Err(Exchange::Failed(format!("read: {e}")));
        }
        match stream.try_io(Interest::READABLE, || recv_stamped(stream, buf, cmsg)) {
            Ok((n, arrival_ns)) => {
                if arrival_ns.is_some() {
                    *stamp = arrival_ns;
                }
                return Ok(n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(0),
            Err(e) => return Err(Exchange::Failed(format!("read: {e}"))),
        }
    }
}
