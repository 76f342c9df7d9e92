//! A followed channel's most recent frames, by position: what live delivery
//! reads, for the topic's writer and for subscribers' own tasks alike.
//!
//! Every delivery is by position: a subscriber remembers the next position it
//! wants and is sent what the ring holds from there. A subscriber that falls
//! behind the ring reads the store instead (see `subscription.rs`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::{BufMut, Bytes, BytesMut};

use crate::protocol::{Message, PublicToken};
use crate::shards::lock;

/// What a subscriber gets from the ring.
pub(crate) enum Take {
    /// Frames from the wanted position on, coalesced into one chunk; `next` is the
    /// position after the last frame looked at. `chunk` is `None` when every
    /// frame looked at was a direct message for someone else.
    Frames { chunk: Option<Bytes>, next: u64 },
    /// Nothing newer than the wanted position: wait for a push.
    UpToDate,
    /// The ring is empty: only the store can say whether anything is there.
    Empty,
    /// The wanted position is not in the ring (the subscriber fell behind it): ask the store.
    Behind,
}

/// Recent frames with consecutive positions, at most `capacity` of them.
pub(crate) struct Ring {
    /// A std mutex: held only to push or to clone out a few `Bytes`, never
    /// across an await.
    frames: Mutex<VecDeque<Arc<Message>>>,
    capacity: usize,
}

impl Ring {
    /// An empty ring of `capacity` frames (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Ring {
            frames: Mutex::new(VecDeque::with_capacity(capacity.min(64))),
            capacity,
        }
    }

    fn frames(&self) -> MutexGuard<'_, VecDeque<Arc<Message>>> {
        lock(&self.frames)
    }

    /// Adds a stored message; false when the ring already had it.
    pub(crate) fn push(&self, message: &Arc<Message>) -> bool {
        let mut frames = self.frames();
        match frames.back() {
            Some(last) if message.seq <= last.seq => return false, // already have it
            Some(last) if message.seq != last.seq + 1 => frames.clear(), // keep positions consecutive
            _ => {}
        }
        if frames.len() == self.capacity {
            frames.pop_front();
        }
        frames.push_back(Arc::clone(message));
        true
    }

    /// Forgets everything: every read goes to the store until the next push.
    pub(crate) fn clear(&self) {
        self.frames().clear();
    }

    /// Whether the ring holds anything at or after position `next`.
    pub(crate) fn holds_after(&self, next: u64) -> bool {
        self.frames().back().is_some_and(|last| last.seq >= next)
    }

    /// Frames from position `next` on that `viewer` may see, at most about
    /// `max_bytes` of them.
    pub(crate) fn take(&self, next: u64, max_bytes: usize, viewer: Option<&PublicToken>) -> Take {
        let frames = self.frames();
        let (Some(first), Some(last)) = (frames.front(), frames.back()) else {
            return Take::Empty;
        };
        if next == last.seq + 1 {
            return Take::UpToDate;
        }
        if next < first.seq || next > last.seq {
            return Take::Behind;
        }
        // In range, so the offset is below the ring's length.
        let start = usize::try_from(next - first.seq).unwrap_or(usize::MAX);
        if start + 1 == frames.len() {
            // The common case: one new frame, shared without a copy.
            let only = &frames[start];
            let chunk = only.is_visible_to(viewer).then(|| only.frame.clone());
            return Take::Frames {
                chunk,
                next: only.seq + 1,
            };
        }
        // Several frames ready: coalesce them so they leave in one write.
        let mut chunk = BytesMut::new();
        let mut taken = next - 1;
        for message in frames.range(start..) {
            if chunk.len() >= max_bytes {
                break;
            }
            if message.is_visible_to(viewer) {
                chunk.put_slice(&message.frame);
            }
            taken = message.seq;
        }
        let chunk = (!chunk.is_empty()).then(|| chunk.freeze());
        Take::Frames { chunk, next: taken + 1 }
    }
}
