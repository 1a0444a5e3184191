//! The stored entry: its timestamps and generations ([`EntryMeta`]), how
//! they decide fresh, stale or missing, and the byte format every
//! non-memory backend stores.
//!
//! # Byte format (version 2, little-endian)
//!
//! | bytes | field |
//! |---|---|
//! | 0..4 | magic `TKRD` |
//! | 4 | format version (2; a version 1 entry is a miss) |
//! | 5 | flags (bit 0: an HMAC tag follows the payload) |
//! | 6..8 | length of the stored key |
//! | 8..16 | created at, epoch ms |
//! | 16..24 | fresh until, epoch ms (`u64::MAX` = never expires) |
//! | 24..32 | stale until, epoch ms |
//! | 32..40 | region generation at write time |
//! | 40..48 | namespace generation at write time |
//! | 48..52 | payload length |
//! | 52..60 | type tag: the first 8 bytes of BLAKE3 of the value's Rust type name |
//! | 60..64 | CRC-32 of every other byte before the tag |
//! | 64..68 | what the value cost to make, in microseconds (XFetch's δ; 0 when put, not made) |
//! | 68..70 | length of the tags block (0: the entry has no tags) |
//! | 70..72 | reserved, 0 |
//! | 72.. | the stored key, then the tags block, then the payload (postcard), then the 32-byte HMAC-SHA256 tag when `secret` is set |
//!
//! The tags block is each of the entry's tags (at most
//! [`MAX_TAGS`](crate::MAX_TAGS)) as one length byte (1 to
//! [`MAX_TAG_LEN`](crate::MAX_TAG_LEN)) and its UTF-8 bytes, sorted and
//! without duplicates. An untagged entry is byte for byte what builds
//! before tags wrote, so their entries stay readable; a tagged one has
//! bytes 68..70 set, which those builds treat as a miss (they checked the
//! four reserved bytes for zero), so they never serve an entry without
//! checking its tags.
//!
//! The key is stored so that an entry can never be mistaken for another
//! key's (a hash collision in a file name, a foreign writer) and so that
//! tools can list what a file holds. Postcard is not self-describing, so
//! bytes written for one type can decode "successfully" as another; the
//! type tag turns that into a miss. Every length is checked against the
//! buffer before use: a hostile entry cannot make the decoder allocate.

use hmac::{KeyInit, Mac};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::options::Secret;

mod nesting;

const MAGIC: &[u8; 4] = b"TKRD";
const VERSION: u8 = 2;
const FLAG_HMAC: u8 = 1;
const HEADER: usize = 72;
const TAG: usize = 32;
const TYPE_AT: std::ops::Range<usize> = 52..60;
const CRC_AT: std::ops::Range<usize> = 60..64;
const COST_AT: usize = 64;
/// The length of the tags block.
const TAGS_AT: std::ops::Range<usize> = 68..70;
/// Two bytes no field uses yet, zero in every entry this build writes: a
/// newer build that gives them a meaning makes its entries misses here
/// instead of ones read without that meaning.
const RESERVED_AT: std::ops::Range<usize> = 70..72;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The generations an entry must match to be visible, read from the backend
/// together with the entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Generations {
    /// Bumped by a hard invalidation of the region.
    pub(crate) region: u64,
    /// Entries created at or before this epoch ms are stale (soft invalidation).
    pub(crate) soft_before_ms: u64,
    /// Bumped by `clear` on the namespace.
    pub(crate) namespace: u64,
}

/// When an entry was made, how long it lives, and under which generations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryMeta {
    pub(crate) created_ms: u64,
    pub(crate) fresh_until_ms: u64,
    pub(crate) stale_until_ms: u64,
    pub(crate) region_gen: u64,
    pub(crate) namespace_gen: u64,
    /// What the value cost to make, in microseconds (0: it was put).
    pub(crate) cost_us: u32,
    /// Not stored: when this process starts an early refresh of the entry
    /// (`early_refresh`), for the memory tier's hit path to compare with;
    /// `fresh_until_ms` when there is none.
    pub(crate) refresh_at_ms: u64,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Freshness {
    Fresh,
    /// Fresh, and past the point where `early_refresh` renews it.
    Due,
    Stale,
    /// Past `stale` but within the region's `fail_safe`: not served, but
    /// kept to stand in for a creator that fails.
    Expired,
    Missing,
}

/// Everything besides generations that decides freshness at read time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReadPolicy {
    pub(crate) now_ms: u64,
    /// Entries created before this (the `starttime` option) are stale.
    pub(crate) start_ms: u64,
    /// How long past its stale time an entry is kept for fail-safe (the
    /// `fail_safe` option; 0 = off).
    pub(crate) fail_safe_ms: u64,
    /// When an entry is renewed before it expires (`early_refresh`).
    pub(crate) early: Early,
}

/// `early_refresh` at read time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Early {
    Off,
    /// Past this fraction of an entry's fresh life.
    At(f64),
    /// XFetch (Vattani, Chierichetti and Lowenstein, VLDB 2015): renew when
    /// `now + δ·β·chance ≥ expiry`, δ the entry's cost, `chance` = −ln(r)
    /// for a random r in (0, 1] drawn for this read.
    XFetch {
        beta: f64,
        chance: f64,
    },
}

/// The largest XFetch `chance` a read can draw: −ln of the smallest random
/// number the clock returns (2⁻⁵³). The memory tier's hit path leaves for
/// the full rule that far before expiry.
#[cfg_attr(not(feature = "memory"), allow(dead_code))]
pub(crate) const MAX_CHANCE: f64 = 36.8;

impl ReadPolicy {
    /// When an entry is due for an early refresh: `early_refresh` of the
    /// way from its creation to its expiry (never for one that never
    /// expires, nor without the policy).
    #[inline]
    pub(crate) fn refresh_at_ms(&self, meta: &EntryMeta) -> u64 {
        if meta.fresh_until_ms == u64::MAX {
            return u64::MAX;
        }
        match self.early {
            Early::Off => meta.fresh_until_ms,
            Early::At(fraction) => {
                let life = meta.fresh_until_ms.saturating_sub(meta.created_ms);
                meta.created_ms + (life as f64 * fraction) as u64
            }
            Early::XFetch { beta, chance } => {
                let ahead_ms = f64::from(meta.cost_us) / 1000.0 * beta * chance;
                meta.fresh_until_ms.saturating_sub(ahead_ms as u64)
            }
        }
    }

    /// This policy with XFetch's largest chance: the earliest an entry can
    /// be renewed, which the memory tier's hit path compares against.
    #[cfg_attr(not(feature = "memory"), allow(dead_code))]
    pub(crate) fn earliest(self) -> ReadPolicy {
        match self.early {
            Early::XFetch { beta, .. } => ReadPolicy {
                early: Early::XFetch {
                    beta,
                    chance: MAX_CHANCE,
                },
                ..self
            },
            _ => self,
        }
    }
}

impl EntryMeta {
    /// Timestamps for an entry created now that is fresh for `expire` and
    /// then readable as stale for `stale` more.
    pub(crate) fn new(
        now_ms: u64,
        expire: Option<std::time::Duration>,
        stale: std::time::Duration,
        gens: Generations,
    ) -> EntryMeta {
        let fresh_until_ms = match expire {
            Some(expire) => now_ms.saturating_add(crate::clock::millis(expire)),
            None => u64::MAX,
        };
        // An entry made after a soft invalidation must be newer than it,
        // even within the same millisecond.
        let created_ms = if gens.soft_before_ms > 0 {
            now_ms.max(gens.soft_before_ms.saturating_add(1))
        } else {
            now_ms
        };
        EntryMeta {
            created_ms,
            fresh_until_ms,
            stale_until_ms: fresh_until_ms.saturating_add(crate::clock::millis(stale)),
            region_gen: gens.region,
            namespace_gen: gens.namespace,
            cost_us: 0,
            refresh_at_ms: fresh_until_ms,
        }
    }

    /// How long a backend should keep the entry: until it can no longer be
    /// served even as stale, nor stand in for a failed creator
    /// (`fail_safe_ms` past that). `None` = forever.
    pub(crate) fn ttl(&self, now_ms: u64, fail_safe_ms: u64) -> Option<std::time::Duration> {
        let kept_until_ms = self.kept_until_ms(fail_safe_ms);
        (kept_until_ms != u64::MAX)
            .then(|| std::time::Duration::from_millis(kept_until_ms.saturating_sub(now_ms).max(1)))
    }

    /// Until when a store keeps the entry.
    pub(crate) fn kept_until_ms(&self, fail_safe_ms: u64) -> u64 {
        self.stale_until_ms.saturating_add(fail_safe_ms)
    }

    #[inline]
    pub(crate) fn freshness(&self, gens: &Generations, policy: &ReadPolicy) -> Freshness {
        if self.region_gen != gens.region || self.namespace_gen != gens.namespace {
            return Freshness::Missing;
        }
        if policy.now_ms >= self.stale_until_ms {
            return match policy.now_ms < self.kept_until_ms(policy.fail_safe_ms) {
                true => Freshness::Expired,
                false => Freshness::Missing,
            };
        }
        // `<=`: an entry written in the same millisecond as a soft
        // invalidation may predate it, so it counts as stale.
        if self.created_ms <= gens.soft_before_ms
            || self.created_ms < policy.start_ms
            || policy.now_ms >= self.fresh_until_ms
        {
            return Freshness::Stale;
        }
        if policy.now_ms >= policy.refresh_at_ms(self) {
            return Freshness::Due;
        }
        Freshness::Fresh
    }
}

/// Why stored bytes were not accepted as an entry. Each is a miss.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum DecodeError {
    #[error("not a Tankard entry (bad magic or too short)")]
    Foreign,
    #[error("entry format version {0} is not supported by this build (expected {VERSION})")]
    Version(u8),
    #[error("entry is truncated or its lengths are inconsistent")]
    Truncated,
    #[error("entry checksum mismatch (corrupt)")]
    Checksum,
    #[error("entry is not authenticated with this secret")]
    Tag,
    #[error("entry belongs to another key")]
    OtherKey,
    #[error("entry uses header fields this build does not know (written by a newer version)")]
    Reserved,
    #[error("entry's tags block is malformed")]
    Tags,
    #[error("entry holds another type than the one requested")]
    OtherType,
    #[error("value does not decode as the requested type: {0}")]
    Payload(String),
    #[error("value is nested deeper than {} levels", nesting::MAX_NESTING)]
    TooDeep,
}

/// A checked but not yet decoded entry: its metadata and payload bytes.
#[derive(Debug)]
pub(crate) struct RawEntry<'a> {
    pub(crate) meta: EntryMeta,
    pub(crate) type_tag: u64,
    /// The tags block, checked: see [`RawEntry::tags`].
    tags: &'a [u8],
    pub(crate) payload: &'a [u8],
}

impl<'a> RawEntry<'a> {
    /// The entry's tags, in the order stored (sorted).
    pub(crate) fn tags(&self) -> impl Iterator<Item = &'a str> + use<'a> {
        TagBlock(self.tags).map(|tag| tag.unwrap_or_default())
    }

    /// Whether the entry carries tags.
    pub(crate) fn has_tags(&self) -> bool {
        !self.tags.is_empty()
    }

    /// The entry's tags as a set; `None` when it has none.
    pub(crate) fn tag_set(&self) -> crate::tags::Tags {
        self.has_tags()
            .then(|| std::sync::Arc::new(self.tags().map(Box::from).collect()))
    }
}

/// Reads a tags block: each tag, or `None` where it does not parse.
struct TagBlock<'a>(&'a [u8]);

impl<'a> Iterator for TagBlock<'a> {
    type Item = Option<&'a str>;

    fn next(&mut self) -> Option<Option<&'a str>> {
        let (&len, rest) = self.0.split_first()?;
        let len = usize::from(len);
        let Some((tag, rest)) = (len > 0 && len <= crate::MAX_TAG_LEN)
            .then(|| rest.split_at_checked(len))
            .flatten()
        else {
            self.0 = &[];
            return Some(None);
        };
        self.0 = rest;
        Some(std::str::from_utf8(tag).ok())
    }
}

/// Whether a tags block is one this build writes: tags that parse, at
/// most [`MAX_TAGS`](crate::MAX_TAGS) of them, sorted without duplicates.
fn tags_block_ok(block: &[u8]) -> bool {
    let mut last: Option<&str> = None;
    let mut count = 0;
    for tag in TagBlock(block) {
        let Some(tag) = tag else { return false };
        if last.is_some_and(|last| last >= tag) {
            return false;
        }
        last = Some(tag);
        count += 1;
    }
    count <= crate::MAX_TAGS
}

/// The tag that tells values of different Rust types apart.
pub(crate) fn type_tag<T: ?Sized>() -> u64 {
    let hash = blake3::hash(std::any::type_name::<T>().as_bytes());
    let mut first = [0; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first)
}

/// Encodes a value for a shared backend.
/// `tags` are checked ones ([`crate::tags`]), sorted, without duplicates.
pub(crate) fn encode<T: Serialize + ?Sized>(
    key: &str,
    meta: &EntryMeta,
    value: &T,
    tags: &[Box<str>],
    secret: Option<&Secret>,
) -> Result<Vec<u8>, postcard::Error> {
    let payload = postcard::to_allocvec(value)?;
    Ok(encode_payload(
        key,
        meta,
        type_tag::<T>(),
        &payload,
        tags,
        secret,
    ))
}

pub(crate) fn encode_payload<S: AsRef<str>>(
    key: &str,
    meta: &EntryMeta,
    type_tag: u64,
    payload: &[u8],
    tags: &[S],
    secret: Option<&Secret>,
) -> Vec<u8> {
    // Keys are capped by `key_length` long before u16::MAX; a longer one is
    // stored truncated and then never matches, which reads as a miss.
    let key = &key.as_bytes()[..key.len().min(u16::MAX as usize)];
    // Tags are checked (1 to 128 bytes, 32 at most) before they get here,
    // so the block fits its u16 length; one that did not would be cut and
    // then not parse, a miss.
    let mut block = Vec::new();
    for tag in tags {
        let tag = tag.as_ref().as_bytes();
        let tag = &tag[..tag.len().min(crate::MAX_TAG_LEN)];
        block.push(tag.len() as u8);
        block.extend_from_slice(tag);
    }
    block.truncate(u16::MAX as usize);
    let mut out = Vec::with_capacity(HEADER + key.len() + block.len() + payload.len() + TAG);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(if secret.is_some() { FLAG_HMAC } else { 0 });
    out.extend_from_slice(&(key.len() as u16).to_le_bytes());
    for n in [
        meta.created_ms,
        meta.fresh_until_ms,
        meta.stale_until_ms,
        meta.region_gen,
        meta.namespace_gen,
    ] {
        out.extend_from_slice(&n.to_le_bytes());
    }
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&type_tag.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&meta.cost_us.to_le_bytes());
    out.extend_from_slice(&(block.len() as u16).to_le_bytes());
    out.extend_from_slice(&[0; 2]);
    out.extend_from_slice(key);
    out.extend_from_slice(&block);
    out.extend_from_slice(payload);
    let crc = checksum(&out);
    out[CRC_AT].copy_from_slice(&crc.to_le_bytes());
    if let Some(secret) = secret {
        out.extend_from_slice(&tag(secret, &out));
    }
    out
}

fn checksum(bytes: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..CRC_AT.start]);
    hasher.update(&bytes[CRC_AT.end..]);
    hasher.finalize()
}

fn mac(secret: &Secret) -> HmacSha256 {
    HmacSha256::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

fn tag(secret: &Secret, bytes: &[u8]) -> [u8; TAG] {
    let mut mac = mac(secret);
    mac.update(bytes);
    mac.finalize().into_bytes().into()
}

fn tags_len(bytes: &[u8]) -> usize {
    usize::from(u16::from_le_bytes([
        bytes[TAGS_AT.start],
        bytes[TAGS_AT.start + 1],
    ]))
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut n = [0; 4];
    n.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(n)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut n = [0; 8];
    n.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(n)
}

/// Checks an entry's framing, checksum, tag and key without decoding the
/// payload.
pub(crate) fn open<'a>(
    key: &str,
    bytes: &'a [u8],
    secret: Option<&Secret>,
) -> Result<RawEntry<'a>, DecodeError> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC {
        return Err(DecodeError::Foreign);
    }
    if bytes[4] != VERSION {
        return Err(DecodeError::Version(bytes[4]));
    }
    if bytes[RESERVED_AT].iter().any(|&b| b != 0) {
        return Err(DecodeError::Reserved);
    }
    let has_tag = bytes[5] & FLAG_HMAC != 0;
    let key_len = u16::from_le_bytes([bytes[6], bytes[7]]) as usize;
    let tags_len = tags_len(bytes);
    let payload_len = u32::from_le_bytes([bytes[48], bytes[49], bytes[50], bytes[51]]) as usize;
    let payload_at = HEADER + key_len + tags_len;
    let body_end = payload_at + payload_len;
    let expected_len = body_end + if has_tag { TAG } else { 0 };
    if bytes.len() != expected_len {
        return Err(DecodeError::Truncated);
    }
    let stored_crc = u32::from_le_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]);
    if checksum(&bytes[..body_end]) != stored_crc {
        return Err(DecodeError::Checksum);
    }
    match (secret, has_tag) {
        (Some(secret), true) => {
            let mut mac = mac(secret);
            mac.update(&bytes[..body_end]);
            mac.verify_slice(&bytes[body_end..])
                .map_err(|_| DecodeError::Tag)?;
        }
        (None, false) => {}
        _ => return Err(DecodeError::Tag),
    }
    if &bytes[HEADER..HEADER + key_len] != key.as_bytes() {
        return Err(DecodeError::OtherKey);
    }
    let tags = &bytes[HEADER + key_len..payload_at];
    if !tags_block_ok(tags) {
        return Err(DecodeError::Tags);
    }
    Ok(RawEntry {
        meta: EntryMeta {
            created_ms: u64_at(bytes, 8),
            fresh_until_ms: u64_at(bytes, 16),
            stale_until_ms: u64_at(bytes, 24),
            region_gen: u64_at(bytes, 32),
            namespace_gen: u64_at(bytes, 40),
            cost_us: u32_at(bytes, COST_AT),
            refresh_at_ms: u64_at(bytes, 16),
        },
        type_tag: u64_at(bytes, TYPE_AT.start),
        tags,
        payload: &bytes[payload_at..body_end],
    })
}

/// Decodes a payload; serde's sequence visitors cap preallocation, so a
/// lying length prefix cannot force a large allocation, and
/// [`nesting::Limited`] caps recursion, so deep nesting cannot overflow
/// the stack.
pub(crate) fn decode_payload<T: DeserializeOwned>(raw: &RawEntry<'_>) -> Result<T, DecodeError> {
    if raw.type_tag != type_tag::<T>() {
        return Err(DecodeError::OtherType);
    }
    let tripped = std::cell::Cell::new(false);
    let mut de = postcard::Deserializer::from_bytes(raw.payload);
    T::deserialize(nesting::Limited::new(&mut de, &tripped)).map_err(|e| {
        if tripped.get() {
            DecodeError::TooDeep
        } else {
            DecodeError::Payload(e.to_string())
        }
    })
}

/// Reads only an entry's timestamps, checking framing and checksum but not
/// key or tag: enough for `gc` to decide whether an entry is dead.
#[cfg(any(
    feature = "file",
    feature = "dbm",
    feature = "postgres",
    feature = "mysql",
    feature = "sqlite"
))]
pub(crate) fn peek_meta(bytes: &[u8]) -> Option<EntryMeta> {
    if bytes.len() < HEADER || &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return None;
    }
    if bytes[RESERVED_AT].iter().any(|&b| b != 0) {
        return None;
    }
    let key_len = u16::from_le_bytes([bytes[6], bytes[7]]) as usize;
    let payload_len = u32::from_le_bytes([bytes[48], bytes[49], bytes[50], bytes[51]]) as usize;
    let body_end = HEADER + key_len + tags_len(bytes) + payload_len;
    let stored_crc = u32::from_le_bytes([bytes[60], bytes[61], bytes[62], bytes[63]]);
    if bytes.len() < body_end || checksum(&bytes[..body_end]) != stored_crc {
        return None;
    }
    Some(EntryMeta {
        created_ms: u64_at(bytes, 8),
        fresh_until_ms: u64_at(bytes, 16),
        stale_until_ms: u64_at(bytes, 24),
        region_gen: u64_at(bytes, 32),
        namespace_gen: u64_at(bytes, 40),
        cost_us: u32_at(bytes, COST_AT),
        refresh_at_ms: u64_at(bytes, 16),
    })
}

/// Makes mutated bytes pass the framing checks, for the fuzzer: fits the
/// key and payload lengths to the buffer, writes `type_tag` if given, and
/// recomputes the checksum and, when the flags ask for one and `secret` is
/// given, the HMAC tag. Random mutations would almost never get past the
/// CRC to the key check and the payload decoder; this takes them there.
#[cfg(any(test, fuzzing))]
pub(crate) fn reseal(bytes: &mut [u8], type_tag: Option<u64>, secret: Option<&Secret>) {
    if bytes.len() < HEADER {
        return;
    }
    let tag_len = if bytes[5] & FLAG_HMAC != 0 { TAG } else { 0 };
    let Some(room) = bytes.len().checked_sub(HEADER + tag_len) else {
        return;
    };
    let key_len = usize::from(u16::from_le_bytes([bytes[6], bytes[7]])).min(room);
    let tags_len = tags_len(bytes).min(room - key_len);
    let Ok(payload_len) = u32::try_from(room - key_len - tags_len) else {
        return;
    };
    bytes[6..8].copy_from_slice(&(key_len as u16).to_le_bytes());
    bytes[TAGS_AT].copy_from_slice(&(tags_len as u16).to_le_bytes());
    bytes[48..52].copy_from_slice(&payload_len.to_le_bytes());
    if let Some(type_tag) = type_tag {
        bytes[TYPE_AT].copy_from_slice(&type_tag.to_le_bytes());
    }
    let body_end = bytes.len() - tag_len;
    let crc = checksum(&bytes[..body_end]);
    bytes[CRC_AT].copy_from_slice(&crc.to_le_bytes());
    if let (Some(secret), TAG) = (secret, tag_len) {
        let tag = tag(secret, &bytes[..body_end]);
        bytes[body_end..].copy_from_slice(&tag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> EntryMeta {
        EntryMeta::new(
            1_000,
            Some(std::time::Duration::from_secs(10)),
            std::time::Duration::from_secs(5),
            Generations {
                region: 2,
                soft_before_ms: 0,
                namespace: 3,
            },
        )
    }

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn round_trip_with_and_without_secret() -> TestResult {
        for secret in [None, Some(Secret::new("s"))] {
            let bytes = encode("k", &meta(), &"hello".to_string(), &[], secret.as_ref())?;
            let raw = open("k", &bytes, secret.as_ref())?;
            assert_eq!(raw.meta, meta());
            assert_eq!(decode_payload::<String>(&raw)?, "hello");
            assert_eq!(
                decode_payload::<Vec<u64>>(&raw).unwrap_err(),
                DecodeError::OtherType
            );
        }
        Ok(())
    }

    #[test]
    fn tags_round_trip_and_a_bad_block_is_rejected() -> TestResult {
        let tags: Vec<Box<str>> = vec!["a".into(), "user:7".into()];
        let bytes = encode("k", &meta(), &5u8, &tags, None)?;
        let raw = open("k", &bytes, None)?;
        assert_eq!(raw.tags().collect::<Vec<_>>(), ["a", "user:7"]);
        assert_eq!(raw.meta, meta());
        assert_eq!(decode_payload::<u8>(&raw)?, 5);
        // An untagged entry is what builds before tags wrote.
        let plain = encode("k", &meta(), &5u8, &[], None)?;
        assert!(!open("k", &plain, None)?.has_tags());
        assert_eq!(plain[68..72], [0, 0, 0, 0]);
        for block in [
            &[0u8][..],
            &[3, b'a'],
            &[1, b'b', 1, b'a'],
            &[1, b'a', 1, b'a'],
            &[1, 0xff],
        ] {
            let mut bad = encode("k", &meta(), &5u8, &[], None)?;
            bad.splice(73..73, block.iter().copied());
            bad[68..70].copy_from_slice(&(block.len() as u16).to_le_bytes());
            reseal(&mut bad, None, None);
            assert_eq!(
                open("k", &bad, None).unwrap_err(),
                DecodeError::Tags,
                "{block:?}"
            );
        }
        Ok(())
    }

    #[test]
    fn every_truncation_and_every_flipped_bit_is_rejected() -> TestResult {
        let bytes = encode("key", &meta(), &vec![1u32, 2, 3], &["t".into()], None)?;
        for len in 0..bytes.len() {
            assert!(
                open("key", &bytes[..len], None).is_err(),
                "truncated to {len}"
            );
        }
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(open("key", &b, None).is_err(), "byte {i} bit {bit}");
            }
        }
        Ok(())
    }

    #[test]
    fn wrong_secret_other_key_and_missing_tag_are_rejected() -> TestResult {
        let s = Secret::new("right");
        let bytes = encode("k", &meta(), &1u8, &[], Some(&s))?;
        assert_eq!(
            open("k", &bytes, Some(&Secret::new("wrong"))).unwrap_err(),
            DecodeError::Tag
        );
        assert_eq!(open("k", &bytes, None).unwrap_err(), DecodeError::Tag);
        assert_eq!(
            open("other", &bytes, Some(&s)).unwrap_err(),
            DecodeError::OtherKey
        );
        let plain = encode("k", &meta(), &1u8, &[], None)?;
        assert_eq!(open("k", &plain, Some(&s)).unwrap_err(), DecodeError::Tag);
        Ok(())
    }

    /// Found by the `entry_decode` fuzz target: a soft-invalidation time at
    /// `u64::MAX` (a damaged generation record) overflowed, and a duration
    /// past `u64::MAX` ms (`Cache::expire(u64::MAX)`) wrapped to a short one.
    #[test]
    fn extreme_durations_and_generations_saturate() {
        use std::time::Duration;
        let damaged = Generations {
            region: 0,
            soft_before_ms: u64::MAX,
            namespace: 0,
        };
        let forever = Duration::from_secs(u64::MAX);
        let m = EntryMeta::new(1_000, Some(forever), forever, damaged);
        assert_eq!(m.created_ms, u64::MAX);
        assert_eq!(m.fresh_until_ms, u64::MAX);
        assert_eq!(m.stale_until_ms, u64::MAX);
        let just_past = Duration::from_millis(u64::MAX) + Duration::from_secs(1);
        let m = EntryMeta::new(1_000, Some(just_past), just_past, Generations::default());
        assert_eq!(m.fresh_until_ms, u64::MAX, "wrapped to 1 s");
        assert_eq!(m.stale_until_ms, u64::MAX);
    }

    /// A linked list: each node is two levels (the struct, its `Option`).
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Node {
        next: Option<Box<Node>>,
    }

    /// Found by the `entry_decode` fuzz target's recursive type: postcard
    /// decodes by recursion, and a 1 MB entry nested a million deep
    /// overflowed the stack (a process abort). Past the limit it is a miss;
    /// up to it, decoding fits in a tokio worker's 2 MiB stack even in a
    /// debug build.
    #[test]
    fn deep_nesting_is_a_miss_not_a_stack_overflow() -> TestResult {
        let entry = |nodes: usize| {
            let mut payload = vec![1u8; nodes];
            payload.push(0);
            encode_payload::<&str>("k", &meta(), type_tag::<Node>(), &payload, &[], None)
        };
        let deepest = (nesting::MAX_NESTING as usize - 1) / 2;
        let (ok, too_deep) = (entry(deepest), entry(1_000_000));
        let decoded = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || {
                let ok = decode_payload::<Node>(&open("k", &ok, None)?).map(|_| ());
                let too_deep = decode_payload::<Node>(&open("k", &too_deep, None)?).map(|_| ());
                Ok::<_, DecodeError>((ok, too_deep))
            })?
            .join()
            .map_err(|_| "the decoding thread panicked")?;
        let (ok, too_deep) = decoded?;
        assert_eq!(ok, Ok(()));
        assert_eq!(too_deep, Err(DecodeError::TooDeep));
        let one_more = decode_payload::<Node>(&open("k", &entry(deepest + 1), None)?);
        assert_eq!(one_more.map(|_| ()), Err(DecodeError::TooDeep));
        Ok(())
    }

    #[test]
    fn freshness_follows_timestamps_and_generations() {
        let m = meta();
        let gens = Generations {
            region: 2,
            soft_before_ms: 0,
            namespace: 3,
        };
        let at = |now_ms| ReadPolicy {
            now_ms,
            start_ms: 0,
            fail_safe_ms: 0,
            early: Early::Off,
        };
        assert_eq!(m.freshness(&gens, &at(1_000)), Freshness::Fresh);
        assert_eq!(m.freshness(&gens, &at(10_999)), Freshness::Fresh);
        assert_eq!(m.freshness(&gens, &at(11_000)), Freshness::Stale);
        assert_eq!(m.freshness(&gens, &at(15_999)), Freshness::Stale);
        assert_eq!(m.freshness(&gens, &at(16_000)), Freshness::Missing);
        let cleared = Generations {
            namespace: 4,
            ..gens
        };
        assert_eq!(m.freshness(&cleared, &at(1_000)), Freshness::Missing);
        let soft = Generations {
            soft_before_ms: 1_000,
            ..gens
        };
        assert_eq!(m.freshness(&soft, &at(1_000)), Freshness::Stale);
        let started = ReadPolicy {
            now_ms: 1_000,
            start_ms: 1_001,
            fail_safe_ms: 0,
            early: Early::Off,
        };
        assert_eq!(m.freshness(&gens, &started), Freshness::Stale);
    }
}
