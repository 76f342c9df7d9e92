//! The JSON Schemas of `protocol/`, compiled once and used to validate.
//!
//! The schema files are the contract: they are embedded at build time from
//! `protocol/*.schema.json` (so the binary validates against exactly the files in
//! the repository), compiled once, and every rule about the shape of a body,
//! a channel name or a message id lives there and nowhere else. Tests validate
//! what the server emits against the same compiled set.

use std::collections::HashMap;
use std::fmt;
use std::sync::OnceLock;

use serde_json::Value;

/// Base URI of every schema's `$id`; relative `$ref`s between files resolve against it.
const BASE: &str = "https://ssehub.dev/protocol/";

/// Where instances carry secrets (a registration's private token, a stream's
/// `token` query parameter): violations there never quote the value.
const SECRETS: &[&str] = &["/private_token", "/token"];

/// One entry of [`FILES`]: the kind, the file name, and the file's text.
macro_rules! schema_file {
    ($kind:ident, $name:literal) => {
        (
            SchemaKind::$kind,
            $name,
            include_str!(concat!("../../protocol/", $name)),
        )
    };
}

/// The schema files, by kind. Adding a file means adding a line here.
const FILES: &[(SchemaKind, &str, &str)] = &[
    schema_file!(ChannelName, "channel-name.schema.json"),
    schema_file!(MessageId, "message-id.schema.json"),
    schema_file!(Timestamp, "timestamp.schema.json"),
    schema_file!(SendRequest, "send-request.schema.json"),
    schema_file!(SendResponse, "send-response.schema.json"),
    schema_file!(Envelope, "envelope.schema.json"),
    schema_file!(Timeout, "timeout.schema.json"),
    schema_file!(Failure, "failure.schema.json"),
    schema_file!(Gap, "gap.schema.json"),
    schema_file!(ChannelInfo, "channel-info.schema.json"),
    schema_file!(Health, "health.schema.json"),
    schema_file!(Error, "error.schema.json"),
    schema_file!(SubscribeQuery, "subscribe-query.schema.json"),
    schema_file!(PublicToken, "public-token.schema.json"),
    schema_file!(PrivateToken, "private-token.schema.json"),
    schema_file!(ClientRegistration, "client-registration.schema.json"),
    schema_file!(Client, "client.schema.json"),
    schema_file!(ClientRegistered, "client-registered.schema.json"),
    schema_file!(ClientList, "client-list.schema.json"),
    schema_file!(PresenceEvent, "presence-event.schema.json"),
    schema_file!(ResumePosition, "resume-position.schema.json"),
    schema_file!(ClientListQuery, "client-list-query.schema.json"),
];

/// Which schema to validate against: one variant per file in `protocol/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaKind {
    /// `channel-name.schema.json`
    ChannelName,
    /// `message-id.schema.json`
    MessageId,
    /// `timestamp.schema.json`
    Timestamp,
    /// `send-request.schema.json`: body of a POST to `/channels/{c}/messages`.
    SendRequest,
    /// `send-response.schema.json`: the 201 body.
    SendResponse,
    /// `envelope.schema.json`: data of a message frame.
    Envelope,
    /// `timeout.schema.json`: data of a timeout frame.
    Timeout,
    /// `failure.schema.json`: data of a failure frame.
    Failure,
    /// `gap.schema.json`: data of a gap frame.
    Gap,
    /// `channel-info.schema.json`
    ChannelInfo,
    /// `health.schema.json`
    Health,
    /// `error.schema.json`: body of every non-2xx answer.
    Error,
    /// `subscribe-query.schema.json`: query of `/channels/{c}/events`.
    SubscribeQuery,
    /// `public-token.schema.json`
    PublicToken,
    /// `private-token.schema.json`
    PrivateToken,
    /// `client-registration.schema.json`: body of a POST to `/channels/{c}/clients`.
    ClientRegistration,
    /// `client.schema.json`: a client as presence shows it.
    Client,
    /// `client-registered.schema.json`: the 201 body of a registration.
    ClientRegistered,
    /// `client-list.schema.json`: `GET /channels/{c}/clients`.
    ClientList,
    /// `presence-event.schema.json`: contents of `client.*` messages.
    PresenceEvent,
    /// `resume-position.schema.json`: `Last-Event-ID` and `?lastEventId=`.
    ResumePosition,
    /// `client-list-query.schema.json`: query of `GET /channels/{c}/clients`.
    ClientListQuery,
}

impl SchemaKind {
    /// Every kind, one per schema file.
    pub fn all() -> impl Iterator<Item = SchemaKind> {
        FILES.iter().map(|(kind, _, _)| *kind)
    }

    /// The schema's file name in `protocol/`.
    pub fn file_name(self) -> &'static str {
        FILES
            .iter()
            .find(|(kind, _, _)| *kind == self)
            .map(|(_, name, _)| *name)
            .expect("every SchemaKind has a file")
    }
}

/// One reason an instance failed its schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer to the failing part of the instance (`""` is the whole instance).
    pub pointer: String,
    /// What is wrong there, in words.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at '{}': {}", self.pointer, self.message)
    }
}

/// A schema file that does not parse or compile: a build defect, reported at start-up.
#[derive(Debug)]
pub struct SchemaError(String);

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "protocol schema error: {}", self.0)
    }
}

impl std::error::Error for SchemaError {}

/// Every schema of `protocol/`, compiled.
pub struct Schemas {
    validators: HashMap<SchemaKind, jsonschema::Validator>,
}

impl fmt::Debug for Schemas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schemas")
            .field("count", &self.validators.len())
            .finish()
    }
}

impl Schemas {
    /// Parses and compiles every schema file, resolving `$ref`s between them offline.
    ///
    /// # Errors
    /// A file that is not JSON, or a schema that does not compile.
    pub fn load() -> Result<Self, SchemaError> {
        let mut documents = Vec::with_capacity(FILES.len());
        for (kind, name, text) in FILES {
            let value: Value = serde_json::from_str(text).map_err(|e| SchemaError(format!("{name}: {e}")))?;
            documents.push((*kind, *name, value));
        }
        let registry = jsonschema::Registry::new()
            .extend(
                documents
                    .iter()
                    .map(|(_, name, value)| (format!("{BASE}{name}"), value)),
            )
            .and_then(|builder| builder.prepare())
            .map_err(|e| SchemaError(e.to_string()))?;
        let mut validators = HashMap::new();
        for (kind, name, value) in &documents {
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                // Our patterns need no lookaround: the linear-time engine is
                // faster on every request and cannot be made to backtrack.
                .with_pattern_options(jsonschema::PatternOptions::regex())
                .with_registry(&registry)
                .build(value)
                .map_err(|e| SchemaError(format!("{name}: {e}")))?;
            validators.insert(*kind, validator);
        }
        Ok(Schemas { validators })
    }

    /// The process-wide compiled set, built on first use (the server forces it at start-up).
    ///
    /// # Panics
    /// If the embedded schema files do not compile, which the test suite rules out.
    pub fn get() -> &'static Schemas {
        static SCHEMAS: OnceLock<Schemas> = OnceLock::new();
        SCHEMAS.get_or_init(|| Schemas::load().expect("embedded protocol schemas compile"))
    }

    /// Validates `instance` against the schema of `kind`.
    ///
    /// # Errors
    /// Every violation, each with the JSON pointer of the failing instance location.
    pub fn validate(&self, kind: SchemaKind, instance: &Value) -> Result<(), Vec<Violation>> {
        self.check(kind, instance, false)
    }

    /// Like [`Schemas::validate`], but no message quotes the instance: for
    /// values that must not be echoed back (too long to, or secret).
    ///
    /// # Errors
    /// Every violation, each with the JSON pointer of the failing instance location.
    pub fn validate_masked(&self, kind: SchemaKind, instance: &Value) -> Result<(), Vec<Violation>> {
        self.check(kind, instance, true)
    }

    fn check(&self, kind: SchemaKind, instance: &Value, mask: bool) -> Result<(), Vec<Violation>> {
        let validator = &self.validators[&kind];
        if validator.is_valid(instance) {
            return Ok(());
        }
        // One entry per failing location: several rules failing at one place
        // (say `type` and `not`) read as one problem with several reasons.
        let mut violations: Vec<Violation> = Vec::new();
        for error in validator.iter_errors(instance) {
            let pointer = error.instance_path().as_str();
            // A secret that fails its schema must not be echoed back (or logged).
            let message = if mask || SECRETS.contains(&pointer) {
                error.masked().to_string()
            } else {
                error.to_string()
            };
            match violations.iter_mut().find(|v| v.pointer == pointer) {
                Some(existing) => {
                    existing.message.push_str("; ");
                    existing.message.push_str(&message);
                }
                None => violations.push(Violation {
                    pointer: pointer.to_owned(),
                    message,
                }),
            }
        }
        Err(violations)
    }

    /// Whether `instance` satisfies the schema of `kind` (no error list built).
    pub fn is_valid(&self, kind: SchemaKind, instance: &Value) -> bool {
        self.validators[&kind].is_valid(instance)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_schema_compiles() {
        let schemas = Schemas::load().unwrap();
        assert_eq!(schemas.validators.len(), FILES.len());
    }

    #[test]
    fn violations_name_the_failing_pointer() {
        let schemas = Schemas::get();
        let errors = schemas
            .validate(SchemaKind::SendRequest, &json!({"name": "has space", "contents": 1}))
            .unwrap_err();
        assert_eq!(errors[0].pointer, "/name");
        let errors = schemas
            .validate(SchemaKind::SendRequest, &json!({"name": "ok", "contents": 1, "x": 2}))
            .unwrap_err();
        assert_eq!(errors[0].pointer, "");
    }

    #[test]
    fn secrets_are_not_quoted_in_violations() {
        let schemas = Schemas::get();
        let registration = json!({"public_token": "a", "private_token": "s3cret with spaces"});
        let errors = schemas
            .validate(SchemaKind::ClientRegistration, &registration)
            .unwrap_err();
        assert_eq!(errors[0].pointer, "/private_token");
        assert!(!errors[0].message.contains("s3cret"), "{}", errors[0].message);
        let query = json!({"token": "x".repeat(300)});
        let errors = schemas.validate(SchemaKind::SubscribeQuery, &query).unwrap_err();
        assert!(!errors[0].message.contains("xxxx"), "{}", errors[0].message);
    }

    #[test]
    fn refs_between_files_resolve() {
        let schemas = Schemas::get();
        let good = json!({"id": "0a1b2c3d-1", "channel": "c", "time": "2026-11-21T02:35:00.123Z"});
        assert!(schemas.is_valid(SchemaKind::SendResponse, &good));
        let bad = json!({"id": "0a1b2c3d-01", "channel": "c", "time": "2026-11-21T02:35:00.123Z"});
        assert!(!schemas.is_valid(SchemaKind::SendResponse, &bad));
    }
}
