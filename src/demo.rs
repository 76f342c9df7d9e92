//! The demo backend: what *your own* backend would do after its login.
//!
//! The demo pages in `static/` (chat, sender/receiver, live feed) need a
//! server-side step that a browser must not do itself: registering a client
//! needs a publisher key. In a real deployment your backend does it, after its
//! own login, with `POST /channels/{c}/clients` and `Authorization: Bearer
//! <key>`, and hands the private token to the page. This module is that
//! backend, in process and without passwords, so the demos run out of the box:
//!
//! | route | does |
//! |---|---|
//! | `POST /demo/login` `{channel, name}` | registers a client (public token derived from the name, private token generated); 201 `{channel, public_token, private_token, display_name, last_id}` |
//! | `POST /demo/logout` `{channel, private_token}` | removes that client; 204 |
//! | `POST /demo/feed` `{channel, name, text}` | publishes a `feed.comment` message `{name, text}` (the guestbook's post-back); 201 `{id}` |
//!
//! `last_id` is the channel's newest message at registration: a page that
//! subscribes with it as `lastEventId` misses nothing sent after its login.
//!
//! **Safe by default.** The routes exist only when the server runs in open
//! mode (no publisher key, which the server allows on loopback addresses only)
//! or with `--demo` / `SSEHUB_DEMO=1`. Otherwise `/demo/...` is `404
//! not_found`. Even then they act only on channels whose name starts with
//! `demo-`. Never pass `--demo` to a server that is reachable by people you do
//! not trust: anyone could register clients on the `demo-*` channels.
//!
//! **Presence.** The chat and sender pages show who is online from the
//! `client.connected` / `client.disconnected` / `client.expired` events. The
//! server announces them on channels whose policy says `presence=on`, e.g.
//! `--policy 'demo-*:presence=on'`. So that the demos also work on a plain
//! `cargo run --release`, this module announces the same events itself (same
//! names, same contents) on `demo-*` channels where it registered clients and
//! whose policy has presence off: it compares the channel's client list every
//! [`WATCH_EVERY`]. With presence on, the server's own events are used and the
//! watcher leaves that channel alone.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use warp::http::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::http::Api;
use crate::hub::HubError;
use crate::protocol::{ChannelName, Draft, PublicToken, Registration};

/// How often the presence watcher compares client lists.
pub(crate) const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The demo routes act only on channels with this prefix.
const CHANNEL_PREFIX: &str = "demo-";

/// Largest body the demo routes read.
const BODY_LIMIT: usize = 8 * 1024;

/// Longest name (display name, guestbook author), in characters.
const NAME_MAX: usize = 40;

/// Longest guestbook comment, in characters.
const TEXT_MAX: usize = 1000;

/// The demo routes under `/demo/`. When the demo is off (a publisher key is
/// configured and `--demo` was not given) every request falls through to the
/// next route, which answers `404 not_found`.
pub(crate) fn routes(api: Api) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let enabled = api.access.is_open() || api.demo;
    let demo = Arc::new(Demo {
        api,
        watched: Mutex::new(HashSet::new()),
        watching: AtomicBool::new(false),
    });
    warp::path("demo")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and_then(move |action: String| async move {
            match action.as_str() {
                "login" | "logout" | "feed" if enabled => Ok(action),
                _ => Err(warp::reject::not_found()),
            }
        })
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .and(warp::any().map(move || Arc::clone(&demo)))
        .then(
            |action: String, method: Method, headers: HeaderMap, body, demo: Arc<Demo>| async move {
                if method != Method::POST {
                    return DemoError::MethodNotAllowed.into_response();
                }
                let result = match read_json(&headers, body).await {
                    Err(error) => Err(error),
                    Ok(bytes) => match action.as_str() {
                        "login" => demo.login(&bytes).await,
                        "logout" => demo.logout(&bytes).await,
                        _ => demo.feed(&bytes).await,
                    },
                };
                result.unwrap_or_else(DemoError::into_response)
            },
        )
}

struct Demo {
    api: Api,
    /// Channels whose presence the watcher announces.
    watched: Mutex<HashSet<ChannelName>>,
    /// Whether the watcher task runs.
    watching: AtomicBool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    channel: String,
    name: String,
}

#[derive(Serialize)]
struct LoggedIn {
    channel: ChannelName,
    public_token: PublicToken,
    private_token: String,
    display_name: String,
    last_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Logout {
    channel: String,
    private_token: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Comment {
    channel: String,
    name: String,
    text: String,
}

impl Demo {
    /// `POST /demo/login`: your backend, after checking the user, registers a client.
    async fn login(self: &Arc<Self>, body: &[u8]) -> Result<Response, DemoError> {
        let login: Login = parse(body)?;
        let channel = demo_channel(&login.channel)?;
        let name = clean_text(&login.name, "/name", NAME_MAX)?;
        let public_token = PublicToken::parse(&public_token_for(&name))
            .map_err(|_| DemoError::invalid("/name", "this name gives no usable public token"))?;
        // Taken before registering: replaying after it misses nothing sent from now on.
        let last_id = self.api.hub.info(&channel).await?.last_id;
        let registration = Registration {
            public_token,
            display_name: Some(name.clone()),
            private_token: None, // generated by the hub: a UUID v4
            connection_timeout_seconds: None,
            connection_idle_seconds: None,
        };
        let (client, private_token) = self.api.hub.register(&channel, registration).await?;
        self.watch(&channel);
        let answer = LoggedIn {
            channel,
            public_token: client.public_token,
            private_token,
            display_name: name,
            last_id,
        };
        Ok(warp::reply::with_status(warp::reply::json(&answer), StatusCode::CREATED).into_response())
    }

    /// `POST /demo/logout`: the client named by its private token is removed.
    async fn logout(&self, body: &[u8]) -> Result<Response, DemoError> {
        let logout: Logout = parse(body)?;
        let channel = demo_channel(&logout.channel)?;
        if let Some(client) = self.api.hub.authenticate(&channel, &logout.private_token).await? {
            match self.api.hub.remove_client(&channel, &client.public_token).await {
                Ok(()) | Err(HubError::UnknownClient) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(StatusCode::NO_CONTENT.into_response())
    }

    /// `POST /demo/feed`: the guestbook's post-back, published to every subscriber.
    async fn feed(&self, body: &[u8]) -> Result<Response, DemoError> {
        let comment: Comment = parse(body)?;
        let channel = demo_channel(&comment.channel)?;
        let name = clean_text(&comment.name, "/name", NAME_MAX)?;
        let text = clean_text(&comment.text, "/text", TEXT_MAX)?;
        let contents = json!({ "name": name, "text": text });
        let published = self
            .api
            .hub
            .publish(&channel, Draft::system("feed.comment", contents))
            .await?;
        Ok(
            warp::reply::with_status(warp::reply::json(&json!({ "id": published.id })), StatusCode::CREATED)
                .into_response(),
        )
    }

    /// Announces presence on `channel` from here if its policy does not.
    fn watch(self: &Arc<Self>, channel: &ChannelName) {
        if self.api.access.policy(channel).presence {
            return; // the server announces it
        }
        self.watched.lock().expect("not poisoned").insert(channel.clone());
        if !self.watching.swap(true, Ordering::SeqCst) {
            tokio::spawn(Arc::clone(self).watch_presence());
        }
    }

    /// Compares each watched channel's client list with the previous one and
    /// announces what changed, as the server does on channels with presence on.
    async fn watch_presence(self: Arc<Self>) {
        let hub = self.api.hub.clone();
        let mut seen: HashMap<ChannelName, HashMap<PublicToken, (Option<String>, bool)>> = HashMap::new();
        let mut every = tokio::time::interval(WATCH_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        while !hub.is_shutting_down() {
            every.tick().await;
            let channels: Vec<ChannelName> = self.watched.lock().expect("not poisoned").iter().cloned().collect();
            for channel in channels {
                let Ok(clients) = hub.clients(&channel).await else {
                    continue; // store unavailable: try again next tick
                };
                let now: HashMap<PublicToken, (Option<String>, bool)> = clients
                    .into_iter()
                    .map(|c| (c.public_token, (c.display_name, c.connected)))
                    .collect();
                let before = seen.remove(&channel).unwrap_or_default();
                let mut events = Vec::new();
                for (token, (name, connected)) in &now {
                    let was = before.get(token).is_some_and(|(_, connected)| *connected);
                    if *connected != was {
                        let event = if *connected {
                            "client.connected"
                        } else {
                            "client.disconnected"
                        };
                        events.push((event, token, name));
                    }
                }
                for (token, (name, was)) in &before {
                    if !now.contains_key(token) {
                        // Removed while connected: disconnected (as the server says for a
                        // deleted client); removed while idle: expired.
                        events.push((if *was { "client.disconnected" } else { "client.expired" }, token, name));
                    }
                }
                for (event, token, name) in events {
                    let contents = json!({ "public_token": token, "display_name": name });
                    if let Err(error) = hub.publish(&channel, Draft::system(event, contents)).await {
                        tracing::warn!(%channel, event, %error, "demo presence event not stored");
                    }
                }
                if now.is_empty() {
                    self.watched.lock().expect("not poisoned").remove(&channel);
                } else {
                    seen.insert(channel, now);
                }
            }
        }
    }
}

/// A public token from a display name: a readable slug plus a hash of the
/// whole name, so the same name always gets the same token (a second login
/// under a name in use is `409 client_exists`) and names that differ only in
/// punctuation or letters outside ASCII still get different tokens.
pub(crate) fn public_token_for(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars() {
        if slug.len() >= 32 {
            break;
        }
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    // FNV-1a: stable across runs and builds (a std hasher is not).
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let prefix = if slug.is_empty() { "user" } else { slug };
    format!("{prefix}-{:08x}", hash as u32)
}

fn demo_channel(raw: &str) -> Result<ChannelName, DemoError> {
    if !raw.starts_with(CHANNEL_PREFIX) {
        return Err(DemoError::invalid(
            "/channel",
            "the demo routes only act on channels whose name starts with 'demo-'",
        ));
    }
    ChannelName::parse(raw).map_err(|_| DemoError::invalid("/channel", "not a valid channel name"))
}

/// Trims, collapses runs of whitespace, refuses control characters and lengths
/// outside 1..=`max` characters.
fn clean_text(raw: &str, pointer: &str, max: usize) -> Result<String, DemoError> {
    let text = if pointer == "/text" {
        raw.trim().to_owned() // comments keep their line breaks
    } else {
        raw.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(DemoError::invalid(pointer, "control characters are not allowed"));
    }
    match text.chars().count() {
        0 => Err(DemoError::invalid(pointer, "must not be empty")),
        n if n > max => Err(DemoError::invalid(pointer, &format!("at most {max} characters"))),
        _ => Ok(text),
    }
}

fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, DemoError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| DemoError::InvalidJson(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| DemoError::invalid("", &e.to_string()))
}

/// JSON only, at most [`BODY_LIMIT`] bytes.
async fn read_json<S, B>(headers: &HeaderMap, mut body: S) -> Result<BytesMut, DemoError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/json")
        });
    if !json {
        return Err(DemoError::UnsupportedMediaType);
    }
    let mut buffer = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| DemoError::InvalidJson(format!("the body could not be read: {e}")))?;
        if buffer.len() + chunk.remaining() > BODY_LIMIT {
            return Err(DemoError::BodyTooLarge);
        }
        buffer.put(chunk);
    }
    Ok(buffer)
}

/// The demo routes' errors, in the API's error shape (`error.schema.json`).
#[derive(Debug)]
enum DemoError {
    InvalidJson(String),
    Invalid { pointer: String, message: String },
    UnsupportedMediaType,
    BodyTooLarge,
    MethodNotAllowed,
    Hub(HubError),
}

impl From<HubError> for DemoError {
    fn from(e: HubError) -> Self {
        DemoError::Hub(e)
    }
}

impl DemoError {
    fn invalid(pointer: &str, message: &str) -> Self {
        DemoError::Invalid {
            pointer: pointer.to_owned(),
            message: message.to_owned(),
        }
    }

    fn into_response(self) -> Response {
        let (status, code) = match &self {
            DemoError::InvalidJson(_) => (StatusCode::BAD_REQUEST, "invalid_json"),
            DemoError::Invalid { .. } => (StatusCode::BAD_REQUEST, "schema_violation"),
            DemoError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            DemoError::BodyTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"),
            DemoError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            DemoError::Hub(HubError::ClientExists) => (StatusCode::CONFLICT, "client_exists"),
            DemoError::Hub(HubError::UnknownClient) => (StatusCode::NOT_FOUND, "unknown_client"),
            DemoError::Hub(HubError::UnknownRecipient) => (StatusCode::NOT_FOUND, "unknown_recipient"),
            DemoError::Hub(HubError::ShuttingDown) => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
            DemoError::Hub(HubError::TooManySubscribers(_)) => {
                (StatusCode::SERVICE_UNAVAILABLE, "too_many_subscribers")
            }
            DemoError::Hub(HubError::Store(_)) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        };
        let (message, details) = match self {
            DemoError::InvalidJson(message) => (message, json!([])),
            DemoError::Invalid { pointer, message } => (
                "the body does not match what this demo route expects".to_owned(),
                json!([{ "pointer": pointer, "message": message }]),
            ),
            DemoError::UnsupportedMediaType => (
                "send the body as JSON with 'Content-Type: application/json'".to_owned(),
                json!([]),
            ),
            DemoError::BodyTooLarge => (format!("the body is larger than {BODY_LIMIT} bytes"), json!([])),
            DemoError::MethodNotAllowed => ("the demo routes take POST only".to_owned(), json!([])),
            DemoError::Hub(error) => (error.to_string(), json!([])),
        };
        let body = json!({ "error": { "code": code, "message": message, "details": details } });
        let mut response = warp::reply::with_status(warp::reply::json(&body), status).into_response();
        if status == StatusCode::METHOD_NOT_ALLOWED {
            response.headers_mut().insert(ALLOW, HeaderValue::from_static("POST"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_tokens_are_stable_valid_and_distinct() {
        let ann = public_token_for("Ann");
        assert_eq!(ann, public_token_for("Ann"));
        assert!(ann.starts_with("ann-"), "{ann}");
        assert_ne!(ann, public_token_for("ann"));
        let xss = public_token_for("<img src=x onerror=alert(1)>");
        assert!(xss.starts_with("img-src-x-onerror-alert-1-"), "{xss}");
        assert!(public_token_for("李").starts_with("user-"));
        for name in ["Ann", "<img src=x onerror=alert(1)>", "李", &"x".repeat(40), "a  b"] {
            assert!(PublicToken::parse(&public_token_for(name)).is_ok(), "{name}");
        }
    }

    #[test]
    fn text_is_cleaned_and_bounded() {
        assert_eq!(clean_text("  Ann   Lee ", "/name", 40).unwrap(), "Ann Lee");
        assert!(clean_text("   ", "/name", 40).is_err());
        assert!(clean_text("a\u{7}b", "/name", 40).is_err());
        assert!(clean_text(&"x".repeat(41), "/name", 40).is_err());
        assert_eq!(
            clean_text(" line one\nline two ", "/text", 100).unwrap(),
            "line one\nline two"
        );
        assert!(demo_channel("chat").is_err());
        assert!(demo_channel("demo-chat").is_ok());
    }
}
