//! The HTTP face of the hub: routes ([`filters`]), what each does ([`handlers`])
//! and how failures are answered ([`error`]).

mod auth;
mod connection;
mod cors;
mod error;
mod filters;
mod handlers;

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::access::Access;
use crate::hub::Hub;

pub(crate) use connection::serve_connection;
pub(crate) use filters::routes;

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
    /// Largest accepted send body, in bytes.
    pub(crate) body_limit: usize,
    /// Largest `?timeout=` a subscriber may ask for.
    pub(crate) max_timeout: Duration,
    /// Where the demo pages are.
    pub(crate) static_dir: PathBuf,
    /// `--demo`: serve the demo backend routes even with publisher keys (see `demo.rs`).
    pub(crate) demo: bool,
}
