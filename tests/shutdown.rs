//! Graceful shutdown on SIGTERM / SIGINT.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use serde_json::Value;
use ssehub::schema::SchemaKind;

/// Asserts nothing listens on the server's port any more.
async fn expect_refused(server: &TestServer) {
    let result = tokio::time::timeout(Duration::from_secs(5), http_client().get(server.url("/healthz")).send())
        .await
        .expect("a refused connection fails fast");
    match result {
        Err(e) => assert!(e.is_connect(), "expected connection refused, got {e:?}"),
        Ok(response) => panic!("server still answers: {}", response.status()),
    }
}

/// After a signal: the stream gets exactly `: shutdown\n\n` (heartbeats aside) and ends
/// cleanly. On anything else, says how the process ended.
async fn expect_shutdown_comment(server: &mut TestServer, stream: &mut SseStream) {
    let frame = loop {
        match stream.next_event(READ).await {
            Next::Frame(frame) if frame.is_heartbeat() => continue,
            Next::Frame(frame) => break Some(frame),
            _ => break None,
        }
    };
    if frame.as_ref().map(|f| f.raw.as_str()) != Some(": shutdown\n\n") {
        let status = server.try_wait_exit(READ).await;
        panic!(
            "expected ': shutdown', got {frame:?} (stream error {:?}); process exit: {status:?}",
            stream.end_error()
        );
    }
    stream.expect_end(READ).await;
}

store_tests! {
    async fn sigterm_ends_streams_completes_requests_and_exits_0(backend) {
        let mut server = backend.start(&["--shutdown-grace", "5"]);
        let mut stream = server.subscribe("live", "", SSE).await;
        let mut other = server.subscribe("other", "?timeout=60", SSE).await;
        server.wait_subscribers("live", 1).await;

        // A POST whose body is still being sent when the signal arrives.
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
        let body = reqwest::Body::wrap_stream(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let post = tokio::spawn(
            server
                .client()
                .post(server.url("/channels/live/messages"))
                .header("content-type", "application/json")
                .body(body)
                .timeout(Duration::from_secs(15))
                .send(),
        );
        tx.send(Ok(Bytes::from_static(br#"{"name":"late","con"#)))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;

        let signalled = tokio::time::Instant::now();
        server.sigterm();

        // Open streams get ': shutdown' and end, while the POST is still in flight.
        for stream in [&mut stream, &mut other] {
            expect_shutdown_comment(&mut server, stream).await;
        }

        // The in-flight POST completes.
        tx.send(Ok(Bytes::from_static(br#"tents":1}"#))).await.unwrap();
        drop(tx);
        let response = tokio::time::timeout(Duration::from_secs(10), post)
            .await
            .expect("in-flight POST answered")
            .unwrap()
            .expect("in-flight POST completes");
        assert_eq!(response.status(), 201, "the in-flight POST completes");
        let body: Value = response.json().await.unwrap();
        validate(SchemaKind::SendResponse, &body);

        let status = server.wait_exit(Duration::from_secs(8)).await;
        assert!(status.success(), "exit status {status:?}");
        assert!(
            signalled.elapsed() < Duration::from_secs(8),
            "{:?}",
            signalled.elapsed()
        );
        expect_refused(&server).await;
    }

    async fn sigterm_when_idle_exits_0_quickly(backend) {
        let mut server = backend.start(&[]);
        // One request first, so the server is fully up.
        let (status, _) = server.get_json("/healthz").await;
        assert_eq!(status, 200);
        let signalled = tokio::time::Instant::now();
        server.sigterm();
        let status = server.wait_exit(Duration::from_secs(5)).await;
        assert!(status.success(), "exit status {status:?}");
        assert!(signalled.elapsed() < Duration::from_secs(3));
        expect_refused(&server).await;
    }

    async fn sigterm_right_after_the_listening_line_exits_0(backend) {
        // The listening line is the readiness signal: from then on SIGTERM is a graceful stop,
        // never the default action (death by signal).
        for _ in 0..3 {
            let mut server = backend.start(&[]);
            server.sigterm();
            let status = server.wait_exit(Duration::from_secs(5)).await;
            assert!(status.success(), "exit status {status:?}");
        }
    }

    async fn sigint_is_a_graceful_stop_too(backend) {
        let mut server = backend.start(&[]);
        let mut stream = server.subscribe("live", "", SSE).await;
        server.signal("INT");
        expect_shutdown_comment(&mut server, &mut stream).await;
        let status = server.wait_exit(Duration::from_secs(5)).await;
        assert!(status.success(), "exit status {status:?}");
        expect_refused(&server).await;
    }

    async fn streams_end_even_with_a_long_grace_period(backend) {
        // Streams must not hold the shutdown until the grace period runs out.
        let mut server = backend.start(&["--shutdown-grace", "30", "--heartbeat", "1"]);
        let mut stream = server.subscribe("live", "", SSE).await;
        let signalled = tokio::time::Instant::now();
        server.sigterm();
        expect_shutdown_comment(&mut server, &mut stream).await;
        let status = server.wait_exit(Duration::from_secs(5)).await;
        assert!(status.success(), "exit status {status:?}");
        assert!(signalled.elapsed() < Duration::from_secs(5));
    }
}
