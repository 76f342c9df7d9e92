//! Store-specific behaviour with real processes (issue 6):
//!
//! - file store: `kill -9` loses no acknowledged message and no registered client, even with
//!   senders running at the moment of the kill; retention by count keeps the file bounded;
//!   retention by age drops old messages (and the head survives a restart).
//! - Redis, two nodes on one `redis-server`: cross-node delivery and resume, ids ordered
//!   across nodes, clients / direct messages / presence / idle expiry / removal across nodes.
//! - Redis faults: a restart with persistence (streams end, 503s, `/healthz` down, recovery
//!   without a gap) and without it (a new epoch, `other_epoch` gap for old ids).
//!
//! Redis tests follow the skip rule of [`require_tool`]: skipped loudly without
//! `redis-server`, failing instead with `SSEHUB_STRICT_TESTS=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use ssehub::schema::SchemaKind;
use tokio::time::Instant;

/// How long a store outage may take to be noticed, or a recovery to complete.
const RECOVERY: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `kill -9` the server and wait for it to die by that signal.
async fn kill_9(server: &mut TestServer) {
    server.signal("9");
    let status = server.wait_exit(READ).await;
    assert_eq!(status.signal(), Some(9), "ssehub died of SIGKILL: {status:?}");
}

/// Registers a client (open mode: no credentials needed on loopback); asserts 201 and
/// `client-registered.schema.json`; returns the private token.
async fn register(server: &TestServer, channel: &str, registration: Value) -> String {
    let response = server
        .request(
            Method::POST,
            &format!("/channels/{channel}/clients"),
            Some("application/json"),
            registration.to_string(),
        )
        .await;
    let status = response.status();
    let body = json_body(response).await;
    assert_eq!(status, StatusCode::CREATED, "register on {channel}: {body}");
    validate(SchemaKind::ClientRegistered, &body);
    assert_eq!(body["client"]["public_token"], registration["public_token"], "{body}");
    body["private_token"].as_str().unwrap().to_owned()
}

/// `GET /channels/{channel}/clients/{public}`: the status and body (a 200 is checked
/// against `client.schema.json`, anything else against `error.schema.json`).
async fn get_client(server: &TestServer, channel: &str, public: &str) -> (StatusCode, Value) {
    let (status, body) = server.get_json(&format!("/channels/{channel}/clients/{public}")).await;
    if status == StatusCode::OK {
        validate(SchemaKind::Client, &body);
    } else {
        validate(SchemaKind::Error, &body);
    }
    (status, body)
}

/// Asserts the client is gone on `server`: 404 `unknown_client`.
async fn expect_no_client(server: &TestServer, channel: &str, public: &str) {
    let (status, body) = get_client(server, channel, public).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{public} on {}: {body}", server.addr());
    assert_eq!(body["error"]["code"], "unknown_client", "{body}");
}

/// Sends a direct message to `to`; returns its id.
async fn send_direct(server: &TestServer, channel: &str, to: &str, contents: Value) -> String {
    let body = json!({"name": "direct", "contents": contents, "to": to}).to_string();
    let response = server.post_raw(channel, Some("application/json"), body).await;
    let status = response.status();
    let value = json_body(response).await;
    assert_eq!(status, StatusCode::CREATED, "direct message to {to}: {value}");
    validate(SchemaKind::SendResponse, &value);
    value["id"].as_str().unwrap().to_owned()
}

/// `GET /healthz`: status and body, checked against `health.schema.json`.
async fn health(server: &TestServer) -> (StatusCode, Value) {
    let (status, body) = server.get_json("/healthz").await;
    validate(SchemaKind::Health, &body);
    (status, body)
}

/// Polls `/healthz` until it answers 200 (deadline `within`); returns how long it took.
async fn wait_healthy(server: &TestServer, within: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (status, body) = health(server).await;
        if status == StatusCode::OK {
            assert_eq!(body["status"], "ok", "{body}");
            assert_eq!(body["store"]["status"], "up", "{body}");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < within,
            "/healthz still {status} after {within:?}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads message frames (heartbeats skipped, anything else is an error) until the one with
/// id `last`; returns the envelopes, `last`'s included.
async fn read_until(stream: &mut SseStream, last: &str) -> Vec<Value> {
    let mut got = Vec::new();
    loop {
        let envelope = stream.expect_message(Duration::from_secs(10)).await;
        let done = envelope["id"] == last;
        got.push(envelope);
        if done {
            return got;
        }
    }
}

/// Sends a marker and asserts it is the next message on every stream (nothing else queued).
async fn expect_marker_next(server: &TestServer, channel: &str, streams: &mut [&mut SseStream], label: &str) {
    let id = server.send_id(channel, json!(label)).await;
    for stream in streams.iter_mut() {
        let envelope = stream.expect_message(READ).await;
        assert_eq!(envelope["id"], id, "{label}: expected only the marker, got {envelope}");
    }
}

/// The next message is the presence event `name` for `public`; returns its envelope.
async fn expect_presence(stream: &mut SseStream, name: &str, public: &str) -> Value {
    let envelope = stream.expect_message(READ).await;
    assert_eq!(envelope["name"], name, "{envelope}");
    validate(SchemaKind::PresenceEvent, &envelope["contents"]);
    assert_eq!(envelope["contents"]["public_token"], public, "{envelope}");
    envelope
}

/// The comment that ends a stream when the node lost its store's notifications.
const STORE_LOST: &str = ": store connection lost, reconnect\n\n";

/// Asserts the next non-heartbeat frame is exactly [`STORE_LOST`], then the end of the body.
async fn expect_store_lost(stream: &mut SseStream, within: Duration) {
    let frame = stream.expect_non_heartbeat(within).await;
    assert_eq!(
        frame.raw, STORE_LOST,
        "a stream whose store went away ends with this comment"
    );
    stream.expect_end(READ).await;
}

/// Reads the messages `expected` (ids, in order, nothing else, no gap) from `stream` the way a
/// client does: when the stream ends with [`STORE_LOST`], it reconnects with the last id it
/// received (`last` at first). Each message must come within [`READ`]: a stream that stays
/// open and silent while they are stored fails. Returns the stream it ends with.
async fn receive_as_a_client(
    server: &TestServer,
    channel: &str,
    mut stream: SseStream,
    last: &str,
    expected: &[String],
) -> SseStream {
    let mut last = last.to_owned();
    let mut reconnects = 0;
    for id in expected {
        loop {
            match stream.next_event(READ).await {
                Next::Frame(frame) if frame.is_heartbeat() => continue,
                Next::Frame(frame) if frame.is_message() => {
                    let envelope = frame.envelope();
                    assert_eq!(envelope["id"], *id, "{envelope}");
                    last.clone_from(id);
                    break;
                }
                Next::Frame(frame) if frame.raw == STORE_LOST => {
                    stream.expect_end(READ).await;
                    reconnects += 1;
                    assert!(reconnects <= 3, "ended {reconnects} times while waiting for {id}");
                    stream = server
                        .subscribe(
                            channel,
                            "",
                            &[("accept", "text/event-stream"), ("last-event-id", &last)],
                        )
                        .await;
                }
                other => panic!(
                    "a stream opened once /healthz was 200 again must get what is stored from then on \
                     (live, or by ending so that its client resumes): expected {id} within {READ:?}, \
                     got {other:?}"
                ),
            }
        }
    }
    stream
}

/// A subscriber error on the events endpoint: 503 JSON without an EventSource `Accept`, the
/// preamble and one failure frame with it.
async fn expect_stream_refused(server: &TestServer, channel: &str, code: &str) {
    let path = format!("/channels/{channel}/events");
    let response = server.get(&path, NONE).await;
    let error = expect_error(response, 503, code).await;
    let mut stream = SseStream::connect(&server.url(&path), SSE).await;
    assert_eq!(stream.status, 200);
    stream.expect_preamble(2000).await;
    let frame = stream.expect_frame(READ).await;
    let failure = frame.control("failure", SchemaKind::Failure);
    assert_eq!(failure["code"], code, "{failure}");
    assert_eq!(failure["message"], error["message"]);
    stream.expect_end(READ).await;
}

/// Senders posting `{"sender": s, "k": k}` to `url` in a loop until the server stops
/// answering; every 201 is recorded as (id, sender, k).
struct Senders {
    acked: Arc<Mutex<Vec<(String, u64, u64)>>>,
    count: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Senders {
    /// `senders` tasks; each stops after `limit` messages, or at the first transport error.
    fn spawn(client: &reqwest::Client, url: String, senders: u64, limit: u64) -> Senders {
        let acked = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let tasks = (0..senders)
            .map(|sender| {
                let (client, url) = (client.clone(), url.clone());
                let (acked, count) = (Arc::clone(&acked), Arc::clone(&count));
                tokio::spawn(async move {
                    for k in 0..limit {
                        let body = json!({"name": "race", "contents": {"sender": sender, "k": k}});
                        let sent = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.to_string())
                            .timeout(REQUEST)
                            .send()
                            .await;
                        let Ok(response) = sent else { return };
                        let status = response.status();
                        let Ok(text) = response.text().await else { return };
                        assert_eq!(status, StatusCode::CREATED, "sender {sender}, message {k}: {text}");
                        let value: Value = serde_json::from_str(&text).expect("a JSON send response");
                        let id = value["id"].as_str().unwrap().to_owned();
                        acked.lock().unwrap().push((id, sender, k));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Senders { acked, count, tasks }
    }

    /// Waits until at least `n` messages were acknowledged.
    async fn wait_acked(&self, n: usize) {
        let end = Instant::now() + Duration::from_secs(20);
        while self.count.load(Ordering::Relaxed) < n {
            assert!(
                Instant::now() < end,
                "senders stalled at {}",
                self.count.load(Ordering::Relaxed)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits for every sender to stop; returns what was acknowledged.
    async fn finish(self) -> Vec<(String, u64, u64)> {
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("a sender stopped in time")
                .expect("a sender did not panic");
        }
        let acked = self.acked.lock().unwrap().clone();
        acked
    }
}

// ---------------------------------------------------------------------------------------------
// File store
// ---------------------------------------------------------------------------------------------

/// After `kill -9` and a restart on the same file: every acknowledged message is there with
/// its id, ids go on in the same epoch, a subscriber resumes with an old id without a gap, and
/// a registered client (its settings, its private token, a direct message waiting for it)
/// survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_kill_9_keeps_acknowledged_messages_and_clients() {
    let backend = Backend::new(
        StoreKind::File,
        "stores::file_kill_9_keeps_acknowledged_messages_and_clients",
    )
    .expect("the file store needs no tool");
    let mut server = backend.start(&[]);
    let channel = "durable";
    let mut ids = Vec::new();
    for i in 1..=30u64 {
        ids.push(server.send_id(channel, json!(i)).await);
    }
    let private = register(
        &server,
        channel,
        json!({
            "public_token": "alice",
            "display_name": "Alice",
            "connection_timeout_seconds": 30,
            "connection_idle_seconds": 600
        }),
    )
    .await;
    let direct = send_direct(&server, channel, "alice", json!("for alice")).await;
    assert_eq!(seq_of(&direct), 31);
    kill_9(&mut server).await;

    let server = backend.start(&[]);
    let info = server.channel_info(channel).await;
    assert_eq!(info["first_id"], ids[0], "{info}");
    assert_eq!(info["last_id"], direct, "every acknowledged message is there: {info}");
    assert_eq!(info["history_size"], 31, "{info}");
    assert_eq!(info["clients_registered"], 1, "{info}");

    // An anonymous subscriber resuming with an old id: the rest, with their ids, no gap frame;
    // the direct message is skipped silently.
    let mut stream = server
        .subscribe(
            channel,
            "",
            &[("accept", "text/event-stream"), ("last-event-id", &ids[9])],
        )
        .await;
    for (i, id) in ids.iter().enumerate().skip(10) {
        let envelope = stream.expect_message(READ).await;
        assert_eq!(envelope["id"], *id, "{envelope}");
        assert_eq!(envelope["contents"], i as u64 + 1);
    }
    let next = server.send_id(channel, json!("after")).await;
    assert_eq!(epoch_of(&next), epoch_of(&ids[0]), "ids go on in the same epoch");
    assert_eq!(seq_of(&next), 32, "ids go on after the last acknowledged one");
    assert_eq!(stream.expect_message(READ).await["id"], next);

    // The client, as registered.
    let (status, client) = get_client(&server, channel, "alice").await;
    assert_eq!(status, StatusCode::OK, "{client}");
    assert_eq!(
        client,
        json!({
            "channel": channel,
            "public_token": "alice",
            "display_name": "Alice",
            "connected": false,
            "connection_timeout_seconds": 30,
            "connection_idle_seconds": 600
        })
    );
    // Its private token still works, and its stream starts right after its registration: the
    // direct message stored before the kill first, then what came since.
    let mut own = server.subscribe(channel, &format!("?token={private}"), SSE).await;
    let envelope = own.expect_message(READ).await;
    assert_eq!(envelope["id"], direct, "{envelope}");
    assert_eq!(envelope["to"], "alice", "{envelope}");
    assert_eq!(envelope["contents"], "for alice");
    assert_eq!(own.expect_message(READ).await["id"], next);
    expect_marker_next(&server, channel, &mut [&mut stream, &mut own], "live").await;
}

/// Senders are running when the server gets `kill -9`: after the restart every message that
/// was answered 201 is there, with the id it was given, and nothing is doubled. At most one
/// unacknowledged message per sender (the one in flight) may have been stored too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_kill_9_during_concurrent_sends_loses_nothing_acknowledged() {
    const SENDERS: u64 = 4;
    let backend = Backend::new(StoreKind::File, "stores::file_kill_9_during_concurrent_sends")
        .expect("the file store needs no tool");
    let args = ["--history-size", "100000"];
    let mut server = backend.start(&args);
    let channel = "race";
    let start = server.send_id(channel, json!("start")).await;

    let senders = Senders::spawn(
        server.client(),
        server.url(&format!("/channels/{channel}/messages")),
        SENDERS,
        u64::MAX,
    );
    senders.wait_acked(200).await;
    kill_9(&mut server).await;
    let acked = senders.finish().await;

    let server = backend.start(&args);
    let info = server.channel_info(channel).await;
    let last = info["last_id"].as_str().expect("a last id").to_owned();
    assert_eq!(epoch_of(&last), epoch_of(&start), "same epoch after the restart");
    let mut stream = server
        .subscribe(
            channel,
            "",
            &[("accept", "text/event-stream"), ("last-event-id", &start)],
        )
        .await;
    let stored = read_until(&mut stream, &last).await;

    // Positions 2..=last, each once, in order, no gap frame (read_until accepts only messages).
    let seqs: Vec<u64> = stored.iter().map(|e| seq_of(e["id"].as_str().unwrap())).collect();
    assert_eq!(seqs, (2..=seq_of(&last)).collect::<Vec<_>>(), "consecutive positions");
    let mut by_id = BTreeMap::new();
    let mut per_sender: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for envelope in &stored {
        let (sender, k) = (
            envelope["contents"]["sender"].as_u64().unwrap(),
            envelope["contents"]["k"].as_u64().unwrap(),
        );
        by_id.insert(envelope["id"].as_str().unwrap().to_owned(), (sender, k));
        per_sender.entry(sender).or_default().push(k);
    }
    // Every acknowledged message is there, under the id its sender got.
    for (id, sender, k) in &acked {
        assert_eq!(
            by_id.get(id),
            Some(&(*sender, *k)),
            "acknowledged message {id} (sender {sender}, #{k}) after kill -9"
        );
    }
    // Nothing doubled; per sender, its messages in order with no hole, at most one beyond the
    // acknowledged ones.
    for (sender, ks) in &per_sender {
        let acknowledged = acked.iter().filter(|(_, s, _)| s == sender).count() as u64;
        assert_eq!(
            *ks,
            (0..ks.len() as u64).collect::<Vec<_>>(),
            "sender {sender}: each once, in order"
        );
        assert!(
            ks.len() as u64 == acknowledged || ks.len() as u64 == acknowledged + 1,
            "sender {sender}: {} stored, {acknowledged} acknowledged",
            ks.len()
        );
    }
    assert!(acked.len() >= 200);
    eprintln!("{} acknowledged, {} stored before kill -9", acked.len(), stored.len());

    // Sending goes on after the last stored position.
    let next = server.send_id(channel, json!("after")).await;
    assert_eq!(seq_of(&next), seq_of(&last) + 1);
    assert_eq!(stream.expect_message(READ).await["id"], next);
}

/// `--history-size 10`: the channel keeps 10 messages, and the file does not grow with the
/// number of messages sent (the same 1000 messages again add almost nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_retention_by_count_keeps_the_file_bounded() {
    let backend = Backend::new(
        StoreKind::File,
        "stores::file_retention_by_count_keeps_the_file_bounded",
    )
    .expect("the file store needs no tool");
    let server = backend.start(&["--history-size", "10"]);
    let path = backend.file_path().unwrap();
    let channel = "bounded";
    let pad = "x".repeat(2000);

    let mut sizes = Vec::new();
    let mut sent = 0u64;
    for round in 1..=2u64 {
        // Four senders at once (the writer commits them in batches), 1000 messages per round.
        let tasks: Vec<_> = (0..4u64)
            .map(|sender| {
                let client = server.client().clone();
                let url = server.url(&format!("/channels/{channel}/messages"));
                let pad = pad.clone();
                tokio::spawn(async move {
                    for k in 0..250u64 {
                        let body = json!({"name": "fill", "contents": {"s": sender, "k": k, "pad": pad}});
                        post_message(&client, &url, &body, "fill").await;
                    }
                })
            })
            .collect();
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(60), task)
                .await
                .expect("senders finished in time")
                .unwrap();
        }
        sent += 1000;
        let info = server.channel_info(channel).await;
        assert_eq!(info["history_size"], 10, "round {round}: {info}");
        assert_eq!(seq_of(info["last_id"].as_str().unwrap()), sent, "{info}");
        assert_eq!(seq_of(info["first_id"].as_str().unwrap()), sent - 9, "{info}");
        sizes.push(std::fs::metadata(&path).expect("the database file").len());
    }
    let (after_1000, after_2000) = (sizes[0], sizes[1]);
    eprintln!("file size after 1000 messages: {after_1000}, after 2000: {after_2000}");
    // 1000 messages of this size are over 2 MB: a file that kept them would grow by that much.
    assert!(
        after_2000 <= after_1000 + after_1000 / 4,
        "the file grew from {after_1000} to {after_2000} bytes for 1000 more messages with 10 retained"
    );
}

/// `--history-age 1`: old messages are dropped (history_size 0, first_id null) while last_id
/// stays; that is still so after a restart, and ids go on after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_retention_by_age_drops_old_messages() {
    let backend = Backend::new(StoreKind::File, "stores::file_retention_by_age_drops_old_messages")
        .expect("the file store needs no tool");
    let args = ["--history-age", "1"];
    let mut server = backend.start(&args);
    let channel = "aging";
    let mut ids = Vec::new();
    for i in 1..=5u64 {
        ids.push(server.send_id(channel, json!(i)).await);
    }
    assert_eq!(server.channel_info(channel).await["history_size"], 5);
    let sent = Instant::now();
    let end = sent + Duration::from_secs(5);
    let info = loop {
        let info = server.channel_info(channel).await;
        if info["history_size"] == 0 {
            break info;
        }
        assert!(Instant::now() < end, "history never expired: {info}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(sent.elapsed() >= Duration::from_millis(900), "expired too early");
    assert_eq!(info["first_id"], Value::Null, "{info}");
    assert_eq!(info["last_id"], ids[4], "{info}");

    server.sigterm();
    assert!(server.wait_exit(READ).await.success());
    let server = backend.start(&args);
    let info = server.channel_info(channel).await;
    assert_eq!(info["history_size"], 0, "{info}");
    assert_eq!(info["last_id"], ids[4], "the head survives the restart: {info}");
    let next = server.send_id(channel, json!(6)).await;
    assert_eq!(epoch_of(&next), epoch_of(&ids[0]));
    assert_eq!(seq_of(&next), 6, "an id is never issued twice");
}

// ---------------------------------------------------------------------------------------------
// Redis: two nodes
// ---------------------------------------------------------------------------------------------

/// Subscribe on A, send on B: A receives. Drop A's stream, send more on B, resume on B with
/// A's last id: everything missed, in order, no duplicate, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_two_nodes_deliver_across_and_resume_on_the_other_node() {
    let Some(redis) = RedisServer::start("stores::redis_two_nodes_deliver_across", false) else {
        return;
    };
    let a = redis.node(&[]);
    let b = redis.node(&[]);
    let channel = "shared";
    let mut on_a = a.subscribe(channel, "", SSE).await;
    let mut ids = Vec::new();
    for i in 1..=5u64 {
        let id = b.send_id(channel, json!(i)).await;
        assert_eq!(seq_of(&id), i);
        let envelope = on_a.expect_message(READ).await;
        assert_eq!(envelope["id"], id, "sent on B, received on A");
        assert_eq!(envelope["contents"], i);
        ids.push(id);
    }
    let last_on_a = ids[4].clone();
    drop(on_a);
    a.wait_subscribers(channel, 0).await;
    for i in 6..=10u64 {
        ids.push(b.send_id(channel, json!(i)).await);
    }
    // Both nodes see the same channel.
    let (info_a, info_b) = (a.channel_info(channel).await, b.channel_info(channel).await);
    assert_eq!(info_a["last_id"], ids[9]);
    assert_eq!(info_a["first_id"], info_b["first_id"]);
    assert_eq!(info_a["last_id"], info_b["last_id"]);
    assert_eq!(info_a["history_size"], 10);

    let mut on_b = b
        .subscribe(
            channel,
            "",
            &[("accept", "text/event-stream"), ("last-event-id", &last_on_a)],
        )
        .await;
    for (i, id) in ids.iter().enumerate().skip(5) {
        let envelope = on_b.expect_message(READ).await;
        assert_eq!(envelope["id"], *id, "resumed on B: {envelope}");
        assert_eq!(envelope["contents"], i as u64 + 1);
    }
    // Live next (sent on A this time): no duplicate, nothing else queued.
    let marker = a.send_id(channel, json!("marker")).await;
    assert_eq!(on_b.expect_message(READ).await["id"], marker);
}

/// Both nodes send concurrently: subscribers on each node see strictly increasing positions,
/// every acknowledged id exactly once, with its contents.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_ids_are_ordered_across_nodes() {
    const PER_NODE: u64 = 150;
    let Some(redis) = RedisServer::start("stores::redis_ids_are_ordered_across_nodes", false) else {
        return;
    };
    let a = redis.node(&[]);
    let b = redis.node(&[]);
    let channel = "ordered";
    let mut on_a = a.subscribe(channel, "", SSE).await;
    let mut on_b = b.subscribe(channel, "", SSE).await;
    let url = |server: &TestServer| server.url(&format!("/channels/{channel}/messages"));
    // Two senders post to A and two to B, all at once.
    let to_a = Senders::spawn(a.client(), url(&a), 2, PER_NODE / 2);
    let to_b = Senders::spawn(b.client(), url(&b), 2, PER_NODE / 2);
    let mut acked: Vec<(String, (u64, u64))> = Vec::new();
    for (node, senders) in [(0u64, to_a), (1, to_b)] {
        for (id, sender, k) in senders.finish().await {
            acked.push((id, (node * 10 + sender, k)));
        }
    }
    assert_eq!(acked.len() as u64, 2 * PER_NODE, "every send was acknowledged");
    let unique: BTreeSet<&String> = acked.iter().map(|(id, _)| id).collect();
    assert_eq!(unique.len(), acked.len(), "no id issued twice across nodes");
    let expected: BTreeMap<u64, (String, (u64, u64))> =
        acked.iter().map(|(id, who)| (seq_of(id), (id.clone(), *who))).collect();
    let last = &expected.values().last().unwrap().0;
    assert_eq!(seq_of(last), 2 * PER_NODE, "positions 1..=n with no hole");

    for (node, stream) in [("A", &mut on_a), ("B", &mut on_b)] {
        let got = read_until(stream, last).await;
        let seqs: Vec<u64> = got.iter().map(|e| seq_of(e["id"].as_str().unwrap())).collect();
        assert_eq!(
            seqs,
            (1..=2 * PER_NODE).collect::<Vec<_>>(),
            "node {node}: strictly increasing, each id once"
        );
        for envelope in &got {
            let (id, (sender, k)) = &expected[&seq_of(envelope["id"].as_str().unwrap())];
            assert_eq!(envelope["id"], *id);
            assert_eq!(envelope["contents"]["sender"], *sender % 10, "node {node}: {envelope}");
            assert_eq!(envelope["contents"]["k"], *k, "node {node}: {envelope}");
        }
    }
}

/// A client registered on A is visible on B; a direct message sent on B reaches only that
/// client's stream on A.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_clients_and_direct_messages_across_nodes() {
    let Some(redis) = RedisServer::start("stores::redis_clients_and_direct_messages_across_nodes", false) else {
        return;
    };
    let a = redis.node(&[]);
    let b = redis.node(&[]);
    let channel = "team";
    let private = register(
        &a,
        channel,
        json!({"public_token": "alice", "display_name": "Alice", "connection_idle_seconds": 600}),
    )
    .await;
    register(&a, channel, json!({"public_token": "bob"})).await;
    let (status, on_b) = get_client(&b, channel, "alice").await;
    assert_eq!(status, StatusCode::OK, "{on_b}");
    let (_, on_a) = get_client(&a, channel, "alice").await;
    assert_eq!(on_a, on_b, "one registration, seen alike by both nodes");
    let (status, list) = b.get_json(&format!("/channels/{channel}/clients")).await;
    assert_eq!(status, StatusCode::OK);
    validate(SchemaKind::ClientList, &list);
    let publics: Vec<&str> = list["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["public_token"].as_str().unwrap())
        .collect();
    assert_eq!(publics, ["alice", "bob"]);

    let mut alice = a.subscribe(channel, &format!("?token={private}"), SSE).await;
    let mut anon_a = a.subscribe(channel, "", SSE).await;
    let mut anon_b = b.subscribe(channel, "", SSE).await;
    // alice's stream (on A) is counted on B too.
    let end = Instant::now() + READ;
    loop {
        let (_, client) = get_client(&b, channel, "alice").await;
        if client["connected"] == true {
            break;
        }
        assert!(Instant::now() < end, "B never saw alice connected: {client}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    let direct = send_direct(&b, channel, "alice", json!({"secret": 1})).await;
    let envelope = alice.expect_message(READ).await;
    assert_eq!(envelope["id"], direct, "{envelope}");
    assert_eq!(envelope["to"], "alice");
    assert_eq!(envelope["contents"], json!({"secret": 1}));
    // Nobody else got it: the next message everywhere is the marker.
    expect_marker_next(
        &b,
        channel,
        &mut [&mut alice, &mut anon_a, &mut anon_b],
        "after the direct message",
    )
    .await;
}

/// DELETE on B ends the client's stream on A with a `client_removed` failure frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_delete_on_one_node_ends_the_stream_on_the_other() {
    let Some(redis) = RedisServer::start("stores::redis_delete_on_one_node_ends_the_stream_on_the_other", false) else {
        return;
    };
    let a = redis.node(&[]);
    let b = redis.node(&[]);
    let channel = "team";
    let private = register(&a, channel, json!({"public_token": "alice"})).await;
    let mut alice = a.subscribe(channel, &format!("?token={private}"), SSE).await;
    let mut anon_a = a.subscribe(channel, "", SSE).await;
    let response = b
        .request(Method::DELETE, &format!("/channels/{channel}/clients/alice"), None, "")
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let frame = alice.expect_non_heartbeat(READ).await;
    let failure = frame.control("failure", SchemaKind::Failure);
    assert_eq!(failure["code"], "client_removed", "{failure}");
    alice.expect_end(READ).await;
    expect_no_client(&a, channel, "alice").await;
    expect_no_client(&b, channel, "alice").await;
    // Other streams go on.
    expect_marker_next(&a, channel, &mut [&mut anon_a], "after the removal").await;
    // The token no longer opens a stream, on either node.
    for node in [&a, &b] {
        let path = format!("/channels/{channel}/events?token={private}");
        let response = node.get(&path, NONE).await;
        expect_error(response, 404, "unknown_client").await;
    }
}

/// Presence on: a client's stream opening on B and closing is announced once, and seen on
/// both nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_presence_events_reach_both_nodes() {
    let Some(redis) = RedisServer::start("stores::redis_presence_events_reach_both_nodes", false) else {
        return;
    };
    let args = ["--policy", "*:presence=on"];
    let a = redis.node(&args);
    let b = redis.node(&args);
    let channel = "lobby";
    let mut watch_a = a.subscribe(channel, "", SSE).await;
    let mut watch_b = b.subscribe(channel, "", SSE).await;
    let private = register(&a, channel, json!({"public_token": "alice", "display_name": "Alice"})).await;

    let own = b.subscribe(channel, &format!("?token={private}"), SSE).await;
    let on_a = expect_presence(&mut watch_a, "client.connected", "alice").await;
    let on_b = expect_presence(&mut watch_b, "client.connected", "alice").await;
    assert_eq!(on_a, on_b, "the same stored event on both nodes");
    assert_eq!(
        on_a["contents"],
        json!({"public_token": "alice", "display_name": "Alice"})
    );
    expect_marker_next(&a, channel, &mut [&mut watch_a, &mut watch_b], "connected once").await;

    drop(own);
    let on_a = expect_presence(&mut watch_a, "client.disconnected", "alice").await;
    let on_b = expect_presence(&mut watch_b, "client.disconnected", "alice").await;
    assert_eq!(on_a, on_b);
    expect_marker_next(&b, channel, &mut [&mut watch_a, &mut watch_b], "disconnected once").await;
}

/// A client idle past `connection_idle_seconds: 1` is removed on both nodes, and
/// `client.expired` is announced exactly once although both nodes run the expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_idle_expiry_across_nodes_is_announced_once() {
    let Some(redis) = RedisServer::start("stores::redis_idle_expiry_across_nodes", false) else {
        return;
    };
    let args = ["--policy", "*:presence=on"];
    let a = redis.node(&args);
    let b = redis.node(&args);
    let channel = "lobby";
    let start = a.send_id(channel, json!("start")).await;
    let mut watch_a = a.subscribe(channel, "", SSE).await;
    let mut watch_b = b.subscribe(channel, "", SSE).await;
    register(
        &a,
        channel,
        json!({"public_token": "bob", "display_name": "Bob", "connection_idle_seconds": 1}),
    )
    .await;
    let registered = Instant::now();
    let on_a = watch_a.expect_message(Duration::from_secs(5)).await;
    assert_eq!(on_a["name"], "client.expired", "{on_a}");
    assert_eq!(on_a["contents"], json!({"public_token": "bob", "display_name": "Bob"}));
    assert_eq!(watch_b.expect_message(READ).await, on_a, "the same event on B");
    assert!(registered.elapsed() >= Duration::from_millis(900), "expired too early");
    expect_no_client(&a, channel, "bob").await;
    expect_no_client(&b, channel, "bob").await;
    for node in [&a, &b] {
        assert_eq!(node.channel_info(channel).await["clients_registered"], 0);
    }
    // Give the other node more than one expiry round (every second) to announce it again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    expect_marker_next(&b, channel, &mut [&mut watch_a, &mut watch_b], "expired once").await;
    // The history holds it once.
    let info = a.channel_info(channel).await;
    assert_eq!(info["history_size"], 3, "start, client.expired, marker: {info}");
    let mut replay = b
        .subscribe(
            channel,
            "",
            &[("accept", "text/event-stream"), ("last-event-id", &start)],
        )
        .await;
    assert_eq!(replay.expect_message(READ).await, on_a);
}

// ---------------------------------------------------------------------------------------------
// Redis: faults
// ---------------------------------------------------------------------------------------------

/// Redis (with persistence) goes away and comes back on the same port: open streams end with
/// `: store connection lost, reconnect`, sends answer 503 `store_unavailable` (never 201),
/// `/healthz` is 503 with the store down; after the restart the node recovers by itself, and
/// subscribers resuming with their last id get everything sent since, without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_with_persistence_recovers_without_a_gap() {
    let Some(mut redis) = RedisServer::start("stores::redis_restart_with_persistence", true) else {
        return;
    };
    let server = redis.node(&[]);
    let channel = "steady";
    let mut stream = server.subscribe(channel, "", SSE).await;
    let mut before = Vec::new();
    for i in 1..=3u64 {
        let id = server.send_id(channel, json!(i)).await;
        assert_eq!(stream.expect_message(READ).await["id"], id);
        before.push(id);
    }
    let last_seen = before[2].clone();

    redis.kill();
    let killed = Instant::now();
    expect_store_lost(&mut stream, RECOVERY).await;
    let noticed = killed.elapsed();
    assert!(
        noticed < Duration::from_secs(5),
        "the stream ended {noticed:?} after redis died"
    );

    for i in 0..3 {
        let body = json!({"name": "lost", "contents": i}).to_string();
        let response = server.post_raw(channel, Some("application/json"), body).await;
        expect_error(response, 503, "store_unavailable").await;
    }
    let (status, body) = health(&server).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["store"], json!({"kind": "redis", "status": "down"}));
    assert_eq!(body["status"], "degraded");
    expect_stream_refused(&server, channel, "store_unavailable").await;

    // Redis stays away for a moment, as when it restarts after a crash.
    tokio::time::sleep_until(killed + Duration::from_millis(1700)).await;
    redis.restart();
    let took = wait_healthy(&server, RECOVERY).await;
    assert!(
        took < Duration::from_secs(5),
        "/healthz was 200 again only after {took:?}"
    );

    // A subscriber reconnecting as soon as the node says it is healthy, then sends.
    let early = server
        .subscribe(
            channel,
            "",
            &[("accept", "text/event-stream"), ("last-event-id", &last_seen)],
        )
        .await;
    let mut after = Vec::new();
    for i in 4..=6u64 {
        let id = server.send_id(channel, json!(i)).await;
        assert_eq!(epoch_of(&id), epoch_of(&last_seen), "same epoch: the data persisted");
        assert_eq!(seq_of(&id), i, "ids go on; the refused sends took no position");
        after.push(id);
    }
    // A subscriber resuming after those sends: everything since its last id, replayed, no gap.
    let late = server
        .subscribe(
            channel,
            "",
            &[("accept", "text/event-stream"), ("last-event-id", &last_seen)],
        )
        .await;
    let late = receive_as_a_client(&server, channel, late, &last_seen, &after).await;
    // The early one gets them too: live, or by being ended so that it resumes; never silence.
    let early = receive_as_a_client(&server, channel, early, &last_seen, &after).await;
    // Both go on with what is sent next.
    let marker = server.send_id(channel, json!("marker")).await;
    for stream in [early, late] {
        receive_as_a_client(&server, channel, stream, &after[2], std::slice::from_ref(&marker)).await;
    }
    let (status, body) = health(&server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["store"], json!({"kind": "redis", "status": "up"}));
}

/// Redis comes back without its data: ids after that have a new epoch (no old id is ever
/// issued again), and a client resuming with an old id gets a gap frame `other_epoch`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_data_loss_starts_a_new_epoch() {
    let Some(mut redis) = RedisServer::start("stores::redis_data_loss_starts_a_new_epoch", false) else {
        return;
    };
    let server = redis.node(&[]);
    let channel = "fragile";
    // A stream that has received messages: settled, waiting for the next one.
    let mut stream = server.subscribe(channel, "", SSE).await;
    let mut old = Vec::new();
    for i in 1..=3u64 {
        let id = server.send_id(channel, json!(i)).await;
        assert_eq!(stream.expect_message(READ).await["id"], id);
        old.push(id);
    }
    let old_epoch = epoch_of(&old[0]);

    redis.restart();
    expect_store_lost(&mut stream, RECOVERY).await;
    wait_healthy(&server, RECOVERY).await;

    let mut new = Vec::new();
    for i in 1..=3u64 {
        let id = server.send_id(channel, json!(100 + i)).await;
        assert_ne!(epoch_of(&id), old_epoch, "a new epoch after the data was lost: {id}");
        assert!(!old.contains(&id), "an old id issued again: {id}");
        new.push(id);
    }
    let new_epoch = epoch_of(&new[0]);
    assert!(new.iter().all(|id| epoch_of(id) == new_epoch), "{new:?}");
    assert_eq!(seq_of(&new[0]), 1, "the new epoch starts over: {new:?}");
    let info = server.channel_info(channel).await;
    assert_eq!(info["first_id"], new[0], "{info}");
    assert_eq!(info["last_id"], new[2], "{info}");

    let mut resumed = server
        .subscribe(
            channel,
            "",
            &[("accept", "text/event-stream"), ("last-event-id", &old[2])],
        )
        .await;
    let frame = resumed.expect_frame(READ).await;
    let gap = frame.control("gap", SchemaKind::Gap);
    assert_eq!(
        gap,
        json!({"channel": channel, "after": old[2], "resume_from": new[0], "reason": "other_epoch"})
    );
    for (i, id) in new.iter().enumerate() {
        let envelope = resumed.expect_message(READ).await;
        assert_eq!(envelope["id"], *id);
        assert_eq!(envelope["contents"], 101 + i as u64);
    }
    // And goes on: what is sent next reaches it (live, or by being ended so that it resumes).
    let marker = server.send_id(channel, json!("marker")).await;
    receive_as_a_client(&server, channel, resumed, &new[2], &[marker]).await;
}

/// One command to `redis` over RESP, as a store would be changed behind ssehub's back;
/// returns the reply's first line (an error reply fails the test).
fn redis_command(redis: &RedisServer, args: &[&[u8]]) -> String {
    use std::io::{Read, Write};
    let url = redis.url();
    let port = url.trim_start_matches("redis://127.0.0.1:").trim_end_matches("/0");
    let mut socket = std::net::TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect to redis");
    socket.set_read_timeout(Some(READ)).unwrap();
    let mut command = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        command.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        command.extend_from_slice(arg);
        command.extend_from_slice(b"\r\n");
    }
    socket.write_all(&command).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        assert_eq!(socket.read(&mut byte).expect("a reply from redis"), 1, "redis closed");
        reply.push(byte[0]);
    }
    let reply = String::from_utf8(reply).unwrap();
    assert!(
        !reply.starts_with('-'),
        "redis refused {:?}: {reply}",
        String::from_utf8_lossy(args[0])
    );
    reply.trim_end().to_owned()
}

/// An envelope is only as sound as the store it is read back from: one holding raw CR or LF
/// (written into the log, or into a notification, behind ssehub's back) must never inject SSE
/// lines. Valid JSON with line breaks between its tokens arrives as the same JSON; a forged
/// frame after an envelope stays inside the one `data:` line; the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_envelopes_with_raw_line_breaks_cannot_inject_lines() {
    let Some(redis) = RedisServer::start("stores::redis_envelopes_with_raw_line_breaks", false) else {
        return;
    };
    let server = redis.node(&[]);
    let first = server.send_id("c", json!(1)).await;
    let epoch = epoch_of(&first);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    let forged = |seq: u64| {
        format!(
            "{{\"id\":\"{epoch}-{seq}\",\"contents\":1}}\n\nevent: failure\r\ndata: {{\"code\":\"internal\",\"message\":\"forged\"}}\n\nid: {epoch}-99"
        )
    };
    let spaced = format!(
        "{{\"id\":\"{epoch}-2\",\r\n\"channel\":\"c\",\n\"name\":\"n\",\"contents\":[1,\r2],\"time\":\"2026-01-01T00:00:00.000Z\"}}"
    );
    for (seq, envelope) in [("2-0", spaced), ("3-0", forged(3))] {
        redis_command(&redis, &[b"INCR", b"ssehub:head:c"]);
        let args: [&[u8]; 9] = [
            b"XADD",
            b"ssehub:log:c",
            seq.as_bytes(),
            b"t",
            now.as_bytes(),
            b"to",
            b"",
            b"e",
            envelope.as_bytes(),
        ];
        redis_command(&redis, &args);
    }
    let mut stream = server
        .subscribe("c", "", &[("accept", "text/event-stream"), ("last-event-id", &first)])
        .await;
    let envelope = stream.expect_message(READ).await;
    assert_eq!(envelope["contents"], json!([1, 2]), "{envelope}");
    let check_forged = |frame: Frame, seq: u64| {
        assert_eq!(frame.id, Some(format!("{epoch}-{seq}")), "{frame:?}");
        assert_eq!(frame.event, None, "no event line injected: {frame:?}");
        assert!(frame.other.is_empty(), "{frame:?}");
        assert!(frame.data.unwrap().contains("event: failure  data:"), "one data line");
        assert_eq!(
            frame.raw.matches('\n').count(),
            3,
            "two lines and the blank one: {:?}",
            frame.raw
        );
    };
    check_forged(stream.expect_non_heartbeat(READ).await, 3);

    // Live, through the notification every node receives (see append.lua).
    redis_command(&redis, &[b"INCR", b"ssehub:head:c"]);
    let notification = format!("m\nc\n{epoch}\n4\n{now}\n\n{}", forged(4));
    redis_command(&redis, &[b"PUBLISH", b"ssehub:events", notification.as_bytes()]);
    check_forged(stream.expect_non_heartbeat(READ).await, 4);
    let next = server.send_id("c", json!("after")).await;
    assert_eq!(seq_of(&next), 5);
    assert_eq!(stream.expect_message(READ).await["id"], next, "the stream goes on");
    assert!(
        server.stderr().contains("raw line break"),
        "logged: {}",
        server.stderr()
    );
}

/// The Redis store pages the presence list from a sorted index of public tokens that its
/// scripts keep; registrations made before the index existed (here: the index deleted behind
/// ssehub's back) are indexed again on the next read, so the list stays whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_presence_list_survives_a_missing_index() {
    let Some(redis) = RedisServer::start("stores::redis_presence_list_survives_a_missing_index", false) else {
        return;
    };
    let server = redis.node(&["--publisher-key", "pk_test-0123456789abcdef"]);
    let client = server.client();
    for public in ["carol", "alice", "bob"] {
        let response = client
            .post(server.url("/channels/idx/clients"))
            .bearer_auth("pk_test-0123456789abcdef")
            .json(&json!({ "public_token": public }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
    }
    redis_command(&redis, &[b"DEL", b"ssehub:index:idx"]);
    let (status, page) = server.get_json("/channels/idx/clients?limit=2").await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["clients"][0]["public_token"], "alice");
    assert_eq!(page["clients"][1]["public_token"], "bob");
    assert_eq!(page["next"], "bob");
    let (_, page) = server.get_json("/channels/idx/clients?after=bob").await;
    assert_eq!(page["clients"][0]["public_token"], "carol");
    assert_eq!(page.get("next"), None);
    assert_eq!(redis_command(&redis, &[b"ZCARD", b"ssehub:index:idx"]), ":3");
}
