//! Request bodies as the handlers see them: read once, by the connection,
//! within the body limit; checked by the handler in the order the contract
//! gives (`Content-Type` before size).
//!
//! The connection reads the whole body before the routes run, but a body it
//! refused (too large) is not an answer yet: the handler checks credentials
//! and `Content-Type` first, then [`json`] turns the refusal into the answer
//! (protocol/README.md, "A request is checked in this order").

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use warp::http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use warp::http::HeaderMap;
use warp::{Filter, Rejection};

use super::error::ApiError;
use crate::protocol::ProtocolError;

/// A request body as the connection read it: whole and within the limit, or
/// why not (`413 body_too_large`, or `400 invalid_json` when it could not be read).
pub(crate) type Body = Result<Bytes, ApiError>;

/// In a request's extensions when the connection did not read its body
/// because it is larger than the connection's limit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyTooLarge {
    pub(crate) limit: usize,
}

/// The request's headers and its body, at most `limit` bytes (a route's own
/// limit may be below the connection's).
pub(crate) fn headers_and_body(limit: usize) -> impl Filter<Extract = (HeaderMap, Body), Error = Rejection> + Clone {
    warp::header::headers_cloned()
        .and(warp::ext::optional::<BodyTooLarge>())
        .and(warp::body::stream())
        .then(
            move |headers: HeaderMap, refused: Option<BodyTooLarge>, body| async move {
                let body = match refused {
                    Some(BodyTooLarge { limit }) => Err(ApiError::BodyTooLarge { limit }),
                    None => read_limited(&headers, body, limit).await,
                };
                (headers, body)
            },
        )
        .untuple_one()
}

/// The body of a request that must be JSON: `415` unless it says it is, then
/// the transport's refusal if there was one.
///
/// # Errors
/// [`ApiError::UnsupportedMediaType`], or why the body was not read.
pub(crate) fn json(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    if !is_json(headers.get(CONTENT_TYPE)) {
        return Err(ApiError::UnsupportedMediaType);
    }
    body
}

/// `application/json`, with or without parameters, or any `application/*+json`
/// (compared without allocating: this runs on every send).
fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    let Some(subtype) = strip_prefix_ignore_case(essence, "application/") else {
        return false;
    };
    subtype.eq_ignore_ascii_case("json")
        || subtype.len() > "+json".len()
            && subtype
                .get(subtype.len() - "+json".len()..)
                .is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
}

/// `text` without `prefix`, compared ignoring ASCII case.
fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// Reads the body, refusing it as soon as it is known to exceed `limit`: from
/// `Content-Length` before reading anything, or while reading a chunked body.
async fn read_limited<S, B>(headers: &HeaderMap, mut body: S, limit: usize) -> Body
where
    S: Stream<Item = Result<B, warp::Error>> + Unpin,
    B: Buf,
{
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let unreadable = |e: warp::Error| ProtocolError::InvalidJson(format!("the body could not be read: {e}"));
    // The usual body arrives whole, in one chunk: kept as it is, not copied.
    let Some(first) = body.next().await else {
        return Ok(Bytes::new());
    };
    let mut first = first.map_err(unreadable)?;
    if first.remaining() > limit {
        return Err(ApiError::BodyTooLarge { limit });
    }
    let Some(second) = body.next().await else {
        return Ok(first.copy_to_bytes(first.remaining()));
    };
    let mut buffer = BytesMut::with_capacity(declared.unwrap_or(1024).min(limit));
    buffer.put(first);
    let mut next = Some(second);
    while let Some(chunk) = next {
        let chunk = chunk.map_err(unreadable)?;
        if buffer.len() + chunk.remaining() > limit {
            return Err(ApiError::BodyTooLarge { limit });
        }
        buffer.put(chunk);
        next = body.next().await;
    }
    Ok(buffer.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_media_types() {
        let is = |text: &str| is_json(Some(&HeaderValue::from_str(text).unwrap()));
        for yes in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;x=y",
            "application/vnd.api+json",
            "application/merge-patch+JSON",
        ] {
            assert!(is(yes), "{yes}");
        }
        for no in [
            "application/jsonx",
            "application/+json",
            "application/",
            "text/json",
            "text/plain",
            "json",
            "",
            "applicationjson",
        ] {
            assert!(!is(no), "{no}");
        }
        assert!(!is_json(None));
    }
}
