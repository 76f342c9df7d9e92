//! URL templates: `http://HOST:PORT/path/{channel}?query`, loopback hosts only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// A parsed URL template. `{channel}` (and, for resume URLs, `{last_id}`) stay
/// in the path until [`Target::render`] replaces them.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Where to connect.
    pub(crate) addr: SocketAddr,
    /// Value of the `Host` header.
    pub(crate) host: String,
    /// Path and query, with placeholders.
    pub(crate) path: String,
}

impl Target {
    /// Parses `url`; refuses anything that is not plain `http://` to a loopback address.
    pub(crate) fn parse(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let end = v6.find(']').ok_or_else(|| format!("{url}: bad IPv6 host"))?;
            let port = v6[end + 1..].strip_prefix(':').unwrap_or("80");
            (&v6[..end], port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p),
                None => (authority, "80"),
            }
        };
        let port: u16 = port.parse().map_err(|_| format!("{url}: bad port {port:?}"))?;
        let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host.parse()
                .map_err(|_| format!("{url}: host must be a loopback IP address or localhost"))?
        };
        if !ip.is_loopback() {
            return Err(format!(
                "{url}: refusing non-loopback target {ip} (this tool only drives servers on this machine)"
            ));
        }
        if ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) {
            return Err(format!("{url}: bad host"));
        }
        Ok(Target {
            addr: SocketAddr::new(ip, port),
            host: authority.to_owned(),
            path: path.to_owned(),
        })
    }

    /// The path with `{channel}` replaced.
    pub(crate) fn render(&self, channel: &str) -> String {
        self.path.replace("{channel}", channel)
    }
}

/// Percent-encodes a value for a query string (unreserved characters stay).
pub(crate) fn encode_query(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Source address number `index` for spreading connections: 127.0.0.2, 127.0.0.3, ...
pub(crate) fn source_ip(index: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x7f00_0002u32 + index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses() {
        let t = Target::parse("http://127.0.0.1:8080/channels/{channel}/events?timeout=3600").unwrap();
        assert_eq!(t.addr.port(), 8080);
        assert_eq!(t.render("a"), "/channels/a/events?timeout=3600");
        assert!(Target::parse("http://localhost:1/x").is_ok());
        assert!(Target::parse("http://[::1]:9/x").is_ok());
        assert!(Target::parse("http://10.0.0.1:80/").is_err());
        assert!(Target::parse("http://example.com/").is_err());
        assert!(Target::parse("https://127.0.0.1/").is_err());
        assert_eq!(encode_query("a:b c"), "a%3Ab%20c");
        assert_eq!(source_ip(0).to_string(), "127.0.0.2");
        assert_eq!(source_ip(300).to_string(), "127.0.1.46");
    }
}
