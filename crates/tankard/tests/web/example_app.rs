//! The example app (`examples/axum_app.rs`), served on a real socket: the
//! page layer, the cached function and its companion, the manager taken
//! from the state.

use axum::http::StatusCode;
use tankard::CacheManager;

use super::App;

#[path = "../../examples/axum_app.rs"]
#[allow(dead_code)] // its `main`
mod axum_app;

#[tokio::test]
async fn the_example_app_caches_its_page_and_its_function() {
    let cache = CacheManager::new(axum_app::config().unwrap()).unwrap();
    // The only test of this binary that installs a manager.
    tankard::install(cache.clone()).unwrap();
    let app = App::start(
        axum_app::app(cache.clone()).unwrap(),
        tempfile::tempdir().unwrap(),
    )
    .await;
    let users = cache.region("users").unwrap();

    let first = app.get("/hello").await;
    assert_eq!((first.status, first.x()), (StatusCode::OK, "MISS"));
    let second = app.get("/hello").await;
    assert_eq!(second.x(), "HIT");
    assert_eq!(second.body, first.body);

    let fred = app.get("/users/1").await;
    assert_eq!(
        (fred.status, fred.body.as_str()),
        (StatusCode::OK, "user 1: Fred\n")
    );
    assert_eq!(fred.x_cache, None, "no page layer on this route");
    app.get("/users/1").await;
    assert_eq!((users.stats().creator_calls, users.stats().hits), (1, 1));
    // Not a user: not cached, looked up each time.
    assert_eq!(app.get("/users/9").await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get("/users/9").await.status, StatusCode::NOT_FOUND);
    assert_eq!(users.stats().creator_calls, 3);

    let forgot = app.post("/users/1/forget").await;
    assert_eq!(forgot.body, "forgot user 1\n");
    assert_eq!(app.get("/users/1").await.body, "user 1: Fred\n");
    assert_eq!(users.stats().creator_calls, 4, "looked up again");

    let counters = app.get("/counters").await.body;
    assert!(
        counters.contains("pages: 1 hits, 1 misses, 1 creator calls"),
        "{counters}"
    );
    assert!(counters.contains("users: "), "{counters}");
}
