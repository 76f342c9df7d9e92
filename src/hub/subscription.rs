//! One subscriber's stream: resume position, replay, live frames, heartbeats,
//! timeout and shutdown.
//!
//! A subscription is a position (`next`, the next seq it wants) and a pull loop:
//! take what the topic's ring holds from `next` on; when the ring cannot answer
//! (the subscriber is behind it, or it is new), read the store after `next - 1`.
//! Once up to date, the stream parks: the topic's writer sends new frames
//! straight to its socket and hands it back when it cannot (see `direct.rs`).
//! Delivery is by position, so the seam between replay and live has neither a
//! duplicate nor a hole, whatever is published meanwhile. Nothing is queued per
//! subscriber: a slow one just falls behind and catches up from the store, or
//! is told of a gap when the history no longer reaches back to it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::Stream;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

use super::direct::{Outlet, Slot, MAX_CHUNK};
use super::resume::{position_after, resume_position};
use super::ring::Take;
use super::topic::Topic;
use super::{Hub, HubError};
use crate::protocol::{ChannelName, FailureBody, MessageId, TimeoutBody};
use crate::sse;
use crate::store::ClientRecord;

/// What a subscriber asks for.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubscribeRequest {
    /// The resume position (from `Last-Event-ID` or `lastEventId`), as sent.
    pub(crate) last_event_id: Option<String>,
    /// The stream's timeout; the client's, else the server default, when `None`.
    pub(crate) timeout: Option<Duration>,
    /// The registered client this stream is for (authenticated by its private
    /// token); it then also gets the direct messages addressed to it.
    pub(crate) client: Option<ClientRecord>,
    /// The socket the stream is written to, when the caller lets the topic's
    /// writer use it directly; without one, the stream is only ever pulled.
    pub(crate) outlet: Option<Arc<dyn Outlet>>,
}

/// Holds one stream's place in the hub's counts and in its client's stream
/// count; gives both back on drop, however the stream ends (completed, client
/// gone, removed, server shutdown).
struct Place {
    hub: Hub,
    channel: ChannelName,
    topic: Option<Arc<Topic>>,
    /// The stream's place in the topic's direct delivery.
    slot: Option<Arc<Slot>>,
    /// Set once the store counted this stream for the client.
    client: Option<ClientRecord>,
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(topic) = self.topic.take() {
            if let Some(slot) = self.slot.take() {
                topic.close(&slot);
            }
            if let Some(client) = self.client.take() {
                topic.unwatch_client(&client.public_token);
                // The store may be remote: detach in a task the server waits for.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    let (hub, channel) = (self.hub.clone(), self.channel.clone());
                    let task = async move { hub.detach(&channel, &client).await };
                    self.hub.shared.tasks.spawn_on(task, &runtime);
                }
            }
            self.hub.shared.fanout.unfollow(&self.channel, &topic);
        }
        self.hub.shared.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Hub {
    /// A stream of `client` closed: count it, and announce the client gone
    /// when that was its last stream.
    async fn detach(&self, channel: &ChannelName, client: &ClientRecord) {
        match self.shared.store.clients.detach(channel, &client.public_token).await {
            Ok(true) => self.announce(channel, "client.disconnected", client).await,
            Ok(false) => {}
            Err(error) => tracing::warn!(%channel, %error, "could not count a closed stream"),
        }
    }
}

struct State {
    place: Place,
    topic: Arc<Topic>,
    /// Direct delivery while up to date; also names the client whose direct
    /// messages this stream carries.
    slot: Arc<Slot>,
    /// Cancelled when that client is removed.
    removed: CancellationToken,
    /// Cancelled when the store's notifications were interrupted.
    interrupted: CancellationToken,
    /// Bytes to send before anything else (preamble, gap frame).
    pending: Option<Bytes>,
    /// The next position this subscriber wants.
    next: u64,
    /// True once the store said there is nothing at or after `next` and the ring
    /// has had nothing since: no need to ask the store again until a push.
    synced: bool,
    timeout: Duration,
    timeout_at: Instant,
    heartbeat_at: Instant,
    timer: Pin<Box<Sleep>>,
    done: bool,
}

pub(super) async fn open(
    hub: Hub,
    channel: ChannelName,
    request: SubscribeRequest,
) -> Result<impl Stream<Item = Result<Bytes, Infallible>> + Send + Sync + 'static, HubError> {
    let shared = &hub.shared;
    if shared.shutdown.is_cancelled() {
        return Err(HubError::ShuttingDown);
    }
    let open_now = shared.subscribers.fetch_add(1, Ordering::Relaxed) + 1;
    let mut place = Place {
        hub: hub.clone(),
        channel: channel.clone(),
        topic: None,
        slot: None,
        client: None,
    };
    if open_now > shared.settings.max_subscribers {
        return Err(HubError::TooManySubscribers(shared.settings.max_subscribers));
    }
    // Follow before reading the resume position: every message stored from here
    // on reaches the ring, and everything before it is in the store.
    let topic = shared.fanout.follow(&channel);
    place.topic = Some(Arc::clone(&topic));

    // Watch for the client's removal before counting the stream in the store,
    // so a removal in between cannot be missed.
    let removed = match &request.client {
        Some(client) => {
            let removed = topic.watch_client(&client.public_token);
            match shared.store.clients.attach(&channel, &client.public_token).await {
                Ok(Some(first)) => {
                    place.client = Some(client.clone());
                    if first {
                        hub.announce(&channel, "client.connected", client).await;
                    }
                }
                outcome => {
                    topic.unwatch_client(&client.public_token);
                    return Err(outcome.map_or_else(HubError::Store, |_| HubError::UnknownClient));
                }
            }
            removed
        }
        None => CancellationToken::new(),
    };

    let registered_after = request.client.as_ref().map(|c| c.registered_after);
    let (next, gap) = resume_position(&hub, &channel, request.last_event_id.as_deref(), registered_after).await?;
    let mut first = BytesMut::new();
    first.put_slice(&sse::preamble(shared.settings.retry_ms));
    if let Some(gap) = gap {
        first.put_slice(&gap);
    }

    let client_timeout = request.client.as_ref().map(|c| Duration::from_secs(c.timeout_seconds));
    let timeout = request
        .timeout
        .or(client_timeout)
        .unwrap_or(shared.settings.default_timeout);
    let now = Instant::now();
    let heartbeat_at = now + shared.settings.heartbeat;
    let viewer = request.client.as_ref().map(|c| c.public_token.clone());
    let slot = Slot::new(request.outlet, viewer);
    place.slot = Some(Arc::clone(&slot));
    let state = State {
        slot,
        removed,
        interrupted: shared.fanout.interruption(),
        place,
        topic,
        pending: Some(first.freeze()),
        next,
        synced: false,
        timeout,
        timeout_at: now + timeout,
        heartbeat_at,
        timer: Box::pin(tokio::time::sleep_until(heartbeat_at.min(now + timeout))),
        done: false,
    };
    let stream = futures::stream::unfold(state, |mut state| async move {
        let chunk = step(&mut state).await?;
        Some((Ok(chunk), state))
    });
    Ok(Exclusive(std::sync::Mutex::new(Box::pin(stream))))
}

/// Makes a `Send` stream `Sync`, as warp's response body requires, by only ever
/// touching it through `&mut` ([`std::sync::Mutex::get_mut`] takes no lock). The
/// store's futures need not be `Sync` for this.
struct Exclusive<S>(std::sync::Mutex<Pin<Box<S>>>);

impl<S: Stream> Stream for Exclusive<S> {
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Option<S::Item>> {
        let inner = self.get_mut().0.get_mut().unwrap_or_else(|p| p.into_inner());
        inner.as_mut().poll_next(cx)
    }
}

/// The preamble and one failure frame: how a subscriber error reaches a browser.
pub(super) fn failure_only(retry_ms: u64, code: &str, message: &str) -> Bytes {
    let mut bytes = BytesMut::new();
    bytes.put_slice(&sse::preamble(retry_ms));
    bytes.put_slice(&failure_frame(code, message));
    bytes.freeze()
}

/// A failure frame: the last frame of a stream that cannot go on.
fn failure_frame(code: &str, message: &str) -> Bytes {
    sse::event("failure", &FailureBody { code, message })
}

/// The failure frame that ends an open stream, with the error's own code.
fn failure(error: &HubError) -> Bytes {
    failure_frame(error.code(), &error.to_string())
}

/// What woke a waiting subscriber.
enum Wake {
    /// The topic's writer gave the stream back (or there is more to pull).
    HandedBack,
    Timer,
    Shutdown,
    Removed,
    Interrupted,
}

/// The next chunk of the stream, or `None` when it has ended.
async fn step(state: &mut State) -> Option<Bytes> {
    if let Some(first) = state.pending.take() {
        return Some(first);
    }
    if state.done {
        return None;
    }
    let hub = state.place.hub.clone();
    let topic = Arc::clone(&state.topic);
    loop {
        match topic.ring.take(state.next, MAX_CHUNK, state.slot.viewer()) {
            Take::Frames { chunk, next } => {
                state.next = next;
                match chunk {
                    Some(chunk) => return Some(delivered(state, chunk)),
                    None => continue, // only others' direct messages
                }
            }
            Take::UpToDate => {}
            Take::Empty if state.synced => {}
            Take::Empty | Take::Behind => match catch_up(&hub, state).await {
                Ok(Some(chunk)) => return Some(chunk),
                Ok(None) => {}
                Err(error) => {
                    state.done = true;
                    tracing::warn!(channel = %state.place.channel, %error, "stream failed");
                    return Some(failure(&error));
                }
            },
        }

        // Deliveries only push the deadlines later, so the timer is left armed at
        // the earlier one (no timer work per delivery) and re-armed when it fires
        // early; it is moved only when a deadline comes sooner.
        let deadline = state.heartbeat_at.min(state.timeout_at);
        if state.timer.is_elapsed() || state.timer.deadline() > deadline {
            state.timer.as_mut().reset(deadline);
        }
        // Up to date: the topic's writer delivers from here until it hands the
        // stream back, or something else needs this task.
        topic.park(&state.slot, state.next);
        let wake = tokio::select! {
            biased;
            _ = hub.shared.shutdown.cancelled() => Wake::Shutdown,
            _ = state.removed.cancelled() => Wake::Removed,
            _ = state.interrupted.cancelled() => Wake::Interrupted,
            () = state.slot.handed_back() => Wake::HandedBack,
            _ = state.timer.as_mut() => Wake::Timer,
        };
        let back = state.slot.unpark();
        state.next = back.next;
        if let Some(at) = back.delivered_at {
            state.timeout_at = at + state.timeout;
            state.heartbeat_at = at + hub.shared.settings.heartbeat;
        }
        if back.failed {
            state.done = true;
            return None; // the socket refused a write: the client is gone
        }
        if let Some(rest) = back.leftover {
            return Some(rest); // the end of a chunk the writer began
        }
        match wake {
            Wake::HandedBack => continue,
            Wake::Shutdown => {
                state.done = true;
                return Some(Bytes::from_static(sse::SHUTDOWN));
            }
            Wake::Interrupted => {
                state.done = true;
                return Some(Bytes::from_static(sse::INTERRUPTED));
            }
            Wake::Removed => {
                state.done = true;
                return Some(failure(&HubError::ClientRemoved));
            }
            Wake::Timer => {
                let now = Instant::now();
                if now >= state.timeout_at {
                    state.done = true;
                    let body = TimeoutBody {
                        channel: &state.place.channel,
                        seconds: state.timeout.as_secs(),
                    };
                    return Some(sse::event("timeout", &body));
                }
                if now < state.heartbeat_at {
                    continue; // armed for an earlier deadline that deliveries moved on
                }
                state.heartbeat_at = now + hub.shared.settings.heartbeat;
                return Some(Bytes::from_static(sse::HEARTBEAT));
            }
        }
    }
}

/// Reads the store after `next - 1`: the replay of a new stream, or the catch-up
/// of one that fell behind the ring. `None` when there is nothing to send.
async fn catch_up(hub: &Hub, state: &mut State) -> Result<Option<Bytes>, HubError> {
    let channel = &state.place.channel;
    let after = state.next - 1;
    let history = hub
        .shared
        .store
        .log
        .read(channel, after, hub.shared.settings.replay_batch)
        .await?;
    let mut chunk = BytesMut::new();
    // When the history no longer reaches back to this subscriber: say so, and
    // go on from the oldest retained message.
    let asked = MessageId {
        epoch: hub.shared.store.log.epoch(),
        seq: after,
    }
    .to_string();
    let (next, gap) = position_after(hub, channel, &history, after, &asked);
    if let Some(gap) = gap {
        chunk.put_slice(&gap);
    }
    state.next = next;
    let mut delivered_any = false;
    for message in &history.messages {
        if message.is_visible_to(state.slot.viewer()) {
            chunk.put_slice(&message.frame);
            delivered_any = true;
        }
        state.next = message.seq + 1;
    }
    state.synced = history.messages.is_empty() && history.last_seq < state.next;
    if chunk.is_empty() {
        return Ok(None);
    }
    let chunk = chunk.freeze();
    Ok(Some(if delivered_any { delivered(state, chunk) } else { chunk }))
}

/// Bookkeeping for a chunk carrying messages: the timeout and heartbeat restart.
fn delivered(state: &mut State, chunk: Bytes) -> Bytes {
    let now = Instant::now();
    state.timeout_at = now + state.timeout;
    state.heartbeat_at = now + state.place.hub.shared.settings.heartbeat;
    chunk
}
