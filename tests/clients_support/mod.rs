//! Helpers shared by the registered-client tests (`clients.rs`, `auth.rs`,
//! `presence.rs`, `cors.rs`): registering, sending and subscribing with
//! credentials, checking 401/403 answers, polling with deadlines, and running
//! the binary with an environment of our own (which [`TestServer`] does not allow).
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode};
use serde_json::{json, Value};
use ssehub::schema::SchemaKind;

use crate::common::*;

/// The publisher key of the keyed servers (also a valid `?token=` value).
pub(crate) const KEY: &str = "pk_test-0123456789abcdef";
/// A bearer token that is neither a key nor any client's private token.
pub(crate) const BAD: &str = "bad_token-0123456789abcdef";

/// `--publisher-key KEY`.
pub(crate) const KEYED: &[&str] = &["--publisher-key", KEY];

/// `Authorization: Bearer <token>`.
pub(crate) fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

// ---------------------------------------------------------------------------------------------
// Plain requests
// ---------------------------------------------------------------------------------------------

/// Any request with optional bearer credentials and an optional JSON body.
pub(crate) async fn call(
    server: &TestServer,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Response {
    let mut headers: Vec<(&str, String)> = Vec::new();
    if let Some(token) = token {
        headers.push(("authorization", bearer(token)));
    }
    let body = body.map(Value::to_string);
    if body.is_some() {
        headers.push(("content-type", "application/json".to_owned()));
    }
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    call_with(server, method, path, &headers, body).await
}

/// Any request with exactly these headers and an optional raw body.
pub(crate) async fn call_with(
    server: &TestServer,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Response {
    let mut request = server
        .client()
        .request(method.clone(), server.url(path))
        .timeout(REQUEST);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Status, headers and body text of an answer (body read within [`READ`]).
pub(crate) async fn parts(response: Response) -> (StatusCode, HeaderMap, String) {
    let status = response.status();
    let headers = response.headers().clone();
    let text = tokio::time::timeout(READ, response.text())
        .await
        .expect("body within deadline")
        .expect("read body");
    (status, headers, text)
}

/// Parses `text` as JSON, with the text in the panic message.
#[track_caller]
pub(crate) fn parse_json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text:?}"))
}

/// Asserts `text` contains none of `secrets`.
#[track_caller]
pub(crate) fn assert_no_secret(what: &str, text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{what} contains the secret {secret:?}:\n{text}");
    }
}

/// Asserts a `401 unauthorized` JSON error with `WWW-Authenticate: Bearer`.
#[track_caller]
pub(crate) fn expect_unauthorized(response: Response) -> impl Future<Output = Value> {
    let caller = std::panic::Location::caller();
    async move {
        let challenge = header(response.headers(), "www-authenticate");
        let error = expect_error(response, 401, "unauthorized").await;
        assert!(
            challenge.starts_with("Bearer"),
            "{caller}: a 401 carries WWW-Authenticate: Bearer, got {challenge:?}"
        );
        error
    }
}

/// Polls `check` every 25 ms until it is true; panics with `what` after `within`.
pub(crate) async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() >= end {
            panic!("not within {within:?}: {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------------------------

/// `POST /channels/{channel}/clients` with `body` and credentials `token`; asserts 201, a JSON
/// body valid against `client-registered.schema.json` that repeats what was asked (defaults
/// aside) and shows the client not connected. Returns (client, private token).
pub(crate) async fn register(server: &TestServer, channel: &str, body: Value, token: Option<&str>) -> (Value, String) {
    let response = call(
        server,
        Method::POST,
        &format!("/channels/{channel}/clients"),
        token,
        Some(&body),
    )
    .await;
    let (status, headers, text) = parts(response).await;
    assert_eq!(status, StatusCode::CREATED, "register {body} on {channel}: {text}");
    assert!(
        header(&headers, "content-type").starts_with("application/json"),
        "registration content type {headers:?}"
    );
    let answer = parse_json(&text);
    validate(SchemaKind::ClientRegistered, &answer);
    let client = answer["client"].clone();
    validate(SchemaKind::Client, &client);
    assert_eq!(client["channel"], channel, "{answer}");
    assert_eq!(client["public_token"], body["public_token"], "{answer}");
    let display = body.get("display_name").cloned().unwrap_or(Value::Null);
    assert_eq!(client["display_name"], display, "{answer}");
    assert_eq!(client["connected"], false, "a new client is not connected: {answer}");
    for field in ["connection_timeout_seconds", "connection_idle_seconds"] {
        if let Some(asked) = body.get(field) {
            assert_eq!(&client[field], asked, "{field}: {answer}");
        }
    }
    let private = answer["private_token"].as_str().expect("private token").to_owned();
    validate(SchemaKind::PrivateToken, &json!(private));
    if let Some(chosen) = body.get("private_token") {
        assert_eq!(
            chosen,
            &json!(private),
            "the chosen private token is the client's: {answer}"
        );
    }
    (client, private)
}

/// Registers `public` (display name `display`) with the publisher key [`KEY`]; returns its private token.
pub(crate) async fn reg(server: &TestServer, channel: &str, public: &str, display: Option<&str>) -> String {
    reg_with(server, channel, public, display, Some(KEY)).await
}

/// Registers `public` with credentials `token` (`None` in open mode); returns its private token.
pub(crate) async fn reg_with(
    server: &TestServer,
    channel: &str,
    public: &str,
    display: Option<&str>,
    token: Option<&str>,
) -> String {
    let mut body = json!({"public_token": public});
    if let Some(display) = display {
        body["display_name"] = json!(display);
    }
    register(server, channel, body, token).await.1
}

/// `DELETE /channels/{channel}/clients/{public}`.
pub(crate) async fn delete_client(server: &TestServer, channel: &str, public: &str, token: Option<&str>) -> Response {
    call(
        server,
        Method::DELETE,
        &format!("/channels/{channel}/clients/{public}"),
        token,
        None,
    )
    .await
}

/// Deletes with [`KEY`] and asserts `204` with an empty body.
pub(crate) async fn delete_ok(server: &TestServer, channel: &str, public: &str) {
    let (status, _, text) = parts(delete_client(server, channel, public, Some(KEY)).await).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "DELETE {public} on {channel}: {text}");
    assert!(text.is_empty(), "a 204 has no body: {text:?}");
}

/// `GET /channels/{channel}/clients`: asserts 200, `client-list.schema.json`, the channel, the
/// order by public token and that no `secrets` appear. Returns the list.
pub(crate) async fn list_clients(server: &TestServer, channel: &str, token: Option<&str>, secrets: &[&str]) -> Value {
    let response = call(
        server,
        Method::GET,
        &format!("/channels/{channel}/clients"),
        token,
        None,
    )
    .await;
    let (status, _, text) = parts(response).await;
    assert_eq!(status, StatusCode::OK, "presence list of {channel}: {text}");
    assert_no_secret("the presence list", &text, secrets);
    let list = parse_json(&text);
    validate(SchemaKind::ClientList, &list);
    assert_eq!(list["channel"], channel, "{list}");
    let publics: Vec<&str> = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            validate(SchemaKind::Client, c);
            assert_eq!(c["channel"], channel, "{list}");
            c["public_token"].as_str().unwrap()
        })
        .collect();
    let mut sorted = publics.clone();
    sorted.sort_unstable();
    assert_eq!(publics, sorted, "the list is ordered by public token: {list}");
    list
}

/// The public tokens of the presence list, in its order.
pub(crate) async fn list_publics(server: &TestServer, channel: &str) -> Vec<String> {
    list_clients(server, channel, Some(KEY), &[]).await["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["public_token"].as_str().unwrap().to_owned())
        .collect()
}

/// `GET /channels/{channel}/clients/{public}` with credentials `token`.
pub(crate) async fn get_client_raw(server: &TestServer, channel: &str, public: &str, token: Option<&str>) -> Response {
    call(
        server,
        Method::GET,
        &format!("/channels/{channel}/clients/{public}"),
        token,
        None,
    )
    .await
}

/// One client: asserts 200, `client.schema.json`, the tokens, and that no `secrets` appear.
pub(crate) async fn get_client(server: &TestServer, channel: &str, public: &str, secrets: &[&str]) -> Value {
    let (status, _, text) = parts(get_client_raw(server, channel, public, Some(KEY)).await).await;
    assert_eq!(status, StatusCode::OK, "GET client {public} on {channel}: {text}");
    assert_no_secret("a client's presence view", &text, secrets);
    let client = parse_json(&text);
    validate(SchemaKind::Client, &client);
    assert_eq!(client["channel"], channel);
    assert_eq!(client["public_token"], public);
    client
}

/// Asserts the client is gone: `404 unknown_client`.
pub(crate) async fn expect_no_client(server: &TestServer, channel: &str, public: &str) {
    expect_error(
        get_client_raw(server, channel, public, Some(KEY)).await,
        404,
        "unknown_client",
    )
    .await;
}

/// Whether GET of the client answers 404 now (anything but 200/404 fails).
pub(crate) async fn client_gone(server: &TestServer, channel: &str, public: &str) -> bool {
    let response = get_client_raw(server, channel, public, Some(KEY)).await;
    match response.status().as_u16() {
        200 => false,
        404 => {
            expect_error(response, 404, "unknown_client").await;
            true
        }
        other => panic!("GET client {public}: unexpected status {other}"),
    }
}

/// Polls until the client's `connected` is `want` (deadline [`READ`]).
pub(crate) async fn wait_connected(server: &TestServer, channel: &str, public: &str, want: bool) {
    eventually(
        &format!("client {public} on {channel} connected = {want}"),
        READ,
        || async { get_client(server, channel, public, &[]).await["connected"] == want },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// Sending
// ---------------------------------------------------------------------------------------------

/// `POST /channels/{channel}/messages` with `body` and credentials `token`.
pub(crate) async fn send_as(server: &TestServer, channel: &str, token: Option<&str>, body: &Value) -> Response {
    call(
        server,
        Method::POST,
        &format!("/channels/{channel}/messages"),
        token,
        Some(body),
    )
    .await
}

/// Sends and asserts 201 with a valid send response; returns the id.
pub(crate) async fn send_ok(server: &TestServer, channel: &str, token: Option<&str>, body: &Value) -> String {
    let response = send_as(server, channel, token, body).await;
    let (status, _, text) = parts(response).await;
    assert_eq!(status, StatusCode::CREATED, "send {body} to {channel}: {text}");
    let value = parse_json(&text);
    validate(SchemaKind::SendResponse, &value);
    assert_eq!(value["channel"], channel);
    value["id"].as_str().unwrap().to_owned()
}

/// A broadcast by the publisher: name `test.message`, contents `contents`; returns the id.
pub(crate) async fn broadcast(server: &TestServer, channel: &str, contents: Value) -> String {
    send_ok(
        server,
        channel,
        Some(KEY),
        &json!({"name": "test.message", "contents": contents}),
    )
    .await
}

/// A direct message by the publisher to `to`; returns the id.
pub(crate) async fn direct(server: &TestServer, channel: &str, to: &str, contents: Value) -> String {
    send_ok(
        server,
        channel,
        Some(KEY),
        &json!({"name": "test.direct", "contents": contents, "to": to}),
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// A client's stream with `?token=<token>` plus `extra` query (`&...` or empty) and `headers`
/// (an `Accept: text/event-stream` is added); asserts 200 and the preamble.
pub(crate) async fn open_query(
    server: &TestServer,
    channel: &str,
    token: &str,
    extra: &str,
    headers: &[(&str, &str)],
) -> SseStream {
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    server.subscribe(channel, &format!("?token={token}{extra}"), &all).await
}

/// A stream with `Authorization: Bearer <token>` and `headers`; asserts 200 and the preamble.
pub(crate) async fn open_bearer(
    server: &TestServer,
    channel: &str,
    token: &str,
    headers: &[(&str, &str)],
) -> SseStream {
    let auth = bearer(token);
    let mut all = vec![("accept", "text/event-stream"), ("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    server.subscribe(channel, "", &all).await
}

/// An anonymous stream (with `headers`); asserts 200 and the preamble.
pub(crate) async fn open_anon(server: &TestServer, channel: &str, headers: &[(&str, &str)]) -> SseStream {
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    server.subscribe(channel, "", &all).await
}

/// Reads a `failure` frame with `code` (valid against `failure.schema.json`), then the end.
pub(crate) async fn expect_failure(stream: &mut SseStream, code: &str) -> Value {
    let frame = stream.expect_non_heartbeat(READ).await;
    let failure = frame.control("failure", SchemaKind::Failure);
    assert_eq!(failure["code"], code, "failure {failure}");
    stream.expect_end(READ).await;
    failure
}

/// Opens `/channels/{channel}/events{query}` with `headers` (Accept: text/event-stream added)
/// and expects 200, the preamble, a failure frame with `code` and the end.
pub(crate) async fn expect_stream_failure(
    server: &TestServer,
    channel: &str,
    query: &str,
    headers: &[(&str, &str)],
    code: &str,
) -> Value {
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    let mut stream = SseStream::connect(&server.url(&format!("/channels/{channel}/events{query}")), &all).await;
    assert_eq!(
        stream.status,
        StatusCode::OK,
        "a failure reaches EventSource as a 200 stream"
    );
    stream.expect_preamble(2000).await;
    expect_failure(&mut stream, code).await
}

/// The same request without `Accept: text/event-stream`: the JSON error.
pub(crate) async fn events_json(server: &TestServer, channel: &str, query: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("accept", "application/json")];
    all.extend_from_slice(headers);
    call_with(
        server,
        Method::GET,
        &format!("/channels/{channel}/events{query}"),
        &all,
        None,
    )
    .await
}

/// The next message frame's envelope (checked by [`Frame::envelope`]).
pub(crate) async fn next_message(stream: &mut SseStream) -> Value {
    stream.expect_message(READ).await
}

/// Asserts the next message is the one with `id`.
#[track_caller]
pub(crate) fn expect_id<'a>(stream: &'a mut SseStream, id: &'a str) -> impl Future<Output = Value> + 'a {
    let caller = std::panic::Location::caller();
    async move {
        let envelope = stream.expect_message(READ).await;
        assert_eq!(envelope["id"], id, "{caller}: expected message {id}, got {envelope}");
        envelope
    }
}

/// Asserts `envelope` is the presence event `name` about `public` (display name `display`):
/// contents valid against `presence-event.schema.json`, no `to` and no `from`.
#[track_caller]
pub(crate) fn assert_presence(envelope: &Value, channel: &str, name: &str, public: &str, display: Option<&str>) {
    assert_eq!(envelope["name"], name, "presence event {envelope}");
    assert_eq!(envelope["channel"], channel, "presence event {envelope}");
    validate(SchemaKind::PresenceEvent, &envelope["contents"]);
    assert_eq!(envelope["contents"]["public_token"], public, "{envelope}");
    assert_eq!(
        envelope["contents"]["display_name"],
        display.map_or(Value::Null, |d| json!(d)),
        "{envelope}"
    );
    assert!(envelope.get("to").is_none(), "a presence event has no to: {envelope}");
    assert!(
        envelope.get("from").is_none(),
        "a presence event has no from: {envelope}"
    );
}

/// Reads the next message and checks it is the presence event `name` about `public`.
pub(crate) async fn expect_presence(
    stream: &mut SseStream,
    channel: &str,
    name: &str,
    public: &str,
    display: Option<&str>,
) -> Value {
    let envelope = next_message(stream).await;
    assert_presence(&envelope, channel, name, public, display);
    envelope
}

// ---------------------------------------------------------------------------------------------
// The binary with an environment of our own
// ---------------------------------------------------------------------------------------------

/// How a spawned `ssehub` run went.
pub(crate) enum Spawn {
    /// It printed its listening line: the base URL as printed, and the process (killed on drop).
    Listening(String, Proc),
    /// It exited before listening: status, stdout, stderr.
    Exited(ExitStatus, String, String),
}

/// A spawned `ssehub`, killed on drop.
pub(crate) struct Proc {
    child: Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Proc {
    /// What it wrote on stderr so far.
    pub(crate) fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary with `args` and `envs` (every other `SSEHUB_*` variable removed) and waits
/// (at most [`STARTUP`]) for its listening line or its exit.
pub(crate) fn spawn_ssehub(args: &[&str], envs: &[(&str, &str)]) -> Spawn {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ssehub"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("SSEHUB_") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .env("SSEHUB_LOG", "warn")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn the ssehub binary");
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let mut pipe = child.stderr.take().unwrap();
        let stderr = std::sync::Arc::clone(&stderr);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = pipe.read(&mut buf) {
                stderr.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
    }
    let (tx, rx) = mpsc::channel::<String>();
    {
        let pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    let deadline = Instant::now() + STARTUP;
    let mut stdout = String::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(line) => {
                stdout.push_str(&line);
                stdout.push('\n');
                if let Some(url) = line.trim().strip_prefix("ssehub listening on ") {
                    return Spawn::Listening(url.to_owned(), Proc { child, stderr });
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = loop {
                    if let Some(status) = child.try_wait().expect("try_wait") {
                        break status;
                    }
                    assert!(Instant::now() < deadline, "ssehub closed stdout but did not exit");
                    std::thread::sleep(Duration::from_millis(20));
                };
                // Let the stderr reader drain the pipe.
                std::thread::sleep(Duration::from_millis(50));
                let text = stderr.lock().unwrap().clone();
                return Spawn::Exited(status, stdout, text);
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ssehub neither listened nor exited within {STARTUP:?}; stdout {stdout:?}");
        }
    }
}

/// Runs the binary with `args` and `envs`; asserts it refuses to start (non-zero exit, no
/// listening line). Returns its stderr.
pub(crate) fn expect_refusal(args: &[&str], envs: &[(&str, &str)]) -> String {
    match spawn_ssehub(args, envs) {
        Spawn::Listening(url, proc) => panic!(
            "ssehub {args:?} must refuse to start, but listens on {url}; stderr:\n{}",
            proc.stderr()
        ),
        Spawn::Exited(status, stdout, stderr) => {
            assert!(!status.success(), "ssehub {args:?} must exit non-zero, got {status}");
            assert!(
                !stdout.contains("listening"),
                "no listening line when refusing: stdout {stdout:?}"
            );
            stderr
        }
    }
}

/// Runs the binary with `args` and `envs`; asserts it listens and returns its base URL and process.
pub(crate) fn expect_listening(args: &[&str], envs: &[(&str, &str)]) -> (String, Proc) {
    match spawn_ssehub(args, envs) {
        Spawn::Listening(url, proc) => (url, proc),
        Spawn::Exited(status, stdout, stderr) => {
            panic!("ssehub {args:?} {envs:?} did not start ({status}); stdout {stdout:?}; stderr:\n{stderr}")
        }
    }
}

/// A status from a spawned server (`base` as printed) for `method path` with bearer `token` and
/// an optional JSON body.
pub(crate) async fn spawned_status(
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (StatusCode, String) {
    let client = http_client();
    let mut request = client.request(method, format!("{base}{path}")).timeout(REQUEST);
    if let Some(token) = token {
        request = request.header("authorization", bearer(token));
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.expect("request to the spawned server");
    let status = response.status();
    let text = tokio::time::timeout(READ, response.text())
        .await
        .expect("body within deadline")
        .expect("read body");
    (status, text)
}

// ---------------------------------------------------------------------------------------------
// Channel info with credentials
// ---------------------------------------------------------------------------------------------

/// `GET /channels/{channel}` with the publisher key: asserts 200 and `channel-info.schema.json`.
/// (With the key so that the answer does not depend on the channel's policy.)
pub(crate) async fn info(server: &TestServer, channel: &str) -> Value {
    let response = call(server, Method::GET, &format!("/channels/{channel}"), Some(KEY), None).await;
    let (status, _, text) = parts(response).await;
    assert_eq!(status, StatusCode::OK, "channel info of {channel}: {text}");
    let info = parse_json(&text);
    validate(SchemaKind::ChannelInfo, &info);
    assert_eq!(info["channel"], channel);
    info
}

/// Polls the channel info (with the key) until `subscribers` is `n` (deadline [`READ`]).
pub(crate) async fn wait_streams(server: &TestServer, channel: &str, n: u64) {
    eventually(&format!("{n} streams open on {channel}"), READ, || async {
        info(server, channel).await["subscribers"] == n
    })
    .await;
}
