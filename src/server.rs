//! The one entry point: [`run`] serves the hub on a bound listener until the
//! shutdown future completes, then stops gracefully.
//!
//! The server owns every connection task (see `http::connection`: event
//! streams are written directly, other requests go through hyper): each runs
//! under a [`TaskTracker`] and watches a [`CancellationToken`]. Shutdown is
//! "signal, then wait": stop accepting, cancel the token (every SSE stream
//! sends its last comment and ends; hyper finishes in-flight requests and
//! closes idle keep-alive connections), then wait for the tracked tasks, at
//! most the grace.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, StoreChoice};
use crate::http::{routes, serve_connection, Api, ApiState};
use crate::hub::{Fanout, Hub, HubSettings};
use crate::protocol::schema::{SchemaError, Schemas};
use crate::store::{FileStore, MemoryStore, RedisStore, Retention, Store, StoreError};

/// Messages read from the store per step of a replay or catch-up.
const REPLAY_BATCH: usize = 1024;

/// How often idle clients are expired (their allowance is in whole seconds).
const EXPIRE_EVERY: Duration = Duration::from_secs(1);

/// How often expired history is dropped and forgotten channels are released,
/// in expiry ticks.
const SWEEP_EVERY_TICKS: u32 = 30;

/// Serves until `shutdown` completes, then shuts down gracefully.
///
/// # Errors
/// An invalid configuration or a protocol schema that does not compile; both
/// are found before anything is served.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), StartError> {
    config.validate().map_err(StartError::Config)?;
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
    let fanout = Fanout::new(config.live_buffer as usize);
    let retention = Retention {
        max_messages: config.history_size as usize,
        max_age: config.history_age(),
    };
    let store: Arc<dyn Store> = match &config.store {
        StoreChoice::Memory => Arc::new(MemoryStore::new(retention, fanout.clone())),
        StoreChoice::File(path) => {
            Arc::new(FileStore::open(path, retention, fanout.clone()).map_err(StartError::Store)?)
        }
        StoreChoice::Redis(url) => Arc::new(
            RedisStore::open(url, retention, fanout.clone())
                .await
                .map_err(StartError::Store)?,
        ),
    };
    let settings = HubSettings {
        retry_ms: config.retry_ms,
        heartbeat: Duration::from_secs(config.heartbeat),
        default_timeout: Duration::from_secs(config.timeout),
        max_subscribers: config.max_subscribers,
        replay_batch: REPLAY_BATCH,
        client_idle_seconds: config.client_idle,
    };
    let hub = Hub::new(settings, Arc::clone(&access), fanout, Arc::clone(&store), stop.clone());
    let api = Api::new(ApiState {
        hub: hub.clone(),
        access: Arc::clone(&access),
        body_limit: config.body_limit as usize,
        max_timeout: Duration::from_secs(config.max_timeout),
        static_dir: config.static_dir.clone(),
        demo: config.demo,
    });
    let service = warp::service(routes(api.clone()));
    let tasks = TaskTracker::new();
    tasks.spawn(maintain(hub.clone(), stop.clone()));

    tracing::info!(store = store.kind(), "serving");
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
    hub.tasks().close();
    let grace = Duration::from_secs(config.shutdown_grace);
    let drained = async {
        tasks.wait().await;
        hub.tasks().wait().await;
    };
    if tokio::time::timeout(grace, drained).await.is_err() {
        tracing::warn!(
            grace_seconds = config.shutdown_grace,
            "connections still open after the grace period"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Expires idle clients every second and sweeps history now and then.
async fn maintain(hub: Hub, stop: CancellationToken) {
    let mut every = tokio::time::interval(EXPIRE_EVERY);
    let mut ticks = 0u32;
    loop {
        tokio::select! {
            _ = every.tick() => {
                if let Err(error) = hub.expire_clients().await {
                    tracing::warn!(%error, "client expiry failed");
                }
                ticks += 1;
                if ticks.is_multiple_of(SWEEP_EVERY_TICKS) {
                    if let Err(error) = hub.store().sweep().await {
                        tracing::warn!(%error, "history sweep failed");
                    }
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Why the server did not start.
#[derive(Debug)]
pub enum StartError {
    /// Options that contradict each other, or an unsafe open configuration.
    Config(String),
    /// A protocol schema that does not compile.
    Schema(SchemaError),
    /// The store could not be opened.
    Store(StoreError),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(message) => write!(f, "invalid configuration: {message}"),
            StartError::Schema(error) => error.fmt(f),
            StartError::Store(error) => write!(f, "cannot open the store: {error}"),
        }
    }
}

impl std::error::Error for StartError {}
