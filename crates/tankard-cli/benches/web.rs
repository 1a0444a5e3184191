//! The page layer's cost: requests per second for one cached route through
//! `tankard::web::CachePageLayer`, against the same route answered by a
//! handler returning a constant (no cache at all), and against
//! `hitbox-tower` with its moka backend (with `--features bench-hitbox`).
//!
//! Two measurements per row:
//! - **service**: the axum `Router` called in-process (no socket), one
//!   request at a time: the layer's own overhead, undiluted;
//! - **http**: a real server on loopback and 8 keep-alive clients for a
//!   fixed time: what a user sees (client and server share the cores).
//!
//! ```text
//! cargo bench -p tankard-cli --bench web
//! cargo bench -p tankard-cli --bench web --features bench-hitbox
//! ```
//! `TANKARD_BENCH_REQUESTS` (default 450000) and `TANKARD_BENCH_SECONDS`
//! (default 9) size the two measurements per row; they are split over 9
//! interleaved rounds and each row's median round is reported.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::Request;
use axum::routing::get;
use http_body_util::BodyExt;
use tankard::web::CachePageLayer;
use tankard::{CacheManager, Config};
use tower::ServiceExt;

/// The page: the seed's text, of the size the demo serves.
const PAGE: &str = "Hello world, its 2009-01-23 12:34:56.789012";

fn request() -> Request<Body> {
    Request::get("/hello")
        .header("host", "bench.invalid")
        .body(Body::empty())
        .unwrap()
}

/// The route with no cache: a handler that returns a constant.
fn plain() -> Router {
    Router::new().route("/hello", get(|| async { PAGE }))
}

/// The same route behind the page layer; the handler would be slow, but
/// after the first request it never runs.
fn tankard_layer(config: Config) -> Router {
    let cache = CacheManager::new(config).unwrap();
    let pages = cache
        .namespace("pages")
        .expire(std::time::Duration::from_secs(3600));
    Router::new()
        .route("/hello", get(|| async { PAGE }))
        .layer(CachePageLayer::new(pages))
}

#[cfg(feature = "bench-hitbox")]
fn hitbox_layer() -> Router {
    use hitbox::Config as HitboxConfig;
    use hitbox::policy::PolicyConfig;
    use hitbox_http::extractors::Method;
    use hitbox_http::extractors::path::PathExtractor;
    use hitbox_http::predicates::response::StatusCodePredicate;
    use hitbox_http::predicates::{NeutralRequestPredicate, NeutralResponsePredicate};

    let backend = hitbox_moka::MokaBackend::builder()
        .max_entries(10_000)
        .build();
    let config = HitboxConfig::builder()
        .request_predicate(NeutralRequestPredicate::new())
        .response_predicate(NeutralResponsePredicate::new().status_code(axum::http::StatusCode::OK))
        .extractor(Method::new().path("/hello"))
        .policy(
            PolicyConfig::builder()
                .ttl(Duration::from_secs(3600))
                .build(),
        )
        .build();
    let layer = hitbox_tower::Cache::builder()
        .backend(backend)
        .config(config)
        .build();
    Router::new()
        .route("/hello", get(|| async { PAGE }))
        .layer(layer)
}

/// Requests per second through `router` called in-process, one at a time.
async fn service_rps(router: &Router, requests: usize) -> f64 {
    let start = Instant::now();
    for _ in 0..requests {
        let res = router.clone().oneshot(request()).await.unwrap();
        std::hint::black_box(res.into_body().collect().await.unwrap().to_bytes());
    }
    requests as f64 / start.elapsed().as_secs_f64()
}

async fn warm_up(router: &Router) {
    for _ in 0..1_000 {
        let res = router.clone().oneshot(request()).await.unwrap();
        assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), PAGE);
    }
}

/// A loopback server for `router`; returns its URL.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hello", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

/// Requests per second through a loopback server, 8 keep-alive clients.
async fn http_rps(client: &reqwest::Client, url: &str, seconds: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let body = client
                        .get(&url)
                        .send()
                        .await
                        .unwrap()
                        .bytes()
                        .await
                        .unwrap();
                    std::hint::black_box(body);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for c in clients {
        total += c.await.unwrap();
    }
    total as f64 / start.elapsed().as_secs_f64()
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn env_number(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with
    // no such flag: do a quick smoke run then.
    let full = std::env::args().any(|a| a == "--bench");
    let requests = if full {
        env_number("TANKARD_BENCH_REQUESTS", 450_000.0) as usize
    } else {
        9_000
    };
    let seconds = if full {
        env_number("TANKARD_BENCH_SECONDS", 9.0)
    } else {
        0.9
    };
    let dir = tempfile::tempdir().unwrap();

    let mut rows: Vec<(&str, Router)> = vec![
        ("no cache, constant handler", plain()),
        (
            "tankard CachePageLayer, memory region",
            tankard_layer(Config::memory()),
        ),
        (
            "tankard CachePageLayer, file region",
            tankard_layer(
                Config::from_flat([
                    ("cache.type", "file"),
                    ("cache.data_dir", dir.path().to_str().unwrap()),
                ])
                .unwrap(),
            ),
        ),
    ];
    #[cfg(feature = "bench-hitbox")]
    rows.push(("hitbox-tower 0.2, moka backend", hitbox_layer()));
    #[cfg(not(feature = "bench-hitbox"))]
    eprintln!("(hitbox-tower row skipped: run with --features bench-hitbox)");

    // Rounds interleave the rows, and each row's median is reported, so
    // that a change in the machine's load hits every row alike.
    let rounds = 9;
    // `TANKARD_BENCH_ONLY=memory` keeps the baseline and the rows whose
    // name contains the word (for profiling one of them).
    if let Ok(only) = std::env::var("TANKARD_BENCH_ONLY") {
        let mut first = true;
        rows.retain(|(name, _)| std::mem::take(&mut first) || name.contains(&only));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut service = vec![Vec::new(); rows.len()];
    runtime.block_on(async {
        for (_, router) in &rows {
            warm_up(router).await;
        }
        for _ in 0..rounds {
            for (i, (_, router)) in rows.iter().enumerate() {
                service[i].push(service_rps(router, requests / rounds).await);
            }
        }
    });
    let multi = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut http = vec![Vec::new(); rows.len()];
    multi.block_on(async {
        let client = reqwest::Client::new();
        let mut urls = Vec::new();
        for (_, router) in &rows {
            let url = serve(router.clone()).await;
            for _ in 0..100 {
                assert_eq!(
                    client.get(&url).send().await.unwrap().text().await.unwrap(),
                    PAGE
                );
            }
            urls.push(url);
        }
        for _ in 0..rounds {
            for (i, url) in urls.iter().enumerate() {
                http[i].push(http_rps(&client, url, seconds / rounds as f64).await);
            }
        }
    });
    let service: Vec<f64> = service.into_iter().map(median).collect();
    let http: Vec<f64> = http.into_iter().map(median).collect();

    println!(
        "{:<40} {:>14} {:>8} {:>12} {:>8}",
        "route /hello", "service req/s", "ratio", "http req/s", "ratio"
    );
    for (i, (name, _)) in rows.iter().enumerate() {
        println!(
            "{name:<40} {:>14.0} {:>8.2} {:>12.0} {:>8.2}",
            service[i],
            service[i] / service[0],
            http[i],
            http[i] / http[0]
        );
    }
    #[cfg(feature = "bench-hitbox")]
    if let Some(hitbox) = rows.iter().position(|(n, _)| n.starts_with("hitbox")) {
        println!(
            "tankard memory ÷ hitbox moka: service {:.2}x, http {:.2}x",
            service[1] / service[hitbox],
            http[1] / http[hitbox]
        );
    }
}
