//! How much all clients together, and each client, may hold: open
//! connections (all of them), and per client address open streams and
//! requests in flight. Each is a permit that gives its place back on drop,
//! however the connection, stream or request ends.
//!
//! A client's address is its peer address, unless the peer is a configured
//! trusted proxy: then it is the nearest address its `Forwarded` (or, without
//! one, `X-Forwarded-For`) header names that is not itself a trusted proxy.
//! Headers from any other peer are ignored, so a client cannot pick the
//! address it is counted under.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use warp::http::header::FORWARDED;
use warp::http::HeaderMap;

use crate::shards::lock;

/// Locks the per-client counts are split over.
const SHARDS: usize = 16;

/// The bounds (see `--max-connections`, `--max-streams-per-client`,
/// `--max-requests-per-client`, `--trusted-proxy`).
#[derive(Debug, Clone)]
pub(crate) struct Bounds {
    pub(crate) max_connections: usize,
    pub(crate) max_streams_per_client: usize,
    pub(crate) max_requests_per_client: usize,
    pub(crate) trusted_proxies: Vec<IpNet>,
}

/// The counts, shared by every connection.
#[derive(Debug)]
pub(crate) struct Limits {
    bounds: Bounds,
    connections: AtomicUsize,
    clients: Box<[Mutex<HashMap<IpAddr, Held>>]>,
}

/// What one client address holds now.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    streams: usize,
    requests: usize,
}

/// Which of a client's counts a permit holds a place in.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Stream,
    Request,
}

/// A place among the open connections.
#[derive(Debug)]
pub(crate) struct ConnectionPermit(Arc<Limits>);

/// A client's place among its streams or its requests in flight.
#[derive(Debug)]
pub(crate) struct ClientPermit {
    limits: Arc<Limits>,
    client: IpAddr,
    kind: Kind,
}

impl Limits {
    pub(crate) fn new(bounds: Bounds) -> Arc<Self> {
        Arc::new(Limits {
            bounds,
            connections: AtomicUsize::new(0),
            clients: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        })
    }

    /// A place for one more connection, unless all are taken.
    pub(crate) fn connection(self: &Arc<Self>) -> Option<ConnectionPermit> {
        let open = self.connections.fetch_add(1, Ordering::AcqRel);
        if open >= self.bounds.max_connections {
            self.connections.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionPermit(Arc::clone(self)))
    }

    /// A place for one more stream of `client`, unless it holds its maximum.
    pub(crate) fn stream(self: &Arc<Self>, client: IpAddr) -> Option<ClientPermit> {
        self.take(client, Kind::Stream)
    }

    /// A place for one more request in flight of `client`, unless it holds its maximum.
    pub(crate) fn request(self: &Arc<Self>, client: IpAddr) -> Option<ClientPermit> {
        self.take(client, Kind::Request)
    }

    fn shard(&self, client: IpAddr) -> &Mutex<HashMap<IpAddr, Held>> {
        let mut hasher = DefaultHasher::new();
        client.hash(&mut hasher);
        let index = hasher.finish() % SHARDS as u64;
        &self.clients[usize::try_from(index).unwrap_or(0)]
    }

    fn take(self: &Arc<Self>, client: IpAddr, kind: Kind) -> Option<ClientPermit> {
        let mut shard = lock(self.shard(client));
        let held = shard.entry(client).or_default();
        let (count, max) = match kind {
            Kind::Stream => (&mut held.streams, self.bounds.max_streams_per_client),
            Kind::Request => (&mut held.requests, self.bounds.max_requests_per_client),
        };
        if *count >= max {
            if held.streams == 0 && held.requests == 0 {
                shard.remove(&client);
            }
            return None;
        }
        *count += 1;
        Some(ClientPermit {
            limits: Arc::clone(self),
            client,
            kind,
        })
    }

    /// The address a request is counted under (see the module documentation).
    pub(crate) fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.ip().to_canonical();
        if !self.is_trusted(peer) {
            return peer;
        }
        let named = match headers.get(FORWARDED) {
            Some(_) => forwarded_for(headers),
            None => x_forwarded_for(headers),
        };
        let mut client = peer;
        // From the nearest hop outwards: each trusted proxy vouches for the one before it.
        for hop in named.iter().rev() {
            let Some(hop) = hop else {
                break; // an address we cannot read: the proxy that passed it is the client
            };
            client = hop.to_canonical();
            if !self.is_trusted(client) {
                break;
            }
        }
        client
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.bounds.trusted_proxies.iter().any(|net| net.contains(&address))
    }
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for ClientPermit {
    fn drop(&mut self) {
        let mut shard = lock(self.limits.shard(self.client));
        if let Some(held) = shard.get_mut(&self.client) {
            match self.kind {
                Kind::Stream => held.streams = held.streams.saturating_sub(1),
                Kind::Request => held.requests = held.requests.saturating_sub(1),
            }
            if held.streams == 0 && held.requests == 0 {
                shard.remove(&self.client);
            }
        }
    }
}

/// The addresses of every `X-Forwarded-For` header, in order (`None` for an
/// entry that is not an address).
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(|entry| address(entry.trim()))
        .collect()
}

/// The `for=` addresses of every `Forwarded` header (RFC 7239), in order
/// (`None` for a hop whose `for` is missing, obfuscated or `unknown`).
fn forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(FORWARDED)
        .iter()
        .flat_map(|value| value.to_str().unwrap_or("?").split(','))
        .map(|element| {
            element.split(';').find_map(|pair| {
                let (name, value) = pair.split_once('=')?;
                name.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| address(value.trim().trim_matches('"')))
                    .flatten()
            })
        })
        .collect()
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`,
/// `2001:db8::1` or `[2001:db8::1]:4711`.
fn address(text: &str) -> Option<IpAddr> {
    text.parse::<IpAddr>()
        .ok()
        .or_else(|| text.parse::<SocketAddr>().ok().map(|socket| socket.ip()))
        .or_else(|| text.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(trusted: &[&str]) -> Arc<Limits> {
        Limits::new(Bounds {
            max_connections: 2,
            max_streams_per_client: 2,
            max_requests_per_client: 1,
            trusted_proxies: trusted.iter().map(|net| net.parse().unwrap()).collect(),
        })
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                warp::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    #[test]
    fn permits_are_counted_and_given_back() {
        let limits = limits(&[]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let (one, two) = (limits.connection().unwrap(), limits.connection().unwrap());
        assert!(limits.connection().is_none());
        drop(one);
        let three = limits.connection().unwrap();
        drop((two, three));
        let streams = [limits.stream(a).unwrap(), limits.stream(a).unwrap()];
        assert!(limits.stream(a).is_none());
        assert!(limits.stream(b).is_some(), "another client has its own count");
        let request = limits.request(a).unwrap();
        assert!(limits.request(a).is_none());
        drop(request);
        assert!(limits.request(a).is_some());
        drop(streams);
        assert!(
            limits.clients.iter().all(|shard| lock(shard).is_empty()),
            "nothing left once all is given back"
        );
    }

    #[test]
    fn forwarding_headers_count_only_from_trusted_proxies() {
        let proxy: SocketAddr = "10.0.0.5:1234".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.7:1234".parse().unwrap();
        let trusted = limits(&["10.0.0.0/8", "::1/128"]);
        let forwarded = headers(&[("x-forwarded-for", "203.0.113.9, 10.0.0.7")]);
        assert_eq!(
            trusted.client(proxy, &forwarded),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            trusted.client(stranger, &forwarded),
            stranger.ip(),
            "headers from a stranger are ignored"
        );
        assert_eq!(limits(&[]).client(proxy, &forwarded), proxy.ip());
        let rfc = headers(&[("forwarded", r#"for=192.0.2.60;proto=http, for="[2001:db8::1]:4711""#)]);
        assert_eq!(trusted.client(proxy, &rfc), "2001:db8::1".parse::<IpAddr>().unwrap());
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, nonsense")]);
        assert_eq!(
            trusted.client(proxy, &spoofed),
            proxy.ip(),
            "an unreadable hop stops at the proxy"
        );
        let mapped: SocketAddr = "[::ffff:10.0.0.5]:80".parse().unwrap();
        assert_eq!(
            trusted.client(mapped, &forwarded),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
    }
}
