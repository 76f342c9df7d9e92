//! Path segments (`{channel}`, `{public_token}`) as the routes receive them:
//! percent-encoded, exactly as sent.
//!
//! Both transports hand the handlers the raw segment (warp's `path!` and the
//! connection task's own parser alike), so decoding it here, where the
//! segment's value is parsed, covers every route. A segment is decoded once
//! and the result is checked against its schema as if it had been sent
//! plain: `/channels/ops%3Aalerts` is the channel `ops:alerts` (generated
//! OpenAPI clients encode every `:` and `@`), while an encoded `/`, NUL or
//! control character fails the pattern like the plain character would, an
//! invalid escape (`%zz`) keeps its `%` and fails too, and so does a second
//! level of encoding (`%253A` decodes to `%3A`, not to `:`).

use std::borrow::Cow;

use percent_encoding::percent_decode_str;

/// `raw` percent-decoded once; `None` when the bytes it decodes to are not UTF-8.
/// Borrows `raw` when it has no escape, as on nearly every request.
pub(super) fn decode(raw: &str) -> Option<Cow<'_, str>> {
    percent_decode_str(raw).decode_utf8().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_once() {
        assert_eq!(decode("ops%3Aalerts").as_deref(), Some("ops:alerts"));
        assert_eq!(decode("bob%40example.com").as_deref(), Some("bob@example.com"));
        assert_eq!(decode("a%253A").as_deref(), Some("a%3A"));
        assert_eq!(decode("a%zz").as_deref(), Some("a%zz"));
        assert!(matches!(decode("plain"), Some(Cow::Borrowed("plain"))));
        assert_eq!(decode("%FF"), None);
    }
}
