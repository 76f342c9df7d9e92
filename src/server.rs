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
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::capacity::{capacity, open_file_limit};
use crate::config::Config;
use crate::http::{refuse_connection, routes, serve_connection, stalled_streams, Api, ApiState, Bounds, Limits};
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

/// How long the accept loop rests after a failed accept (typically: no file
/// left), instead of spinning on it.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How often a repeated condition of the accept loop (failed accepts,
/// connections refused over the limit) is logged: once, then as a count.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Connections over the limit being answered at once; past this they are
/// closed unanswered, so that refusing cannot itself use up the files left.
const MAX_REFUSING: usize = 64;

/// Idle time before the kernel probes a silent peer, and between probes.
const KEEPALIVE_TIME: Duration = Duration::from_secs(60);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

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
    let files = open_file_limit();
    let capacity = capacity(&config, files);
    let settings = HubSettings {
        retry_ms: config.retry_ms,
        heartbeat: Duration::from_secs(config.heartbeat),
        default_timeout: Duration::from_secs(config.timeout),
        max_subscribers: capacity.max_subscribers,
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
        limits: Limits::new(Bounds {
            max_connections: capacity.max_connections,
            max_streams_per_client: usize::try_from(config.max_streams_per_client).unwrap_or(usize::MAX),
            max_requests_per_client: usize::try_from(config.max_requests_per_client).unwrap_or(usize::MAX),
            trusted_proxies: config.trusted_proxies.clone(),
        }),
    });
    #[cfg(feature = "demo")]
    let add_on = config
        .serves_demo(access.is_open())
        .then(|| crate::demo::routes(hub.clone()));
    #[cfg(not(feature = "demo"))]
    let add_on = None;
    let service = warp::service(routes(api.clone(), add_on));
    tasks.spawn(maintain(hub.clone(), stop.clone()));

    tracing::info!(
        store = kind,
        max_connections = capacity.max_connections,
        max_subscribers = capacity.max_subscribers,
        open_file_limit = ?files,
        "serving"
    );
    let write_timeout = Duration::from_secs(config.write_timeout);
    let refusing = Arc::new(AtomicUsize::new(0));
    let mut failed_accepts = Repeated::new("accept failed (retrying)");
    let mut refused = Repeated::new("connections refused: the server holds its maximum of open connections");
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    configure(&stream, write_timeout);
                    if let Some(permit) = api.limits.connection() {
                        tasks.spawn(serve_connection(stream, permit, service.clone(), api.clone(), stop.clone()));
                        continue;
                    }
                    refused.happened(None);
                    if refusing.fetch_add(1, Ordering::AcqRel) < MAX_REFUSING {
                        let refusing = Arc::clone(&refusing);
                        tasks.spawn(async move {
                            refuse_connection(stream).await;
                            refusing.fetch_sub(1, Ordering::AcqRel);
                        });
                    } else {
                        refusing.fetch_sub(1, Ordering::AcqRel);
                    }
                }
                Err(error) => {
                    failed_accepts.happened(Some(&error));
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
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
                        tracing::info!(streams = stalled, "streams ended because their client read nothing for the write timeout (by the server or the kernel)");
                    }
                }
            }
            () = stop.cancelled() => return,
        }
    }
}

/// Options of an accepted socket: no Nagle delay (frames leave as written);
/// keepalive probes, so a peer that vanished without a word is noticed on an
/// idle connection; and a user timeout, so data the peer does not acknowledge
/// (or a zero window it never opens) ends the connection in the kernel too.
fn configure(stream: &TcpStream, write_timeout: Duration) {
    let _ = stream.set_nodelay(true);
    let socket = SockRef::from(stream);
    let keepalive = TcpKeepalive::new()
        .with_time(KEEPALIVE_TIME)
        .with_interval(KEEPALIVE_INTERVAL);
    let _ = socket.set_tcp_keepalive(&keepalive);
    let _ = socket.set_tcp_user_timeout(Some(write_timeout));
}

/// A condition that may repeat many times a second (under attack, or with no
/// file left): logged when it first happens, then at most every
/// [`LOG_EVERY`] with how often it happened meanwhile.
struct Repeated {
    what: &'static str,
    since: u64,
    logged: Option<Instant>,
}

impl Repeated {
    fn new(what: &'static str) -> Self {
        Repeated {
            what,
            since: 0,
            logged: None,
        }
    }

    fn happened(&mut self, error: Option<&io::Error>) {
        self.since += 1;
        let now = Instant::now();
        if self.logged.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            return;
        }
        let error = error.map(ToString::to_string);
        tracing::warn!(times = self.since, error, "{}", self.what);
        self.since = 0;
        self.logged = Some(now);
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
