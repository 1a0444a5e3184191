//! The Redis and Redis Cluster backends (`ext:redis`, `ext:rediscluster`;
//! cargo feature `redis`).
//!
//! A region of this type owns, on the server: its entries, its namespaces'
//! generation counters, its own generation counter and soft-invalidation
//! time, and the creation locks of its keys. It never deletes anything it
//! does not own: `clear` and invalidation are one `INCR` or one `SET`, and
//! nothing here ever sends `FLUSHDB`.
//!
//! # Key layout
//!
//! With `T` = `{prefix}{region}:{namespace}` (namespace escaped as in
//! [`crate::key`]) and `R` = `{prefix}{region}`:
//!
//! ```text
//! {T}#<key>           an entry (the bytes of `entry`), PX = expire + stale
//! {T}!h#<blake3 hex>  an entry whose key made the whole key longer than key_length
//! {T}!gen             the namespace's generation (bumped on clear; a missing counter restarts at the current time in µs)
//! {T}!lock#<key>      the key's creation lock (SET NX PX lock_timeout); also
//!                     the name of the pub/sub channel its release is announced on
//! {R}!gen             the region's generation (bumped on hard invalidation, likewise)
//! {R}!soft            the region's soft-invalidation time, epoch ms
//! {R}!backplane       the pub/sub channel of the region's L1 evictions (see `backplane`)
//! ```
//!
//! The braces are Redis Cluster hash tags: only the part inside decides the
//! slot, so an entry, its lock (and lock channel) and its namespace
//! generation sit in one slot, on one node. Nothing needs them to be
//! *atomic* together, but it keeps a namespace's traffic on one node and
//! lets the lock's release script publish on a sharded channel, which
//! Redis only allows for the script's own slot.
//!
//! # One round trip per lookup
//!
//! `load` needs four values: the region generation and soft time, the
//! namespace generation, and the entry. On a single server it is one
//! pipeline: an `MGET` of the three counters and a `GETRANGE` of the
//! entry's first `max_entry_bytes` + 1 bytes, so a larger value (a foreign
//! one: this crate never writes one) is known as such without being read
//! whole. On a cluster the region's two keys live in their own slot (they
//! are shared by every namespace) and a pipeline must stay in one slot:
//! the `MGET`, which the cluster client splits by node, and the
//! `GETRANGE` go out at once, so a lookup waits for one round trip to each
//! of at most two nodes, concurrently. The alternatives were worse: a copy of the region
//! values in every namespace's slot would make an invalidation one write
//! per namespace (unbounded, and racy against namespaces created
//! meanwhile), and caching them in the process would let another process's
//! invalidation go unseen for a while.
//!
//! Reading the generations on every hit is what makes a `clear` or an
//! invalidation in one process visible to the very next call in every
//! other. Its price is a four-value reply where a plain `GET` has one,
//! which shows in the client's CPU per hit under heavy concurrency (see
//! `benches/redis.rs`). Server-assisted client-side caching
//! (`CLIENT TRACKING`) could serve the generations from memory instead,
//! but leaves a window after an invalidation in which other processes
//! still use the old generations; not done.
//!
//! # Expiry
//!
//! An entry's server TTL is its `expire` plus `stale`, so a value past its
//! expiry is still there to be served stale while one caller regenerates
//! it (Beaker's Redis backend loses it at expiry). Generation keys have no
//! TTL; run the server with `maxmemory-policy` `noeviction` or one of the
//! `volatile-*` policies so they are never evicted. If one is evicted
//! anyway, the next bump restarts it at the current time in microseconds,
//! past every value it held, so entries cleared before stay cleared.
//!
//! A counter that holds something other than a whole number (written by
//! another tool, or damaged) is read like a missing one, so caching goes
//! on (a warning says so, at most once a minute), and the next bump
//! restarts it the same way.
//!
//! # Connections and failures
//!
//! The connection opens on first use (see `conn`), reconnects by itself,
//! and every operation is bounded by the region's `timeout`. A down or hung
//! server therefore makes calls fail fast, and with
//! `on_backend_error = bypass` (the default) each call runs its creator and
//! counts a backend error; once the server answers again the cache is used
//! again, without rebuilding the manager. The connection's driver tasks
//! run on the tokio runtime of the first call, so a manager should be used
//! from one runtime (as an app does).
//!
//! # URLs
//!
//! `ext:redis` takes one URL: `redis://[user:password@]host[:port][/db]`,
//! `rediss://…` (TLS), `redis+unix:///path` or `unix:///path`.
//! `ext:rediscluster` takes comma-separated seed URLs; the client discovers
//! the other nodes. TLS needs the cargo feature `redis-tls` (rustls with
//! the ring provider), which is kept out of `redis` so that plain-TCP users
//! compile no TLS stack. Pub/sub wake-ups use RESP3, so the server must be
//! Redis 6 or later (7 or later for a cluster, for sharded pub/sub).
//!
//! `backplane = redis://…` on a region of any type takes the same URLs:
//! one URL is one server, comma-separated URLs a cluster's seeds.
pub(crate) mod options;

#[cfg(feature = "redis")]
mod backplane;
#[cfg(feature = "redis")]
mod conn;
#[cfg(feature = "redis")]
mod lock;
#[cfg(feature = "redis")]
mod store;
#[cfg(feature = "redis")]
pub(crate) use store::*;

/// The Redis store in the registry ([`super::STORES`]).
pub(crate) const STORE: super::Store = super::Store {
    kind: crate::options::BackendKind::Redis,
    feature: Some("redis"),
    reach: super::Reach::Network,
    check: |options| options::RedisOptions::read(options).map(drop),
    #[cfg(feature = "redis")]
    open: Some(super::Opener::Shared(store::open)),
    #[cfg(not(feature = "redis"))]
    open: None,
};

/// The Redis Cluster store in the registry: the same code, its URL a list
/// of seeds.
pub(crate) const CLUSTER: super::Store = super::Store {
    kind: crate::options::BackendKind::RedisCluster,
    ..STORE
};
