//! Cross-origin requests: nothing is allowed by default; each origin named by
//! `--cors-origin` may call every endpoint, credentials included (an
//! `EventSource` with `withCredentials`, a `fetch` with `credentials: 'include'`).
//! `--cors-origin '*'` lets any other origin call it too, but without
//! credentials: those answers say `Access-Control-Allow-Origin: *`, which
//! browsers never combine with credentials.
//!
//! This sits in front of the routes: a preflight is answered here, and every
//! answer to an allowed origin gets the CORS headers, errors included, so a
//! page can read why its request failed.

use warp::http::header::{
    HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use warp::http::{HeaderMap, Method, StatusCode};
use warp::reply::Response;
use warp::Reply;

use super::error::ApiError;
use crate::access::{Access, CorsOrigin};

const METHODS: &str = "GET, HEAD, POST, DELETE";
const HEADERS: &str = "authorization, content-type, last-event-id";
/// The `Access-Control-Allow-Origin` of an origin only `*` allows.
const ANY: &str = "*";

/// The `Access-Control-Allow-Origin` value for the request's `Origin`, when
/// the configuration allows it: the origin itself when it is listed, `*` when
/// only the wildcard allows it.
pub(crate) fn allowed_origin(access: &Access, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(ORIGIN)?;
    match access.cors_origin(origin.to_str().ok()?)? {
        CorsOrigin::Listed => Some(origin.clone()),
        CorsOrigin::Any => Some(HeaderValue::from_static(ANY)),
    }
}

/// The answer to a CORS preflight, or `None` when the request is not one.
pub(crate) fn preflight(access: &Access, method: &Method, headers: &HeaderMap) -> Option<Response> {
    if method != Method::OPTIONS
        || !headers.contains_key(ORIGIN)
        || !headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
    {
        return None;
    }
    let Some(origin) = allowed_origin(access, headers) else {
        return Some(ApiError::Forbidden("this origin is not allowed to call this server").into_response());
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(METHODS));
    let asked = headers.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned();
    out.insert(
        ACCESS_CONTROL_ALLOW_HEADERS,
        asked.unwrap_or(HeaderValue::from_static(HEADERS)),
    );
    out.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
    decorate(&mut response, Some(origin));
    Some(response)
}

/// Adds the CORS headers for an allowed origin (`origin` from
/// [`allowed_origin`]): credentials only with an echoed, listed origin,
/// never with `*`. The answer always varies by origin, so caches never serve
/// one origin's answer to another.
pub(crate) fn decorate(response: &mut Response, origin: Option<HeaderValue>) {
    let headers = response.headers_mut();
    headers.append(VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin {
        let credentials = origin != ANY;
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if credentials {
            headers.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
        }
        // So a page can read why a request needed credentials.
        headers.insert(
            ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("www-authenticate"),
        );
    }
}
