//! Running the same tests against every store.
//!
//! [`store_tests!`] turns one test body into three tests, `memory`, `file` and
//! `redis`, in a module named after the body: `cargo test resume::by_header`
//! runs all three, `cargo test ::redis` every Redis variant. The body gets a
//! [`Backend`] and starts servers with [`Backend::start`], which adds the
//! matching `--store`. A file backend has its own temporary directory; a Redis
//! backend its own `redis-server` on a free port, so tests never share state.
//!
//! Tools that may be missing (`redis-server`) follow one rule, [`require_tool`]:
//! a plain `cargo test` skips the test and says so loudly on stderr; with
//! `SSEHUB_STRICT_TESTS=1` (set by `.ci/run` in CI) the test fails instead.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use super::TestServer;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoreKind {
    Memory,
    File,
    Redis,
}

impl StoreKind {
    /// The store's kind as `/healthz` names it (`store.kind`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::File => "file",
            StoreKind::Redis => "redis",
        }
    }
}

/// Whether missing tools fail tests (CI) instead of skipping them.
pub(crate) fn strict() -> bool {
    std::env::var("SSEHUB_STRICT_TESTS").is_ok_and(|v| v == "1")
}

/// The path of `tool` on PATH, or `None` after a loud skip notice (a panic when strict).
pub(crate) fn require_tool(tool: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(tool))
            .find(|candidate| candidate.is_file())
    });
    if found.is_none() {
        let message = format!("{tool} is not installed (apt-get install {tool}; .ci/run installs it)");
        if strict() {
            panic!("SSEHUB_STRICT_TESTS=1 and {message}: {test} cannot run");
        }
        eprintln!("\n*** SKIPPED {test}: {message} ***\n");
    }
    found
}

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(label: &str) -> TempDir {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("ssehub-test-{label}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A real `redis-server` on a free loopback port with its own directory, killed on drop.
pub(crate) struct RedisServer {
    child: Option<Child>,
    port: u16,
    binary: PathBuf,
    dir: TempDir,
    persistent: bool,
}

impl RedisServer {
    /// Starts one (`persistent`: append-only file, so a restart keeps the data),
    /// or `None` when `redis-server` is missing and tests may skip.
    pub(crate) fn start(test: &str, persistent: bool) -> Option<RedisServer> {
        let binary = require_tool("redis-server", test)?;
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            binary,
            dir: TempDir::new("redis"),
            persistent,
        };
        server.spawn();
        Some(server)
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let appendonly = if self.persistent { "yes" } else { "no" };
        let child = Command::new(&self.binary)
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                appendonly,
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on {port} within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis://127.0.0.1:PORT/0`
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Kills the server (SIGKILL: no save on the way out).
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An ssehub node on this Redis (`--store <url>`) with `extra_args`: nodes started on
    /// one server act as one service.
    pub(crate) fn node(&self, extra_args: &[&str]) -> TestServer {
        let url = self.url();
        let mut args = vec!["--store", url.as_str()];
        args.extend_from_slice(extra_args);
        TestServer::start(&args)
    }

    /// Starts it again on the same port and directory.
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A store for a test: its kind and whatever keeps it alive.
pub(crate) struct Backend {
    pub(crate) kind: StoreKind,
    dir: Option<TempDir>,
    pub(crate) redis: Option<RedisServer>,
}

impl Backend {
    /// The backend of `kind`, or `None` (after a loud skip notice) when it needs
    /// a tool this machine lacks and tests may skip.
    pub(crate) fn new(kind: StoreKind, test: &str) -> Option<Backend> {
        Some(match kind {
            StoreKind::Memory => Backend {
                kind,
                dir: None,
                redis: None,
            },
            StoreKind::File => Backend {
                kind,
                dir: Some(TempDir::new("file")),
                redis: None,
            },
            StoreKind::Redis => Backend {
                kind,
                dir: None,
                redis: Some(RedisServer::start(test, false)?),
            },
        })
    }

    /// The `--store` value: every server of this backend shares its state.
    pub(crate) fn store_arg(&self) -> String {
        match self.kind {
            StoreKind::Memory => "memory".into(),
            StoreKind::File => {
                format!("file:{}", self.file_path().expect("a file backend has a dir").display())
            }
            StoreKind::Redis => self.redis.as_ref().expect("a redis backend has a server").url(),
        }
    }

    /// The database file of a file backend (`None` for the others); it exists once a
    /// server of this backend has started.
    pub(crate) fn file_path(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.path().join("ssehub.redb"))
    }

    /// A server on this backend with `extra_args`.
    pub(crate) fn start(&self, extra_args: &[&str]) -> TestServer {
        let store = self.store_arg();
        let mut args = vec!["--store", store.as_str()];
        args.extend_from_slice(extra_args);
        TestServer::start(&args)
    }
}

/// One test body, run against every store: see the module documentation.
///
/// ```ignore
/// store_tests! {
///     async fn resume_by_header(backend) {
///         let server = backend.start(&[]);
///         ...
///     }
/// }
/// ```
#[macro_export]
macro_rules! store_tests {
    ($($(#[$meta:meta])* async fn $name:ident($backend:ident) $body:block)*) => {
        $(
            $(#[$meta])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn body($backend: $crate::common::Backend) $body

                async fn run(kind: $crate::common::StoreKind) {
                    let test = concat!(module_path!(), "::", stringify!($name));
                    if let Some(backend) = $crate::common::Backend::new(kind, test) {
                        body(backend).await;
                    }
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn memory() {
                    run($crate::common::StoreKind::Memory).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn file() {
                    run($crate::common::StoreKind::File).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    run($crate::common::StoreKind::Redis).await;
                }
            }
        )*
    };
}
