//! A namespace's values of one type on a memory region: what a cached
//! function on a memory region reads and writes.
//!
//! [`TypedCache<V>`] follows the same rules as [`Cache`] (freshness,
//! generations, stale serving, the dog-pile engine, counters) over a
//! [`TypedMap<V>`] instead of the region's shared map, so a hit clones the
//! `V` out of the map and touches no shared reference count.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Cache;
use crate::backend::memory::encoded_len;
use crate::backend::memory::typed::{TypedEntry, TypedKeyRef, TypedMap};
use crate::cache_key::KeyBuf;
use crate::cache_key::WordKey;
use crate::engine::{self, Creator, Place};
use crate::entry::Generations;
use crate::error::Result;
use crate::region::{Found, Lookup};
use crate::tags::Tags;

/// One namespace's typed map for values of type `V`.
pub(crate) struct TypedCache<V> {
    cache: Cache,
    map: Arc<TypedMap<V>>,
}

// Not derived: that would ask for `V: Clone` on the struct's users.
impl<V> Clone for TypedCache<V> {
    fn clone(&self) -> Self {
        TypedCache {
            cache: self.cache.clone(),
            map: self.map.clone(),
        }
    }
}

impl<V> TypedCache<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    /// The typed map of `cache`'s namespace, or `None` unless it is on an
    /// enabled memory region (other regions go through [`Cache`]).
    pub(crate) fn of(cache: &Cache) -> Option<TypedCache<V>> {
        if !cache.region.options.enabled {
            return None;
        }
        let memory = cache.region.memory_only()?;
        Some(TypedCache {
            map: memory.typed_map::<V>(cache.ns.id)?,
            cache: cache.clone(),
        })
    }

    /// An empty compact key for this map.
    #[inline]
    pub(crate) fn new_key(&self) -> KeyBuf {
        KeyBuf::compact(self.map.hash_keys())
    }

    /// The lookup key of a compact key: its words, if it is one.
    #[inline]
    pub(crate) fn key<'a>(&self, buf: &'a KeyBuf) -> TypedKeyRef<'a> {
        match buf.word() {
            Some(word) => TypedKeyRef::Word(word),
            None => TypedKeyRef::new(buf.hash(), buf.as_bytes(), buf.padded()),
        }
    }

    /// The hit path: the fresh value, counted as a hit, or `None`.
    #[inline(always)]
    pub(crate) fn fresh(&self, key: &TypedKeyRef<'_>) -> Option<V> {
        let sample = self.cache.region.start_hit();
        let value = self.get(key)?;
        self.cache.region.hit(sample);
        Some(value)
    }

    /// [`fresh`](Self::fresh) for a word key, which it takes by reference
    /// as written: copying it into a [`TypedKeyRef`] first reads back in
    /// one load what was just stored in two, a stall longer than a hit.
    #[inline(always)]
    pub(crate) fn fresh_word(&self, key: &WordKey) -> Option<V> {
        let sample = self.cache.region.start_hit();
        let value = self.value_if_fresh(self.map.get_word(key))?;
        self.cache.region.hit(sample);
        Some(value)
    }

    /// The fresh value, counting nothing.
    #[inline(always)]
    pub(crate) fn get(&self, key: &TypedKeyRef<'_>) -> Option<V> {
        self.value_if_fresh(self.map.get(key))
    }

    /// The value of what a lookup found, if it is fresh. The entry is
    /// checked where the map's `get` left it: moving it out first read its
    /// parts back in other widths than they were stored in, which stalled
    /// longer than the rest of the check.
    #[inline(always)]
    fn value_if_fresh(&self, found: Option<TypedEntry<V>>) -> Option<V> {
        let entry = found.as_ref()?;
        let fresh = self.cache.region.fresh_in_memory(
            &self.cache.ns,
            &entry.meta,
            entry.epoch,
            &entry.tags,
        );
        if !fresh {
            return None;
        }
        found.map(|entry| entry.value)
    }

    /// [`Cache::get_or_try_create`] on this map: `buf` is looked up, and
    /// `text` (its text form) names the call to the single-flight map.
    pub(crate) async fn get_or_create<C>(
        &self,
        text: &str,
        buf: &KeyBuf,
        creator: C,
    ) -> Result<Arc<V>>
    where
        C: Creator<V>,
    {
        let key = &self.key(buf);
        let slot = Slot {
            typed: self,
            key,
            buf,
        };
        let call = engine::Call {
            place: Some(&slot),
            tags: self.cache.tags.clone(),
            ..engine::Call::new(
                &self.cache.region,
                &self.cache.ns,
                text,
                self.cache.expiry(),
            )
        };
        Box::pin(engine::get_or_create(call, creator)).await
    }

    /// Stores `value`, as [`Cache::put`], carrying `tags`.
    pub(crate) fn put_tagged(&self, key: &TypedKeyRef<'_>, value: V, tags: &Tags) {
        self.store(key, value, self.cache.expiry(), 0, None, tags);
    }

    /// Removes the value; `true` if there was one.
    pub(crate) fn remove(&self, key: &TypedKeyRef<'_>) -> bool {
        self.map.remove(key)
    }

    fn store(
        &self,
        key: &TypedKeyRef<'_>,
        value: V,
        expire: Option<Duration>,
        cost_us: u32,
        generations: Option<Generations>,
        tags: &Tags,
    ) {
        let (meta, epoch) =
            self.cache
                .region
                .memory_stamp(&self.cache.ns, expire, cost_us, generations, tags);
        self.map
            .insert(key, value, meta, epoch, tags.clone(), encoded_len);
    }
}

/// A typed map's key as a place for the dog-pile engine.
struct Slot<'a, 'k, V> {
    typed: &'a TypedCache<V>,
    key: &'a TypedKeyRef<'k>,
    /// The key `key` was made from, for [`Place::detach`].
    buf: &'a KeyBuf,
}

impl<V> Place<V> for Slot<'_, '_, V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn lookup(&self) -> Lookup<V> {
        let region = &self.typed.cache.region;
        // Read before the entry, so a clear between the two hides what the
        // creator stores with them.
        let generations = region.memory_generations(&self.typed.cache.ns);
        let found = match self.typed.map.get(self.key) {
            None => Found::Missing,
            Some(entry) if region.hidden_here(&entry.tags, entry.meta.created_ms) => Found::Missing,
            Some(entry) => Found::entry(
                entry.meta.freshness(&generations, &region.read_policy()),
                Arc::new(entry.value),
            ),
        };
        Lookup {
            found,
            generations: Some(generations),
        }
    }

    fn store(
        &self,
        value: &Arc<V>,
        expire: Option<Duration>,
        cost_us: u32,
        generations: Option<Generations>,
        tags: &Tags,
    ) {
        self.typed.store(
            self.key,
            V::clone(value),
            expire,
            cost_us,
            generations,
            tags,
        );
    }

    fn detach(&self) -> Option<Box<dyn Place<V> + Send>> {
        Some(Box::new(OwnedSlot {
            typed: self.typed.clone(),
            buf: self.buf.clone(),
        }))
    }
}

/// A [`Slot`] that owns its map handle and key: the place of a background
/// refresh, which outlives the call that started it.
struct OwnedSlot<V> {
    typed: TypedCache<V>,
    buf: KeyBuf,
}

impl<V> OwnedSlot<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn slot<R>(&self, f: impl FnOnce(&Slot<'_, '_, V>) -> R) -> R {
        let key = self.typed.key(&self.buf);
        f(&Slot {
            typed: &self.typed,
            key: &key,
            buf: &self.buf,
        })
    }
}

impl<V> Place<V> for OwnedSlot<V>
where
    V: Clone + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    fn lookup(&self) -> Lookup<V> {
        self.slot(|slot| slot.lookup())
    }

    fn store(
        &self,
        value: &Arc<V>,
        expire: Option<Duration>,
        cost_us: u32,
        generations: Option<Generations>,
        tags: &Tags,
    ) {
        self.slot(|slot| slot.store(value, expire, cost_us, generations, tags));
    }

    fn detach(&self) -> Option<Box<dyn Place<V> + Send>> {
        Some(Box::new(OwnedSlot {
            typed: self.typed.clone(),
            buf: self.buf.clone(),
        }))
    }
}
