//! # ssehub
//!
//! A Server-Sent Events pub/sub hub. Browsers subscribe to channels with
//! `EventSource`; backends send JSON messages with a POST; every subscriber of
//! the channel gets each message once, in order, and a subscriber that comes
//! back with its last id gets what it missed. The wire contract is in
//! `protocol/` (prose, JSON Schemas, OpenAPI); this crate enforces it.
//!
//! The public API is what an embedder needs: [`run`] the server on a bound
//! listener with a [`Config`], and the [`schema`]s of the contract to check
//! what it says. Everything else is internal.
//!
//! The modules follow the data flow, outside in:
//!
//! | module | role |
//! |---|---|
//! | `server` | [`run`]`(listener, config, shutdown)`: the store, the accept loop, every task, graceful stop |
//! | `http` | the connection task, routes, handlers, and the one mapping of errors to HTTP answers |
//! | `protocol` | wire types (channel names, ids, bodies) validated against `protocol/*.schema.json` |
//! | `hub` | publish, subscribe: resume position, replay, live fan-out, heartbeats, timeouts |
//! | `store` | the message log and the client registry: memory, file (redb) and Redis stores |
//! | `sse` | SSE frame encoding, once per message |
//! | `access` | publisher keys, per-channel policies, CORS origins |
//! | `config` | flags and `SSEHUB_*` environment variables |
//! | `capacity` | the connection and stream limits the open-file limit allows |
//! | `demo` | the demo backend, an add-on beside the API (cargo feature `demo`, on by default) |
//!
//! ```text
//! POST /channels/{c}/messages → http → protocol (parse + schema) → hub::publish
//!        → store log append (id, encode once, retain) → fan-out ring + kick the topic's writer
//!        → writer: one non-blocking write per up-to-date subscriber's socket
//! GET /channels/{c}/events    → http → hub::subscribe: follow, resume position,
//!        replay from the store, then live from the ring → bytes (+ heartbeat, timeout, shutdown);
//!        parked with the topic's writer while up to date
//! ```

mod access;
mod capacity;
mod config;
#[cfg(feature = "demo")]
mod demo;
mod http;
mod hub;
mod protocol;
mod server;
mod shards;
mod sse;
mod store;

pub use access::{PolicyRule, Secret};
pub use config::{Config, StoreChoice};
pub use protocol::schema;
pub use server::{run, StartError};
pub use store::StoreError;
