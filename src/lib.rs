//! # ssehub
//!
//! A Server-Sent Events pub/sub hub. Browsers subscribe to channels with
//! `EventSource`; backends send JSON messages with a POST; every subscriber of
//! the channel gets each message once, in order, and a subscriber that comes
//! back with its last id gets what it missed. The wire contract is in
//! `protocol/` (prose, JSON Schemas, OpenAPI); this crate enforces it.
//!
//! The modules follow the data flow, outside in:
//!
//! | module | role |
//! |---|---|
//! | [`server`] | `run(listener, config, shutdown)`: connections, tasks, graceful stop |
//! | `http` | routes, handlers, and the one mapping of errors to HTTP answers |
//! | [`protocol`] | wire types (channel names, ids, bodies) validated against `protocol/*.schema.json` |
//! | [`hub`] | publish, subscribe: resume position, replay, live fan-out, heartbeats, timeouts |
//! | [`store`] | the [`store::Store`] trait and the in-memory store: ids, history, retention |
//! | [`sse`] | SSE frame encoding, once per message |
//! | [`access`] | publisher keys, per-channel policies, CORS origins |
//! | [`config`] | flags and `SSEHUB_*` environment variables |
//!
//! ```text
//! POST /channels/{c}/messages → http → protocol (parse + schema) → hub::publish
//!        → store::append (id, encode once, retain) → fan-out ring + kick the topic's writer
//!        → writer: one non-blocking write per up-to-date subscriber's socket
//! GET /channels/{c}/events    → http → hub::subscribe: follow, resume position,
//!        replay from store, then live from the ring → bytes (+ heartbeat, timeout, shutdown);
//!        parked with the topic's writer while up to date
//! ```

pub mod access;
pub mod config;
mod demo;
mod http;
pub mod hub;
pub mod protocol;
pub mod server;
mod shards;
pub mod sse;
pub mod store;
