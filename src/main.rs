//! The `ssehub` binary: configuration, logging, bind, [`ssehub::run`].

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;

use tokio::net::{TcpListener, TcpSocket};
use tokio_stream::wrappers::SignalStream;
use tokio_stream::StreamExt;
use tracing_subscriber::EnvFilter;

/// Pending connections the kernel queues for us: a burst of reconnecting
/// browsers should wait in the queue, not be refused.
const LISTEN_BACKLOG: u32 = 4096;

fn main() -> ExitCode {
    let config = ssehub::Config::from_args();
    raise_open_file_limit();
    let runtime = match runtime(config.workers) {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ssehub: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config))
}

/// The tokio runtime: `workers` threads (default: the CPUs this process may
/// run on); a single-threaded one when that is one.
fn runtime(workers: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    let workers = workers.map_or_else(
        || std::thread::available_parallelism().map_or(1, usize::from),
        usize::from,
    );
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(workers);
        builder
    };
    builder.enable_all().build()
}

async fn serve(config: ssehub::Config) -> ExitCode {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    // Refuse a bad or unsafe configuration before announcing anything.
    if let Err(error) = config.check() {
        eprintln!("ssehub: invalid configuration: {error}");
        return ExitCode::FAILURE;
    }
    let listener = match bind(config.listen) {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("ssehub: cannot listen on {}: {error}", config.listen);
            return ExitCode::FAILURE;
        }
    };
    let shutdown = match shutdown_signal() {
        Ok(shutdown) => shutdown,
        Err(error) => {
            eprintln!("ssehub: cannot install signal handlers: {error}");
            return ExitCode::FAILURE;
        }
    };
    let address = listener
        .local_addr()
        .map_or_else(|_| config.listen.to_string(), |a| a.to_string());
    // Tests and scripts read this line to learn the port.
    println!("ssehub listening on http://{address}");
    let _ = std::io::stdout().flush();

    match ssehub::run(listener, config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ssehub: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft open-file limit to the hard one, as a server that holds a
/// connection per subscriber wants (the soft limit is often 1,024 while the
/// hard one is far higher). The server sizes its connection and stream limits
/// from the result; if this fails it runs within the soft limit.
fn raise_open_file_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if address.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(address)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Completes on SIGINT or SIGTERM. The handlers are installed now, before the
/// listening line announces readiness, so a signal sent right after it is
/// always a graceful stop and never the default action.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let interrupt = SignalStream::new(signal(SignalKind::interrupt())?);
    let terminate = SignalStream::new(signal(SignalKind::terminate())?);
    let mut either = interrupt.merge(terminate);
    Ok(async move {
        either.next().await;
    })
}
