//! The implementation of the redis store, built with its cargo feature.

use std::fmt;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::cluster::ClusterClientBuilder;
use ::redis::{IntoConnectionInfo, ProtocolVersion, PushInfo, RedisError, Script, Value, cmd};
use async_trait::async_trait;

use super::backplane::{RedisBackplane, Source};
use super::conn::{Link, Target, Wakeups};
use super::lock::RedisLock;
use crate::backend::lock::CreationLock;
use crate::backend::{Backend, Loaded, Location, RegionScope, Scope, generation_start};
use crate::entry::Generations;
use crate::error::{ConfigError, Error, Result};
use crate::key;
use crate::options::RegionOptions;
use crate::options::option_key;

/// Bumps a generation counter. A missing counter (never set, or evicted by
/// a server that evicts) starts at `ARGV[1]`, [`generation_start`]: never
/// at 1, so it cannot come back to a value an old entry carries. So does a
/// counter `INCR` refuses (not a whole number, or of another type) or
/// that went below zero: whatever wrote it, the restart repairs it.
/// `KEYS[1]` counter; `ARGV[1]` the restart value.
static BUMP_GENERATION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"if redis.call('exists', KEYS[1]) == 1 then
  local bumped = redis.pcall('incr', KEYS[1])
  if type(bumped) == 'number' and bumped > 0 then
    return bumped
  end
end
redis.call('set', KEYS[1], ARGV[1])
return tonumber(ARGV[1])",
    )
});

/// Raises the soft-invalidation time, never lowers it (two processes
/// invalidating at once must not move it back). A time that is not a
/// number counts as 0, so the invalidation overwrites it.
/// `KEYS[1]` soft key; `ARGV[1]` epoch ms.
static SOFT_INVALIDATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"local current = tonumber(redis.call('get', KEYS[1]) or '0') or 0
if tonumber(ARGV[1]) > current then
  redis.call('set', KEYS[1], ARGV[1])
end
return 1",
    )
});

/// A region stored in Redis or a Redis Cluster.
pub(crate) struct RedisBackend {
    link: Arc<Link>,
    lock: Arc<RedisLock>,
    /// Evictions for the region's L1, on the same server (same link for
    /// publishing).
    pub(super) backplane: Arc<RedisBackplane>,
    /// The region's own keys (`{R}!gen`, `{R}!soft`) and `key_length`: one
    /// backend serves one region.
    region_gen_key: String,
    region_soft_key: String,
    key_length: usize,
    /// `max_entry_bytes`: the most a lookup reads of an entry.
    max_entry_bytes: u64,
    /// When a damaged counter was last warned about (epoch ms).
    last_damage_warning_ms: AtomicU64,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("link", &self.link)
            .field("region_gen_key", &self.region_gen_key)
            .finish_non_exhaustive()
    }
}

/// Opens a backplane on its own Redis server (`backplane = redis://…`),
/// for a region whose store is not that server (memcached, file, or
/// another Redis). One URL is one server; comma-separated URLs are a
/// cluster's seeds (sharded pub/sub). No connection is made here: the
/// first publish or listen connects.
pub(crate) fn open_backplane(
    url: &str,
    options: &RegionOptions,
) -> Result<Arc<dyn crate::backend::backplane::Backplane>> {
    let key = option_key(options, "backplane");
    let seeds: Vec<String> = url.split(',').map(|seed| seed.trim().to_owned()).collect();
    let cluster = seeds.len() > 1;
    let endpoint = Endpoint::parse(url, &seeds, cluster, options.timeout, &key)?;
    let name = if cluster { "redis-cluster" } else { "redis" };
    let (target, source) = endpoint.into_parts(None, url, &key)?;
    // Its own link: lock wake-ups never travel on a backplane's server.
    let link = Arc::new(Link::new(name, target, options.timeout, Arc::default()));
    Ok(Arc::new(RedisBackplane::new(link, source, &options.prefix)))
}

/// The error for a URL the client refuses, naming the config `key` it
/// came from (`url`, or `backplane`).
fn bad_url(key: &str, url: &str, err: &RedisError) -> Error {
    let tls = url
        .split(',')
        .any(|seed| seed.trim().to_ascii_lowercase().starts_with("rediss://"));
    let (problem, expected) = if tls && !cfg!(feature = "redis-tls") {
        (
            "uses TLS, which needs the cargo feature \"redis-tls\" of tankard".to_owned(),
            "redis://… or `tankard = { features = [\"redis-tls\"] }`",
        )
    } else {
        (
            format!("is not usable by the redis client: {err}"),
            "redis://[user:password@]host[:port][/db] (or rediss://, redis+unix://, unix://)",
        )
    };
    Error::config(ConfigError::BadValue {
        key: key.to_owned(),
        value: super::options::redact(url),
        problem,
        expected: expected.to_owned(),
    })
}

/// A parsed URL: one server's client, or a cluster's seeds. The region's
/// link and its backplane's subscriptions both open from it.
enum Endpoint {
    Single(::redis::Client),
    Cluster {
        seeds: Vec<::redis::ConnectionInfo>,
        timeout: Duration,
    },
}

impl Endpoint {
    /// Parses `urls` (one server's, or a cluster's seeds), as the config
    /// wrote them in `url`; errors name `key`.
    fn parse(
        url: &str,
        urls: &[String],
        cluster: bool,
        timeout: Duration,
        key: &str,
    ) -> Result<Endpoint> {
        #[cfg(feature = "redis-tls")]
        {
            // rustls needs a process-wide crypto provider; an application
            // that installed its own keeps it.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        if cluster {
            let seeds = urls
                .iter()
                .map(|seed| seed.as_str().into_connection_info())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|err| bad_url(key, url, &err))?;
            return Ok(Endpoint::Cluster { seeds, timeout });
        }
        let info = urls
            .first()
            .map_or("", String::as_str)
            .into_connection_info()
            .map_err(|err| bad_url(key, url, &err))?;
        // RESP3 lets lock waiters receive pub/sub messages on the same
        // multiplexed connection as the commands, and the backplane read
        // its subscription's messages as pushes.
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        let client = ::redis::Client::open(info.set_redis_settings(settings))
            .map_err(|err| bad_url(key, url, &err))?;
        Ok(Endpoint::Single(client))
    }

    /// The link's target (its connections' pushes going to `wakeups`, if
    /// any) and where the backplane subscribes. Building the cluster
    /// client checks the seeds together.
    fn into_parts(
        self,
        wakeups: Option<Arc<Wakeups>>,
        url: &str,
        key: &str,
    ) -> Result<(Target, Source)> {
        match self {
            Endpoint::Single(client) => {
                Ok((Target::Single(client.clone()), Source::Single(client)))
            }
            Endpoint::Cluster { seeds, timeout } => {
                let mut builder = cluster_builder(&seeds, timeout);
                if let Some(push) = wakeups {
                    builder = builder.push_sender(move |info: PushInfo| {
                        push.on_push(info);
                        Ok::<(), RedisError>(())
                    });
                }
                let client = builder.build().map_err(|err| bad_url(key, url, &err))?;
                Ok((Target::Cluster(client), Source::Cluster(seeds)))
            }
        }
    }
}

/// A cluster client's settings, shared by the region's connection and its
/// backplane's subscriptions: RESP3 (pushes), and the region's `timeout`
/// on connecting and on every request.
pub(super) fn cluster_builder(
    seeds: &[::redis::ConnectionInfo],
    timeout: Duration,
) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(ProtocolVersion::RESP3)
        .connection_timeout(timeout)
        .response_timeout(timeout)
}

/// Opens a Redis or Redis Cluster region. No connection is made here: the
/// first operation connects.
pub(crate) fn open(options: &RegionOptions) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(open_backend(options)?))
}

pub(super) fn open_backend(options: &RegionOptions) -> Result<RedisBackend> {
    let own = super::options::RedisOptions::read(options)
        .map_err(|problem| problem.for_region(options))?;
    let key = option_key(options, "url");
    let cluster = own.cluster;
    let url = options.url.as_deref().unwrap_or_default();
    let wakeups = Arc::new(Wakeups::default());
    let endpoint = Endpoint::parse(url, &own.urls, cluster, options.timeout, &key)?;
    let (target, source) = endpoint.into_parts(Some(wakeups.clone()), url, &key)?;
    let name = if cluster { "redis-cluster" } else { "redis" };
    let link = Arc::new(Link::new(name, target, options.timeout, wakeups));
    let region = RegionScope::new(options);
    Ok(RedisBackend {
        lock: Arc::new(RedisLock::new(
            link.clone(),
            options.prefix.clone(),
            options.lock_timeout,
        )),
        backplane: Arc::new(RedisBackplane::new(link.clone(), source, &options.prefix)),
        link,
        region_gen_key: tagged(&region.generation_key, "!gen"),
        region_soft_key: tagged(&region.soft_key, "!soft"),
        key_length: options.key_length,
        max_entry_bytes: options.max_entry_bytes,
        last_damage_warning_ms: AtomicU64::new(0),
    })
}

/// A core bookkeeping key (`key.rs`) with the part before `suffix` in a
/// hash tag: `{prefix}{region}!gen` becomes `{{prefix}{region}}!gen`.
pub(super) fn tagged(core_key: &str, suffix: &str) -> String {
    match core_key.strip_suffix(suffix) {
        Some(base) => format!("{{{base}}}{suffix}"),
        None => format!("{{{core_key}}}{suffix}"),
    }
}

/// `{prefix}{region}:{namespace}` in braces (the namespace escaped as in
/// `key.rs`): the hash tag of a namespace.
fn namespace_tag(scope: &Scope) -> String {
    let base = scope
        .generation_key
        .strip_suffix("!gen")
        .unwrap_or(&scope.generation_key);
    format!("{{{base}}}")
}

fn namespace_gen_key(tag: &str) -> String {
    format!("{tag}!gen")
}

/// The entry's key; hashed (inside its namespace's slot) when longer than
/// `key_length`.
fn entry_key(tag: &str, key: &str, key_length: usize) -> String {
    let full = format!("{tag}#{key}");
    if full.len() <= key_length {
        return full;
    }
    key::limit_length(&format!("{tag}!h"), full, key_length)
}

/// The largest TTL sent with an entry. Redis refuses an expiry past its
/// clock's range; a longer one is stored without a TTL (it would outlive
/// the server anyway).
const MAX_TTL_MS: u64 = 1 << 52;

/// What a lookup's `GETRANGE key 0 max_entry_bytes` answered.
#[derive(Debug, PartialEq, Eq)]
enum EntryReply {
    Missing,
    Bytes(Vec<u8>),
    /// More than `max_entry_bytes` bytes: the entry is larger, and was
    /// not read whole.
    Oversized,
}

impl EntryReply {
    /// Reads GETRANGE's reply; a server error other than WRONGTYPE (an ACL
    /// that forbids the command, say) is returned as such.
    fn new(
        reply: Option<Value>,
        max_entry_bytes: u64,
    ) -> std::result::Result<EntryReply, RedisError> {
        Ok(match reply {
            Some(Value::BulkString(bytes)) if !bytes.is_empty() => {
                if bytes.len() as u64 > max_entry_bytes {
                    EntryReply::Oversized
                } else {
                    EntryReply::Bytes(bytes)
                }
            }
            // A key of another type where an entry belongs: not an entry,
            // as MGET would have said with a nil.
            Some(Value::ServerError(err)) if err.code() != "WRONGTYPE" => return Err(err.into()),
            // A missing key reads as an empty string.
            _ => EntryReply::Missing,
        })
    }
}

impl RedisBackend {
    /// Parses a generation counter; `0` when absent. A damaged one (not a
    /// whole number) reads as absent too: one bad key must not switch the
    /// region's caching off, and the next bump repairs it.
    fn generation(&self, key: &str, value: Option<Vec<u8>>) -> u64 {
        let Some(bytes) = value else { return 0 };
        if let Some(n) = std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
        {
            return n;
        }
        let now_ms = generation_start() / 1000;
        let last = self.last_damage_warning_ms.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) >= 60_000
            && self
                .last_damage_warning_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                "key {key} holds {:?}, not a generation counter; read as missing until the \
                 next clear or invalidation of its scope restarts it",
                String::from_utf8_lossy(&bytes[..bytes.len().min(40)])
            );
        }
        0
    }

    /// The `MGET` of the three counters, the namespace's being `ns_gen_key`.
    fn generations_command(&self, ns_gen_key: &str) -> ::redis::Cmd {
        let mut mget = cmd("MGET");
        mget.arg(&self.region_gen_key)
            .arg(&self.region_soft_key)
            .arg(ns_gen_key);
        mget
    }

    /// Parses the three counters of [`Self::generations_command`]'s reply.
    fn parse_generations(
        &self,
        ns_gen_key: &str,
        values: Vec<Option<Vec<u8>>>,
    ) -> Result<Generations> {
        if values.len() != 3 {
            return Err(Error::backend(
                self.link.name,
                format!("MGET of 3 keys returned {} values", values.len()),
            ));
        }
        let mut values = values.into_iter();
        let mut next = || values.next().flatten();
        Ok(Generations {
            region: self.generation(&self.region_gen_key, next()),
            soft_before_ms: self.generation(&self.region_soft_key, next()),
            namespace: self.generation(ns_gen_key, next()),
        })
    }

    /// Reads the three generations and at most `max_entry_bytes` + 1 bytes
    /// of the entry at `key`, in one round trip (see the module docs).
    async fn read_entries(
        &self,
        ns_gen_key: &str,
        keys: &[String],
    ) -> Result<(Generations, Vec<EntryReply>)> {
        let mget = self.generations_command(ns_gen_key);
        // GETRANGE's end is inclusive and a signed 64-bit number.
        let last = self.max_entry_bytes.min(i64::MAX as u64);
        let mut entries = ::redis::pipe();
        entries.ignore_errors();
        let (counters, replies) = if self.link.is_cluster() {
            // The counters live in the region's slot, the entries in the
            // namespace's: two round trips at once.
            for key in keys {
                entries.add_command(cmd("GETRANGE").arg(key).arg(0).arg(last).clone());
            }
            let (counters, replies) = tokio::join!(
                self.link.query::<Vec<Option<Vec<u8>>>>("read", &mget),
                self.link.pipeline("read", &entries)
            );
            (counters?, replies?)
        } else {
            entries.add_command(mget);
            for key in keys {
                entries.add_command(cmd("GETRANGE").arg(key).arg(0).arg(last).clone());
            }
            let mut replies = self.link.pipeline("read", &entries).await?;
            let rest = replies.split_off(1.min(replies.len()));
            let counters = match replies.pop() {
                Some(Value::ServerError(err)) => return Err(self.link.error("read", err.into())),
                Some(counters) => ::redis::from_redis_value(counters).map_err(|err| {
                    Error::backend(self.link.name, format!("read: MGET answered {err}"))
                })?,
                None => Vec::new(),
            };
            (counters, rest)
        };
        let generations = self.parse_generations(ns_gen_key, counters)?;
        let mut replies = replies.into_iter();
        let entries = keys
            .iter()
            .map(|_| {
                EntryReply::new(replies.next(), self.max_entry_bytes)
                    .map_err(|err| self.link.error("read", err))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((generations, entries))
    }

    /// The size of an entry found too large, for the report; `None` if the
    /// server does not say.
    async fn size_of(&self, key: &str) -> Option<u64> {
        self.link
            .query::<u64>("read", cmd("STRLEN").arg(key))
            .await
            .ok()
    }
}

#[async_trait]
impl Backend for RedisBackend {
    fn name(&self) -> &'static str {
        self.link.name
    }

    async fn load(&self, at: &Location<'_>) -> Result<Loaded> {
        let mut loaded = self.load_many(std::slice::from_ref(at)).await?;
        Ok(loaded.pop().unwrap_or_default())
    }

    async fn load_many(&self, at: &[Location<'_>]) -> Result<Vec<Loaded>> {
        let Some(first) = at.first() else {
            return Ok(Vec::new());
        };
        let tag = namespace_tag(first.scope);
        let keys: Vec<String> = at
            .iter()
            .map(|at| entry_key(&tag, at.key, self.key_length))
            .collect();
        let (generations, entries) = self.read_entries(&namespace_gen_key(&tag), &keys).await?;
        let mut loaded = Vec::with_capacity(entries.len());
        for (key, entry) in keys.iter().zip(entries) {
            loaded.push(match entry {
                EntryReply::Missing => Loaded {
                    generations,
                    bytes: None,
                    oversized: None,
                },
                EntryReply::Bytes(bytes) => Loaded {
                    generations,
                    bytes: Some(bytes),
                    oversized: None,
                },
                // Only a foreign value gets here, so the extra round trip for
                // its exact size costs nothing on the paths that matter.
                EntryReply::Oversized => Loaded {
                    generations,
                    bytes: None,
                    oversized: Some(
                        self.size_of(key)
                            .await
                            .unwrap_or(self.max_entry_bytes.saturating_add(1)),
                    ),
                },
            });
        }
        Ok(loaded)
    }

    async fn generations(&self, scope: &Scope) -> Result<Generations> {
        let ns_gen_key = namespace_gen_key(&namespace_tag(scope));
        let counters = self
            .link
            .query("read", &self.generations_command(&ns_gen_key))
            .await?;
        self.parse_generations(&ns_gen_key, counters)
    }

    async fn store(&self, at: &Location<'_>, entry: Vec<u8>, ttl: Option<Duration>) -> Result<()> {
        let key = entry_key(&namespace_tag(at.scope), at.key, self.key_length);
        let mut set = cmd("SET");
        set.arg(&key).arg(entry);
        if let Some(ttl) = ttl {
            let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
            if ms <= MAX_TTL_MS {
                set.arg("PX").arg(ms);
            }
        }
        self.link.query::<()>("write", &set).await
    }

    async fn remove(&self, at: &Location<'_>) -> Result<bool> {
        let key = entry_key(&namespace_tag(at.scope), at.key, self.key_length);
        let removed: i64 = self.link.query("remove", cmd("DEL").arg(&key)).await?;
        Ok(removed > 0)
    }

    async fn bump_namespace(&self, scope: &Scope) -> Result<()> {
        let key = namespace_gen_key(&namespace_tag(scope));
        self.bump("clear", &key).await
    }

    async fn bump_region(&self, _region: &RegionScope) -> Result<()> {
        // One backend serves one region: its keys were computed at open.
        self.bump("invalidate", &self.region_gen_key).await
    }

    async fn soft_invalidate(&self, _region: &RegionScope, at_ms: u64) -> Result<()> {
        let mut invocation = SOFT_INVALIDATE.prepare_invoke();
        invocation.key(&self.region_soft_key).arg(at_ms);
        self.link
            .script::<i64>("soft invalidate", &invocation)
            .await?;
        Ok(())
    }

    fn creation_lock(&self) -> Arc<dyn CreationLock> {
        self.lock.clone()
    }

    fn backplane(&self) -> Option<Arc<dyn crate::backend::backplane::Backplane>> {
        Some(self.backplane.clone())
    }
}

impl RedisBackend {
    async fn bump(&self, operation: &'static str, key: &str) -> Result<()> {
        let mut invocation = BUMP_GENERATION.prepare_invoke();
        invocation.key(key).arg(generation_start());
        self.link.script::<i64>(operation, &invocation).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_put_an_entry_and_its_namespace_in_one_slot() {
        let options = RegionOptions {
            prefix: "app/".into(),
            ..RegionOptions::defaults("short_term")
        };
        let scope = Scope::new(Arc::new(RegionScope::new(&options)), "views::a#b");
        let tag = namespace_tag(&scope);
        assert_eq!(tag, "{app/short_term:views::a%23b}");
        assert_eq!(entry_key(&tag, "k", 250), "{app/short_term:views::a%23b}#k");
        assert_eq!(namespace_gen_key(&tag), "{app/short_term:views::a%23b}!gen");
        assert_eq!(
            tagged(&scope.region.soft_key, "!soft"),
            "{app/short_term}!soft"
        );
        let long = entry_key(&tag, &"x".repeat(300), 250);
        assert!(
            long.starts_with("{app/short_term:views::a%23b}!h#"),
            "{long}"
        );
        assert_eq!(long.len(), tag.len() + 3 + 64);
        // The lock of the same key carries the same hash tag.
        assert_eq!(
            super::super::lock::redis_lock_key("app/", &scope.lock_key("k")),
            "{app/short_term:views::a%23b}!lock#k"
        );
    }
}
