//! The demo files of --static-dir, served at `/` after the API routes.

mod common;

use std::path::PathBuf;

use common::*;

/// A fresh directory with an index.html and a script.
fn static_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ssehub-static-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.html"), "<!doctype html><title>demo</title>hello").unwrap();
    std::fs::write(dir.join("app.js"), "console.log('demo');").unwrap();
    dir
}

#[tokio::test]
async fn index_and_files_are_served() {
    let dir = static_dir("serve");
    let server = TestServer::start(&["--static-dir", dir.to_str().unwrap()]);

    let response = server.get("/", NONE).await;
    assert_eq!(response.status(), 200);
    assert!(header(response.headers(), "content-type").starts_with("text/html"));
    assert!(response.text().await.unwrap().ends_with("hello"));

    let response = server.get("/index.html", NONE).await;
    assert_eq!(response.status(), 200);

    let response = server.get("/app.js", NONE).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "console.log('demo');");

    // The API routes come first.
    let (status, _) = server.get_json("/healthz").await;
    assert_eq!(status, 200);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn missing_files_and_traversal_are_404_not_found() {
    let dir = static_dir("missing");
    let secret = dir.parent().unwrap().join("ssehub-secret.txt");
    std::fs::write(&secret, "secret").unwrap();
    let server = TestServer::start(&["--static-dir", dir.to_str().unwrap()]);
    for path in [
        "/missing.js",
        "/..%2fssehub-secret.txt",
        "/%2e%2e/ssehub-secret.txt",
        "/..%5cssehub-secret.txt",
    ] {
        let response = server.get(path, NONE).await;
        expect_error(response, 404, "not_found").await;
    }
    let _ = std::fs::remove_file(&secret);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_default_static_dir_serves_the_demo_page() {
    let server = TestServer::start(&[]);
    let response = server.get("/", NONE).await;
    assert_eq!(response.status(), 200);
    assert!(header(response.headers(), "content-type").starts_with("text/html"));
}

/// A static-file path only a client can make up (through a file, `..`, a backslash, a NUL,
/// bytes that are not UTF-8) is a plain 404, logged at debug, not as the warning or error a
/// server fault deserves.
#[tokio::test]
async fn made_up_paths_are_not_logged_as_server_faults() {
    let dir = static_dir("made-up");
    let server = TestServer::start(&[
        "--static-dir",
        dir.to_str().unwrap(),
        "--publisher-key",
        "pk_test-0123456789abcdef",
        "--log",
        "warn,ssehub::http::filters=debug",
    ]);
    let paths = [
        "/index.html/x",
        "/app.js/",
        "/..%2fssehub-secret.txt",
        "/%2e%2e/x",
        "/..%5cx",
        "/a%5cb",
        "/index.html%00",
        "/%ff",
        "/missing/deeper.js",
    ];
    for path in paths {
        expect_error(server.get(path, NONE).await, 404, "not_found").await;
    }
    let response = server.get("/app.js", NONE).await;
    assert_eq!(response.status(), 200);
    let refused = || server.stderr().matches("static file request refused").count();
    let end = tokio::time::Instant::now() + READ;
    while refused() < paths.len() {
        assert!(
            tokio::time::Instant::now() < end,
            "each refusal logged at debug:\n{}",
            server.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let stderr = server.stderr();
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "logged as a fault:\n{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
