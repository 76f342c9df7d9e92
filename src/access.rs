//! Who may do what: publisher keys, per-channel policies and allowed CORS
//! origins, all from configuration.
//!
//! A policy is chosen per channel by the first `--policy` rule whose pattern
//! matches the channel name (`*` matches any run of characters); channels no
//! rule matches get the default: anyone may subscribe, publishers and
//! registered clients may send, no presence events.

use std::fmt;
use std::str::FromStr;

use crate::protocol::ChannelName;

/// Who may open a stream on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subscribers {
    /// Anyone; a token, when given, must still be valid.
    Anyone,
    /// Only registered clients of the channel (with their private token), and publishers.
    Clients,
}

/// Who may send to a channel: any combination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Senders {
    /// Holders of a publisher key.
    pub publishers: bool,
    /// Registered clients of the channel, with their private token.
    pub clients: bool,
    /// Anyone, with no credentials at all.
    pub anyone: bool,
}

/// What applies to one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policy {
    /// Who may subscribe (and read presence).
    pub subscribe: Subscribers,
    /// Who may send.
    pub send: Senders,
    /// Whether the server announces `client.connected` / `client.disconnected` / `client.expired`.
    pub presence: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            subscribe: Subscribers::Anyone,
            send: Senders {
                publishers: true,
                clients: true,
                anyone: false,
            },
            presence: false,
        }
    }
}

/// One `--policy` rule: `PATTERN:key=value,...` with keys `subscribe`
/// (`anyone` | `clients`), `send` (`publishers`, `clients`, `anyone` joined
/// by `+`) and `presence` (`on` | `off`); unnamed keys keep their default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyRule {
    pattern: String,
    policy: Policy,
}

impl FromStr for PolicyRule {
    type Err = String;

    fn from_str(rule: &str) -> Result<Self, String> {
        let (pattern, settings) = rule.rsplit_once(':').ok_or_else(|| {
            format!("policy '{rule}': expected PATTERN:key=value,... e.g. 'chat-*:subscribe=clients,presence=on'")
        })?;
        if pattern.is_empty() {
            return Err(format!("policy '{rule}': empty channel pattern"));
        }
        let mut policy = Policy::default();
        for setting in settings.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (key, value) = setting
                .split_once('=')
                .ok_or_else(|| format!("policy '{rule}': '{setting}' is not key=value"))?;
            match (key.trim(), value.trim()) {
                ("subscribe", "anyone") => policy.subscribe = Subscribers::Anyone,
                ("subscribe", "clients") => policy.subscribe = Subscribers::Clients,
                ("send", who) => {
                    let mut send = Senders {
                        publishers: false,
                        clients: false,
                        anyone: false,
                    };
                    for part in who.split('+') {
                        match part.trim() {
                            "publishers" => send.publishers = true,
                            "clients" => send.clients = true,
                            "anyone" => send.anyone = true,
                            other => {
                                return Err(format!(
                                    "policy '{rule}': unknown sender '{other}' (publishers, clients, anyone)"
                                ))
                            }
                        }
                    }
                    policy.send = send;
                }
                ("presence", "on") => policy.presence = true,
                ("presence", "off") => policy.presence = false,
                (key, value) => return Err(format!("policy '{rule}': unknown setting {key}={value}")),
            }
        }
        Ok(PolicyRule {
            pattern: pattern.to_owned(),
            policy,
        })
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob_matches(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty(); // no '*' at all
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// How a page's origin may call the API cross-origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CorsOrigin {
    /// Named by `--cors-origin`: its own origin is echoed, credentials included.
    Listed,
    /// Allowed only by `--cors-origin '*'`: any origin, without credentials.
    /// Echoing every origin (`null`, `file://…`) with credentials would let
    /// any page on the web make credentialed requests and read the answers.
    Any,
}

/// A secret from configuration. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(secret: impl Into<String>) -> Self {
        Secret(secret.into())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Parsing never fails, so a rejected key is never echoed back in a usage
/// error; [`Secret::check`] says what is wrong without repeating it.
impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.trim().to_owned()))
    }
}

impl Secret {
    /// Shortest publisher key accepted.
    pub const MIN_LEN: usize = 16;

    /// Whether it is long enough to be a publisher key.
    ///
    /// # Errors
    /// A message that does not contain the key.
    pub fn check(&self) -> Result<(), String> {
        if self.0.len() < Self::MIN_LEN {
            return Err(format!(
                "a publisher key must be at least {} characters (a {}-character one was given)",
                Self::MIN_LEN,
                self.0.len()
            ));
        }
        Ok(())
    }
}

/// Compares in time that depends only on the lengths, so a key cannot be
/// guessed byte by byte from response times.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The access configuration of a server.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    keys: Vec<Secret>,
    rules: Vec<PolicyRule>,
    cors_origins: Vec<String>,
}

impl Access {
    /// Access with these keys, policy rules (first match wins) and CORS origins
    /// (`*` allows every origin, without credentials).
    pub(crate) fn new(keys: Vec<Secret>, rules: Vec<PolicyRule>, cors_origins: Vec<String>) -> Self {
        Access {
            keys,
            rules,
            cors_origins,
        }
    }

    /// True when no publisher key is configured: requests without credentials
    /// then count as a publisher's (the server only allows this on loopback).
    pub(crate) fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `token` is one of the publisher keys.
    pub(crate) fn is_publisher_key(&self, token: &str) -> bool {
        // Check every key, so the time taken does not tell which one matched.
        self.keys.iter().fold(false, |found, key| {
            same_secret(key.0.as_bytes(), token.as_bytes()) | found
        })
    }

    /// The policy of `channel`.
    pub(crate) fn policy(&self, channel: &ChannelName) -> Policy {
        self.rules
            .iter()
            .find(|rule| glob_matches(&rule.pattern, channel.as_str()))
            .map_or_else(Policy::default, |rule| rule.policy)
    }

    /// Whether, and how, a browser page from `origin` may call the API: an
    /// origin named in the list wins over `*`.
    pub(crate) fn cors_origin(&self, origin: &str) -> Option<CorsOrigin> {
        if self
            .cors_origins
            .iter()
            .any(|allowed| allowed != "*" && allowed.eq_ignore_ascii_case(origin))
        {
            Some(CorsOrigin::Listed)
        } else {
            self.cors_origins
                .iter()
                .any(|allowed| allowed == "*")
                .then_some(CorsOrigin::Any)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_matches("*", "anything"));
        assert!(glob_matches("chat-*", "chat-1"));
        assert!(!glob_matches("chat-*", "news"));
        assert!(glob_matches("a*b*c", "aXXbYYc"));
        assert!(!glob_matches("a*b*c", "aXXc"));
        assert!(glob_matches("exact", "exact"));
        assert!(!glob_matches("exact", "exactly"));
        assert!(glob_matches("*-room", "x-room"));
    }

    #[test]
    fn rules_parse_and_first_match_wins() {
        let rule: PolicyRule = "chat-*:subscribe=clients,send=clients+publishers,presence=on"
            .parse()
            .unwrap();
        assert_eq!(rule.policy.subscribe, Subscribers::Clients);
        assert!(rule.policy.presence && rule.policy.send.clients && !rule.policy.send.anyone);
        assert!("chat-*:send=everyone".parse::<PolicyRule>().is_err());
        assert!("no-colon".parse::<PolicyRule>().is_err());
        let access = Access::new(vec![], vec![rule, "*:send=anyone".parse().unwrap()], vec![]);
        assert!(access.policy(&ChannelName::parse("chat-1").unwrap()).presence);
        assert!(access.policy(&ChannelName::parse("news").unwrap()).send.anyone);
    }

    #[test]
    fn keys_match_exactly_and_never_print() {
        let key: Secret = "0123456789abcdef".parse().unwrap();
        assert_eq!(format!("{key:?}"), "Secret(***)");
        let access = Access::new(vec![key], vec![], vec![]);
        assert!(access.is_publisher_key("0123456789abcdef"));
        assert!(!access.is_publisher_key("0123456789abcdeF"));
        assert!(!access.is_publisher_key(""));
        let short: Secret = "short-key".parse().unwrap();
        assert!(short.check().is_err() && !short.check().unwrap_err().contains("short-key"));
    }

    #[test]
    fn a_listed_origin_wins_over_the_wildcard() {
        let access = Access::new(vec![], vec![], vec!["*".into(), "https://App.example".into()]);
        assert_eq!(access.cors_origin("https://app.example"), Some(CorsOrigin::Listed));
        assert_eq!(access.cors_origin("null"), Some(CorsOrigin::Any));
        let listed = Access::new(vec![], vec![], vec!["https://app.example".into()]);
        assert_eq!(listed.cors_origin("https://evil.example"), None);
        assert_eq!(listed.cors_origin("*"), None);
    }
}
