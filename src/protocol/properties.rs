//! Property tests of everything in the protocol layer that parses what a
//! client sends: message ids (resume positions and cursors), query strings,
//! and percent-encoded path segments.

use std::time::Duration;

use proptest::prelude::*;

use super::{ChannelName, ClientListQuery, Epoch, MessageId, PublicToken, SubscribeQuery};

/// Private tokens as the schema allows them.
const PRIVATE_TOKEN: &str = "[A-Za-z0-9_.~-]{16,64}";

/// A channel name as the schema allows it.
const CHANNEL: &str = "[A-Za-z0-9_-][A-Za-z0-9_.:-]{0,40}";

/// `text` with each byte percent-encoded where `encode` says so (any byte
/// may be, unreserved ones included).
fn percent_encode(text: &str, encode: &[bool]) -> String {
    text.bytes()
        .enumerate()
        .map(|(at, byte)| {
            if encode.get(at).copied().unwrap_or(false) {
                format!("%{byte:02X}")
            } else {
                char::from(byte).to_string()
            }
        })
        .collect()
}

/// `text` encoded as a query value (what `application/x-www-form-urlencoded` allows).
fn query_value(text: &str) -> String {
    serde_urlencoded::to_string([("v", text)]).unwrap()[2..].to_owned()
}

proptest! {
    /// An id's text parses back to the id; nothing else that parses has
    /// another text (ids are canonical); nothing panics.
    #[test]
    fn ids_round_trip(epoch in any::<u32>(), seq in 1u64..=u64::MAX, noise in ".{0,40}") {
        let id = MessageId { epoch: Epoch(epoch), seq };
        prop_assert_eq!(MessageId::parse(&id.text()), Some(id));
        if let Some(parsed) = MessageId::parse(&noise) {
            prop_assert_eq!(parsed.text(), noise);
        }
    }

    /// A subscribe query made of valid values, in any order, encoded as a
    /// browser would, gives those values; any string and header bytes are
    /// answered without a panic.
    #[test]
    fn subscribe_queries_round_trip(
        timeout in proptest::option::of(1u64..=3600),
        position in proptest::option::of((any::<u32>(), 1u64..1_000_000)),
        token in proptest::option::of(PRIVATE_TOKEN),
        reversed in any::<bool>(),
        noise in ".{0,80}",
        header in proptest::collection::vec(any::<u8>(), 0..80),
    ) {
        let id = position.map(|(epoch, seq)| MessageId { epoch: Epoch(epoch), seq }.text());
        let mut parts = Vec::new();
        if let Some(timeout) = timeout {
            parts.push(format!("timeout={timeout}"));
        }
        if let Some(id) = &id {
            parts.push(format!("lastEventId={}", query_value(id)));
        }
        if let Some(token) = &token {
            parts.push(format!("token={}", query_value(token)));
        }
        if reversed {
            parts.reverse();
        }
        let parsed = SubscribeQuery::parse(&parts.join("&"), None, Duration::from_secs(3600)).unwrap();
        prop_assert_eq!(parsed.timeout, timeout.map(Duration::from_secs));
        prop_assert_eq!(parsed.last_event_id, id);
        prop_assert_eq!(parsed.token, token);
        let _ = SubscribeQuery::parse(&noise, Some(&header), Duration::from_secs(3600));
    }

    /// A presence-list cursor and limit come back as written.
    #[test]
    fn client_list_queries_round_trip(
        after in proptest::option::of("[A-Za-z0-9_.:@-]{1,40}"),
        limit in proptest::option::of(1usize..=1000),
        noise in ".{0,80}",
    ) {
        let mut parts = Vec::new();
        if let Some(after) = &after {
            parts.push(format!("after={}", query_value(after)));
        }
        if let Some(limit) = limit {
            parts.push(format!("limit={limit}"));
        }
        let parsed = ClientListQuery::parse(&parts.join("&")).unwrap();
        prop_assert_eq!(parsed.after, after.map(|after| PublicToken::parse(&after).unwrap()));
        prop_assert_eq!(parsed.limit, limit.unwrap_or(ClientListQuery::DEFAULT_LIMIT));
        let _ = ClientListQuery::parse(&noise);
    }

    /// A path segment names the same channel or client however much of it is
    /// percent-encoded; an encoded `/` never makes one; nothing panics.
    #[test]
    fn segments_decode_once(
        channel in CHANNEL,
        public in "[A-Za-z0-9_.:@-]{1,40}",
        encode in proptest::collection::vec(any::<bool>(), 0..64),
        split in 0usize..40,
        noise in ".{0,60}",
    ) {
        prop_assert_eq!(
            ChannelName::from_path(&percent_encode(&channel, &encode)).unwrap(),
            ChannelName::parse(&channel).unwrap()
        );
        prop_assert_eq!(
            PublicToken::from_path(&percent_encode(&public, &encode)).unwrap(),
            PublicToken::parse(&public).unwrap()
        );
        let at = split.min(channel.len());
        let slashed = format!("{}%2F{}", &channel[..at], &channel[at..]);
        prop_assert!(ChannelName::from_path(&slashed).is_err());
        let _ = (ChannelName::from_path(&noise), PublicToken::from_path(&noise));
    }
}
