//! CORS (issue 4): preflight from an allowed origin (204 with the allowed methods and headers),
//! from any other origin (403 without CORS headers); every answer to an allowed origin (errors
//! and event streams included) carries Access-Control-Allow-Origin (echoed) and
//! Access-Control-Allow-Credentials; nothing for other origins or by default. `*` allows any
//! origin without credentials (issue 12). CORS is
//! configuration only, so these tests use the memory store.

mod clients_support;
// These tests need no store backend, so `common`'s re-export of its store helpers is unused here.
#[allow(unused_imports)]
mod common;

use clients_support::*;
use common::*;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::json;

const APP: &str = "https://app.example";
const EVIL: &str = "https://evil.example";

/// Every value of `name`, joined with ", ".
fn all_values(headers: &HeaderMap, name: &str) -> String {
    headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().expect("ASCII header").to_owned())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `Vary` names `origin`.
#[track_caller]
fn assert_vary_origin(headers: &HeaderMap, what: &str) {
    let vary = all_values(headers, "vary").to_ascii_lowercase();
    assert!(
        vary.split(',').any(|v| v.trim() == "origin"),
        "{what}: Vary must name origin, got {vary:?}"
    );
}

/// How an origin is allowed.
#[derive(Debug, Clone, Copy)]
enum Allowed<'a> {
    /// Listed by name: echoed, with credentials.
    Echo(&'a str),
    /// Only by `*`: `*`, without credentials.
    Any,
}

/// The CORS headers of an answer to an allowed origin.
#[track_caller]
fn assert_allowed(headers: &HeaderMap, allowed: Allowed<'_>, what: &str) {
    let (origin, credentials) = match allowed {
        Allowed::Echo(origin) => (origin, "true"),
        Allowed::Any => ("*", ""),
    };
    assert_eq!(
        all_values(headers, "access-control-allow-origin"),
        origin,
        "{what}: Access-Control-Allow-Origin"
    );
    assert_eq!(
        all_values(headers, "access-control-allow-credentials"),
        credentials,
        "{what}: Access-Control-Allow-Credentials"
    );
    assert_vary_origin(headers, what);
}

/// The CORS headers of an answer to the allowed (listed) `origin`.
#[track_caller]
fn assert_cors(headers: &HeaderMap, origin: &str, what: &str) {
    assert_allowed(headers, Allowed::Echo(origin), what);
}

/// No `Access-Control-*` header at all.
#[track_caller]
fn assert_no_cors(headers: &HeaderMap, what: &str) {
    let cors: Vec<&str> = headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.starts_with("access-control-"))
        .collect();
    assert!(
        cors.is_empty(),
        "{what}: no CORS header expected, got {cors:?} in {headers:?}"
    );
}

/// A preflight for `method` with `origin` and optionally requested headers.
async fn preflight(
    server: &TestServer,
    path: &str,
    origin: &str,
    method: &str,
    asked_headers: Option<&str>,
) -> reqwest::Response {
    let mut headers = vec![("origin", origin), ("access-control-request-method", method)];
    if let Some(asked) = asked_headers {
        headers.push(("access-control-request-headers", asked));
    }
    call_with(server, Method::OPTIONS, path, &headers, None).await
}

/// A request of the table: method, path, headers, body, expected status.
type Request<'a> = (Method, String, Vec<(&'a str, &'a str)>, Option<String>, u16);

/// Paths a preflight may target.
const PATHS: &[&str] = &[
    "/channels/c/messages",
    "/channels/c/events",
    "/channels/c/events?token=pk_test-0123456789abcdef",
    "/channels/c/clients",
    "/channels/c/clients/alice",
    "/channels/c",
    "/healthz",
    "/no/such/path",
    "/channels/bad!name/messages",
];

/// Checks the 204 preflight answer to `origin` (asked headers `asked`, echoed, or the default).
async fn expect_preflight_ok(response: reqwest::Response, origin: &str, asked: Option<&str>, what: &str) {
    expect_preflight(response, Allowed::Echo(origin), asked, what).await;
}

/// Checks a 204 preflight answer, the origin allowed as `allowed`.
async fn expect_preflight(response: reqwest::Response, allowed: Allowed<'_>, asked: Option<&str>, what: &str) {
    let (status, headers, text) = parts(response).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{what}: preflight status; body {text}");
    assert!(text.is_empty(), "{what}: a 204 has no body");
    assert_allowed(&headers, allowed, what);
    assert_eq!(
        all_values(&headers, "access-control-allow-methods"),
        "GET, HEAD, POST, DELETE",
        "{what}"
    );
    assert_eq!(
        all_values(&headers, "access-control-allow-headers"),
        asked.unwrap_or("authorization, content-type, last-event-id"),
        "{what}"
    );
    assert_eq!(all_values(&headers, "access-control-max-age"), "600", "{what}");
}

/// Preflight from an allowed origin: 204 with every CORS header, on any path, with no
/// credentials needed; the requested headers are echoed; origins compare case-insensitively.
#[tokio::test]
async fn preflight_from_allowed_origin() {
    let server = TestServer::start(&["--cors-origin", APP, "--publisher-key", KEY]);
    for path in PATHS {
        for method in ["GET", "POST", "DELETE"] {
            for asked in [None, Some("authorization, content-type"), Some("last-event-id")] {
                let what = format!("preflight {method} {path} asking {asked:?}");
                expect_preflight_ok(preflight(&server, path, APP, method, asked).await, APP, asked, &what).await;
            }
        }
    }
    let upper = "HTTPS://APP.EXAMPLE";
    let response = preflight(&server, "/channels/c/events", upper, "GET", None).await;
    expect_preflight_ok(response, upper, None, "an origin in upper case").await;
}

/// Preflight from an origin that is not allowed, or on a server allowing none: 403 forbidden
/// (JSON) without any CORS header.
#[tokio::test]
async fn preflight_from_other_origin_refused() {
    let allowing = TestServer::start(&["--cors-origin", APP, "--publisher-key", KEY]);
    let default = TestServer::start(KEYED);
    for (server, origin) in [
        (&allowing, EVIL),
        (&allowing, "https://app.example.evil"),
        (&default, APP),
    ] {
        for path in PATHS {
            let response = preflight(server, path, origin, "POST", Some("authorization, content-type")).await;
            let what = format!("preflight {path} from {origin}");
            assert_no_cors(response.headers(), &what);
            expect_error(response, 403, "forbidden").await;
        }
    }
}

/// Every answer to the allowed origin carries the CORS headers: successes, errors (with
/// `WWW-Authenticate` kept), event streams, failure frames, 404, 405, static files. Another
/// origin gets none of them (and its requests are still processed); Vary: origin is on every
/// answer.
#[tokio::test]
async fn actual_requests_carry_cors_headers_for_allowed_origin_only() {
    let server = TestServer::start(&["--cors-origin", APP, "--publisher-key", KEY]);
    let alice = reg(&server, "c", "alice", None).await;
    for origin in [APP, EVIL] {
        let check = |headers: &HeaderMap, what: &str| {
            if origin == APP {
                assert_cors(headers, APP, what);
            } else {
                assert_no_cors(headers, what);
                assert_vary_origin(headers, what);
            }
        };
        let key = bearer(KEY);
        let with_key = [("origin", origin), ("authorization", key.as_str())];
        let anonymous = [("origin", origin)];
        let send = json!({"name": "n", "contents": origin}).to_string();
        let json_type = ("content-type", "application/json");
        let public = if origin == APP { "app" } else { "evil" };
        let registration = json!({"public_token": public}).to_string();
        let requests: Vec<Request<'_>> = vec![
            (Method::GET, "/healthz".into(), anonymous.to_vec(), None, 200),
            (Method::GET, "/channels/c".into(), anonymous.to_vec(), None, 200),
            (Method::GET, "/channels/c/clients".into(), anonymous.to_vec(), None, 200),
            (
                Method::GET,
                "/channels/c/clients/alice".into(),
                anonymous.to_vec(),
                None,
                200,
            ),
            (
                Method::GET,
                "/channels/c/clients/zed".into(),
                anonymous.to_vec(),
                None,
                404,
            ),
            (Method::HEAD, "/channels/c".into(), anonymous.to_vec(), None, 200),
            (
                Method::POST,
                "/channels/c/messages".into(),
                [&with_key[..], &[json_type]].concat(),
                Some(send.clone()),
                201,
            ),
            (
                Method::POST,
                "/channels/c/messages".into(),
                [&anonymous[..], &[json_type]].concat(),
                Some(send.clone()),
                401,
            ),
            (
                Method::POST,
                "/channels/c/messages".into(),
                [&with_key[..], &[json_type]].concat(),
                Some("{".into()),
                400,
            ),
            (
                Method::POST,
                "/channels/c/clients".into(),
                [&with_key[..], &[json_type]].concat(),
                Some(registration),
                201,
            ),
            (
                Method::DELETE,
                format!("/channels/c/clients/{public}"),
                with_key.to_vec(),
                None,
                204,
            ),
            (
                Method::DELETE,
                "/channels/c/clients/zed".into(),
                with_key.to_vec(),
                None,
                404,
            ),
            (
                Method::GET,
                "/channels/c/messages".into(),
                anonymous.to_vec(),
                None,
                405,
            ),
            (
                Method::OPTIONS,
                "/channels/c/messages".into(),
                anonymous.to_vec(),
                None,
                405,
            ),
            (Method::GET, "/no/such/file".into(), anonymous.to_vec(), None, 404),
            (Method::GET, "/channels/bad!name".into(), anonymous.to_vec(), None, 400),
            (
                Method::GET,
                "/channels/c/events?token=unknown_token-0123456789".into(),
                anonymous.to_vec(),
                None,
                404,
            ),
            (Method::GET, "/".into(), anonymous.to_vec(), None, 200),
        ];
        for (method, path, headers, body, status) in requests {
            let what = format!("{method} {path} from {origin}");
            let response = call_with(&server, method.clone(), &path, &headers, body).await;
            let (actual, answer_headers, text) = parts(response).await;
            assert_eq!(actual.as_u16(), status, "{what}: {text}");
            check(&answer_headers, &what);
            if status == 401 {
                assert!(
                    header(&answer_headers, "www-authenticate").starts_with("Bearer"),
                    "{what}"
                );
            }
        }
        // Event streams: a live one, one by private token, and a failure frame.
        let sse = [("accept", "text/event-stream"), ("origin", origin)];
        let mut stream = server.subscribe("c", "", &sse).await;
        check(&stream.headers, &format!("event stream from {origin}"));
        let id = broadcast(&server, "c", json!("live")).await;
        expect_id(&mut stream, &id).await;
        let stream = server.subscribe("c", &format!("?token={alice}"), &sse).await;
        check(&stream.headers, &format!("client stream from {origin}"));
        let mut failing =
            SseStream::connect(&server.url("/channels/c/events?token=unknown_token-0123456789"), &sse).await;
        check(&failing.headers, &format!("failure stream from {origin}"));
        failing.expect_preamble(2000).await;
        expect_failure(&mut failing, "unknown_client").await;
    }
}

/// By default nothing is cross-origin: no CORS header on any answer, whatever the origin.
#[tokio::test]
async fn no_cors_headers_by_default() {
    let server = TestServer::start(KEYED);
    for origin in [APP, EVIL, "null"] {
        for path in [
            "/healthz",
            "/channels/c",
            "/channels/c/clients",
            "/channels/c/messages",
            "/",
        ] {
            let response = call_with(&server, Method::GET, path, &[("origin", origin)], None).await;
            assert_no_cors(response.headers(), &format!("GET {path} from {origin}"));
        }
        let auth = bearer(KEY);
        let headers = [
            ("origin", origin),
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ];
        let body = Some(json!({"name": "n", "contents": 1}).to_string());
        let response = call_with(&server, Method::POST, "/channels/c/messages", &headers, body).await;
        assert_eq!(response.status(), 201, "processed even though not allowed cross-origin");
        assert_no_cors(response.headers(), &format!("POST from {origin}"));
        let stream = server
            .subscribe("c", "", &[("accept", "text/event-stream"), ("origin", origin)])
            .await;
        assert_no_cors(&stream.headers, &format!("event stream from {origin}"));
    }
}

/// `*` allows every origin, but without credentials: `Access-Control-Allow-Origin: *` and no
/// `Access-Control-Allow-Credentials`, so no page anywhere (`null`, `file://`, any site) can
/// make credentialed requests and read the answers. An origin also listed by name keeps its
/// credentials. Several origins by repeating the flag or with `SSEHUB_CORS_ORIGINS`
/// (comma-separated).
#[tokio::test]
async fn wildcard_and_several_origins() {
    let any = TestServer::start(&["--cors-origin", "*"]);
    let both = TestServer::start(&["--cors-origin", "*", "--cors-origin", APP]);
    for (server, origin, allowed) in [
        (&any, APP, Allowed::Any),
        (&any, EVIL, Allowed::Any),
        (&any, "null", Allowed::Any),
        (&any, "file://", Allowed::Any),
        (&any, "http://localhost:3000", Allowed::Any),
        (&both, APP, Allowed::Echo(APP)),
        (&both, EVIL, Allowed::Any),
        (&both, "null", Allowed::Any),
    ] {
        let what = format!("{origin} allowed as {allowed:?}");
        let response = call_with(server, Method::GET, "/channels/c", &[("origin", origin)], None).await;
        assert_allowed(response.headers(), allowed, &what);
        let headers = [("origin", origin), ("content-type", "application/json")];
        let body = Some(json!({"name": "n", "contents": 1}).to_string());
        let response = call_with(server, Method::POST, "/channels/c/messages", &headers, body).await;
        assert_allowed(response.headers(), allowed, &format!("{what}: a send"));
        let stream = server
            .subscribe("c", "", &[("accept", "text/event-stream"), ("origin", origin)])
            .await;
        assert_allowed(&stream.headers, allowed, &format!("{what}: a stream"));
        let response = preflight(server, "/channels/c/events", origin, "GET", Some("authorization")).await;
        expect_preflight(response, allowed, Some("authorization"), &what).await;
    }

    let two = TestServer::start(&["--cors-origin", APP, "--cors-origin", "http://localhost:3000"]);
    for origin in [APP, "http://localhost:3000"] {
        let response = call_with(&two, Method::GET, "/channels/c", &[("origin", origin)], None).await;
        assert_cors(response.headers(), origin, origin);
    }
    let response = call_with(&two, Method::GET, "/channels/c", &[("origin", EVIL)], None).await;
    assert_no_cors(response.headers(), EVIL);

    let (base, _proc) = expect_listening(
        &["serve", "--listen", "127.0.0.1:0"],
        &[("SSEHUB_CORS_ORIGINS", "https://app.example,http://localhost:3000")],
    );
    let client = http_client();
    for (origin, allowed) in [(APP, true), ("http://localhost:3000", true), (EVIL, false)] {
        let response = client
            .get(format!("{base}/channels/c"))
            .header("origin", origin)
            .timeout(REQUEST)
            .send()
            .await
            .expect("GET");
        if allowed {
            assert_cors(response.headers(), origin, &format!("env origin {origin}"));
        } else {
            assert_no_cors(response.headers(), origin);
        }
    }
}

/// The protocol README: "There is no `Access-Control-Expose-Headers`, so a cross-origin page
/// reads the status and body of an answer but not headers such as `WWW-Authenticate`."
#[tokio::test]
async fn www_authenticate_is_exposed() {
    let server = TestServer::start(&["--cors-origin", APP, "--publisher-key", KEY]);
    let headers = [("origin", APP), ("content-type", "application/json")];
    let body = Some(json!({"name": "n", "contents": 1}).to_string());
    let response = call_with(&server, Method::POST, "/channels/c/messages", &headers, body).await;
    assert_eq!(response.status(), 401);
    assert_cors(response.headers(), APP, "401 to the allowed origin");
    assert_eq!(
        all_values(response.headers(), "access-control-expose-headers"),
        "www-authenticate",
        "a cross-origin page can read why credentials were needed"
    );
}
