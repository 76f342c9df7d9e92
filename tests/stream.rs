//! The SSE stream: headers, preamble, message frames, per-channel isolation, heartbeats.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn sse_parser_handles_split_and_packed_chunks() {
    let mut stream = canned_stream(parser_self_test_input());
    let preamble = stream.expect_frame(READ).await;
    assert_eq!(preamble.retry, Some(2000));
    assert_eq!(preamble.comments, vec!["ssehub stream open".to_owned()]);
    assert_eq!(preamble.raw, "retry: 2000\n: ssehub stream open\n\n");

    let split = stream.expect_frame(READ).await;
    assert_eq!(split.id.as_deref(), Some("a-1"));
    assert_eq!(split.data.as_deref(), Some("{\"x\":1}"));
    assert_eq!(split.raw, "id: a-1\ndata: {\"x\":1}\n\n");

    let heartbeat = stream.expect_frame(READ).await;
    assert!(heartbeat.is_heartbeat(), "{heartbeat:?}");

    let crlf = stream.expect_frame(READ).await;
    assert_eq!(crlf.event.as_deref(), Some("timeout"));
    assert_eq!(crlf.data.as_deref(), Some("{}"));

    let multi = stream.expect_frame(READ).await;
    assert_eq!(multi.data.as_deref(), Some("one\ntwo"));

    let no_space = stream.expect_frame(READ).await;
    assert_eq!(no_space.id.as_deref(), Some("a-3"));
    assert_eq!(no_space.data.as_deref(), Some("x"));

    stream.expect_end(READ).await;
}

store_tests! {
    async fn stream_headers_and_preamble(backend) {
        let server = backend.start(&[]);
        let mut stream = SseStream::connect(&server.url("/channels/news/events"), SSE).await;
        assert_eq!(stream.status, 200);
        assert!(
            stream.header("content-type").starts_with("text/event-stream"),
            "content-type {:?}",
            stream.header("content-type")
        );
        assert_eq!(stream.header("cache-control"), "no-store");
        assert_eq!(stream.header("x-accel-buffering"), "no");
        let date = stream.header("date");
        assert!(date.ends_with(" GMT") && date.len() == 29, "date {date:?}");
        // Flushed at once: it arrives although nothing was sent on the channel.
        stream.expect_preamble(2000).await;
        assert_eq!(
            stream.received,
            b"retry: 2000\n: ssehub stream open\n\n".to_vec(),
            "exact preamble bytes, nothing more"
        );
    }

    async fn preamble_without_accept_header_is_the_same(backend) {
        let server = backend.start(&[]);
        let mut stream = SseStream::connect(&server.url("/channels/news/events"), NONE).await;
        assert_eq!(stream.status, 200);
        assert_eq!(stream.header("cache-control"), "no-store");
        stream.expect_preamble(2000).await;
    }

    async fn retry_ms_flag_sets_the_retry_line(backend) {
        let server = backend.start(&["--retry-ms", "750"]);
        let mut stream = SseStream::connect(&server.url("/channels/news/events"), SSE).await;
        assert_eq!(stream.status, 200);
        stream.expect_preamble(750).await;
    }

    async fn messages_are_envelopes_with_increasing_ids(backend) {
        let server = backend.start(&[]);
        let mut stream = server.subscribe("room-1", "", SSE).await;
        let contents = [
            json!({"text": "hello", "n": [1, 2, 3], "nested": {"ok": true}}),
            json!("line one\nline two\r\nand a \"quote\" and unicode \u{e9}\u{2028}\u{1F600}"),
            json!(42.5),
            json!(null),
            json!([]),
            json!(false),
        ];
        let mut sent = Vec::new();
        for (i, value) in contents.iter().enumerate() {
            let response = server.send("room-1", &format!("kind.{i}/x:y"), value.clone()).await;
            sent.push(response);
        }
        let mut previous: Option<(String, u64)> = None;
        for (i, value) in contents.iter().enumerate() {
            let envelope = stream.expect_message(READ).await;
            assert_eq!(envelope["id"], sent[i]["id"], "frame id = id returned by the send");
            assert_eq!(
                envelope["time"], sent[i]["time"],
                "frame time = time returned by the send"
            );
            assert_eq!(envelope["channel"], "room-1");
            assert_eq!(envelope["name"], format!("kind.{i}/x:y"));
            assert_eq!(&envelope["contents"], value, "contents delivered as sent");
            let (epoch, seq) = parse_id(envelope["id"].as_str().unwrap());
            match &previous {
                None => assert_eq!(seq, 1, "a new channel starts at seq 1"),
                Some((previous_epoch, previous_seq)) => {
                    assert_eq!(&epoch, previous_epoch, "one epoch per store");
                    assert_eq!(seq, previous_seq + 1, "seq +1 per message");
                }
            }
            previous = Some((epoch, seq));
        }
    }

    async fn many_messages_arrive_in_order_across_chunks(backend) {
        let server = backend.start(&[]);
        let mut stream = server.subscribe("bulk", "", SSE).await;
        let sender = tokio::spawn({
            let client = server.client().clone();
            let url = server.url("/channels/bulk/messages");
            async move {
                for i in 1..=300u64 {
                    let body = json!({"name": "bulk", "contents": {"i": i, "pad": "p".repeat(usize::try_from(i % 7 * 300).unwrap())}});
                    post_message(&client, &url, &body, "bulk").await;
                }
            }
        });
        for i in 1..=300u64 {
            let envelope = stream.expect_message(READ).await;
            assert_eq!(seq_of(envelope["id"].as_str().unwrap()), i);
            assert_eq!(envelope["contents"]["i"], i);
        }
        sender.await.unwrap();
    }

    async fn channels_are_isolated(backend) {
        let server = backend.start(&[]);
        let mut a = server.subscribe("alpha", "", SSE).await;
        let mut b = server.subscribe("beta", "", SSE).await;
        let a1 = server.send_id("alpha", json!("a1")).await;
        let b1 = server.send_id("beta", json!("b1")).await;
        let a2 = server.send_id("alpha", json!("a2")).await;
        assert_eq!(seq_of(&a1), 1);
        assert_eq!(seq_of(&a2), 2);
        assert_eq!(seq_of(&b1), 1, "each channel has its own sequence");
        assert_eq!(epoch_of(&a1), epoch_of(&b1), "one epoch per store");

        let got: Vec<Value> = vec![a.expect_message(READ).await, a.expect_message(READ).await];
        assert_eq!(got[0]["contents"], "a1");
        assert_eq!(got[1]["contents"], "a2");
        assert!(got.iter().all(|e| e["channel"] == "alpha"));

        let envelope = b.expect_message(READ).await;
        assert_eq!(envelope["contents"], "b1");
        assert_eq!(envelope["channel"], "beta");
        // Nothing of alpha leaked into beta: the next frame on beta is beta's next message.
        server.send("beta", "marker", json!("b2")).await;
        let envelope = b.expect_message(READ).await;
        assert_eq!(envelope["contents"], "b2");
        // And nothing of beta into alpha.
        server.send("alpha", "marker", json!("a3")).await;
        let envelope = a.expect_message(READ).await;
        assert_eq!(envelope["contents"], "a3");
    }

    async fn two_subscribers_of_one_channel_both_get_every_message(backend) {
        let server = backend.start(&[]);
        let mut first = server.subscribe("shared", "", SSE).await;
        let mut second = server.subscribe("shared", "", SSE).await;
        for i in 0..5 {
            server.send("shared", "n", json!(i)).await;
        }
        for i in 0..5 {
            assert_eq!(first.expect_message(READ).await["contents"], i);
            assert_eq!(second.expect_message(READ).await["contents"], i);
        }
    }

    async fn unusual_but_valid_channel_names_work(backend) {
        let server = backend.start(&[]);
        let long = "x".repeat(128);
        for channel in ["a.b:c-d_e", "-lead", "_x", "0", long.as_str()] {
            let mut stream = server.subscribe(channel, "", SSE).await;
            server.send(channel, "n", json!(channel)).await;
            let envelope = stream.expect_message(READ).await;
            assert_eq!(envelope["channel"], channel);
        }
    }

    async fn heartbeats_while_idle(backend) {
        let server = backend.start(&["--heartbeat", "1"]);
        let mut stream = server.subscribe("quiet", "", SSE).await;
        let started = tokio::time::Instant::now();
        for _ in 0..2 {
            let frame = stream.expect_frame(Duration::from_secs(3)).await;
            assert_eq!(frame.raw, ":\n\n", "a heartbeat is exactly ':\\n\\n'");
        }
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(1500),
            "two heartbeats at 1 s intervals came after {elapsed:?}"
        );
        // A message still flows after heartbeats.
        server.send("quiet", "n", json!(1)).await;
        let envelope = stream.expect_message(READ).await;
        assert_eq!(envelope["contents"], 1);
    }
}

// A pure timer test (nothing is sent): run once, on the default store. Heartbeats followed by
// a message run on every store above.
#[tokio::test]
async fn no_heartbeat_before_the_interval() {
    let server = TestServer::start(&["--heartbeat", "3"]);
    let mut stream = server.subscribe("quiet", "", SSE).await;
    match stream.next_event(Duration::from_millis(1500)).await {
        Next::Timeout => {}
        other => panic!("nothing expected within 1.5 s with --heartbeat 3, got {other:?}"),
    }
}

/// One worker thread (the single-threaded event loop) and more subscribers
/// than the topic's writer serves before it lets other tasks run: every
/// subscriber gets every message, in order, while sends go on.
#[tokio::test]
async fn single_threaded_server_delivers_every_message_to_every_subscriber() {
    const SUBSCRIBERS: usize = 300;
    const MESSAGES: i64 = 20;
    let server = TestServer::start(&["--workers", "1"]);
    let mut streams = Vec::new();
    for _ in 0..SUBSCRIBERS {
        streams.push(server.subscribe("wide", "", SSE).await);
    }
    for i in 0..MESSAGES {
        server.send("wide", "n", json!(i)).await;
    }
    for stream in &mut streams {
        for i in 0..MESSAGES {
            assert_eq!(stream.expect_message(READ).await["contents"], i);
        }
    }
}

/// A subscription whose `GET` carries a body (`Content-Length`, which HTTP
/// allows and the stream ignores) is a stream like any other and gets every
/// message.
#[tokio::test]
async fn a_stream_asked_for_with_a_body_gets_every_message() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(&[]);
    let mut socket = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let request =
        "GET /channels/pulled/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\nContent-Length: 0\r\n\r\n";
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    read_until(&mut socket, &mut received, ": ssehub stream open").await;
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(server.send_id("pulled", json!(i)).await);
    }
    for id in ids {
        read_until(&mut socket, &mut received, &format!("id: {id}\n")).await;
    }
}

/// Reads raw bytes until `wanted` is among them (within [`READ`]).
async fn read_until(socket: &mut tokio::net::TcpStream, received: &mut Vec<u8>, wanted: &str) {
    use tokio::io::AsyncReadExt;
    let found = tokio::time::timeout(READ, async {
        while !String::from_utf8_lossy(received).contains(wanted) {
            let mut chunk = [0u8; 4096];
            let n = socket.read(&mut chunk).await.unwrap();
            assert!(n > 0, "stream closed early: {}", String::from_utf8_lossy(received));
            received.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no {wanted:?} in {:?}",
        String::from_utf8_lossy(received)
    );
}

/// Streams that end while parked with their channel's writer give their
/// sockets back at once, even on a channel that stays open and quiet (no
/// writer pass comes to prune them, and more streams stay parked than end, so
/// the list is not pruned on the way either).
#[tokio::test]
async fn sockets_of_streams_closed_while_parked_are_released() {
    let server = TestServer::start(&[]);
    let open_files = || std::fs::read_dir(format!("/proc/{}/fd", server.pid())).unwrap().count();
    let mut staying = Vec::new();
    for _ in 0..60 {
        staying.push(server.subscribe("quiet", "", SSE).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = open_files();
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(server.subscribe("quiet", "", SSE).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await; // all parked
    assert!(open_files() >= before + 50, "the streams are open");
    drop(streams);
    let deadline = tokio::time::Instant::now() + READ;
    while open_files() > before + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} files open, {before} before the 50 streams",
            open_files()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
