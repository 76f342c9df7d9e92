//! What each route does, as plain async functions over already-matched inputs.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use warp::http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use warp::http::{HeaderMap, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::error::ApiError;
use super::Api;
use crate::hub::SubscribeRequest;
use crate::protocol::{ChannelName, Draft, ProtocolError, SubscribeQuery};

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

/// `GET /channels/{channel}`
pub(super) async fn channel_info(api: Api, channel: String) -> Response {
    let result = async {
        let channel = ChannelName::parse(&channel)?;
        Ok::<_, ApiError>(api.hub.info(&channel).await?)
    }
    .await;
    match result {
        Ok(info) => warp::reply::json(&info).into_response(),
        Err(error) => error.into_response(),
    }
}

/// `POST /channels/{channel}/messages`. Checks, in order: channel name (400),
/// content type (415), size (413), JSON (400), schema (400); then stores (201).
pub(super) async fn send<S, B>(api: Api, channel: String, headers: HeaderMap, body: S) -> Response
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let result = async {
        let channel = ChannelName::parse(&channel)?;
        if !is_json(headers.get(CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let body = read_limited(&headers, body, api.body_limit).await?;
        let draft = Draft::from_json(&body)?;
        Ok(api.hub.publish(&channel, draft).await?)
    }
    .await;
    match result {
        Ok(published) => {
            warp::reply::with_status(warp::reply::json(&published), StatusCode::CREATED)
                .into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// `application/json`, with or without parameters, or any `application/*+json`.
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Reads the body, refusing it as soon as it is known to exceed `limit`: from
/// `Content-Length` before reading anything, or while reading a chunked body.
async fn read_limited<S, B>(
    headers: &HeaderMap,
    mut body: S,
    limit: usize,
) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit as u64) as usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk
            .map_err(|e| ProtocolError::InvalidJson(format!("the body could not be read: {e}")))?;
        if buffer.len() + chunk.remaining() > limit {
            return Err(ApiError::BodyTooLarge { limit });
        }
        buffer.put(chunk);
    }
    Ok(buffer.freeze())
}

/// `GET /channels/{channel}/events`
pub(super) async fn events(
    api: Api,
    channel: String,
    query: String,
    headers: HeaderMap,
) -> Response {
    // EventSource always sends this; such a client cannot read an error body, so
    // it gets its error as a failure frame instead.
    let wants_stream = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"));
    let result = async {
        let channel = ChannelName::parse(&channel)?;
        let query = SubscribeQuery::parse(&query, api.max_timeout)?;
        // The header wins: EventSource reconnects to the same URL, query and all,
        // with a newer Last-Event-ID.
        let header = headers
            .get("last-event-id")
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let request = SubscribeRequest {
            last_event_id: header.or(query.last_event_id),
            timeout: query.timeout,
        };
        Ok::<_, ApiError>(api.hub.subscribe(channel, request).await?)
    }
    .await;
    match result {
        Ok(stream) => event_stream(warp::reply::stream(stream).into_response()),
        Err(error) if wants_stream && error.is_stream_failure() => {
            let frames = api.hub.failure_stream(error.code(), &error.message());
            event_stream(Response::new(frames.into()))
        }
        Err(error) => error.into_response(),
    }
}

/// The headers of every SSE answer.
fn event_stream(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}
