//! A publisher's connection, byte by byte: keep-alive sends, a body that
//! arrives in pieces, other requests on the same connection, pipelining,
//! `Expect: 100-continue`, chunked bodies and a client that goes away mid-body.
//! Every answer is read off the socket and checked as HTTP/1.1 and against the
//! schemas.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use ssehub::schema::SchemaKind;

fn send_request(channel: &str, body: &str) -> String {
    format!(
        "POST /channels/{channel}/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn body(i: u64) -> String {
    json!({"name": "n", "contents": {"i": i}}).to_string()
}

/// A 201 whose body is a send response for `channel`; its id.
fn created(answer: &Answer, channel: &str) -> String {
    assert_eq!(answer.status, 201, "{}", answer.body);
    assert!(answer.header("date").is_some(), "{:?}", answer.headers);
    assert!(
        answer.header("content-type").unwrap().starts_with("application/json"),
        "{:?}",
        answer.headers
    );
    validate(SchemaKind::SendResponse, &answer.body);
    assert_eq!(answer.body["channel"], channel);
    answer.body["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn sends_on_one_keep_alive_connection_are_answered_in_turn() {
    let server = TestServer::start(&[]);
    let mut connection = Connection::open(&server).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let mut request = send_request("kept", &body(i));
        if i % 2 == 1 {
            // What many HTTP/1.1 clients say although it is the default.
            request = request.replacen("Host: x\r\n", "Host: x\r\nConnection: keep-alive\r\n", 1);
        }
        connection.write(request.as_bytes()).await;
        ids.push(created(&connection.answer().await, "kept"));
    }
    let seqs: Vec<u64> = ids.iter().map(|id| seq_of(id)).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    assert_eq!(server.channel_info("kept").await["last_id"], ids[19].as_str());
}

#[tokio::test]
async fn a_send_whose_body_arrives_in_pieces_is_answered() {
    let server = TestServer::start(&[]);
    let mut connection = Connection::open(&server).await;
    let request = send_request("slow", &body(1));
    let (head, rest) = request.split_at(request.find("\r\n\r\n").unwrap() + 4);
    let (first, second) = rest.split_at(rest.len() / 2);
    connection.write(head.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    connection.write(first.as_bytes()).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    connection.write(second.as_bytes()).await;
    created(&connection.answer().await, "slow");
}

#[tokio::test]
async fn other_requests_follow_sends_on_the_same_connection() {
    let server = TestServer::start(&[]);
    let mut connection = Connection::open(&server).await;
    connection.write(send_request("mixed", &body(1)).as_bytes()).await;
    let id = created(&connection.answer().await, "mixed");
    connection
        .write(b"GET /channels/mixed HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let info = connection.answer().await;
    assert_eq!(info.status, 200);
    validate(SchemaKind::ChannelInfo, &info.body);
    assert_eq!(info.body["last_id"], id.as_str());
    // Back to sends after a request for warp's routes.
    connection.write(send_request("mixed", &body(2)).as_bytes()).await;
    created(&connection.answer().await, "mixed");
}

#[tokio::test]
async fn bad_sends_on_a_kept_connection_get_their_error_and_the_connection_stays() {
    let server = TestServer::start(&[]);
    let mut connection = Connection::open(&server).await;
    for (body, status, code) in [
        ("{", 400, "invalid_json"),
        (r#"{"name":"client.x","contents":1}"#, 400, "schema_violation"),
    ] {
        connection.write(send_request("bad", body).as_bytes()).await;
        let answer = connection.answer().await;
        assert_eq!(answer.status, status, "{}", answer.body);
        validate(SchemaKind::Error, &answer.body);
        assert_eq!(answer.body["error"]["code"], code);
    }
    let plain =
        "POST /channels/bad/messages HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 1\r\n\r\nx";
    connection.write(plain.as_bytes()).await;
    assert_eq!(connection.answer().await.status, 415);
    connection.write(send_request("bad%20name", &body(1)).as_bytes()).await;
    assert_eq!(connection.answer().await.status, 400);
    connection.write(send_request("bad", &body(1)).as_bytes()).await;
    created(&connection.answer().await, "bad");
}

#[tokio::test]
async fn pipelined_sends_are_answered_in_order() {
    let server = TestServer::start(&[]);
    let mut connection = Connection::open(&server).await;
    let requests: String = (0..5).map(|i| send_request("piped", &body(i))).collect();
    connection.write(requests.as_bytes()).await;
    for expected in 1..=5 {
        let id = created(&connection.answer().await, "piped");
        assert_eq!(seq_of(&id), expected);
    }
}

#[tokio::test]
async fn a_send_expecting_100_continue_gets_it_then_its_answer() {
    let server = TestServer::start(&[]);
    let mut connection = Connection::open(&server).await;
    let body = body(1);
    let head = format!(
        "POST /channels/continued/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    connection.write(head.as_bytes()).await;
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    connection.fill(interim.len()).await;
    assert_eq!(&connection.unread[..interim.len()], interim);
    connection.unread.drain(..interim.len());
    connection.write(body.as_bytes()).await;
    created(&connection.answer().await, "continued");
}

#[tokio::test]
async fn a_chunked_send_is_answered() {
    let server = TestServer::start(&[]);
    let mut connection = Connection::open(&server).await;
    let body = body(1);
    let request = format!(
        "POST /channels/chunked/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    connection.write(request.as_bytes()).await;
    created(&connection.answer().await, "chunked");
}

#[tokio::test]
async fn a_send_asking_to_close_is_answered_then_closed() {
    let server = TestServer::start(&[]);
    let mut connection = Connection::open(&server).await;
    let request = send_request("closing", &body(1)).replacen("Host: x\r\n", "Host: x\r\nConnection: close\r\n", 1);
    connection.write(request.as_bytes()).await;
    created(&connection.answer().await, "closing");
    assert!(connection.closed().await, "the connection stayed open");
}

#[tokio::test]
async fn a_publisher_gone_mid_body_stores_nothing_and_the_server_goes_on() {
    let server = TestServer::start(&[]);
    let mut connection = Connection::open(&server).await;
    let request = send_request("cut", &body(1));
    connection.write(&request.as_bytes()[..request.len() - 5]).await;
    drop(connection);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.channel_info("cut").await["last_id"], Value::Null);
    let mut connection = Connection::open(&server).await;
    connection.write(send_request("cut", &body(2)).as_bytes()).await;
    let id = created(&connection.answer().await, "cut");
    assert_eq!(seq_of(&id), 1);
}

#[tokio::test]
async fn a_declared_body_over_the_limit_is_413_before_it_is_sent() {
    let server = TestServer::start(&["--body-limit", "100"]);
    let mut connection = Connection::open(&server).await;
    connection
        .write(b"POST /channels/big/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n")
        .await;
    let answer = connection.answer().await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    validate(SchemaKind::Error, &answer.body);
}

#[tokio::test]
async fn an_allowed_origin_gets_cors_headers_on_a_kept_connection() {
    let server = TestServer::start(&["--cors-origin", "https://app.example"]);
    let mut connection = Connection::open(&server).await;
    for _ in 0..2 {
        let request =
            send_request("cors", &body(1)).replacen("Host: x\r\n", "Host: x\r\nOrigin: https://app.example\r\n", 1);
        connection.write(request.as_bytes()).await;
        let answer = connection.answer().await;
        created(&answer, "cors");
        assert_eq!(
            answer.header("access-control-allow-origin"),
            Some("https://app.example")
        );
    }
}
