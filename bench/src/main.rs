//! `ssehub-bench`: a load generator for ssehub or any SSE pub/sub server
//! (Nchan, …) reached through templated URLs, on loopback only.
//!
//! Scenarios: `hold` (idle subscribers → server RSS per subscriber), `fanout`
//! (deliveries, latency, loss at a fixed rate or at saturation), `publish`
//! (POSTs per second) and `resume` (replay after a reconnection with
//! Last-Event-ID). Each prints readable lines and one `RESULT {json}` line;
//! `table` turns RESULT lines of several runs into a Markdown table; `floor`
//! serves as the cheapest possible fan-out server, the yardstick for the
//! kernel's cost per delivery.
//!
//! HTTP/1.1 is written by hand over tokio sockets; the SSE parser works on the
//! read buffer without copying whole frames. The publisher puts an object
//! `{"_sb":1,"c":CHANNEL,"k":CONNECTION,"s":SEQ,"t":SEND_NS}` into each message
//! (through `--pub-body`), and subscribers find it in the `data:` line wherever
//! the server put it (inside ssehub's envelope, or the raw body for Nchan).
//!
//! Run `ssehub-bench --help` and `bench/compare-nchan.sh` (see bench/README.md).

#![recursion_limit = "256"]
// Figures, not ids: histogram buckets, nanosecond and byte counts, kernel
// structs. A measurement that overflowed these types would be wrong anyway,
// and casts keep the arithmetic readable.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_possible_wrap)]

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

mod conn;
mod fanout;
mod floor;
mod hist;
mod hold;
mod http;
mod procfs;
mod resume;
mod sse;
mod subs;
mod table;
mod target;

use target::Target;

#[derive(Parser, Debug)]
#[command(
    name = "ssehub-bench",
    about = "Load generator for SSE pub/sub servers (ssehub, Nchan, …) on loopback"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// N idle subscribers: server RSS before and after, bytes per subscriber.
    Hold(HoldArgs),
    /// Subscribers over channels, messages at a fixed rate (or saturation):
    /// deliveries/s, latency, loss, deliveries per server CPU-second.
    Fanout(FanoutArgs),
    /// POSTs per second (and per server CPU-second) with M subscribers on the channel.
    Publish(PublishArgs),
    /// Replay time and correctness after reconnecting with an id B messages back.
    Resume(ResumeArgs),
    /// Prints a Markdown table (medians) from files of RESULT lines.
    Table(TableArgs),
    /// Prints a free TCP port on 127.0.0.1 (for scripts).
    FreePort,
    /// Serves as the cheapest possible fan-out server (one write per delivery,
    /// nothing else): the yardstick for what the kernel costs per delivery.
    Floor(FloorArgs),
    /// Internal: one process of a multi-process hold.
    #[command(hide = true)]
    HoldChild(HoldChildArgs),
}

/// Options every scenario shares.
#[derive(Args, Debug, Clone)]
struct Common {
    /// Subscribe URL template ({channel} is replaced). Loopback hosts only.
    #[arg(long, default_value = "http://127.0.0.1:8080/channels/{channel}/events?timeout=3600")]
    sub_url: String,
    /// Publish URL template ({channel} is replaced).
    #[arg(long, default_value = "http://127.0.0.1:8080/channels/{channel}/messages")]
    pub_url: String,
    /// Publish body template; {payload} becomes the bench's JSON object.
    #[arg(long, default_value = r#"{"name":"bench","contents":{payload}}"#)]
    pub_body: String,
    /// Extra header for publish requests, `Name: value` (repeatable), e.g. credentials.
    #[arg(long)]
    pub_header: Vec<String>,
    /// Extra header for subscribe requests, `Name: value` (repeatable).
    #[arg(long)]
    sub_header: Vec<String>,
    /// Resume URL template (default: --sub-url); may hold {last_id} (with --resume-by template).
    #[arg(long)]
    resume_url: Option<String>,
    /// Server process id(s), comma-separated (nginx: the worker), for RSS and CPU time.
    #[arg(long)]
    server_pid: Option<String>,
    /// Server name written into the RESULT line (table column).
    #[arg(long, default_value = "server")]
    server_name: String,
    /// Scenario label written into the RESULT line (table row group).
    #[arg(long)]
    label: Option<String>,
    /// Prefix of channel names (default: unique per run).
    #[arg(long)]
    channel_prefix: Option<String>,
    /// Subscriber connections per loopback source address (127.0.0.2, .3, …); 0 = no bind.
    #[arg(long, default_value_t = 500)]
    per_address: u32,
    /// First source address number (0 → 127.0.0.2).
    #[arg(long, default_value_t = 0)]
    address_offset: u32,
    /// Subscriber connections being opened at once.
    #[arg(long, default_value_t = 200)]
    connect_concurrency: usize,
    /// Seconds allowed for one connection to connect and get its response head.
    #[arg(long, default_value_t = 15.0)]
    connect_timeout: f64,
    /// Seconds allowed for all subscribers to open.
    #[arg(long, default_value_t = 120.0)]
    open_timeout: f64,
    /// Seconds after which the tool exits whatever it is doing (default: from the scenario).
    #[arg(long)]
    deadline: Option<f64>,
    /// Seconds a POST may take.
    #[arg(long, default_value_t = 10.0)]
    request_timeout: f64,
    /// Runtime threads (1 = single-threaded, best when pinned to one CPU).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Args, Debug)]
struct HoldArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Load-generator processes (more are used if the open-file limit needs it).
    #[arg(long, default_value_t = 1)]
    procs: usize,
    /// Seconds to keep the subscribers after RSS settled.
    #[arg(long, default_value_t = 1.0)]
    hold_seconds: f64,
    /// Longest wait for the server's RSS to settle, seconds.
    #[arg(long, default_value_t = 10.0)]
    settle_max: f64,
}

#[derive(Args, Debug)]
struct HoldChildArgs {
    #[arg(long)]
    sub_url: String,
    #[arg(long)]
    sub_header: Vec<String>,
    #[arg(long)]
    channel_prefix: String,
    #[arg(long)]
    subscribers: usize,
    #[arg(long)]
    first_index: usize,
    #[arg(long)]
    channels: usize,
    #[arg(long)]
    address_offset: u32,
    #[arg(long)]
    per_address: u32,
    #[arg(long)]
    connect_concurrency: usize,
    #[arg(long)]
    connect_timeout: f64,
    #[arg(long)]
    open_timeout: f64,
    #[arg(long)]
    deadline: f64,
}

#[derive(Args, Debug)]
struct FanoutArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Messages per second over all channels; 0 = saturation.
    #[arg(long, default_value_t = 60.0)]
    rate: f64,
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Publisher keep-alive connections (default 1 at a fixed rate, 4 at saturation).
    #[arg(long)]
    connections: Option<usize>,
    /// Padding added to each payload, bytes.
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// At saturation: publishers wait while a channel's subscribers are on average
    /// more than this many messages behind (0 = never).
    #[arg(long, default_value_t = 200)]
    max_lag: u64,
    /// Seconds to wait for outstanding deliveries after publishing stops.
    #[arg(long, default_value_t = 15.0)]
    drain_timeout: f64,
    /// Pause between "all subscribers open" and the first message, ms.
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
    /// Extra subscribers that read nothing for --slow-pause seconds once open;
    /// they must catch up or get a gap frame, and must not slow the others.
    #[arg(long, default_value_t = 0)]
    slow_subscribers: usize,
    /// How long slow subscribers read nothing, seconds (default: --seconds).
    #[arg(long)]
    slow_pause: Option<f64>,
}

#[derive(Args, Debug)]
struct PublishArgs {
    #[command(flatten)]
    common: Common,
    #[arg(long, default_value_t = 0)]
    subscribers: usize,
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Publisher keep-alive connections, each sending one request at a time.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
    /// Publishers wait while subscribers are on average more than this many messages behind.
    #[arg(long, default_value_t = 200)]
    max_lag: u64,
    #[arg(long, default_value_t = 15.0)]
    drain_timeout: f64,
}

#[derive(Args, Debug)]
struct ResumeArgs {
    #[command(flatten)]
    common: Common,
    /// Messages published before the replays (the server must retain them).
    #[arg(long, default_value_t = 10_000)]
    backlog: u64,
    /// How far back the replays start (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,1000")]
    back: Vec<u64>,
    /// Replays per distance.
    #[arg(long, default_value_t = 5)]
    repeat: usize,
    /// How the resume position is sent.
    #[arg(long, value_enum, default_value_t = resume::ResumeBy::Header)]
    resume_by: resume::ResumeBy,
    #[arg(long, default_value_t = 0)]
    payload_bytes: usize,
}

#[derive(Args, Debug)]
struct FloorArgs {
    /// Address to listen on; port 0 picks a free one (printed).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
}

#[derive(Args, Debug)]
struct TableArgs {
    /// Files holding RESULT lines.
    #[arg(required = true)]
    files: Vec<String>,
    /// Column order, e.g. `ssehub,nchan` (the ratio is first/second).
    #[arg(long)]
    servers: Option<String>,
}

/// Resolved options shared by the scenarios.
pub(crate) struct Env {
    pub(crate) sub_url: String,
    pub(crate) sub: Target,
    pub(crate) publ: Target,
    pub(crate) resume: Target,
    pub(crate) body_prefix: Vec<u8>,
    pub(crate) body_suffix: Vec<u8>,
    pub(crate) pub_headers: Vec<u8>,
    pub(crate) sub_headers: String,
    sub_header_raw: Vec<String>,
    pub(crate) server: procfs::Server,
    pub(crate) server_name: String,
    pub(crate) label: String,
    pub(crate) prefix: String,
    pub(crate) per_address: u32,
    pub(crate) address_offset: u32,
    pub(crate) connect_concurrency: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) open_timeout: Duration,
    pub(crate) request_timeout: Duration,
}

impl Env {
    fn new(c: &Common, scenario: &str) -> Result<Env, String> {
        let sub = Target::parse(&c.sub_url)?;
        let publ = Target::parse(&c.pub_url)?;
        let resume = Target::parse(c.resume_url.as_deref().unwrap_or(&c.sub_url))?;
        let (prefix, suffix) = c
            .pub_body
            .split_once("{payload}")
            .ok_or("--pub-body must contain {payload}")?;
        let unique = format!("b{}{:x}", std::process::id(), subs::now_ns() / 1_000_000 % 0xffffff);
        let prefix_name = c.channel_prefix.clone().unwrap_or(unique);
        if !prefix_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("--channel-prefix: letters, digits, - and _ only".into());
        }
        Ok(Env {
            sub_url: c.sub_url.clone(),
            sub,
            publ,
            resume,
            body_prefix: prefix.as_bytes().to_vec(),
            body_suffix: suffix.as_bytes().to_vec(),
            pub_headers: header_lines(&c.pub_header)?.into_bytes(),
            sub_headers: header_lines(&c.sub_header)?,
            sub_header_raw: c.sub_header.clone(),
            server: procfs::Server::parse(c.server_pid.as_deref())?,
            server_name: c.server_name.clone(),
            label: c.label.clone().unwrap_or_else(|| scenario.to_owned()),
            prefix: prefix_name,
            per_address: c.per_address,
            address_offset: c.address_offset,
            connect_concurrency: c.connect_concurrency,
            connect_timeout: Duration::from_secs_f64(c.connect_timeout),
            open_timeout: Duration::from_secs_f64(c.open_timeout),
            request_timeout: Duration::from_secs_f64(c.request_timeout),
        })
    }

    /// `--sub-header` options to pass on to a child process.
    pub(crate) fn sub_header_args(&self) -> Vec<String> {
        self.sub_header_raw
            .iter()
            .flat_map(|h| ["--sub-header".to_owned(), h.clone()])
            .collect()
    }

    /// Source address of subscriber `i` (None: let the kernel choose).
    pub(crate) fn source_for(&self, i: usize) -> Option<IpAddr> {
        if self.per_address == 0 || !self.sub.addr.is_ipv4() {
            return None;
        }
        Some(target::source_ip(
            self.address_offset + (i / self.per_address as usize) as u32,
        ))
    }

    /// What publishers need.
    pub(crate) fn clone_pub(&self) -> fanout::PubEnv {
        fanout::PubEnv {
            addr: self.publ.addr,
            host: self.publ.host.clone(),
            body_prefix: self.body_prefix.clone(),
            body_suffix: self.body_suffix.clone(),
            headers: self.pub_headers.clone(),
            timeout: self.request_timeout,
        }
    }
}

/// `Name: value` options as request header lines.
fn header_lines(headers: &[String]) -> Result<String, String> {
    let mut out = String::new();
    for h in headers {
        let Some((name, value)) = h.split_once(':') else {
            return Err(format!("header {h:?}: expected `Name: value`"));
        };
        if name.trim().is_empty() || h.contains(['\r', '\n']) {
            return Err(format!("bad header {h:?}"));
        }
        out.push_str(&format!("{}: {}\r\n", name.trim(), value.trim()));
    }
    Ok(out)
}

/// Exits the process after `seconds`, whatever it is doing.
fn watchdog(seconds: f64, what: &'static str) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs_f64(seconds));
        eprintln!("ssehub-bench: {what} passed its deadline of {seconds:.0} s; exiting");
        #[allow(clippy::exit, reason = "a stuck run must end whatever the tasks are doing")]
        std::process::exit(3);
    });
}

fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}

fn report(env: &Env, mut result: serde_json::Value) {
    if let Some(obj) = result.as_object_mut() {
        obj.insert("server".into(), env.server_name.clone().into());
        obj.insert("label".into(), env.label.clone().into());
        obj.insert("time".into(), (subs::now_ns() / 1_000_000_000).into());
    }
    println!("RESULT {result}");
}

fn check_files(needed: usize) {
    let (soft, hard) = procfs::nofile_limits();
    if (needed as u64) + 64 > soft {
        eprintln!(
            "ssehub-bench: {needed} connections need more than the open-file limit {soft} (hard {hard}); run `ulimit -n {hard}` first"
        );
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Table(t) => {
            return match table::run(&t.files, t.servers.as_deref()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ssehub-bench table: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::FreePort => {
            return match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
                Ok(a) => {
                    println!("{}", a.port());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("ssehub-bench: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Floor(a) => {
            return match floor::run(&a.listen) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("ssehub-bench floor: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::HoldChild(a) => {
            watchdog(a.deadline, "hold-child");
            let common = Common {
                sub_url: a.sub_url.clone(),
                pub_url: a.sub_url.clone(),
                pub_body: "{payload}".into(),
                pub_header: Vec::new(),
                sub_header: a.sub_header.clone(),
                resume_url: None,
                server_pid: None,
                server_name: "child".into(),
                label: None,
                channel_prefix: Some(a.channel_prefix.clone()),
                per_address: a.per_address,
                address_offset: a.address_offset,
                connect_concurrency: a.connect_concurrency,
                connect_timeout: a.connect_timeout,
                open_timeout: a.open_timeout,
                deadline: None,
                request_timeout: 10.0,
                threads: 1,
            };
            let env = match Env::new(&common, "hold") {
                Ok(e) => e,
                Err(e) => {
                    println!("ERROR {e}");
                    return ExitCode::from(2);
                }
            };
            let rt = match runtime(1) {
                Ok(rt) => rt,
                Err(e) => {
                    println!("ERROR runtime: {e}");
                    return ExitCode::from(2);
                }
            };
            let ended = hold::child(&env, &rt, a.subscribers, a.first_index, a.channels);
            rt.shutdown_timeout(Duration::from_secs(1));
            return ExitCode::from(ended.clamp(0, 100) as u8);
        }
        Command::Hold(a) => {
            let env = match Env::new(&a.common, "hold") {
                Ok(e) => e,
                Err(e) => return fail(&e),
            };
            let deadline = a
                .common
                .deadline
                .unwrap_or(a.common.open_timeout + a.settle_max + a.hold_seconds + 90.0);
            watchdog(deadline, "hold");
            let rt = match runtime(a.common.threads) {
                Ok(rt) => rt,
                Err(e) => return fail(&format!("runtime: {e}")),
            };
            let spec = hold::Spec {
                subscribers: a.subscribers,
                channels: a.channels,
                procs: a.procs,
                hold_seconds: a.hold_seconds,
                settle_max: a.settle_max,
            };
            let (result, ok) = hold::run(&env, &rt, &spec);
            report(&env, result);
            rt.shutdown_timeout(Duration::from_secs(1));
            ok
        }
        Command::Fanout(a) => {
            let env = match Env::new(&a.common, "fanout") {
                Ok(e) => e,
                Err(e) => return fail(&e),
            };
            check_files(a.subscribers);
            let spec = fanout::Spec {
                subscribers: a.subscribers,
                channels: a.channels,
                rate: a.rate.max(0.0),
                seconds: a.seconds,
                connections: a.connections.unwrap_or(if a.rate > 0.0 { 1 } else { 4 }),
                payload_bytes: a.payload_bytes,
                max_lag: if a.rate > 0.0 { 0 } else { a.max_lag },
                drain_timeout: a.drain_timeout,
                settle_ms: a.settle_ms,
                slow: a.slow_subscribers,
                slow_pause: a.slow_pause.unwrap_or(a.seconds),
            };
            run_async(&a.common, &env, spec.seconds + spec.drain_timeout, |env| {
                Box::pin(async move {
                    let (r, ok) = fanout::run(env, "fanout", &spec).await;
                    (r, ok)
                })
            })
        }
        Command::Publish(a) => {
            let env = match Env::new(&a.common, "publish") {
                Ok(e) => e,
                Err(e) => return fail(&e),
            };
            check_files(a.subscribers);
            let spec = fanout::Spec {
                subscribers: a.subscribers,
                channels: 1,
                rate: 0.0,
                seconds: a.seconds,
                connections: a.connections,
                payload_bytes: a.payload_bytes,
                max_lag: a.max_lag,
                drain_timeout: a.drain_timeout,
                settle_ms: 300,
                slow: 0,
                slow_pause: 0.0,
            };
            run_async(&a.common, &env, spec.seconds + spec.drain_timeout, |env| {
                Box::pin(async move { fanout::run(env, "publish", &spec).await })
            })
        }
        Command::Resume(a) => {
            let env = match Env::new(&a.common, "resume") {
                Ok(e) => e,
                Err(e) => return fail(&e),
            };
            let spec = resume::Spec {
                backlog: a.backlog,
                backs: a.back.clone(),
                repeat: a.repeat,
                by: a.resume_by,
                payload_bytes: a.payload_bytes,
            };
            let budget = 60.0 + a.backlog as f64 / 500.0 + (a.repeat * a.back.len()) as f64 * 2.0;
            run_async(&a.common, &env, budget, |env| {
                Box::pin(async move { resume::run(env, &spec).await })
            })
        }
    };
    if outcome {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

type Scenario<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = (serde_json::Value, bool)> + 'a>>;

/// Runs an async scenario under its deadline, prints its RESULT; returns whether it is correct.
fn run_async(common: &Common, env: &Env, work_seconds: f64, f: impl for<'a> FnOnce(&'a Env) -> Scenario<'a>) -> bool {
    let deadline = common.deadline.unwrap_or(common.open_timeout + work_seconds + 60.0);
    watchdog(deadline, "the scenario");
    let rt = match runtime(common.threads) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("ssehub-bench: runtime: {e}");
            return false;
        }
    };
    let (result, ok) = rt.block_on(f(env));
    report(env, result);
    rt.shutdown_timeout(Duration::from_secs(1));
    ok
}

fn fail(e: &str) -> ExitCode {
    eprintln!("ssehub-bench: {e}");
    ExitCode::from(2)
}
