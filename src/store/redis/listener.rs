//! The node's one subscription to the notifications every node's scripts
//! publish: each stored message and client removal, from every node, handed
//! to this node's hub.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use super::epoch::{self, SharedEpoch};
use super::keys;
use crate::protocol::{ChannelName, Message, PublicToken, Timestamp};
use crate::store::Feed;

/// Subscribes, tells `ready` once it first is, and hands every notification to
/// `feed` until `stop`. Reconnects with backoff; while it is down the hub ends
/// its streams, so no subscriber waits for messages that cannot come.
pub(super) async fn listen(
    client: redis::Client,
    epoch: Arc<SharedEpoch>,
    feed: Arc<dyn Feed>,
    ready: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(keys::EVENTS).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        let pubsub = tokio::select! {
            pubsub = session => pubsub,
            () = stop.cancelled() => return,
        };
        match pubsub {
            Ok(mut pubsub) => {
                backoff = Duration::from_millis(100);
                epoch.set_listening(true);
                match ready.take() {
                    Some(ready) => {
                        let _ = ready.send(());
                    }
                    // Streams opened while notifications were off may have
                    // missed some: end them too, so their clients resume from
                    // the store.
                    None => feed.store_interrupted(),
                }
                tracing::info!("subscribed to redis notifications");
                let mut messages = pubsub.on_message();
                loop {
                    let message = tokio::select! {
                        message = messages.next() => message,
                        () = stop.cancelled() => return,
                    };
                    match message {
                        Some(message) => dispatch(&epoch, &*feed, message.get_payload_bytes()),
                        None => break,
                    }
                }
                tracing::warn!("redis notification subscription lost; ending streams so clients resume");
            }
            Err(error) => tracing::warn!(%error, "cannot subscribe to redis notifications"),
        }
        epoch.set_listening(false);
        feed.store_interrupted();
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Decodes one notification: `m\n<channel>\n<epoch>\n<seq>\n<time>\n<to>\n<envelope>`
/// (see `append.lua`) or `r\n<channel>\n<public token>` (see `remove.lua`).
fn dispatch(epoch: &SharedEpoch, feed: &dyn Feed, payload: &[u8]) {
    let mut parts = payload.splitn(7, |b| *b == b'\n');
    let kind = parts.next();
    let channel = parts
        .next()
        .and_then(|c| std::str::from_utf8(c).ok())
        .and_then(|c| ChannelName::parse(c).ok());
    let Some(channel) = channel else { return };
    match kind {
        Some(b"m") => {
            let mut text = || parts.next().and_then(|p| std::str::from_utf8(p).ok());
            let (Some(issued), Some(seq), Some(time), Some(to)) = (text(), text(), text(), text()) else {
                return;
            };
            let (Some(issued), Ok(seq), Ok(time)) = (epoch::parse(issued), seq.parse(), time.parse()) else {
                return;
            };
            epoch.adopt(issued);
            let to = if to.is_empty() {
                None
            } else {
                PublicToken::parse(to).ok()
            };
            let Some(envelope) = parts.next() else { return };
            let message = Message::from_envelope(issued, seq, Timestamp(time), to, envelope);
            feed.deliver(&channel, &Arc::new(message));
        }
        Some(b"r") => {
            let public = parts
                .next()
                .and_then(|p| std::str::from_utf8(p).ok())
                .and_then(|p| PublicToken::parse(p).ok());
            if let Some(public) = public {
                feed.client_removed(&channel, &public);
            }
        }
        _ => {}
    }
}
