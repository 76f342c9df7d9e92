//! A pool of subscriber tasks: idle ones (hold) or checking ones (fanout, publish).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::conn::{Batch, Read, SseConn};
use crate::hist::Histogram;
use crate::sse::{find_payload, Handler, Kind};
use crate::Env;

/// Publisher connections a subscriber can tell apart (`k` in the payload).
pub(crate) const MAX_K: usize = 64;

/// Nanoseconds since the UNIX epoch.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Counters shared by all subscribers of a run.
pub(crate) struct Shared {
    /// Publish → read latency, ns: the load generator's clock when it parses
    /// the message, so it includes the time the message waited in the socket
    /// for this single-threaded reader.
    pub(crate) hist: Histogram,
    /// Publish → arrival latency, ns: the kernel's receive timestamp of the read
    /// that returned the message (see [`crate::conn::Batch::batch_start`]).
    pub(crate) arrival_hist: Histogram,
    /// First receptions that came without a kernel timestamp (not in `arrival_hist`).
    pub(crate) unstamped: AtomicU64,
    /// Streams whose socket refused `SO_TIMESTAMPNS`.
    pub(crate) stamp_refused: AtomicUsize,
    /// First receptions of a message, all subscribers.
    pub(crate) delivered: AtomicU64,
    /// Same, per channel.
    pub(crate) chan_delivered: Vec<AtomicU64>,
    /// When the last delivery arrived (ns since the epoch).
    pub(crate) last_delivery_ns: AtomicU64,
    pub(crate) opened: AtomicUsize,
    pub(crate) failed: AtomicUsize,
    /// Streams that ended or failed after they were open.
    pub(crate) ended: AtomicUsize,
    pub(crate) gaps: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) failures: AtomicU64,
    pub(crate) other_events: AtomicU64,
    /// Message frames without a bench payload, or for another channel.
    pub(crate) bad: AtomicU64,
    /// Bytes received by all streams.
    pub(crate) bytes: AtomicU64,
    errors: Mutex<Vec<String>>,
    error_count: AtomicU64,
}

impl Shared {
    /// Counters for `channels` channels.
    pub(crate) fn new(channels: usize) -> Shared {
        Shared {
            hist: Histogram::new(),
            arrival_hist: Histogram::new(),
            unstamped: AtomicU64::new(0),
            stamp_refused: AtomicUsize::new(0),
            delivered: AtomicU64::new(0),
            chan_delivered: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            last_delivery_ns: AtomicU64::new(0),
            opened: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            ended: AtomicUsize::new(0),
            gaps: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            other_events: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            errors: Mutex::new(Vec::new()),
            error_count: AtomicU64::new(0),
        }
    }

    /// Keeps the first few error texts (and counts all).
    pub(crate) fn error(&self, text: String) {
        self.error_count.fetch_add(1, Relaxed);
        let mut errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        if errors.len() < 8 {
            errors.push(text);
        }
    }

    /// The first errors, and how many there were.
    pub(crate) fn errors(&self) -> (Vec<String>, u64) {
        let errors = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        (errors.clone(), self.error_count.load(Relaxed))
    }

    fn special(&self, kind: Kind, data: &[u8]) {
        let counter = match kind {
            Kind::Gap => &self.gaps,
            Kind::Timeout => &self.timeouts,
            Kind::Failure => &self.failures,
            _ => &self.other_events,
        };
        if counter.fetch_add(1, Relaxed) < 3 {
            let text: String = String::from_utf8_lossy(data).chars().take(300).collect();
            self.error(format!("{kind:?} frame: {text}"));
        }
    }
}

/// What one subscriber saw.
#[derive(Default)]
pub(crate) struct SubStats {
    /// Messages received for the first time.
    pub(crate) unique: AtomicU64,
    /// Messages received again (or out of order).
    pub(crate) dup: AtomicU64,
    /// Times a sequence number was skipped.
    pub(crate) skips: AtomicU64,
    /// Gap frames received.
    pub(crate) gaps: AtomicU64,
}

/// Does nothing with what it reads (hold).
struct Idle<'a> {
    shared: &'a Shared,
}

impl Handler for Idle<'_> {
    fn data(&mut self, kind: Kind, data: &[u8]) {
        if kind != Kind::Message {
            self.shared.special(kind, data);
        }
    }
}
impl Batch for Idle<'_> {}

/// Checks sequence numbers and records latency (fanout, publish).
struct Live<'a> {
    chan: u64,
    expected: [u64; MAX_K],
    stats: &'a SubStats,
    shared: &'a Shared,
    /// Clock at the first message of the current read (0: not yet taken).
    now: u64,
    /// Kernel receive timestamp of the current read.
    arrival: Option<u64>,
}

impl Handler for Live<'_> {
    fn data(&mut self, kind: Kind, data: &[u8]) {
        if kind != Kind::Message {
            if kind == Kind::Gap {
                self.stats.gaps.fetch_add(1, Relaxed);
            }
            self.shared.special(kind, data);
            return;
        }
        let Some(p) = find_payload(data) else {
            self.shared.bad.fetch_add(1, Relaxed);
            return;
        };
        if p.c != self.chan || p.k as usize >= MAX_K {
            self.shared.bad.fetch_add(1, Relaxed);
            return;
        }
        let expected = &mut self.expected[p.k as usize];
        if p.s < *expected {
            self.stats.dup.fetch_add(1, Relaxed);
            return;
        }
        if p.s > *expected {
            self.stats.skips.fetch_add(1, Relaxed);
        }
        *expected = p.s + 1;
        if self.now == 0 {
            self.now = now_ns();
        }
        self.stats.unique.fetch_add(1, Relaxed);
        self.shared.delivered.fetch_add(1, Relaxed);
        self.shared.chan_delivered[self.chan as usize].fetch_add(1, Relaxed);
        self.shared.hist.record(self.now.saturating_sub(p.t));
        match self.arrival {
            Some(arrival) => self.shared.arrival_hist.record(arrival.saturating_sub(p.t)),
            None => {
                self.shared.unstamped.fetch_add(1, Relaxed);
            }
        }
        self.shared.last_delivery_ns.fetch_max(self.now, Relaxed);
    }
}

impl Batch for Live<'_> {
    fn batch_start(&mut self, arrival_ns: Option<u64>) {
        self.now = 0;
        self.arrival = arrival_ns;
    }
}

/// Running subscriber tasks.
pub(crate) struct Pool {
    pub(crate) shared: Arc<Shared>,
    pub(crate) stats: Vec<Arc<SubStats>>,
    /// Channel index of each subscriber.
    pub(crate) chan_of: Vec<usize>,
    handles: Vec<JoinHandle<()>>,
}

/// Whether subscribers check what they get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Idle,
    Live,
}

impl Pool {
    /// Starts `n` subscribers, subscriber `i` on channel `i % channels.len()`,
    /// connecting at most `env.connect_concurrency` at a time.
    pub(crate) fn spawn(env: &Env, n: usize, channels: &[String], mode: Mode) -> Pool {
        Self::spawn_with(env, n, channels, mode, 0, None)
    }

    /// Like [`Pool::spawn`]; source addresses are chosen as for subscribers
    /// `first..first + n`, and each subscriber reads nothing for `pause` once open.
    pub(crate) fn spawn_with(
        env: &Env,
        n: usize,
        channels: &[String],
        mode: Mode,
        first: usize,
        pause: Option<Duration>,
    ) -> Pool {
        let shared = Arc::new(Shared::new(channels.len()));
        let requests: Vec<Arc<[u8]>> = channels
            .iter()
            .map(|c| {
                Arc::from(crate::http::sse_request(
                    &env.sub.host,
                    &env.sub_headers,
                    &env.sub.render(c),
                    None,
                ))
            })
            .collect();
        let sem = Arc::new(Semaphore::new(env.connect_concurrency.max(1)));
        let mut pool = Pool {
            shared,
            stats: Vec::with_capacity(n),
            chan_of: Vec::with_capacity(n),
            handles: Vec::with_capacity(n),
        };
        for i in 0..n {
            let chan = i % channels.len();
            let stats = Arc::new(SubStats::default());
            let source = env.source_for(first + i);
            let task = subscriber(
                env.sub.addr,
                source,
                requests[chan].clone(),
                chan,
                stats.clone(),
                pool.shared.clone(),
                sem.clone(),
                env.connect_timeout,
                mode,
                pause,
            );
            pool.handles.push(tokio::spawn(task));
            pool.stats.push(stats);
            pool.chan_of.push(chan);
        }
        pool
    }

    /// Waits until every subscriber is open or failed, or `timeout`; returns (open, failed).
    pub(crate) async fn wait_open(&self, timeout: Duration, quiet: bool) -> (usize, usize) {
        let n = self.handles.len();
        let start = Instant::now();
        let mut last_report = start;
        loop {
            let opened = self.shared.opened.load(Relaxed);
            let failed = self.shared.failed.load(Relaxed);
            if opened + failed >= n || start.elapsed() >= timeout {
                return (opened, failed);
            }
            if !quiet && last_report.elapsed() >= Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!(
                    "  … {opened}/{n} subscribers open ({failed} failed) after {:.1} s",
                    start.elapsed().as_secs_f64()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Closes every stream (RST) and waits until the tasks are gone.
    pub(crate) async fn close(self) {
        for h in &self.handles {
            h.abort();
        }
        for h in self.handles {
            let _ = h.await;
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    addr: std::net::SocketAddr,
    source: Option<IpAddr>,
    request: Arc<[u8]>,
    chan: usize,
    stats: Arc<SubStats>,
    shared: Arc<Shared>,
    sem: Arc<Semaphore>,
    timeout: Duration,
    mode: Mode,
    pause: Option<Duration>,
) {
    let permit = sem.acquire_owned().await;
    let mut conn = match SseConn::open(addr, source, &request, timeout).await {
        Ok(c) => c,
        Err(e) => {
            shared.failed.fetch_add(1, Relaxed);
            shared.error(e);
            return;
        }
    };
    drop(permit);
    drop(request);
    shared.opened.fetch_add(1, Relaxed);
    if let Some(pause) = pause {
        // A deliberately slow reader: the socket buffers fill, then the server's.
        tokio::time::sleep(pause).await;
    }
    let result = match mode {
        Mode::Idle => {
            let mut h = Idle { shared: &shared };
            read_until_end(&mut conn, &mut h).await
        }
        Mode::Live => {
            if let Err(e) = conn.stamp_arrivals() {
                if shared.stamp_refused.fetch_add(1, Relaxed) == 0 {
                    shared.error(e);
                }
            }
            let mut h = Live {
                chan: chan as u64,
                expected: [0; MAX_K],
                stats: &stats,
                shared: &shared,
                now: 0,
                arrival: None,
            };
            read_until_end(&mut conn, &mut h).await
        }
    };
    shared.bytes.fetch_add(conn.bytes, Relaxed);
    shared.ended.fetch_add(1, Relaxed);
    shared.error(match result {
        Ok(()) => format!("stream on channel #{chan} ended by the server"),
        Err(e) => format!("stream on channel #{chan}: {e}"),
    });
}

async fn read_until_end(conn: &mut SseConn, h: &mut impl Batch) -> Result<(), String> {
    loop {
        if conn.read(h).await? == Read::End {
            return Ok(());
        }
    }
}
