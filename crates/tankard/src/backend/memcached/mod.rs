//! The memcached backend (`type = "ext:memcached"`, cargo feature
//! `memcached`): entries, generation counters and creation locks on one or
//! more memcached servers, `url = "host:port[;host:port…]"`.
//!
//! # What it owns
//!
//! - **Entries**, under their memcached key (below), with a server TTL of
//!   `expire + stale`, so a stale value is still there to be served while
//!   one caller regenerates it (Beaker's memcached backend sets the TTL to
//!   `expire`, so nothing stale survives).
//! - **Generation counters**: the region's generation (hard invalidation),
//!   its soft-invalidation time, and each namespace's generation (`clear`).
//!   Clearing is one `incr`; nothing is ever flushed, so other data on a
//!   shared server is never touched.
//! - **Creation locks**: `add` with an owner token and a lifetime (see
//!   "Creation lock").
//!
//! # Key layout
//!
//! The keys are the core's (see `key.rs`): the entry
//! `{prefix}{region}:{namespace}#{key}`, the counters `{prefix}{region}!gen`,
//! `{prefix}{region}!soft` and `{prefix}{region}:{namespace}!gen`, the lock
//! `{prefix}{region}:{namespace}!lock#{key}`, each replaced by
//! `{prefix}#{blake3 hex}` when longer than `key_length`. memcached
//! additionally refuses keys over 250 bytes and keys with spaces or control
//! characters, which namespaces and user keys may well contain: such a key
//! is stored as `{prefix}#{blake3 hex of the whole key}` (the same form,
//! so it can never equal an unhashed key), or `#{hex}` if the prefix is
//! itself unusable. The entry records its full key, so even a hash
//! collision would read as a miss, never as another key's value.
//!
//! Counter values are decimal text (what `incr` needs). A counter created by
//! a first `clear` starts at the current unix time in microseconds rather
//! than 1, so a counter that is evicted and created again never comes back
//! to a value that old entries carry. A counter holding anything else
//! (written by another program; `incr` refuses it) reads as missing, so
//! caching goes on, and the next bump restarts it the same way.
//!
//! # Entries over `max_entry_bytes`
//!
//! The `VALUE <key> <flags> <bytes>` header gives a value's length before
//! the value: a longer one is skipped, never read into memory, and the
//! lookup reports it as oversized (a miss, counted as a decode error). Up
//! to 16 MiB it is drained through the connection's 16 KiB read buffer, so
//! the connection stays pooled; beyond, draining would cost more than one
//! reconnect (and could overrun `timeout`), so the connection is closed.
//!
//! # Placement and failures
//!
//! Entries and locks are placed by rendezvous hashing of their memcached
//! key over the servers; a region's three kinds of counters are placed by
//! the region (prefix and name), so they sit together on one server. A
//! lookup is therefore one multi-key `get` per server involved (at most
//! two: the counters' and the entry's), sent in parallel — one round trip.
//!
//! Rendezvous hashing was chosen over a ketama ring: with a handful of
//! servers it is a few multiplications per key, needs no ring to build,
//! spreads keys evenly without virtual nodes, and removing a server moves
//! exactly the keys it held. The hash is FNV-1a plus a SplitMix64
//! finalizer, fixed here so that every process, whatever its Rust version,
//! places every key alike.
//!
//! A server that refuses, resets or times out is marked down for one
//! second; its keys go to the server with the next highest score, and the
//! failed operation is retried there within the same deadline, so a dead
//! node costs a call nothing beyond one refused connection. After the
//! second, the next operation tries it again. Two caveats come with any
//! memcached client that fails over: processes may briefly disagree on
//! which node is down, and a node that returns still holds what it held,
//! so an entry replaced or cleared elsewhere during its absence can
//! reappear until its TTL ends.
//!
//! Every operation is bounded by the region's `timeout` (default 2 s),
//! connection included (a `timeout` too long for the clock means no
//! bound, never a panic), and fails with a timeout error past it; with
//! `on_backend_error = "bypass"` the caller then gets the creator's value.
//!
//! # TTLs
//!
//! The server TTL is the entry's `expire + stale` in whole seconds rounded
//! up, plus one: memcached's clock ticks once a second, so an item given
//! `n` seconds may otherwise vanish almost a second early. Beyond 30 days
//! memcached reads the number as an absolute unix time, so longer TTLs are
//! sent as now + TTL (and as "no expiry" beyond 2038, where the protocol's
//! signed 32-bit field ends; the entry's own header still expires it).
//!
//! # Creation lock
//!
//! `add <lock key> <token>` with a lifetime of `lock_timeout` (rounded up
//! to whole seconds, plus the one-second tick): it succeeds for exactly one
//! caller while the key exists. The token (process id, counter, 128 random
//! bits) identifies the owner:
//!
//! - **Renewal**: while the creator runs, the owner extends the lifetime
//!   every `lock_timeout / 3` with `gets` + `cas` of its own token, which
//!   fails if anyone else took the lock meanwhile. A crashed owner stops
//!   renewing and its lock lapses after `lock_timeout`.
//! - **Where**: renewal and release go to the server the lock was taken
//!   on, not to wherever its key routes by then: a lock taken on a
//!   stand-in while its own server was down would otherwise be left
//!   behind there when that server returns mid-creation.
//! - **Release** is owner-checked: `gets`, compare the token, then
//!   `md <key> C<cas>` (memcached ≥ 1.6), a compare-and-delete that only
//!   deletes if the item is unchanged since the `gets`. memcached has no
//!   text-protocol compare-and-delete; on servers without `md` the lock is
//!   overwritten by a tombstone with `cas` (atomic and owner-checked) and
//!   the tombstone deleted. Either way a holder whose lock expired and was
//!   taken over cannot delete the new owner's lock.
//! - **A lock without expiry** cannot be Tankard's: something else left
//!   it (a `set` with exptime 0). The first waiter to see it gives it
//!   Tankard's lock lifetime (`mg … t` shows no TTL, then `touch`), so it
//!   lapses after `lock_timeout` instead of making every miss on its key
//!   wait `wait_timeout`, forever. Locks that do expire are never touched:
//!   waiters extending a crashed holder's lock would keep it alive.
//! - **Waiters** in other processes poll with `add`, with a jittered
//!   exponential back-off from 2 ms to 10 ms, and give up after
//!   `wait_timeout` (then the dog-pile engine runs the creator itself).
//!   memcached has no notifications, so polling it is; the short cap keeps
//!   a waiter at most 10 ms behind the holder's release, where
//!   dogpile.cache's memcached lock sleeps 100 ms and more between tries.
//!   The cost is bounded: about 130 (at most 200) `add`s a second per waiting
//!   process, because waiters inside one process share one poller (the
//!   single-flight map).
//!
//! # Client
//!
//! The `memcache` crate was considered first. Its 0.21 release offers an
//! async client only in its `exp` module, documented as experimental and
//! liable to change without notice; its default features pull in OpenSSL,
//! and even without them it brings `url`/`idna`, `r2d2` and `rand`; and its
//! router cannot skip a failed server. What this backend needs is ten
//! commands, so [`client`] implements them on tokio: a bounded pool of
//! connections per server, a deadline on every exchange, failure-aware
//! rendezvous hashing, and cancellation safety (a connection whose exchange
//! was interrupted is dropped, never reused). The feature adds no crate,
//! only tokio's `net` and `io-util`.
mod options;

#[cfg(feature = "memcached")]
mod client;
#[cfg(feature = "memcached")]
mod lock;
#[cfg(feature = "memcached")]
mod store;
#[cfg(feature = "memcached")]
pub(crate) use store::*;

/// The memcached store in the registry ([`super::STORES`]).
pub(crate) const STORE: super::Store = super::Store {
    kind: crate::options::BackendKind::Memcached,
    feature: Some("memcached"),
    reach: super::Reach::Network,
    check: |options| options::MemcachedOptions::read(options).map(drop),
    #[cfg(feature = "memcached")]
    open: Some(super::Opener::Shared(|options| {
        MemcachedBackend::open(options).map(|b| std::sync::Arc::new(b) as _)
    })),
    #[cfg(not(feature = "memcached"))]
    open: None,
};
