//! The names of everything this store keeps in Redis. Every key a script
//! touches is named here and passed to it through `KEYS`, never built inside
//! the script.

use crate::protocol::{ChannelName, PublicToken};

/// The Redis pub/sub channel every node subscribes to (not a key).
pub(super) const EVENTS: &str = "ssehub:events";

/// The epoch of every id issued: drawn by the first node.
pub(super) const EPOCH: &str = "ssehub:epoch";

/// Every idle client's deadline (ms), as a sorted set of [`idle_member`]s.
pub(super) const IDLE: &str = "ssehub:idle";

/// A channel's last position: outlives its history, so an id is never issued twice.
pub(super) fn head(channel: &ChannelName) -> String {
    format!("ssehub:head:{channel}")
}

/// A channel's history: a Redis stream, entry id `<seq>-0`.
pub(super) fn log(channel: &ChannelName) -> String {
    format!("ssehub:log:{channel}")
}

/// A channel's registrations: public token → registration (JSON).
pub(super) fn clients(channel: &ChannelName) -> String {
    format!("ssehub:clients:{channel}")
}

/// A channel's private tokens: private token → public token.
pub(super) fn secrets(channel: &ChannelName) -> String {
    format!("ssehub:secrets:{channel}")
}

/// A channel's open-stream counts: public token → streams open on every node.
pub(super) fn streams(channel: &ChannelName) -> String {
    format!("ssehub:streams:{channel}")
}

/// A channel's public tokens, in order: a sorted set, every member scored 0
/// (see `list.lua`).
pub(super) fn index(channel: &ChannelName) -> String {
    format!("ssehub:index:{channel}")
}

/// A client's member in the idle set: channel and public token cannot contain a newline.
pub(super) fn idle_member(channel: &ChannelName, public: &PublicToken) -> String {
    format!("{channel}\n{public}")
}

/// The channel and public token of an idle set member.
pub(super) fn parse_idle_member(member: &str) -> Option<(ChannelName, PublicToken)> {
    let (channel, public) = member.split_once('\n')?;
    Some((ChannelName::parse(channel).ok()?, PublicToken::parse(public).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_members_round_trip() {
        let channel = ChannelName::parse("chat.room-1").unwrap();
        let public = PublicToken::parse("ann").unwrap();
        let member = idle_member(&channel, &public);
        assert_eq!(parse_idle_member(&member), Some((channel, public)));
        assert_eq!(parse_idle_member("no-newline"), None);
    }
}
