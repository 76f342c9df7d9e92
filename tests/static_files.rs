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
