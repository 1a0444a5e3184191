//! Typed maps: where a `#[tankard::cached]` function on a memory region
//! keeps its results.
//!
//! A cached function has one value type, so its results need no `dyn Any`
//! and no shared `Arc`: [`TypedMap<V>`] stores `V` itself and a hit hands
//! out a clone of it, without touching a reference count that other cores
//! write too.
//!
//! A function whose key is one or two integers, `bool`s or `char`s is
//! looked up by its [`WordKey`]: the argument values themselves, no key
//! bytes written. Other keys are the function's compact argument keys (see
//! [`KeyBuf`](crate::cache_key::KeyBuf)), hashed by the caller while it
//! wrote them. A key of up to [`SHORT_KEY`] bytes is stored in a 32-byte
//! [`ShortKey`] (hash, length and bytes, compared in place); a longer one
//! in a separate map whose keys hold the bytes on the heap. Measured on the
//! function benchmark, a hit on a 32-byte key costs 10.8 ns where one key
//! type for both (56 bytes, with a pointer) cost 14.9 ns.
//!
//! Each map is bounded like its region (`max_entries` or `max_bytes`, per
//! function and key length) and registered with the region's
//! [`MemoryStore`](super::MemoryStore), which counts its entries in `usage`
//! and purges it in `purge_expired`.

use std::any::Any;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;

use quick_cache::sync::Cache as QuickCache;
use quick_cache::{Equivalent, Weighter};

#[cfg(test)]
use super::NO_EPOCH;
use super::{Bounds, ENTRY_OVERHEAD};
use crate::cache_key::{HashKeys, WordKey};
use crate::entry::EntryMeta;
use crate::tags::Tags;

/// Keys up to this many bytes are [`ShortKey`]s.
pub(crate) const SHORT_KEY: usize = 23;

/// A short key: its hash with its length in the low byte, and its bytes
/// zero-padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ShortKey {
    tag: u64,
    bytes: [u8; SHORT_KEY + 1],
}

/// A long key: its hash and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LongKey {
    hash: u64,
    bytes: Box<[u8]>,
}

/// A key to look up.
#[derive(Clone, Copy, Debug)]
pub(crate) enum TypedKeyRef<'a> {
    Word(WordKey),
    Short(ShortKey),
    Long(LongKeyRef<'a>),
}

/// The borrowed form of a [`LongKey`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct LongKeyRef<'a> {
    hash: u64,
    bytes: &'a [u8],
}

impl<'a> TypedKeyRef<'a> {
    /// The key `bytes` with its `hash`; `padded` is the same bytes
    /// zero-padded, for a short key.
    #[inline]
    pub(crate) fn new(hash: u64, bytes: &'a [u8], padded: &'a [u8; SHORT_KEY + 1]) -> Self {
        let len = bytes.len();
        if len > SHORT_KEY {
            return TypedKeyRef::Long(LongKeyRef { hash, bytes });
        }
        let mut bytes = *padded;
        bytes[SHORT_KEY] = len as u8;
        TypedKeyRef::Short(ShortKey { tag: hash, bytes })
    }

    fn len(&self) -> usize {
        match self {
            TypedKeyRef::Word(_) => size_of::<WordKey>(),
            TypedKeyRef::Short(key) => usize::from(key.bytes[SHORT_KEY]),
            TypedKeyRef::Long(key) => key.bytes.len(),
        }
    }
}

// The maps hash only the precomputed hash (see `PassThrough`).
impl Hash for ShortKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.tag);
    }
}

impl Hash for LongKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Hash for LongKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl Equivalent<LongKey> for LongKeyRef<'_> {
    fn equivalent(&self, key: &LongKey) -> bool {
        self.hash == key.hash && *self.bytes == *key.bytes
    }
}

/// The maps' hasher: keys arrive hashed, so it passes the hash through.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PassThrough;

/// [`PassThrough`]'s hasher.
#[derive(Debug, Default)]
pub(crate) struct HashOf(u64);

impl BuildHasher for PassThrough {
    type Hasher = HashOf;

    fn build_hasher(&self) -> HashOf {
        HashOf(0)
    }
}

impl Hasher for HashOf {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by the key types; anything else still
        // gets a deterministic (if weak) hash rather than a panic.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    #[inline]
    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}

/// A stored result and its metadata.
#[derive(Clone, Debug)]
pub(crate) struct TypedEntry<V> {
    pub(crate) value: V,
    pub(crate) meta: EntryMeta,
    /// The namespace epoch under which the entry was fresh when stored, or
    /// [`NO_EPOCH`].
    pub(crate) epoch: u64,
    /// The entry's tags (`None`: untagged, the common case).
    pub(crate) tags: Tags,
    weight: u64,
}

#[derive(Clone, Copy, Debug)]
struct TypedWeighter;

impl<K, V> Weighter<K, TypedEntry<V>> for TypedWeighter {
    fn weight(&self, _key: &K, entry: &TypedEntry<V>) -> u64 {
        entry.weight
    }
}

type Map<K, V, H = PassThrough> = QuickCache<K, TypedEntry<V>, TypedWeighter, H>;

fn map<K: Clone + Eq + Hash, V: Clone, H: BuildHasher + Clone>(
    bounds: Bounds,
    hasher: H,
) -> Map<K, V, H> {
    QuickCache::with(
        bounds.estimated_items,
        bounds.capacity,
        TypedWeighter,
        hasher,
        Default::default(),
    )
}

/// One cached function's results in one memory region.
pub(crate) struct TypedMap<V> {
    words: Map<WordKey, V, HashKeys>,
    short: Map<ShortKey, V>,
    long: Map<LongKey, V>,
    by_bytes: bool,
    hash_keys: HashKeys,
}

impl<V: Clone> std::fmt::Debug for TypedMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypedMap")
            .field(
                "entries",
                &(self.words.len() + self.short.len() + self.long.len()),
            )
            .field("by_bytes", &self.by_bytes)
            .finish()
    }
}

impl<V: Clone + Send + Sync + 'static> TypedMap<V> {
    pub(crate) fn new(bounds: Bounds) -> TypedMap<V> {
        let hash_keys = HashKeys::random();
        TypedMap {
            words: map(bounds, hash_keys),
            short: map(bounds, PassThrough),
            long: map(bounds, PassThrough),
            by_bytes: bounds.by_bytes,
            hash_keys,
        }
    }

    /// The keys this map's keys are hashed with.
    #[inline]
    pub(crate) fn hash_keys(&self) -> HashKeys {
        self.hash_keys
    }

    #[inline]
    pub(crate) fn get_word(&self, key: &WordKey) -> Option<TypedEntry<V>> {
        self.words.get(key)
    }

    #[inline]
    pub(crate) fn get(&self, key: &TypedKeyRef<'_>) -> Option<TypedEntry<V>> {
        match key {
            TypedKeyRef::Word(key) => self.words.get(key),
            TypedKeyRef::Short(key) => self.short.get(key),
            TypedKeyRef::Long(key) => self.long.get(key),
        }
    }

    /// Stores a value; `encoded_len` is called only when the map is
    /// bounded by bytes, since measuring a value means serializing it.
    pub(crate) fn insert(
        &self,
        key: &TypedKeyRef<'_>,
        value: V,
        meta: EntryMeta,
        epoch: u64,
        tags: Tags,
        encoded_len: impl FnOnce(&V) -> u64,
    ) {
        let weight = if self.by_bytes {
            encoded_len(&value) + key.len() as u64 + ENTRY_OVERHEAD
        } else {
            1
        };
        let entry = TypedEntry {
            value,
            meta,
            epoch,
            tags,
            weight,
        };
        match key {
            TypedKeyRef::Word(key) => self.words.insert(*key, entry),
            TypedKeyRef::Short(key) => self.short.insert(*key, entry),
            TypedKeyRef::Long(key) => self.long.insert(
                LongKey {
                    hash: key.hash,
                    bytes: key.bytes.into(),
                },
                entry,
            ),
        }
    }

    pub(crate) fn remove(&self, key: &TypedKeyRef<'_>) -> bool {
        match key {
            TypedKeyRef::Word(key) => self.words.remove(key).is_some(),
            TypedKeyRef::Short(key) => self.short.remove(key).is_some(),
            TypedKeyRef::Long(key) => self.long.remove(key).is_some(),
        }
    }
}

/// What the region's store needs of a typed map whatever its value type.
pub(crate) trait Shelf: Send + Sync {
    fn len(&self) -> u64;
    fn weight(&self) -> u64;
    fn purge_expired(&self, now_ms: u64) -> u64;
    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync>;
}

impl<V: Clone + Send + Sync + 'static> Shelf for TypedMap<V> {
    fn len(&self) -> u64 {
        (self.words.len() + self.short.len() + self.long.len()) as u64
    }

    fn weight(&self) -> u64 {
        self.words.weight() + self.short.weight() + self.long.weight()
    }

    fn purge_expired(&self, now_ms: u64) -> u64 {
        let before = self.len();
        self.words
            .retain(|_, entry| entry.meta.stale_until_ms > now_ms);
        self.short
            .retain(|_, entry| entry.meta.stale_until_ms > now_ms);
        self.long
            .retain(|_, entry| entry.meta.stale_until_ms > now_ms);
        before.saturating_sub(self.len())
    }

    fn into_any(self: Arc<Self>) -> Arc<dyn Any + Send + Sync> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::Generations;

    fn meta() -> EntryMeta {
        EntryMeta::new(0, None, std::time::Duration::ZERO, Generations::default())
    }

    fn map() -> TypedMap<u32> {
        TypedMap::new(Bounds::of(Some(100), None))
    }

    /// A key whose hash only depends on its length: every key of a length
    /// collides, so only the bytes can tell them apart.
    fn with<T>(bytes: &[u8], f: impl FnOnce(TypedKeyRef<'_>) -> T) -> T {
        with_hash(bytes.len() as u64, bytes, f)
    }

    fn with_hash<T>(hash: u64, bytes: &[u8], f: impl FnOnce(TypedKeyRef<'_>) -> T) -> T {
        let mut padded = [0; SHORT_KEY + 1];
        let n = bytes.len().min(SHORT_KEY);
        padded[..n].copy_from_slice(&bytes[..n]);
        f(TypedKeyRef::new(hash, bytes, &padded))
    }

    #[test]
    fn keys_with_one_hash_are_told_apart_by_their_bytes() {
        let map = map();
        let long_a = "a".repeat(40);
        let long_b = format!("{}b", "a".repeat(39));
        let longest_short = "x".repeat(SHORT_KEY);
        let shortest_long = "x".repeat(SHORT_KEY + 1);
        let keys = [
            "",
            "1",
            "2",
            "12",
            "1\0",
            &longest_short,
            &shortest_long,
            &long_a,
            &long_b,
        ];
        for (i, text) in keys.iter().enumerate() {
            with(text.as_bytes(), |key| {
                map.insert(&key, i as u32, meta(), NO_EPOCH, None, |_| 0)
            });
        }
        for (i, text) in keys.iter().enumerate() {
            let found = with(text.as_bytes(), |key| map.get(&key).map(|e| e.value));
            assert_eq!(found, Some(i as u32), "{text:?}");
        }
        assert!(with(b"3", |key| map.get(&key)).is_none());
        assert!(with(long_a.as_bytes(), |key| map.remove(&key)));
        assert!(with(long_a.as_bytes(), |key| map.get(&key)).is_none());
        let found = with(long_b.as_bytes(), |key| map.get(&key).map(|e| e.value));
        assert_eq!(found, Some(8));
        assert_eq!(map.len(), keys.len() as u64 - 1);
    }

    #[test]
    fn a_key_with_another_hash_is_another_key() {
        let map = map();
        let long = "k".repeat(40);
        for bytes in [b"k".as_slice(), long.as_bytes()] {
            with_hash(1, bytes, |key| {
                map.insert(&key, 1, meta(), NO_EPOCH, None, |_| 0)
            });
            assert!(with_hash(2, bytes, |key| map.get(&key)).is_none());
            assert!(with_hash(1, bytes, |key| map.get(&key)).is_some());
        }
    }

    #[test]
    fn byte_bounded_maps_weigh_entries() {
        let map: TypedMap<String> = TypedMap::new(Bounds::of(None, Some(10_000)));
        let expired = EntryMeta::new(
            0,
            Some(std::time::Duration::ZERO),
            std::time::Duration::ZERO,
            Generations::default(),
        );
        with(b"k", |key| {
            map.insert(&key, "v".to_owned(), expired, NO_EPOCH, None, |_| 100)
        });
        let long = "k".repeat(40);
        with(long.as_bytes(), |key| {
            map.insert(&key, "v".to_owned(), expired, NO_EPOCH, None, |_| 100)
        });
        assert_eq!(map.weight(), 2 * (100 + ENTRY_OVERHEAD) + 1 + 40);
        assert_eq!(map.purge_expired(1), 2);
        assert_eq!(map.len(), 0);
    }
}
