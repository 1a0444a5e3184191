//! # Tankard
//!
//! Beaker-style caching for Rust: named **regions** configured from one
//! flat options map, **several backends at once**, a function-caching
//! attribute keyed by the arguments, and **dog-pile protection** that holds
//! from one thread up to many processes.
//!
//! ```
//! # tokio_test::block_on(async {
//! // The seed post's regions: long_term on disk, short_term in memory here.
//! let dir = tempfile::tempdir()?;
//! let data_dir = dir.path().join("data").display().to_string();
//! let lock_dir = dir.path().join("lock").display().to_string();
//! let config = tankard::Config::from_flat([
//!     ("cache.type", "file"),
//!     ("cache.data_dir", data_dir.as_str()),
//!     ("cache.lock_dir", lock_dir.as_str()),
//!     ("cache.regions", "short_term, long_term"),
//!     ("cache.short_term.type", "memory"),
//!     ("cache.short_term.expire", "1200"),
//!     ("cache.long_term.type", "file"),
//!     ("cache.long_term.expire", "86400"),
//! ])?;
//! let cache = tankard::CacheManager::new(config)?;
//!
//! let hello = cache.region("long_term")?.namespace("views::hello");
//! let page = hello
//!     .get_or_create("fetch_data", || async { "Hello world".to_string() })
//!     .await?;
//! assert_eq!(*page, "Hello world");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The way a value travels
//!
//! [`Config`] → [`CacheManager`] → [`Region`] (its tiers, expiry, lock
//! policy, counters) → [`Cache`] (one namespace) → the dog-pile engine →
//! the tiers: an in-process L1 (a memory region's whole store, or `l1 =
//! true` in front of a shared one) and a shared store with its creation
//! lock. See [`Cache`] for what concurrent callers of one key see.
//!
//! Inside, modules depend downwards only: `options` (the vocabulary of
//! settings) → `backend` (one folder per store, each checking its own
//! options, opening itself and owning its lock; the registry of stores; the
//! backplane) → `config` (parsing, which asks each store to check its
//! options) → `engine`
//! (single-flight, lock policy, background work; generic over a storage
//! seam) → `region` (the tiers, composed; it implements the seam) → front
//! ends (`namespace`, `blocking`, the attribute's runtime, `web`) →
//! `manager`.
//!
//! ## Cargo features
//!
//! | feature | default | what it adds | what it costs |
//! |---|---|---|---|
//! | `memory` | ✓ | the in-process backend (typed values, no encoding) | quick_cache |
//! | `file` | ✓ | one file per key, `flock` creation locks | nothing extra |
//! | `macros` | ✓ | [`#[tankard::cached]`](cached) (turns on `blocking`) | a proc-macro crate on syn, which serde's derive already builds; inventory (no dependencies), for the regions `install` checks |
//! | `blocking` | with `macros` | [`blocking`]: the sync API, with or without a runtime | tokio's multi-thread scheduler code (no new crate) |
//! | `memcached`, `redis` | | the memcached and Redis (and Redis Cluster) backends | memcached: nothing extra (its own client on tokio); redis: the redis crate |
//! | `redis-tls` | | `rediss://` URLs for `redis` (implies it) | rustls and ring |
//! | `axum` | | `web`: the page-caching tower layer and the manager as axum state | axum-core, http, tower-layer |
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod backend;
#[cfg(feature = "blocking")]
#[cfg_attr(docsrs, doc(cfg(feature = "blocking")))]
pub mod blocking;
pub mod cache_key;
mod clock;
pub mod config;
mod engine;
mod entry;
mod error;
mod inspect;
mod key;
mod manager;
mod namespace;
mod options;
mod region;
mod stats;
mod sync;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub mod web;

#[cfg(feature = "macros")]
#[doc(hidden)]
#[path = "function.rs"]
pub mod __private;

/// The fuzz targets' entry points (`fuzz/`, `scripts/fuzz`): built under
/// cargo-fuzz's `--cfg fuzzing` and for the unit tests, which replay the
/// corpus and crash seeds through them. Not an API.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
#[path = "fuzzing/mod.rs"]
pub mod __fuzz;

pub use backend::{BreakerState, Purged, Usage};
pub use cache_key::{CacheKey, SerdeKey};
pub use clock::Clock;
pub use config::Config;
pub use error::{Error, Result};
#[doc(hidden)]
pub use inspect::{EntryInfo, EntryState};
pub use manager::{CacheManager, global, install};
pub use namespace::Cache;
pub use region::{Invalidation, Region};
pub use stats::{Counter, Latencies, Latency, Stats};

#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
#[doc = include_str!("../docs/cached.md")]
pub use tankard_macros::cached;

/// The README's examples are tests too.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
