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
//! `client.connected` / `client.disconnected` / `client.expired` events, which
//! the server announces on channels whose policy says `presence=on`. Wherever
//! the demo routes are on, the `demo-*` channels get that policy by default
//! (see [`presence_rule`]); a `--policy` rule that matches them comes first.
//!
//! **An add-on, not a layer.** This module uses the hub as your backend's own
//! code would, and the HTTP layer's body reading and error answers; nothing in
//! `src/http/` knows it exists. It is compiled only with the `demo` feature
//! (on by default): `cargo build --no-default-features` leaves it out.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use warp::http::{HeaderMap, Method, StatusCode};
use warp::{Filter, Reply};

use crate::access::PolicyRule;
use crate::http::{answer, headers_and_body, json_body, AddOn, ApiError, Body};
use crate::hub::{Hub, HubError};
use crate::protocol::schema::Violation;
use crate::protocol::{ChannelName, Draft, ProtocolError, PublicToken, Registration};

/// The demo routes act only on channels with this prefix.
const CHANNEL_PREFIX: &str = "demo-";

/// Largest body the demo routes read.
const BODY_LIMIT: usize = 8 * 1024;

/// Longest name (display name, guestbook author), in characters.
const NAME_MAX: usize = 40;

/// Longest guestbook comment, in characters.
const TEXT_MAX: usize = 1000;

/// The policy the `demo-*` channels get where the demo is on: presence
/// announced by the server, everything else as for any channel.
pub(crate) fn presence_rule() -> PolicyRule {
    format!("{CHANNEL_PREFIX}*:presence=on")
        .parse()
        .expect("the demo's policy rule is well-formed")
}

/// The demo routes under `/demo/`, for the server to add beside the API's.
pub(crate) fn routes(hub: Hub) -> AddOn {
    warp::path("demo")
        .and(warp::path::param::<String>())
        .and(warp::path::end())
        .and_then(|action: String| async move {
            match action.as_str() {
                "login" | "logout" | "feed" => Ok(action),
                _ => Err(warp::reject::not_found()),
            }
        })
        .and(warp::method())
        .and(headers_and_body(BODY_LIMIT))
        .and(warp::any().map(move || hub.clone()))
        .then(
            |action: String, method: Method, headers: HeaderMap, body: Body, hub: Hub| async move {
                if method != Method::POST {
                    return ApiError::MethodNotAllowed { allow: "POST" }.into_response();
                }
                let body = match json_body(&headers, body) {
                    Ok(body) => body,
                    Err(error) => return error.into_response(),
                };
                match action.as_str() {
                    "login" => answer(login(&hub, &body).await, StatusCode::CREATED),
                    "logout" => match logout(&hub, &body).await {
                        Ok(()) => StatusCode::NO_CONTENT.into_response(),
                        Err(error) => error.into_response(),
                    },
                    _ => answer(feed(&hub, &body).await, StatusCode::CREATED),
                }
            },
        )
        .boxed()
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

#[derive(Serialize)]
struct Commented {
    id: String,
}

/// `POST /demo/login`: your backend, after checking the user, registers a client.
async fn login(hub: &Hub, body: &[u8]) -> Result<LoggedIn, ApiError> {
    let login: Login = parse(body)?;
    let channel = demo_channel(&login.channel)?;
    let name = clean_text(&login.name, "/name", NAME_MAX)?;
    let public_token = PublicToken::parse(&public_token_for(&name))
        .map_err(|_| invalid("/name", "this name gives no usable public token"))?;
    // Taken before registering: replaying after it misses nothing sent from now on.
    let last_id = hub.info(&channel).await?.last_id;
    let registration = Registration {
        public_token,
        display_name: Some(name.clone()),
        private_token: None, // generated by the hub: a UUID v4
        connection_timeout_seconds: None,
        connection_idle_seconds: None,
    };
    let (client, private_token) = hub.register(&channel, registration).await?;
    Ok(LoggedIn {
        channel,
        public_token: client.public_token,
        private_token,
        display_name: name,
        last_id,
    })
}

/// `POST /demo/logout`: the client named by its private token is removed.
async fn logout(hub: &Hub, body: &[u8]) -> Result<(), ApiError> {
    let logout: Logout = parse(body)?;
    let channel = demo_channel(&logout.channel)?;
    if let Some(client) = hub.authenticate(&channel, &logout.private_token).await? {
        match hub.remove_client(&channel, &client.public_token).await {
            Ok(()) | Err(HubError::UnknownClient) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(())
}

/// `POST /demo/feed`: the guestbook's post-back, published to every subscriber.
async fn feed(hub: &Hub, body: &[u8]) -> Result<Commented, ApiError> {
    let comment: Comment = parse(body)?;
    let channel = demo_channel(&comment.channel)?;
    let name = clean_text(&comment.name, "/name", NAME_MAX)?;
    let text = clean_text(&comment.text, "/text", TEXT_MAX)?;
    let contents = json!({ "name": name, "text": text });
    let published = hub.publish(&channel, Draft::system("feed.comment", &contents)).await?;
    Ok(Commented { id: published.id })
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
    format!("{prefix}-{:08x}", hash & 0xffff_ffff)
}

/// A body value the demo does not accept, at `pointer`.
fn invalid(pointer: &str, message: &str) -> ApiError {
    ApiError::Invalid(Violation {
        pointer: pointer.to_owned(),
        message: message.to_owned(),
    })
}

fn demo_channel(raw: &str) -> Result<ChannelName, ApiError> {
    if !raw.starts_with(CHANNEL_PREFIX) {
        return Err(invalid(
            "/channel",
            "the demo routes only act on channels whose name starts with 'demo-'",
        ));
    }
    ChannelName::parse(raw).map_err(|_| invalid("/channel", "not a valid channel name"))
}

/// Trims, collapses runs of whitespace, refuses control characters and lengths
/// outside 1..=`max` characters.
fn clean_text(raw: &str, pointer: &str, max: usize) -> Result<String, ApiError> {
    let text = if pointer == "/text" {
        raw.trim().to_owned() // comments keep their line breaks
    } else {
        raw.split_whitespace().collect::<Vec<_>>().join(" ")
    };
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(invalid(pointer, "control characters are not allowed"));
    }
    match text.chars().count() {
        0 => Err(invalid(pointer, "must not be empty")),
        n if n > max => Err(invalid(pointer, &format!("at most {max} characters"))),
        _ => Ok(text),
    }
}

/// The body as a `T`: `invalid_json`, or `schema_violation` at the whole body.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| ProtocolError::InvalidJson(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| invalid("", &e.to_string()))
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

    #[test]
    fn demo_channels_announce_presence() {
        let access = crate::access::Access::new(Vec::new(), vec![presence_rule()], Vec::new());
        assert!(access.policy(&ChannelName::parse("demo-chat").unwrap()).presence);
        assert!(!access.policy(&ChannelName::parse("chat").unwrap()).presence);
    }
}
