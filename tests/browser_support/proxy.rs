//! A TCP forwarder between the browser and the server, to play a network drop:
//! [`CutProxy::cut`] breaks every open connection (the page's event stream
//! included) and, while [`CutProxy::set_down`] is on, new connections are
//! accepted and dropped at once, as an unreachable server looks to a browser.
//! The server itself keeps running, with its history.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A forwarder from `127.0.0.1:<port>` to one target address.
pub(crate) struct CutProxy {
    /// `127.0.0.1:PORT` of the proxy.
    pub(crate) addr: String,
    down: Arc<AtomicBool>,
    generation: watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Listens on an ephemeral port and forwards to `target` (`host:port`).
    pub(crate) async fn start(target: &str) -> CutProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address").to_string();
        let down = Arc::new(AtomicBool::new(false));
        let (generation, _) = watch::channel(0u64);
        let task = {
            let down = Arc::clone(&down);
            let generation = generation.clone();
            let target = target.to_owned();
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    if down.load(Ordering::SeqCst) {
                        drop(inbound); // the connection closes before any answer
                        continue;
                    }
                    let mut cut = generation.subscribe();
                    let target = target.clone();
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(&target).await else {
                            return;
                        };
                        let _ = inbound.set_nodelay(true);
                        let _ = outbound.set_nodelay(true);
                        let (mut inbound, mut outbound) = (inbound, outbound);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {} // both sockets drop here
                        }
                    });
                }
            })
        };
        CutProxy {
            addr,
            down,
            generation,
            task,
        }
    }

    /// `http://127.0.0.1:PORT` + `path`, through the proxy.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Breaks every connection open now.
    pub(crate) fn cut(&self) {
        self.generation.send_modify(|g| *g += 1);
    }

    /// While `true`, new connections are dropped as soon as they are accepted.
    pub(crate) fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.cut();
        self.task.abort();
    }
}
