//! GET /channels/{channel} and GET /healthz.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use ssehub::schema::SchemaKind;

store_tests! {
    async fn never_used_channel_has_nulls_and_zeros(backend) {
        let server = backend.start(&[]);
        let info = server.channel_info("fresh").await;
        assert_eq!(info["channel"], "fresh");
        assert_eq!(info["first_id"], Value::Null);
        assert_eq!(info["last_id"], Value::Null);
        assert_eq!(info["history_size"], 0);
        assert_eq!(info["subscribers"], 0);
    }

    async fn channel_info_after_sends(backend) {
        let server = backend.start(&[]);
        let first = server.send_id("info", json!(1)).await;
        let info = server.channel_info("info").await;
        assert_eq!(info["first_id"], first);
        assert_eq!(info["last_id"], first);
        assert_eq!(info["history_size"], 1);
        server.send_id("info", json!(2)).await;
        let third = server.send_id("info", json!(3)).await;
        let info = server.channel_info("info").await;
        assert_eq!(info["first_id"], first);
        assert_eq!(info["last_id"], third);
        assert_eq!(info["history_size"], 3);
        assert_eq!(info["subscribers"], 0);
        // Other channels are untouched.
        assert_eq!(server.channel_info("other").await["history_size"], 0);
    }

    async fn channel_info_respects_history_size(backend) {
        let server = backend.start(&["--history-size", "5"]);
        let mut ids = Vec::new();
        for i in 0..8 {
            ids.push(server.send_id("bounded", json!(i)).await);
        }
        let info = server.channel_info("bounded").await;
        assert_eq!(info["first_id"], ids[3]);
        assert_eq!(info["last_id"], ids[7]);
        assert_eq!(info["history_size"], 5);
    }

    async fn subscriber_count_follows_open_streams(backend) {
        let server = backend.start(&["--heartbeat", "1"]);
        let first = server.subscribe("watched", "", SSE).await;
        server.wait_subscribers("watched", 1).await;
        let second = server.subscribe("watched", "", SSE).await;
        server.wait_subscribers("watched", 2).await;
        assert_eq!(server.channel_info("unwatched").await["subscribers"], 0);
        drop(first);
        server.wait_subscribers("watched", 1).await;
        drop(second);
        server.wait_subscribers("watched", 0).await;
    }

    async fn subscriber_count_drops_after_a_timeout(backend) {
        let server = backend.start(&[]);
        let mut stream = server.subscribe("brief", "?timeout=1", SSE).await;
        server.wait_subscribers("brief", 1).await;
        let frame = stream.expect_frame(Duration::from_secs(4)).await;
        assert_eq!(frame.event.as_deref(), Some("timeout"));
        stream.expect_end(READ).await;
        server.wait_subscribers("brief", 0).await;
    }
}

#[tokio::test]
async fn channel_info_for_an_invalid_channel_is_400() {
    let server = TestServer::start(&[]);
    let response = server.get("/channels/.bad", NONE).await;
    expect_error(response, 400, "invalid_channel").await;
}

async fn health(server: &TestServer) -> Value {
    let response = server.get("/healthz", NONE).await;
    assert_eq!(response.status(), 200);
    assert!(header(response.headers(), "content-type").starts_with("application/json"));
    let body = json_body(response).await;
    validate(SchemaKind::Health, &body);
    body
}

store_tests! {
    async fn healthz_is_ok(backend) {
        let server = backend.start(&[]);
        let body = health(&server).await;
        assert_eq!(body["status"], "ok");
        // The store's kind is the one the server was started with (`--store`).
        assert_eq!(body["store"], json!({"kind": backend.kind.name(), "status": "up"}));
        assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
        assert!(body["uptime_seconds"].as_u64().unwrap() < 60);
        assert_eq!(body["subscribers"], 0);
    }

    async fn healthz_counts_subscribers_of_every_channel(backend) {
        let server = backend.start(&[]);
        let _a = server.subscribe("one", "", SSE).await;
        let _b = server.subscribe("two", "", SSE).await;
        let end = tokio::time::Instant::now() + READ;
        loop {
            let body = health(&server).await;
            if body["subscribers"] == 2 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "healthz never counted 2 subscribers: {body}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

#[tokio::test]
async fn healthz_uptime_grows() {
    let server = TestServer::start(&[]);
    let before = health(&server).await["uptime_seconds"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let after = health(&server).await["uptime_seconds"].as_u64().unwrap();
    assert!(after > before, "uptime {before} then {after}");
}
