//! The one place where failures become HTTP answers.
//!
//! Every layer has its own error ([`ProtocolError`], [`HubError`]); they convert
//! into [`ApiError`], whose [`ApiError::status`] and [`ApiError::code`] are the
//! whole mapping. The same error renders as a JSON body (`error.schema.json`)
//! or, for a subscriber whose browser cannot read an error body, as a failure
//! frame (`failure.schema.json`).

use serde::Serialize;
use warp::http::header::{HeaderValue, ALLOW, CONNECTION, RETRY_AFTER, WWW_AUTHENTICATE};
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

use crate::hub::HubError;
use crate::protocol::schema::Violation;
use crate::protocol::ProtocolError;

/// Everything the API answers with a non-2xx status.
#[derive(Debug, Clone)]
pub(crate) enum ApiError {
    Protocol(ProtocolError),
    Hub(HubError),
    NotFound,
    /// The methods the resource does allow, for the `Allow` header.
    MethodNotAllowed {
        allow: &'static str,
    },
    BodyTooLarge {
        limit: usize,
    },
    UnsupportedMediaType,
    /// A request that is not well-formed HTTP/1.1 as this server reads it
    /// (says what: a bad head, a repeated `Authorization` header, …); after
    /// a malformed head the connection cannot go on.
    BadRequest(&'static str),
    /// Credentials are missing, or are neither a publisher key nor a client's
    /// private token of this channel.
    Unauthorized(&'static str),
    /// Valid credentials that this channel's policy does not allow here.
    Forbidden(&'static str),
    /// A request value that is well-formed but not accepted: over a server
    /// limit, or not what a route outside the contract expects (the demo's).
    Invalid(Violation),
    /// A bug: a handler panicked. Logged; the client gets a generic answer.
    Internal,
    /// The head or body did not arrive within the request timeout.
    RequestTimeout,
    /// The request target is longer than the server reads.
    UriTooLong,
    /// The request head is larger than the server reads.
    HeadersTooLarge,
    /// A feature of HTTP this server does not implement (says which).
    NotImplemented(&'static str),
    /// This client holds its maximum of streams or of requests in flight (says which).
    TooManyRequests(&'static str),
    /// The server holds its maximum of open connections.
    TooManyConnections,
}

impl From<ProtocolError> for ApiError {
    fn from(e: ProtocolError) -> Self {
        ApiError::Protocol(e)
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        ApiError::Hub(e)
    }
}

#[derive(Serialize)]
struct Body<'a> {
    error: Inner<'a>,
}

#[derive(Serialize)]
struct Inner<'a> {
    code: &'static str,
    message: String,
    details: &'a [Violation],
}

impl ApiError {
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            ApiError::Protocol(ProtocolError::InvalidToken(_)) => StatusCode::NOT_FOUND,
            ApiError::Protocol(_) | ApiError::Invalid(_) | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Hub(HubError::Store(_) | HubError::TooManySubscribers(_) | HubError::ShuttingDown) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Hub(HubError::ClientExists) => StatusCode::CONFLICT,
            ApiError::Hub(HubError::UnknownClient | HubError::UnknownRecipient | HubError::ClientRemoved)
            | ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::UriTooLong => StatusCode::URI_TOO_LONG,
            ApiError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The `code` of `error.schema.json` (and of `failure.schema.json` where
    /// it applies). Layer errors name their own codes, which failure frames
    /// sent mid-stream use too.
    pub(crate) fn code(&self) -> &'static str {
        match self {
            ApiError::Protocol(error) => error.code(),
            ApiError::Hub(error) => error.code(),
            ApiError::Invalid(_) => "schema_violation",
            ApiError::NotFound => "not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::BodyTooLarge { .. } => "body_too_large",
            ApiError::UnsupportedMediaType => "unsupported_media_type",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Internal => "internal",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::RequestTimeout => "request_timeout",
            ApiError::UriTooLong => "uri_too_long",
            ApiError::HeadersTooLarge => "headers_too_large",
            ApiError::NotImplemented(_) => "not_implemented",
            ApiError::TooManyRequests(_) => "too_many_requests",
            ApiError::TooManyConnections => "too_many_connections",
        }
    }

    /// Whether a subscriber gets this as a failure frame: the codes of
    /// `failure.schema.json`. Shutting down is not a failure (the client should
    /// come back), so it stays an HTTP answer; nor is a malformed request,
    /// which no `EventSource` sends.
    pub(crate) fn is_stream_failure(&self) -> bool {
        !matches!(self, ApiError::Hub(HubError::ShuttingDown) | ApiError::BadRequest(_))
    }

    pub(crate) fn message(&self) -> String {
        match self {
            ApiError::Protocol(e) => e.to_string(),
            ApiError::Hub(e) => e.to_string(),
            ApiError::NotFound => "no such resource; see protocol/openapi.yaml for the endpoints".into(),
            ApiError::MethodNotAllowed { .. } => "this method is not allowed on this resource".into(),
            ApiError::BodyTooLarge { limit } => format!("the body is larger than this server's limit of {limit} bytes"),
            ApiError::UnsupportedMediaType => "send the body as JSON with 'Content-Type: application/json'".into(),
            ApiError::Unauthorized(why)
            | ApiError::Forbidden(why)
            | ApiError::BadRequest(why)
            | ApiError::NotImplemented(why)
            | ApiError::TooManyRequests(why) => (*why).to_owned(),
            ApiError::TooManyConnections => "this server holds its maximum of open connections; retry later".into(),
            ApiError::RequestTimeout => "the request did not arrive in time; the connection is closed".into(),
            ApiError::UriTooLong => "the request target is longer than this server reads".into(),
            ApiError::HeadersTooLarge => "the request head is larger than this server reads".into(),
            ApiError::Invalid(violation) => violation.to_string(),
            ApiError::Internal => "internal error; it has been logged".into(),
        }
    }

    fn details(&self) -> &[Violation] {
        match self {
            ApiError::Protocol(ProtocolError::SchemaViolation(_, v) | ProtocolError::InvalidQuery(v)) => v,
            ApiError::Invalid(violation) => std::slice::from_ref(violation),
            _ => &[],
        }
    }

    /// The JSON answer.
    pub(crate) fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(code = self.code(), error = %self.message(), "request failed");
        }
        let body = Body {
            error: Inner {
                code: self.code(),
                message: self.message(),
                details: self.details(),
            },
        };
        let mut response = warp::reply::with_status(warp::reply::json(&body), status).into_response();
        let headers = response.headers_mut();
        match self {
            ApiError::MethodNotAllowed { allow } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Unauthorized(_) => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::TooManyRequests(_) => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::TooManyConnections => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            ApiError::BodyTooLarge { .. }
            | ApiError::BadRequest(_)
            | ApiError::RequestTimeout
            | ApiError::UriTooLong
            | ApiError::HeadersTooLarge
            | ApiError::NotImplemented(_) => {
                // What follows on the connection cannot be framed (or the body
                // is left unread), so it cannot carry another request; say so
                // rather than let the client find out.
                headers.insert(CONNECTION, HeaderValue::from_static("close"));
            }
            _ => {}
        }
        response
    }
}
