//! Path segments (issue 12): a `{channel}` or `{public_token}` segment is percent-decoded once
//! before it is checked, on every route and whichever way the server reads the request, as
//! generated OpenAPI clients encode `:` and `@`; what decodes to a character outside the
//! pattern, an invalid escape and a double encoding are still refused.

mod clients_support;
// Path decoding is the same on every store: the memory store is enough.
#[allow(unused_imports)]
mod common;

use clients_support::*;
use common::*;
use reqwest::Method;
use serde_json::{json, Value};
use ssehub::schema::SchemaKind;

/// Segments that must not name a channel or a client once decoded.
const REFUSED: &[&str] = &[
    "a%2Fb", "a%00b", "a%0Ab", "a%7Fb", "a%zzb", "a%3", "a%253Ab", "%FF", "%2Eb",
];

/// A request with the publisher key: status and JSON body (`null` for none).
async fn keyed(server: &TestServer, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
    let (status, _, text) = parts(call(server, method, path, Some(KEY), body).await).await;
    let value = if text.is_empty() {
        Value::Null
    } else {
        parse_json(&text)
    };
    (status.as_u16(), value)
}

#[tokio::test]
async fn encoded_segments_name_the_decoded_channel_and_client_on_every_route() {
    let server = TestServer::start(KEYED);
    let channel = "ops%3Aalerts";
    let registration = json!({"public_token": "bob@example.com"});
    let (status, registered) = keyed(
        &server,
        Method::POST,
        "/channels/ops%3Aalerts/clients",
        Some(&registration),
    )
    .await;
    assert_eq!(status, 201, "{registered}");
    assert_eq!(registered["client"]["channel"], "ops:alerts");

    let mut encoded = open_anon(&server, channel, NONE).await;
    // The same channel, named plainly.
    let mut plain = open_anon(&server, "ops:alerts", NONE).await;
    server.wait_subscribers("ops:alerts", 2).await;
    let body = json!({"name": "n", "contents": 1});
    let (status, sent) = keyed(&server, Method::POST, "/channels/ops%3Aalerts/messages", Some(&body)).await;
    assert_eq!(status, 201, "{sent}");
    assert_eq!(sent["channel"], "ops:alerts");
    for stream in [&mut encoded, &mut plain] {
        let envelope = expect_id(stream, sent["id"].as_str().unwrap()).await;
        assert_eq!(envelope["channel"], "ops:alerts");
    }

    let (status, info) = keyed(&server, Method::GET, "/channels/ops%3Aalerts", None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        (&info["channel"], &info["history_size"]),
        (&json!("ops:alerts"), &json!(1))
    );
    assert_eq!(info["clients_registered"], 1);
    let (status, list) = keyed(&server, Method::GET, "/channels/ops%3Aalerts/clients", None).await;
    assert_eq!(status, 200, "{list}");
    validate(SchemaKind::ClientList, &list);
    assert_eq!(list["clients"][0]["public_token"], "bob@example.com");
    let path = "/channels/ops%3Aalerts/clients/bob%40example.com";
    let (status, one) = keyed(&server, Method::GET, path, None).await;
    assert_eq!(
        (status, &one["public_token"]),
        (200, &json!("bob@example.com")),
        "{one}"
    );
    let (status, _) = keyed(&server, Method::DELETE, path, None).await;
    assert_eq!(status, 204);
    expect_no_client(&server, "ops:alerts", "bob@example.com").await;
}

#[tokio::test]
async fn segments_that_decode_to_nothing_valid_are_refused() {
    let server = TestServer::start(KEYED);
    reg(&server, "c", "alice", None).await;
    let body = json!({"name": "n", "contents": 1});
    for segment in REFUSED {
        let what = format!("channel segment {segment:?}");
        let send = send_as(&server, segment, Some(KEY), &body).await;
        let error = expect_error(send, 400, "invalid_channel").await;
        assert!(
            error["message"].as_str().unwrap().contains(segment),
            "{what}: quoted as sent: {error}"
        );
        for path in [
            format!("/channels/{segment}"),
            format!("/channels/{segment}/clients"),
            format!("/channels/{segment}/clients/alice"),
        ] {
            expect_error(server.get(&path, NONE).await, 400, "invalid_channel").await;
        }
        expect_error(events_json(&server, segment, "", NONE).await, 400, "invalid_channel").await;
        expect_stream_failure(&server, segment, "", NONE, "invalid_channel").await;

        let what = format!("public token segment {segment:?}");
        let response = get_client_raw(&server, "c", segment, None).await;
        expect_error(response, 404, "unknown_client").await;
        let response = delete_client(&server, "c", segment, Some(KEY)).await;
        let (status, _, text) = parts(response).await;
        assert_eq!(status, 404, "{what}: {text}");
    }
    assert_eq!(server.channel_info("c").await["clients_registered"], 1);
}
