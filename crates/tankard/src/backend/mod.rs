//! Backends: where entries live. The memory backend stores typed values
//! as they are; every other backend stores the encoded bytes of
//! [`entry`](crate::entry) behind the [`Backend`] trait.
//!
//! A backend owns three things: entries, the generation counters that make
//! `clear` and invalidation one write, and (through
//! [`Backend::creation_lock`]) the cross-process creation lock. Reading an
//! entry returns the current generations in the same round trip, so a
//! lookup costs one round trip on every backend. Tag stamps are entries
//! of a reserved namespace, read and written through the trait's default
//! methods ([`Backend::load_tag_stamps`], [`Backend::store_tag_stamp`]):
//! a store has tags without code of its own.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::lock::CreationLock;
use crate::clock::Clock;
use crate::entry::Generations;
use crate::error::{ConfigError, Error, Result};
use crate::key;
use crate::options::{BackendKind, RegionOptions, option_key};

/// Where a server's generation counter starts when it is missing (never
/// set, or evicted by a server that evicts): the wall clock in
/// microseconds. A counter moves on by one a `clear`, and a `clear` is a
/// round trip far longer than a microsecond, so a counter started anew
/// lands past every value it held before, and the entries stamped with
/// those stay invisible. (The coarse millisecond clock could hand out the
/// very value the counter started at a few milliseconds earlier.)
#[cfg(any(
    feature = "memcached",
    feature = "redis",
    feature = "dbm",
    feature = "postgres",
    feature = "mysql",
    feature = "sqlite"
))]
pub(crate) fn generation_start() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_micros() as u64)
}

pub(crate) mod address;
// Used by the L1 tier, which the `memory` feature builds.
#[cfg_attr(not(all(feature = "redis", feature = "memory")), allow(dead_code))]
pub(crate) mod backplane;
// Built whatever the features, like the backends it will serve: its code
// does not depend on any store.
#[cfg_attr(not(any(feature = "memcached", feature = "redis")), allow(dead_code))]
pub(crate) mod breaker;
pub(crate) mod database;
pub(crate) mod dbm;
pub(crate) mod file;
// `flock` stripes: the creation locks of every store on a local filesystem.
#[cfg(any(feature = "file", feature = "dbm"))]
pub(crate) mod flock;
pub(crate) mod lock;
pub(crate) mod memcached;
pub(crate) mod memory;
mod null;
pub(crate) mod redis;

/// Every store Tankard has, one line each. A store's folder declares it
/// (`STORE`) and is compiled whatever the features: its option rules are
/// always there, so a typo in `url` reads the same in every build, and
/// only its opening needs its cargo feature. Adding a store touches its
/// folder, this list and the config's vocabulary of `type` names.
const STORES: &[Store] = &[
    null::STORE,
    memory::STORE,
    file::STORE,
    dbm::STORE,
    memcached::STORE,
    redis::STORE,
    redis::CLUSTER,
    database::STORE,
];

/// One store: the `type`s it serves, what it can do, how it checks its
/// options and how it opens.
pub(crate) struct Store {
    /// The `type` it serves.
    pub(crate) kind: BackendKind,
    /// The cargo feature that builds it; `None`: always built.
    pub(crate) feature: Option<&'static str>,
    /// What its entries and creation lock reach.
    pub(crate) reach: Reach,
    /// Reads its own options out of a region's (a `url`, a `data_dir`) and
    /// says what is wrong with them, with or without its feature.
    pub(crate) check: fn(&RegionOptions) -> std::result::Result<(), OptionProblem>,
    /// How a region opens it; `None` when the build lacks its feature.
    pub(crate) open: Option<Opener>,
}

/// How a region opens its store.
#[derive(Clone, Copy)]
// Each variant is built by a store that needs its feature, but `null`.
#[cfg_attr(
    not(all(
        feature = "memory",
        any(feature = "file", feature = "memcached", feature = "redis")
    )),
    allow(dead_code)
)]
pub(crate) enum Opener {
    /// There is nothing to open: the region keeps its entries in a memory
    /// tier of its own.
    Memory,
    /// There is nothing to open, and nothing is kept (`null`).
    Nothing,
    /// A shared store of encoded entries, opened from the region's options
    /// (which its `check` accepted). Connects to nothing yet.
    Shared(fn(&RegionOptions) -> Result<Arc<dyn Backend>>),
}

/// What a store's entries, and so its creation lock, reach. Each store
/// declares it; from it follow the `lock` modes a region may choose, whether
/// it may have an L1 tier, and whether it comes behind a circuit breaker,
/// so nothing branches on a store's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reach {
    /// This process only (`memory`, `null`): `lock = auto` is the
    /// in-process single-flight, and neither `l1` nor `lock = distributed`
    /// means anything.
    Process,
    /// The processes of one host (`file`): `flock` stripes serve `lock =
    /// file` and `auto`; `distributed` is refused.
    Host,
    /// Every process that reaches its server: its lock serves `lock =
    /// distributed` and `auto`, and a breaker stands in front of it.
    Network,
}

/// What a store found wrong in its options. The config parser names the
/// key (the region's own, or the global one it inherited), so a store
/// names only the option.
#[derive(Debug)]
pub(crate) enum OptionProblem {
    /// A required option is missing; `message` says what to set.
    Missing {
        option: &'static str,
        message: String,
    },
    /// An option's value does not fit the store.
    Bad {
        option: &'static str,
        value: String,
        problem: String,
        expected: &'static str,
    },
}

impl OptionProblem {
    /// The config error for a region's options built elsewhere than in the
    /// parser, which has said so already for those it built.
    pub(crate) fn for_region(self, options: &RegionOptions) -> Error {
        self.into_error(|option| option_key(options, option))
    }

    /// The config error, with `key` naming each option's key.
    pub(crate) fn into_error(self, key: impl FnOnce(&str) -> String) -> Error {
        Error::config(match self {
            OptionProblem::Missing { option, message } => ConfigError::Missing {
                key: key(option),
                message,
            },
            OptionProblem::Bad {
                option,
                value,
                problem,
                expected,
            } => ConfigError::BadValue {
                key: key(option),
                value,
                problem,
                expected: expected.to_owned(),
            },
        })
    }
}

/// The store that serves a `type`: every type has one, built or not,
/// except those Tankard does not have yet (`database`).
pub(crate) fn store(kind: BackendKind) -> Option<&'static Store> {
    STORES.iter().find(|store| store.kind == kind)
}

/// A region's store, opened.
pub(crate) struct Opened {
    /// What the store reaches.
    pub(crate) reach: Reach,
    /// The shared store, if the region has one.
    pub(crate) shared: Option<Arc<dyn Backend>>,
    /// Whether the region keeps its entries in a memory tier of its own
    /// (`memory`), rather than in a shared store or nowhere.
    pub(crate) memory: bool,
}

/// Opens the store of a region: an error when its type is not built or
/// its options are wrong (the config has said so already, unless the
/// options were built by hand). A network store comes behind its breaker,
/// which reads `clock`.
pub(crate) fn open(options: &RegionOptions, clock: &Clock) -> Result<Opened> {
    let Some(store) = store(options.backend) else {
        return Err(Error::config(ConfigError::BadValue {
            key: option_key(options, "type"),
            value: options.backend.to_string(),
            problem: "is not built in this version of tankard".to_owned(),
            expected: types(|_| true),
        }));
    };
    (store.check)(options).map_err(|problem| problem.for_region(options))?;
    match store.open {
        None => Err(Error::config(ConfigError::FeatureMissing {
            key: option_key(options, "type"),
            value: options.backend.to_string(),
            feature: store.feature.unwrap_or_default(),
        })),
        Some(Opener::Memory | Opener::Nothing) => Ok(Opened {
            reach: store.reach,
            shared: None,
            memory: matches!(store.open, Some(Opener::Memory)),
        }),
        Some(Opener::Shared(open)) => {
            let opened = open(options)?;
            Ok(Opened {
                reach: store.reach,
                shared: Some(match store.reach {
                    Reach::Network => breaker::guard(opened, options, clock.clone()),
                    Reach::Process | Reach::Host => opened,
                }),
                memory: false,
            })
        }
    }
}

/// The `type`s of the stores `keep` picks, as an error's expectation
/// ("one of memory, file, …").
pub(crate) fn types(keep: impl Fn(&Store) -> bool) -> String {
    let names: Vec<&str> = STORES
        .iter()
        .filter(|store| keep(store))
        .map(|store| store.kind.as_str())
        .collect();
    format!("one of {}", names.join(", "))
}

/// Opens the backplane a region's `backplane` option asks for, with the
/// region's store at hand (`auto` uses the store's own, if it has one).
/// `Ok(None)`: the region has no backplane.
pub(crate) fn open_backplane(
    options: &RegionOptions,
    store: Option<&Arc<dyn Backend>>,
) -> Result<Option<Arc<dyn backplane::Backplane>>> {
    use crate::options::BackplaneSetting;
    match &options.backplane {
        BackplaneSetting::None => Ok(None),
        BackplaneSetting::Auto => Ok(store.and_then(|store| store.backplane())),
        #[cfg(feature = "redis")]
        BackplaneSetting::Redis(url) => redis::open_backplane(url, options).map(Some),
        #[cfg(not(feature = "redis"))]
        BackplaneSetting::Redis(_) => Err(crate::error::Error::config(
            crate::error::ConfigError::FeatureMissing {
                key: crate::options::option_key(options, "backplane"),
                value: "redis://…".to_owned(),
                feature: "redis",
            },
        )),
        #[allow(unreachable_patterns)]
        _ => Ok(None),
    }
}

/// The keys of one region, computed once.
#[derive(Debug)]
pub(crate) struct RegionScope {
    pub(crate) prefix: String,
    pub(crate) region: String,
    pub(crate) key_length: usize,
    #[cfg_attr(
        not(any(feature = "file", feature = "memcached", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) generation_key: String,
    #[cfg_attr(not(any(feature = "redis", feature = "memcached")), allow(dead_code))]
    pub(crate) soft_key: String,
}

impl RegionScope {
    pub(crate) fn new(options: &RegionOptions) -> RegionScope {
        RegionScope {
            generation_key: key::region_generation_key(&options.prefix, &options.name),
            soft_key: key::region_soft_key(&options.prefix, &options.name),
            prefix: options.prefix.clone(),
            region: options.name.clone(),
            key_length: options.key_length,
        }
    }
}

impl RegionScope {
    /// The region's reserved namespace of tag stamps.
    pub(crate) fn tag_scope(self: &Arc<Self>) -> Scope {
        Scope {
            generation_key: key::tags_generation_key(&self.prefix, &self.region),
            namespace: key::TAGS_NAMESPACE.to_owned(),
            region: self.clone(),
        }
    }
}

/// The keys of one namespace in a region, computed once per namespace.
#[derive(Debug)]
pub(crate) struct Scope {
    pub(crate) region: Arc<RegionScope>,
    pub(crate) namespace: String,
    #[cfg_attr(
        not(any(feature = "file", feature = "memcached", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) generation_key: String,
}

impl Scope {
    pub(crate) fn new(region: Arc<RegionScope>, namespace: &str) -> Scope {
        Scope {
            generation_key: key::namespace_generation_key(
                &region.prefix,
                &region.region,
                namespace,
            ),
            namespace: namespace.to_owned(),
            region,
        }
    }

    /// Where one key of this namespace lives.
    pub(crate) fn locate<'a>(&'a self, key: &'a str) -> Location<'a> {
        Location {
            scope: self,
            key,
            storage_key: key::entry_key(
                &self.region.prefix,
                &self.region.region,
                &self.namespace,
                key,
                self.region.key_length,
            ),
        }
    }

    /// Where a tag's stamp lives, in a region's [tag
    /// scope](RegionScope::tag_scope).
    pub(crate) fn locate_tag<'a>(&'a self, tag: &'a str) -> Location<'a> {
        Location {
            scope: self,
            key: tag,
            storage_key: key::tag_key(
                &self.region.prefix,
                &self.region.region,
                tag,
                self.region.key_length,
            ),
        }
    }

    pub(crate) fn lock_key(&self, key: &str) -> String {
        key::lock_key(
            &self.region.prefix,
            &self.region.region,
            &self.namespace,
            key,
            self.region.key_length,
        )
    }
}

/// One entry's address: its namespace and its storage key.
#[derive(Debug)]
pub(crate) struct Location<'a> {
    #[cfg_attr(
        not(any(feature = "file", feature = "memcached", feature = "redis")),
        allow(dead_code)
    )]
    pub(crate) scope: &'a Scope,
    /// The caller's key, before prefixing and hashing.
    #[allow(dead_code)]
    pub(crate) key: &'a str,
    /// The full key (DESIGN §6), hashed when longer than `key_length`.
    pub(crate) storage_key: String,
}

/// An entry's bytes (if any) and the generations current at read time.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub(crate) generations: Generations,
    pub(crate) bytes: Option<Vec<u8>>,
    /// The size of an entry found larger than `max_entry_bytes`, which
    /// the backend did not read (`bytes` is then `None`): a miss, counted
    /// as a decode error.
    pub(crate) oversized: Option<u64>,
}

/// How much a backend holds, where it can tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Usage {
    /// Stored entries, if the backend can count them.
    pub entries: Option<u64>,
    /// Stored bytes, if the backend can count them.
    pub bytes: Option<u64>,
    /// Temporary files that writers left when they crashed mid-write
    /// (file backend; `None` elsewhere). `purge_expired` removes those
    /// old enough that no live writer can own them.
    pub temp_files: Option<u64>,
    /// The bytes those temporary files hold.
    pub temp_bytes: Option<u64>,
}

/// What [`Region::purge_expired`](crate::Region::purge_expired) removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Purged {
    /// Entries that could no longer be served, even as stale (and, on the
    /// file backend, damaged or oversized files at an entry's path).
    pub entries: u64,
    /// Temporary files left by writers that crashed mid-write (file
    /// backend).
    pub temp_files: u64,
    /// The bytes those temporary files held.
    pub temp_bytes: u64,
}

/// A store of encoded entries shared between processes.
#[async_trait]
pub(crate) trait Backend: Send + Sync + fmt::Debug + 'static {
    /// The backend's name as `tankard stats` shows it.
    fn name(&self) -> &'static str;

    /// Reads an entry and the current generations, in one round trip where
    /// the backend allows it.
    async fn load(&self, at: &Location<'_>) -> Result<Loaded>;

    /// Reads several entries of one namespace and the current generations,
    /// in one round trip per server where the store allows it (Redis: one
    /// pipeline; memcached: one multi-key `get` per server). `at` is not
    /// empty, and every location in it is in the same namespace.
    async fn load_many(&self, at: &[Location<'_>]) -> Result<Vec<Loaded>> {
        futures_util::future::try_join_all(at.iter().map(|at| self.load(at))).await
    }

    /// Reads only the current generations (before a write with no read).
    async fn generations(&self, scope: &Scope) -> Result<Generations>;

    /// Writes an entry, to be kept for `ttl` (`None`: until removed).
    async fn store(&self, at: &Location<'_>, entry: Vec<u8>, ttl: Option<Duration>) -> Result<()>;

    /// Removes an entry; `true` if there was one.
    async fn remove(&self, at: &Location<'_>) -> Result<bool>;

    /// Makes every entry of the namespace unreachable (`clear`).
    async fn bump_namespace(&self, scope: &Scope) -> Result<()>;

    /// Makes every entry of the region unreachable (hard invalidation).
    async fn bump_region(&self, region: &RegionScope) -> Result<()>;

    /// Marks every entry of the region created at or before `at_ms` stale.
    async fn soft_invalidate(&self, region: &RegionScope, at_ms: u64) -> Result<()>;

    /// The lock that guards creation across processes.
    fn creation_lock(&self) -> Arc<dyn CreationLock>;

    /// The backplane this store can carry for its region's L1 (Redis:
    /// pub/sub on the same server), if any.
    fn backplane(&self) -> Option<Arc<dyn backplane::Backplane>> {
        None
    }

    /// Removes entries that can no longer be served, and any other
    /// garbage the backend can leave behind; says what it removed.
    async fn purge_expired(&self, _now_ms: u64) -> Result<Purged> {
        Ok(Purged::default())
    }

    /// [`Backend::purge_expired`], telling `progress` what it has removed
    /// so far after each batch, for a store that purges in batches (SQL).
    async fn purge_expired_with(
        &self,
        now_ms: u64,
        _progress: &(dyn for<'p> Fn(&'p Purged) + Send + Sync),
    ) -> Result<Purged> {
        self.purge_expired(now_ms).await
    }

    /// How much the backend holds.
    async fn usage(&self) -> Result<Usage> {
        Ok(Usage::default())
    }

    /// The state of the circuit breaker in front of it, if it has one.
    fn breaker(&self) -> Option<BreakerState> {
        None
    }

    /// Reads the stamp records of several tags of one region (their
    /// locations from [`RegionScope::tag_scope`]), in one round trip: by
    /// default one [`load_many`](Backend::load_many) in the region's
    /// reserved tags namespace, so every store has tags with no code of
    /// its own; a store may answer faster.
    async fn load_tag_stamps(&self, at: &[Location<'_>]) -> Result<Vec<Option<Vec<u8>>>> {
        let loaded = self.load_many(at).await?;
        Ok(loaded.into_iter().map(|loaded| loaded.bytes).collect())
    }

    /// Writes one tag's stamp record, kept until it is overwritten: by
    /// default a [`store`](Backend::store) without a TTL.
    async fn store_tag_stamp(&self, at: &Location<'_>, record: Vec<u8>) -> Result<()> {
        self.store(at, record, None).await
    }
}

/// The state of the circuit breaker in front of a region's network store
/// ([`Region::breaker`](crate::Region::breaker); the `retry_after` option).
///
/// ```
/// let state = tankard::BreakerState::Closed;
/// assert_eq!(state.as_str(), "closed");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BreakerState {
    /// Every operation goes to the server.
    Closed,
    /// The server could not be reached: operations skip it until
    /// `retry_after` has passed.
    Open,
    /// `retry_after` has passed: the next operation (or the one under way)
    /// tries the server while the others keep skipping it.
    Probing,
}

impl BreakerState {
    /// `closed`, `open` or `probing`.
    ///
    /// ```
    /// assert_eq!(tankard::BreakerState::Probing.as_str(), "probing");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::Probing => "probing",
        }
    }
}
