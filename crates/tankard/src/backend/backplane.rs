//! The backplane: how one process tells the others which of their L1
//! copies to drop (DESIGN §8).
//!
//! A message names a region, what changed in it (one key, one namespace,
//! or the whole region) and the process that sent it; it never carries a
//! value. Every process listens on its regions' channels, ignores its own
//! messages, and evicts what the others' messages name. A process that
//! loses its backplane connection may have missed messages: it empties its
//! L1 and reads from the shared store alone until the connection is back
//! (the listener is told both edges).
//!
//! This file is the seam and the wire format; [`redis`](super::redis)
//! fills it (Redis pub/sub, sharded pub/sub on a cluster). It imports
//! nothing above `backend`.
//!
//! # Wire format
//!
//! A message is `tkb`, a version byte (1), then the [postcard] encoding of
//! (origin, region, eviction): the origin as a varint, strings as a varint
//! length and their UTF-8 bytes, the eviction as a variant index (0 key,
//! 1 namespace, 2 region, 3 tag) and its fields (a tag: its name, then its
//! stamp in epoch ms as a varint). The tag variant came after the others
//! without a new version byte: the three older messages are unchanged, and
//! a build without tags ignores a tag message as it ignores any it cannot
//! decode, so between the two `l1_expire` bounds a tag's staleness. A typical key eviction is some
//! 30 bytes plus its names. Whatever does not decode whole (another
//! program's message on the channel, damage, a version this build does not
//! know) is ignored, never a panic: a receiver cannot trust what arrives on
//! a channel anyone with access to the server can publish on. Processes of
//! two versions that speak different formats therefore ignore each other's
//! messages; during such a rolling upgrade `l1_expire` alone bounds
//! staleness between them, so a format change is a new version byte and a
//! note in the changelog.

use std::fmt;
use std::sync::Weak;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// What changed in a region, as far as other processes' L1 copies care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// One key was written, regenerated or removed.
    Key {
        /// The namespace's name.
        namespace: String,
        /// The caller's key (before prefixing and hashing).
        key: String,
    },
    /// A namespace was cleared.
    Namespace {
        /// The namespace's name.
        namespace: String,
    },
    /// The whole region was invalidated (soft or hard: an L1 copy is
    /// dropped either way; the shared store knows which).
    Region,
    /// A tag was invalidated: its new stamp, which hides every copy of an
    /// entry created at or before it that carries the tag.
    Tag {
        /// The tag.
        tag: String,
        /// Its stamp, epoch ms.
        at_ms: u64,
    },
}

/// One message on the wire: who sent it, which region, what to evict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    /// The sending region instance's id: a process ignores its own.
    pub(crate) origin: u64,
    /// The region's name.
    pub(crate) region: String,
    /// What to drop.
    pub(crate) eviction: Eviction,
}

/// The first bytes of every message: says "a Tankard backplane message"
/// before the version byte.
const MAGIC: &[u8; 3] = b"tkb";
/// The format this build writes and the only one it reads.
const VERSION: u8 = 1;

/// [`Message`] as postcard encodes it, borrowing from either side (the
/// message when encoding, the received bytes when decoding). Private, so
/// the wire never depends on the in-memory types' shape.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    origin: u64,
    region: &'a str,
    eviction: WireEviction<'a>,
}

// Variant order is the wire's variant index: append only.
#[derive(Serialize, Deserialize)]
enum WireEviction<'a> {
    Key { namespace: &'a str, key: &'a str },
    Namespace { namespace: &'a str },
    Region,
    Tag { tag: &'a str, at_ms: u64 },
}

impl Message {
    /// The message's bytes on the wire (see the module docs).
    pub(crate) fn encode(&self) -> Vec<u8> {
        let eviction = match &self.eviction {
            Eviction::Key { namespace, key } => WireEviction::Key { namespace, key },
            Eviction::Namespace { namespace } => WireEviction::Namespace { namespace },
            Eviction::Region => WireEviction::Region,
            Eviction::Tag { tag, at_ms } => WireEviction::Tag { tag, at_ms: *at_ms },
        };
        let wire = Wire {
            origin: self.origin,
            region: &self.region,
            eviction,
        };
        let mut bytes = Vec::with_capacity(
            MAGIC.len() + 1 + 16 + self.region.len() + self.eviction.names_len(),
        );
        bytes.extend_from_slice(MAGIC);
        bytes.push(VERSION);
        // Writing into a Vec cannot fail, and every field serializes; were
        // it to, an empty message is one every receiver ignores.
        postcard::to_extend(&wire, bytes).unwrap_or_default()
    }

    /// Reads a message; `None` for anything that is not one this build
    /// writes, whole and nothing after it.
    pub(crate) fn decode(bytes: &[u8]) -> Option<Message> {
        let body = bytes.strip_prefix(MAGIC)?;
        let (&version, body) = body.split_first()?;
        if version != VERSION {
            return None;
        }
        let (wire, rest) = postcard::take_from_bytes::<Wire<'_>>(body).ok()?;
        if !rest.is_empty() {
            return None;
        }
        let eviction = match wire.eviction {
            WireEviction::Key { namespace, key } => Eviction::Key {
                namespace: namespace.to_owned(),
                key: key.to_owned(),
            },
            WireEviction::Namespace { namespace } => Eviction::Namespace {
                namespace: namespace.to_owned(),
            },
            WireEviction::Region => Eviction::Region,
            WireEviction::Tag { tag, at_ms } => Eviction::Tag {
                tag: tag.to_owned(),
                at_ms,
            },
        };
        Some(Message {
            origin: wire.origin,
            region: wire.region.to_owned(),
            eviction,
        })
    }
}

impl Eviction {
    /// The length of the names it carries, to size an encoding.
    fn names_len(&self) -> usize {
        match self {
            Eviction::Key { namespace, key } => namespace.len() + key.len() + 4,
            Eviction::Namespace { namespace } => namespace.len() + 2,
            Eviction::Region => 0,
            Eviction::Tag { tag, .. } => tag.len() + 12,
        }
    }
}

/// The receiving side, implemented by a region's L1 tier. Called from the
/// backplane's own task: it must not block.
pub(crate) trait Listener: Send + Sync + 'static {
    /// Another process changed something: drop the L1 copies it names.
    fn on_eviction(&self, eviction: Eviction);

    /// The subscription is live (`true`, after every successful
    /// (re)subscription) or lost (`false`: messages may have been missed).
    /// A listener starts out not live, and the calls alternate: the first
    /// is `true` (a backplane that never connects makes none), each
    /// `false` follows a `true`.
    fn on_state(&self, live: bool);
}

/// A channel that carries evictions between processes.
#[async_trait]
pub(crate) trait Backplane: Send + Sync + fmt::Debug + 'static {
    /// Starts delivering other processes' messages for `region` to
    /// `listener`: every message naming `region` whose origin is not
    /// `origin`. The listener is held weakly: once it is dropped the
    /// delivery stops and its task and connection go (within about a
    /// second). Must be called from within a tokio runtime (it spawns);
    /// the listener hears `on_state(true)` once the subscription is live,
    /// never before, and no eviction before that.
    fn listen(&self, region: &str, origin: u64, listener: Weak<dyn Listener>);

    /// Sends one message; returns once the server has taken it (bounded
    /// by the region's `timeout`). Delivery is at most once: a process
    /// whose subscription is down misses it, and learns so through
    /// [`Listener::on_state`].
    async fn publish(&self, message: &Message) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages() -> Vec<Message> {
        let message = |eviction| Message {
            origin: 0x0123_4567_89ab_cdef,
            region: "short_term".to_owned(),
            eviction,
        };
        vec![
            message(Eviction::Key {
                namespace: "views::home".to_owned(),
                key: "user:42".to_owned(),
            }),
            message(Eviction::Namespace {
                namespace: "views::home".to_owned(),
            }),
            message(Eviction::Region),
            message(Eviction::Tag {
                tag: "user:42".to_owned(),
                at_ms: 1_764_000_000_000,
            }),
            Message {
                origin: u64::MAX,
                region: String::new(),
                eviction: Eviction::Key {
                    namespace: String::new(),
                    key: "ключ 🔑 with spaces, \0 and all".to_owned(),
                },
            },
            Message {
                origin: 0,
                region: "r".repeat(70_000),
                eviction: Eviction::Namespace {
                    namespace: "n".repeat(300),
                },
            },
        ]
    }

    #[test]
    fn every_eviction_round_trips() {
        for message in messages() {
            let bytes = message.encode();
            assert!(bytes.starts_with(b"tkb\x01"), "{bytes:?}");
            assert_eq!(Message::decode(&bytes), Some(message));
        }
    }

    /// The bytes of version 1, pinned: a change here is a format change,
    /// which needs a new version byte (see the module docs).
    #[test]
    fn the_format_is_pinned() {
        let message = Message {
            origin: 300,
            region: "r".to_owned(),
            eviction: Eviction::Key {
                namespace: "n".to_owned(),
                key: "k".to_owned(),
            },
        };
        let expected = b"tkb\x01\xac\x02\x01r\x00\x01n\x01k";
        assert_eq!(message.encode(), expected);
        assert_eq!(
            Message {
                eviction: Eviction::Region,
                ..message.clone()
            }
            .encode(),
            b"tkb\x01\xac\x02\x01r\x02"
        );
        assert_eq!(
            Message {
                eviction: Eviction::Tag {
                    tag: "t".to_owned(),
                    at_ms: 5,
                },
                ..message.clone()
            }
            .encode(),
            b"tkb\x01\xac\x02\x01r\x03\x01t\x05"
        );
        assert_eq!(
            Message {
                eviction: Eviction::Namespace {
                    namespace: "n".to_owned()
                },
                ..message
            }
            .encode(),
            b"tkb\x01\xac\x02\x01r\x01\x01n"
        );
    }

    #[test]
    fn anything_else_decodes_to_none() {
        let good = messages()[0].encode();
        // Every truncation, and one byte more.
        for end in 0..good.len() {
            assert_eq!(Message::decode(&good[..end]), None, "cut at {end}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert_eq!(Message::decode(&longer), None);
        // Another magic or another version.
        let mut other = good.clone();
        other[0] = b'x';
        assert_eq!(Message::decode(&other), None);
        let mut newer = good.clone();
        newer[3] = 2;
        assert_eq!(Message::decode(&newer), None);
        // An unknown eviction variant, a string that is not UTF-8, a
        // length far past the end, an overlong varint.
        assert_eq!(Message::decode(b"tkb\x01\x01\x01r\x03"), None);
        assert_eq!(Message::decode(b"tkb\x01\x01\x01\xff\x02"), None);
        assert_eq!(
            Message::decode(b"tkb\x01\x01\xff\xff\xff\xff\x0fr\x02"),
            None
        );
        assert_eq!(
            Message::decode(b"tkb\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01r\x02"),
            None
        );
        // What other programs publish.
        for foreign in [
            &b""[..],
            b"hello",
            b"{\"region\":\"short_term\"}",
            b"\x00\x00\x00\x00",
        ] {
            assert_eq!(Message::decode(foreign), None);
        }
    }

    /// Pseudo-random bytes behind a valid header: never a panic, and
    /// whatever decodes re-encodes to the same bytes (one encoding per
    /// message, so nothing is read two ways).
    #[test]
    fn random_bytes_never_panic() {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            // xorshift64*: deterministic, so a failure replays.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        for _ in 0..20_000 {
            let len = (next() % 24) as usize;
            let mut bytes = b"tkb\x01".to_vec();
            bytes.extend((0..len).map(|_| (next() % 8) as u8));
            if let Some(message) = Message::decode(&bytes) {
                assert_eq!(message.encode(), bytes);
            }
        }
    }
}
