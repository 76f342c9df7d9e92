//! Stream timeouts, invalid queries, and subscriber errors as JSON or as failure frames.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use ssehub::schema::SchemaKind;

/// Reads the timeout frame (skipping heartbeats) and checks it, then the end of the body.
async fn expect_timeout(stream: &mut SseStream, channel: &str, seconds: u64, within: Duration) {
    let frame = stream.expect_non_heartbeat(within).await;
    let timeout = frame.control("timeout", SchemaKind::Timeout);
    assert_eq!(timeout, json!({"channel": channel, "seconds": seconds}));
    stream.expect_end(READ).await;
}

/// Reads a failure frame with `code` after the preamble, then the end of the body.
/// Returns the failure's message.
async fn expect_failure(stream: &mut SseStream, code: &str) -> String {
    assert_eq!(stream.status, 200, "failure frames come with 200");
    assert_eq!(stream.header("cache-control"), "no-store");
    stream.expect_preamble(2000).await;
    let frame = stream.expect_frame(READ).await;
    let failure = frame.control("failure", SchemaKind::Failure);
    assert_eq!(failure["code"], code, "failure {failure}");
    stream.expect_end(READ).await;
    failure["message"].as_str().unwrap().to_owned()
}

// The stream timers (timeout frame, default timeout, heartbeats vs timeout) are the hub's own
// and never store or read a message, so these wall-clock tests run once, on the default store;
// everything where messages flow (postponing, reconnecting after a timeout) runs on every store.

#[tokio::test]
async fn timeout_frame_then_the_body_ends() {
    let server = TestServer::start(&[]);
    let started = tokio::time::Instant::now();
    let mut stream = server.subscribe("t", "?timeout=1", SSE).await;
    expect_timeout(&mut stream, "t", 1, Duration::from_secs(4)).await;
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900),
        "timeout=1 ended after {elapsed:?}"
    );
    assert!(elapsed < Duration::from_secs(4), "{elapsed:?}");
}

#[tokio::test]
async fn default_timeout_comes_from_the_flag() {
    let server = TestServer::start(&["--timeout", "1"]);
    let mut stream = server.subscribe("t", "", SSE).await;
    expect_timeout(&mut stream, "t", 1, Duration::from_secs(4)).await;
}

#[tokio::test]
async fn heartbeats_do_not_postpone_the_timeout() {
    let server = TestServer::start(&["--heartbeat", "1"]);
    let started = tokio::time::Instant::now();
    let mut stream = server.subscribe("t", "?timeout=3", SSE).await;
    let mut heartbeats = 0;
    loop {
        let frame = stream.expect_frame(Duration::from_secs(6)).await;
        if frame.is_heartbeat() {
            heartbeats += 1;
            continue;
        }
        let timeout = frame.control("timeout", SchemaKind::Timeout);
        assert_eq!(timeout["seconds"], 3);
        break;
    }
    stream.expect_end(READ).await;
    let elapsed = started.elapsed();
    assert!(heartbeats >= 1, "heartbeats were sent meanwhile");
    assert!(
        elapsed >= Duration::from_millis(2800) && elapsed < Duration::from_millis(5000),
        "timeout=3 with heartbeats every second ended after {elapsed:?}"
    );
}

store_tests! {
    async fn messages_postpone_the_timeout(backend) {
        let server = backend.start(&[]);
        let mut stream = server.subscribe("t", "?timeout=2", SSE).await;
        // A message every 0.5 s for 3 s: more than the timeout in total, never 2 s idle.
        for i in 0..6 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            server.send("t", "tick", json!(i)).await;
            let envelope = stream.expect_message(READ).await;
            assert_eq!(envelope["contents"], i);
        }
        let last = tokio::time::Instant::now();
        expect_timeout(&mut stream, "t", 2, Duration::from_secs(5)).await;
        let idle = last.elapsed();
        assert!(
            idle >= Duration::from_millis(1800),
            "timeout came {idle:?} after the last message"
        );
    }

    async fn reconnecting_after_a_timeout_loses_nothing(backend) {
        let server = backend.start(&[]);
        let mut stream = server.subscribe("t", "?timeout=1", SSE).await;
        server.send("t", "n", json!(1)).await;
        server.send("t", "n", json!(2)).await;
        assert_eq!(stream.expect_message(READ).await["contents"], 1);
        let last = stream.expect_message(READ).await;
        assert_eq!(last["contents"], 2);
        expect_timeout(&mut stream, "t", 1, Duration::from_secs(4)).await;

        // Sent while nobody is connected.
        for i in 3..=5 {
            server.send("t", "n", json!(i)).await;
        }
        let last_id = last["id"].as_str().unwrap();
        let mut stream = server
            .subscribe(
                "t",
                "?timeout=1",
                &[("accept", "text/event-stream"), ("last-event-id", last_id)],
            )
            .await;
        for i in 3..=5 {
            assert_eq!(stream.expect_message(READ).await["contents"], i);
        }
        expect_timeout(&mut stream, "t", 1, Duration::from_secs(4)).await;
    }
}

#[tokio::test]
async fn invalid_timeouts_are_invalid_query() {
    let server = TestServer::start(&["--max-timeout", "10", "--timeout", "5"]);
    for timeout in ["0", "abc", "-1", "1.5", "", "01", "1234567", "11", "999999"] {
        let path = format!("/channels/t/events?timeout={timeout}");
        // Without an EventSource Accept header: the JSON error.
        let response = server.get(&path, NONE).await;
        let error = expect_error(response, 400, "invalid_query").await;
        for detail in error["details"].as_array().unwrap() {
            assert_eq!(detail["pointer"], "/query/timeout", "timeout={timeout}: {error}");
        }
        // With it: the preamble, a failure frame with the same code and message, the end.
        let mut stream = SseStream::connect(&server.url(&path), SSE).await;
        let message = expect_failure(&mut stream, "invalid_query").await;
        assert_eq!(
            message, error["message"],
            "timeout={timeout}: same message as the JSON error"
        );
    }
}

store_tests! {
    async fn timeout_at_max_timeout_is_accepted(backend) {
        let server = backend.start(&["--max-timeout", "10", "--timeout", "5"]);
        let mut stream = server.subscribe("t", "?timeout=10", SSE).await;
        server.send("t", "n", json!(1)).await;
        assert_eq!(stream.expect_message(READ).await["contents"], 1);
    }

    async fn default_max_timeout_is_3600(backend) {
        let server = backend.start(&[]);
        let mut stream = server.subscribe("t", "?timeout=3600", SSE).await;
        server.send("t", "n", json!(1)).await;
        assert_eq!(stream.expect_message(READ).await["contents"], 1);
        let response = server.get("/channels/t/events?timeout=3601", NONE).await;
        expect_error(response, 400, "invalid_query").await;
    }
}

#[tokio::test]
async fn invalid_channel_on_the_events_endpoint() {
    let server = TestServer::start(&[]);
    let too_long = "y".repeat(129);
    for channel in [".hidden", ":x", "a%20b", too_long.as_str()] {
        let path = format!("/channels/{channel}/events");
        let response = server.get(&path, NONE).await;
        let error = expect_error(response, 400, "invalid_channel").await;
        let mut stream = SseStream::connect(&server.url(&path), SSE).await;
        let message = expect_failure(&mut stream, "invalid_channel").await;
        assert_eq!(message, error["message"], "same message as the JSON error");
    }
}

#[tokio::test]
async fn accept_header_containing_event_stream_selects_the_failure_frame() {
    let server = TestServer::start(&[]);
    let path = "/channels/t/events?timeout=0";
    let mut stream = SseStream::connect(
        &server.url(path),
        &[("accept", "application/json, text/event-stream;q=0.9, */*")],
    )
    .await;
    expect_failure(&mut stream, "invalid_query").await;

    let response = server.get(path, &[("accept", "application/json")]).await;
    expect_error(response, 400, "invalid_query").await;
}
