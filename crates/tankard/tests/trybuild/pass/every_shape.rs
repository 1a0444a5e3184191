//! Every supported shape of function, with every option.

use std::sync::LazyLock;

static CACHE: LazyLock<tankard::CacheManager> =
    LazyLock::new(|| tankard::CacheManager::new(tankard::Config::memory()).unwrap());

#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error("missing")]
    Missing,
    #[error(transparent)]
    Cache(#[from] tankard::Error),
}

#[tankard::cached(expire = 10)]
pub fn plain(a: u64, b: &str) -> u64 {
    a + b.len() as u64
}

#[tankard::cached(region = "long_term", namespace = "views::hello", manager = CACHE)]
pub async fn fallible(name: &str) -> Result<String, AppError> {
    if name.is_empty() {
        return Err(AppError::Missing);
    }
    Ok(name.to_uppercase())
}

#[tankard::cached(manager = &*CACHE, cache_none = true, skip(verbose))]
fn maybe(id: Option<u32>, verbose: bool) -> Option<String> {
    let _ = verbose;
    id.map(|id| id.to_string())
}

#[tankard::cached(manager = CACHE, key = tankard::SerdeKey(query))]
fn search(query: &Query) -> Vec<String> {
    query.terms.clone()
}

#[derive(serde::Serialize)]
struct Query {
    terms: Vec<String>,
}

struct Repo {
    cache: tankard::CacheManager,
}

impl Repo {
    #[tankard::cached(manager = self.cache)]
    async fn user(&self, id: u32) -> Option<String> {
        Some(format!("user {id}"))
    }

    #[tankard::cached(manager = CACHE)]
    fn build(id: u32) -> Self {
        let _ = id;
        Repo { cache: (*CACHE).clone() }
    }

    #[tankard::cached(manager = CACHE, associated)]
    fn label<'a>(id: &'a str) -> String {
        id.to_owned()
    }
}

impl Clone for Repo {
    fn clone(&self) -> Self {
        Repo { cache: self.cache.clone() }
    }
}

impl serde::Serialize for Repo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> serde::Deserialize<'de> for Repo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d)?;
        Ok(Repo { cache: (*CACHE).clone() })
    }
}

trait Lookup {
    fn lookup(&self, id: u32) -> String;
}

impl Lookup for Repo {
    #[tankard::cached(manager = CACHE, companions = false)]
    fn lookup(&self, id: u32) -> String {
        id.to_string()
    }
}

/// A generic impl: the value type names the impl's parameter.
struct Store<T>(std::marker::PhantomData<T>);

impl<T> Store<T>
where
    T: Clone + serde::Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    #[tankard::cached(region = "short_term")]
    fn load(&self, id: u32) -> Option<Vec<T>> {
        let _ = id;
        None
    }
}

trait Describe {
    fn describe(id: u32) -> String;
}

impl Describe for Repo {
    // Registered for `install`'s check from a trait impl.
    #[tankard::cached(region = "long_term", companions = false, associated)]
    fn describe(id: u32) -> String {
        format!("repo {id}")
    }
}

// `#[track_caller]` given by hand is kept, not doubled; an `extern "C"`
// function gets none (it needs the Rust ABI).
#[track_caller]
#[tankard::cached]
fn tracked(n: u32) -> u32 {
    n
}

#[tankard::cached(manager = CACHE)]
extern "C" fn exported(n: u32) -> u32 {
    n
}

fn main() {
    let config = tankard::Config::from_flat([
        ("cache.type", "memory"),
        ("cache.regions", "short_term, long_term"),
    ])
    .unwrap();
    tankard::install(tankard::CacheManager::new(config).unwrap()).unwrap();
    let _ = plain(1, "a");
    let _ = plain_peek(1, "a");
    let _ = fallible("x");
    let _ = maybe_invalidate(Some(1), true);
    let _ = search(&Query { terms: vec![] });
    let repo = Repo::build(1);
    let _ = repo.user(1);
    let _ = repo.user_set(1, &"u".to_string());
    let _ = Repo::label_refresh("x");
    let _ = repo.lookup(2);
    let _ = Store::<String>(std::marker::PhantomData).load(1);
    let _ = Repo::describe(3);
    let _ = tracked(4);
    let _ = exported(5);
}
