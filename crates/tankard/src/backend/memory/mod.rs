//! The memory backend: a bounded concurrent map (quick_cache) of typed
//! values behind `Arc`, with no encoding.
//!
//! A hit is one hash lookup with a borrowed key (no allocation), one `Arc`
//! clone, and a freshness check against the entry's own timestamps. The map
//! is bounded by entry count or by bytes (`max_entries`, `max_bytes`; the
//! config always sets one), and evicts with quick_cache's CLOCK-Pro.
//!
//! Cached functions keep their results in [`typed`] maps beside it, one
//! per function, which the store counts and purges with its own.
#[cfg(feature = "memory")]
mod store;
#[cfg(feature = "memory")]
pub(crate) mod typed;
#[cfg(feature = "memory")]
pub(crate) use store::*;

/// The memory store in the registry ([`super::STORES`]): its options
/// (`max_entries`, `max_bytes`) are plain bounds the parser checks, and the
/// region opens it as its own memory tier.
pub(crate) const STORE: super::Store = super::Store {
    kind: crate::options::BackendKind::Memory,
    feature: Some("memory"),
    reach: super::Reach::Process,
    check: |_| Ok(()),
    #[cfg(feature = "memory")]
    open: Some(super::Opener::Memory),
    #[cfg(not(feature = "memory"))]
    open: None,
};
