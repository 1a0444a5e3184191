//! Reading a stored entry without knowing its type, for tools such as
//! `tankard get`: its state, timestamps, size and raw payload.
//!
//! Values are stored as postcard, which does not describe itself, so a
//! tool cannot decode a payload without its type; it can show the bytes,
//! and the text when the value is a `String` (as the demo's pages are).

#[cfg(feature = "memory")]
use crate::backend::memory::MemKeyRef;
use crate::entry::{self, EntryMeta, Freshness};
use crate::error::Result;
use crate::namespace::Cache;

/// Whether an inspected entry would be served fresh or stale.
///
/// ```
/// assert_ne!(tankard::EntryState::Fresh, tankard::EntryState::Stale);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[doc(hidden)]
pub enum EntryState {
    /// Served as it is.
    Fresh,
    /// Past its expiry (or soft-invalidated) but within its stale grace.
    Stale,
}

/// What [`Cache::inspect`] found under a key.
///
/// ```
/// # tokio_test::block_on(async {
/// let dir = tempfile::tempdir()?;
/// let config = tankard::Config::from_flat([
///     ("cache.type", "file"),
///     ("cache.data_dir", dir.path().to_str().ok_or("temporary directory path is not UTF-8")?),
/// ])?;
/// let cache = tankard::CacheManager::new(config)?;
/// let ns = cache.namespace("n");
/// ns.put("k", "hi".to_string()).await?;
/// let info = ns.inspect("k").await?.ok_or("no entry")?;
/// assert_eq!(info.state, tankard::EntryState::Fresh);
/// assert_eq!(info.text().as_deref(), Some("hi"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
#[doc(hidden)]
pub struct EntryInfo {
    /// Fresh or stale.
    pub state: EntryState,
    /// When the entry was written, epoch ms.
    pub created_ms: u64,
    /// Until when it is fresh, epoch ms; `None` = it never expires.
    pub fresh_until_ms: Option<u64>,
    /// Until when it may be served stale, epoch ms; `None` = forever.
    pub stale_until_ms: Option<u64>,
    /// The key the backend stores it under (hashed when long).
    pub storage_key: String,
    /// The encoded value (postcard); `None` in a memory region, which keeps
    /// typed values that are never encoded.
    pub payload: Option<Vec<u8>>,
    /// The stored size in bytes (the whole entry, header included); `None`
    /// in a memory region.
    pub stored_bytes: Option<usize>,
    /// The entry's tags (see [`Cache::tags`]), sorted; empty when it has
    /// none.
    pub tags: Vec<String>,
    /// The entry's type tag (a hash of the stored Rust type's name).
    type_tag: Option<u64>,
}

impl EntryInfo {
    fn new(
        state: EntryState,
        meta: &EntryMeta,
        storage_key: String,
        payload: Option<Vec<u8>>,
        stored_bytes: Option<usize>,
        type_tag: Option<u64>,
        tags: Vec<String>,
    ) -> EntryInfo {
        let forever = |ms: u64| (ms != u64::MAX).then_some(ms);
        EntryInfo {
            state,
            created_ms: meta.created_ms,
            fresh_until_ms: forever(meta.fresh_until_ms),
            stale_until_ms: forever(meta.stale_until_ms),
            storage_key,
            payload,
            stored_bytes,
            tags,
            type_tag,
        }
    }

    /// The value as text, if it was stored as a `String` (the entry's type
    /// tag says so) and decodes as one.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let dir = tempfile::tempdir()?;
    /// let config = tankard::Config::from_flat([("cache.type", "file"), ("cache.data_dir", dir.path().to_str().ok_or("temporary directory path is not UTF-8")?)])?;
    /// let ns = tankard::CacheManager::new(config)?.namespace("n");
    /// ns.put("n", vec![1u32, 2, 3]).await?;
    /// assert_eq!(ns.inspect("n").await?.ok_or("no entry")?.text(), None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn text(&self) -> Option<String> {
        let payload = self.payload.as_deref()?;
        if self.type_tag != Some(entry::type_tag::<String>()) {
            return None;
        }
        match postcard::take_from_bytes::<String>(payload) {
            Ok((text, [])) => Some(text),
            _ => None,
        }
    }
}

impl Cache {
    /// The entry stored under `key` as a tool sees it, without decoding the
    /// value: `None` when there is nothing servable (absent, expired past
    /// its stale grace, invalidated, hidden by one of its tags, corrupt or
    /// not authenticated).
    ///
    /// Unlike the caching calls, a failing backend is an error here, never
    /// bypassed: a tool wants to know.
    ///
    /// # Errors
    ///
    /// The backend's error when it cannot be read.
    ///
    /// ```
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let ns = cache.namespace("n");
    /// assert!(ns.inspect("k").await?.is_none());
    /// ns.put("k", 1u8).await?;
    /// assert!(ns.inspect("k").await?.ok_or("no entry")?.payload.is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(hidden)]
    pub async fn inspect(&self, key: &str) -> Result<Option<EntryInfo>> {
        let region = &self.region;
        let policy = region.read_policy();
        let state = |freshness| match freshness {
            Freshness::Fresh | Freshness::Due => Some(EntryState::Fresh),
            Freshness::Stale => Some(EntryState::Stale),
            Freshness::Expired | Freshness::Missing => None,
        };
        #[cfg(feature = "memory")]
        if let Some(memory) = region.memory_only() {
            let Some(found) = memory.get(&MemKeyRef {
                namespace: self.ns.id,
                key,
            }) else {
                return Ok(None);
            };
            if region.hidden_here(&found.tags, found.meta.created_ms) {
                return Ok(None);
            }
            let generations = region.memory_generations(&self.ns);
            let tags = found.tags.iter().flat_map(|tags| tags.iter());
            let tags = tags.map(|tag| tag.to_string()).collect();
            return Ok(
                state(found.meta.freshness(&generations, &policy)).map(|state| {
                    EntryInfo::new(state, &found.meta, key.to_owned(), None, None, None, tags)
                }),
            );
        }
        let Some(backend) = &region.l2 else {
            return Ok(None);
        };
        let at = self.ns.scope.locate(key);
        let loaded = backend.load(&at).await?;
        let Some(bytes) = loaded.bytes else {
            return Ok(None);
        };
        let Ok(raw) = entry::open(&at.storage_key, &bytes, region.options.secret.as_ref()) else {
            return Ok(None);
        };
        if let Some(tags) = raw.tag_set() {
            let hidden = region
                .hidden_in_store(backend, &self.ns, &[(&tags, raw.meta.created_ms)])
                .await?;
            if hidden.first() == Some(&true) {
                return Ok(None);
            }
        }
        Ok(
            state(raw.meta.freshness(&loaded.generations, &policy)).map(|state| {
                EntryInfo::new(
                    state,
                    &raw.meta,
                    at.storage_key.clone(),
                    Some(raw.payload.to_vec()),
                    Some(bytes.len()),
                    Some(raw.type_tag),
                    raw.tags().map(str::to_owned).collect(),
                )
            }),
        )
    }
}
