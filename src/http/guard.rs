//! What every answer goes through, whichever path serves it: a CORS
//! preflight is answered here; everything else by the routes, with a panic
//! answered as a 500 `internal` (logged) instead of a dropped connection, and
//! the CORS headers of an allowed origin added.

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use tower_service::Service;
use warp::http::header::HeaderValue;
use warp::http::Request;
use warp::reply::Response;

use super::cors::{allowed_origin, decorate, preflight};
use super::error::ApiError;
use crate::access::Access;

/// The answer to one request, as every connection gives it (see the module
/// documentation).
pub(super) async fn respond<S, B>(service: &mut S, access: &Access, request: Request<B>) -> Response
where
    S: Service<Request<B>, Response = Response, Error = Infallible>,
{
    if let Some(answer) = preflight(access, request.method(), request.headers()) {
        return answer;
    }
    let origin = allowed_origin(access, request.headers());
    let answer = service.call(request).map(|result| match result {
        Ok(response) => response,
        Err(never) => match never {},
    });
    guarded(origin, answer).await
}

/// `answer`, or a 500 `internal` (logged) if it panics, with the CORS
/// headers of `origin` (an allowed one) added.
///
/// A combinator rather than an `async fn`: an async function that takes a
/// future by value keeps room for it twice in its caller's future (the
/// argument and the callee's copy), and every subscriber's task carries its
/// caller's size for as long as its stream is open.
pub(super) fn guarded(
    origin: Option<HeaderValue>,
    answer: impl Future<Output = Response>,
) -> impl Future<Output = Response> {
    AssertUnwindSafe(answer).catch_unwind().map(move |result| {
        let mut response = result.unwrap_or_else(|_| {
            tracing::error!("a request handler panicked");
            ApiError::Internal.into_response()
        });
        decorate(&mut response, origin);
        response
    })
}
