//! One `Config`, from flags or `SSEHUB_*` environment variables, with the
//! documented defaults (README, "Configuration").

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::access::{Access, PolicyRule, Secret};

/// The command line: `ssehub [serve] [OPTIONS]`.
#[derive(Debug, Parser)]
#[command(
    name = "ssehub",
    version,
    about = "Server-Sent Events pub/sub hub",
    args_conflicts_with_subcommands = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the hub (the default when no command is given).
    Serve(Config),
}

impl Cli {
    /// The configuration to serve with, whether `serve` was written or not.
    pub(crate) fn into_config(self) -> Config {
        match self.command {
            Some(Command::Serve(config)) => config,
            None => self.config,
        }
    }
}

/// Which store to use (`--store`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// In process memory.
    Memory,
    /// A redb file at this path.
    File(PathBuf),
    /// A Redis server at this URL.
    Redis(String),
}

impl std::str::FromStr for StoreChoice {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        if value == "memory" {
            Ok(StoreChoice::Memory)
        } else if let Some(path) = value.strip_prefix("file:").filter(|p| !p.is_empty()) {
            Ok(StoreChoice::File(PathBuf::from(path)))
        } else if value.starts_with("redis://") || value.starts_with("rediss://") {
            Ok(StoreChoice::Redis(value.to_owned()))
        } else {
            Err(format!(
                "unknown store '{value}': use memory, file:PATH or redis://HOST:PORT/DB"
            ))
        }
    }
}

/// Everything the server can be told. Durations are whole seconds on the
/// command line and in the environment.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (port 0: any free port, printed at start).
    #[arg(long, env = "SSEHUB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Where state lives: `memory` (default; lost on restart), `file:PATH`
    /// (durable single node, a redb database file) or `redis://HOST:PORT/DB`
    /// (shared by every node pointed at the same Redis).
    #[arg(long, env = "SSEHUB_STORE", default_value = "memory")]
    pub store: StoreChoice,

    /// Messages retained per channel for resume.
    #[arg(long, env = "SSEHUB_HISTORY_SIZE", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub history_size: u64,

    /// Seconds a message is retained for resume.
    #[arg(long, env = "SSEHUB_HISTORY_AGE", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub history_age: u64,

    /// Seconds without a message before a stream gets a timeout frame (when the
    /// subscriber does not ask with `?timeout=`).
    #[arg(long, env = "SSEHUB_TIMEOUT", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,

    /// Largest `?timeout=` a subscriber may ask for, in seconds.
    #[arg(long, env = "SSEHUB_MAX_TIMEOUT", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=999_999))]
    pub max_timeout: u64,

    /// Seconds between heartbeat comments on an idle stream.
    #[arg(long, env = "SSEHUB_HEARTBEAT", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat: u64,

    /// Reconnection delay sent to clients in the stream preamble, in milliseconds.
    #[arg(long, env = "SSEHUB_RETRY_MS", default_value_t = 2000)]
    pub retry_ms: u64,

    /// Largest send body accepted, in bytes.
    #[arg(long, env = "SSEHUB_BODY_LIMIT", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(2..=64 * 1024 * 1024))]
    pub body_limit: u64,

    /// Open streams allowed on this server (default: 100,000, or fewer when
    /// the open-file limit would not hold them with room to spare for sends
    /// and health checks).
    #[arg(long, env = "SSEHUB_MAX_SUBSCRIBERS", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_subscribers: Option<u64>,

    /// Open connections allowed on this server (default: the open-file limit
    /// less what the server keeps for itself); more are answered
    /// `503 too_many_connections` and closed.
    #[arg(long, env = "SSEHUB_MAX_CONNECTIONS", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_connections: Option<u64>,

    /// Open streams allowed per client address (more: `too_many_requests`).
    #[arg(long, env = "SSEHUB_MAX_STREAMS_PER_CLIENT", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_streams_per_client: u64,

    /// Requests in flight allowed per client address (more: `429 too_many_requests`).
    #[arg(long, env = "SSEHUB_MAX_REQUESTS_PER_CLIENT", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_requests_per_client: u64,

    /// A proxy address or range (`10.0.0.0/8`, `::1`) whose `Forwarded` or
    /// `X-Forwarded-For` header names the client (repeatable; the variable
    /// takes a comma-separated list). From any other peer these headers are
    /// ignored: the peer is the client.
    #[arg(long = "trusted-proxy", env = "SSEHUB_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Recent messages kept per followed channel for live delivery; a subscriber
    /// further behind reads the history instead.
    #[arg(long, env = "SSEHUB_LIVE_BUFFER", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub live_buffer: u64,

    /// Threads running connections and fan-out (default: the CPUs this process
    /// may run on). With one, the server is a single-threaded event loop, which
    /// on one CPU does the same work without the cost of a multi-threaded
    /// scheduler (work stealing, shared file tables).
    #[arg(long, env = "SSEHUB_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Seconds a client has to send a request's head, and then again its body;
    /// also how long an idle keep-alive connection is kept.
    #[arg(long, env = "SSEHUB_REQUEST_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub request_timeout: u64,

    /// Seconds a write may wait for its client to read (an answer, or a
    /// stream's next frame); a client that reads nothing for that long is
    /// disconnected, and its stream ends.
    #[arg(long, env = "SSEHUB_WRITE_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub write_timeout: u64,

    /// Seconds a graceful shutdown waits for requests in flight.
    #[arg(long, env = "SSEHUB_SHUTDOWN_GRACE", default_value_t = 10)]
    pub shutdown_grace: u64,

    /// Directory of the demo pages served at `/`.
    #[arg(long, env = "SSEHUB_STATIC_DIR", default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/static"))]
    pub static_dir: PathBuf,

    /// A publisher key (repeatable; the variable takes a comma-separated list).
    /// Backends send and register clients with `Authorization: Bearer <key>`.
    #[arg(
        long = "publisher-key",
        env = "SSEHUB_PUBLISHER_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub publisher_keys: Vec<Secret>,

    /// A file of publisher keys, one per line (`#` starts a comment).
    #[arg(long, env = "SSEHUB_PUBLISHER_KEYS_FILE")]
    pub publisher_keys_file: Option<PathBuf>,

    /// Serve with no publisher key on a non-loopback address (anyone who can
    /// reach the server may send and register clients). Refused without this flag.
    #[arg(long, env = "SSEHUB_ALLOW_OPEN")]
    pub allow_open: bool,

    /// A channel policy, `PATTERN:subscribe=anyone|clients,send=publishers+clients+anyone,presence=on|off`
    /// (repeatable, first match wins; the variable takes a `;`-separated list).
    #[arg(long = "policy", env = "SSEHUB_POLICIES", value_delimiter = ';')]
    pub policies: Vec<PolicyRule>,

    /// An origin allowed to call the API from a browser page on another origin,
    /// credentials included (repeatable; `*` allows any; none by default).
    #[arg(long = "cors-origin", env = "SSEHUB_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Default seconds a registered client is kept with no open stream.
    #[arg(long, env = "SSEHUB_CLIENT_IDLE", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=604_800))]
    pub client_idle: u64,

    /// Serve the demo backend routes (`/demo/login`, `/demo/logout`, `/demo/feed`,
    /// acting on `demo-*` channels only, which announce presence) even though
    /// publisher keys are configured. Without keys (local open mode) they are
    /// always on. Never on a public server.
    #[arg(long, env = "SSEHUB_DEMO")]
    pub demo: bool,

    /// Log filter (tracing `EnvFilter` syntax, e.g. `info` or `ssehub=debug`).
    #[arg(long, env = "SSEHUB_LOG", default_value = "info")]
    pub log: String,
}

/// An address range, or one address (a /32 or /128).
fn parse_net(text: &str) -> Result<ipnet::IpNet, String> {
    text.parse::<ipnet::IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("'{text}' is neither an address nor an address range like 10.0.0.0/8"))
}

impl Config {
    /// Reads the command line and environment; exits with a usage message on error.
    pub fn from_args() -> Self {
        Cli::parse().into_config()
    }

    /// Checks everything that can be checked before serving: the rules that
    /// span several options, and the access configuration ([`Config::access`]).
    ///
    /// # Errors
    /// A message naming the options that disagree, or what is wrong with the keys.
    pub fn check(&self) -> Result<(), String> {
        self.validate()?;
        self.access().map(drop)
    }

    /// Checks the rules that span several options.
    fn validate(&self) -> Result<(), String> {
        if self.timeout > self.max_timeout {
            return Err(format!(
                "--timeout ({}) must not exceed --max-timeout ({})",
                self.timeout, self.max_timeout
            ));
        }
        Ok(())
    }

    /// The access configuration: keys from flags, environment and file, policies,
    /// CORS origins.
    ///
    /// # Errors
    /// An unreadable or invalid keys file, or no key on a non-loopback address
    /// without `--allow-open`.
    pub(crate) fn access(&self) -> Result<Access, String> {
        for key in &self.publisher_keys {
            key.check()
                .map_err(|e| format!("--publisher-key / SSEHUB_PUBLISHER_KEYS: {e}"))?;
        }
        let mut keys = self.publisher_keys.clone();
        if let Some(path) = &self.publisher_keys_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read --publisher-keys-file {}: {e}", path.display()))?;
            for (number, line) in text.lines().enumerate() {
                let line = line.split('#').next().unwrap_or("").trim();
                if !line.is_empty() {
                    let key: Secret = line.parse().unwrap_or_else(|never| match never {});
                    key.check()
                        .map_err(|e| format!("{}:{}: {e}", path.display(), number + 1))?;
                    keys.push(key);
                }
            }
        }
        if keys.is_empty() && !self.listen.ip().is_loopback() && !self.allow_open {
            return Err(format!(
                "no publisher key is configured and {} is not a loopback address: anyone could send and register clients. \
                 Set --publisher-key (or SSEHUB_PUBLISHER_KEYS / --publisher-keys-file), or pass --allow-open if that is really meant",
                self.listen
            ));
        }
        // The demo's rule comes after the operator's: the first match wins.
        #[cfg(feature = "demo")]
        let policies = (self.policies.iter().cloned())
            .chain(self.serves_demo(keys.is_empty()).then(crate::demo::presence_rule))
            .collect();
        #[cfg(not(feature = "demo"))]
        let policies = self.policies.clone();
        Ok(Access::new(keys, policies, self.cors_origins.clone()))
    }

    /// Whether the demo backend is served: `--demo` given, or no publisher
    /// key configured (`open`).
    #[cfg(feature = "demo")]
    pub(crate) fn serves_demo(&self, open: bool) -> bool {
        self.demo || open
    }

    /// `history_age` as a duration.
    pub(crate) fn history_age(&self) -> Duration {
        Duration::from_secs(self.history_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_serve_subcommand() {
        let plain = Cli::try_parse_from(["ssehub"]).unwrap().into_config();
        assert_eq!(plain.listen.to_string(), "127.0.0.1:8080");
        assert_eq!((plain.history_size, plain.timeout, plain.heartbeat), (1000, 60, 15));
        let serve = Cli::try_parse_from(["ssehub", "serve", "--listen", "127.0.0.1:0"])
            .unwrap()
            .into_config();
        assert_eq!(serve.listen.port(), 0);
        assert!(Cli::try_parse_from(["ssehub", "--timeout", "0"]).is_err());
        let bad = Cli::try_parse_from(["ssehub", "--timeout", "10", "--max-timeout", "5"])
            .unwrap()
            .into_config();
        assert!(bad.check().is_err());
        let file = Cli::try_parse_from(["ssehub", "--store", "file:/tmp/x.redb"])
            .unwrap()
            .into_config();
        assert_eq!(file.store, StoreChoice::File("/tmp/x.redb".into()));
        assert!(Cli::try_parse_from(["ssehub", "--store", "postgres://x"]).is_err());
    }

    #[test]
    fn no_key_is_refused_off_loopback() {
        let local = Cli::try_parse_from(["ssehub"]).unwrap().into_config();
        assert!(local.access().unwrap().is_open());
        let public = Cli::try_parse_from(["ssehub", "--listen", "0.0.0.0:8080"])
            .unwrap()
            .into_config();
        assert!(public.access().is_err());
        let keyed = Cli::try_parse_from([
            "ssehub",
            "--listen",
            "0.0.0.0:8080",
            "--publisher-key",
            "0123456789abcdef",
        ])
        .unwrap()
        .into_config();
        assert!(!keyed.access().unwrap().is_open());
        assert!(!format!("{keyed:?}").contains("0123456789abcdef"));
    }
}
