//! Tags (DESIGN §3, §6): labels an entry carries, so that
//! [`Region::invalidate_tag`](crate::Region::invalidate_tag) can hide every
//! entry with one of them, in every process, with one write.
//!
//! Each tag has a stamp: the time of its last invalidation. An entry
//! created at or before the stamp of one of its tags is missing. A shared
//! store keeps the stamps in a reserved namespace of the region (see
//! [`Backend::load_tag_stamps`](crate::backend::Backend::load_tag_stamps));
//! a region also keeps, in memory, the stamps it has seen ([`StampTable`]):
//! a memory region's only copy, and for an L1 the check of its copies.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::error::{Error, Kind, Result};

/// The longest tag, in bytes.
///
/// ```
/// assert_eq!(tankard::MAX_TAG_LEN, 128);
/// ```
pub const MAX_TAG_LEN: usize = 128;

/// The most tags one entry may carry.
///
/// ```
/// assert_eq!(tankard::MAX_TAGS, 32);
/// ```
pub const MAX_TAGS: usize = 32;

/// An entry's tags: sorted, without duplicates; `None` for an untagged
/// entry, which costs nothing to carry (one branch where an entry is
/// cloned).
pub(crate) type Tags = Option<TagList>;

/// A non-empty set of tags, shared. A thin pointer (the slice's length
/// sits behind it), so an untagged memory entry carries 8 bytes of `None`,
/// not a fat pointer's 16.
pub(crate) type TagList = Arc<Box<[Box<str>]>>;

/// The tags of a set, as a slice (empty for none).
pub(crate) fn slice(tags: &Tags) -> &[Box<str>] {
    tags.as_deref().map_or(&[], |list| &list[..])
}

/// Checks one tag.
pub(crate) fn check(tag: &str) -> Result<()> {
    let problem = if tag.is_empty() {
        "is empty"
    } else if tag.len() > MAX_TAG_LEN {
        "is longer than 128 bytes"
    } else {
        return Ok(());
    };
    Err(bad(tag, problem))
}

fn bad(tag: &str, problem: &'static str) -> Error {
    let mut shown: String = tag.chars().take(40).collect();
    if shown.len() < tag.len() {
        shown.push('…');
    }
    Error::new(Kind::BadTag {
        tag: shown,
        problem,
    })
}

/// Checks tags and makes an entry's set of them: `None` when there are
/// none.
pub(crate) fn collect<I, S>(tags: I) -> Result<Tags>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let mut all: Vec<Box<str>> = Vec::new();
    for tag in tags {
        let tag = tag.as_ref();
        check(tag)?;
        all.push(tag.into());
    }
    finish(all)
}

/// The union of two sets of tags.
pub(crate) fn union(a: &Tags, b: &[Box<str>]) -> Result<Tags> {
    if b.is_empty() {
        return Ok(a.clone());
    }
    let mut all: Vec<Box<str>> = slice(a).to_vec();
    all.extend(b.iter().cloned());
    finish(all)
}

fn finish(mut all: Vec<Box<str>>) -> Result<Tags> {
    all.sort_unstable();
    all.dedup();
    if all.len() > MAX_TAGS {
        return Err(bad(&all[MAX_TAGS], "is one tag too many (32 at most)"));
    }
    Ok((!all.is_empty()).then(|| Arc::new(all.into_boxed_slice())))
}

/// The stamps of tags this process has seen: set by an invalidation here,
/// a backplane message, or a stamp read from the shared store. A stamp
/// only ever moves forward, so a read that raced with a newer
/// invalidation cannot put an older stamp back (.NET HybridCache #7771).
/// It is never the authority for an entry read from the shared store,
/// which reads the stamps there (so a process without a backplane never
/// trusts a stamp it cached, HybridCache #7411): it decides for a memory
/// region's entries, and for L1 copies, which `l1_expire` bounds anyway.
#[derive(Debug, Default)]
pub(crate) struct StampTable {
    stamps: RwLock<HashMap<Box<str>, u64>>,
}

impl StampTable {
    /// Moves `tag`'s stamp to `at_ms` unless it is there already; `true`
    /// if it moved.
    pub(crate) fn raise(&self, tag: &str, at_ms: u64) -> bool {
        if self.stamp(tag) >= at_ms {
            return false;
        }
        let mut stamps = crate::sync::write(&self.stamps);
        match stamps.get_mut(tag) {
            Some(stamp) if *stamp >= at_ms => false,
            Some(stamp) => {
                *stamp = at_ms;
                true
            }
            None => {
                stamps.insert(tag.into(), at_ms);
                true
            }
        }
    }

    /// `tag`'s stamp; 0 if it was never invalidated.
    pub(crate) fn stamp(&self, tag: &str) -> u64 {
        crate::sync::read(&self.stamps)
            .get(tag)
            .copied()
            .unwrap_or(0)
    }

    /// Whether an entry created at `created_ms` with `tags` is hidden by
    /// one of them: created at or before its stamp (an entry made in the
    /// same millisecond as the invalidation may predate it).
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    pub(crate) fn hides(&self, tags: &[Box<str>], created_ms: u64) -> bool {
        if tags.is_empty() {
            return false;
        }
        let stamps = crate::sync::read(&self.stamps);
        tags.iter()
            .any(|tag| stamps.get(tag).is_some_and(|&stamp| created_ms <= stamp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_tags_are_errors() {
        assert!(check("").unwrap_err().is_bad_tag());
        assert!(check(&"x".repeat(129)).unwrap_err().is_bad_tag());
        assert!(check(&"x".repeat(128)).is_ok());
        let many: Vec<String> = (0..33).map(|i| format!("t{i}")).collect();
        assert!(collect(&many).unwrap_err().is_bad_tag());
        assert!(collect(&many[..32]).is_ok());
    }

    #[test]
    fn sets_are_sorted_deduplicated_and_none_when_empty() -> Result<()> {
        assert!(collect::<_, &str>([])?.is_none());
        let tags = collect(["b", "a", "b"])?;
        let expected: [Box<str>; 2] = ["a".into(), "b".into()];
        assert_eq!(slice(&tags), &expected[..]);
        let more = union(&tags, &["c".into(), "a".into()])?;
        assert_eq!(slice(&more).len(), 3);
        Ok(())
    }

    #[test]
    fn stamps_only_move_forward_and_hide_what_they_cover() {
        let table = StampTable::default();
        assert!(table.raise("t", 10));
        assert!(!table.raise("t", 5), "an older stamp does not go back");
        assert_eq!(table.stamp("t"), 10);
        let tags: Vec<Box<str>> = vec!["t".into()];
        assert!(table.hides(&tags, 10));
        assert!(!table.hides(&tags, 11));
        assert!(!table.hides(&["u".into()], 1));
    }
}
