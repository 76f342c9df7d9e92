//! The connection against hostile and broken clients, byte by byte: every
//! connection is bounded in time for its head and its body whichever request
//! it carries, every malformed request gets the JSON error body (first on its
//! connection or not), an early answer reaches a client that writes its whole
//! body before reading, an event stream is close-delimited however the
//! connection began, and a subscriber that never reads is let go.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use ssehub::schema::SchemaKind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The `--request-timeout` these tests run with, in seconds.
const REQUEST_TIMEOUT: u64 = 1;

/// Expects the JSON error `status` / `code` as the connection's next answer,
/// then the connection closed by the server.
async fn expect_error_then_close(connection: &mut Connection, status: u16, code: &str, what: &str) {
    let answer = connection.answer().await;
    assert_eq!(answer.status, status, "{what}: {}", answer.body);
    validate(SchemaKind::Error, &answer.body);
    assert_eq!(answer.body["error"]["code"], code, "{what}");
    assert_eq!(
        answer.header("connection"),
        Some("close"),
        "{what}: {:?}",
        answer.headers
    );
    assert!(connection.closed().await, "{what}: the connection stays open");
}

#[tokio::test]
async fn a_request_that_stalls_is_cut_off_on_every_path() {
    let server = TestServer::start(&["--request-timeout", &REQUEST_TIMEOUT.to_string()]);
    // Heads that never end, and bodies that never arrive, on each way a request is read.
    let stalled_bodies = [
        "POST /channels/x/clients HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        "POST /channels/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        "POST /channels/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"na",
        "POST /channels/x/messages HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        "POST /channels/x/messages HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        "POST /demo/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n",
        "PUT /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
    ];
    for request in stalled_bodies {
        let started = Instant::now();
        let mut connection = Connection::open(&server).await;
        connection.write(request.as_bytes()).await;
        expect_error_then_close(&mut connection, 408, "request_timeout", request).await;
        let took = started.elapsed();
        assert!(took < Duration::from_secs(REQUEST_TIMEOUT + 2), "{request:?}: {took:?}");
    }

    // A body sent a byte at a time, slower than the timeout allows in all.
    let mut connection = Connection::open(&server).await;
    let body = json!({"name": "slow", "contents": 1}).to_string();
    connection
        .write(
            format!(
                "POST /channels/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await;
    let started = Instant::now();
    for byte in body.as_bytes().iter().take(8) {
        let _ = connection.socket.write_all(&[*byte]).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    expect_error_then_close(&mut connection, 408, "request_timeout", "a byte every 250 ms").await;
    assert!(started.elapsed() < Duration::from_secs(REQUEST_TIMEOUT + 3));

    // A head that never ends, and an idle keep-alive connection: closed.
    for opening in ["GET /healthz HTTP/1.1\r\nHost: x\r\n", ""] {
        let mut connection = Connection::open(&server).await;
        connection.write(opening.as_bytes()).await;
        let started = Instant::now();
        assert!(connection.closed().await, "{opening:?}");
        assert!(
            started.elapsed() < Duration::from_secs(REQUEST_TIMEOUT + 2),
            "{opening:?}"
        );
    }
}

#[tokio::test]
async fn malformed_requests_get_the_json_error_first_or_later_on_a_connection() {
    let server = TestServer::start(&[]);
    let huge_head = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "y".repeat(40 * 1024));
    let many_headers = format!("GET / HTTP/1.1\r\n{}\r\n", "X-Many: y\r\n".repeat(120));
    let long_target = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9 * 1024));
    let cases: Vec<(&str, u16, &str)> =
        vec![
        ("GET / HTTP/1.1 extra\r\n\r\n", 400, "bad_request"),
        ("NOT A REQUEST\r\n\r\n", 400, "bad_request"),
        ("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400, "bad_request"),
        ("GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "bad_request"),
        (
            "POST /channels/x/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            "POST /channels/x/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            501,
            "not_implemented",
        ),
        (
            "POST /channels/x/messages HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "bad_request",
        ),
        (&long_target, 414, "uri_too_long"),
        (&huge_head, 431, "headers_too_large"),
        (&many_headers, 431, "headers_too_large"),
    ];
    for (request, status, code) in cases {
        let what = &request[..request.len().min(60)];
        // As the first request of a connection…
        let mut connection = Connection::open(&server).await;
        connection.write(request.as_bytes()).await;
        expect_error_then_close(&mut connection, status, code, what).await;
        // …and after a good one on a kept connection.
        let mut connection = Connection::open(&server).await;
        connection.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(connection.answer().await.status, 200);
        connection.write(request.as_bytes()).await;
        expect_error_then_close(&mut connection, status, code, what).await;
    }
}

/// A client that writes its whole (too large) body before it reads, as most
/// HTTP clients do, still gets the 413 that was answered before the body was
/// read, instead of a reset.
#[tokio::test]
async fn an_early_answer_reaches_a_client_that_writes_its_whole_body_first() {
    let server = TestServer::start(&["--body-limit", "1024"]);
    for framing in ["content-length", "chunked"] {
        // A small send buffer, so the body cannot all be queued in the kernel:
        // the client's writes finish only if the server reads them.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_send_buffer_size(64 * 1024).unwrap();
        let stream = socket.connect(server.addr().parse().unwrap()).await.unwrap();
        let mut connection = Connection::with(stream);
        let body = vec![b'x'; 16 * 1024 * 1024];
        let head = match framing {
            "chunked" => "POST /channels/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".to_owned(),
            _ => format!(
                "POST /channels/x/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            ),
        };
        connection.write(head.as_bytes()).await;
        if framing == "chunked" {
            for piece in body.chunks(64 * 1024) {
                let chunk = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
                connection.write(&chunk).await;
            }
            connection.write(b"0\r\n\r\n").await;
        } else {
            connection.write(&body).await;
        }
        expect_error_then_close(&mut connection, 413, "body_too_large", framing).await;
    }
}

/// An event stream asked for on a connection that already carried other
/// requests is the same close-delimited stream as on a fresh one, and
/// whatever the client sends after it is not answered.
#[tokio::test]
async fn a_stream_after_other_requests_is_close_delimited_and_ends_the_connection() {
    let server = TestServer::start(&[]);
    let mut connection = Connection::open(&server).await;
    connection.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(connection.answer().await.status, 200);
    // The stream, with a pipelined request behind it that must not be answered.
    connection
        .write(b"GET /channels/late/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let head_end = loop {
        if let Some(at) = connection.unread.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        connection.fill(connection.unread.len() + 1).await;
    };
    let head = String::from_utf8_lossy(&connection.unread[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    connection.unread.drain(..head_end);
    server.wait_subscribers("late", 1).await;
    let id = server.send_id("late", json!("hello")).await;
    let wanted = format!("id: {id}\ndata: ");
    while !String::from_utf8_lossy(&connection.unread).contains(&wanted) {
        connection.fill(connection.unread.len() + 1).await;
    }
    let text = String::from_utf8_lossy(&connection.unread).into_owned();
    assert!(text.starts_with("retry: "), "{text}");
    assert!(!text.contains("HTTP/1.1"), "the pipelined request was answered: {text}");
}

/// A subscriber that never reads is ended by the write timeout: it does not
/// keep its slot (or the server's memory) for as long as it likes.
#[tokio::test]
async fn a_subscriber_that_never_reads_is_let_go() {
    let server = TestServer::start(&["--write-timeout", "1", "--heartbeat", "1"]);
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stalled = socket.connect(server.addr().parse().unwrap()).await.unwrap();
    stalled
        .write_all(b"GET /channels/stall/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
        .await
        .unwrap();
    server.wait_subscribers("stall", 1).await;
    // Enough to fill both sides' socket buffers many times over.
    let padding = "p".repeat(16 * 1024);
    let client = server.client().clone();
    for i in 0..400 {
        let body = json!({"name": "bulk", "contents": {"i": i, "pad": padding}});
        post_message(&client, &server.url("/channels/stall/messages"), &body, "bulk send").await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let subscribers = server.channel_info("stall").await["subscribers"].as_u64().unwrap();
        if subscribers == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the stalled subscriber is still counted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The client's socket was never read, yet the server has let it go.
    let mut sink = vec![0u8; 1 << 20];
    let mut total = 0;
    loop {
        match tokio::time::timeout(READ, stalled.read(&mut sink)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => total += n,
            Err(_) => panic!("the stalled stream was not closed ({total} bytes read)"),
        }
    }
}

/// Opens a raw event stream on `channel`; what the server first answered on
/// it (up to the preamble or the end of a refusal).
async fn open_raw_stream(server: &TestServer, channel: &str, extra_headers: &str) -> (Connection, String) {
    let mut connection = Connection::open(server).await;
    connection
        .write(
            format!("GET /channels/{channel}/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n{extra_headers}\r\n")
                .as_bytes(),
        )
        .await;
    loop {
        let text = String::from_utf8_lossy(&connection.unread).into_owned();
        if text.contains(": ssehub stream open\n\n") && !text.contains("event: failure")
            || text.contains("event: failure") && text.ends_with("\n\n")
        {
            return (connection, text);
        }
        connection.fill(connection.unread.len() + 1).await;
    }
}

/// The `code` of the failure frame in a refused stream's text.
fn failure_code(text: &str) -> Option<String> {
    let data = text.split("event: failure\ndata: ").nth(1)?.lines().next()?;
    let body: serde_json::Value = serde_json::from_str(data).ok()?;
    validate(SchemaKind::Failure, &body);
    Some(body["code"].as_str()?.to_owned())
}

/// With few files to open, the server sizes its limits from them: streams
/// past the subscriber limit get `too_many_subscribers`, connections past the
/// connection limit get `503 too_many_connections`, and it stays reachable
/// for health checks and sends throughout, without flooding its log.
#[tokio::test]
async fn a_small_open_file_limit_keeps_the_server_reachable() {
    // 256 files: 192 connections, 173 of them streams (see src/capacity.rs).
    let server = TestServer::start_with_files(256, &[]);
    let mut streams = Vec::new();
    let mut refused = 0;
    for _ in 0..180 {
        let (connection, text) = open_raw_stream(&server, "crowded", "").await;
        match failure_code(&text) {
            None => streams.push(connection),
            Some(code) => {
                assert_eq!(code, "too_many_subscribers", "{text}");
                refused += 1;
            }
        }
    }
    assert_eq!((streams.len(), refused), (173, 7));
    let (status, health) = server.get_json("/healthz").await;
    assert_eq!(status, 200, "{health}");
    server.send_id("crowded", json!("still sending")).await;

    // Connections up to the limit are kept; the next ones are refused.
    let mut idle = Vec::new();
    for _ in 0..18 {
        let mut connection = Connection::open(&server).await;
        connection.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(connection.answer().await.status, 200);
        idle.push(connection);
    }
    for _ in 0..5 {
        let mut connection = Connection::open(&server).await;
        let answer = connection.answer().await;
        assert_eq!(answer.status, 503, "{}", answer.body);
        validate(SchemaKind::Error, &answer.body);
        assert_eq!(answer.body["error"]["code"], "too_many_connections");
        assert_eq!(answer.header("retry-after"), Some("1"));
    }
    drop(idle);
    drop(streams);
    // Places come back as connections close.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let reachable = tokio::time::timeout(
            Duration::from_secs(1),
            server.client().get(server.url("/healthz")).send(),
        )
        .await;
        if matches!(reachable, Ok(Ok(ref response)) if response.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the server did not get its places back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = server.stderr();
    assert!(!log.contains("Too many open files"), "{log}");
    assert!(log.matches("connections refused").count() <= 1, "{log}");
}

/// Each client address has its own bounds; behind a trusted proxy, the
/// address it names is the client, and from anyone else the header is ignored.
#[tokio::test]
async fn each_client_has_its_own_bounds_and_proxies_name_clients_only_when_trusted() {
    let limits = ["--max-streams-per-client", "2", "--max-requests-per-client", "1"];
    let server = TestServer::start(&limits);
    let (_one, _) = open_raw_stream(&server, "mine", "").await;
    let (_two, _) = open_raw_stream(&server, "mine", "").await;
    let (_, text) = open_raw_stream(&server, "mine", "").await;
    assert_eq!(failure_code(&text).as_deref(), Some("too_many_requests"), "{text}");
    // Without Accept: text/event-stream, the same refusal as JSON.
    let response = server.get("/channels/mine/events", NONE).await;
    let error = expect_error(response, 429, "too_many_requests").await;
    assert!(error["message"].as_str().unwrap().contains("streams"), "{error}");

    // A request whose body is still arriving is in flight: a second one waits its turn.
    let mut slow = Connection::open(&server).await;
    slow.write(b"POST /channels/mine/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await;
    let mut other = Connection::open(&server).await;
    let answer = loop {
        other.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let answer = other.answer().await;
        if answer.status == 429 {
            break answer;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    validate(SchemaKind::Error, &answer.body);
    assert_eq!(answer.header("retry-after"), Some("1"));
    drop(slow);

    // Forwarding headers: ignored from an untrusted peer, believed from a trusted one.
    let untrusted = TestServer::start(&["--max-streams-per-client", "1"]);
    let (_first, _) = open_raw_stream(&untrusted, "p", "X-Forwarded-For: 203.0.113.1\r\n").await;
    let (_, text) = open_raw_stream(&untrusted, "p", "X-Forwarded-For: 203.0.113.2\r\n").await;
    assert_eq!(failure_code(&text).as_deref(), Some("too_many_requests"), "{text}");
    let trusted = TestServer::start(&["--max-streams-per-client", "1", "--trusted-proxy", "127.0.0.0/8"]);
    let (_a, text) = open_raw_stream(&trusted, "p", "X-Forwarded-For: 203.0.113.1\r\n").await;
    assert_eq!(failure_code(&text), None, "{text}");
    let (_b, text) = open_raw_stream(&trusted, "p", "Forwarded: for=203.0.113.2\r\n").await;
    assert_eq!(failure_code(&text), None, "{text}");
    let (_, text) = open_raw_stream(&trusted, "p", "X-Forwarded-For: 203.0.113.1\r\n").await;
    assert_eq!(failure_code(&text).as_deref(), Some("too_many_requests"), "{text}");
}

/// Connections that come and go, in every way, leave nothing behind: open
/// files come back to where they were, and memory stays within a bound.
#[tokio::test]
async fn churn_leaves_nothing_behind() {
    let server = TestServer::start(&["--request-timeout", "1"]);
    let open_files = || std::fs::read_dir(format!("/proc/{}/fd", server.pid())).unwrap().count();
    let resident = || -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", server.pid())).unwrap();
        let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    // Warm up once (allocator pools, the topic), then measure.
    let round = |n: usize| {
        let server = &server;
        async move {
            for i in 0..n {
                let mut connection = Connection::open(server).await;
                match i % 4 {
                    0 => {
                        connection
                            .write(b"GET /channels/churn/events HTTP/1.1\r\nHost: x\r\n\r\n")
                            .await;
                        connection.fill(1).await;
                    }
                    1 => {
                        let body = json!({"name": "n", "contents": i}).to_string();
                        let request = format!(
                            "POST /channels/churn/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        connection.write(request.as_bytes()).await;
                        assert_eq!(connection.answer().await.status, 201);
                    }
                    // Gone mid-head, and gone mid-body.
                    2 => connection.write(b"GET /healthz HTTP/1.1\r\nHo").await,
                    _ => {
                        connection
                            .write(b"POST /channels/churn/messages HTTP/1.1\r\nContent-Length: 50\r\n\r\n{")
                            .await
                    }
                }
            }
        }
    };
    round(400).await;
    // Settled: no stream left, and the open files unchanged over a second.
    // The check asks on a connection of its own that it closes, so that no
    // pooled connection of the test's is counted.
    let settle = || async {
        let deadline = Instant::now() + Duration::from_secs(10);
        let (mut last, mut same) = (open_files(), 0);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut check = Connection::open(&server).await;
            check
                .write(b"GET /channels/churn HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let streams = check.answer().await.body["subscribers"].as_u64();
            assert!(check.closed().await);
            drop(check);
            let now = open_files();
            same = if now == last { same + 1 } else { 0 };
            last = now;
            if same >= 5 && streams == Some(0) {
                break;
            }
        }
        last
    };
    let (files, memory) = (settle().await, resident());
    round(2000).await;
    let (files_after, memory_after) = (settle().await, resident());
    assert!(files_after <= files, "open files {files} -> {files_after}");
    assert!(
        memory_after < memory + 8 * 1024,
        "resident memory {memory} KB -> {memory_after} KB after 2,000 more connections"
    );
}
