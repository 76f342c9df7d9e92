//! The seam between a connection and the hub: the socket of an event stream
//! served by the connection task, lent to the hub so that its topic's writer
//! can send new frames to it directly.
//!
//! It travels from the connection task (`connection.rs`) through warp's
//! request extensions to the events route (`filters.rs`), which hands it to
//! the hub as the stream's [`Outlet`]. A stream with none (a transport that
//! cannot lend its socket) is pulled instead.

use std::io;
use std::sync::Arc;

use tokio::net::TcpStream;

use crate::hub::Outlet;

/// The socket of a subscription served by the connection task, in the
/// request's extensions: the hub's writer may send to it directly.
#[derive(Clone)]
pub(crate) struct EventSocket(pub(crate) Arc<TcpStream>);

impl Outlet for TcpStream {
    /// A plain non-blocking `send`, without tokio's readiness bookkeeping: the
    /// hub's writer calls this for thousands of sockets in a row, and skipping
    /// that bookkeeping saves touching one more cold cache line per socket.
    /// tokio's own view stays correct: it only ever clears readiness on a
    /// `WouldBlock` it saw itself, and the next writable edge sets it again.
    ///
    /// `MSG_NOSIGNAL`: a write to a connection the client has reset must fail
    /// with `EPIPE`, not raise `SIGPIPE`, which kills a process that embeds
    /// the server and has not ignored it (Rust's `main` ignores it; not every
    /// host program does).
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(self).send_with_flags(bytes, libc::MSG_NOSIGNAL)
    }
}
