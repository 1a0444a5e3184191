//! The entry decoder target.
//!
//! The first byte picks what to do with the rest:
//!
//! | bit | meaning |
//! |---|---|
//! | 0x80 | encode first: read meta, key and a value, encode, open, decode |
//! | 0x40 | (decode first) write the chosen type's tag before resealing |
//! | 0x38 | which type the payload is decoded as (see [`decode_as`]) |
//! | 0x04 | a secret is configured (entries carry an HMAC tag) |
//! | 0x02 | (decode first) reseal: fix lengths, checksum and tag |

use std::collections::BTreeMap;
use std::fmt::Debug;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::Input;
use crate::entry::{self, DecodeError, EntryMeta, Generations, RawEntry, ReadPolicy};
use crate::options::Secret;

/// A value shaped like the ones applications cache: an enum, a struct,
/// optional and nested fields (so a lying length can hide at any depth).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum Shape {
    Empty,
    Text(String),
    Record {
        id: u32,
        tags: Vec<Option<char>>,
        next: Option<Box<Shape>>,
    },
    Pair(i128, bool),
}

pub(super) fn fuzz(data: &[u8]) {
    let mut input = Input::new(data);
    let mode = input.byte();
    let secret = (mode & 0x04 != 0).then(|| Secret::new("fuzz"));
    let secret = secret.as_ref();
    let kind = (mode >> 3) & 7;
    if mode & 0x80 != 0 {
        let mut meta = EntryMeta {
            created_ms: input.u64(),
            fresh_until_ms: input.u64(),
            stale_until_ms: input.u64(),
            region_gen: input.u64(),
            namespace_gen: input.u64(),
            cost_us: 0,
            refresh_at_ms: 0,
        };
        // Not stored: a decoded entry's is its expiry.
        meta.refresh_at_ms = meta.fresh_until_ms;
        meta.cost_us = input.u64() as u32;
        let key = input.string(64);
        // At most one tag, and only a valid one: `encode` is given checked tags.
        let tag = input.string(32);
        let tags: Vec<Box<str>> = crate::tags::collect([tag].iter().filter(|t| !t.is_empty()))
            .ok()
            .flatten()
            .map(|tags| tags.to_vec())
            .unwrap_or_default();
        return decode_as(
            kind,
            &mut EncodeFirst(&key, &meta, &tags, secret),
            input.rest(),
        );
    }
    let mut bytes = input.rest().to_vec();
    if mode & 0x02 != 0 {
        let type_tag = (mode & 0x40 != 0).then(|| type_tag_of(kind));
        entry::reseal(&mut bytes, type_tag, secret);
    }
    #[cfg(feature = "file")]
    let peeked = entry::peek_meta(&bytes);
    let key = stored_key(&bytes);
    let Ok(raw) = entry::open(key, &bytes, secret) else {
        return;
    };
    #[cfg(feature = "file")]
    assert_eq!(peeked, Some(raw.meta), "peek_meta disagrees with open");
    reencode(key, &bytes, &raw, secret);
    freshness_never_panics(&raw.meta);
    decode_as(kind, &mut DecodeFirst(key, &raw, secret), &[]);
}

/// The key an entry says it belongs to, so that a well-framed entry gets
/// past the key check (another key is tried by [`round_trip`]).
fn stored_key(bytes: &[u8]) -> &str {
    let key_len = match bytes.get(6..8) {
        Some(&[low, high]) => usize::from(u16::from_le_bytes([low, high])),
        _ => 0,
    };
    bytes
        .get(72..72 + key_len)
        .and_then(|key| std::str::from_utf8(key).ok())
        .unwrap_or("")
}

/// What was read re-encodes to the same bytes (when its flags byte is one
/// this build writes) and opens again to the same fields.
fn reencode(key: &str, bytes: &[u8], raw: &RawEntry<'_>, secret: Option<&Secret>) {
    let tags: Vec<&str> = raw.tags().collect();
    let again = entry::encode_payload(key, &raw.meta, raw.type_tag, raw.payload, &tags, secret);
    if bytes[5] & !1 == 0 {
        assert_eq!(again, bytes, "an entry that opens re-encodes byte for byte");
    }
    match entry::open(key, &again, secret) {
        Ok(reread) => {
            assert_eq!(reread.meta, raw.meta);
            assert_eq!(reread.type_tag, raw.type_tag);
            assert_eq!(reread.payload, raw.payload);
            assert!(reread.tags().eq(raw.tags()));
        }
        Err(err) => panic!("a re-encoded entry does not open: {err}"),
    }
}

/// Any timestamps, however hostile, classify without arithmetic overflow.
fn freshness_never_panics(meta: &EntryMeta) {
    for now_ms in [
        0,
        meta.created_ms,
        meta.fresh_until_ms,
        meta.stale_until_ms,
        u64::MAX,
    ] {
        let gens = Generations {
            region: meta.region_gen,
            soft_before_ms: meta.created_ms,
            namespace: meta.namespace_gen,
        };
        let policy = ReadPolicy {
            now_ms,
            start_ms: meta.created_ms,
            fail_safe_ms: meta.fresh_until_ms,
            early: crate::entry::Early::XFetch {
                beta: 1.0,
                chance: 3.0,
            },
        };
        let _ = meta.freshness(&gens, &policy);
        let _ = meta.ttl(now_ms, meta.created_ms);
        let _ = EntryMeta::new(
            now_ms,
            Some(std::time::Duration::from_millis(meta.fresh_until_ms)),
            std::time::Duration::from_millis(meta.stale_until_ms),
            gens,
        );
    }
}

/// One of the two directions, run for the type `kind` picks.
trait Direction {
    fn run<T: Value>(&mut self, payload: &[u8]);
}

/// What the checks need of a decoded type.
trait Value: Serialize + DeserializeOwned + PartialEq + Debug {}
impl<T: Serialize + DeserializeOwned + PartialEq + Debug> Value for T {}

fn decode_as(kind: u8, direction: &mut impl Direction, payload: &[u8]) {
    match kind {
        0 => direction.run::<u8>(payload),
        1 => direction.run::<u64>(payload),
        2 => direction.run::<String>(payload),
        3 => direction.run::<Vec<u8>>(payload),
        4 => direction.run::<Vec<String>>(payload),
        5 => direction.run::<Option<(u32, i64, bool)>>(payload),
        6 => direction.run::<BTreeMap<String, Vec<u16>>>(payload),
        _ => direction.run::<Shape>(payload),
    }
}

fn type_tag_of(kind: u8) -> u64 {
    struct Tag(u64);
    impl Direction for Tag {
        fn run<T: Value>(&mut self, _: &[u8]) {
            self.0 = entry::type_tag::<T>();
        }
    }
    let mut tag = Tag(0);
    decode_as(kind, &mut tag, &[]);
    tag.0
}

/// Decode an entry that opened; a value that decodes makes the round trip.
struct DecodeFirst<'a, 'b>(&'a str, &'a RawEntry<'b>, Option<&'a Secret>);

impl Direction for DecodeFirst<'_, '_> {
    fn run<T: Value>(&mut self, _: &[u8]) {
        let DecodeFirst(key, raw, secret) = *self;
        let tags: Vec<Box<str>> = raw.tags().map(Box::from).collect();
        match entry::decode_payload::<T>(raw) {
            Ok(value) => round_trip(key, &raw.meta, &tags, &value, secret),
            Err(DecodeError::OtherType) => assert_ne!(raw.type_tag, entry::type_tag::<T>()),
            Err(DecodeError::Payload(_) | DecodeError::TooDeep) => {}
            Err(err) => panic!("decode_payload returned {err:?}, which only open returns"),
        }
    }
}

/// A value read from the fuzzer's bytes (as postcard) makes the round trip.
struct EncodeFirst<'a>(&'a str, &'a EntryMeta, &'a [Box<str>], Option<&'a Secret>);

impl Direction for EncodeFirst<'_> {
    fn run<T: Value>(&mut self, payload: &[u8]) {
        if let Ok((value, _)) = postcard::take_from_bytes::<T>(payload) {
            round_trip(self.0, self.1, self.2, &value, self.3);
        }
    }
}

/// `decode(encode(x)) == x`, and the entry is a miss for any other key and
/// for a reader with the other secret setting.
fn round_trip<T: Value>(
    key: &str,
    meta: &EntryMeta,
    tags: &[Box<str>],
    value: &T,
    secret: Option<&Secret>,
) {
    let bytes = match entry::encode(key, meta, value, tags, secret) {
        Ok(bytes) => bytes,
        Err(err) => panic!("{value:?} does not encode: {err}"),
    };
    match entry::open(key, &bytes, secret) {
        Ok(raw) => {
            assert_eq!(raw.meta, *meta);
            assert_eq!(raw.type_tag, entry::type_tag::<T>());
            assert!(raw.tags().eq(tags.iter().map(|tag| &**tag)));
            match entry::decode_payload::<T>(&raw) {
                Ok(back) => assert_eq!(back, *value, "decode(encode(x)) == x"),
                // Values nested past the limit are refused on the way in.
                Err(DecodeError::TooDeep) => {}
                Err(err) => panic!("{value:?} does not decode after encoding: {err}"),
            }
        }
        Err(err) => panic!("an encoded entry does not open: {err}"),
    }
    let other_key = format!("{key}\u{0}");
    assert_eq!(
        entry::open(&other_key, &bytes, secret).err(),
        Some(DecodeError::OtherKey)
    );
    let other_secret = match secret {
        Some(_) => None,
        None => Some(Secret::new("fuzz")),
    };
    assert_eq!(
        entry::open(key, &bytes, other_secret.as_ref()).err(),
        Some(DecodeError::Tag)
    );
}
