//! Registered clients (issue 4): registration and its 409, generated private tokens, the
//! presence list and one client, subscribing with a private token, unknown tokens, direct
//! messages (live, replayed, before the first connection, unknown recipient), removal, idle
//! expiry and the streams' timeout. Every test runs against every store.

mod clients_support;
mod common;

use std::time::{Duration, Instant};

use clients_support::*;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use ssehub::schema::SchemaKind;

/// Asserts a `400 schema_violation` whose details name `pointer`.
async fn expect_violation_at(response: reqwest::Response, pointer: &str) {
    let error = expect_error(response, 400, "schema_violation").await;
    let pointers: Vec<&str> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["pointer"].as_str().unwrap())
        .collect();
    assert!(pointers.contains(&pointer), "expected a detail at {pointer:?}: {error}");
}

/// POST a raw registration body with the key and a content type.
async fn register_raw(server: &TestServer, channel: &str, content_type: &str, body: &str) -> reqwest::Response {
    let auth = bearer(KEY);
    call_with(
        server,
        Method::POST,
        &format!("/channels/{channel}/clients"),
        &[("authorization", auth.as_str()), ("content-type", content_type)],
        Some(body.to_owned()),
    )
    .await
}

/// POST a registration body with the key, whatever it is.
async fn register_any(server: &TestServer, channel: &str, body: Value) -> reqwest::Response {
    call(
        server,
        Method::POST,
        &format!("/channels/{channel}/clients"),
        Some(KEY),
        Some(&body),
    )
    .await
}

store_tests! {
    /// 201 with `{client, private_token}` (client-registered.schema.json); asked values kept,
    /// defaults from `--timeout` and `--client-idle`.
    async fn registration_answer(backend) {
        let server = backend.start(&["--publisher-key", KEY, "--timeout", "45", "--client-idle", "90"]);
        let (alice, private) = register(
            &server,
            "reg",
            json!({
                "public_token": "alice",
                "display_name": "Alice",
                "private_token": "alice-secret_0123456789",
                "connection_timeout_seconds": 30,
                "connection_idle_seconds": 120,
            }),
            Some(KEY),
        )
        .await;
        assert_eq!(private, "alice-secret_0123456789");
        assert_eq!(
            alice,
            json!({"channel": "reg", "public_token": "alice", "display_name": "Alice", "connected": false,
                   "connection_timeout_seconds": 30, "connection_idle_seconds": 120})
        );
        let (bob, _) = register(&server, "reg", json!({"public_token": "bob@example.com"}), Some(KEY)).await;
        assert_eq!(
            bob,
            json!({"channel": "reg", "public_token": "bob@example.com", "display_name": null, "connected": false,
                   "connection_timeout_seconds": 45, "connection_idle_seconds": 90})
        );
        // The presence view of a registered client is the same object.
        assert_eq!(get_client(&server, "reg", "alice", &[&private]).await, alice);
        assert_eq!(get_client(&server, "reg", "bob@example.com", &[]).await, bob);
    }

    /// 409 client_exists for a public token already registered on the channel (whatever the
    /// private token) and for a chosen private token already in use there; the first
    /// registration is untouched. Other channels are unrelated.
    async fn registration_conflicts(backend) {
        let server = backend.start(KEYED);
        let secret = "alice-secret_0123456789";
        let (alice, _) = register(
            &server,
            "c1",
            json!({"public_token": "alice", "display_name": "Alice", "private_token": secret}),
            Some(KEY),
        )
        .await;
        for body in [
            json!({"public_token": "alice"}),
            json!({"public_token": "alice", "display_name": "Mallory"}),
            json!({"public_token": "alice", "private_token": "another-secret_0123456789"}),
            json!({"public_token": "alice", "private_token": secret}),
            json!({"public_token": "bob", "private_token": secret}),
        ] {
            let response = register_any(&server, "c1", body.clone()).await;
            let error = expect_error(response, 409, "client_exists").await;
            assert_no_secret(
                "a 409 answer",
                &error.to_string(),
                &[secret, "another-secret_0123456789"],
            );
        }
        assert_eq!(list_publics(&server, "c1").await, ["alice"]);
        assert_eq!(get_client(&server, "c1", "alice", &[secret]).await, alice);
        // The first registration's token still opens alice's stream.
        let mut stream = open_query(&server, "c1", secret, "", NONE).await;
        let id = direct(&server, "c1", "alice", json!("still yours")).await;
        expect_id(&mut stream, &id).await;

        // Both tokens belong to one channel: the same ones elsewhere are a new client.
        let (other, _) = register(
            &server,
            "c2",
            json!({"public_token": "alice", "display_name": "Other Alice", "private_token": secret}),
            Some(KEY),
        )
        .await;
        assert_eq!(other["channel"], "c2");
        assert_eq!(get_client(&server, "c1", "alice", &[]).await["display_name"], "Alice");
    }

    /// Without `private_token` the server generates a UUID v4 as 32 lowercase hex digits,
    /// a different one each time.
    async fn generated_private_tokens(backend) {
        let server = backend.start(KEYED);
        let mut seen = std::collections::BTreeSet::new();
        for i in 0..6 {
            let public = format!("user{i}");
            let token = reg(&server, "gen", &public, None).await;
            assert_eq!(token.len(), 32, "32 hex digits: {token:?}");
            assert!(
                token.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                "lowercase hex: {token:?}"
            );
            assert_eq!(&token[12..13], "4", "UUID version 4: {token:?}");
            assert!("89ab".contains(&token[16..17]), "RFC 4122 variant: {token:?}");
            assert_ne!(token, public);
            assert!(seen.insert(token.clone()), "generated twice: {token}");
        }
        // A generated token is that client's: it opens its stream.
        let token = seen.iter().next().unwrap().clone();
        let mut stream = open_bearer(&server, "gen", &token, NONE).await;
        let mut ids = Vec::new();
        for i in 0..6 {
            ids.push(direct(&server, "gen", &format!("user{i}"), json!(i)).await);
        }
        let mine = stream.expect_message(READ).await;
        assert!(ids.contains(&mine["id"].as_str().unwrap().to_owned()));
        assert_eq!(
            get_client(&server, "gen", mine["to"].as_str().unwrap(), &[]).await["connected"],
            true
        );
    }

    /// Bad registration bodies: schema violations at their pointer (a timeout above
    /// `--max-timeout` included), invalid JSON, wrong content type; none registers anything.
    async fn registration_rejections(backend) {
        let server = backend.start(&["--publisher-key", KEY, "--max-timeout", "100", "--timeout", "50"]);
        let cases = [
            (
                json!({"public_token": "a", "connection_timeout_seconds": 101}),
                "/connection_timeout_seconds",
            ),
            (
                json!({"public_token": "a", "connection_timeout_seconds": 0}),
                "/connection_timeout_seconds",
            ),
            (
                json!({"public_token": "a", "connection_idle_seconds": 604_801}),
                "/connection_idle_seconds",
            ),
            (
                json!({"public_token": "a", "connection_idle_seconds": 0}),
                "/connection_idle_seconds",
            ),
            (json!({"public_token": "a", "display_name": ""}), "/display_name"),
            (json!({"public_token": "bad token"}), "/public_token"),
            (json!({"public_token": "a", "private_token": "short"}), "/private_token"),
            (json!({"public_token": "a", "secret": 1}), ""),
            (json!({"display_name": "A"}), ""),
            (json!(["a"]), ""),
        ];
        for (body, pointer) in cases {
            expect_violation_at(register_any(&server, "rej", body).await, pointer).await;
        }
        expect_error(
            register_raw(&server, "rej", "application/json", "{\"public_token\":").await,
            400,
            "invalid_json",
        )
        .await;
        expect_error(
            register_raw(&server, "rej", "text/plain", "{\"public_token\":\"a\"}").await,
            415,
            "unsupported_media_type",
        )
        .await;
        let list = list_clients(&server, "rej", None, &[]).await;
        assert_eq!(list, json!({"channel": "rej", "clients": []}));
        // The largest allowed timeout is accepted.
        let (client, _) = register(
            &server,
            "rej",
            json!({"public_token": "a", "connection_timeout_seconds": 100, "connection_idle_seconds": 604_800}),
            Some(KEY),
        )
        .await;
        assert_eq!(client["connection_timeout_seconds"], 100);
    }

    /// The presence list: every client ordered by public token, `connected` true exactly while
    /// it has an open stream (publisher and anonymous streams count for no client), never a
    /// private token; the channel counts follow.
    async fn presence_list(backend) {
        let server = backend.start(KEYED);
        assert_eq!(
            list_clients(&server, "room", None, &[]).await,
            json!({"channel": "room", "clients": []})
        );
        let charlie = reg(&server, "room", "charlie", Some("Charlie")).await;
        let alice = reg(&server, "room", "alice", Some("Alice")).await;
        let bob = reg(&server, "room", "bob", None).await;
        let secrets = [charlie.as_str(), alice.as_str(), bob.as_str()];
        let expected = |connected: [bool; 3]| {
            json!({"channel": "room", "clients": [
                {"channel": "room", "public_token": "alice", "display_name": "Alice", "connected": connected[0],
                 "connection_timeout_seconds": 60, "connection_idle_seconds": 60},
                {"channel": "room", "public_token": "bob", "display_name": null, "connected": connected[1],
                 "connection_timeout_seconds": 60, "connection_idle_seconds": 60},
                {"channel": "room", "public_token": "charlie", "display_name": "Charlie", "connected": connected[2],
                 "connection_timeout_seconds": 60, "connection_idle_seconds": 60},
            ]})
        };
        assert_eq!(
            list_clients(&server, "room", None, &secrets).await,
            expected([false; 3])
        );
        let info = server.channel_info("room").await;
        assert_eq!(
            (info["clients_registered"].as_u64(), info["clients_connected"].as_u64()),
            (Some(3), Some(0))
        );

        // Publisher and anonymous streams make nobody connected.
        let publisher = open_bearer(&server, "room", KEY, NONE).await;
        let anonymous = open_anon(&server, "room", NONE).await;
        server.wait_subscribers("room", 2).await;
        assert_eq!(
            list_clients(&server, "room", None, &secrets).await,
            expected([false; 3])
        );
        drop((publisher, anonymous));

        // bob: two streams; connected until the last one closes.
        let first = open_query(&server, "room", &bob, "", NONE).await;
        wait_connected(&server, "room", "bob", true).await;
        assert_eq!(
            list_clients(&server, "room", Some(&bob), &secrets).await,
            expected([false, true, false])
        );
        let info = server.channel_info("room").await;
        assert_eq!(
            (info["clients_registered"].as_u64(), info["clients_connected"].as_u64()),
            (Some(3), Some(1))
        );
        let second = open_bearer(&server, "room", &bob, NONE).await;
        server.wait_subscribers("room", 2).await;
        drop(first);
        server.wait_subscribers("room", 1).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            list_clients(&server, "room", Some(&alice), &secrets).await,
            expected([false, true, false])
        );
        drop(second);
        wait_connected(&server, "room", "bob", false).await;
        assert_eq!(
            list_clients(&server, "room", Some(KEY), &secrets).await,
            expected([false; 3])
        );
        let info = server.channel_info("room").await;
        assert_eq!(
            (info["clients_registered"].as_u64(), info["clients_connected"].as_u64()),
            (Some(3), Some(0))
        );
    }

    /// GET one client (client.schema.json, never the private token); 404 unknown_client for an
    /// unknown, malformed or other channel's public token.
    async fn get_one_client(backend) {
        let server = backend.start(KEYED);
        let alice = reg(&server, "one", "alice", Some("Alice")).await;
        let client = get_client(&server, "one", "alice", &[&alice]).await;
        assert_eq!(
            client,
            json!({"channel": "one", "public_token": "alice", "display_name": "Alice", "connected": false,
                   "connection_timeout_seconds": 60, "connection_idle_seconds": 60})
        );
        let stream = open_query(&server, "one", &alice, "", NONE).await;
        wait_connected(&server, "one", "alice", true).await;
        drop(stream);
        wait_connected(&server, "one", "alice", false).await;
        for (channel, public) in [("one", "zed"), ("one", "bad!token"), ("one", "ALICE"), ("two", "alice")] {
            let response = get_client_raw(&server, channel, public, None).await;
            let error = expect_error(response, 404, "unknown_client").await;
            assert_no_secret("a 404 answer", &error.to_string(), &[&alice]);
        }
    }

    /// A private token opens the client's stream as `?token=` and as `Authorization: Bearer`
    /// (any case of the scheme); `?token=` wins over the header. A client's stream carries its
    /// direct messages.
    async fn subscribe_with_private_token(backend) {
        let server = backend.start(KEYED);
        let alice = reg(&server, "sub", "alice", Some("Alice")).await;
        let bob = reg(&server, "sub", "bob", Some("Bob")).await;
        let by_query = open_query(&server, "sub", &alice, "", NONE).await;
        let by_header = open_bearer(&server, "sub", &alice, NONE).await;
        let lower = format!("bearer {alice}");
        let by_lower = open_anon(&server, "sub", &[("authorization", lower.as_str())]).await;
        let bob_auth = bearer(&bob);
        let query_wins = open_query(&server, "sub", &alice, "", &[("authorization", bob_auth.as_str())]).await;
        let by_bob = open_bearer(&server, "sub", &bob, NONE).await;
        wait_connected(&server, "sub", "alice", true).await;
        wait_connected(&server, "sub", "bob", true).await;

        let to_alice = direct(&server, "sub", "alice", json!("for alice")).await;
        let to_bob = direct(&server, "sub", "bob", json!("for bob")).await;
        let all = broadcast(&server, "sub", json!("for all")).await;
        for mut stream in [by_query, by_header, by_lower, query_wins] {
            let envelope = expect_id(&mut stream, &to_alice).await;
            assert_eq!(envelope["to"], "alice");
            assert_eq!(envelope["contents"], "for alice");
            expect_id(&mut stream, &all).await;
        }
        let mut by_bob = by_bob;
        assert_eq!(expect_id(&mut by_bob, &to_bob).await["to"], "bob");
        expect_id(&mut by_bob, &all).await;
    }

    /// A token that is neither a key nor a client of the channel: a failure frame
    /// `unknown_client` for EventSource, `404 unknown_client` JSON otherwise; by query and by
    /// header; the token is not echoed.
    async fn unknown_token(backend) {
        let server = backend.start(KEYED);
        let other = reg(&server, "elsewhere", "alice", None).await;
        reg(&server, "unk", "alice", None).await;
        for token in [BAD, other.as_str()] {
            let auth = bearer(token);
            let failure =
                expect_stream_failure(&server, "unk", &format!("?token={token}"), NONE, "unknown_client").await;
            assert_no_secret("a failure frame", &failure.to_string(), &[token]);
            expect_stream_failure(
                &server,
                "unk",
                "",
                &[("authorization", auth.as_str())],
                "unknown_client",
            )
            .await;
            let response = events_json(&server, "unk", &format!("?token={token}"), NONE).await;
            let error = expect_error(response, 404, "unknown_client").await;
            assert_no_secret("an error answer", &error.to_string(), &[token]);
            let response = events_json(&server, "unk", "", &[("authorization", auth.as_str())]).await;
            expect_error(response, 404, "unknown_client").await;
        }
        // The bad token is refused even though anonymous streams are allowed here.
        open_anon(&server, "unk", NONE).await;
    }

    /// A direct message reaches only its recipient's streams (all of them); another client,
    /// an anonymous and a publisher stream skip it and get the next broadcast. A client-sent
    /// direct message does not come back to the sender's stream.
    async fn direct_message_only_to_recipient(backend) {
        let server = backend.start(KEYED);
        let alice = reg(&server, "dm", "alice", Some("Alice")).await;
        let bob = reg(&server, "dm", "bob", Some("Bob")).await;
        let mut alice1 = open_query(&server, "dm", &alice, "", NONE).await;
        let mut alice2 = open_bearer(&server, "dm", &alice, NONE).await;
        let mut bob1 = open_query(&server, "dm", &bob, "", NONE).await;
        let mut anon = open_anon(&server, "dm", NONE).await;
        let mut publisher = open_bearer(&server, "dm", KEY, NONE).await;

        let d1 = direct(&server, "dm", "alice", json!({"secret": 1})).await;
        let b1 = broadcast(&server, "dm", json!("b1")).await;
        for stream in [&mut alice1, &mut alice2] {
            let envelope = expect_id(stream, &d1).await;
            assert_eq!(envelope["to"], "alice");
            assert_eq!(envelope["name"], "test.direct");
            assert_eq!(envelope["contents"], json!({"secret": 1}));
            assert!(
                envelope.get("from").is_none(),
                "a publisher's message has no from: {envelope}"
            );
            let envelope = expect_id(stream, &b1).await;
            assert!(envelope.get("to").is_none(), "{envelope}");
        }
        for stream in [&mut bob1, &mut anon, &mut publisher] {
            expect_id(stream, &b1).await;
        }

        // bob writes to alice with his private token.
        let d2 = send_ok(
            &server,
            "dm",
            Some(&bob),
            &json!({"name": "chat.private", "contents": "psst", "to": "alice"}),
        )
        .await;
        let b2 = broadcast(&server, "dm", json!("b2")).await;
        for stream in [&mut alice1, &mut alice2] {
            let envelope = expect_id(stream, &d2).await;
            assert_eq!(envelope["to"], "alice");
            assert_eq!(envelope["from"], json!({"public_token": "bob", "display_name": "Bob"}));
            expect_id(stream, &b2).await;
        }
        for stream in [&mut bob1, &mut anon, &mut publisher] {
            expect_id(stream, &b2).await;
        }
        // Direct messages are kept in the history like any other message.
        let info = server.channel_info("dm").await;
        assert_eq!(info["history_size"], 4);
        assert_eq!(info["last_id"], b2.as_str());
    }

    /// After a reconnect with Last-Event-ID (or `lastEventId`), a direct message sent while the
    /// recipient was away is replayed to it, and to no other stream resuming from there.
    async fn direct_message_replayed_only_to_recipient(backend) {
        let server = backend.start(KEYED);
        let alice = reg(&server, "rp", "alice", Some("Alice")).await;
        let bob = reg(&server, "rp", "bob", Some("Bob")).await;
        let mut first = open_query(&server, "rp", &alice, "", NONE).await;
        let b0 = broadcast(&server, "rp", json!("b0")).await;
        expect_id(&mut first, &b0).await;
        drop(first);
        wait_connected(&server, "rp", "alice", false).await;

        let d1 = direct(&server, "rp", "alice", json!("d1")).await;
        let d2 = direct(&server, "rp", "bob", json!("d2")).await;
        let b1 = broadcast(&server, "rp", json!("b1")).await;
        let d3 = direct(&server, "rp", "alice", json!("d3")).await;

        let resume = [("last-event-id", b0.as_str())];
        let mut alice_header = open_query(&server, "rp", &alice, "", &resume).await;
        let mut alice_query = open_query(&server, "rp", &alice, &format!("&lastEventId={b0}"), NONE).await;
        let mut alice_bearer = open_bearer(&server, "rp", &alice, &resume).await;
        for stream in [&mut alice_header, &mut alice_query, &mut alice_bearer] {
            assert_eq!(expect_id(stream, &d1).await["to"], "alice");
            expect_id(stream, &b1).await;
            assert_eq!(expect_id(stream, &d3).await["to"], "alice");
        }
        let mut bob1 = open_query(&server, "rp", &bob, "", &resume).await;
        assert_eq!(expect_id(&mut bob1, &d2).await["to"], "bob");
        expect_id(&mut bob1, &b1).await;
        let mut anon = open_anon(&server, "rp", &resume).await;
        let mut publisher = open_bearer(&server, "rp", KEY, &resume).await;
        for stream in [&mut anon, &mut publisher] {
            expect_id(stream, &b1).await;
        }
        // Nothing else is queued anywhere: the next frame is the live marker.
        let marker = broadcast(&server, "rp", json!("marker")).await;
        for stream in [
            &mut alice_header,
            &mut alice_query,
            &mut alice_bearer,
            &mut bob1,
            &mut anon,
            &mut publisher,
        ] {
            expect_id(stream, &marker).await;
        }
    }

    /// A direct message sent between the registration and the first connection is delivered
    /// when that first stream opens without any resume position: a client's stream starts
    /// after its registration (not before it, and not live only).
    async fn direct_message_before_first_connection(backend) {
        let server = backend.start(KEYED);
        broadcast(&server, "fc", json!("before alice")).await;
        let alice = reg(&server, "fc", "alice", Some("Alice")).await;
        let d1 = direct(&server, "fc", "alice", json!("welcome")).await;
        let bob = reg(&server, "fc", "bob", Some("Bob")).await;
        let b1 = broadcast(&server, "fc", json!("after bob")).await;

        let mut alice1 = open_query(&server, "fc", &alice, "", NONE).await;
        let envelope = expect_id(&mut alice1, &d1).await;
        assert_eq!(
            (envelope["to"].as_str(), envelope["contents"].as_str()),
            (Some("alice"), Some("welcome"))
        );
        expect_id(&mut alice1, &b1).await;
        let mut bob1 = open_bearer(&server, "fc", &bob, NONE).await;
        expect_id(&mut bob1, &b1).await;
        // Anonymous streams without a resume position stay live only.
        let mut anon = open_anon(&server, "fc", NONE).await;
        let marker = broadcast(&server, "fc", json!("marker")).await;
        for stream in [&mut alice1, &mut bob1, &mut anon] {
            expect_id(stream, &marker).await;
        }
    }

    /// `to` naming no client of the channel (never registered, removed, another channel's):
    /// 404 unknown_recipient and nothing stored; a malformed `to` is a schema violation.
    async fn unknown_recipient(backend) {
        let server = backend.start(KEYED);
        let alice = reg(&server, "ur", "alice", None).await;
        reg(&server, "ur", "gone", None).await;
        delete_ok(&server, "ur", "gone").await;
        reg(&server, "other", "carol", None).await;
        let last = broadcast(&server, "ur", json!("last")).await;
        for to in ["nobody", "gone", "carol"] {
            for token in [KEY, alice.as_str()] {
                let body = json!({"name": "x", "contents": 1, "to": to});
                expect_error(
                    send_as(&server, "ur", Some(token), &body).await,
                    404,
                    "unknown_recipient",
                )
                .await;
            }
        }
        expect_violation_at(
            send_as(
                &server,
                "ur",
                Some(KEY),
                &json!({"name": "x", "contents": 1, "to": "no body"}),
            )
            .await,
            "/to",
        )
        .await;
        let info = server.channel_info("ur").await;
        assert_eq!(info["last_id"], last.as_str(), "nothing stored: {info}");
        assert_eq!(info["history_size"], 1);
    }

    /// DELETE: 204 with no body; the client's open streams get `client_removed` and end; then
    /// 404 unknown_client (GET, DELETE again, malformed), its token stops working, it is no
    /// longer a recipient, and the public token can be registered again.
    async fn delete_client_ends_streams(backend) {
        let server = backend.start(KEYED);
        let alice = reg(&server, "del", "alice", Some("Alice")).await;
        reg(&server, "del", "bob", None).await;
        let mut by_query = open_query(&server, "del", &alice, "", NONE).await;
        let mut by_header = open_bearer(&server, "del", &alice, NONE).await;
        let mut anon = open_anon(&server, "del", NONE).await;
        wait_connected(&server, "del", "alice", true).await;
        direct(&server, "del", "alice", json!("kept in history")).await;
        for stream in [&mut by_query, &mut by_header] {
            next_message(stream).await;
        }

        delete_ok(&server, "del", "alice").await;
        for stream in [&mut by_query, &mut by_header] {
            let failure = expect_failure(stream, "client_removed").await;
            assert_no_secret("a failure frame", &failure.to_string(), &[&alice]);
        }
        expect_no_client(&server, "del", "alice").await;
        expect_error(
            delete_client(&server, "del", "alice", Some(KEY)).await,
            404,
            "unknown_client",
        )
        .await;
        expect_error(
            delete_client(&server, "del", "bad!token", Some(KEY)).await,
            404,
            "unknown_client",
        )
        .await;
        expect_error(
            delete_client(&server, "del", "nobody", Some(KEY)).await,
            404,
            "unknown_client",
        )
        .await;
        expect_stream_failure(&server, "del", &format!("?token={alice}"), NONE, "unknown_client").await;
        expect_unauthorized(send_as(&server, "del", Some(&alice), &json!({"name": "x", "contents": 1})).await).await;
        let body = json!({"name": "x", "contents": 1, "to": "alice"});
        expect_error(
            send_as(&server, "del", Some(KEY), &body).await,
            404,
            "unknown_recipient",
        )
        .await;
        assert_eq!(list_publics(&server, "del").await, ["bob"]);
        let info = server.channel_info("del").await;
        assert_eq!(
            (info["clients_registered"].as_u64(), info["clients_connected"].as_u64()),
            (Some(1), Some(0))
        );
        assert_eq!(info["history_size"], 1, "messages addressed to it stay in the history");

        // Other streams go on.
        let marker = broadcast(&server, "del", json!("marker")).await;
        expect_id(&mut anon, &marker).await;
        // The public token is free again; the old private token stays dead.
        let again = reg(&server, "del", "alice", Some("Alice 2")).await;
        assert_ne!(again, alice);
        expect_stream_failure(&server, "del", &format!("?token={alice}"), NONE, "unknown_client").await;
        open_query(&server, "del", &again, "", NONE).await;
    }

    /// A client with no open stream for `connection_idle_seconds` (1 s here; the server checks
    /// every second) is removed: GET 404, gone from the list, its token gets `unknown_client`,
    /// it is no recipient. An open stream keeps it however long it stays open.
    async fn idle_expiry_removes_client(backend) {
        let server = backend.start(KEYED);
        let idle = |public: &str| json!({"public_token": public, "connection_idle_seconds": 1});
        let (_, alice) = register(&server, "idle", idle("alice"), Some(KEY)).await;
        let registered = Instant::now();
        let (_, bob) = register(&server, "idle", idle("bob"), Some(KEY)).await;
        let bob_stream = open_query(&server, "idle", &bob, "", NONE).await;
        assert!(!client_gone(&server, "idle", "alice").await, "removed at once");

        let never_connected = async {
            eventually("alice (never connected) removed", Duration::from_secs(4), || {
                client_gone(&server, "idle", "alice")
            })
            .await;
            let after = registered.elapsed();
            assert!(
                after >= Duration::from_millis(800),
                "removed after {after:?}, before its idle allowance"
            );
        };
        let connected = async {
            // Twice its allowance with an open stream: still there.
            tokio::time::sleep(Duration::from_millis(2200)).await;
            assert_eq!(get_client(&server, "idle", "bob", &[]).await["connected"], true);
            drop(bob_stream);
            let closed = Instant::now();
            eventually("bob removed after its stream closed", Duration::from_secs(4), || {
                client_gone(&server, "idle", "bob")
            })
            .await;
            assert!(
                closed.elapsed() >= Duration::from_millis(800),
                "removed {:?} after close",
                closed.elapsed()
            );
        };
        tokio::join!(never_connected, connected);

        assert_eq!(list_publics(&server, "idle").await, Vec::<String>::new());
        let info = server.channel_info("idle").await;
        assert_eq!(info["clients_registered"], 0);
        for token in [&alice, &bob] {
            expect_stream_failure(&server, "idle", &format!("?token={token}"), NONE, "unknown_client").await;
            let auth = bearer(token);
            expect_stream_failure(
                &server,
                "idle",
                "",
                &[("authorization", auth.as_str())],
                "unknown_client",
            )
            .await;
            expect_error(
                events_json(&server, "idle", &format!("?token={token}"), NONE).await,
                404,
                "unknown_client",
            )
            .await;
            expect_unauthorized(send_as(&server, "idle", Some(token), &json!({"name": "x", "contents": 1})).await)
                .await;
        }
        for to in ["alice", "bob"] {
            let body = json!({"name": "x", "contents": 1, "to": to});
            expect_error(
                send_as(&server, "idle", Some(KEY), &body).await,
                404,
                "unknown_recipient",
            )
            .await;
        }
    }

    /// A client that reconnects within its idle allowance (1 s) keeps its registration, well
    /// past the allowance in total, and gets the direct messages sent while it was away.
    async fn reconnect_inside_idle_window(backend) {
        let server = backend.start(KEYED);
        let (_, carol) = register(
            &server,
            "win",
            json!({"public_token": "carol", "display_name": "Carol", "connection_idle_seconds": 1}),
            Some(KEY),
        )
        .await;
        let registered = Instant::now();
        let mut stream = open_query(&server, "win", &carol, "", NONE).await;
        let mut last = broadcast(&server, "win", json!("start")).await;
        expect_id(&mut stream, &last).await;
        for round in 0..3 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            drop(stream);
            wait_connected(&server, "win", "carol", false).await;
            let missed = direct(&server, "win", "carol", json!(round)).await;
            stream = open_query(&server, "win", &carol, "", &[("last-event-id", last.as_str())]).await;
            let envelope = expect_id(&mut stream, &missed).await;
            assert_eq!(envelope["to"], "carol");
            assert_eq!(envelope["contents"], round);
            last = missed;
        }
        assert!(registered.elapsed() > Duration::from_millis(1500));
        assert_eq!(get_client(&server, "win", "carol", &[&carol]).await["connected"], true);
    }

    /// A client's stream times out after the client's `connection_timeout_seconds` unless
    /// `?timeout=` says otherwise; when it ends the client is no longer connected.
    async fn client_stream_timeout(backend) {
        let server = backend.start(&["--publisher-key", KEY, "--timeout", "45"]);
        let (client, alice) = register(
            &server,
            "to",
            json!({"public_token": "alice", "connection_timeout_seconds": 1}),
            Some(KEY),
        )
        .await;
        assert_eq!(client["connection_timeout_seconds"], 1);
        let wait_timeout = |mut stream: SseStream, seconds: u64| async move {
            let opened = Instant::now();
            let frame = stream.expect_non_heartbeat(Duration::from_secs(seconds + 3)).await;
            let body = frame.control("timeout", SchemaKind::Timeout);
            assert_eq!(body, json!({"channel": "to", "seconds": seconds}));
            assert!(
                opened.elapsed() >= Duration::from_millis(seconds * 1000 - 200),
                "{:?}",
                opened.elapsed()
            );
            stream.expect_end(READ).await;
        };
        let own_query = open_query(&server, "to", &alice, "", NONE).await;
        let own_bearer = open_bearer(&server, "to", &alice, NONE).await;
        let asked = open_query(&server, "to", &alice, "&timeout=2", NONE).await;
        tokio::join!(
            wait_timeout(own_query, 1),
            wait_timeout(own_bearer, 1),
            wait_timeout(asked, 2)
        );
        wait_connected(&server, "to", "alice", false).await;
    }
}

/// JSON Schema counts `60.0` as the integer 60: a registration writing its seconds that way
/// is accepted as if written `60` (it used to be refused as `invalid_json` after the schema
/// had accepted it). A huge one is over the server's limit (`schema_violation`), a fraction
/// is not an integer (`schema_violation`), never `invalid_json`.
#[tokio::test]
async fn integers_written_as_floats_are_integers() {
    let server = TestServer::start(KEYED);
    let body = r#"{"public_token":"alice","connection_timeout_seconds":60.0,"connection_idle_seconds":1.2e2}"#;
    let (status, _, text) = parts(register_raw(&server, "c", "application/json", body).await).await;
    assert_eq!(status, 201, "{text}");
    let client = &parse_json(&text)["client"];
    assert_eq!(client["connection_timeout_seconds"], 60, "{text}");
    assert_eq!(client["connection_idle_seconds"], 120, "{text}");
    let huge = r#"{"public_token":"bob","connection_timeout_seconds":1e30}"#;
    expect_violation_at(
        register_raw(&server, "c", "application/json", huge).await,
        "/connection_timeout_seconds",
    )
    .await;
    let huge = r#"{"public_token":"bob","connection_idle_seconds":1e30}"#;
    expect_violation_at(
        register_raw(&server, "c", "application/json", huge).await,
        "/connection_idle_seconds",
    )
    .await;
    let fraction = r#"{"public_token":"bob","connection_timeout_seconds":60.5}"#;
    expect_violation_at(
        register_raw(&server, "c", "application/json", fraction).await,
        "/connection_timeout_seconds",
    )
    .await;
}

/// One page of the presence list: its clients and its `next`, checked against the schema.
async fn list_page(server: &TestServer, channel: &str, query: &str) -> (Vec<String>, Option<String>) {
    let (status, page) = server.get_json(&format!("/channels/{channel}/clients{query}")).await;
    assert_eq!(status, 200, "{query}: {page}");
    validate(SchemaKind::ClientList, &page);
    let publics = page["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["public_token"].as_str().unwrap().to_owned())
        .collect();
    (publics, page["next"].as_str().map(str::to_owned))
}

store_tests! {
    /// The presence list is paginated: `?limit=` (default 100, at most 1000) clients after
    /// `?after=<public token>`, ordered by public token byte by byte, with `next` while more
    /// follow. Walking the pages yields every client once; a client removed between pages
    /// does not disturb the walk. The channel's counts come without reading the list.
    async fn presence_list_pages(backend) {
        let server = backend.start(KEYED);
        let publics = ["m", "B", "a.b", "a", "z@x", "Zed", "0", "a-b", "b"];
        for public in publics {
            reg(&server, "paged", public, None).await;
        }
        let mut sorted: Vec<&str> = publics.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, ["0", "B", "Zed", "a", "a-b", "a.b", "b", "m", "z@x"]);

        let (all, next) = list_page(&server, "paged", "").await;
        assert_eq!(all, sorted, "the default page holds them all");
        assert_eq!(next, None);
        let mut walked = Vec::new();
        let mut query = "?limit=4".to_owned();
        let mut pages = 0;
        loop {
            let (page, next) = list_page(&server, "paged", &query).await;
            assert!(page.len() <= 4, "{page:?}");
            pages += 1;
            if pages == 1 {
                // Removed before the walk reaches it: it is simply not there.
                delete_ok(&server, "paged", "b").await;
            }
            walked.extend(page.iter().cloned());
            match next {
                Some(next) => {
                    assert_eq!(Some(&next), page.last(), "next is the page's last public token");
                    query = format!("?limit=4&after={}", next.replace('@', "%40"));
                }
                None => break,
            }
        }
        let expected: Vec<&str> = sorted.iter().copied().filter(|p| *p != "b").collect();
        assert_eq!(walked, expected);
        assert_eq!(pages, 2);
        // A cursor need not be registered (any more, or ever); the last page has no `next`.
        assert_eq!(
            list_page(&server, "paged", "?after=a").await,
            (vec!["a-b".to_owned(), "a.b".into(), "m".into(), "z@x".into()], None)
        );
        // '0' sorts after '-' and '.'.
        assert_eq!(list_page(&server, "paged", "?after=a0").await, (vec!["m".to_owned(), "z@x".into()], None));
        assert_eq!(list_page(&server, "paged", "?limit=1&after=m").await, (vec!["z@x".to_owned()], None));
        assert_eq!(list_page(&server, "paged", "?after=z@x").await, (vec![], None));
        assert_eq!(list_page(&server, "paged", "?limit=1000").await.0.len(), 8);
        for (query, pointer) in [
            ("?limit=0", "/query/limit"),
            ("?limit=1001", "/query/limit"),
            ("?after=a%20b", "/query/after"),
        ] {
            let error = expect_error(server.get(&format!("/channels/paged/clients{query}"), NONE).await, 400, "invalid_query").await;
            assert_eq!(error["details"][0]["pointer"], pointer, "{query}: {error}");
        }
        let info = server.channel_info("paged").await;
        assert_eq!((info["clients_registered"].as_u64(), info["clients_connected"].as_u64()), (Some(8), Some(0)));
    }
}
