//! Keys: how a region, a namespace and a caller's key become the one string
//! a shared backend stores an entry under.
//!
//! # Format
//!
//! `{prefix}{region}:{namespace}#{key}`, where in the namespace the
//! characters `%`, `#` and `!` are percent-escaped (they never occur in
//! namespaces derived from module paths, so the escape costs nothing there).
//! Region names cannot contain `:`, `#` or `!` (the config rejects them), so
//! the first `:` ends the region and the first `#` ends the namespace: two
//! different (region, namespace, key) triples never share a key, whatever
//! the key contains.
//!
//! Bookkeeping keys use `!`, which no namespace contains unescaped:
//! `{prefix}{region}!gen`, `{prefix}{region}!soft`,
//! `{prefix}{region}:{namespace}!gen`, the lock
//! `{prefix}{region}:{namespace}!lock#{key}`, and a tag's stamp
//! `{prefix}{region}:!tags#{tag}` (in the reserved namespace `!tags`,
//! which no namespace's escaped name can be).
//!
//! A key longer than the region's `key_length` is replaced by
//! `{prefix}#{blake3 of the whole key, hex}`, which no unhashed key can equal
//! because region names cannot start with `#`.
//!
//! Generations are not part of the key: an entry records the generations it
//! was written under, and the backend reads the current ones in the same
//! round trip as the entry (see `DESIGN-NOTES.md`).

use std::borrow::Cow;
use std::fmt::Write as _;

/// Escapes the characters that delimit a namespace.
pub(crate) fn escape_namespace(namespace: &str) -> Cow<'_, str> {
    if !namespace.contains(['%', '#', '!']) {
        return Cow::Borrowed(namespace);
    }
    let mut out = String::with_capacity(namespace.len() + 8);
    for c in namespace.chars() {
        match c {
            '%' => out.push_str("%25"),
            '#' => out.push_str("%23"),
            '!' => out.push_str("%21"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Replaces a key that is longer than `key_length` by its hash.
pub(crate) fn limit_length(prefix: &str, key: String, key_length: usize) -> String {
    if key.len() <= key_length {
        return key;
    }
    let hash = blake3::hash(key.as_bytes());
    let mut out = String::with_capacity(prefix.len() + 65);
    out.push_str(prefix);
    out.push('#');
    for byte in hash.as_bytes() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// The key an entry is stored under.
pub(crate) fn entry_key(
    prefix: &str,
    region: &str,
    namespace: &str,
    key: &str,
    key_length: usize,
) -> String {
    let namespace = escape_namespace(namespace);
    let mut out =
        String::with_capacity(prefix.len() + region.len() + namespace.len() + key.len() + 2);
    out.push_str(prefix);
    out.push_str(region);
    out.push(':');
    out.push_str(&namespace);
    out.push('#');
    out.push_str(key);
    limit_length(prefix, out, key_length)
}

/// The key of the creation lock for an entry.
pub(crate) fn lock_key(
    prefix: &str,
    region: &str,
    namespace: &str,
    key: &str,
    key_length: usize,
) -> String {
    let namespace = escape_namespace(namespace);
    limit_length(
        prefix,
        format!("{prefix}{region}:{namespace}!lock#{key}"),
        key_length,
    )
}

/// The key of a namespace's generation counter.
pub(crate) fn namespace_generation_key(prefix: &str, region: &str, namespace: &str) -> String {
    format!("{prefix}{region}:{}!gen", escape_namespace(namespace))
}

/// The key of a region's generation counter (hard invalidation).
pub(crate) fn region_generation_key(prefix: &str, region: &str) -> String {
    format!("{prefix}{region}!gen")
}

/// The reserved namespace of a region's tag stamps, as it appears in keys:
/// unescaped, so no caller's namespace can share it.
pub(crate) const TAGS_NAMESPACE: &str = "!tags";

/// The key of a tag's stamp.
pub(crate) fn tag_key(prefix: &str, region: &str, tag: &str, key_length: usize) -> String {
    limit_length(
        prefix,
        format!("{prefix}{region}:{TAGS_NAMESPACE}#{tag}"),
        key_length,
    )
}

/// The generation key of the reserved tags namespace (never bumped).
pub(crate) fn tags_generation_key(prefix: &str, region: &str) -> String {
    format!("{prefix}{region}:{TAGS_NAMESPACE}!gen")
}

/// The key of a region's soft-invalidation time.
pub(crate) fn region_soft_key(prefix: &str, region: &str) -> String {
    format!("{prefix}{region}!soft")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_format() {
        assert_eq!(
            entry_key("", "long_term", "views::hello", "k", 250),
            "long_term:views::hello#k"
        );
        assert_eq!(
            entry_key("app/", "r", "a#b!c%", "x#y", 250),
            "app/r:a%23b%21c%25#x#y"
        );
        assert_eq!(lock_key("", "r", "n", "k", 250), "r:n!lock#k");
        assert_eq!(namespace_generation_key("", "r", "n"), "r:n!gen");
        assert_eq!(region_generation_key("p", "r"), "pr!gen");
        assert_eq!(region_soft_key("p", "r"), "pr!soft");
    }

    #[test]
    fn namespace_and_key_boundaries_cannot_be_confused() {
        // Without escaping, namespace "a#b" + key "c" would equal namespace "a" + key "b#c".
        assert_ne!(
            entry_key("", "r", "a#b", "c", 250),
            entry_key("", "r", "a", "b#c", 250)
        );
        assert_ne!(
            entry_key("", "r", "a!gen", "", 250),
            namespace_generation_key("", "r", "a")
        );
        assert_ne!(
            entry_key("", "r", "n", "!lock#k", 250),
            lock_key("", "r", "n", "k", 250)
        );
    }

    #[test]
    fn long_keys_are_hashed_and_stay_distinct() {
        let a = entry_key("p:", "r", "n", &"a".repeat(300), 250);
        let b = entry_key("p:", "r", "n", &"b".repeat(300), 250);
        assert_eq!(a.len(), 2 + 1 + 64);
        assert!(a.starts_with("p:#"));
        assert_ne!(a, b);
        assert_eq!(entry_key("", "r", "n", "short", 10), "r:n#short");
    }
}
