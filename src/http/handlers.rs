//! What each route does, as plain async functions over already-matched inputs.
//! Each checks, in order: path values (400/404), credentials (401/403),
//! content type (415), size (413), JSON and schema (400); then acts.

use std::sync::Arc;

use serde::Serialize;
use warp::http::header::{HeaderName, HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::auth::{bearer, identify, may_manage, may_send, may_watch, Caller};
use super::body::{self, Body};
use super::error::ApiError;
use super::socket::EventSocket;
use super::Api;
use crate::hub::{ClientView, HubError, Outlet, SubscribeRequest};
use crate::protocol::schema::Violation;
use crate::protocol::{ChannelName, ClientListQuery, Draft, PublicToken, Registration, Sender, SubscribeQuery};

/// The resume position a reconnecting `EventSource` sends.
const LAST_EVENT_ID: HeaderName = HeaderName::from_static("last-event-id");

/// Turns a handler's result into the answer: `status` and JSON, or the error.
pub(crate) fn answer<T: Serialize>(result: Result<T, ApiError>, status: StatusCode) -> Response {
    match result {
        Ok(body) => warp::reply::with_status(warp::reply::json(&body), status).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /healthz`: 200 when everything is up, 503 otherwise, same body.
pub(super) async fn healthz(api: Api) -> Response {
    let health = api.hub.health().await;
    let status = if health.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&health), status).into_response()
}

/// `GET /channels/{channel}`: readable by whoever may read presence, since it
/// counts clients.
pub(super) async fn channel_info(api: Api, channel: String, headers: HeaderMap) -> Response {
    let result = async {
        let channel = ChannelName::from_path(&channel)?;
        may_watch(
            &api.access.policy(&channel),
            &identify(&api, &channel, bearer(&headers)?).await?,
        )?;
        Ok(api.hub.info(&channel).await?)
    }
    .await;
    answer(result, StatusCode::OK)
}

/// `POST /channels/{channel}/messages`, whichever transport read the body.
pub(super) async fn send(api: Api, channel: String, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let channel = ChannelName::from_path(&channel)?;
        let caller = identify(&api, &channel, bearer(&headers)?).await?;
        may_send(&api.access.policy(&channel), &caller)?;
        let body = body::json(&headers, body)?;
        let mut draft = Draft::from_json(&body)?;
        // `from` comes from the credentials only: the schema refuses it in a body.
        if let Caller::Client(client) = caller {
            draft.from = Some(Sender {
                public_token: client.public_token,
                display_name: client.display_name,
            });
        }
        Ok(api.hub.publish(&channel, draft).await?)
    }
    .await;
    answer(result, StatusCode::CREATED)
}

/// The answer to a registration: the only one that shows the private token.
#[derive(Serialize)]
struct RegisteredBody {
    client: ClientView,
    private_token: String,
}

/// `POST /channels/{channel}/clients`
pub(super) async fn register(api: Api, channel: String, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        let channel = ChannelName::from_path(&channel)?;
        may_manage(&identify(&api, &channel, bearer(&headers)?).await?)?;
        let body = body::json(&headers, body)?;
        let registration = Registration::from_json(&body)?;
        if let Some(seconds) = registration.connection_timeout_seconds {
            if seconds > api.max_timeout.as_secs() {
                return Err(ApiError::Invalid(Violation {
                    pointer: "/connection_timeout_seconds".into(),
                    message: format!(
                        "{seconds} is over this server's maximum of {} seconds",
                        api.max_timeout.as_secs()
                    ),
                }));
            }
        }
        let (client, private_token) = api.hub.register(&channel, registration).await?;
        Ok(RegisteredBody { client, private_token })
    }
    .await;
    answer(result, StatusCode::CREATED)
}

/// `GET /channels/{channel}/clients`: one page of the presence list. Like the
/// events endpoint, it checks its query before the credentials.
pub(super) async fn clients(api: Api, channel: String, query: String, headers: HeaderMap) -> Response {
    let result = async {
        let channel = ChannelName::from_path(&channel)?;
        let page = ClientListQuery::parse(&query)?;
        may_watch(
            &api.access.policy(&channel),
            &identify(&api, &channel, bearer(&headers)?).await?,
        )?;
        Ok(api.hub.clients(&channel, page.after, page.limit).await?)
    }
    .await;
    answer(result, StatusCode::OK)
}

/// `GET /channels/{channel}/clients/{public_token}`
pub(super) async fn client(api: Api, channel: String, public: String, headers: HeaderMap) -> Response {
    let result = async {
        let channel = ChannelName::from_path(&channel)?;
        may_watch(
            &api.access.policy(&channel),
            &identify(&api, &channel, bearer(&headers)?).await?,
        )?;
        let public = PublicToken::from_path(&public)?;
        Ok(api.hub.client(&channel, &public).await?)
    }
    .await;
    answer(result, StatusCode::OK)
}

/// `DELETE /channels/{channel}/clients/{public_token}`: 204.
pub(super) async fn remove_client(api: Api, channel: String, public: String, headers: HeaderMap) -> Response {
    let result = async {
        let channel = ChannelName::from_path(&channel)?;
        may_manage(&identify(&api, &channel, bearer(&headers)?).await?)?;
        let public = PublicToken::from_path(&public)?;
        Ok::<_, ApiError>(api.hub.remove_client(&channel, &public).await?)
    }
    .await;
    match result {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => error.into_response(),
    }
}

/// `GET /channels/{channel}/events`
///
/// `socket`: the connection's socket when it is served by our own front door,
/// for the hub's writer to send to directly.
pub(super) async fn events(
    api: Api,
    channel: String,
    query: String,
    headers: HeaderMap,
    socket: Option<EventSocket>,
) -> Response {
    let result = async {
        let channel = ChannelName::from_path(&channel)?;
        let resume = headers.get(LAST_EVENT_ID).map(HeaderValue::as_bytes);
        let query = SubscribeQuery::parse(&query, resume, api.max_timeout)?;
        // A malformed header is refused even beside a `?token=`: a bad
        // credential is never ignored.
        let header = bearer(&headers)?;
        let token = query.token.as_deref().or(header);
        // On a stream, a token that is not a key names a client: an unknown one
        // is `unknown_client` (it may have expired), not a generic 401.
        let caller = match token {
            Some(token) if !api.access.is_publisher_key(token) => match api.hub.authenticate(&channel, token).await? {
                Some(client) => Caller::Client(client),
                None => return Err(HubError::UnknownClient.into()),
            },
            token => identify(&api, &channel, token).await?,
        };
        may_watch(&api.access.policy(&channel), &caller)?;
        let request = SubscribeRequest {
            last_event_id: query.last_event_id,
            timeout: query.timeout,
            client: match caller {
                Caller::Client(client) => Some(client),
                _ => None,
            },
            outlet: socket.map(|EventSocket(socket)| socket as Arc<dyn Outlet>),
        };
        Ok::<_, ApiError>(api.hub.subscribe(channel, request).await?)
    }
    .await;
    match result {
        Ok(stream) => event_stream(warp::reply::stream(stream).into_response()),
        Err(error) => stream_refused(&api, &headers, error),
    }
}

/// The answer to a subscription refused with `error`: a failure frame for an
/// EventSource client (which always sends `Accept: text/event-stream` and
/// cannot read an error body), the JSON error for anyone else.
pub(super) fn stream_refused(api: &Api, headers: &HeaderMap, error: ApiError) -> Response {
    let wants_stream = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    if wants_stream && error.is_stream_failure() {
        let frames = api.hub.failure_stream(error.code(), &error.message());
        return event_stream(Response::new(frames.into()));
    }
    error.into_response()
}

/// The headers of every SSE answer.
fn event_stream(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
