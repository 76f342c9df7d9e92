//! What the open-file limit allows. Every connection is a file, so when the
//! process may open fewer files than `--max-subscribers` asks for, streams
//! past that limit would get no answer at all, and neither would `/healthz`
//! or a send. The connection and subscriber limits therefore default to what
//! the process may open, less a reserve: the subscriber limit is reached (and
//! answered `too_many_subscribers`) while connections are still left for
//! sends and health checks, and the connection limit is reached (and answered
//! `503 too_many_connections`) while files are still left for the store.

use crate::config::Config;

/// Files the server keeps for itself beyond its connections: the listener,
/// the runtime's, the store's (database file, Redis connections), logs.
const RESERVED_FILES: u64 = 64;

/// The default most open streams, however many files there are.
const DEFAULT_MAX_SUBSCRIBERS: u64 = 100_000;

/// The connection and subscriber limits this server runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Capacity {
    pub(crate) max_connections: usize,
    pub(crate) max_subscribers: usize,
}

/// The limits for `config` when the process may open `files` files (`None`:
/// unknown, no bound), with a warning for a configured limit that the files
/// cannot hold.
pub(crate) fn capacity(config: &Config, files: Option<u64>) -> Capacity {
    let usable = files.map(|files| files.saturating_sub(RESERVED_FILES).max(16));
    let max_connections = config.max_connections.or(usable).unwrap_or(u64::from(u32::MAX));
    // Room for sends and health checks: a tenth of the connections, at least 16.
    let streams_fit = max_connections.saturating_sub((max_connections / 10).max(16)).max(1);
    let max_subscribers = config
        .max_subscribers
        .unwrap_or(DEFAULT_MAX_SUBSCRIBERS.min(streams_fit));
    if let (Some(usable), Some(configured)) = (usable, config.max_connections) {
        if configured > usable {
            tracing::warn!(
                max_connections = configured,
                open_file_limit = ?files,
                "--max-connections is more than the open-file limit allows: past it, new connections fail to be accepted"
            );
        }
    }
    if config.max_subscribers.is_some() && max_subscribers > streams_fit {
        tracing::warn!(
            max_subscribers,
            max_connections,
            "--max-subscribers leaves no connections for sends and health checks once that many streams are open"
        );
    }
    Capacity {
        max_connections: usize::try_from(max_connections).unwrap_or(usize::MAX),
        max_subscribers: usize::try_from(max_subscribers).unwrap_or(usize::MAX),
    }
}

/// The process's open-file limit (its soft `RLIMIT_NOFILE`), if it has one.
pub(crate) fn open_file_limit() -> Option<u64> {
    let (soft, _hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok()?;
    (soft != nix::sys::resource::RLIM_INFINITY).then_some(soft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        crate::config::Cli::try_parse_from([&["ssehub"], args].concat())
            .unwrap()
            .into_config()
    }

    #[test]
    fn limits_follow_the_files() {
        let plain = config(&[]);
        assert_eq!(
            capacity(&plain, Some(1_048_576)),
            Capacity {
                max_connections: 1_048_512,
                max_subscribers: 100_000
            }
        );
        let small = capacity(&plain, Some(20_000));
        assert_eq!(small.max_connections, 19_936);
        assert_eq!(small.max_subscribers, 19_936 - 1_993);
        assert!(capacity(&plain, Some(100)).max_subscribers < capacity(&plain, Some(100)).max_connections);
        let unknown = capacity(&plain, None);
        assert_eq!(unknown.max_subscribers, 100_000);
        let chosen = config(&["--max-connections", "500", "--max-subscribers", "400"]);
        assert_eq!(
            capacity(&chosen, Some(20_000)),
            Capacity {
                max_connections: 500,
                max_subscribers: 400
            }
        );
    }
}
