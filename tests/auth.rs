//! Credentials (issue 4): publisher keys from flag, file and environment; 401/403 for every
//! endpoint; open mode and its refusal off loopback; per-channel policies; `from` set by the
//! server and never forgeable; reserved `client.` names; tokens and keys absent from logs,
//! `--help` and error messages.

mod clients_support;
mod common;

use std::time::Duration;

use clients_support::*;
use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use ssehub::schema::SchemaKind;

/// Who makes a request.
#[derive(Debug, Clone, Copy)]
enum Who<'a> {
    /// No credentials.
    Anonymous,
    /// A bearer token that is neither a key nor a private token of any client.
    Bad,
    /// A client's private token (of this channel or, to check it counts as bad, another one).
    Client(&'a str),
    /// The publisher key [`KEY`].
    Publisher,
}

impl<'a> Who<'a> {
    fn token(self) -> Option<&'a str> {
        match self {
            Who::Anonymous => None,
            Who::Bad => Some(BAD),
            Who::Client(token) => Some(token),
            Who::Publisher => Some(KEY),
        }
    }
}

/// What an endpoint must answer.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// The endpoint's success.
    Ok,
    /// 401 unauthorized with `WWW-Authenticate: Bearer` (failure frame `unauthorized` on a stream).
    Unauthorized,
    /// 403 forbidden.
    Forbidden,
    /// Events endpoint: 404 unknown_client (failure frame `unknown_client`).
    UnknownClient,
}

/// Checks an error answer against `expect` (not [`Expect::Ok`]).
async fn check_error(response: reqwest::Response, expect: Expect, what: &str) {
    match expect {
        Expect::Unauthorized => {
            expect_unauthorized(response).await;
        }
        Expect::Forbidden => {
            let error = expect_error(response, 403, "forbidden").await;
            assert!(!error.is_null(), "{what}");
        }
        Expect::UnknownClient => {
            expect_error(response, 404, "unknown_client").await;
        }
        Expect::Ok => unreachable!("{what}"),
    }
}

/// POST a message as `who`.
async fn check_send(server: &TestServer, channel: &str, who: Who<'_>, expect: Expect) {
    let what = format!("send to {channel} as {who:?}");
    let body = json!({"name": "test.message", "contents": "hi"});
    if expect == Expect::Ok {
        send_ok(server, channel, who.token(), &body).await;
    } else {
        let response = send_as(server, channel, who.token(), &body).await;
        assert_eq!(
            response.status().as_u16(),
            match expect {
                Expect::Unauthorized => 401,
                _ => 403,
            },
            "{what}"
        );
        check_error(response, expect, &what).await;
    }
}

/// Opens the events endpoint as `who`: with EventSource's Accept header (a bearer header, and
/// for tokens also `?token=`) and without it (JSON errors). An open stream must carry the next
/// message, sent with `sender`'s credentials.
async fn check_events(server: &TestServer, channel: &str, who: Who<'_>, expect: Expect, sender: Option<&str>) {
    let auth = who.token().map(bearer);
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(auth) = &auth {
        headers.push(("authorization", auth.as_str()));
    }
    let mut queries = vec![String::new()];
    if let Some(token) = who.token() {
        queries.push(format!("?token={token}"));
    }
    for (i, query) in queries.iter().enumerate() {
        let headers: &[(&str, &str)] = if i == 0 { &headers } else { NONE };
        match expect {
            Expect::Ok => {
                // Resume from the head: a client's stream would otherwise replay everything
                // since its registration.
                let head = channel_head(server, channel, sender).await;
                let mut headers = headers.to_vec();
                if !head.is_empty() {
                    headers.push(("last-event-id", head.as_str()));
                }
                let mut stream = open_anon_query(server, channel, query, &headers).await;
                let body = json!({"name": "test.message", "contents": format!("to {who:?}")});
                let id = send_ok(server, channel, sender, &body).await;
                expect_id(&mut stream, &id).await;
            }
            Expect::Unauthorized => {
                expect_stream_failure(server, channel, query, headers, "unauthorized").await;
                expect_unauthorized(events_json(server, channel, query, headers).await).await;
            }
            Expect::UnknownClient => {
                expect_stream_failure(server, channel, query, headers, "unknown_client").await;
                expect_error(
                    events_json(server, channel, query, headers).await,
                    404,
                    "unknown_client",
                )
                .await;
            }
            Expect::Forbidden => {
                expect_stream_failure(server, channel, query, headers, "forbidden").await;
                expect_error(events_json(server, channel, query, headers).await, 403, "forbidden").await;
            }
        }
    }
}

/// A stream with `query` and `headers` (plus Accept: text/event-stream).
async fn open_anon_query(server: &TestServer, channel: &str, query: &str, headers: &[(&str, &str)]) -> SseStream {
    let mut all = vec![("accept", "text/event-stream")];
    all.extend_from_slice(headers);
    server.subscribe(channel, query, &all).await
}

/// GET the presence list and one client (`alice`, registered) as `who`.
async fn check_presence_reads(server: &TestServer, channel: &str, who: Who<'_>, expect: Expect) {
    let what = format!("presence reads of {channel} as {who:?}");
    for path in [
        format!("/channels/{channel}/clients"),
        format!("/channels/{channel}/clients/alice"),
    ] {
        let response = call(server, Method::GET, &path, who.token(), None).await;
        if expect == Expect::Ok {
            let (status, _, text) = parts(response).await;
            assert_eq!(status, StatusCode::OK, "{what}: {path}: {text}");
            let kind = if path.ends_with("/clients") {
                SchemaKind::ClientList
            } else {
                SchemaKind::Client
            };
            validate(kind, &parse_json(&text));
        } else {
            check_error(response, expect, &what).await;
        }
    }
}

/// Registers a client as `who` (a new public token each time).
async fn check_register(server: &TestServer, channel: &str, who: Who<'_>, expect: Expect, public: &str) {
    let what = format!("register on {channel} as {who:?}");
    let body = json!({"public_token": public});
    if expect == Expect::Ok {
        register(server, channel, body, who.token()).await;
    } else {
        let response = call(
            server,
            Method::POST,
            &format!("/channels/{channel}/clients"),
            who.token(),
            Some(&body),
        )
        .await;
        check_error(response, expect, &what).await;
        expect_no_client(server, channel, public).await;
    }
}

/// Deletes a freshly registered client `public` as `who`.
async fn check_delete(server: &TestServer, channel: &str, who: Who<'_>, expect: Expect, public: &str) {
    let what = format!("delete on {channel} as {who:?}");
    reg(server, channel, public, None).await;
    let response = delete_client(server, channel, public, who.token()).await;
    if expect == Expect::Ok {
        let (status, _, text) = parts(response).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{what}: {text}");
        expect_no_client(server, channel, public).await;
    } else {
        check_error(response, expect, &what).await;
        get_client(server, channel, public, &[]).await;
    }
}

/// The channel's `last_id` ("" when none), read with credentials `token`.
async fn channel_head(server: &TestServer, channel: &str, token: Option<&str>) -> String {
    let response = call(server, Method::GET, &format!("/channels/{channel}"), token, None).await;
    let (status, _, text) = parts(response).await;
    assert_eq!(status, StatusCode::OK, "channel info of {channel}: {text}");
    let info = parse_json(&text);
    validate(SchemaKind::ChannelInfo, &info);
    info["last_id"].as_str().unwrap_or("").to_owned()
}

/// `GET /channels/{channel}` as `who`: `None` when it answers 200 with a valid body (it must,
/// whoever asks), else a description of the answer.
async fn info_deviation(server: &TestServer, channel: &str, who: Who<'_>, expected: u16) -> Option<String> {
    let response = call(server, Method::GET, &format!("/channels/{channel}"), who.token(), None).await;
    let (status, _, text) = parts(response).await;
    if status.as_u16() != expected {
        return Some(format!(
            "GET /channels/{channel} as {who:?}: {status} {text} (expected {expected})"
        ));
    }
    let body = parse_json(&text);
    validate(
        if expected == 200 {
            SchemaKind::ChannelInfo
        } else {
            SchemaKind::Error
        },
        &body,
    );
    None
}

/// One row per caller: send, events, presence reads, register, delete.
type Row<'a> = (Who<'a>, Expect, Expect, Expect, Expect, Expect);

/// Checks every endpoint for every row on `channel` (`sender`: credentials allowed to send there).
async fn check_rows(server: &TestServer, channel: &str, sender: Option<&str>, rows: &[Row<'_>]) {
    for (n, (who, send, events, reads, register, delete)) in rows.iter().enumerate() {
        check_send(server, channel, *who, *send).await;
        check_events(server, channel, *who, *events, sender).await;
        check_presence_reads(server, channel, *who, *reads).await;
        check_register(server, channel, *who, *register, &format!("new{n}")).await;
        check_delete(server, channel, *who, *delete, &format!("victim{n}")).await;
    }
}

use Expect::{Forbidden, Ok as Allowed, Unauthorized, UnknownClient};

store_tests! {
    /// With a publisher key: the 401/403 table of the protocol, endpoint by endpoint, on a
    /// default channel and on a `subscribe=clients` one. A client's private token of another
    /// channel counts as a bad token.
    async fn publisher_key_and_each_endpoint(backend) {
        let server = backend.start(&["--publisher-key", KEY, "--policy", "members-*:subscribe=clients"]);
        let other = reg(&server, "elsewhere", "alice", None).await;
        for (channel, anonymous_reads) in [("plain", Allowed), ("members-1", Unauthorized)] {
            let alice = reg(&server, channel, "alice", None).await;
            let rows: [Row<'_>; 5] = [
                (
                    Who::Anonymous,
                    Unauthorized,
                    anonymous_reads,
                    anonymous_reads,
                    Unauthorized,
                    Unauthorized,
                ),
                (
                    Who::Bad,
                    Unauthorized,
                    UnknownClient,
                    Unauthorized,
                    Unauthorized,
                    Unauthorized,
                ),
                (
                    Who::Client(&other),
                    Unauthorized,
                    UnknownClient,
                    Unauthorized,
                    Unauthorized,
                    Unauthorized,
                ),
                (Who::Client(&alice), Allowed, Allowed, Allowed, Forbidden, Forbidden),
                (Who::Publisher, Allowed, Allowed, Allowed, Allowed, Allowed),
            ];
            check_rows(&server, channel, Some(KEY), &rows).await;
        }
        assert!(
            !server.stderr().contains("NO PUBLISHER KEY"),
            "no open-mode warning with a key:\n{}",
            server.stderr()
        );
    }

    /// `GET /channels/{c}` follows the rule of presence reads (it counts clients): anonymous
    /// callers only where `subscribe=anyone`, a bad token always 401. `/healthz` answers
    /// anyone and does not check a token.
    async fn channel_info_follows_the_presence_rule(backend) {
        let server = backend.start(&["--publisher-key", KEY, "--policy", "members-*:subscribe=clients"]);
        let other = reg(&server, "elsewhere", "alice", None).await;
        let mut deviations = Vec::new();
        // Channel info counts clients, so it is readable by whoever may read presence:
        // anyone on an open channel, clients and publishers on a clients-only one; a
        // token that is neither a key nor a client of the channel is always a 401.
        for (channel, anonymous) in [("plain", 200), ("members-1", 401)] {
            let alice = reg(&server, channel, "alice", None).await;
            for (who, expected) in [
                (Who::Anonymous, anonymous),
                (Who::Bad, 401),
                (Who::Client(&other), 401),
                (Who::Client(&alice), 200),
                (Who::Publisher, 200),
            ] {
                deviations.extend(info_deviation(&server, channel, who, expected).await);
            }
        }
        for token in [None, Some(BAD), Some(other.as_str()), Some(KEY)] {
            let response = call(&server, Method::GET, "/healthz", token, None).await;
            if response.status() != 200 {
                deviations.push(format!("GET /healthz with {token:?}: {}", response.status()));
            }
        }
        assert!(
            deviations.is_empty(),
            "channel info follows the presence rule, health answers anyone:\n{}",
            deviations.join("\n")
        );
    }

    /// Open mode (no key, loopback): a credential-less caller counts as a publisher (send,
    /// register, remove, subscribe and read presence on a `subscribe=clients` channel, 403 on a
    /// channel whose `send` policy does not name publishers); tokens are still checked. The
    /// server warns loudly at start.
    async fn open_mode_on_loopback(backend) {
        let server = backend.start(&[
            "--policy",
            "members-*:subscribe=clients",
            "--policy",
            "cli-*:send=clients",
        ]);
        eventually(
            "open mode warns at start (NO PUBLISHER KEY CONFIGURED)",
            READ,
            || async { server.stderr().contains("NO PUBLISHER KEY CONFIGURED") },
        )
        .await;
        for (channel, anonymous_send) in [("plain", Allowed), ("members-1", Allowed), ("cli-1", Forbidden)] {
            let alice = reg_with(&server, channel, "alice", None, None).await;
            let rows: [Row<'_>; 3] = [
                (Who::Anonymous, anonymous_send, Allowed, Allowed, Allowed, Allowed),
                (
                    Who::Bad,
                    Unauthorized,
                    UnknownClient,
                    Unauthorized,
                    Unauthorized,
                    Unauthorized,
                ),
                (Who::Client(&alice), Allowed, Allowed, Allowed, Forbidden, Forbidden),
            ];
            for (n, (who, send, events, reads, register, delete)) in rows.iter().enumerate() {
                check_send(&server, channel, *who, *send).await;
                let sender = if anonymous_send == Allowed {
                    None
                } else {
                    Some(alice.as_str())
                };
                check_events(&server, channel, *who, *events, sender).await;
                check_presence_reads(&server, channel, *who, *reads).await;
                let token = who.token();
                // Register / delete without credentials: the publisher's rights.
                let public = format!("new{n}");
                if *register == Allowed {
                    reg_with(&server, channel, &public, None, token).await;
                    let (status, _, text) = parts(delete_client(&server, channel, &public, token).await).await;
                    assert_eq!(status, StatusCode::NO_CONTENT, "{text}");
                } else {
                    let body = json!({"public_token": public});
                    let path = format!("/channels/{channel}/clients");
                    check_error(
                        call(&server, Method::POST, &path, token, Some(&body)).await,
                        *register,
                        "register",
                    )
                    .await;
                    reg_with(&server, channel, &public, None, None).await;
                    check_error(delete_client(&server, channel, &public, token).await, *delete, "delete").await;
                }
            }
        }
        // A publisher's message has no `from`, even without credentials.
        let mut stream = open_anon(&server, "plain", NONE).await;
        let id = send_ok(&server, "plain", None, &json!({"name": "n", "contents": 1})).await;
        assert!(expect_id(&mut stream, &id).await.get("from").is_none());
    }

    /// Policies: every `send` combination, `subscribe=clients`, first match wins, unnamed keys
    /// keep the defaults, patterns may contain `:`; register and remove ignore the policy.
    async fn channel_policies(backend) {
        let server = backend.start(&[
            "--publisher-key",
            KEY,
            "--policy",
            "dup-*:send=anyone",
            "--policy",
            "dup-x*:send=publishers,subscribe=clients",
            "--policy",
            "s-any-*:send=anyone",
            "--policy",
            "s-pub-*:send=publishers",
            "--policy",
            "s-cli-*:send=clients",
            "--policy",
            "s-pc-*:send=publishers+clients",
            "--policy",
            "s-ca-*:send=clients+anyone",
            "--policy",
            "s-pa-*:send=publishers+anyone",
            "--policy",
            "sub-cli-*:subscribe=clients",
            "--policy",
            "sub-any-*:subscribe=anyone,send=publishers,presence=off",
            "--policy",
            "ops:*:send=anyone",
        ]);
        // (channel, send as anonymous, bad, client, publisher; subscribe=clients?)
        let table = [
            ("plain", [Unauthorized, Unauthorized, Allowed, Allowed], false),
            ("dup-x1", [Allowed, Unauthorized, Allowed, Allowed], false),
            ("s-any-1", [Allowed, Unauthorized, Allowed, Allowed], false),
            ("s-pub-1", [Unauthorized, Unauthorized, Forbidden, Allowed], false),
            ("s-cli-1", [Unauthorized, Unauthorized, Allowed, Forbidden], false),
            ("s-pc-1", [Unauthorized, Unauthorized, Allowed, Allowed], false),
            ("s-ca-1", [Allowed, Unauthorized, Allowed, Allowed], false),
            ("s-pa-1", [Allowed, Unauthorized, Allowed, Allowed], false),
            ("sub-cli-1", [Unauthorized, Unauthorized, Allowed, Allowed], true),
            ("sub-any-1", [Unauthorized, Unauthorized, Forbidden, Allowed], false),
            ("ops:1", [Allowed, Unauthorized, Allowed, Allowed], false),
        ];
        for (channel, send, members_only) in table {
            let alice = reg(&server, channel, "alice", None).await;
            let anonymous_reads = if members_only { Unauthorized } else { Allowed };
            let rows: [Row<'_>; 4] = [
                (
                    Who::Anonymous,
                    send[0],
                    anonymous_reads,
                    anonymous_reads,
                    Unauthorized,
                    Unauthorized,
                ),
                (
                    Who::Bad,
                    send[1],
                    UnknownClient,
                    Unauthorized,
                    Unauthorized,
                    Unauthorized,
                ),
                (Who::Client(&alice), send[2], Allowed, Allowed, Forbidden, Forbidden),
                (Who::Publisher, send[3], Allowed, Allowed, Allowed, Allowed),
            ];
            let sender = if send[3] == Allowed { KEY } else { alice.as_str() };
            check_rows(&server, channel, Some(sender), &rows).await;
        }
    }

    /// `from` cannot be forged: a body with `from` is 400 schema_violation (pointer ""), from
    /// anyone; a client's message carries `from` = its public token and display name; messages
    /// of publishers and anonymous senders have none.
    async fn forged_from_impossible(backend) {
        let server = backend.start(&["--publisher-key", KEY, "--policy", "open-*:send=anyone"]);
        for channel in ["f", "open-1"] {
            let alice = reg(&server, channel, "alice", Some("Alice")).await;
            let bob = reg(&server, channel, "bob", None).await;
            let mut observer = open_anon(&server, channel, NONE).await;
            let mut senders: Vec<Option<&str>> = vec![Some(KEY), Some(&alice), Some(&bob)];
            if channel == "open-1" {
                senders.push(None);
            }
            for token in &senders {
                for from in [
                    json!({"public_token": "alice", "display_name": "Alice"}),
                    json!({"public_token": "bob", "display_name": null}),
                    json!("alice"),
                ] {
                    let body = json!({"name": "chat", "contents": 1, "from": from});
                    let error =
                        expect_error(send_as(&server, channel, *token, &body).await, 400, "schema_violation").await;
                    assert!(
                        error["details"].as_array().unwrap().iter().any(|d| d["pointer"] == ""),
                        "a `from` field is reported at pointer \"\": {error}"
                    );
                }
            }
            assert_eq!(
                server.channel_info(channel).await["last_id"],
                Value::Null,
                "nothing stored"
            );

            let expected_from = [
                None,
                Some(json!({"public_token": "alice", "display_name": "Alice"})),
                Some(json!({"public_token": "bob", "display_name": null})),
                None,
            ];
            for (token, from) in senders.iter().zip(expected_from) {
                let id = send_ok(&server, channel, *token, &json!({"name": "chat", "contents": "hi"})).await;
                let envelope = expect_id(&mut observer, &id).await;
                assert_eq!(envelope.get("from").cloned(), from, "sender {token:?}: {envelope}");
                assert!(envelope.get("to").is_none());
            }
            // A client's direct message: `to` and `from` both set.
            let last = server.channel_info(channel).await["last_id"]
                .as_str()
                .unwrap()
                .to_owned();
            let mut bob_stream = open_query(&server, channel, &bob, "", &[("last-event-id", last.as_str())]).await;
            let body = json!({"name": "chat", "contents": "psst", "to": "bob"});
            let id = send_ok(&server, channel, Some(&alice), &body).await;
            let envelope = expect_id(&mut bob_stream, &id).await;
            assert_eq!(envelope["to"], "bob");
            assert_eq!(
                envelope["from"],
                json!({"public_token": "alice", "display_name": "Alice"})
            );
        }
    }

    /// Names starting with `client.` are reserved: 400 schema_violation at /name for every
    /// sender (also with `to`), nothing stored; names merely resembling them are fine.
    async fn reserved_names(backend) {
        let server = backend.start(KEYED);
        let alice = reg(&server, "rn", "alice", None).await;
        for name in [
            "client.connected",
            "client.disconnected",
            "client.expired",
            "client.x",
            "client.",
        ] {
            for token in [KEY, alice.as_str()] {
                for body in [
                    json!({"name": name, "contents": {}}),
                    json!({"name": name, "contents": {}, "to": "alice"}),
                ] {
                    let error = expect_error(
                        send_as(&server, "rn", Some(token), &body).await,
                        400,
                        "schema_violation",
                    )
                    .await;
                    let pointers: Vec<&str> = error["details"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|d| d["pointer"].as_str().unwrap())
                        .collect();
                    assert_eq!(pointers, ["/name"], "{name}: {error}");
                }
            }
        }
        assert_eq!(
            server.channel_info("rn").await["last_id"],
            Value::Null,
            "nothing stored"
        );
        for name in ["client", "clients.update", "clientx", "my.client.x", "x:client.y"] {
            send_ok(&server, "rn", Some(&alice), &json!({"name": name, "contents": {}})).await;
        }
    }

    /// With `--log debug`, every endpoint exercised with a publisher key and private tokens in
    /// headers and `?token=` (good, bad, removed): no secret in the logs nor in any answer
    /// other than the registration's own private token.
    async fn tokens_never_logged(backend) {
        let dir = TempDir::new("keys");
        let file = dir.path().join("keys");
        let file_key = "file_key-0123456789abcdef";
        std::fs::write(&file, format!("# keys\n{file_key}\n")).unwrap();
        let file_arg = file.display().to_string();
        let server = backend.start(&[
            "--log",
            "debug",
            "--publisher-key",
            KEY,
            "--publisher-keys-file",
            &file_arg,
            "--policy",
            "room-*:subscribe=clients,presence=on",
            "--cors-origin",
            "https://app.example",
        ]);
        let chosen = "chosen_secret-0123456789abcdef";
        let mut secrets: Vec<String> = vec![KEY.into(), BAD.into(), file_key.into(), chosen.into()];
        let mut answers = String::new();

        for channel in ["room-1", "plain"] {
            let (_, generated) = register(
                &server,
                channel,
                json!({"public_token": "gen", "display_name": "G"}),
                Some(file_key),
            )
            .await;
            register(
                &server,
                channel,
                json!({"public_token": "chosen", "private_token": chosen}),
                Some(KEY),
            )
            .await;
            secrets.push(generated.clone());
            let tokens = [KEY, file_key, chosen, generated.as_str(), BAD];
            for token in tokens {
                let auth = bearer(token);
                let query = format!("?token={token}");
                // Streams by query and by header, with and without EventSource's Accept.
                for (query, headers) in [
                    (query.as_str(), vec![("accept", "text/event-stream")]),
                    (
                        "",
                        vec![("accept", "text/event-stream"), ("authorization", auth.as_str())],
                    ),
                    (query.as_str(), vec![]),
                    ("", vec![("authorization", auth.as_str())]),
                ] {
                    let separator = if query.is_empty() { "?" } else { "&" };
                    let url = server.url(&format!("/channels/{channel}/events{query}{separator}timeout=1"));
                    let mut stream = SseStream::connect(&url, &headers).await;
                    let _ = stream.next_event(Duration::from_millis(100)).await;
                    answers.push_str(&String::from_utf8_lossy(&stream.received));
                }
                let bad_query = format!("/channels/{channel}/events?token={token}&timeout=0");
                for path in [
                    format!("/channels/{channel}"),
                    format!("/channels/{channel}/clients"),
                    format!("/channels/{channel}/clients/gen"),
                    format!("/channels/{channel}/messages"),
                    bad_query,
                    format!("/nope?token={token}"),
                    format!("/channels/{channel}/clients/gen/x?token={token}"),
                    "/healthz".to_owned(),
                ] {
                    let (_, _, text) = parts(call(&server, Method::GET, &path, Some(token), None).await).await;
                    answers.push_str(&text);
                }
                for body in [
                    json!({"name": "n", "contents": 1}),
                    json!({"name": "n", "contents": 1, "to": "gen"}),
                    json!({"name": "n", "contents": 1, "to": "nobody"}),
                    json!({"name": "client.x", "contents": 1}),
                    json!({"name": "n", "contents": 1, "from": {"public_token": "gen", "display_name": null}}),
                ] {
                    answers.push_str(&parts(send_as(&server, channel, Some(token), &body).await).await.2);
                }
                let body = json!({"public_token": "gen"});
                let path = format!("/channels/{channel}/clients");
                answers.push_str(
                    &parts(call(&server, Method::POST, &path, Some(token), Some(&body)).await)
                        .await
                        .2,
                );
                answers.push_str(
                    &parts(delete_client(&server, channel, "nobody", Some(token)).await)
                        .await
                        .2,
                );
                let preflight = [
                    ("origin", "https://app.example"),
                    ("access-control-request-method", "GET"),
                    ("authorization", auth.as_str()),
                ];
                let path = format!("/channels/{channel}/events{query}");
                answers.push_str(
                    &parts(call_with(&server, Method::OPTIONS, &path, &preflight, None).await)
                        .await
                        .2,
                );
            }
            // Remove a connected client, then use its dead token.
            let mut stream = open_query(&server, channel, &generated, "", NONE).await;
            let (status, _, text) = parts(delete_client(&server, channel, "gen", Some(KEY)).await).await;
            assert_eq!(status, 204, "{text}");
            loop {
                let frame = stream.expect_non_heartbeat(READ).await;
                if frame.event.is_some() {
                    assert_eq!(frame.control("failure", SchemaKind::Failure)["code"], "client_removed");
                    break;
                }
            }
            answers.push_str(&String::from_utf8_lossy(&stream.received));
            for (query, headers) in [(format!("?token={generated}"), vec![("accept", "text/event-stream")])] {
                let mut stream =
                    SseStream::connect(&server.url(&format!("/channels/{channel}/events{query}")), &headers).await;
                let _ = stream.next_event(Duration::from_millis(100)).await;
                answers.push_str(&String::from_utf8_lossy(&stream.received));
            }
            answers.push_str(
                &parts(send_as(&server, channel, Some(&generated), &json!({"name": "n", "contents": 1})).await)
                    .await
                    .2,
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();
        assert_no_secret("the answers", &answers, &secrets);
        let logs = server.stderr();
        assert!(logs.contains("DEBUG"), "the server logged at debug level:\n{logs}");
        assert_no_secret("the server's logs", &logs, &secrets);
    }
}

/// Keys from `--publisher-keys-file` (one per line, `#` comments) and `--publisher-key` all
/// count; nothing else does.
#[tokio::test]
async fn publisher_keys_from_file_and_flag() {
    let dir = TempDir::new("keys");
    let file = dir.path().join("keys.txt");
    let (a, b, c) = (
        "key_a-0123456789abcdef",
        "key_b-0123456789abcdef",
        "key_c-0123456789abcdef",
    );
    std::fs::write(&file, format!("# publisher keys\n{a}\n\n  {b}  \n# {BAD}\n")).unwrap();
    let path = file.display().to_string();
    let server = TestServer::start(&["--publisher-keys-file", &path, "--publisher-key", c]);
    for (n, key) in [a, b, c].into_iter().enumerate() {
        send_ok(&server, "k", Some(key), &json!({"name": "n", "contents": n})).await;
        reg_with(&server, "k", &format!("c{n}"), None, Some(key)).await;
    }
    for token in [None, Some(BAD), Some("# publisher keys")] {
        let body = json!({"name": "n", "contents": 1});
        expect_unauthorized(send_as(&server, "k", token, &body).await).await;
    }
    assert!(!server.stderr().contains("NO PUBLISHER KEY"), "{}", server.stderr());
}

/// `SSEHUB_PUBLISHER_KEYS` (comma-separated), `SSEHUB_PUBLISHER_KEYS_FILE` and
/// `SSEHUB_POLICIES` (`;`-separated) configure the same as the flags.
#[tokio::test]
async fn publisher_keys_and_policies_from_environment() {
    let dir = TempDir::new("keys");
    let file = dir.path().join("keys.txt");
    let (a, b, c) = (
        "env_a-0123456789abcdef",
        "env_b-0123456789abcdef",
        "env_c-0123456789abcdef",
    );
    std::fs::write(&file, format!("{c}\n")).unwrap();
    let keys = format!("{a},{b}");
    let path = file.display().to_string();
    let (base, _proc) = expect_listening(
        &["serve", "--listen", "127.0.0.1:0"],
        &[
            ("SSEHUB_PUBLISHER_KEYS", &keys),
            ("SSEHUB_PUBLISHER_KEYS_FILE", &path),
            ("SSEHUB_POLICIES", "pub-*:send=anyone;pub-x*:send=publishers"),
        ],
    );
    let body = json!({"name": "n", "contents": 1});
    for key in [a, b, c] {
        let (status, text) = spawned_status(&base, Method::POST, "/channels/k/messages", Some(key), Some(&body)).await;
        assert_eq!(status, 201, "key {key}: {text}");
    }
    for token in [None, Some(BAD), Some(keys.as_str())] {
        let (status, text) = spawned_status(&base, Method::POST, "/channels/k/messages", token, Some(&body)).await;
        assert_eq!(status, 401, "{token:?}: {text}");
    }
    // First matching rule of the list: pub-x1 is send=anyone.
    let (status, text) = spawned_status(&base, Method::POST, "/channels/pub-x1/messages", None, Some(&body)).await;
    assert_eq!(status, 201, "{text}");
}

/// No key on a non-loopback address: refused (non-zero exit, a message naming the fix, no
/// listening line) unless `--allow-open` / `SSEHUB_ALLOW_OPEN=true`; with a key it starts.
/// Other loopback addresses count as loopback.
#[tokio::test]
async fn open_mode_refused_off_loopback() {
    let stderr = expect_refusal(&["serve", "--listen", "0.0.0.0:0"], &[]);
    for needle in ["--allow-open", "--publisher-key", "0.0.0.0"] {
        assert!(stderr.contains(needle), "the refusal names {needle}: {stderr}");
    }
    let stderr = expect_refusal(&["serve", "--listen", "0.0.0.0:0"], &[("SSEHUB_ALLOW_OPEN", "false")]);
    assert!(stderr.contains("--allow-open"), "{stderr}");

    let body = json!({"name": "n", "contents": 1});
    for (args, envs) in [
        (vec!["serve", "--listen", "0.0.0.0:0", "--allow-open"], vec![]),
        (
            vec!["serve", "--listen", "0.0.0.0:0"],
            vec![("SSEHUB_ALLOW_OPEN", "true")],
        ),
    ] {
        let (base, proc) = expect_listening(&args, &envs);
        let port = base
            .strip_prefix("http://0.0.0.0:")
            .unwrap_or_else(|| panic!("listening line {base}"));
        let local = format!("http://127.0.0.1:{port}");
        let (status, text) = spawned_status(&local, Method::POST, "/channels/c/messages", None, Some(&body)).await;
        assert_eq!(status, 201, "open mode lets anyone send: {text}");
        eventually("a loud open-mode warning", READ, || async {
            proc.stderr().contains("NO PUBLISHER KEY CONFIGURED")
        })
        .await;
    }

    let (base, proc) = expect_listening(&["serve", "--listen", "0.0.0.0:0", "--publisher-key", KEY], &[]);
    let port = base.strip_prefix("http://0.0.0.0:").unwrap();
    let local = format!("http://127.0.0.1:{port}");
    let (status, _) = spawned_status(&local, Method::POST, "/channels/c/messages", None, Some(&body)).await;
    assert_eq!(status, 401);
    let (status, _) = spawned_status(&local, Method::POST, "/channels/c/messages", Some(KEY), Some(&body)).await;
    assert_eq!(status, 201);
    assert!(!proc.stderr().contains("NO PUBLISHER KEY"), "{}", proc.stderr());
    drop(proc);

    let (base, proc) = expect_listening(&["serve", "--listen", "127.0.0.2:0"], &[]);
    let (status, _) = spawned_status(&base, Method::POST, "/channels/c/messages", None, Some(&body)).await;
    assert_eq!(status, 201, "127.0.0.0/8 is loopback");
    eventually("a loud open-mode warning", READ, || async {
        proc.stderr().contains("NO PUBLISHER KEY CONFIGURED")
    })
    .await;
}

/// A malformed policy or a short key stops the server at start.
#[tokio::test]
async fn bad_access_configuration_refused() {
    for policy in [
        "x-*:colour=red",
        "x-*:send=everyone",
        "x-*:subscribe=nobody",
        "x-*:presence=yes",
        "no-colon",
    ] {
        expect_refusal(&["serve", "--listen", "127.0.0.1:0", "--policy", policy], &[]);
    }
    expect_refusal(
        &["serve", "--listen", "127.0.0.1:0", "--publisher-key", "short_key-12345"],
        &[],
    );
}

/// The configured key never shows in `--help` (even when set in the environment) nor in the
/// error messages of a refused start or of HTTP answers.
#[tokio::test]
async fn key_absent_from_help_and_errors() {
    for args in [vec!["--help"], vec!["serve", "--help"]] {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_ssehub"))
            .args(&args)
            .env("SSEHUB_PUBLISHER_KEYS", KEY)
            .output()
            .expect("run ssehub --help");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.contains("--publisher-key"), "{text}");
        assert_no_secret("--help", &text, &[KEY]);
    }
    let refusals = [
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--publisher-key",
            KEY,
            "--timeout",
            "100",
            "--max-timeout",
            "10",
        ],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--publisher-key",
            KEY,
            "--policy",
            "x:bad=1",
        ],
        vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--publisher-key",
            KEY,
            "--publisher-keys-file",
            "/nonexistent/keys",
        ],
    ];
    for args in refusals {
        let stderr = expect_refusal(&args, &[]);
        assert_no_secret("a refusal", &stderr, &[KEY]);
        let stderr = expect_refusal(
            &args[..3].iter().chain(&args[5..]).copied().collect::<Vec<_>>(),
            &[("SSEHUB_PUBLISHER_KEYS", KEY)],
        );
        assert_no_secret("a refusal", &stderr, &[KEY]);
    }
    // HTTP error messages never echo a token.
    let server = TestServer::start(KEYED);
    let alice = reg(&server, "c", "alice", None).await;
    for token in [BAD, alice.as_str(), KEY] {
        for (method, path, body) in [
            (
                Method::POST,
                "/channels/c/clients",
                Some(json!({"public_token": "alice"})),
            ),
            (Method::DELETE, "/channels/c/clients/nobody", None),
            (
                Method::POST,
                "/channels/c/messages",
                Some(json!({"name": "client.x", "contents": 1})),
            ),
            (
                Method::POST,
                "/channels/c/messages",
                Some(json!({"name": "x", "contents": 1, "to": "zed"})),
            ),
            (Method::GET, "/channels/c/clients/zed", None),
            (Method::GET, "/channels/bad!channel/clients", None),
        ] {
            let (status, _, text) = parts(call(&server, method, path, Some(token), body.as_ref()).await).await;
            assert!(status.is_client_error(), "{path}: {status}");
            assert_no_secret("an error answer", &text, &[BAD, &alice, KEY]);
        }
    }
}

/// A rejected (too short) publisher key is a secret too: the refusal must not echo it.
#[tokio::test]
async fn rejected_short_key_not_echoed() {
    let short = "short_key-12345";
    let mut leaks = Vec::new();
    let stderr = expect_refusal(&["serve", "--listen", "127.0.0.1:0", "--publisher-key", short], &[]);
    if stderr.contains(short) {
        leaks.push(format!("--publisher-key: {stderr}"));
    }
    let stderr = expect_refusal(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("SSEHUB_PUBLISHER_KEYS", short)],
    );
    if stderr.contains(short) {
        leaks.push(format!("SSEHUB_PUBLISHER_KEYS: {stderr}"));
    }
    assert!(
        leaks.is_empty(),
        "the refusal echoes the rejected key {short:?}:\n{}",
        leaks.join("\n")
    );
}

/// Error answers show only public tokens: a malformed private token (in a registration body or
/// as `?token=`) is not echoed back in the error's message or details.
#[tokio::test]
async fn malformed_private_token_not_echoed() {
    let server = TestServer::start(KEYED);
    let secret = "almost_secret-0123456789abcdef";
    let mut leaks = Vec::new();
    let body = json!({"public_token": "x", "private_token": format!("{secret} with spaces")});
    let response = call(&server, Method::POST, "/channels/c/clients", Some(KEY), Some(&body)).await;
    let error = expect_error(response, 400, "schema_violation").await;
    leaks.push(("registration schema_violation", error));
    let long = secret.repeat(10);
    let response = events_json(&server, "c", &format!("?token={long}"), NONE).await;
    let error = expect_error(response, 400, "invalid_query").await;
    leaks.push(("?token= invalid_query JSON", error));
    let failure = expect_stream_failure(&server, "c", &format!("?token={long}"), NONE, "invalid_query").await;
    leaks.push(("?token= invalid_query failure frame", failure));
    let leaks: Vec<String> = leaks
        .into_iter()
        .filter(|(_, answer)| answer.to_string().contains(secret))
        .map(|(what, answer)| format!("{what}: {answer}"))
        .collect();
    assert!(leaks.is_empty(), "answers echo a private token:\n{}", leaks.join("\n"));
}

/// A request with `Authorization` values given as raw bytes (one header per value, so
/// two values are a repeated header), on whichever transport the server picks for it.
async fn with_raw_authorization(
    server: &TestServer,
    method: Method,
    path: &str,
    authorization: &[&[u8]],
    extra: &[(&str, &str)],
    body: Option<&Value>,
) -> reqwest::Response {
    let mut request = server
        .client()
        .request(method.clone(), server.url(path))
        .timeout(REQUEST);
    for value in authorization {
        let value = reqwest::header::HeaderValue::from_bytes(value).expect("a header value");
        request = request.header("authorization", value);
    }
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// A malformed `Authorization` header is a bad credential, not "no credentials": 401 on every
/// endpoint (a failure frame `unauthorized` to an EventSource), also in open mode where no
/// credentials would be a publisher's, and also beside a valid `?token=`. Two `Authorization`
/// headers are a malformed request: 400 `bad_request`, as JSON even to an EventSource.
#[tokio::test]
async fn malformed_authorization_is_refused() {
    let junk = format!("Bearer {KEY} extra");
    let malformed: [&[u8]; 7] = [
        b"Bearer ",
        b"Bearer",
        b"Basic dXNlcjpwYXNz",
        b"Bearer \xff\xfe-0123456789abcdef",
        junk.as_bytes(),
        b"Token pk_test-0123456789abcdef",
        b"pk_test-0123456789abcdef",
    ];
    let body = json!({"name": "n", "contents": 1});
    let registration = json!({"public_token": "mallory"});
    let keyed = TestServer::start(KEYED);
    let open = TestServer::start(&[]);
    for (server, mode) in [(&keyed, "keyed"), (&open, "open mode")] {
        let token = reg_with(server, "c", "alice", None, (mode == "keyed").then_some(KEY)).await;
        for value in malformed {
            let what = format!("{mode}, Authorization: {:?}", String::from_utf8_lossy(value));
            let requests: [(Method, &str, Option<&Value>); 6] = [
                (Method::POST, "/channels/c/messages", Some(&body)),
                (Method::POST, "/channels/c/clients", Some(&registration)),
                (Method::GET, "/channels/c", None),
                (Method::GET, "/channels/c/clients", None),
                (Method::GET, "/channels/c/clients/alice", None),
                (Method::DELETE, "/channels/c/clients/alice", None),
            ];
            for (method, path, body) in requests {
                let response = with_raw_authorization(server, method.clone(), path, &[value], NONE, body).await;
                let (status, _, text) = parts(response).await;
                assert_eq!(status, 401, "{what}: {method} {path}: {text}");
            }
            for query in [String::new(), format!("?token={token}")] {
                let path = format!("/channels/c/events{query}");
                let json = [("accept", "application/json")];
                let response = with_raw_authorization(server, Method::GET, &path, &[value], &json, None).await;
                expect_unauthorized(response).await;
                let sse = [("accept", "text/event-stream")];
                let response = with_raw_authorization(server, Method::GET, &path, &[value], &sse, None).await;
                assert_eq!(response.status(), 200, "{what}: {path}");
                let text = parts(response).await.2;
                assert!(
                    text.contains("event: failure\ndata: {\"code\":\"unauthorized\""),
                    "{what}: {path}: {text}"
                );
            }
        }
        let key = bearer(KEY);
        let twice: [&[u8]; 2] = [key.as_bytes(), key.as_bytes()];
        let requests: [(Method, &str, Option<&Value>); 4] = [
            (Method::POST, "/channels/c/messages", Some(&body)),
            (Method::GET, "/channels/c", None),
            (Method::GET, "/channels/c/events", None),
            (Method::GET, "/channels/c/clients", None),
        ];
        for (method, path, body) in requests {
            // An EventSource's Accept too: this is no failure frame.
            let response = with_raw_authorization(server, method, path, &twice, SSE, body).await;
            expect_error(response, 400, "bad_request").await;
        }
        // Still one history: nothing was sent by the refused requests.
        assert_eq!(server.channel_info("c").await["history_size"], 0, "{mode}");
    }
}

/// `?token=` follows the private-token pattern (16 to 256 of `A-Z a-z 0-9 _ . ~ -`), as the
/// contract says: anything else is `invalid_query` at `/query/token` (JSON, or a failure frame
/// to an EventSource), before any credential is looked up.
#[tokio::test]
async fn token_query_follows_the_private_token_pattern() {
    let server = TestServer::start(KEYED);
    for token in [
        "short",
        "x",
        "has%20a%20space-0123456789",
        "key%2Bwith%2Fbase64%3D0123",
        "%C3%A9-0123456789abcdef",
    ] {
        let query = format!("?token={token}");
        let error = expect_error(events_json(&server, "c", &query, NONE).await, 400, "invalid_query").await;
        assert_eq!(error["details"][0]["pointer"], "/query/token", "{token}: {error}");
        expect_stream_failure(&server, "c", &query, NONE, "invalid_query").await;
    }
}
