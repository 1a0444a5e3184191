//! # Tankard
//!
//! Beaker-style caching for Rust: named **regions** configured from one
//! flat options map, **several backends at once**, a function-caching
//! attribute keyed by the arguments, and **dog-pile protection** that holds
//! from one thread up to many processes.
//!
//! ```toml
//! [dependencies]
//! tankard = "0.1"   # memory and file regions, #[tankard::cached]
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```
//!
//! ```
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Two regions: long_term on disk, short_term in memory.
//!     let dir = std::env::temp_dir().join(format!("tankard-doc-{}", std::process::id()));
//!     let data_dir = dir.join("data").display().to_string();
//!     let config = tankard::Config::from_flat([
//!         ("cache.type", "file"),
//!         ("cache.data_dir", data_dir.as_str()),
//!         ("cache.regions", "short_term, long_term"),
//!         ("cache.short_term.type", "memory"),
//!         ("cache.short_term.expire", "20m"),
//!         ("cache.long_term.type", "file"),
//!         ("cache.long_term.expire", "24h"),
//!     ])?;
//!     let cache = tankard::CacheManager::new(config)?;
//!
//!     // Beaker's `@cache.region('long_term')`: the creator runs once, then hits.
//!     let hello = cache.region("long_term")?.namespace("views::hello");
//!     let page = hello
//!         .get_or_create("fetch_data", || async { "Hello world".to_string() })
//!         .await?;
//!     assert_eq!(*page, "Hello world");
//!
//!     std::fs::remove_dir_all(dir)?;
//!     Ok(())
//! }
//! ```
//!
//! Where to go next:
//!
//! - [`#[tankard::cached]`](cached): cache a function's results, keyed by
//!   its arguments (Beaker's `@cache.region` / `@cache.cache`).
//! - [`Cache`]: one namespace of a region: `get_or_create`, `put`,
//!   `remove`, `clear`, and what concurrent callers of one key see.
//! - [`web`] (feature `axum`): cache whole pages with a tower layer, and
//!   the manager as axum state.
//! - [`Region::invalidate_tag`]: hide every entry tagged by
//!   [`Cache::tags`], [`CreatorContext::add_tag`] or the attribute's
//!   `tags = […]`, in every process, with one write.
//! - [`blocking`]: the same API for sync code.
//! - [Configuration](#configuration) below: every option a region takes.
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
//! ## Configuration
//!
#![doc = include_str!("../docs/configuration.md")]
//!
//! ## Cargo features
//!
//! | feature | default | what it adds | what it costs |
//! |---|---|---|---|
//! | `memory` | ✓ | the in-process backend (typed values, no encoding) | quick_cache |
//! | `file` | ✓ | one file per key, `flock` creation locks | nothing extra |
//! | `macros` | ✓ | [`#[tankard::cached]`](cached) (turns on `blocking`) | a proc-macro crate on syn, which serde's derive already builds; inventory (no dependencies), for the regions `install` checks |
//! | `blocking` | with `macros` | [`blocking`]: the sync API, with or without a runtime | tokio's multi-thread scheduler code (no new crate) |
//! | `memcached` | | memcached regions (`type = ext:memcached`): several servers, rendezvous hashing | tokio's `net` and `io-util` (an own small client) |
//! | `redis` | | Redis and Redis Cluster regions, and the Redis backplane of the L1 tier | the `redis` crate |
//! | `redis-tls` | | `rediss://` URLs for `redis` (implies it) | rustls and ring |
//! | `dbm` | | LMDB regions (`type = dbm`): an environment per region, shared by the processes of a host | heed, and LMDB's C source compiled by `cc` |
//! | `postgres`, `mysql`, `sqlite` | | SQL regions (`type = ext:database`, the `url`'s scheme picks the engine; `database` turns on all three) | sqlx with that one driver (SQLite: its bundled C source, and `file` for its locks) |
//! | `axum` | | [`web`]: the page-caching tower layer and the manager as axum state | axum-core, http, tower-layer |
//!
//! The binary `tankard` (crate `tankard-cli`: `cargo install --path
//! crates/tankard-cli` in the repository) is built with every store.
// docs.rs (`[package.metadata.docs.rs]`) builds with `--cfg docsrs`: a
// nightly rustdoc then labels every feature-gated item with its feature.
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
mod tags;
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
pub use engine::CreatorContext;
pub use error::{Error, Result};
#[doc(hidden)]
pub use inspect::{EntryInfo, EntryState};
pub use manager::{CacheManager, global, install};
pub use namespace::Cache;
pub use region::{Invalidation, Region};
pub use stats::{Counter, Latencies, Latency, Stats};
pub use tags::{MAX_TAG_LEN, MAX_TAGS};

#[cfg(feature = "macros")]
#[cfg_attr(docsrs, doc(cfg(feature = "macros")))]
#[doc = include_str!("../docs/cached.md")]
pub use tankard_macros::cached;

/// The README's examples are tests too. They use the attribute, memory
/// regions and the page layer, so they are compiled with those features
/// (`cargo test -p tankard --doc --features axum`, as `scripts/test` runs).
#[cfg(all(doctest, feature = "macros", feature = "memory", feature = "axum"))]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

#[cfg(test)]
mod docs_tests {
    /// The rows of the configuration table in a Markdown text.
    fn table(text: &str) -> Vec<&str> {
        text.lines()
            .skip_while(|line| !line.starts_with("| key | meaning |"))
            .take_while(|line| line.starts_with('|'))
            .collect()
    }

    /// The crate docs carry the README's configuration table row for row,
    /// and it has a row for every option the parser accepts.
    #[test]
    fn the_configuration_tables_agree_and_name_every_option() {
        let readme = table(include_str!("../../../README.md"));
        let docs = table(include_str!("../docs/configuration.md"));
        assert!(readme.len() > 2, "no configuration table in README.md");
        assert_eq!(
            readme, docs,
            "README.md's configuration table and crates/tankard/docs/configuration.md's differ: \
             copy the README's"
        );
        // An unknown option's error lists every known one.
        let err = crate::Config::from_flat([("cache.qqqqqqqqqqqq", "1")])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let (_, options) = err
            .split_once("expected one of ")
            .unwrap_or_else(|| panic!("no option list in {err:?}"));
        let keys: Vec<&str> = readme
            .iter()
            .filter_map(|row| row.split('|').nth(1))
            .flat_map(|cell| cell.split(','))
            .map(|key| key.trim().trim_matches('`'))
            .collect();
        for option in options.split(", ") {
            assert!(
                keys.contains(&option),
                "option {option} has no row in README.md's configuration table"
            );
        }
    }
}
