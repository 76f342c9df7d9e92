//! Direct delivery: a subscriber that is up to date hands its socket to its
//! topic ("parks"), and the topic's writer task writes every new frame straight
//! into the sockets of all parked subscribers, in one pass per wake-up.
//!
//! Why: waking one task per subscriber for every message costs more in
//! scheduling (wakers, run queue, a poll through the stream and the connection
//! future) than the frame's own bytes; a pass over the parked sockets costs one
//! non-blocking write each and nothing else. The publisher only pushes to the
//! ring and kicks the writer: it never waits for the fan-out.
//!
//! A subscriber's own task takes over again (is "handed back") whenever the
//! pass cannot finish its delivery in one non-blocking write: the socket is
//! full (the rest of the frame is handed back too, and the task waits for the
//! socket), the write failed (the client is gone), the subscriber fell behind
//! the ring (it catches up from the store), or it has no socket to give (a
//! stream whose transport cannot lend its socket: it is just woken, as a
//! pull subscriber).
//! Exactly one side writes at a time: the writer only touches a socket while
//! holding its slot's lock with `parked` set, and the subscriber clears
//! `parked` under that lock before it writes anything itself.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::ring::{Ring, Take};
use crate::protocol::PublicToken;
use crate::shards::lock;

/// Most bytes one direct write carries (several frames ready are coalesced).
pub(crate) const MAX_CHUNK: usize = 64 * 1024;

/// Parked subscribers written in a row before the writer lets other tasks run,
/// so that a pass over many thousands of sockets does not hold up publishers.
const PASS_SLICE: usize = 256;

/// Where a stream's bytes go: its socket, written without waiting.
pub(crate) trait Outlet: Send + Sync + 'static {
    /// Writes as much of `bytes` as the socket accepts now; `WouldBlock` when it
    /// accepts nothing.
    ///
    /// # Errors
    /// `WouldBlock`, or the socket's error (the client is gone).
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize>;
}

impl std::fmt::Debug for dyn Outlet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Outlet")
    }
}

/// One subscriber's place in its topic's direct delivery.
pub(crate) struct Slot {
    state: Mutex<SlotState>,
    /// Wakes the subscriber's task when the writer hands the stream back.
    handed_back: Notify,
    /// Set when the stream ended, so the topic can drop the slot without its lock.
    closed: AtomicBool,
    viewer: Option<PublicToken>,
}

struct SlotState {
    /// The writer owns the socket.
    parked: bool,
    /// In the topic's list of parked slots (or in the writer's hands).
    listed: bool,
    /// The next position this subscriber wants.
    next: u64,
    /// The unsent end of a chunk the writer began: the first bytes to send.
    leftover: Option<Bytes>,
    /// A direct write failed: the client is gone.
    failed: bool,
    /// When the writer last delivered a message here.
    delivered_at: Option<Instant>,
    outlet: Option<Arc<dyn Outlet>>,
}

/// What a subscriber gets back from its slot when it takes over.
pub(crate) struct Back {
    pub(crate) next: u64,
    pub(crate) leftover: Option<Bytes>,
    pub(crate) failed: bool,
    pub(crate) delivered_at: Option<Instant>,
}

/// A topic's direct delivery: the parked slots, and the kick that makes its
/// writer run a pass over them.
pub(crate) struct Direct {
    parked: Mutex<Parked>,
    /// Shared with the writer task, which waits on it without holding the topic.
    kick: Arc<Notify>,
}

/// The parked slots; the writer takes the list out for its pass.
#[derive(Default)]
struct Parked {
    slots: Vec<Arc<Slot>>,
    /// Slots in `slots` whose stream has ended.
    stale: usize,
}

impl Direct {
    pub(crate) fn new() -> Self {
        Direct {
            parked: Mutex::new(Parked::default()),
            kick: Arc::new(Notify::new()),
        }
    }

    /// What the writer waits on.
    pub(crate) fn kicks(&self) -> Arc<Notify> {
        Arc::clone(&self.kick)
    }

    /// Makes the writer run a pass (now, or right after the one under way).
    pub(crate) fn kick(&self) {
        self.kick.notify_one();
    }

    /// One pass of the writer: what `ring` holds that is new for each parked
    /// slot is written to its socket, and slots that cannot take it are
    /// handed back to their own task.
    pub(crate) async fn pass(&self, ring: &Ring) {
        let slots = {
            let mut parked = lock(&self.parked);
            parked.stale = 0;
            std::mem::take(&mut parked.slots)
        };
        let mut kept = Vec::with_capacity(slots.len());
        let mut now = Instant::now();
        let mut newest = None;
        for (done, slot) in slots.into_iter().enumerate() {
            if done > 0 && done % PASS_SLICE == 0 {
                tokio::task::yield_now().await;
                now = Instant::now();
            }
            if pass_one(ring, &slot, now, &mut newest) {
                kept.push(slot);
            }
        }
        let mut parked = lock(&self.parked);
        if parked.slots.is_empty() {
            parked.slots = kept;
        } else {
            parked.slots.append(&mut kept);
        }
    }
}

impl Slot {
    /// A slot for a stream writing to `outlet` (none: the stream is pulled),
    /// carrying the direct messages of `viewer`.
    pub(crate) fn new(outlet: Option<Arc<dyn Outlet>>, viewer: Option<PublicToken>) -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState {
                parked: false,
                listed: false,
                next: 0,
                leftover: None,
                failed: false,
                delivered_at: None,
                outlet,
            }),
            handed_back: Notify::new(),
            closed: AtomicBool::new(false),
            viewer,
        })
    }

    /// Whose direct messages this stream carries.
    pub(crate) fn viewer(&self) -> Option<&PublicToken> {
        self.viewer.as_ref()
    }

    /// Completes when the writer handed the stream back (or, rarely, spuriously).
    pub(crate) async fn handed_back(&self) {
        self.handed_back.notified().await;
    }

    /// Gives the socket to the writer of `direct` (delivering from `ring`)
    /// from position `next` on.
    pub(crate) fn park(self: &Arc<Self>, direct: &Direct, ring: &Ring, next: u64) {
        let list = {
            let mut state = lock(&self.state);
            state.parked = true;
            state.next = next;
            !std::mem::replace(&mut state.listed, true)
        };
        if list {
            lock(&direct.parked).slots.push(Arc::clone(self));
        }
        // A push between the subscriber's last look and now found it not yet
        // parked: make sure a pass runs that sees it.
        if ring.holds_after(next) {
            direct.kick();
        }
    }

    /// Takes the stream back from the writer (if it still has it), with what
    /// the writer left for the subscriber.
    pub(crate) fn unpark(&self) -> Back {
        let mut state = lock(&self.state);
        state.parked = false;
        Back {
            next: state.next,
            leftover: state.leftover.take(),
            failed: std::mem::take(&mut state.failed),
            delivered_at: state.delivered_at.take(),
        }
    }

    /// The stream ended: the writer never touches it again, and its socket is
    /// released now rather than when the topic next prunes its list.
    pub(crate) fn close(&self, direct: &Direct) {
        let listed = {
            let mut state = lock(&self.state);
            state.parked = false;
            state.outlet = None;
            state.leftover = None;
            state.listed
        };
        self.closed.store(true, Ordering::Relaxed);
        if listed {
            let mut parked = lock(&direct.parked);
            parked.stale += 1;
            if parked.stale * 2 > parked.slots.len() {
                parked.slots.retain(|slot| !slot.closed.load(Ordering::Relaxed));
                parked.stale = 0;
            }
        }
    }

    /// Writes what is new for this slot; false when the stream goes back to
    /// its own task.
    fn deliver(&self, ring: &Ring, state: &mut SlotState, now: Instant, newest: &mut Option<Newest>) -> bool {
        // Taken out for the duration (a move, not a reference count), so the
        // rest of the state can change while writing to it.
        let Some(outlet) = state.outlet.take() else {
            // A pulled stream: its task reads the ring itself once woken.
            return !ring.holds_after(state.next);
        };
        let stays = self.deliver_to(outlet.as_ref(), ring, state, now, newest);
        state.outlet = Some(outlet);
        stays
    }

    fn deliver_to(
        &self,
        outlet: &dyn Outlet,
        ring: &Ring,
        state: &mut SlotState,
        now: Instant,
        newest: &mut Option<Newest>,
    ) -> bool {
        let public = self.viewer.is_none();
        if let Some(shared) = newest.as_ref().filter(|shared| public && shared.from == state.next) {
            return match shared.chunk.clone() {
                Some(chunk) => sent(state, outlet.try_write(&chunk), chunk, shared.next, now),
                None => {
                    state.next = shared.next;
                    true
                }
            };
        }
        let from = state.next;
        let mut first = None;
        let mut takes = 0;
        loop {
            match ring.take(state.next, MAX_CHUNK, self.viewer.as_ref()) {
                Take::UpToDate | Take::Empty => {
                    if takes == 1 {
                        if let Some((chunk, next)) = first {
                            *newest = Some(Newest { from, chunk, next });
                        }
                    }
                    return true;
                }
                Take::Behind => return false,
                Take::Frames { chunk, next } => {
                    takes += 1;
                    if public && takes == 1 {
                        first = Some((chunk.clone(), next));
                    }
                    let Some(chunk) = chunk else {
                        state.next = next;
                        continue;
                    };
                    if !sent(state, outlet.try_write(&chunk), chunk, next, now) {
                        return false;
                    }
                }
            }
        }
    }
}

/// What one take from the ring gave a subscriber that sees only public
/// messages, kept for the rest of the pass: the others at the same position
/// get the same bytes without locking the ring again (twice) each.
struct Newest {
    /// The position the take started at.
    from: u64,
    /// The frames (`None`: all were direct messages to others).
    chunk: Option<Bytes>,
    /// The position after them; the ring held nothing newer then. A push since
    /// has kicked the writer again, so the next pass delivers it.
    next: u64,
}

/// Records the direct write of `chunk` (the frames up to `next`); false when
/// the stream goes back to its own task.
fn sent(state: &mut SlotState, result: io::Result<usize>, chunk: Bytes, next: u64, now: Instant) -> bool {
    match result {
        Ok(written) => {
            state.next = next;
            state.delivered_at = Some(now);
            if written < chunk.len() {
                state.leftover = Some(chunk.slice(written..));
                return false;
            }
            true
        }
        Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
            state.next = next;
            state.delivered_at = Some(now);
            state.leftover = Some(chunk);
            false
        }
        Err(_) => {
            state.failed = true;
            false
        }
    }
}

/// Delivers to one slot; false when it leaves the list.
fn pass_one(ring: &Ring, slot: &Slot, now: Instant, newest: &mut Option<Newest>) -> bool {
    let mut state = lock(&slot.state);
    if !state.parked {
        state.listed = false;
        return false;
    }
    if slot.deliver(ring, &mut state, now, newest) {
        return true;
    }
    state.parked = false;
    state.listed = false;
    drop(state);
    slot.handed_back.notify_one();
    false
}
