//! `tankard demo`: the blog post's Django app as an axum app. `/hello`
//! works 15 s and caches in `long_term`, `/goodbye` works 4 s and caches in
//! `short_term`; the first request is slow and the next ones are instant,
//! and a burst of requests on a cold page runs its work once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tankard::{Cache, CacheManager, Config, Region};

use crate::DemoArgs;
use crate::failure::{Failure, Outcome};

/// The configuration used without `--config`.
pub(crate) const DEFAULT_CONFIG: &str = include_str!("default.toml");

/// The namespaces the demo's pages are cached in (for `tankard get`).
pub(crate) const HELLO_NAMESPACE: &str = "demo::hello";
pub(crate) const GOODBYE_NAMESPACE: &str = "demo::goodbye";
pub(crate) const GREET_NAMESPACE: &str = "demo::greet";
/// The key of /hello and /goodbye: the post's `fetch_data()` takes no argument.
pub(crate) const FETCH_DATA_KEY: &str = "fetch_data";

const HELLO_WORK: Duration = Duration::from_millis(15_000);
const GOODBYE_WORK: Duration = Duration::from_millis(4_000);

struct Demo {
    cache: CacheManager,
    hello: Cache,
    goodbye: Cache,
    greet: Cache,
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
    let config = match &args.config {
        Some(path) => Config::from_file(path)?,
        None => Config::from_toml_str(DEFAULT_CONFIG)?,
    };
    let cache = CacheManager::new(config)?;
    let long_term = region(&cache, "long_term")?;
    let short_term = region(&cache, "short_term")?;
    let work = args.work_ms.map(Duration::from_millis);
    let demo = Arc::new(Demo {
        hello: long_term.namespace(HELLO_NAMESPACE),
        goodbye: short_term.namespace(GOODBYE_NAMESPACE),
        greet: short_term.namespace(GREET_NAMESPACE),
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
    axum::serve(listener, router(demo))
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
fn router(demo: Shared) -> Router {
    let dashboard = tankard::web::dashboard(demo.cache.clone());
    Router::new()
        .route("/hello", get(hello))
        .route("/goodbye", get(goodbye))
        .route("/greet/{name}", get(greet))
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

fn page(result: tankard::Result<Arc<String>>) -> Response {
    match result {
        Ok(text) => text.as_str().to_owned().into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cache error: {err}\n"),
        )
            .into_response(),
    }
}

async fn hello(State(demo): State<Shared>) -> Response {
    let work = demo.hello_work;
    page(
        demo.hello
            .get_or_create(FETCH_DATA_KEY, || async move {
                tokio::time::sleep(work).await;
                format!("Hello world, its {}", now())
            })
            .await,
    )
}

async fn goodbye(State(demo): State<Shared>) -> Response {
    let work = demo.goodbye_work;
    page(
        demo.goodbye
            .get_or_create(FETCH_DATA_KEY, || async move {
                tokio::time::sleep(work).await;
                format!("Bye world, its {}", now())
            })
            .await,
    )
}

/// Positional arguments key the cache: one entry per name.
async fn greet(State(demo): State<Shared>, Path(name): Path<String>) -> Response {
    let work = demo.goodbye_work;
    let key = name.clone();
    page(
        demo.greet
            .get_or_create(&key, || async move {
                tokio::time::sleep(work).await;
                format!("Hello {name}, its {}", now())
            })
            .await,
    )
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
