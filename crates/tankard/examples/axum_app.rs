//! A complete axum app with Tankard: a cached function
//! (`#[tankard::cached]`), a whole page cached by
//! [`CachePageLayer`](tankard::web::CachePageLayer), and the
//! [`CacheManager`] in the app's state.
//!
//! ```text
//! cargo run -p tankard --example axum_app --features axum
//! curl -i localhost:3000/hello        # X-Cache: MISS, then HIT for a minute
//! curl localhost:3000/users/1         # slow once, then from the cache
//! curl -X POST localhost:3000/users/1/forget
//! curl localhost:3000/counters        # each region's hits and misses
//! ```
//!
//! In your own `Cargo.toml`:
//!
//! ```toml
//! tankard = { path = "…/crates/tankard", features = ["axum"] }
//! axum = { version = "0.8", features = ["macros"] }   # macros: #[derive(FromRef)]
//! tokio = { version = "1", features = ["macros", "rt-multi-thread"] }
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Path};
use axum::http::StatusCode;
use axum::routing::{get, post};
use tankard::web::CachePageLayer;
use tankard::{CacheManager, Config};

/// How long the app's slow work takes: a database query, a remote call.
const WORK: Duration = Duration::from_millis(100);

/// Two regions in memory: whole pages for a minute, user lookups for ten
/// (served stale for one more while one request refreshes them). Put
/// `type = "redis"` and a `url` under a region to share it between servers.
pub(crate) fn config() -> Result<Config, tankard::Error> {
    Config::from_toml_str(
        r#"
        [cache]
        type = "memory"
        regions = ["pages", "users"]

        [cache.pages]
        expire = "1m"

        [cache.users]
        expire = "10m"
        stale = "1m"
        "#,
    )
}

/// The app's state. `FromRef` (axum's `macros` feature) lets a handler
/// take any field, the manager included, as an argument.
#[derive(Clone, FromRef)]
pub(crate) struct AppState {
    cache: CacheManager,
}

/// A slow lookup, cached per `id` in the `users` region. `None` (no such
/// user) is not cached: the next call looks again.
#[tankard::cached(region = "users")]
pub(crate) async fn user_name(id: u32) -> Option<String> {
    tokio::time::sleep(WORK).await;
    match id {
        1 => Some("Fred".to_owned()),
        2 => Some("Wilma".to_owned()),
        _ => None,
    }
}

async fn user(Path(id): Path<u32>) -> Result<String, StatusCode> {
    match user_name(id).await {
        Some(name) => Ok(format!("user {id}: {name}\n")),
        None => Err(StatusCode::NOT_FOUND),
    }
}

/// Drops one user's cached lookup: the attribute's `_invalidate` companion
/// takes the function's arguments.
async fn forget(Path(id): Path<u32>) -> Result<String, StatusCode> {
    match user_name_invalidate(id).await {
        Ok(true) => Ok(format!("forgot user {id}\n")),
        Ok(false) => Ok(format!("user {id} was not cached\n")),
        Err(_) => Err(StatusCode::SERVICE_UNAVAILABLE),
    }
}

/// A page the layer caches whole: the handler runs once a minute at most.
async fn hello() -> String {
    tokio::time::sleep(WORK).await;
    let made = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("Hello world, made at {} ms\n", made.as_millis())
}

/// The manager, taken from the state: each region's counters.
async fn counters(cache: CacheManager) -> String {
    let mut out = String::new();
    for region in cache.regions() {
        let stats = region.stats();
        let _ = writeln!(
            out,
            "{}: {} hits, {} misses, {} creator calls",
            region.name(),
            stats.hits,
            stats.misses,
            stats.creator_calls
        );
    }
    out
}

/// The app's routes on a manager: `/hello` behind the page layer, the
/// rest handled as usual.
pub(crate) fn app(cache: CacheManager) -> Result<Router, tankard::Error> {
    let pages = cache.region("pages")?.namespace("pages");
    Ok(Router::new()
        .route("/hello", get(hello).layer(CachePageLayer::new(pages)))
        .route("/users/{id}", get(user))
        .route("/users/{id}/forget", post(forget))
        .route("/counters", get(counters))
        .with_state(AppState { cache }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cache = CacheManager::new(config()?)?;
    // The cached functions find their regions through the installed manager.
    tankard::install(cache.clone()).map_err(|_| "a cache manager was already installed")?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(cache)?).await?;
    Ok(())
}
