//! The HTTP face of the hub.
//!
//! | module | role |
//! |---|---|
//! | `connection` | one task per TCP connection, speaking HTTP/1.1: requests in turn, or one event stream |
//! | `head` | request heads: parsed, checked, sorted (stream, send, other) |
//! | `incoming` | what a connection reads: heads, bodies (length or chunked), the lingering close |
//! | `wire` | what it writes: answers with their framing, close-delimited streams, write deadlines |
//! | `limits` | open connections, and each client's streams and requests in flight |
//! | `guard` | CORS preflight, the panic net and CORS headers around every answer |
//! | `socket` | the event stream's socket, lent to the hub for direct delivery |
//! | `filters` | the routes (warp) |
//! | `handlers` | what each route does |
//! | `body` | request bodies, read once within a limit |
//! | `auth`, `cors` | credentials and policies; cross-origin requests |
//! | `error` | the one mapping of errors to HTTP answers |

mod auth;
mod body;
mod connection;
mod cors;
mod error;
mod filters;
mod guard;
mod handlers;
mod head;
mod incoming;
mod limits;
mod socket;
mod wire;

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::access::Access;
use crate::hub::Hub;

pub(crate) use connection::{refuse_connection, serve_connection};
pub(crate) use filters::routes;
pub(crate) use limits::{Bounds, Limits};
pub(crate) use wire::stalled_streams;

/// What an add-on's routes (the demo backend) use: the same body reading and
/// error answers as the API's own.
#[cfg_attr(not(feature = "demo"), allow(unused_imports))]
pub(crate) use {
    body::{headers_and_body, json as json_body, Body},
    error::ApiError,
    filters::AddOn,
    handlers::answer,
};

/// What the handlers need, as one reference count: the routes clone it for
/// every request, so a clone must not copy (or a drop free) anything.
#[derive(Debug, Clone)]
pub(crate) struct Api(Arc<ApiState>);

impl Api {
    pub(crate) fn new(state: ApiState) -> Self {
        Api(Arc::new(state))
    }
}

impl Deref for Api {
    type Target = ApiState;

    fn deref(&self) -> &ApiState {
        &self.0
    }
}

/// The hub and the request limits.
#[derive(Debug)]
pub(crate) struct ApiState {
    pub(crate) hub: Hub,
    /// Keys, policies, CORS origins.
    pub(crate) access: Arc<Access>,
    /// Largest accepted request body, in bytes.
    pub(crate) body_limit: usize,
    /// Longest a request's head, and then its body, may take to arrive.
    pub(crate) request_timeout: Duration,
    /// Longest a write may wait for its client to read.
    pub(crate) write_timeout: Duration,
    /// Connections, and each client's streams and requests.
    pub(crate) limits: Arc<Limits>,
    /// Largest `?timeout=` a subscriber may ask for.
    pub(crate) max_timeout: Duration,
    /// Where the demo pages are.
    pub(crate) static_dir: PathBuf,
}
