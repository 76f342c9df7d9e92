//! Bodies of the non-message frames (schemas `timeout`, `failure`, `gap`).

use serde::Serialize;

use super::ChannelName;

/// Data of `event: timeout`: no message for `seconds`; the stream ends and the client resumes.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct TimeoutBody<'a> {
    /// The channel of the stream.
    pub channel: &'a ChannelName,
    /// The timeout that elapsed.
    pub seconds: u64,
}

/// Data of `event: failure`: the stream cannot go on.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct FailureBody<'a> {
    /// One of the codes of `failure.schema.json`.
    pub code: &'a str,
    /// For people.
    pub message: &'a str,
}

/// Why a resume position could not be honoured in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum GapReason {
    /// Older than the retained history (or a slow subscriber fell behind it).
    BeforeHistory,
    /// Not an id this store issued.
    UnknownId,
    /// An id from an earlier run or another store.
    OtherEpoch,
}

/// Data of `event: gap`.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct GapBody<'a> {
    /// The channel of the stream.
    pub channel: &'a ChannelName,
    /// The position asked for, as the client gave it.
    pub after: &'a str,
    /// The first id that will be replayed, if any is retained.
    pub resume_from: Option<String>,
    /// Why.
    pub reason: GapReason,
}
