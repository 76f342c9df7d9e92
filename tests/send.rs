//! POST /channels/{channel}/messages and the generic error answers (404, 405).

mod common;

use bytes::Bytes;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use ssehub::schema::SchemaKind;
use std::collections::BTreeSet;

/// A send body of exactly `len` bytes (`len` >= 26).
fn body_of_len(len: usize) -> String {
    let prefix = r#"{"name":"n","contents":""#;
    let body = format!("{prefix}{}\"}}", "x".repeat(len - prefix.len() - 2));
    assert_eq!(body.len(), len);
    serde_json::from_str::<Value>(&body).expect("valid JSON");
    body
}

/// A chunked request body (no Content-Length) made of `chunks`.
fn chunked(chunks: Vec<String>) -> reqwest::Body {
    let items: Vec<Result<Bytes, std::io::Error>> = chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
    reqwest::Body::wrap_stream(futures::stream::iter(items))
}

store_tests! {
    async fn send_returns_201_with_id_channel_time(backend) {
        let server = backend.start(&[]);
        let first = server.send("orders", "order.created", json!({"id": 7})).await;
        let second = server.send("orders", "order.paid", json!("x")).await;
        let first_id = first["id"].as_str().unwrap();
        let second_id = second["id"].as_str().unwrap();
        assert_eq!(seq_of(first_id), 1);
        assert_eq!(seq_of(second_id), 2);
        assert_eq!(epoch_of(first_id), epoch_of(second_id));
        assert!(first["time"].as_str().unwrap() <= second["time"].as_str().unwrap());
    }

    async fn send_response_is_json_201(backend) {
        let server = backend.start(&[]);
        let response = server
            .post_raw("c", Some("application/json"), r#"{"name":"a","contents":1}"#)
            .await;
        assert_eq!(response.status(), 201);
        assert!(
            header(response.headers(), "content-type").starts_with("application/json"),
            "{:?}",
            response.headers()
        );
    }

    async fn any_json_contents_including_null(backend) {
        let server = backend.start(&[]);
        for contents in [
            json!(null),
            json!(0),
            json!(""),
            json!([1, {"a": [null]}]),
            json!({"deep": {"er": {"est": 1}}}),
        ] {
            server.send("any", "kind:a/b.c-d_e", contents).await;
        }
    }

    async fn content_type_parameters_are_allowed(backend) {
        let server = backend.start(&[]);
        let response = server
            .post_raw(
                "c",
                Some("application/json; charset=utf-8"),
                r#"{"name":"a","contents":1}"#,
            )
            .await;
        assert_eq!(response.status(), 201);
        validate(SchemaKind::SendResponse, &json_body(response).await);
    }

    async fn wrong_or_missing_content_type_is_415(backend) {
        let server = backend.start(&[]);
        let body = r#"{"name":"a","contents":1}"#;
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("application/jsonx"),
            None,
        ] {
            let response = server.post_raw("c", content_type, body).await;
            expect_error(response, 415, "unsupported_media_type").await;
        }
        assert_eq!(
            server.channel_info("c").await["last_id"],
            Value::Null,
            "nothing was stored"
        );
    }

    async fn body_limit_with_content_length(backend) {
        let server = backend.start(&["--body-limit", "100"]);
        let response = server.post_raw("c", Some("application/json"), body_of_len(100)).await;
        assert_eq!(response.status(), 201, "a body of exactly the limit is accepted");
        let response = server.post_raw("c", Some("application/json"), body_of_len(101)).await;
        expect_error(response, 413, "body_too_large").await;
        let response = server.post_raw("c", Some("application/json"), body_of_len(5000)).await;
        expect_error(response, 413, "body_too_large").await;
    }

    async fn default_body_limit_is_65536(backend) {
        let server = backend.start(&[]);
        let response = server.post_raw("c", Some("application/json"), body_of_len(65536)).await;
        assert_eq!(response.status(), 201);
        let response = server.post_raw("c", Some("application/json"), body_of_len(65537)).await;
        expect_error(response, 413, "body_too_large").await;
    }

    async fn body_limit_with_chunked_body(backend) {
        let server = backend.start(&["--body-limit", "100"]);
        // Under the limit, chunked: accepted.
        let body = body_of_len(100);
        let parts = vec![body[..30].to_owned(), body[30..70].to_owned(), body[70..].to_owned()];
        let response = server.post_raw("c", Some("application/json"), chunked(parts)).await;
        assert_eq!(response.status(), 201, "a chunked body within the limit is accepted");
        // Over the limit, chunked: counted while read.
        let body = body_of_len(300);
        let parts = vec![
            body[..100].to_owned(),
            body[100..200].to_owned(),
            body[200..].to_owned(),
        ];
        let response = server.post_raw("c", Some("application/json"), chunked(parts)).await;
        expect_error(response, 413, "body_too_large").await;
        assert_eq!(
            server.channel_info("c").await["history_size"],
            1,
            "only the first body was stored"
        );
    }
}

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let server = TestServer::start(&[]);
    for body in [
        r#"{"name": "a", "contents": "#,
        "",
        "not json",
        r#"{"name":"a","contents":1} trailing"#,
    ] {
        let response = server.post_raw("c", Some("application/json"), body).await;
        expect_error(response, 400, "invalid_json").await;
    }
}

/// Posts `body` and checks a 400 schema_violation whose details name exactly the
/// `expected` pointers (one entry per location), which are also what the schema produces.
async fn expect_violation(server: &TestServer, body: Value, expected: &[&str]) {
    let expected: BTreeSet<String> = expected.iter().map(|p| (*p).to_owned()).collect();
    assert_eq!(
        violation_pointers(SchemaKind::SendRequest, &body),
        expected,
        "the schema itself reports these locations for {body}"
    );
    let response = server.post_raw("c", Some("application/json"), body.to_string()).await;
    let error = expect_error(response, 400, "schema_violation").await;
    let pointers: Vec<String> = error["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["pointer"].as_str().unwrap().to_owned())
        .collect();
    let unique: BTreeSet<String> = pointers.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        pointers.len(),
        "one details entry per failing location, got {pointers:?} for {body}"
    );
    assert_eq!(unique, expected, "details pointers for {body}: {error}");
    for detail in error["details"].as_array().unwrap() {
        assert!(
            !detail["message"].as_str().unwrap().is_empty(),
            "detail message: {detail}"
        );
    }
}

store_tests! {
    async fn schema_violation_for_a_bad_name_points_at_name(backend) {
        let server = backend.start(&[]);
        expect_violation(&server, json!({"name": "bad name!", "contents": 1}), &["/name"]).await;
        expect_violation(&server, json!({"name": "", "contents": 1}), &["/name"]).await;
        expect_violation(&server, json!({"name": "x".repeat(129), "contents": 1}), &["/name"]).await;
        assert_eq!(server.channel_info("c").await["history_size"], 0, "nothing stored");
    }
}

#[tokio::test]
async fn schema_violation_for_an_unknown_field_points_at_the_body() {
    let server = TestServer::start(&[]);
    // The object itself fails additionalProperties.
    expect_violation(&server, json!({"name": "a", "contents": 1, "extra": true}), &[""]).await;
}

#[tokio::test]
async fn schema_violation_for_a_missing_field_points_at_the_body() {
    let server = TestServer::start(&[]);
    expect_violation(&server, json!({"name": "a"}), &[""]).await;
    expect_violation(&server, json!({"contents": 1}), &[""]).await;
    expect_violation(&server, json!({}), &[""]).await;
}

#[tokio::test]
async fn schema_violation_for_a_body_that_is_not_an_object() {
    let server = TestServer::start(&[]);
    expect_violation(&server, json!([1, 2]), &[""]).await;
    expect_violation(&server, json!("text"), &[""]).await;
    expect_violation(&server, json!(null), &[""]).await;
}

#[tokio::test]
async fn schema_violation_lists_each_failing_location_once() {
    let server = TestServer::start(&[]);
    // Two locations at once: one entry each.
    expect_violation(&server, json!({"name": "bad name"}), &["", "/name"]).await;
    // Two failures at one location (missing field and unknown field): one entry.
    expect_violation(&server, json!({"name": "a", "extra": true}), &[""]).await;
    // A name of the wrong type.
    expect_violation(&server, json!({"name": 5, "contents": 1}), &["/name"]).await;
}

store_tests! {
    async fn invalid_channel_is_400(backend) {
        let server = backend.start(&[]);
        let body = r#"{"name":"a","contents":1}"#;
        let too_long = "x".repeat(129);
        for channel in [
            ".dot-first",
            ":colon-first",
            "a%20b",
            "%C3%A9t%C3%A9",
            too_long.as_str(),
        ] {
            let response = server.post_raw(channel, Some("application/json"), body).await;
            expect_error(response, 400, "invalid_channel").await;
        }
        let longest = "x".repeat(128);
        server.send(&longest, "a", json!(1)).await;
    }
}

#[tokio::test]
async fn unknown_routes_are_404_not_found() {
    let server = TestServer::start(&[]);
    for path in [
        "/nope",
        "/no-such-file.txt",
        "/channels",
        "/channels/c/events/extra",
        "/channels/c/unknown",
    ] {
        let response = server.get(path, NONE).await;
        expect_error(response, 404, "not_found").await;
    }
    let response = server
        .request(Method::POST, "/nope", Some("application/json"), "{}")
        .await;
    expect_error(response, 404, "not_found").await;
}

#[tokio::test]
async fn wrong_methods_are_405_method_not_allowed() {
    let server = TestServer::start(&[]);
    let body = r#"{"name":"a","contents":1}"#;
    for (method, path) in [
        (Method::PUT, "/channels/c/messages"),
        (Method::DELETE, "/channels/c/messages"),
        (Method::PATCH, "/channels/c/messages"),
        (Method::POST, "/channels/c/events"),
        (Method::PUT, "/channels/c/events"),
        (Method::POST, "/channels/c"),
        (Method::DELETE, "/channels/c"),
        (Method::POST, "/healthz"),
    ] {
        let response = server
            .request(method.clone(), path, Some("application/json"), body)
            .await;
        let error = expect_error(response, 405, "method_not_allowed").await;
        assert!(!error["message"].as_str().unwrap().is_empty(), "{method} {path}");
    }
}

#[tokio::test]
async fn get_on_the_messages_route_is_405() {
    let server = TestServer::start(&[]);
    let response = server.get("/channels/c/messages", NONE).await;
    expect_error(response, 405, "method_not_allowed").await;
}

store_tests! {
    /// `contents` is delivered exactly as it was sent, numbers and string escapes included
    /// (a JSON library would turn 123456789012345678901234567890 into 1.2345678901234568e+29,
    /// `-0` into `-0.0` and `\u00e9` into `é`), minus insignificant whitespace: live, and
    /// replayed from the store after a resume.
    async fn contents_arrive_as_sent(backend) {
        let server = backend.start(&[]);
        let before = server.send_id("exact", json!("before")).await;
        let mut live = server.subscribe("exact", "", SSE).await;
        let sent = "{\n  \"big\": 123456789012345678901234567890,\r\n  \"zero\": -0,\t\"e\": 1.50E+3,\n  \"s\": \"caf\\u00e9 \\/ \\ud83d\\ude00 x  y\"\n}";
        let compact = r#"{"big":123456789012345678901234567890,"zero":-0,"e":1.50E+3,"s":"caf\u00e9 \/ \ud83d\ude00 x  y"}"#;
        let body = format!("{{\"name\":\"n\",\"contents\":{sent}}}");
        let response = server.post_raw("exact", Some("application/json"), body).await;
        let status = response.status();
        let answer = json_body(response).await;
        assert_eq!(status, 201, "{answer}");
        let id = answer["id"].as_str().unwrap();
        let mut replayed = server.subscribe("exact", "", &[("accept", "text/event-stream"), ("last-event-id", &before)]).await;
        for (what, stream) in [("live", &mut live), ("replayed", &mut replayed)] {
            let frame = stream.expect_non_heartbeat(READ).await;
            let envelope = frame.envelope();
            assert_eq!(envelope["id"], id, "{what}");
            let data = frame.data.unwrap();
            assert!(data.contains(&format!(",\"contents\":{compact},")), "{what}: {data}");
        }
    }
}
