//! Limits: --max-subscribers, and slow subscribers that fall behind the history.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use serde_json::json;
use ssehub::schema::SchemaKind;

store_tests! {
    async fn third_subscriber_over_max_subscribers_is_refused(backend) {
        let server = backend.start(&["--max-subscribers", "2", "--heartbeat", "1"]);
        let first = server.subscribe("full", "", SSE).await;
        let _second = server.subscribe("full", "", SSE).await;
        server.wait_subscribers("full", 2).await;

        // JSON answer without an EventSource Accept header.
        let response = server.get("/channels/full/events", NONE).await;
        let error = expect_error(response, 503, "too_many_subscribers").await;

        // Failure frame with it.
        let mut stream = SseStream::connect(&server.url("/channels/full/events"), SSE).await;
        assert_eq!(stream.status, 200);
        stream.expect_preamble(2000).await;
        let frame = stream.expect_frame(READ).await;
        let failure = frame.control("failure", SchemaKind::Failure);
        assert_eq!(failure["code"], "too_many_subscribers");
        assert_eq!(failure["message"], error["message"]);
        stream.expect_end(READ).await;

        // The refused ones were not counted.
        assert_eq!(server.channel_info("full").await["subscribers"], 2);

        // Once a slot frees up, a new subscriber gets in.
        drop(first);
        server.wait_subscribers("full", 1).await;
        let mut third = server.subscribe("full", "", SSE).await;
        server.send("full", "n", json!("in")).await;
        assert_eq!(third.expect_message(READ).await["contents"], "in");
    }

    async fn max_subscribers_counts_every_channel_together(backend) {
        // The limit bounds the server's streams, whatever their channel: a third stream on another
        // channel is refused too.
        let server = backend.start(&["--max-subscribers", "2"]);
        let _a = server.subscribe("one", "", SSE).await;
        let _b = server.subscribe("two", "", SSE).await;
        let response = server.get("/channels/three/events", NONE).await;
        expect_error(response, 503, "too_many_subscribers").await;
    }
}

/// Reads `stream` up to message `n`: consecutive messages from 1, except right after a gap
/// frame (reason before_history, after = the last delivered id), where the next message is
/// `resume_from`. Never a silent hole. Returns the number of gap frames and, per message
/// received, its seq and its `contents.i`.
async fn read_to_end_without_silent_hole(stream: &mut SseStream, channel: &str, n: u64) -> (usize, Vec<(u64, u64)>) {
    let mut previous: Option<(u64, String)> = None;
    let mut resume_at: Option<u64> = None;
    let mut gaps = 0;
    let mut received = Vec::new();
    loop {
        let frame = stream.expect_non_heartbeat(Duration::from_secs(10)).await;
        if frame.event.as_deref() == Some("gap") {
            let gap = frame.control("gap", SchemaKind::Gap);
            assert_eq!(gap["reason"], "before_history", "gap {gap}");
            assert_eq!(gap["channel"], channel);
            if let Some((_, id)) = &previous {
                assert_eq!(gap["after"], *id, "gap after the last delivered id: {gap}");
            }
            let resume = seq_of(
                gap["resume_from"]
                    .as_str()
                    .unwrap_or_else(|| panic!("history is not empty: {gap}")),
            );
            let delivered = previous.as_ref().map_or(0, |(seq, _)| *seq);
            assert!(resume > delivered + 1, "a gap skips something: {gap}");
            resume_at = Some(resume);
            gaps += 1;
            continue;
        }
        assert!(frame.is_message(), "unexpected frame {frame:?}");
        let envelope = frame.envelope();
        let id = envelope["id"].as_str().unwrap().to_owned();
        let seq = seq_of(&id);
        received.push((seq, envelope["contents"]["i"].as_u64().expect("contents.i")));
        let expected = match resume_at.take() {
            Some(resume) => resume,
            None => previous.as_ref().map_or(1, |(seq, _)| seq + 1),
        };
        assert_eq!(seq, expected, "no silent hole (after {previous:?}, {gaps} gap(s))");
        previous = Some((seq, id));
        if seq == n {
            return (gaps, received);
        }
    }
}

/// Concurrent senders of the flood: enough to keep a store that commits to disk or to Redis
/// busy (the file store commits concurrent sends together).
const FLOOD_SENDERS: u64 = 4;

/// The `--write-timeout` of the flood tests: the slow subscriber reads nothing
/// for as long as the flood lasts, which on a store that commits to disk can
/// be longer than the default timeout after which such a client is let go.
const FLOOD_WRITE_TIMEOUT: &str = "600";

/// Subscribes a slow (not reading) and a fast subscriber to `channel`, sends `n` messages of
/// about `size` bytes (contents `{"i": 1..=n}`, from [`FLOOD_SENDERS`] concurrent senders),
/// checks the fast one got everything meanwhile, then reads the slow one. Every message either
/// subscriber received has the contents acknowledged for its id. Returns the slow subscriber's
/// number of gap frames.
async fn flood(server: &TestServer, channel: &str, n: u64, size: usize) -> usize {
    // Connected, preamble read, then not read at all while the messages are sent.
    let mut slow = server.subscribe(channel, "", SSE).await;
    let mut fast = server.subscribe(channel, "", SSE).await;
    let fast_reader = tokio::spawn(async move {
        let mut received = Vec::new();
        for seq in 1..=n {
            let envelope = fast.expect_message(Duration::from_secs(10)).await;
            assert_eq!(seq_of(envelope["id"].as_str().unwrap()), seq, "fast subscriber");
            received.push((seq, envelope["contents"]["i"].as_u64().expect("contents.i")));
        }
        received
    });

    let pad = "x".repeat(size);
    let senders: Vec<_> = (0..FLOOD_SENDERS)
        .map(|sender| {
            let client = server.client().clone();
            let url = server.url(&format!("/channels/{channel}/messages"));
            let pad = pad.clone();
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in (1..=n).filter(|i| i % FLOOD_SENDERS == sender) {
                    let body = json!({"name": "flood", "contents": {"i": i, "pad": pad}});
                    let value = post_message(&client, &url, &body, &format!("send {i}")).await;
                    acked.push((seq_of(value["id"].as_str().unwrap()), i));
                }
                acked
            })
        })
        .collect();
    // seq -> contents.i, as the sends were acknowledged.
    let mut acked = BTreeMap::new();
    for sender in senders {
        let sent = tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .expect("the senders finished in time")
            .unwrap();
        for (seq, i) in sent {
            assert!(acked.insert(seq, i).is_none(), "seq {seq} acknowledged twice");
        }
    }
    assert_eq!(
        acked.keys().copied().collect::<Vec<_>>(),
        (1..=n).collect::<Vec<_>>(),
        "positions 1..=n"
    );
    let fast = tokio::time::timeout(Duration::from_secs(30), fast_reader)
        .await
        .expect("the fast subscriber received everything meanwhile")
        .unwrap();
    for (seq, i) in fast {
        assert_eq!(acked[&seq], i, "fast subscriber: contents of seq {seq}");
    }

    let (gaps, slow) = read_to_end_without_silent_hole(&mut slow, channel, n).await;
    for (seq, i) in slow {
        assert_eq!(acked[&seq], i, "slow subscriber: contents of seq {seq}");
    }
    gaps
}

store_tests! {
    async fn slow_subscriber_gets_everything_or_an_explicit_gap(backend) {
        let server = backend.start(&["--history-size", "100", "--write-timeout", FLOOD_WRITE_TIMEOUT]);
        let gaps = flood(&server, "flood", 2000, 1000).await;
        eprintln!("slow subscriber saw {gaps} gap frame(s)");
    }
}

/// The largest TCP send plus receive buffers the kernel may give a connection.
fn kernel_socket_buffers() -> usize {
    let max = |path: &str| -> usize {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
            .unwrap_or(8 << 20)
    };
    max("/proc/sys/net/ipv4/tcp_rmem") + max("/proc/sys/net/ipv4/tcp_wmem")
}

store_tests! {
    async fn slow_subscriber_far_behind_the_history_gets_a_gap(backend) {
        // Far more data than the socket buffers, the live buffer and the history can hold together:
        // with bounded memory the slow subscriber must fall off the history, and say so.
        const SIZE: usize = 60_000;
        let server = backend.start(&["--history-size", "100", "--live-buffer", "16", "--write-timeout", FLOOD_WRITE_TIMEOUT]);
        let bound = kernel_socket_buffers() + (100 + 16) * SIZE;
        let n = (bound * 5 / 4 / SIZE).clamp(400, 2000) as u64;
        let gaps = flood(&server, "deluge", n, SIZE).await;
        assert!(
            gaps >= 1,
            "{n} messages of {SIZE} bytes: the slow subscriber cannot have been kept whole"
        );
    }
}
