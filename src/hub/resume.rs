//! Where a new stream starts: the resume position a subscriber asked for, and
//! the gap frame it gets first when that position cannot be honoured in full.

use bytes::Bytes;

use super::{Hub, HubError};
use crate::protocol::{ChannelName, GapBody, GapReason, MessageId};
use crate::sse;
use crate::store::History;

/// Where a new stream starts, and the gap frame to send first when the asked
/// position cannot be honoured in full. Without a resume position, a stream
/// starts live, or for a registered client right after its registration.
pub(super) async fn resume_position(
    hub: &Hub,
    channel: &ChannelName,
    last_event_id: Option<&str>,
    registered_after: Option<u64>,
) -> Result<(u64, Option<Bytes>), HubError> {
    let log = &hub.shared.store.log;
    let head = log.read(channel, 0, 0).await?;
    let Some(raw) = last_event_id.filter(|raw| !raw.is_empty()) else {
        return Ok(match registered_after {
            Some(after) => position_after(
                hub,
                channel,
                &head,
                after,
                &MessageId {
                    epoch: log.epoch(),
                    seq: after,
                }
                .to_string(),
            ),
            None => (head.last_seq + 1, None),
        });
    };
    let reason = match MessageId::parse(raw) {
        None => GapReason::UnknownId,
        Some(id) if id.epoch != log.epoch() => GapReason::OtherEpoch,
        Some(id) if id.seq > head.last_seq => GapReason::UnknownId,
        Some(id) => return Ok(position_after(hub, channel, &head, id.seq, raw)),
    };
    Ok(from_oldest(hub, channel, &head, raw, reason))
}

/// The stream starts after position `seq` (of this epoch, at most the head),
/// with a gap frame when the history no longer reaches back to it.
pub(super) fn position_after(
    hub: &Hub,
    channel: &ChannelName,
    head: &History,
    seq: u64,
    asked: &str,
) -> (u64, Option<Bytes>) {
    let lost = match head.first_seq {
        Some(first) => seq + 1 < first,
        None => seq < head.last_seq,
    };
    if lost {
        from_oldest(hub, channel, head, asked, GapReason::BeforeHistory)
    } else {
        (seq + 1, None)
    }
}

/// `asked` cannot be honoured: a gap frame saying why, and the stream goes on
/// from the oldest retained message (live when none is retained).
fn from_oldest(
    hub: &Hub,
    channel: &ChannelName,
    head: &History,
    after: &str,
    reason: GapReason,
) -> (u64, Option<Bytes>) {
    let epoch = hub.shared.store.log.epoch();
    let next = head.first_seq.unwrap_or(head.last_seq + 1);
    let resume_from = head.first_seq.map(|seq| MessageId { epoch, seq }.text());
    let frame = sse::event(
        "gap",
        &GapBody {
            channel,
            after,
            resume_from,
            reason,
        },
    );
    (next, Some(frame))
}
