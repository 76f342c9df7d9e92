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

/// The schema files, by kind. Adding a file means adding a line here.
const FILES: &[(SchemaKind, &str, &str)] = &[
    (
        SchemaKind::ChannelName,
        "channel-name.schema.json",
        include_str!("../../protocol/channel-name.schema.json"),
    ),
    (
        SchemaKind::MessageId,
        "message-id.schema.json",
        include_str!("../../protocol/message-id.schema.json"),
    ),
    (
        SchemaKind::Timestamp,
        "timestamp.schema.json",
        include_str!("../../protocol/timestamp.schema.json"),
    ),
    (
        SchemaKind::SendRequest,
        "send-request.schema.json",
        include_str!("../../protocol/send-request.schema.json"),
    ),
    (
        SchemaKind::SendResponse,
        "send-response.schema.json",
        include_str!("../../protocol/send-response.schema.json"),
    ),
    (
        SchemaKind::Envelope,
        "envelope.schema.json",
        include_str!("../../protocol/envelope.schema.json"),
    ),
    (
        SchemaKind::Timeout,
        "timeout.schema.json",
        include_str!("../../protocol/timeout.schema.json"),
    ),
    (
        SchemaKind::Failure,
        "failure.schema.json",
        include_str!("../../protocol/failure.schema.json"),
    ),
    (
        SchemaKind::Gap,
        "gap.schema.json",
        include_str!("../../protocol/gap.schema.json"),
    ),
    (
        SchemaKind::ChannelInfo,
        "channel-info.schema.json",
        include_str!("../../protocol/channel-info.schema.json"),
    ),
    (
        SchemaKind::Health,
        "health.schema.json",
        include_str!("../../protocol/health.schema.json"),
    ),
    (
        SchemaKind::Error,
        "error.schema.json",
        include_str!("../../protocol/error.schema.json"),
    ),
    (
        SchemaKind::SubscribeQuery,
        "subscribe-query.schema.json",
        include_str!("../../protocol/subscribe-query.schema.json"),
    ),
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
}

impl SchemaKind {
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
            let value: Value =
                serde_json::from_str(text).map_err(|e| SchemaError(format!("{name}: {e}")))?;
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
        let validator = &self.validators[&kind];
        if validator.is_valid(instance) {
            return Ok(());
        }
        let violations: Vec<Violation> = validator
            .iter_errors(instance)
            .map(|error| Violation {
                pointer: error.instance_path().as_str().to_owned(),
                message: error.to_string(),
            })
            .collect();
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
            .validate(
                SchemaKind::SendRequest,
                &json!({"name": "has space", "contents": 1}),
            )
            .unwrap_err();
        assert_eq!(errors[0].pointer, "/name");
        let errors = schemas
            .validate(
                SchemaKind::SendRequest,
                &json!({"name": "ok", "contents": 1, "x": 2}),
            )
            .unwrap_err();
        assert_eq!(errors[0].pointer, "");
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
