//! The memory tier: a memory region's whole store, or the L1 in front of
//! a shared store (`l1 = true`, DESIGN §2, §8).
//!
//! An L1 copy is a typed value read from (or written to) the shared store,
//! kept in this process so a hit costs what a memory-region hit costs. It
//! is only ever served fresh; anything else falls through to the shared
//! store, which knows the entry's real state (stale, invalidated,
//! missing). Three things bound how long a copy can outlive a change made
//! by another process:
//!
//! - the **backplane** (when the region has one): another process's
//!   write, remove, clear or invalidation arrives as a message and drops
//!   the copies it names (see [`Listener`] below); a tag invalidation
//!   moves the tag's stamp in the region's table, which hides every copy
//!   as old as its stamp (a copy keeps its entry's creation time);
//! - **`l1_expire`**: no copy is served longer than that after it was
//!   taken, whatever the backplane says;
//! - **the backplane's state**: while its subscription is down the tier
//!   is off (messages may be missed): no copy is served or taken, and it
//!   is emptied when the subscription is back.
//!
//! One exception, with `fail_safe` only: while the shared store itself
//! cannot be reached, the copies this process holds stand in for it (a
//! fresh one is served, an older one is the last good value if the
//! creator fails too), since nothing better can be known until it is back.
//! That is why a lost subscription turns the tier off without emptying it.
//!
//! A copy taken from the shared store must not outlive a change that
//! raced with the read: the generations it is stamped with, and the
//! tier's eviction count, are read before the shared store is, and a copy
//! whose key was evicted meanwhile is dropped right after it is stored.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::backend::backplane::{Eviction, Listener};
use crate::backend::memory::{MemKeyRef, MemoryStore};
use crate::sync::lock;

use super::RegionInner;

/// A region's memory tier.
pub(crate) struct MemoryTier {
    pub(crate) store: MemoryStore,
    /// `Some` for an L1 in front of a shared store: the longest a copy is
    /// served. `None` for a memory region, whose tier is the store itself.
    pub(crate) bound: Option<Duration>,
    /// Whether copies may be served and taken: always for a memory region
    /// and an L1 without a backplane; for an L1 with one, only while its
    /// subscription is live.
    live: AtomicBool,
    /// Moves on at every eviction of one key (local or from the
    /// backplane), so a copy read from the shared store before it is
    /// dropped after it is stored.
    evictions: AtomicU64,
    /// Whether the backplane's listener has been started (it needs a
    /// runtime, so it starts on first use, not when the region opens).
    listening: AtomicBool,
}

/// What a lookup reads before it goes to the shared store, to stamp the
/// copy it then takes.
#[derive(Clone, Copy)]
pub(crate) struct Before {
    pub(crate) evictions: u64,
}

impl MemoryTier {
    /// A memory region's store.
    pub(crate) fn memory(store: MemoryStore) -> MemoryTier {
        MemoryTier {
            store,
            bound: None,
            live: AtomicBool::new(true),
            evictions: AtomicU64::new(0),
            listening: AtomicBool::new(true),
        }
    }

    /// An L1 in front of a shared store; with a backplane it stays off
    /// until the backplane says its subscription is live.
    pub(crate) fn l1(store: MemoryStore, bound: Duration, backplane: bool) -> MemoryTier {
        MemoryTier {
            store,
            bound: Some(bound),
            live: AtomicBool::new(!backplane),
            evictions: AtomicU64::new(0),
            listening: AtomicBool::new(!backplane),
        }
    }

    /// Whether this tier is an L1 (in front of a shared store).
    #[inline(always)]
    pub(crate) fn is_l1(&self) -> bool {
        self.bound.is_some()
    }

    #[inline(always)]
    pub(crate) fn live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Read before the shared store is.
    pub(crate) fn before(&self) -> Before {
        Before {
            evictions: self.evictions.load(Ordering::Acquire),
        }
    }

    /// Drops a key's copy, and any copy of it being taken right now.
    pub(crate) fn evict(&self, key: &MemKeyRef<'_>) {
        self.evictions.fetch_add(1, Ordering::AcqRel);
        self.store.remove(key);
    }

    /// Drops any copy being taken right now once it is stored (a tag's
    /// stamp moved: the copy may predate it).
    pub(crate) fn note_eviction(&self) {
        self.evictions.fetch_add(1, Ordering::AcqRel);
    }

    /// After storing a copy taken with `before`: drops it again if its key
    /// (or any key) was evicted meanwhile. Rare, and only ever costs a miss.
    pub(crate) fn recheck(&self, key: &MemKeyRef<'_>, before: Before) {
        if self.evictions.load(Ordering::Acquire) != before.evictions {
            self.store.remove(key);
        }
    }

    /// Claims the right to start the listener: `true` once.
    pub(crate) fn claim_listening(&self) -> bool {
        !self.listening.load(Ordering::Relaxed) && !self.listening.swap(true, Ordering::AcqRel)
    }
}

impl Listener for RegionInner {
    fn on_eviction(&self, eviction: Eviction) {
        let Some(l1) = &self.l1 else { return };
        match eviction {
            Eviction::Key { namespace, key } => {
                let id = lock(&self.namespaces).get(&namespace).map(|ns| ns.id);
                match id {
                    Some(id) => l1.evict(&MemKeyRef {
                        namespace: id,
                        key: &key,
                    }),
                    // Nothing of it here; a lookup under way still rechecks.
                    None => {
                        l1.evictions.fetch_add(1, Ordering::AcqRel);
                    }
                }
            }
            Eviction::Namespace { namespace } => {
                if let Some(ns) = lock(&self.namespaces).get(&namespace) {
                    ns.generation.fetch_add(1, Ordering::AcqRel);
                    ns.epoch.fetch_add(1, Ordering::AcqRel);
                }
            }
            Eviction::Region => self.drop_local(),
            Eviction::Tag { tag, at_ms } => self.raise_stamp(&tag, at_ms),
        }
    }

    fn on_state(&self, live: bool) {
        let Some(l1) = &self.l1 else { return };
        if live {
            // Messages may have been missed while it was down.
            self.drop_local();
            l1.live.store(true, Ordering::Release);
            tracing::info!(region = %self.options.name, "backplane connected: L1 on");
        } else {
            // Off, not emptied: with `fail_safe`, its copies stand in for
            // the shared store if that is down too (see the module's docs);
            // they are dropped when the subscription is back.
            l1.live.store(false, Ordering::Release);
            tracing::warn!(
                region = %self.options.name,
                "backplane lost: L1 off until it reconnects",
            );
        }
    }
}
