//! `tankard demo`: the blog post's Django app as an axum app. `/hello`
//! works 15 s and caches in `long_term`, `/goodbye` works 4 s and caches in
//! `short_term`; the first request is slow and the next ones are instant,
//! and a burst of requests on a cold page runs its work once.
//!
//! The pages show both ways of caching an app: `/hello` is cached whole by
//! [`CachePageLayer`] (so its responses carry `X-Cache`), `/goodbye` and
//! `/greet/{name}` call functions cached with `#[tankard::cached]`, as the
//! post's views call its `@cache.region` functions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tankard::web::CachePageLayer;
use tankard::{CacheManager, Config, Region};

use crate::DemoArgs;
use crate::failure::{Failure, Outcome};

/// The configuration used without `--config`.
pub(crate) const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The namespace of `/hello`'s pages (for `tankard get`; the key is
/// `GET <host>/hello`). `/goodbye` and `/greet` are in `demo::goodbye` and
/// `demo::greet`, set on their functions below.
const HELLO_NAMESPACE: &str = "demo::hello";

const HELLO_WORK: Duration = Duration::from_millis(15_000);
const GOODBYE_WORK: Duration = Duration::from_millis(4_000);

struct Demo {
    cache: CacheManager,
    hello_work: Duration,
    goodbye_work: Duration,
    /// `/report`'s namespace: in short_term, fresh for [`REPORT_LIFE`] times
    /// its work.
    reports: tankard::Cache,
    /// Whether the simulated upstream behind `/report` answers.
    upstream_up: Arc<AtomicBool>,
}

/// `/report`'s page expires ten times its work after it is made (10 s
/// by default), so that a failing upstream shows within seconds.
const REPORT_LIFE: u32 = 10;

type Shared = Arc<Demo>;

fn region<'a>(cache: &'a CacheManager, name: &str) -> Outcome<&'a Region> {
    cache.region(name).map_err(|err| {
        Failure::User(format!(
            "{err}\nthe demo needs the regions long_term and short_term (see `tankard demo --help`)"
        ))
    })
}

pub(crate) async fn run(args: DemoArgs) -> Outcome {
    let found = args.config.find()?;
    let config = match &found {
        Some(path) => Config::from_file(path)?,
        None => Config::from_toml_str(DEFAULT_CONFIG)?,
    };
    let cache = CacheManager::new(config)?;
    let pages = region(&cache, "long_term")?.namespace(HELLO_NAMESPACE);
    region(&cache, "short_term")?;
    // The cached functions below find their regions through the installed
    // manager; this process installs nothing else.
    tankard::install(cache.clone())
        .map_err(|_| Failure::User("a cache manager was installed twice".to_owned()))?;
    let work = args.work_ms.map(Duration::from_millis);
    let report_work = work.unwrap_or(GOODBYE_WORK) / 4;
    let reports = region(&cache, "short_term")?
        .namespace("demo::report")
        .expire(report_work * REPORT_LIFE);
    let demo = Arc::new(Demo {
        hello_work: work.unwrap_or(HELLO_WORK),
        goodbye_work: work.unwrap_or(GOODBYE_WORK),
        reports,
        upstream_up: Arc::new(AtomicBool::new(true)),
        cache,
    });

    let listener = tokio::net::TcpListener::bind(args.bind)
        .await
        .map_err(|err| bind_failure(args.bind, &err))?;
    let addr = listener
        .local_addr()
        .map_err(|err| Failure::Environment(format!("cannot read the bound address: {err}")))?;
    println!("Tankard demo: open http://{addr}/");
    for region in demo.cache.regions() {
        println!(
            "  region {:<12} {:<10} expire {}",
            region.name(),
            region.backend_name(),
            region
                .options()
                .expire
                .map_or("never".to_owned(), |e| format!("{}s", e.as_secs()))
        );
    }
    println!(
        "  /hello works {} ms (long_term), /goodbye and /greet/{{name}} {} ms (short_term)",
        demo.hello_work.as_millis(),
        demo.goodbye_work.as_millis()
    );
    match &found {
        Some(path) => println!("  config {}", path.display()),
        None => println!("  config built in (`tankard demo --print-config` prints it)"),
    }
    axum::serve(listener, router(demo, pages))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
            // In-flight pages may still be working (15 s for /hello): let a
            // second Ctrl-C quit without waiting for them.
            eprintln!("shutting down after the requests in flight; Ctrl-C again to quit now");
            tokio::spawn(async {
                let _ = tokio::signal::ctrl_c().await;
                std::process::exit(130);
            });
        })
        .await
        .map_err(|err| Failure::Environment(format!("the server failed: {err}")))
}

fn bind_failure(addr: SocketAddr, err: &std::io::Error) -> Failure {
    let hint = match err.kind() {
        std::io::ErrorKind::AddrInUse => {
            "; is another demo running? pick another address with --bind"
        }
        std::io::ErrorKind::PermissionDenied => "; ports below 1024 need privileges",
        _ => "",
    };
    Failure::Environment(format!("cannot listen on {addr}: {err}{hint}"))
}

/// The post's pages, and the library's dashboard at `/` (with `/stats`,
/// `/metrics` and `POST /invalidate/{region}`).
fn router(demo: Shared, pages: tankard::Cache) -> Router {
    let dashboard = tankard::web::dashboard(demo.cache.clone());
    Router::new()
        .route("/hello", get(hello).layer(CachePageLayer::new(pages)))
        .route("/goodbye", get(goodbye))
        .route("/greet/{name}", get(greet))
        .route("/report", get(report))
        .route("/upstream/down", post(upstream_down))
        .route("/upstream/up", post(upstream_up))
        .with_state(demo)
        .merge(dashboard)
        .fallback(not_found)
}

/// `datetime.now()` as Python prints it, as in the post.
fn now() -> String {
    chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string()
}

fn page(result: tankard::Result<String>) -> Response {
    match result {
        Ok(text) => text.into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cache error: {err}\n"),
        )
            .into_response(),
    }
}

/// The post's `hello` view; [`CachePageLayer`] caches its whole page.
async fn hello(State(demo): State<Shared>) -> String {
    tokio::time::sleep(demo.hello_work).await;
    format!("Hello world, its {}\n", now())
}

async fn goodbye(State(demo): State<Shared>) -> Response {
    page(fetch_goodbye(demo.goodbye_work).await)
}

/// The post's `fetch_data()` behind its `goodbye` view:
/// `@cache.region('short_term')`. The work's length does not change the
/// page, so it is left out of the key, which is then empty.
#[tankard::cached(region = "short_term", namespace = "demo::goodbye", skip(work))]
async fn fetch_goodbye(work: Duration) -> tankard::Result<String> {
    tokio::time::sleep(work).await;
    Ok(format!("Bye world, its {}\n", now()))
}

/// Positional arguments key the cache: one entry per name.
async fn greet(State(demo): State<Shared>, Path(name): Path<String>) -> Response {
    page(fetch_greeting(name, demo.goodbye_work).await)
}

/// Cached per name (the key of `/greet/fred` is `"fred"`, quotes included),
/// and tagged `greet:{name}`: `POST /invalidate/short_term?tag=greet:fred`
/// makes Fred's greeting anew.
#[tankard::cached(
    region = "short_term",
    namespace = "demo::greet",
    skip(work),
    tags = ["greet:{name}"]
)]
async fn fetch_greeting(name: String, work: Duration) -> tankard::Result<String> {
    tokio::time::sleep(work).await;
    Ok(format!("Hello {name}, its {}\n", now()))
}

/// What the simulated upstream answers while it is down.
#[derive(Debug)]
struct UpstreamDown;

impl std::fmt::Display for UpstreamDown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the upstream is down (POST /upstream/up brings it back)")
    }
}

impl std::error::Error for UpstreamDown {}

/// A report made by a slow upstream that `POST /upstream/down` switches
/// off. With `fail_safe` on short_term (the built-in config sets it), the
/// last good report keeps being served while the upstream is down; without
/// it, the page fails once the report expires.
async fn report(State(demo): State<Shared>) -> Response {
    let (up, work) = (demo.upstream_up.clone(), demo.goodbye_work / 4);
    let made = demo
        .reports
        .get_or_try_spawn("daily", move || async move {
            tokio::time::sleep(work).await;
            if !up.load(Ordering::SeqCst) {
                return Err(UpstreamDown);
            }
            Ok(format!("Daily report, made {}\n", now()))
        })
        .await;
    match made {
        Ok(text) => text.to_string().into_response(),
        Err(err) => (
            StatusCode::BAD_GATEWAY,
            format!("no report: {err}; set fail_safe on the region to keep serving the last one\n"),
        )
            .into_response(),
    }
}

async fn upstream_down(State(demo): State<Shared>) -> &'static str {
    demo.upstream_up.store(false, Ordering::SeqCst);
    "the upstream is down: /report serves its last good page (fail_safe)\n"
}

async fn upstream_up(State(demo): State<Shared>) -> &'static str {
    demo.upstream_up.store(true, Ordering::SeqCst);
    "the upstream is up\n"
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!(
            "no page at {}; try /, /hello, /goodbye, /greet/{{name}}, /report, /stats or /metrics\n",
            uri.path()
        ),
    )
        .into_response()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_has_the_post_regions() {
        let config = Config::from_toml_str(DEFAULT_CONFIG).unwrap();
        let long = config.region("long_term").unwrap();
        let short = config.region("short_term").unwrap();
        assert_eq!(long.backend.as_str(), "file");
        assert_eq!(long.expire, Some(Duration::from_secs(86400)));
        assert_eq!(
            long.data_dir.as_deref(),
            Some(std::path::Path::new("cache/data"))
        );
        assert_eq!(short.backend.as_str(), "memory");
        assert_eq!(short.expire, Some(Duration::from_secs(1200)));
    }
}
