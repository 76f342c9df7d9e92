use std::time::Duration;

use serde_json::{Map, Value};

use super::schema::{SchemaKind, Schemas, Violation};
use super::{ProtocolError, PublicToken};

/// What a subscriber asks for in the query of `GET /channels/{c}/events`,
/// checked against `subscribe-query.schema.json`, and in its `Last-Event-ID`
/// header, checked against `resume-position.schema.json` like `?lastEventId=`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SubscribeQuery {
    /// `timeout`, when given.
    pub timeout: Option<Duration>,
    /// The resume position: the `Last-Event-ID` header, else `lastEventId`.
    /// The header wins: EventSource reconnects to the same URL, query and
    /// all, with a newer `Last-Event-ID`.
    pub last_event_id: Option<String>,
    /// `token`: a registered client's private token. Never logged.
    pub token: Option<String>,
}

impl SubscribeQuery {
    /// Decodes a raw query string (without `?`) and the `Last-Event-ID`
    /// header's bytes, if any; `max_timeout` is the server's limit.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidQuery`] naming the parameter, as `/query/<name>`,
    /// or the header, as `/headers/last-event-id`.
    pub(crate) fn parse(raw: &str, header: Option<&[u8]>, max_timeout: Duration) -> Result<Self, ProtocolError> {
        let header = header.map(resume_header).transpose()?;
        let object = query_object(raw, SchemaKind::SubscribeQuery)?;
        let text = |name: &str| object.get(name).and_then(Value::as_str).map(str::to_owned);
        let timeout = match text("timeout") {
            None => None,
            Some(seconds) => {
                let seconds: u64 = seconds.parse().unwrap_or(u64::MAX);
                if seconds > max_timeout.as_secs() {
                    return Err(ProtocolError::InvalidQuery(vec![Violation {
                        pointer: "/query/timeout".into(),
                        message: format!(
                            "timeout {seconds} is over this server's maximum of {} seconds",
                            max_timeout.as_secs()
                        ),
                    }]));
                }
                Some(Duration::from_secs(seconds))
            }
        };
        Ok(SubscribeQuery {
            timeout,
            last_event_id: header.or_else(|| text("lastEventId")),
            token: text("token"),
        })
    }
}

/// The query of `GET /channels/{c}/clients`, checked against
/// `client-list-query.schema.json`: one page of the presence list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientListQuery {
    /// `after`: the page starts after this public token.
    pub after: Option<PublicToken>,
    /// `limit`: at most this many clients.
    pub limit: usize,
}

impl ClientListQuery {
    /// Clients in a page when `limit` is not given: the schema's `default`
    /// (a unit test holds the two together).
    pub(crate) const DEFAULT_LIMIT: usize = 100;

    /// Decodes a raw query string (without `?`).
    ///
    /// # Errors
    /// [`ProtocolError::InvalidQuery`] naming the parameter, as `/query/<name>`.
    pub(crate) fn parse(raw: &str) -> Result<Self, ProtocolError> {
        let object = query_object(raw, SchemaKind::ClientListQuery)?;
        let text = |name: &str| object.get(name).and_then(Value::as_str);
        Ok(ClientListQuery {
            // The schema has checked both: a public token, and 1 to 1000.
            after: text("after").map(PublicToken::parse).transpose()?,
            limit: text("limit")
                .and_then(|limit| limit.parse().ok())
                .unwrap_or(Self::DEFAULT_LIMIT),
        })
    }
}

/// A raw query string as the JSON object its schema describes (every value a
/// string), validated against `kind`. Of repeated names the last wins, as in
/// most frameworks.
fn query_object(raw: &str, kind: SchemaKind) -> Result<Value, ProtocolError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw).map_err(|e| {
        ProtocolError::InvalidQuery(vec![Violation {
            pointer: "/query".into(),
            message: e.to_string(),
        }])
    })?;
    let object: Map<String, Value> = pairs
        .into_iter()
        .map(|(name, value)| (name, Value::String(value)))
        .collect();
    let object = Value::Object(object);
    Schemas::get().validate(kind, &object).map_err(|violations| {
        ProtocolError::InvalidQuery(
            violations
                .into_iter()
                .map(|v| Violation {
                    pointer: format!("/query{}", v.pointer),
                    message: v.message,
                })
                .collect(),
        )
    })?;
    Ok(object)
}

/// The `Last-Event-ID` header as a resume position. Bytes that are not UTF-8
/// are replaced (they cannot be an id: the position gets a gap frame). A
/// value the schema refuses is not quoted back: it may be 70 KB.
fn resume_header(value: &[u8]) -> Result<String, ProtocolError> {
    let text = String::from_utf8_lossy(value).into_owned();
    Schemas::get()
        .validate_masked(SchemaKind::ResumePosition, &Value::String(text.clone()))
        .map_err(|violations| {
            ProtocolError::InvalidQuery(
                violations
                    .into_iter()
                    .map(|v| Violation {
                        pointer: format!("/headers/last-event-id{}", v.pointer),
                        message: format!("the Last-Event-ID header: {}", v.message),
                    })
                    .collect(),
            )
        })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(3600);

    #[test]
    fn reads_known_parameters_and_ignores_others() {
        let q = SubscribeQuery::parse("timeout=5&lastEventId=0a1b2c3d-4&_=123", None, MAX).unwrap();
        assert_eq!(q.timeout, Some(Duration::from_secs(5)));
        assert_eq!(q.last_event_id.as_deref(), Some("0a1b2c3d-4"));
        assert_eq!(SubscribeQuery::parse("", None, MAX).unwrap(), SubscribeQuery::default());
    }

    #[test]
    fn the_header_wins_and_is_bounded_like_the_query() {
        let q = SubscribeQuery::parse("lastEventId=0a1b2c3d-4", Some(b"0a1b2c3d-9"), MAX).unwrap();
        assert_eq!(q.last_event_id.as_deref(), Some("0a1b2c3d-9"));
        let long = "x".repeat(65);
        match SubscribeQuery::parse("", Some(long.as_bytes()), MAX) {
            Err(ProtocolError::InvalidQuery(v)) => {
                assert_eq!(v[0].pointer, "/headers/last-event-id");
                assert!(!v[0].message.contains("xxxx"), "not echoed: {}", v[0].message);
            }
            other => panic!("{other:?}"),
        }
        let exactly = "x".repeat(64);
        assert!(SubscribeQuery::parse("", Some(exactly.as_bytes()), MAX).is_ok());
    }

    #[test]
    fn client_list_pages() {
        assert_eq!(
            ClientListQuery::parse("").unwrap(),
            ClientListQuery {
                after: None,
                limit: ClientListQuery::DEFAULT_LIMIT
            }
        );
        let page = ClientListQuery::parse("limit=1000&after=bob%40example.com&x=1").unwrap();
        assert_eq!((page.after.unwrap().as_str(), page.limit), ("bob@example.com", 1000));
        for (raw, pointer) in [
            ("limit=0", "/query/limit"),
            ("limit=1001", "/query/limit"),
            ("limit=01", "/query/limit"),
            ("limit=x", "/query/limit"),
            ("after=a%20b", "/query/after"),
            ("after=", "/query/after"),
        ] {
            match ClientListQuery::parse(raw) {
                Err(ProtocolError::InvalidQuery(v)) => assert_eq!(v[0].pointer, pointer, "{raw}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_default_limit_is_the_schema_s() {
        let schema: Value = serde_json::from_str(include_str!("../../protocol/client-list-query.schema.json")).unwrap();
        assert_eq!(
            schema["properties"]["limit"]["default"],
            ClientListQuery::DEFAULT_LIMIT.to_string()
        );
    }

    #[test]
    fn rejects_bad_timeouts_naming_the_parameter() {
        for raw in ["timeout=0", "timeout=abc", "timeout=-1", "timeout=3601"] {
            match SubscribeQuery::parse(raw, None, MAX) {
                Err(ProtocolError::InvalidQuery(v)) => {
                    assert_eq!(v[0].pointer, "/query/timeout", "{raw}")
                }
                other => panic!("{raw}: {other:?}"),
            }
        }
    }

    #[test]
    fn tokens_follow_the_private_token_pattern() {
        let token = SubscribeQuery::parse("token=0f8fad5bd9cb469fa16570867728950e", None, MAX).unwrap();
        assert_eq!(token.token.as_deref(), Some("0f8fad5bd9cb469fa16570867728950e"));
        for raw in [
            "token=short",
            "token=has%20a%20space-0123456789",
            "token=key%2Bwith%2Fbase64%3D0123",
        ] {
            match SubscribeQuery::parse(raw, None, MAX) {
                Err(ProtocolError::InvalidQuery(v)) => assert_eq!(v[0].pointer, "/query/token", "{raw}"),
                other => panic!("{raw}: {other:?}"),
            }
        }
    }
}
