//! The page layer and the manager-as-state extractor, through a real axum
//! server on a loopback socket and a real HTTP client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRef, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tankard::web::CachePageLayer;
use tankard::{Cache, CacheManager, Clock, Config, Invalidation};

#[path = "../support/eventually.rs"]
mod eventually;
#[cfg(all(feature = "macros", feature = "memory"))]
mod example_app;
use eventually::eventually;
use tokio::sync::{Notify, Semaphore};

/// Counts handler runs per test.
#[derive(Clone, Default)]
struct Calls(Arc<AtomicUsize>);

impl Calls {
    fn bump(&self) -> usize {
        self.0.fetch_add(1, Ordering::SeqCst) + 1
    }
    fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// A running app and a client for it.
struct App {
    base: String,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl App {
    async fn start(router: Router, dir: tempfile::TempDir) -> App {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        App {
            base: format!("http://{addr}"),
            client: reqwest::Client::new(),
            _dir: dir,
        }
    }

    async fn get(&self, path: &str) -> Reply {
        Reply::from(
            self.client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn post(&self, path: &str) -> Reply {
        Reply::from(
            self.client
                .post(format!("{}{path}", self.base))
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    async fn get_with(&self, path: &str, name: &str, value: &str) -> Reply {
        let res = self
            .client
            .get(format!("{}{path}", self.base))
            .header(name, value)
            .send()
            .await
            .unwrap();
        Reply::from(res).await
    }
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    x_cache: Option<String>,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    async fn from(res: reqwest::Response) -> Reply {
        let status = StatusCode::from_u16(res.status().as_u16()).unwrap();
        let mut headers = HeaderMap::new();
        for (name, value) in res.headers() {
            headers.append(
                header::HeaderName::from_bytes(name.as_str().as_bytes()).unwrap(),
                header::HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        let x_cache = headers
            .get("x-cache")
            .map(|v| v.to_str().unwrap().to_owned());
        Reply {
            status,
            x_cache,
            headers,
            body: res.text().await.unwrap(),
        }
    }

    fn x(&self) -> &str {
        self.x_cache.as_deref().unwrap_or("<none>")
    }
}

/// Which region the pages live in: the memory backend keeps typed pages,
/// the file backend round-trips them through their serialized form.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Memory,
    File,
}

fn pages(backend: Backend, extra: &[(&str, &str)]) -> (Cache, tempfile::TempDir) {
    let (cache, dir) = manager(backend, extra);
    (cache.namespace("pages"), dir)
}

fn manager(backend: Backend, extra: &[(&str, &str)]) -> (CacheManager, tempfile::TempDir) {
    manager_with_clock(backend, extra, Clock::default())
}

fn manager_with_clock(
    backend: Backend,
    extra: &[(&str, &str)],
    clock: Clock,
) -> (CacheManager, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut flat: Vec<(String, String)> = match backend {
        Backend::Memory => vec![("cache.type".into(), "memory".into())],
        Backend::File => vec![
            ("cache.type".into(), "file".into()),
            ("cache.data_dir".into(), data.to_str().unwrap().into()),
        ],
    };
    flat.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    (
        CacheManager::with_clock(Config::from_flat(flat).unwrap(), clock).unwrap(),
        dir,
    )
}

/// A router whose routes count their runs; the layer wraps all of them.
fn counted_app(calls: Calls, layer: CachePageLayer) -> Router {
    let c = calls.clone();
    let plain = get(move || {
        let n = c.bump();
        async move { format!("plain #{n}") }
    });
    let c = calls.clone();
    let vary = get(move |headers: HeaderMap| {
        let n = c.bump();
        async move {
            let lang = headers
                .get(header::ACCEPT_LANGUAGE)
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (
                [(header::VARY, "Accept-Language")],
                format!("lang {lang} #{n}"),
            )
        }
    });
    let c = calls.clone();
    let cookie = get(move || {
        let n = c.bump();
        async move {
            (
                [(header::SET_COOKIE, "session=abc")],
                format!("cookie #{n}"),
            )
        }
    });
    let c = calls.clone();
    let private = get(move || {
        let n = c.bump();
        async move {
            (
                [(header::CACHE_CONTROL, "max-age=60, private")],
                format!("private #{n}"),
            )
        }
    });
    let c = calls.clone();
    let no_store = get(move || {
        let n = c.bump();
        async move {
            (
                [(header::CACHE_CONTROL, "no-store")],
                format!("no-store #{n}"),
            )
        }
    });
    let c = calls.clone();
    let missing = get(move || {
        let n = c.bump();
        async move { (StatusCode::NOT_FOUND, format!("missing #{n}")) }
    });
    let c = calls.clone();
    let vary_star = get(move || {
        let n = c.bump();
        async move { ([(header::VARY, "*")], format!("star #{n}")) }
    });
    let c = calls;
    let post = axum::routing::post(move || {
        let n = c.bump();
        async move { format!("post #{n}") }
    })
    .get(|| async { "get" });
    Router::new()
        .route("/plain", plain)
        .route("/vary", vary)
        .route("/cookie", cookie)
        .route("/private", private)
        .route("/no-store", no_store)
        .route("/missing", missing)
        .route("/vary-star", vary_star)
        .route("/post", post)
        .layer(layer)
}

async fn counted(backend: Backend) -> (App, Calls) {
    let (cache, dir) = pages(backend, &[("cache.expire", "60")]);
    let calls = Calls::default();
    let app = App::start(counted_app(calls.clone(), CachePageLayer::new(cache)), dir).await;
    (app, calls)
}

const BACKENDS: [Backend; 2] = [Backend::Memory, Backend::File];

#[tokio::test]
async fn second_request_is_a_hit_with_the_same_page() {
    for backend in BACKENDS {
        let (app, calls) = counted(backend).await;
        let first = app.get("/plain").await;
        let second = app.get("/plain").await;
        assert_eq!(
            (first.status, first.x()),
            (StatusCode::OK, "MISS"),
            "{backend:?}"
        );
        assert_eq!(
            (second.status, second.x()),
            (StatusCode::OK, "HIT"),
            "{backend:?}"
        );
        assert_eq!(first.body, "plain #1");
        assert_eq!(second.body, "plain #1");
        assert_eq!(
            second.headers[header::CONTENT_TYPE],
            "text/plain; charset=utf-8",
            "{backend:?}: stored headers are replayed"
        );
        assert_eq!(calls.get(), 1);
    }
}

#[tokio::test]
async fn the_query_is_part_of_the_key() {
    let (app, calls) = counted(Backend::Memory).await;
    assert_eq!(app.get("/plain?a=1").await.x(), "MISS");
    assert_eq!(app.get("/plain?a=2").await.x(), "MISS");
    let again = app.get("/plain?a=1").await;
    assert_eq!((again.x(), again.body.as_str()), ("HIT", "plain #1"));
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn vary_keys_pages_by_the_named_request_headers() {
    for backend in BACKENDS {
        let (app, calls) = counted(backend).await;
        let en = app.get_with("/vary", "accept-language", "en").await;
        let fr = app.get_with("/vary", "accept-language", "fr").await;
        let en2 = app.get_with("/vary", "accept-language", "en").await;
        let fr2 = app.get_with("/vary", "accept-language", "fr").await;
        let none = app.get("/vary").await;
        assert_eq!(
            (en.x(), en.body.as_str()),
            ("MISS", "lang en #1"),
            "{backend:?}"
        );
        assert_eq!(
            (fr.x(), fr.body.as_str()),
            ("MISS", "lang fr #2"),
            "{backend:?}"
        );
        assert_eq!(
            (en2.x(), en2.body.as_str()),
            ("HIT", "lang en #1"),
            "{backend:?}"
        );
        assert_eq!(
            (fr2.x(), fr2.body.as_str()),
            ("HIT", "lang fr #2"),
            "{backend:?}"
        );
        assert_eq!(
            (none.x(), none.body.as_str()),
            ("MISS", "lang  #3"),
            "{backend:?}"
        );
        assert_eq!(en2.headers[header::VARY], "Accept-Language");
        assert_eq!(calls.get(), 3);
    }
}

#[tokio::test]
async fn responses_setting_cookies_or_private_are_never_stored() {
    for backend in BACKENDS {
        let (app, calls) = counted(backend).await;
        for path in ["/cookie", "/private", "/no-store", "/vary-star"] {
            let before = calls.get();
            let a = app.get(path).await;
            let b = app.get(path).await;
            assert_eq!((a.x(), b.x()), ("MISS", "MISS"), "{backend:?} {path}");
            assert_ne!(a.body, b.body, "{backend:?} {path}: the handler ran twice");
            assert_eq!(calls.get(), before + 2, "{backend:?} {path}");
        }
        let cookie = app.get("/cookie").await;
        assert_eq!(cookie.headers[header::SET_COOKIE], "session=abc");
    }
}

#[tokio::test]
async fn non_200_responses_are_not_stored() {
    let (app, calls) = counted(Backend::Memory).await;
    let a = app.get("/missing").await;
    let b = app.get("/missing").await;
    assert_eq!(
        (a.status, b.status),
        (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND)
    );
    assert_eq!(
        (a.body.as_str(), b.body.as_str()),
        ("missing #1", "missing #2")
    );
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn only_get_and_head_are_cached() {
    let (app, calls) = counted(Backend::Memory).await;
    for n in 1..=2 {
        let res = app
            .client
            .post(format!("{}/post", app.base))
            .send()
            .await
            .unwrap();
        assert!(res.headers().get("x-cache").is_none());
        assert_eq!(res.text().await.unwrap(), format!("post #{n}"));
    }
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn head_requests_are_cached_under_their_own_key() {
    let (app, calls) = counted(Backend::Memory).await;
    let head = |app: &App| app.client.head(format!("{}/plain", app.base)).send();
    let first = head(&app).await.unwrap();
    let second = head(&app).await.unwrap();
    assert_eq!(first.headers()["x-cache"], "MISS");
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert_eq!(second.headers()[header::CONTENT_LENGTH], "8");
    assert_eq!(second.text().await.unwrap(), "");
    // A GET is another key: the handler runs for it.
    let get = app.get("/plain").await;
    assert_eq!((get.x(), get.body.as_str()), ("MISS", "plain #2"));
    assert_eq!(calls.get(), 2);
}

#[tokio::test]
async fn requests_with_authorization_skip_the_cache_unless_allowed() {
    for allow in [false, true] {
        let (cache, dir) = pages(Backend::Memory, &[]);
        let calls = Calls::default();
        let layer = CachePageLayer::new(cache).allow_authorization(allow);
        let app = App::start(counted_app(calls.clone(), layer), dir).await;
        let a = app.get_with("/plain", "authorization", "Bearer x").await;
        let b = app.get_with("/plain", "authorization", "Bearer x").await;
        if allow {
            assert_eq!((a.x(), b.x()), ("MISS", "HIT"));
            assert_eq!(calls.get(), 1);
        } else {
            assert_eq!((a.x_cache.as_deref(), b.x_cache.as_deref()), (None, None));
            assert_eq!((a.body.as_str(), b.body.as_str()), ("plain #1", "plain #2"));
            // ... and they neither read nor fill the cache for others.
            assert_eq!(app.get("/plain").await.x(), "MISS");
            assert_eq!(calls.get(), 3);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_on_a_cold_route_runs_the_handler_once() {
    for backend in BACKENDS {
        let (manager, dir) = manager(backend, &[("cache.expire", "60")]);
        let cache = manager.namespace("pages");
        let calls = Calls::default();
        // The handler holds until every request of the burst has arrived.
        let arrived = Arc::new(Semaphore::new(0));
        let c = calls.clone();
        let gate = arrived.clone();
        let router = Router::new()
            .route(
                "/slow",
                get(move || {
                    let n = c.bump();
                    let gate = gate.clone();
                    async move {
                        let _ = gate.acquire_many(1).await;
                        format!("slow #{n}")
                    }
                }),
            )
            .layer(CachePageLayer::new(cache));
        let app = Arc::new(App::start(router, dir).await);
        let burst: Vec<_> = (0..16)
            .map(|_| {
                let app = app.clone();
                tokio::spawn(async move { app.get("/slow").await })
            })
            .collect();
        // Release the handler once the other 15 wait on its flight.
        let region = manager.default_region().clone();
        tokio::time::timeout(std::time::Duration::from_secs(30), async {
            while region.stats().lock_waits < 15 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("15 requests wait on the first one's handler");
        arrived.add_permits(1);
        let mut misses = 0;
        for reply in burst {
            let reply = reply.await.unwrap();
            assert_eq!(reply.body, "slow #1", "{backend:?}");
            misses += usize::from(reply.x() == "MISS");
        }
        assert_eq!(calls.get(), 1, "{backend:?}: the handler ran once");
        assert_eq!(misses, 1, "{backend:?}: one request ran it");
    }
}

/// A route whose second run waits: `entered` is notified when it starts,
/// and it finishes when `release` gets a permit. It serves `page #n`.
struct SecondRunWaits {
    router: Router,
    calls: Calls,
    entered: Arc<Notify>,
    release: Arc<Semaphore>,
}

fn second_run_waits(cache: Cache) -> SecondRunWaits {
    let calls = Calls::default();
    let entered = Arc::new(Notify::new());
    let release = Arc::new(Semaphore::new(0));
    let (c, e, r) = (calls.clone(), entered.clone(), release.clone());
    let router = Router::new()
        .route(
            "/page",
            get(move || {
                let n = c.bump();
                let (e, r) = (e.clone(), r.clone());
                async move {
                    if n == 2 {
                        e.notify_one();
                        let _ = r.acquire().await;
                    }
                    format!("page #{n}")
                }
            }),
        )
        .layer(CachePageLayer::new(cache));
    SecondRunWaits {
        router,
        calls,
        entered,
        release,
    }
}

impl SecondRunWaits {
    /// Starts the app with a first page in the cache, then, while a second
    /// request regenerates it, asks a third time: the third answer is the
    /// first page, which the caller checks. `before_second` runs before
    /// the second request (to make the first page stale).
    async fn third_answer_while_the_second_regenerates(
        self,
        dir: tempfile::TempDir,
        before_second: impl std::future::Future<Output = ()>,
    ) -> (Reply, Arc<App>) {
        let app = Arc::new(App::start(self.router, dir).await);
        let first = app.get("/page").await;
        assert_eq!((first.x(), first.body.as_str()), ("MISS", "page #1"));
        before_second.await;
        let regenerating = {
            let app = app.clone();
            tokio::spawn(async move { app.get("/page").await })
        };
        self.entered.notified().await;
        let third = app.get("/page").await;
        self.release.add_permits(1);
        let second = regenerating.await.unwrap();
        assert_eq!((second.x(), second.body.as_str()), ("MISS", "page #2"));
        assert_eq!(self.calls.get(), 2);
        (third, app)
    }
}

#[tokio::test]
async fn an_expired_page_is_served_stale_while_one_request_regenerates() {
    // expire 0: every page is stale at once, and served as such for 60 s.
    let (cache, dir) = pages(Backend::Memory, &[("cache.stale", "60")]);
    let route = second_run_waits(cache.expire(std::time::Duration::from_secs(0)));
    let (third, _app) = route
        .third_answer_while_the_second_regenerates(dir, async {})
        .await;
    assert_eq!((third.x(), third.body.as_str()), ("STALE", "page #1"));
}

#[tokio::test]
async fn a_soft_invalidated_page_is_served_stale_while_one_request_regenerates() {
    for backend in BACKENDS {
        // The page itself is fresh for a minute: only the invalidation
        // makes it stale.
        let (cache, dir) = manager(backend, &[("cache.expire", "60")]);
        let route = second_run_waits(cache.namespace("pages"));
        let region = cache.default_region();
        let invalidate = async {
            region.invalidate(Invalidation::Soft).await.unwrap();
        };
        let (third, app) = route
            .third_answer_while_the_second_regenerates(dir, invalidate)
            .await;
        assert_eq!(
            (third.x(), third.body.as_str()),
            ("STALE", "page #1"),
            "{backend:?}"
        );
        let after = app.get("/page").await;
        assert_eq!(
            (after.x(), after.body.as_str()),
            ("HIT", "page #2"),
            "{backend:?}"
        );
    }
}

/// Pages fresh for 10 s, then served stale for a minute while a task
/// regenerates them.
const BACKGROUND: &[(&str, &str)] = &[
    ("cache.expire", "10"),
    ("cache.stale", "60"),
    ("cache.refresh", "background"),
];

#[tokio::test]
async fn with_background_refresh_the_request_that_finds_a_page_stale_gets_it_at_once() {
    for backend in BACKENDS {
        let clock = Clock::manual(1_000_000);
        let (manager, dir) = manager_with_clock(backend, BACKGROUND, clock.clone());
        let SecondRunWaits {
            router,
            calls,
            entered,
            release,
        } = second_run_waits(manager.namespace("pages"));
        let app = App::start(router, dir).await;
        let first = app.get("/page").await;
        assert_eq!((first.x(), first.body.as_str()), ("MISS", "page #1"));
        clock.advance(Duration::from_secs(11));
        // Answered before the handler's second run could finish: it waits
        // for a permit that is only given below.
        let second = app.get("/page").await;
        assert_eq!(
            (second.x(), second.body.as_str()),
            ("STALE", "page #1"),
            "{backend:?}"
        );
        // A task runs the handler with the second request.
        entered.notified().await;
        assert_eq!(calls.get(), 2, "{backend:?}");
        let third = app.get("/page").await;
        assert_eq!(
            (third.x(), third.body.as_str()),
            ("STALE", "page #1"),
            "{backend:?}: stale while the handler runs"
        );
        release.add_permits(1);
        let mut after = None;
        eventually("the new page is served", async || {
            let reply = app.get("/page").await;
            let done = reply.body == "page #2";
            after = Some(reply);
            done
        })
        .await;
        let after = after.unwrap();
        assert_eq!(after.x(), "HIT", "{backend:?}");
        assert_eq!(
            calls.get(),
            2,
            "{backend:?}: the handler ran once for the refresh"
        );
        let stats = manager.default_region().stats();
        assert_eq!(stats.creator_calls, 2, "{backend:?}");
    }
}

#[tokio::test]
async fn with_background_refresh_a_varying_route_refreshes_its_pages_in_a_task() {
    for backend in BACKENDS {
        let clock = Clock::manual(1_000_000);
        let (manager, dir) = manager_with_clock(backend, BACKGROUND, clock.clone());
        let calls = Calls::default();
        let layer = CachePageLayer::new(manager.namespace("pages"));
        let app = App::start(counted_app(calls.clone(), layer), dir).await;
        let first = app.get_with("/vary", "accept-language", "en").await;
        assert_eq!((first.x(), first.body.as_str()), ("MISS", "lang en #1"));
        clock.advance(Duration::from_secs(11));
        // The route's list of varying headers is stale too, and is kept;
        // a language never seen before still gets its own page at once.
        let fr = app.get_with("/vary", "accept-language", "fr").await;
        assert_eq!(
            (fr.x(), fr.body.as_str()),
            ("MISS", "lang fr #2"),
            "{backend:?}"
        );
        let stale = app.get_with("/vary", "accept-language", "en").await;
        assert_eq!(
            (stale.x(), stale.body.as_str()),
            ("STALE", "lang en #1"),
            "{backend:?}"
        );
        eventually("the new page is served", async || {
            app.get_with("/vary", "accept-language", "en").await.body == "lang en #3"
        })
        .await;
        assert_eq!(
            app.get_with("/vary", "accept-language", "en").await.x(),
            "HIT",
            "{backend:?}"
        );
        let fr = app.get_with("/vary", "accept-language", "fr").await;
        assert_eq!(
            (fr.x(), fr.body.as_str()),
            ("HIT", "lang fr #2"),
            "{backend:?}"
        );
        assert_eq!(calls.get(), 3, "{backend:?}");
    }
}

#[tokio::test]
async fn with_background_refresh_a_response_that_may_not_be_stored_keeps_the_stale_page() {
    let clock = Clock::manual(1_000_000);
    let (manager, dir) = manager_with_clock(Backend::Memory, BACKGROUND, clock.clone());
    let calls = Calls::default();
    let c = calls.clone();
    let router = Router::new()
        .route(
            "/flaky",
            get(move || {
                let n = c.bump();
                async move {
                    // The second answer must not be cached.
                    let status = if n == 2 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    };
                    (status, format!("flaky #{n}"))
                }
            }),
        )
        .layer(CachePageLayer::new(manager.namespace("pages")));
    let app = App::start(router, dir).await;
    assert_eq!(app.get("/flaky").await.body, "flaky #1");
    clock.advance(Duration::from_secs(11));
    let stale = app.get("/flaky").await;
    assert_eq!((stale.x(), stale.body.as_str()), ("STALE", "flaky #1"));
    let region = manager.default_region().clone();
    eventually("the refresh has run", async || {
        region.stats().creator_calls == 2
    })
    .await;
    // Nothing was stored, and nothing went wrong: the next stale request
    // starts another refresh, which succeeds.
    assert_eq!(region.stats().creator_errors, 0);
    eventually("the new page is served", async || {
        app.get("/flaky").await.body == "flaky #3"
    })
    .await;
    assert_eq!(calls.get(), 3);
}

#[tokio::test]
async fn a_response_that_may_not_be_stored_is_no_creator_error() {
    let (cache, dir) = manager(Backend::Memory, &[("cache.expire", "60")]);
    let calls = Calls::default();
    let layer = CachePageLayer::new(cache.namespace("pages"));
    let app = App::start(counted_app(calls.clone(), layer), dir).await;
    for path in ["/cookie", "/no-store", "/missing", "/vary-star"] {
        assert_eq!(app.get(path).await.x(), "MISS", "{path}");
    }
    let stats = cache.default_region().stats();
    assert_eq!((stats.creator_calls, stats.creator_errors), (4, 0));
    assert_eq!(calls.get(), 4);
}

#[derive(Clone, FromRef)]
struct AppState {
    cache: CacheManager,
    motto: String,
}

async fn regions(cache: CacheManager, State(motto): State<String>) -> impl IntoResponse {
    let names: Vec<_> = cache.regions().map(|r| r.name().to_owned()).collect();
    format!("{motto}: {}", names.join(","))
}

async fn greet(cache: CacheManager, Path(name): Path<String>) -> String {
    let ns = cache.region("short_term").unwrap().namespace("greet");
    let page = ns
        .get_or_create(&name, || async { format!("hello {name}") })
        .await
        .unwrap();
    page.to_string()
}

#[tokio::test]
async fn the_manager_is_extracted_from_the_app_state() {
    let config = Config::from_flat([
        ("cache.type", "memory"),
        ("cache.regions", "short_term, long_term"),
    ])
    .unwrap();
    let cache = CacheManager::new(config).unwrap();
    let state = AppState {
        cache: cache.clone(),
        motto: "regions".into(),
    };
    let router = Router::new()
        .route("/regions", get(regions))
        .route("/greet/{name}", get(greet))
        .with_state(state);
    let app = App::start(router, tempfile::tempdir().unwrap()).await;
    assert_eq!(
        app.get("/regions").await.body,
        "regions: long_term,short_term"
    );
    assert_eq!(app.get("/greet/fred").await.body, "hello fred");
    app.get("/greet/fred").await;
    let stats = cache.region("short_term").unwrap().stats();
    assert_eq!(
        (stats.misses, stats.hits),
        (1, 1),
        "the handlers share the app's manager"
    );
}
