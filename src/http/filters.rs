//! Routes. A route matches on the path alone; the handler checks the method and
//! reads and validates the rest itself, so a bad request is answered by the
//! route it was meant for and never falls through to another one.

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};

use percent_encoding::percent_decode_str;
use warp::filters::path::Peek;
use warp::filters::BoxedFilter;
use warp::http::{HeaderMap, Method};
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use super::body::{headers_and_body, Body};
use super::error::ApiError;
use super::socket::EventSocket;
use super::{handlers, Api};

/// Routes an embedder adds beside the API's (the demo backend), tried after
/// the API's own and before the static files.
pub(crate) type AddOn = BoxedFilter<(Response,)>;

/// Every route, with unmatched requests answered as JSON 404/405.
pub(crate) fn routes(
    api: Api,
    add_on: Option<AddOn>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let static_files = static_files(api.static_dir.clone());
    let add_on = add_on.unwrap_or_else(|| {
        warp::any()
            .and_then(|| async { Err(warp::reject::not_found()) })
            .boxed()
    });
    healthz(api.clone())
        .or(events(api.clone()))
        .unify()
        .or(messages(api.clone()))
        .unify()
        .or(clients(api.clone()))
        .unify()
        .or(client(api.clone()))
        .unify()
        .or(channel(api.clone()))
        .unify()
        .or(add_on)
        .unify()
        .or(static_files)
        .unify()
        .recover(answer_rejection)
        .unify()
}

/// `GET /<file>`: the static directory, after every API route. warp's
/// `fs::dir` logs a path it refuses (`..`, a backslash) as a warning and one
/// it cannot open (through a file, `/index.html/x`; a NUL) as an error, but
/// only a client can send those: they are answered 404 here first, logged at
/// debug. What reaches warp exists, so what it still logs (a file the server
/// may not read) is the server's own fault, worth its warning.
fn static_files(dir: PathBuf) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let checked = dir.clone();
    warp::get()
        .and(warp::path::peek())
        .and_then(move |path: Peek| {
            let dir = checked.clone();
            async move { servable(&dir, path.as_str()).await }
        })
        .untuple_one()
        .and(warp::fs::dir(dir))
        .map(Reply::into_response)
}

/// Whether the (percent-encoded) request path names something in `dir`
/// warp may serve: `Err(not found)`, logged at debug, for a path a client
/// made up.
async fn servable(dir: &Path, path: &str) -> Result<(), Rejection> {
    let made_up = |why: &str| {
        tracing::debug!(why, "static file request refused");
        warp::reject::not_found()
    };
    let path = percent_decode_str(path)
        .decode_utf8()
        .map_err(|_| made_up("not UTF-8"))?;
    let mut file = dir.to_path_buf();
    for segment in path.split('/') {
        // The segments warp's `fs::dir` refuses (and warns about), and a NUL,
        // which no file name holds.
        if segment.starts_with("..") || segment.contains(['\\', '\0']) {
            return Err(made_up("a segment no file has"));
        }
        file.push(segment);
    }
    match tokio::fs::metadata(&file).await {
        // A file the server may not read is the server's fault: warp says so.
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        Err(_) => Err(made_up("no such file")),
    }
}

fn with_api(api: Api) -> impl Filter<Extract = (Api,), Error = Infallible> + Clone {
    warp::any().map(move || api.clone())
}

/// The query string, or `""` when there is none (warp's `raw` rejects then).
fn raw_query() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// `GET /healthz`
fn healthz(api: Api) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("healthz")
        .and(warp::method())
        .and(with_api(api))
        .then(|method: Method, api: Api| async move {
            if method != Method::GET && method != Method::HEAD {
                return ApiError::MethodNotAllowed { allow: "GET, HEAD" }.into_response();
            }
            handlers::healthz(api).await
        })
}

/// `GET /channels/{channel}/events`
fn events(api: Api) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("channels" / String / "events")
        .and(warp::method())
        .and(raw_query())
        .and(warp::header::headers_cloned())
        .and(warp::ext::optional::<EventSocket>())
        .and(with_api(api))
        .then(
            |channel: String, method: Method, query: String, headers: HeaderMap, socket, api: Api| async move {
                if method != Method::GET {
                    return ApiError::MethodNotAllowed { allow: "GET" }.into_response();
                }
                handlers::events(api, channel, query, headers, socket).await
            },
        )
}

/// `POST /channels/{channel}/messages`
fn messages(api: Api) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let limit = api.body_limit;
    warp::path!("channels" / String / "messages")
        .and(warp::method())
        .and(headers_and_body(limit))
        .and(with_api(api))
        .then(
            |channel: String, method: Method, headers: HeaderMap, body: Body, api: Api| async move {
                if method != Method::POST {
                    return ApiError::MethodNotAllowed { allow: "POST" }.into_response();
                }
                handlers::send(api, channel, headers, body).await
            },
        )
}

/// `GET, POST /channels/{channel}/clients`
fn clients(api: Api) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let limit = api.body_limit;
    warp::path!("channels" / String / "clients")
        .and(warp::method())
        .and(raw_query())
        .and(headers_and_body(limit))
        .and(with_api(api))
        .then(
            |channel: String, method: Method, query: String, headers: HeaderMap, body: Body, api: Api| async move {
                match method {
                    Method::GET | Method::HEAD => handlers::clients(api, channel, query, headers).await,
                    Method::POST => handlers::register(api, channel, headers, body).await,
                    _ => ApiError::MethodNotAllowed {
                        allow: "GET, HEAD, POST",
                    }
                    .into_response(),
                }
            },
        )
}

/// `GET, DELETE /channels/{channel}/clients/{public_token}`
fn client(api: Api) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("channels" / String / "clients" / String)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(with_api(api))
        .then(
            |channel: String, public: String, method: Method, headers: HeaderMap, api: Api| async move {
                match method {
                    Method::GET | Method::HEAD => handlers::client(api, channel, public, headers).await,
                    Method::DELETE => handlers::remove_client(api, channel, public, headers).await,
                    _ => ApiError::MethodNotAllowed {
                        allow: "GET, HEAD, DELETE",
                    }
                    .into_response(),
                }
            },
        )
}

/// `GET /channels/{channel}`
fn channel(api: Api) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    warp::path!("channels" / String)
        .and(warp::method())
        .and(warp::header::headers_cloned())
        .and(with_api(api))
        .then(
            |channel: String, method: Method, headers: HeaderMap, api: Api| async move {
                if method != Method::GET && method != Method::HEAD {
                    return ApiError::MethodNotAllowed { allow: "GET, HEAD" }.into_response();
                }
                handlers::channel_info(api, channel, headers).await
            },
        )
}

/// Nothing matched: the API routes match on any method, so what is left is a
/// path that names nothing (a static file that is not there, or a non-GET
/// request for one).
async fn answer_rejection(rejection: Rejection) -> Result<Response, Infallible> {
    tracing::debug!(?rejection, "unmatched request");
    Ok(ApiError::NotFound.into_response())
}
