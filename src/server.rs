//! The one entry point: [`run`] serves the hub on a bound listener until the
//! shutdown future completes, then stops gracefully.
//!
//! The server owns every task: connection tasks (see `http::connection`,
//! which speaks HTTP/1.1 and writes event streams directly), each
//! topic's writer, the store's listener, maintenance, and the work a closing
//! stream leaves behind all run under one [`TaskTracker`] and watch one
//! [`CancellationToken`]. Shutdown is "signal, then wait": stop accepting,
//! cancel the token (every SSE stream sends its last comment and ends; a
//! request in flight is finished and answered with `Connection: close`; idle
//! keep-alive connections close), then
//! wait for the tracked tasks, at most the grace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::http::{routes, serve_connection, stalled_streams, Api, ApiState};
use crate::hub::{Fanout, Hub, HubSettings};
use crate::protocol::schema::{SchemaError, Schemas};
use crate::store::{self, Retention, StoreError};

/// Messages read from the store per step of a replay or catch-up.
const REPLAY_BATCH: usize = 1024;

/// How often idle clients are expired (their allowance is in whole seconds).
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// How often expired history is dropped and forgotten channels are released,
/// in expiry ticks.
const SWEEP_EVERY_TICKS: u64 = 30;

/// How often the count of streams ended by the write timeout is logged, in
/// expiry ticks: a count, not a line per stream, which a client could flood.
const REPORT_EVERY_TICKS: u64 = 60;

/// Serves until `shutdown` completes, then shuts down gracefully.
///
/// # Errors
/// An invalid configuration, a protocol schema that does not compile, or a
/// store that cannot be opened; all are found before anything is served.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    config.check().map_err(StartError::Config)?;
    let access = Arc::new(config.access().map_err(StartError::Config)?);
    // Compile the contract once, now, rather than on the first request.
    Schemas::load().map_err(StartError::Schema)?;
    Schemas::get();
    if access.is_open() {
        tracing::warn!(
            listen = %config.listen,
            "NO PUBLISHER KEY CONFIGURED: anyone who can reach this address may send and register clients \
             without credentials. Set --publisher-key (or SSEHUB_PUBLISHER_KEYS) for anything but local use."
        );
    }

    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let fanout = Fanout::new(usize::try_from(config.live_buffer).unwrap_or(usize::MAX), tasks.clone());
    let retention = Retention {
        max_messages: usize::try_from(config.history_size).unwrap_or(usize::MAX),
        max_age: config.history_age(),
    };
    let store = store::open(&config.store, retention, fanout.clone(), &tasks, &stop)
        .await
        .map_err(StartError::Store)?;
    let kind = store.log.kind();
    let settings = HubSettings {
        retry_ms: config.retry_ms,
        heartbeat: Duration::from_secs(config.heartbeat),
        default_timeout: Duration::from_secs(config.timeout),
        max_subscribers: config.max_subscribers,
        replay_batch: REPLAY_BATCH,
        client_idle_seconds: config.client_idle,
    };
    let hub = Hub::new(
        settings,
        Arc::clone(&access),
        fanout,
        store,
        tasks.clone(),
        stop.clone(),
    );
    let api = Api::new(ApiState {
        hub: hub.clone(),
        access: Arc::clone(&access),
        body_limit: usize::try_from(config.body_limit).unwrap_or(usize::MAX),
        request_timeout: Duration::from_secs(config.request_timeout),
        write_timeout: Duration::from_secs(config.write_timeout),
        max_timeout: Duration::from_secs(config.max_timeout),
        static_dir: config.static_dir.clone(),
    });
    #[cfg(feature = "demo")]
    let add_on = config
        .serves_demo(access.is_open())
        .then(|| crate::demo::routes(hub.clone()));
    #[cfg(not(feature = "demo"))]
    let add_on = None;
    let service = warp::service(routes(api.clone(), add_on));
    tasks.spawn(maintain(hub.clone(), stop.clone()));

    tracing::info!(store = kind, "serving");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    tasks.spawn(serve_connection(stream, service.clone(), api.clone(), stop.clone()));
                }
                Err(error) => {
                    // Typically EMFILE: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }

    tracing::info!("shutting down: no new connections, ending streams");
    drop(listener);
    stop.cancel();
    tasks.close();
    let grace = Duration::from_secs(config.shutdown_grace);
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!(
            grace_seconds = config.shutdown_grace,
            "connections still open after the grace period"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Expires idle clients every second and sweeps history now and then, until
/// the server stops.
async fn maintain(hub: Hub, stop: CancellationToken) {
    let mut every = tokio::time::interval(EXPIRE_EVERY);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = every.tick() => {
                if let Err(error) = hub.expire_clients().await {
                    tracing::warn!(%error, "client expiry failed");
                }
                ticks += 1;
                if ticks.is_multiple_of(SWEEP_EVERY_TICKS) {
                    if let Err(error) = hub.sweep().await {
                        tracing::warn!(%error, "history sweep failed");
                    }
                }
                if ticks.is_multiple_of(REPORT_EVERY_TICKS) {
                    let stalled = stalled_streams();
                    if stalled > 0 {
                        tracing::info!(streams = stalled, "streams ended because their client read nothing for the write timeout");
                    }
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Why the server did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Options that contradict each other, or an unsafe open configuration.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A protocol schema that does not compile.
    #[error(transparent)]
    Schema(SchemaError),
    /// The store could not be opened.
    #[error("cannot open the store: {0}")]
    Store(StoreError),
}
