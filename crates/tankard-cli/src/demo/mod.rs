//! `tankard demo`: the blog post's Django app as an axum app. `/hello`
//! works 15 s and caches in `long_term`, `/goodbye` works 4 s and caches in
//! `short_term`; the first request is slow and the next ones are instant,
//! and a burst of requests on a cold page runs its work once.
//!
//! The pages show both ways of caching an app: `/hello` is cached whole by
//! [`CachePageLayer`] (so its responses carry `X-Cache`), `/goodbye` and
//! `/greet/{name}` call functions cached with `#[tankard::cached]`, as the
//! post's views call its `@cache.region` functions.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tankard::web::CachePageLayer;
use tankard::{CacheManager, Config, Invalidation, Region};

use crate::DemoArgs;
use crate::failure::{Failure, Outcome};

/// The configuration used without `--config`.
pub(crate) const DEFAULT_CONFIG: &str = include_str!("default.toml");
const DASHBOARD: &str = include_str!("dashboard.html");

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
}

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
    let demo = Arc::new(Demo {
        hello_work: work.unwrap_or(HELLO_WORK),
        goodbye_work: work.unwrap_or(GOODBYE_WORK),
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

fn router(demo: Shared, pages: tankard::Cache) -> Router {
    Router::new()
        .route("/", get(dashboard))
        .route("/hello", get(hello).layer(CachePageLayer::new(pages)))
        .route("/goodbye", get(goodbye))
        .route("/greet/{name}", get(greet))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/invalidate/{region}", post(invalidate))
        .fallback(not_found)
        .with_state(demo)
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

/// Cached per name (the key of `/greet/fred` is `"fred"`, quotes included).
#[tankard::cached(region = "short_term", namespace = "demo::greet", skip(work))]
async fn fetch_greeting(name: String, work: Duration) -> tankard::Result<String> {
    tokio::time::sleep(work).await;
    Ok(format!("Hello {name}, its {}\n", now()))
}

/// One region's line of `/stats`.
#[derive(Serialize)]
struct RegionStats {
    backend: &'static str,
    hits: u64,
    misses: u64,
    stale_served: u64,
    creator_calls: u64,
    creator_errors: u64,
    lock_waits: u64,
    backend_errors: u64,
}

#[derive(Serialize)]
struct StatsBody {
    regions: BTreeMap<String, RegionStats>,
}

fn region_stats(demo: &Demo) -> StatsBody {
    let regions = demo
        .cache
        .regions()
        .map(|region| {
            let s = region.stats();
            let line = RegionStats {
                backend: region.backend_name(),
                hits: s.hits,
                misses: s.misses,
                stale_served: s.stale_served,
                creator_calls: s.creator_calls,
                creator_errors: s.creator_errors,
                lock_waits: s.lock_waits,
                backend_errors: s.backend_errors,
            };
            (region.name().to_owned(), line)
        })
        .collect();
    StatsBody { regions }
}

async fn stats(State(demo): State<Shared>) -> Response {
    match serde_json::to_string(&region_stats(&demo)) {
        Ok(json) => ([(header::CONTENT_TYPE, "application/json")], json).into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
    }
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn render_metrics(regions: &[(String, &'static str, tankard::Stats)]) -> String {
    let mut out = String::new();
    for counter in tankard::Stats::COUNTERS {
        let name = counter.metric;
        let _ = writeln!(out, "# HELP {name} {}", counter.help);
        let _ = writeln!(out, "# TYPE {name} counter");
        for (region, backend, stats) in regions {
            let _ = writeln!(
                out,
                "{name}{{region=\"{}\",backend=\"{}\"}} {}",
                label(region),
                label(backend),
                counter.read(stats)
            );
        }
    }
    out
}

async fn metrics(State(demo): State<Shared>) -> Response {
    let regions: Vec<_> = demo
        .cache
        .regions()
        .map(|r| (r.name().to_owned(), r.backend_name(), r.stats()))
        .collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&regions),
    )
        .into_response()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COUNTERS: [&str; 7] = [
    "hits",
    "misses",
    "stale_served",
    "creator_calls",
    "creator_errors",
    "lock_waits",
    "backend_errors",
];

/// The dashboard: rendered with the counters as they are now, then kept
/// live by its script, which polls `/stats`.
async fn dashboard(State(demo): State<Shared>) -> Html<String> {
    let stats = region_stats(&demo);
    let mut rows = String::new();
    for (name, s) in &stats.regions {
        let values = [
            s.hits,
            s.misses,
            s.stale_served,
            s.creator_calls,
            s.creator_errors,
            s.lock_waits,
            s.backend_errors,
        ];
        let name = escape_html(name);
        let _ = write!(
            rows,
            "<tr data-region=\"{name}\"><th>{name}</th><td class=\"backend\">{}</td>",
            escape_html(s.backend)
        );
        for (counter, value) in COUNTERS.iter().zip(values) {
            let _ = write!(rows, "<td data-counter=\"{counter}\">{value}</td>");
        }
        let _ = write!(
            rows,
            "<td><button data-invalidate=\"{name}\">invalidate</button></td></tr>"
        );
    }
    let work = |d: Duration| format!("{:.1}&nbsp;s", d.as_secs_f64());
    Html(
        DASHBOARD
            .replace("{{ROWS}}", &rows)
            .replace("{{HELLO_WORK}}", &work(demo.hello_work))
            .replace("{{GOODBYE_WORK}}", &work(demo.goodbye_work)),
    )
}

async fn invalidate(State(demo): State<Shared>, Path(name): Path<String>) -> Response {
    let region = match demo.cache.region(&name) {
        Ok(region) => region,
        Err(err) => return (StatusCode::NOT_FOUND, format!("{err}\n")).into_response(),
    };
    match region.invalidate(Invalidation::Soft).await {
        Ok(()) => format!(
            "soft-invalidated region {name}: its entries are stale; each is served \
             stale while one request regenerates it\n"
        )
        .into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot invalidate region {name}: {err}\n"),
        )
            .into_response(),
    }
}

async fn not_found(uri: Uri) -> Response {
    (
        StatusCode::NOT_FOUND,
        format!(
            "no page at {}; try /, /hello, /goodbye, /greet/{{name}}, /stats or /metrics\n",
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
    fn metrics_escape_labels_and_list_every_counter() {
        let stats = tankard::Stats::default();
        let text = render_metrics(&[("a\"b".to_owned(), "memory", stats)]);
        assert!(text.contains("tankard_hits_total{region=\"a\\\"b\",backend=\"memory\"} 0"));
        assert_eq!(
            text.matches("# TYPE").count(),
            tankard::Stats::COUNTERS.len()
        );
        assert!(text.contains("# HELP tankard_decode_errors_total Stored entries"));
    }

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
