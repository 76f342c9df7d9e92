//! Resuming a stream: Last-Event-ID header, lastEventId query, gap frames, and the
//! replay/live seam under concurrent publishing.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use ssehub::schema::SchemaKind;

/// Sends `n` messages with contents 1..=n and returns their ids.
async fn send_n(server: &TestServer, channel: &str, n: u64) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 1..=n {
        ids.push(server.send_id(channel, json!(i)).await);
    }
    ids
}

/// Reads message frames and asserts their contents are exactly `expected`, in order.
async fn expect_contents(stream: &mut SseStream, expected: impl IntoIterator<Item = u64>) {
    for i in expected {
        let envelope = stream.expect_message(READ).await;
        assert_eq!(envelope["contents"], i, "envelope {envelope}");
        assert_eq!(seq_of(envelope["id"].as_str().unwrap()), i);
    }
}

/// Asserts that the next frame is the next live message (nothing else is queued): sends a
/// marker and expects it.
async fn expect_live_next(server: &TestServer, stream: &mut SseStream, channel: &str) {
    let id = server.send_id(channel, json!("marker")).await;
    let envelope = stream.expect_message(READ).await;
    assert_eq!(envelope["id"], id, "next frame is the live marker");
}

/// Reads the gap frame and checks it against gap.schema.json and the expected fields.
async fn expect_gap(stream: &mut SseStream, channel: &str, after: &str, resume_from: Option<&str>, reason: &str) {
    let frame = stream.expect_frame(READ).await;
    let gap = frame.control("gap", SchemaKind::Gap);
    assert_eq!(gap["channel"], channel, "gap {gap}");
    assert_eq!(gap["after"], after, "gap {gap}");
    assert_eq!(
        gap["resume_from"],
        resume_from.map_or(Value::Null, |id| json!(id)),
        "gap {gap}"
    );
    assert_eq!(gap["reason"], reason, "gap {gap}");
}

store_tests! {
    async fn resume_with_last_event_id_header(backend) {
        let server = backend.start(&[]);
        let ids = send_n(&server, "r", 5).await;
        let mut stream = server
            .subscribe("r", "", &[("accept", "text/event-stream"), ("last-event-id", &ids[1])])
            .await;
        expect_contents(&mut stream, 3..=5).await;
        expect_live_next(&server, &mut stream, "r").await;
    }

    async fn resume_with_last_event_id_query(backend) {
        let server = backend.start(&[]);
        let ids = send_n(&server, "r", 5).await;
        let mut stream = server.subscribe("r", &format!("?lastEventId={}", ids[2]), SSE).await;
        expect_contents(&mut stream, 4..=5).await;
        expect_live_next(&server, &mut stream, "r").await;
    }

    async fn header_wins_over_query(backend) {
        let server = backend.start(&[]);
        let ids = send_n(&server, "r", 5).await;
        let mut stream = server
            .subscribe(
                "r",
                &format!("?lastEventId={}", ids[0]),
                &[("accept", "text/event-stream"), ("last-event-id", &ids[3])],
            )
            .await;
        expect_contents(&mut stream, 5..=5).await;
        expect_live_next(&server, &mut stream, "r").await;
    }

    async fn other_query_parameters_are_ignored(backend) {
        let server = backend.start(&[]);
        let ids = send_n(&server, "r", 3).await;
        let mut stream = server
            .subscribe("r", &format!("?foo=bar&lastEventId={}&x=1", ids[0]), SSE)
            .await;
        expect_contents(&mut stream, 2..=3).await;
    }

    async fn resume_at_the_latest_id_replays_nothing(backend) {
        let server = backend.start(&[]);
        let ids = send_n(&server, "r", 3).await;
        let mut stream = server.subscribe("r", "", &[("last-event-id", &ids[2])]).await;
        expect_live_next(&server, &mut stream, "r").await;
    }

    async fn no_resume_position_means_live_only(backend) {
        let server = backend.start(&[]);
        send_n(&server, "r", 3).await;
        let mut stream = server.subscribe("r", "", SSE).await;
        expect_live_next(&server, &mut stream, "r").await;
    }

    async fn gap_when_the_id_is_older_than_history(backend) {
        let server = backend.start(&["--history-size", "5"]);
        let ids = send_n(&server, "h", 10).await;
        let info = server.channel_info("h").await;
        assert_eq!(info["first_id"], ids[5]);
        assert_eq!(info["history_size"], 5);

        // id 2: messages 3..=5 are gone.
        let mut stream = server
            .subscribe("h", "", &[("accept", "text/event-stream"), ("last-event-id", &ids[1])])
            .await;
        expect_gap(&mut stream, "h", &ids[1], Some(&ids[5]), "before_history").await;
        expect_contents(&mut stream, 6..=10).await;

        // Same through the query parameter.
        let mut by_query = server.subscribe("h", &format!("?lastEventId={}", ids[3]), SSE).await;
        expect_gap(&mut by_query, "h", &ids[3], Some(&ids[5]), "before_history").await;
        expect_contents(&mut by_query, 6..=10).await;

        // Both go on live.
        let marker = server.send_id("h", json!("marker")).await;
        assert_eq!(stream.expect_message(READ).await["id"], marker);
        assert_eq!(by_query.expect_message(READ).await["id"], marker);
    }

    async fn no_gap_when_the_next_message_is_still_retained(backend) {
        let server = backend.start(&["--history-size", "5"]);
        let ids = send_n(&server, "h", 10).await;
        // id 5 itself is evicted but everything after it (6..=10) is retained: nothing is lost.
        let mut stream = server.subscribe("h", "", &[("last-event-id", &ids[4])]).await;
        expect_contents(&mut stream, 6..=10).await;
        expect_live_next(&server, &mut stream, "h").await;
    }

    async fn gap_for_an_unknown_id_of_this_epoch(backend) {
        let server = backend.start(&["--history-size", "5"]);
        let ids = send_n(&server, "u", 10).await;
        let beyond = format!("{}-999", epoch_of(&ids[0]));
        let mut stream = server.subscribe("u", "", &[("last-event-id", &beyond)]).await;
        expect_gap(&mut stream, "u", &beyond, Some(&ids[5]), "unknown_id").await;
        expect_contents(&mut stream, 6..=10).await;
        expect_live_next(&server, &mut stream, "u").await;
    }

    async fn gap_for_a_garbage_id(backend) {
        let server = backend.start(&["--history-size", "5"]);
        let ids = send_n(&server, "g", 10).await;
        let leading_zero = format!("{}-01", epoch_of(&ids[0]));
        for garbage in ["hello", "0-0", "zzzzzzzz-1", "1", leading_zero.as_str()] {
            let mut stream = server.subscribe("g", "", &[("last-event-id", garbage)]).await;
            expect_gap(&mut stream, "g", garbage, Some(&ids[5]), "unknown_id").await;
            expect_contents(&mut stream, 6..=10).await;
        }
        // Through the query parameter too.
        let mut stream = server.subscribe("g", "?lastEventId=hello", SSE).await;
        expect_gap(&mut stream, "g", "hello", Some(&ids[5]), "unknown_id").await;
        expect_contents(&mut stream, 6..=10).await;
    }

    async fn gap_for_an_id_of_another_epoch(backend) {
        let server = backend.start(&["--history-size", "5"]);
        let ids = send_n(&server, "e", 10).await;
        let foreign = format!("{}-3", other_epoch(&epoch_of(&ids[0])));
        let mut stream = server.subscribe("e", "", &[("last-event-id", &foreign)]).await;
        expect_gap(&mut stream, "e", &foreign, Some(&ids[5]), "other_epoch").await;
        expect_contents(&mut stream, 6..=10).await;
        expect_live_next(&server, &mut stream, "e").await;
    }

    async fn gap_on_an_empty_channel_goes_on_live(backend) {
        // The server restarted: the client's id is from another epoch and nothing is retained.
        let server = backend.start(&[]);
        let epoch = epoch_of(&server.send_id("other", json!(0)).await);
        let foreign = format!("{}-42", other_epoch(&epoch));
        let mut stream = server.subscribe("empty", "", &[("last-event-id", &foreign)]).await;
        expect_gap(&mut stream, "empty", &foreign, None, "other_epoch").await;
        expect_live_next(&server, &mut stream, "empty").await;

        let mut stream = server.subscribe("empty2", "", &[("last-event-id", "garbage")]).await;
        expect_gap(&mut stream, "empty2", "garbage", None, "unknown_id").await;
        expect_live_next(&server, &mut stream, "empty2").await;
    }

    async fn gap_when_history_expired_by_age(backend) {
        let server = backend.start(&["--history-age", "1"]);
        let ids = send_n(&server, "old", 2).await;
        // Wait (bounded) until both messages are past their age.
        let end = tokio::time::Instant::now() + Duration::from_secs(5);
        let info = loop {
            let info = server.channel_info("old").await;
            if info["history_size"] == 0 {
                break info;
            }
            assert!(tokio::time::Instant::now() < end, "history never expired: {info}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(info["first_id"], Value::Null, "{info}");
        assert_eq!(info["last_id"], ids[1], "the last id is still known: {info}");

        // Message 2 is gone: a gap, nothing to replay, then live.
        let mut stream = server.subscribe("old", "", &[("last-event-id", &ids[0])]).await;
        expect_gap(&mut stream, "old", &ids[0], None, "before_history").await;
        let next = server.send_id("old", json!(3)).await;
        assert_eq!(seq_of(&next), 3, "seq goes on after expiry");
        assert_eq!(stream.expect_message(READ).await["id"], next);

        // Resuming at the last id loses nothing: no gap.
        let mut stream = server.subscribe("old", "", &[("last-event-id", &next)]).await;
        expect_live_next(&server, &mut stream, "old").await;
    }
}

#[tokio::test]
async fn a_resume_id_longer_than_64_is_invalid_query() {
    let server = TestServer::start(&[]);
    let long = "a".repeat(65);
    let response = server
        .get(&format!("/channels/r/events?lastEventId={long}"), NONE)
        .await;
    expect_error(response, 400, "invalid_query").await;
}

/// The `Last-Event-ID` header follows the same rule as `?lastEventId=` (at most 64
/// characters, resume-position.schema.json): a longer one is `invalid_query` (a failure frame
/// for an EventSource), at pointer `/headers/last-event-id`, and is not echoed back; one of 64
/// characters is a resume position like any other (a gap frame when it names nothing).
#[tokio::test]
async fn a_last_event_id_header_longer_than_64_is_invalid_query() {
    let server = TestServer::start(&[]);
    // Within the 32 KiB a request head may take; past it, the head itself is refused.
    let huge = "x".repeat(70_000);
    let response = server
        .get("/channels/r/events", &[("last-event-id", huge.as_str())])
        .await;
    expect_error(response, 431, "headers_too_large").await;
    for long in ["a".repeat(65), "x".repeat(20_000)] {
        let headers = [("last-event-id", long.as_str())];
        let response = server.get("/channels/r/events", &headers).await;
        let error = expect_error(response, 400, "invalid_query").await;
        assert_eq!(error["details"][0]["pointer"], "/headers/last-event-id", "{error}");
        assert!(
            !error.to_string().contains("aaaaa") && !error.to_string().contains("xxxxx"),
            "{error}"
        );
        let mut stream = SseStream::connect(&server.url("/channels/r/events"), &[headers[0], SSE[0]]).await;
        stream.expect_preamble(2000).await;
        let frame = stream.expect_non_heartbeat(READ).await;
        let failure = frame.control("failure", SchemaKind::Failure);
        assert_eq!(failure["code"], "invalid_query", "{failure}");
        assert!(frame.raw.len() < 1000, "not echoed: {} bytes", frame.raw.len());
        stream.expect_end(READ).await;
    }
    let longest = "a".repeat(64);
    let mut stream = server.subscribe("r", "", &[("last-event-id", &longest), SSE[0]]).await;
    expect_gap(&mut stream, "r", &longest, None, "unknown_id").await;
}

/// Reads `channel` until message `n`, reconnecting every `every` messages with its last id
/// (through the header, or the query when `by_query`). Returns the seqs received.
async fn seam_subscriber(
    base: String,
    channel: &'static str,
    mut stream: SseStream,
    mut last: Option<String>,
    every: usize,
    by_query: bool,
    n: u64,
) -> Vec<u64> {
    let mut got = Vec::new();
    let mut since = 0;
    loop {
        let frame = stream
            .next_frame(Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("stream ended after {last:?}"));
        if frame.is_heartbeat() {
            continue;
        }
        assert!(frame.is_message(), "only messages expected, got {frame:?}");
        let envelope = frame.envelope();
        let id = envelope["id"].as_str().unwrap().to_owned();
        let seq = seq_of(&id);
        assert_eq!(envelope["contents"]["i"], seq);
        got.push(seq);
        last = Some(id);
        since += 1;
        if seq >= n {
            return got;
        }
        if since == every {
            since = 0;
            drop(stream);
            let id = last.as_deref().unwrap();
            stream = if by_query {
                SseStream::connect(&format!("{base}/channels/{channel}/events?lastEventId={id}"), SSE).await
            } else {
                SseStream::connect(
                    &format!("{base}/channels/{channel}/events"),
                    &[("accept", "text/event-stream"), ("last-event-id", id)],
                )
                .await
            };
            assert_eq!(stream.status, 200);
            stream.expect_preamble(2000).await;
        }
    }
}

store_tests! {
    async fn replay_live_seam_under_concurrent_publishing(backend) {
        const N: u64 = 500;
        const CHANNEL: &str = "seam";
        let server = backend.start(&[]);
        let base = server.url("");

        // Subscribers present from the start, each reconnecting every few messages.
        let mut subscribers = Vec::new();
        for (k, every) in [7usize, 19, 31, 53, 97, 1000].into_iter().enumerate() {
            let stream = server.subscribe(CHANNEL, "", SSE).await;
            subscribers.push((
                1u64,
                tokio::spawn(seam_subscriber(
                    base.clone(),
                    CHANNEL,
                    stream,
                    None,
                    every,
                    k % 2 == 1,
                    N,
                )),
            ));
        }

        // The publisher reports each id as it gets it.
        let (progress_tx, mut progress_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let publisher = tokio::spawn({
            let client = server.client().clone();
            let url = server.url(&format!("/channels/{CHANNEL}/messages"));
            async move {
                for i in 1..=N {
                    let body = json!({"name": "seam", "contents": {"i": i}});
                    let value = post_message(&client, &url, &body, "seam").await;
                    let id = value["id"].as_str().unwrap().to_owned();
                    assert_eq!(seq_of(&id), i);
                    let _ = progress_tx.send(id);
                }
            }
        });

        // Late joiners: connect mid-way with an earlier id (a page reload / reconnect).
        let mut published = Vec::new();
        for (at, resume_index, every, by_query) in [
            (50usize, 0usize, 23usize, false),
            (120, 100, 41, true),
            (200, 199, 1000, false),
            (300, 10, 67, true),
        ] {
            while published.len() < at {
                let id = tokio::time::timeout(Duration::from_secs(10), progress_rx.recv())
                    .await
                    .expect("publisher progress")
                    .expect("publisher alive");
                published.push(id);
            }
            let resume: String = published[resume_index].clone();
            let query = if by_query {
                format!("?lastEventId={resume}")
            } else {
                String::new()
            };
            let headers: Vec<(&str, &str)> = if by_query {
                vec![("accept", "text/event-stream")]
            } else {
                vec![("accept", "text/event-stream"), ("last-event-id", &resume)]
            };
            let stream = server.subscribe(CHANNEL, &query, &headers).await;
            subscribers.push((
                resume_index as u64 + 2,
                tokio::spawn(seam_subscriber(
                    base.clone(),
                    CHANNEL,
                    stream,
                    Some(resume.clone()),
                    every,
                    by_query,
                    N,
                )),
            ));
        }

        tokio::time::timeout(Duration::from_secs(30), publisher)
            .await
            .expect("publisher finished in time")
            .unwrap();
        for (first, task) in subscribers {
            let got = tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("subscriber finished in time")
                .unwrap();
            let expected: Vec<u64> = (first..=N).collect();
            assert_eq!(
                got.len(),
                expected.len(),
                "subscriber from {first}: no duplicate, no hole"
            );
            assert_eq!(got, expected, "subscriber from {first}: in order");
        }
    }
}
