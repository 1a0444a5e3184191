//! The implementation of the memory store, built with its cargo feature.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use quick_cache::{Equivalent, Weighter};

use super::typed::{Shelf, TypedMap};
use crate::entry::EntryMeta;
use crate::sync::lock;
use crate::tags::Tags;

/// An entry's address: the namespace's id in its region, and the caller's key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct MemKey {
    namespace: u64,
    key: Box<str>,
}

/// The borrowed form of [`MemKey`] that lookups use, so a hit builds no key.
#[derive(Debug)]
pub(crate) struct MemKeyRef<'a> {
    pub(crate) namespace: u64,
    pub(crate) key: &'a str,
}

// Both forms must hash identically: namespace, then the key as `str`.
impl Hash for MemKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.namespace.hash(state);
        (*self.key).hash(state);
    }
}

impl Hash for MemKeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.namespace.hash(state);
        self.key.hash(state);
    }
}

impl Equivalent<MemKey> for MemKeyRef<'_> {
    fn equivalent(&self, key: &MemKey) -> bool {
        self.namespace == key.namespace && self.key == &*key.key
    }
}

/// A stored value and its metadata.
#[derive(Clone)]
pub(crate) struct MemEntry {
    pub(crate) value: Arc<dyn Any + Send + Sync>,
    pub(crate) meta: EntryMeta,
    /// The namespace epoch the entry was stored fresh under, or [`NO_EPOCH`].
    pub(crate) epoch: u64,
    /// The entry's tags (`None`: untagged, the common case).
    pub(crate) tags: Tags,
    weight: u64,
}

/// An epoch no namespace reaches: the entry always takes the full
/// freshness check.
pub(crate) const NO_EPOCH: u64 = u64::MAX;

#[derive(Clone, Debug)]
struct EntryWeighter;

impl Weighter<MemKey, MemEntry> for EntryWeighter {
    fn weight(&self, _key: &MemKey, entry: &MemEntry) -> u64 {
        entry.weight
    }
}

/// The map behind a memory region.
pub(crate) struct MemoryStore {
    map: quick_cache::sync::Cache<MemKey, MemEntry, EntryWeighter>,
    bounds: Bounds,
    /// Cached functions' maps, by namespace id and value type.
    typed: Mutex<HashMap<(u64, TypeId), Arc<dyn Shelf>>>,
}

/// How a map is sized: from the region's `max_entries` / `max_bytes`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bounds {
    pub(crate) capacity: u64,
    pub(crate) by_bytes: bool,
    pub(crate) estimated_items: usize,
}

impl Bounds {
    /// Bounded by `max_bytes` if given, else by `max_entries`.
    pub(crate) fn of(max_entries: Option<u64>, max_bytes: Option<u64>) -> Bounds {
        let (capacity, by_bytes, estimated_items) = match (max_bytes, max_entries) {
            (Some(bytes), entries) => (bytes, true, entries.unwrap_or(bytes / 256).max(16)),
            (None, Some(entries)) => (entries, false, entries),
            (None, None) => (10_000, false, 10_000),
        };
        Bounds {
            capacity: capacity.max(1),
            by_bytes,
            estimated_items: estimated_items.min(1 << 24) as usize,
        }
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.map.len())
            .field("weight", &self.map.weight())
            .finish()
    }
}

/// What a value weighs in a map bounded by bytes: its encoded size.
pub(crate) fn encoded_len<T: serde::Serialize + ?Sized>(value: &T) -> u64 {
    postcard::experimental::serialized_size(value).map_or(0, |n| n as u64)
}

/// Bytes an entry costs besides its value: key, metadata and map overhead.
pub(crate) const ENTRY_OVERHEAD: u64 = 96;

impl MemoryStore {
    /// A store bounded by `max_bytes` if given, else by `max_entries`.
    pub(crate) fn new(max_entries: Option<u64>, max_bytes: Option<u64>) -> MemoryStore {
        let bounds = Bounds::of(max_entries, max_bytes);
        MemoryStore {
            map: quick_cache::sync::Cache::with_weighter(
                bounds.estimated_items,
                bounds.capacity,
                EntryWeighter,
            ),
            bounds,
            typed: Mutex::new(HashMap::new()),
        }
    }

    /// The typed map of namespace `namespace` for values of type `V`,
    /// made on first use.
    #[cfg_attr(not(feature = "macros"), allow(dead_code))]
    pub(crate) fn typed_map<V: Clone + Send + Sync + 'static>(
        &self,
        namespace: u64,
    ) -> Option<Arc<TypedMap<V>>> {
        let shelf = lock(&self.typed)
            .entry((namespace, TypeId::of::<V>()))
            .or_insert_with(|| Arc::new(TypedMap::<V>::new(self.bounds)))
            .clone();
        shelf.into_any().downcast::<TypedMap<V>>().ok()
    }

    fn shelves(&self) -> Vec<Arc<dyn Shelf>> {
        lock(&self.typed).values().cloned().collect()
    }

    #[inline]
    pub(crate) fn get(&self, key: &MemKeyRef<'_>) -> Option<MemEntry> {
        self.map.get(key)
    }

    /// Stores a value; `encoded_len` is called only when the store is
    /// bounded by bytes, since measuring a value means serializing it.
    pub(crate) fn insert(
        &self,
        key: MemKeyRef<'_>,
        value: Arc<dyn Any + Send + Sync>,
        meta: EntryMeta,
        epoch: u64,
        tags: Tags,
        encoded_len: impl FnOnce() -> u64,
    ) {
        let weight = if self.bounds.by_bytes {
            encoded_len() + key.key.len() as u64 + ENTRY_OVERHEAD
        } else {
            1
        };
        self.map.insert(
            MemKey {
                namespace: key.namespace,
                key: key.key.into(),
            },
            MemEntry {
                value,
                meta,
                epoch,
                // A list of its own: every hit clones the entry, and a list
                // shared by all the entries a handle tagged would have its
                // one reference count bounced between the readers' cores
                // (measured: 1.6× an untagged hit from two threads).
                tags: tags.map(|list| Arc::new((*list).clone())),
                weight,
            },
        );
    }

    pub(crate) fn remove(&self, key: &MemKeyRef<'_>) -> bool {
        self.map.remove(key).is_some()
    }

    /// Drops entries that can no longer be served, in this map and every
    /// typed one; returns how many.
    pub(crate) fn purge_expired(&self, now_ms: u64) -> u64 {
        let before = self.map.len();
        self.map
            .retain(|_, entry| entry.meta.stale_until_ms > now_ms);
        let purged = before.saturating_sub(self.map.len()) as u64;
        self.shelves()
            .iter()
            .fold(purged, |sum, shelf| sum + shelf.purge_expired(now_ms))
    }

    /// Entries held, typed maps included.
    pub(crate) fn len(&self) -> u64 {
        let own = self.map.len() as u64;
        self.shelves()
            .iter()
            .fold(own, |sum, shelf| sum + shelf.len())
    }

    /// Weight held (bytes when bounded by bytes), typed maps included.
    pub(crate) fn weight(&self) -> u64 {
        let own = self.map.weight();
        self.shelves()
            .iter()
            .fold(own, |sum, shelf| sum + shelf.weight())
    }

    pub(crate) fn by_bytes(&self) -> bool {
        self.bounds.by_bytes
    }
}
