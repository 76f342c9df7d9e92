//! Presence events (issue 4): `client.connected` on a client's first stream,
//! `client.disconnected` when its last stream closes or it is removed while connected,
//! `client.expired` on idle removal; ordinary messages (envelope, history, replay on resume);
//! none on channels with presence off. Every test runs against every store.

mod clients_support;
mod common;

use std::time::{Duration, Instant};

use clients_support::*;
use common::*;
use serde_json::{json, Value};

/// The policies of these tests: presence on for `p-*` (anyone subscribes) and `room-*`
/// (clients only), off elsewhere.
const POLICIES: &[&str] = &[
    "--publisher-key",
    KEY,
    "--policy",
    "p-*:presence=on",
    "--policy",
    "room-*:subscribe=clients,presence=on",
    "--policy",
    "quiet-*:subscribe=clients,presence=off",
];

/// Sends a marker broadcast and asserts it is the next message on every stream: nothing
/// (no presence event) came before it.
async fn expect_only_marker(server: &TestServer, channel: &str, streams: &mut [&mut SseStream], label: &str) -> String {
    let id = broadcast(server, channel, json!(label)).await;
    for stream in streams.iter_mut() {
        let envelope = next_message(stream).await;
        assert_eq!(
            envelope["id"],
            id.as_str(),
            "{label}: expected only the marker, got {envelope}"
        );
    }
    id
}

store_tests! {
    /// `client.connected` when the first stream opens (not for further streams),
    /// `client.disconnected` when the last one closes (not before); registration announces
    /// nothing. Seen by anonymous streams on a `subscribe=anyone` channel and by other clients'
    /// streams on a `subscribe=clients` one.
    async fn connected_and_disconnected(backend) {
        let server = backend.start(POLICIES);
        for channel in ["p-1", "room-1"] {
            let mut observer = if channel == "p-1" {
                open_anon(&server, channel, NONE).await
            } else {
                // A client observer, resuming from the head so that its own (stored before
                // the stream starts) connection event is replayed to it.
                let carol = reg(&server, channel, "carol", Some("Carol")).await;
                let head = broadcast(&server, channel, json!("head")).await;
                let mut stream = open_query(&server, channel, &carol, "", &[("last-event-id", head.as_str())]).await;
                expect_presence(&mut stream, channel, "client.connected", "carol", Some("Carol")).await;
                stream
            };
            let alice = reg(&server, channel, "alice", Some("Alice")).await;
            let bob = reg(&server, channel, "bob", None).await;
            expect_only_marker(&server, channel, &mut [&mut observer], "registration announces nothing").await;

            let first = open_query(&server, channel, &alice, "", NONE).await;
            let connected = expect_presence(&mut observer, channel, "client.connected", "alice", Some("Alice")).await;
            let second = open_bearer(&server, channel, &alice, NONE).await;
            expect_only_marker(
                &server,
                channel,
                &mut [&mut observer],
                "a second stream announces nothing",
            )
            .await;
            drop(first);
            wait_connected(&server, channel, "alice", true).await;
            wait_streams(&server, channel, 2).await;
            expect_only_marker(
                &server,
                channel,
                &mut [&mut observer],
                "closing one of two streams announces nothing",
            )
            .await;
            drop(second);
            let disconnected =
                expect_presence(&mut observer, channel, "client.disconnected", "alice", Some("Alice")).await;
            assert!(seq_of(disconnected["id"].as_str().unwrap()) > seq_of(connected["id"].as_str().unwrap()));
            wait_connected(&server, channel, "alice", false).await;

            // A client without a display name: null in the event.
            let stream = open_bearer(&server, channel, &bob, NONE).await;
            expect_presence(&mut observer, channel, "client.connected", "bob", None).await;
            drop(stream);
            expect_presence(&mut observer, channel, "client.disconnected", "bob", None).await;
            expect_only_marker(&server, channel, &mut [&mut observer], "nothing more").await;
        }
    }

    /// A client's first stream starts after its registration, so it carries its own
    /// `client.connected` (documented: compare `public_token` with your own), then what follows.
    async fn own_connected_on_own_first_stream(backend) {
        let server = backend.start(POLICIES);
        for channel in ["p-own", "room-own"] {
            let alice = reg(&server, channel, "alice", Some("Alice")).await;
            let mut observer = open_bearer(&server, channel, KEY, NONE).await;
            let mut own = open_query(&server, channel, &alice, "", NONE).await;
            expect_presence(&mut observer, channel, "client.connected", "alice", Some("Alice")).await;
            expect_presence(&mut own, channel, "client.connected", "alice", Some("Alice")).await;
            let marker = broadcast(&server, channel, json!("marker")).await;
            let next = next_message(&mut own).await;
            assert_eq!(next["id"], marker.as_str(), "{channel}: after its own connection, the marker: {next}");
        }
    }

    /// Removing a connected client announces `client.disconnected` (and ends its streams with
    /// `client_removed`); removing one that is not connected announces nothing.
    async fn disconnected_on_delete(backend) {
        let server = backend.start(POLICIES);
        let channel = "p-del";
        let mut observer = open_anon(&server, channel, NONE).await;
        let alice = reg(&server, channel, "alice", Some("Alice")).await;
        reg(&server, channel, "bob", Some("Bob")).await;
        let mut stream = open_query(&server, channel, &alice, "", NONE).await;
        expect_presence(&mut observer, channel, "client.connected", "alice", Some("Alice")).await;

        delete_ok(&server, channel, "alice").await;
        loop {
            let frame = stream.expect_non_heartbeat(READ).await;
            if frame.event.is_some() {
                let failure = frame.control("failure", ssehub::schema::SchemaKind::Failure);
                assert_eq!(failure["code"], "client_removed");
                stream.expect_end(READ).await;
                break;
            }
        }
        expect_presence(&mut observer, channel, "client.disconnected", "alice", Some("Alice")).await;
        delete_ok(&server, channel, "bob").await;
        expect_only_marker(&server, channel, &mut [&mut observer], "removing an unconnected client").await;
    }

    /// Idle removal announces `client.expired` (after `client.disconnected` for a client that
    /// had connected); the events are ordinary messages in the history, replayed on resume to
    /// any stream allowed to subscribe, the client's own events included.
    async fn expired_and_replayed_on_resume(backend) {
        let server = backend.start(POLICIES);
        let channel = "p-exp";
        let start = broadcast(&server, channel, json!("start")).await;
        let mut observer = open_anon(&server, channel, &[("last-event-id", start.as_str())]).await;
        let idle = |public: &str, display: &str| {
            let mut body = json!({"public_token": public, "display_name": display});
            body["connection_idle_seconds"] = json!(1);
            body
        };
        let (_, _) = register(&server, channel, idle("alice", "Alice"), Some(KEY)).await;
        let registered = Instant::now();
        let (_, bob) = register(&server, channel, idle("bob", "Bob"), Some(KEY)).await;
        let (_, carol) = register(
            &server,
            channel,
            json!({"public_token": "carol", "display_name": "Carol"}),
            Some(KEY),
        )
        .await;
        let stream = open_query(&server, channel, &bob, "", NONE).await;
        let mut seen: Vec<Value> = Vec::new();
        seen.push(expect_presence(&mut observer, channel, "client.connected", "bob", Some("Bob")).await);
        drop(stream);
        seen.push(expect_presence(&mut observer, channel, "client.disconnected", "bob", Some("Bob")).await);
        // alice (never connected) and bob expire, in either order.
        let deadline = Duration::from_secs(4);
        let mut expired = Vec::new();
        for _ in 0..2 {
            let frame = observer.expect_non_heartbeat(deadline).await;
            let envelope = frame.envelope();
            let public = envelope["contents"]["public_token"].as_str().unwrap_or("").to_owned();
            let display = if public == "alice" { "Alice" } else { "Bob" };
            assert_presence(&envelope, channel, "client.expired", &public, Some(display));
            expired.push(public);
            seen.push(envelope);
        }
        expired.sort();
        assert_eq!(expired, ["alice", "bob"]);
        assert!(registered.elapsed() >= Duration::from_millis(800), "expired too early");
        expect_no_client(&server, channel, "alice").await;
        expect_no_client(&server, channel, "bob").await;
        let info = info(&server, channel).await;
        assert_eq!(
            info["history_size"], 5,
            "presence events are kept in the history: {info}"
        );

        // Replay: the same envelopes, byte for byte, from the same position.
        let query = format!("?lastEventId={start}");
        let header = [("accept", "text/event-stream"), ("last-event-id", start.as_str())];
        let mut by_header = server.subscribe(channel, "", &header).await;
        let mut by_query = server.subscribe(channel, &query, SSE).await;
        let mut publisher = open_bearer(&server, channel, KEY, &[("last-event-id", start.as_str())]).await;
        for stream in [&mut by_header, &mut by_query, &mut publisher] {
            for original in &seen {
                assert_eq!(&next_message(stream).await, original, "replayed presence event");
            }
        }
        // carol, resuming: the same events, then her own connection event.
        let mut own = open_query(&server, channel, &carol, "", &[("last-event-id", start.as_str())]).await;
        for original in &seen {
            assert_eq!(&next_message(&mut own).await, original, "replayed to a client");
        }
        let connected = expect_presence(&mut own, channel, "client.connected", "carol", Some("Carol")).await;
        for stream in [&mut observer, &mut by_header, &mut by_query, &mut publisher] {
            assert_eq!(next_message(stream).await, connected, "carol's connection event, live");
        }
        expect_only_marker(
            &server,
            channel,
            &mut [&mut observer, &mut by_header, &mut by_query, &mut publisher, &mut own],
            "end",
        )
        .await;
    }

    /// Presence off (the default, and an explicit `presence=off`): no event for connecting,
    /// disconnecting, removal or expiry; the list and the counts still work.
    async fn no_events_when_presence_off(backend) {
        let server = backend.start(POLICIES);
        for channel in ["plain", "quiet-1"] {
            let mut observer = open_bearer(&server, channel, KEY, NONE).await;
            let alice = reg(&server, channel, "alice", Some("Alice")).await;
            let (_, bob) = register(
                &server,
                channel,
                json!({"public_token": "bob", "connection_idle_seconds": 1}),
                Some(KEY),
            )
            .await;
            let carol = reg(&server, channel, "carol", None).await;
            let a = open_query(&server, channel, &alice, "", NONE).await;
            let b = open_query(&server, channel, &bob, "", NONE).await;
            let mut c = open_bearer(&server, channel, &carol, NONE).await;
            wait_connected(&server, channel, "alice", true).await;
            let counts = info(&server, channel).await;
            assert_eq!(
                (
                    counts["clients_registered"].as_u64(),
                    counts["clients_connected"].as_u64()
                ),
                (Some(3), Some(3))
            );
            drop((a, b));
            delete_ok(&server, channel, "carol").await;
            let failure = expect_failure(&mut c, "client_removed").await;
            assert_eq!(failure["code"], "client_removed");
            eventually("bob expires", Duration::from_secs(4), || {
                client_gone(&server, channel, "bob")
            })
            .await;
            assert_eq!(list_publics(&server, channel).await, ["alice"]);
            assert_eq!(
                info(&server, channel).await["history_size"],
                0,
                "no presence event stored"
            );
            expect_only_marker(&server, channel, &mut [&mut observer], "presence off").await;
        }
    }
}
