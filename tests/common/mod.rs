//! Shared helpers of the integration tests.
//!
//! - [`TestServer`]: the real `ssehub` binary on an ephemeral port, killed on drop.
//! - [`SseStream`]: an incremental SSE client over reqwest's byte stream that yields one
//!   [`Frame`] per blank-line-terminated block (comments and `retry:` blocks included),
//!   whatever the chunking, and reports the end of the body.
//! - Schema checks against the very files of `protocol/` (through the library).
//! - [`stores`]: one test body run against every store (`store_tests!`), and a
//!   real `redis-server` per test.
//!
//! Every wait has a deadline: no test can hang.
#![allow(dead_code)]

pub(crate) mod raw;
#[macro_use]
pub(crate) mod stores;
// Not every test crate uses every helper module.
#[allow(unused_imports)]
pub(crate) use raw::*;
#[allow(unused_imports)]
pub(crate) use stores::*;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::HeaderMap;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};
use ssehub::schema::{SchemaKind, Schemas};

/// How long the binary may take to print its listening line.
pub(crate) const STARTUP: Duration = Duration::from_secs(10);
/// Default deadline for one read (a frame, a response).
pub(crate) const READ: Duration = Duration::from_secs(5);
/// Deadline of one plain HTTP request.
pub(crate) const REQUEST: Duration = Duration::from_secs(10);

/// POSTs `body` (a send request) to a messages `url` with `client`, asserts 201
/// (`what` names the send in the failure) and returns the answer. For tasks
/// that send concurrently and so cannot borrow the [`TestServer`].
pub(crate) async fn post_message(client: &reqwest::Client, url: &str, body: &Value, what: &str) -> Value {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .timeout(REQUEST)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let value = json_body(response).await;
    assert_eq!(status, StatusCode::CREATED, "{what}: {value}");
    value
}
/// The `Accept` header every EventSource sends.
pub(crate) const SSE: &[(&str, &str)] = &[("accept", "text/event-stream")];
/// No extra header.
pub(crate) const NONE: &[(&str, &str)] = &[];

// ---------------------------------------------------------------------------------------------
// Schemas
// ---------------------------------------------------------------------------------------------

/// The compiled `protocol/*.schema.json`, loaded once per test binary.
pub(crate) fn schemas() -> &'static Schemas {
    static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
    SCHEMAS.get_or_init(|| Schemas::load().expect("protocol schemas compile"))
}

/// Panics, listing every violation, unless `value` satisfies the schema of `kind`.
#[track_caller]
pub(crate) fn validate(kind: SchemaKind, value: &Value) {
    if let Err(violations) = schemas().validate(kind, value) {
        let list: Vec<String> = violations
            .iter()
            .map(|v| format!("at {:?}: {}", v.pointer, v.message))
            .collect();
        panic!("{kind:?} schema violated by {value}:\n  {}", list.join("\n  "));
    }
}

/// The set of instance locations the library reports for `value` against `kind`
/// (empty when valid).
pub(crate) fn violation_pointers(kind: SchemaKind, value: &Value) -> BTreeSet<String> {
    match schemas().validate(kind, value) {
        Ok(()) => BTreeSet::new(),
        Err(violations) => violations.into_iter().map(|v| v.pointer).collect(),
    }
}

// ---------------------------------------------------------------------------------------------
// Message ids
// ---------------------------------------------------------------------------------------------

/// Splits a message id into (epoch, seq), checking it against `message-id.schema.json`.
#[track_caller]
pub(crate) fn parse_id(id: &str) -> (String, u64) {
    validate(SchemaKind::MessageId, &json!(id));
    let (epoch, seq) = id.split_once('-').expect("id has a '-'");
    (epoch.to_owned(), seq.parse().expect("seq is an integer"))
}

/// The seq part of a message id.
#[track_caller]
pub(crate) fn seq_of(id: &str) -> u64 {
    parse_id(id).1
}

/// The epoch part of a message id.
#[track_caller]
pub(crate) fn epoch_of(id: &str) -> String {
    parse_id(id).0
}

/// An epoch different from `epoch` (same shape).
pub(crate) fn other_epoch(epoch: &str) -> String {
    if epoch == "0badc0de" {
        "deadbeef".to_owned()
    } else {
        "0badc0de".to_owned()
    }
}

// ---------------------------------------------------------------------------------------------
// The server process
// ---------------------------------------------------------------------------------------------

/// A running `ssehub serve` on 127.0.0.1 with an ephemeral port.
pub(crate) struct TestServer {
    child: Option<Child>,
    base: String,
    client: reqwest::Client,
    stderr: Arc<Mutex<String>>,
    stdout: Arc<Mutex<Vec<String>>>,
    status: Option<ExitStatus>,
}

impl TestServer {
    /// Spawns the binary with `serve --listen 127.0.0.1:0` plus `extra_args` and waits (at most
    /// [`STARTUP`]) for its `ssehub listening on http://127.0.0.1:PORT` line.
    pub(crate) fn start(extra_args: &[&str]) -> TestServer {
        TestServer::spawn(Command::new(env!("CARGO_BIN_EXE_ssehub")), extra_args)
    }

    /// Like [`TestServer::start`], with the process's open-file limit (soft
    /// and hard) set to `files`, through `prlimit` (util-linux, on every
    /// Debian system), which then runs the server in its own place.
    pub(crate) fn start_with_files(files: u64, extra_args: &[&str]) -> TestServer {
        let mut command = Command::new("prlimit");
        command
            .arg(format!("--nofile={files}:{files}"))
            .arg("--")
            .arg(env!("CARGO_BIN_EXE_ssehub"));
        TestServer::spawn(command, extra_args)
    }

    fn spawn(mut command: Command, extra_args: &[&str]) -> TestServer {
        // Configuration comes from the arguments only, never from the caller's environment.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("SSEHUB_") {
                command.env_remove(key);
            }
        }
        command
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra_args)
            .env("SSEHUB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn the ssehub binary");

        let stderr = Arc::new(Mutex::new(String::new()));
        {
            let mut pipe = child.stderr.take().expect("stderr is piped");
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match pipe.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => stderr.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n])),
                    }
                }
            });
        }

        let stdout = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<String>();
        {
            let pipe = child.stdout.take().expect("stdout is piped");
            let stdout = Arc::clone(&stdout);
            std::thread::spawn(move || {
                // Keeps draining stdout for the whole life of the process.
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    stdout.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }

        let mut server = TestServer {
            child: Some(child),
            base: String::new(),
            client: http_client(),
            stderr,
            stdout,
            status: None,
        };
        let deadline = std::time::Instant::now() + STARTUP;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.trim().strip_prefix("ssehub listening on ") {
                        let port = url
                            .strip_prefix("http://127.0.0.1:")
                            .and_then(|p| p.parse::<u16>().ok())
                            .unwrap_or_else(|| panic!("unexpected listening line {line:?}"));
                        assert_ne!(port, 0, "the listening line must name the bound port");
                        server.base = url.to_owned();
                        return server;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "ssehub printed no listening line within {STARTUP:?}; stdout {:?}; stderr:\n{}",
                    server.stdout.lock().unwrap(),
                    server.stderr()
                ),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(100));
                    let status = server.child.as_mut().unwrap().try_wait().ok().flatten();
                    panic!(
                        "ssehub closed stdout before listening (exit {status:?}); stdout {:?}; stderr:\n{}",
                        server.stdout.lock().unwrap(),
                        server.stderr()
                    )
                }
            }
        }
    }

    /// `http://127.0.0.1:PORT` + `path`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_owned()
    }

    /// The process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("process is running").id()
    }

    /// What the server wrote on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Sends a signal by name (`TERM`, `INT`) with kill(1); the crate forbids `unsafe`.
    pub(crate) fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{name} {} failed", self.pid());
    }

    /// Sends SIGTERM.
    pub(crate) fn sigterm(&self) {
        self.signal("TERM");
    }

    /// Waits (at most `deadline`) for the process to exit; panics if it does not.
    pub(crate) async fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        match self.try_wait_exit(deadline).await {
            Some(status) => status,
            None => panic!("ssehub did not exit within {deadline:?}; stderr:\n{}", self.stderr()),
        }
    }

    /// Waits (at most `deadline`) for the process to exit; `None` if it is still running.
    pub(crate) async fn try_wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        if self.status.is_some() {
            return self.status;
        }
        let end = tokio::time::Instant::now() + deadline;
        let child = self.child.as_mut().expect("process was started");
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                self.status = Some(status);
                return Some(status);
            }
            if tokio::time::Instant::now() >= end {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The client the helpers use (keep-alive pool bound to this test's runtime).
    pub(crate) fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// GET `path` with extra headers.
    pub(crate) async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        let mut request = self.client.get(self.url(path)).timeout(REQUEST);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("GET request")
    }

    /// GET `path`, returning status and JSON body.
    pub(crate) async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self.get(path, NONE).await;
        let status = response.status();
        (status, json_body(response).await)
    }

    /// A request with any method and an optional JSON content type.
    pub(crate) async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        let mut request = self.client.request(method, self.url(path)).timeout(REQUEST).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        request.send().await.expect("HTTP request")
    }

    /// POST `body` to `/channels/{channel}/messages` with the given content type.
    pub(crate) async fn post_raw(
        &self,
        channel: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> Response {
        self.request(
            reqwest::Method::POST,
            &format!("/channels/{channel}/messages"),
            content_type,
            body,
        )
        .await
    }

    /// Sends one message; asserts 201 and a body valid against `send-response.schema.json`
    /// naming `channel`. Returns that body.
    pub(crate) async fn send(&self, channel: &str, name: &str, contents: Value) -> Value {
        let body = json!({"name": name, "contents": contents}).to_string();
        let response = self.post_raw(channel, Some("application/json"), body).await;
        let status = response.status();
        let value = json_body(response).await;
        assert_eq!(status, StatusCode::CREATED, "send to {channel}: {value}");
        validate(SchemaKind::SendResponse, &value);
        assert_eq!(value["channel"], channel, "send response names the channel");
        value
    }

    /// Sends one message and returns its id.
    pub(crate) async fn send_id(&self, channel: &str, contents: Value) -> String {
        let value = self.send(channel, "test.message", contents).await;
        value["id"].as_str().unwrap().to_owned()
    }

    /// `GET /channels/{channel}`, asserting 200 and `channel-info.schema.json`.
    pub(crate) async fn channel_info(&self, channel: &str) -> Value {
        let (status, body) = self.get_json(&format!("/channels/{channel}")).await;
        assert_eq!(status, StatusCode::OK, "channel info: {body}");
        validate(SchemaKind::ChannelInfo, &body);
        assert_eq!(body["channel"], channel);
        body
    }

    /// Opens `/channels/{channel}/events{query}` (query starts with `?` or is empty),
    /// asserts 200 and reads the preamble.
    pub(crate) async fn subscribe(&self, channel: &str, query: &str, headers: &[(&str, &str)]) -> SseStream {
        let mut stream = SseStream::connect(&self.url(&format!("/channels/{channel}/events{query}")), headers).await;
        assert_eq!(stream.status, StatusCode::OK, "subscribe to {channel}{query}");
        stream.expect_preamble(2000).await;
        stream
    }

    /// Polls `GET /channels/{channel}` until `subscribers` equals `n` (deadline [`READ`]).
    pub(crate) async fn wait_subscribers(&self, channel: &str, n: u64) {
        let end = tokio::time::Instant::now() + READ;
        loop {
            let info = self.channel_info(channel).await;
            if info["subscribers"] == n {
                return;
            }
            if tokio::time::Instant::now() >= end {
                panic!("channel {channel} never had {n} subscribers; last info {info}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.status.is_none() {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- ssehub stderr ----\n{}", self.stderr());
        }
    }
}

/// A client that never uses a proxy.
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("build reqwest client")
}

/// Reads a body as JSON (deadline [`READ`]), panicking with the raw text if it is not JSON.
pub(crate) async fn json_body(response: Response) -> Value {
    let text = tokio::time::timeout(READ, response.text())
        .await
        .expect("body within deadline")
        .expect("read body");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"))
}

/// Asserts an error answer: `status`, a JSON content type, a body valid against
/// `error.schema.json` with `code`. Returns the `error` object.
pub(crate) async fn expect_error(response: Response, status: u16, code: &str) -> Value {
    let actual = response.status();
    let url = response.url().clone();
    let content_type = header(response.headers(), "content-type");
    let body = json_body(response).await;
    assert_eq!(actual.as_u16(), status, "{url}: status of error {code}: body {body}");
    assert!(
        content_type.starts_with("application/json"),
        "{url}: error content type {content_type:?}"
    );
    validate(SchemaKind::Error, &body);
    assert_eq!(body["error"]["code"], code, "{url}: error code; body {body}");
    body["error"].clone()
}

/// A header's value as text ("" when absent).
pub(crate) fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// SSE client
// ---------------------------------------------------------------------------------------------

/// One block of an SSE stream: the lines up to a blank line.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Frame {
    /// Last `id:` field.
    pub(crate) id: Option<String>,
    /// Last `event:` field.
    pub(crate) event: Option<String>,
    /// `data:` fields joined with `\n`.
    pub(crate) data: Option<String>,
    /// Comment lines (`:` and at most one following space removed).
    pub(crate) comments: Vec<String>,
    /// `retry:` field.
    pub(crate) retry: Option<u64>,
    /// Any other field (or a non-numeric retry), in order.
    pub(crate) other: Vec<(String, String)>,
    /// The exact text of the block, line terminators and the blank line included.
    pub(crate) raw: String,
}

impl Frame {
    /// A heartbeat: an empty comment and nothing else.
    pub(crate) fn is_heartbeat(&self) -> bool {
        self.raw == ":\n\n"
    }

    /// A block with no field (only comments).
    pub(crate) fn is_comment_only(&self) -> bool {
        self.id.is_none()
            && self.event.is_none()
            && self.data.is_none()
            && self.retry.is_none()
            && self.other.is_empty()
    }

    /// A message frame (has data and no event name).
    pub(crate) fn is_message(&self) -> bool {
        self.event.is_none() && self.data.is_some()
    }

    /// The data parsed as JSON.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        let data = self
            .data
            .as_deref()
            .unwrap_or_else(|| panic!("frame has no data: {self:?}"));
        serde_json::from_str(data).unwrap_or_else(|e| panic!("data is not JSON ({e}): {data:?}"))
    }

    /// Checks this is a message frame with the exact wire shape `id: <id>\ndata: <json>\n\n`,
    /// the data valid against `envelope.schema.json` and repeating the id; returns the envelope.
    #[track_caller]
    pub(crate) fn envelope(&self) -> Value {
        assert!(self.event.is_none(), "a message frame has no event line: {self:?}");
        let id = self
            .id
            .as_deref()
            .unwrap_or_else(|| panic!("a message frame has an id line: {self:?}"));
        let data = self.data.as_deref().unwrap();
        assert_eq!(self.raw, format!("id: {id}\ndata: {data}\n\n"), "message frame bytes");
        let envelope = self.json();
        validate(SchemaKind::Envelope, &envelope);
        assert_eq!(envelope["id"], id, "envelope id repeats the id line");
        envelope
    }

    /// Checks this is an `event: <name>` frame with no id line, exactly
    /// `event: <name>\ndata: <json>\n\n`, with data valid against `kind`; returns the data.
    #[track_caller]
    pub(crate) fn control(&self, name: &str, kind: SchemaKind) -> Value {
        assert_eq!(self.event.as_deref(), Some(name), "event name of {self:?}");
        assert!(self.id.is_none(), "a {name} frame has no id line: {self:?}");
        let data = self
            .data
            .as_deref()
            .unwrap_or_else(|| panic!("{name} frame without data"));
        assert_eq!(
            self.raw,
            format!("event: {name}\ndata: {data}\n\n"),
            "{name} frame bytes"
        );
        let value = self.json();
        validate(kind, &value);
        value
    }
}

/// What a bounded read found.
#[derive(Debug)]
pub(crate) enum Next {
    /// A complete block.
    Frame(Frame),
    /// The body ended (cleanly or not, see [`SseStream::end_error`]).
    End,
    /// Nothing complete arrived before the deadline.
    Timeout,
}

type ByteStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// An open `text/event-stream` response, parsed incrementally.
pub(crate) struct SseStream {
    /// Response status.
    pub(crate) status: StatusCode,
    /// Response headers.
    pub(crate) headers: HeaderMap,
    /// Every byte received so far.
    pub(crate) received: Vec<u8>,
    body: ByteStream,
    buf: Vec<u8>,
    pending: Frame,
    pending_lines: usize,
    ended: Option<Result<(), String>>,
    _client: reqwest::Client,
}

impl SseStream {
    /// GETs `url` with `headers` (own connection), within [`REQUEST`]; any status.
    pub(crate) async fn connect(url: &str, headers: &[(&str, &str)]) -> SseStream {
        let client = http_client();
        let mut request = client.get(url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = tokio::time::timeout(REQUEST, request.send())
            .await
            .unwrap_or_else(|_| panic!("no response headers from {url} within {REQUEST:?}"))
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        SseStream {
            status: response.status(),
            headers: response.headers().clone(),
            received: Vec::new(),
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
            pending: Frame::default(),
            pending_lines: 0,
            ended: None,
            _client: client,
        }
    }

    /// A header's value ("" when absent).
    pub(crate) fn header(&self, name: &str) -> String {
        header(&self.headers, name)
    }

    /// `None` while open or ended cleanly; the transport error if the body broke off.
    pub(crate) fn end_error(&self) -> Option<String> {
        match &self.ended {
            Some(Err(e)) => Some(e.clone()),
            _ => None,
        }
    }

    /// The next block, the end of the body, or a timeout after `within`.
    pub(crate) async fn next_event(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(frame) = self.parse_buffered() {
                return Next::Frame(frame);
            }
            if self.ended.is_some() {
                return Next::End;
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => return Next::Timeout,
                Ok(None) => self.ended = Some(Ok(())),
                Ok(Some(Err(e))) => self.ended = Some(Err(format!("{e:?}"))),
                Ok(Some(Ok(chunk))) => {
                    self.received.extend_from_slice(&chunk);
                    self.buf.extend_from_slice(&chunk);
                }
            }
        }
    }

    /// The next block, or `None` at the end of the body; panics after `within`.
    #[track_caller]
    pub(crate) fn next_frame(&mut self, within: Duration) -> impl std::future::Future<Output = Option<Frame>> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.next_event(within).await {
                Next::Frame(frame) => Some(frame),
                Next::End => None,
                Next::Timeout => panic!("{caller}: no SSE frame within {within:?}; last bytes {:?}", self.tail()),
            }
        }
    }

    /// The next block; panics at the end of the body or after `within`.
    #[track_caller]
    pub(crate) fn expect_frame(&mut self, within: Duration) -> impl std::future::Future<Output = Frame> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.next_event(within).await {
                Next::Frame(frame) => frame,
                Next::End => panic!(
                    "{caller}: stream ended ({:?}) while a frame was expected; last bytes {:?}",
                    self.ended,
                    self.tail()
                ),
                Next::Timeout => panic!("{caller}: no SSE frame within {within:?}; last bytes {:?}", self.tail()),
            }
        }
    }

    /// The next block that is not a heartbeat.
    #[track_caller]
    pub(crate) fn expect_non_heartbeat(&mut self, within: Duration) -> impl std::future::Future<Output = Frame> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let deadline = tokio::time::Instant::now() + within;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                match self.next_event(left).await {
                    Next::Frame(frame) if frame.is_heartbeat() => continue,
                    Next::Frame(frame) => return frame,
                    Next::End => panic!("{caller}: stream ended ({:?}) while a frame was expected", self.ended),
                    Next::Timeout => panic!("{caller}: no SSE frame within {within:?}; last bytes {:?}", self.tail()),
                }
            }
        }
    }

    /// The next message frame (heartbeats skipped), checked by [`Frame::envelope`];
    /// returns the envelope.
    #[track_caller]
    pub(crate) fn expect_message(&mut self, within: Duration) -> impl std::future::Future<Output = Value> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            let frame = self.expect_non_heartbeat(within).await;
            assert!(frame.is_message(), "{caller}: expected a message frame, got {frame:?}");
            frame.envelope()
        }
    }

    /// Asserts the body ends cleanly within `within` with no further block.
    #[track_caller]
    pub(crate) fn expect_end(&mut self, within: Duration) -> impl std::future::Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            match self.next_event(within).await {
                Next::End => {}
                Next::Frame(frame) => {
                    panic!("{caller}: expected the end of the body, got {frame:?}")
                }
                Next::Timeout => panic!("{caller}: the body did not end within {within:?}"),
            }
            assert_eq!(
                self.end_error(),
                None,
                "{caller}: the body must end cleanly (terminating chunk), not break off"
            );
            assert!(
                self.buf.is_empty() && self.pending_lines == 0,
                "{caller}: incomplete block at the end of the body: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// Asserts the first block is exactly `retry: <ms>\n: ssehub stream open\n\n` and the
    /// headers are those of an SSE stream.
    #[track_caller]
    pub(crate) fn expect_preamble(&mut self, retry_ms: u64) -> impl std::future::Future<Output = ()> + '_ {
        let caller = std::panic::Location::caller();
        async move {
            assert!(
                self.header("content-type").starts_with("text/event-stream"),
                "{caller}: content type {:?}",
                self.header("content-type")
            );
            let frame = self.expect_frame(READ).await;
            assert_eq!(
                frame.raw,
                format!("retry: {retry_ms}\n: ssehub stream open\n\n"),
                "{caller}: preamble"
            );
            assert_eq!(frame.retry, Some(retry_ms));
            assert_eq!(frame.comments, vec!["ssehub stream open".to_owned()]);
        }
    }

    fn tail(&self) -> String {
        let start = self.received.len().saturating_sub(300);
        String::from_utf8_lossy(&self.received[start..]).into_owned()
    }

    /// Takes one complete block out of the buffer, if there is one.
    fn parse_buffered(&mut self) -> Option<Frame> {
        let eof = self.ended.is_some();
        loop {
            let pos = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r')?;
            let consumed = if self.buf[pos] == b'\n' {
                pos + 1
            } else if pos + 1 < self.buf.len() {
                if self.buf[pos + 1] == b'\n' {
                    pos + 2
                } else {
                    pos + 1
                }
            } else if eof {
                pos + 1
            } else {
                // A trailing '\r': wait to see whether '\n' follows.
                return None;
            };
            let taken: Vec<u8> = self.buf.drain(..consumed).collect();
            let raw = String::from_utf8(taken).expect("the stream is UTF-8");
            self.pending.raw.push_str(&raw);
            let line = &raw[..pos];
            if line.is_empty() {
                if self.pending_lines == 0 {
                    // Blank line with nothing before it: keep it in the next block's raw text.
                    continue;
                }
                self.pending_lines = 0;
                return Some(std::mem::take(&mut self.pending));
            }
            self.pending_lines += 1;
            let (field, value) = match line.split_once(':') {
                Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
                None => (line, ""),
            };
            let frame = &mut self.pending;
            match field {
                "" => frame.comments.push(value.to_owned()),
                "id" => frame.id = Some(value.to_owned()),
                "event" => frame.event = Some(value.to_owned()),
                "data" => match &mut frame.data {
                    Some(data) => {
                        data.push('\n');
                        data.push_str(value);
                    }
                    None => frame.data = Some(value.to_owned()),
                },
                "retry" => match value.parse() {
                    Ok(ms) => frame.retry = Some(ms),
                    Err(_) => frame.other.push((field.to_owned(), value.to_owned())),
                },
                _ => frame.other.push((field.to_owned(), value.to_owned())),
            }
        }
    }
}

/// Unit checks of the SSE parser itself (no server).
pub(crate) fn parser_self_test_input() -> Vec<&'static [u8]> {
    vec![
        b"retry: 2000\n: ssehub stream open\n\nid: a-1\nda",
        b"ta: {\"x\":1}\n",
        b"\n:\n\nevent: timeout\r\ndata: {}\r\n\r\nid: a-2\ndata: one\ndata: two\n\nid: a-3\ndata:x\n\n",
    ]
}

/// Builds a stream over canned chunks (for the parser self-test).
pub(crate) fn canned_stream(chunks: Vec<&'static [u8]>) -> SseStream {
    let items: Vec<reqwest::Result<Bytes>> = chunks.into_iter().map(|c| Ok(Bytes::from_static(c))).collect();
    SseStream {
        status: StatusCode::OK,
        headers: HeaderMap::new(),
        received: Vec::new(),
        body: Box::pin(futures::stream::iter(items)),
        buf: Vec::new(),
        pending: Frame::default(),
        pending_lines: 0,
        ended: None,
        _client: http_client(),
    }
}
