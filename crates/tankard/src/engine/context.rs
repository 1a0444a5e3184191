//! What a creator may say about the entry it makes, from inside it: its
//! own expiry (adaptive caching: a short one for a value that will change
//! soon, a long one for a stable one), tags that depend on what it read
//! (FusionCache's adaptive tags), or that its value is not to be stored at
//! all (dogpile.cache's `should_cache_fn`), without failing.
//!
//! The engine runs every creator inside a task-local context, so the
//! setting needs no parameter: any front end's creator (the namespace API,
//! `#[tankard::cached]` bodies, a page handler under the page layer) may
//! call [`CreatorContext`]'s functions, and a call outside a creator does
//! nothing and says so.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::sync::lock;
use crate::tags::Tags;

/// What the creator running now asked for.
#[derive(Clone, Debug, Default)]
pub(crate) struct Asked {
    /// Its own expiry: `Some(None)` for "never".
    pub(crate) expire: Option<Option<Duration>>,
    /// The value is returned, and handed to waiters, but not stored.
    pub(crate) skip_store: bool,
    /// Tags for the entry, checked, besides its call's.
    added: Vec<Box<str>>,
    /// A tag it asked for that was refused: the call fails with it.
    refused: Option<Error>,
}

impl Asked {
    /// The entry's tags: the call's and the creator's; an error if the
    /// creator asked for a bad one or the two make too many.
    pub(crate) fn tags(&self, call: &Tags) -> Result<Tags> {
        if let Some(err) = &self.refused {
            return Err(err.clone());
        }
        crate::tags::union(call, &self.added)
    }
}

tokio::task_local! {
    static CONTEXT: Arc<Mutex<Asked>>;
}

/// Runs `creator` with a fresh context, and returns what it asked for
/// beside its output.
pub(crate) async fn with_context<F: std::future::Future>(creator: F) -> (F::Output, Asked) {
    let asked = Arc::new(Mutex::new(Asked::default()));
    let output = CONTEXT.scope(asked.clone(), creator).await;
    let asked = std::mem::take(&mut *lock(&asked));
    (output, asked)
}

/// What a creator can tell the cache about the entry it is making. Its
/// functions act on the creator running in the current task; called
/// anywhere else they do nothing and return `false`.
///
/// ```
/// use std::time::Duration;
/// use tankard::CreatorContext;
/// # tokio_test::block_on(async {
/// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
/// let quotes = cache.namespace("quotes");
/// // Adaptive caching: a quote from a closed market keeps till morning.
/// let quote = quotes
///     .get_or_create("ACME", || async {
///         let market_open = false;
///         if !market_open {
///             CreatorContext::set_expire(Duration::from_secs(12 * 3600));
///         }
///         42.0f64
///     })
///     .await?;
/// assert_eq!(*quote, 42.0);
/// assert!(!CreatorContext::skip_store(), "not inside a creator here");
/// # Ok::<(), tankard::Error>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct CreatorContext;

impl CreatorContext {
    /// Sets the expiry of the entry being made, in place of its
    /// namespace's or region's (`None`: it never expires). Returns whether
    /// a creator is running here.
    ///
    /// ```
    /// assert!(!tankard::CreatorContext::set_expire(std::time::Duration::from_secs(5)));
    /// ```
    pub fn set_expire(expire: impl Into<Option<Duration>>) -> bool {
        let expire = expire.into();
        CONTEXT
            .try_with(|asked| lock(asked).expire = Some(expire))
            .is_ok()
    }

    /// Asks that the value being made be returned (to this caller and any
    /// waiting on it) but not stored: an answer not worth keeping, such as
    /// an empty search result or a partial page. Not a failure: nothing is
    /// counted as an error, and a stale value in the store stays. Returns
    /// whether a creator is running here.
    ///
    /// ```
    /// assert!(!tankard::CreatorContext::skip_store());
    /// ```
    pub fn skip_store() -> bool {
        CONTEXT
            .try_with(|asked| lock(asked).skip_store = true)
            .is_ok()
    }

    /// Tags the entry being made with `tag`, besides the tags its handle
    /// gives ([`Cache::tags`](crate::Cache::tags)), so that
    /// [`Region::invalidate_tag`](crate::Region::invalidate_tag) hides it:
    /// tags that depend on what the creator read. Returns whether a
    /// creator is running here.
    ///
    /// A tag that is empty or longer than
    /// [`MAX_TAG_LEN`](crate::MAX_TAG_LEN) bytes is an error
    /// ([`Error::is_bad_tag`]), here and for the call whose creator asked
    /// for it: its value is not stored.
    ///
    /// ```
    /// use tankard::CreatorContext;
    /// # tokio_test::block_on(async {
    /// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
    /// let posts = cache.namespace("posts");
    /// let post = posts
    ///     .get_or_try_create("7", || async {
    ///         let author = 42; // read with the post
    ///         CreatorContext::add_tag(format!("user:{author}"))?;
    ///         Ok::<_, tankard::Error>("hello".to_string())
    ///     })
    ///     .await?;
    /// assert_eq!(*post, "hello");
    /// cache.default_region().invalidate_tag("user:42").await?;
    /// assert!(!posts.contains::<String>("7").await?);
    /// assert!(CreatorContext::add_tag("").unwrap_err().is_bad_tag());
    /// assert!(!CreatorContext::add_tag("user:42")?, "not inside a creator here");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # })?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add_tag(tag: impl AsRef<str>) -> Result<bool> {
        let tag = tag.as_ref();
        let checked = crate::tags::check(tag);
        let running = CONTEXT
            .try_with(|asked| {
                let mut asked = lock(asked);
                match &checked {
                    Ok(()) => asked.added.push(tag.into()),
                    Err(err) => {
                        asked.refused.get_or_insert_with(|| err.clone());
                    }
                }
            })
            .is_ok();
        checked.map(|()| running)
    }

    /// The tags the creator running here has added so far (not its
    /// handle's), in the order added; empty outside a creator.
    ///
    /// ```
    /// assert!(tankard::CreatorContext::tags().is_empty());
    /// ```
    pub fn tags() -> Vec<String> {
        CONTEXT
            .try_with(|asked| {
                lock(asked)
                    .added
                    .iter()
                    .map(|tag| tag.to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}
