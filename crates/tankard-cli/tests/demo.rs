//! `tankard demo` over HTTP.

use std::time::Duration;

use crate::support::{Demo, config, seed_ini, tankard, text};

/// The keys of a region in `/stats` (DESIGN §10; tests/dashboard.rs
/// checks what each holds).
const KEYS: [&str; 15] = [
    "backend",
    "hits",
    "misses",
    "stale_served",
    "creator_calls",
    "creator_errors",
    "lock_waits",
    "backend_errors",
    "decode_errors",
    "fail_safe_served",
    "entries",
    "bytes",
    "hit_ratio",
    "lookup_us",
    "creator_ms",
];

#[tokio::test]
async fn the_seed_pages_are_slow_once_then_cached() {
    let dir = tempfile::tempdir().unwrap();
    // No --config: the embedded default, long_term in ./cache.
    let demo = Demo::start(dir.path(), 300, &[]);
    assert!(demo.banner.contains("long_term"), "{}", demo.banner);
    assert!(demo.banner.contains("short_term"), "{}", demo.banner);

    let (status, hello) = demo.get("/hello").await;
    assert_eq!(status, 200);
    assert!(hello.starts_with("Hello world, its "), "{hello}");
    assert_eq!(
        demo.get("/hello").await.1,
        hello,
        "the second /hello is the cached page"
    );

    let (status, bye) = demo.get("/goodbye").await;
    assert_eq!(status, 200);
    assert!(bye.starts_with("Bye world, its "), "{bye}");
    assert_eq!(demo.get("/goodbye").await.1, bye);

    let fred = demo.get("/greet/fred").await.1;
    let wilma = demo.get("/greet/wilma").await.1;
    assert!(fred.starts_with("Hello fred, its "), "{fred}");
    assert!(wilma.starts_with("Hello wilma, its "), "{wilma}");
    assert_eq!(demo.get("/greet/fred").await.1, fred, "cached per name");

    let stats = demo.stats().await;
    let regions = stats["regions"].as_object().unwrap();
    assert_eq!(regions.len(), 2, "{stats}");
    for (region, backend) in [("long_term", "file"), ("short_term", "memory")] {
        let line = regions[region].as_object().unwrap();
        assert_eq!(line["backend"], backend);
        let mut keys: Vec<_> = line.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected, "the JSON shape of DESIGN §10");
    }
    let long = &regions["long_term"];
    assert_eq!(
        (
            long["misses"].as_u64(),
            long["hits"].as_u64(),
            long["creator_calls"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    let short = &regions["short_term"];
    // /goodbye, /greet/fred, /greet/wilma were made once each.
    assert_eq!(
        (short["creator_calls"].as_u64(), short["hits"].as_u64()),
        (Some(3), Some(2))
    );

    // The file region's page is on disk under the working directory.
    assert!(dir.path().join("cache/data").is_dir());
}

/// /hello is cached whole by the page layer, which says so in `X-Cache`;
/// /goodbye and /greet are cached functions. Every page ends its line.
#[tokio::test]
async fn hello_shows_x_cache_and_pages_end_with_a_newline() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 50, &[]);
    let (status, x_cache, first) = demo.get_x_cache("/hello").await;
    assert_eq!((status, x_cache.as_deref()), (200, Some("MISS")));
    let (_, x_cache, second) = demo.get_x_cache("/hello").await;
    assert_eq!(x_cache.as_deref(), Some("HIT"));
    assert_eq!(second, first);
    for path in ["/hello", "/goodbye", "/greet/fred"] {
        let (status, _, body) = demo.get_x_cache(path).await;
        assert_eq!(status, 200);
        assert!(body.ends_with('\n'), "{path}: {body:?}");
        assert_eq!(body.matches('\n').count(), 1, "{path}: {body:?}");
    }
    let (_, x_cache, _) = demo.get_x_cache("/goodbye").await;
    assert_eq!(
        x_cache, None,
        "a function's cache leaves the response alone"
    );
}

/// The README's `tankard get` on the demo's entries: the namespaces and
/// keys it names are the ones the demo writes.
#[tokio::test]
async fn tankard_get_reads_the_demo_s_entries_where_the_readme_says() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "type = \"file\"");
    let f = config.to_str().unwrap();
    let demo = Demo::start(dir.path(), 50, &["--config", f]);
    let fred = demo.get("/greet/fred").await.1;
    let bye = demo.get("/goodbye").await.1;
    demo.get("/hello").await;
    let host = demo.url.trim_start_matches("http://");
    for (region, namespace, key, value) in [
        ("short_term", "demo::greet", "\"fred\"", Some(&fred)),
        ("short_term", "demo::goodbye", "", Some(&bye)),
        (
            "long_term",
            "demo::hello",
            &format!("GET {host}/hello"),
            None,
        ),
    ] {
        let out = tankard(
            dir.path(),
            &[
                "get",
                "--config",
                f,
                "--region",
                region,
                "--namespace",
                namespace,
                key,
            ],
        );
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{namespace} {key}: {stdout}");
        assert!(stdout.contains("state:       fresh"), "{stdout}");
        if let Some(value) = value {
            assert!(
                stdout.contains(&format!("value (text): {value}")),
                "{stdout}"
            );
        }
    }
}

#[tokio::test]
async fn metrics_page_and_unknown_routes() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 50, &[]);
    demo.get("/hello").await;

    let (status, kind, metrics) = demo.get_with_type("/metrics").await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/plain; version=0.0.4"), "{kind}");
    assert!(
        metrics.contains("# TYPE tankard_creator_calls_total counter"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tankard_creator_calls_total{region=\"long_term\",backend=\"file\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tankard_misses_total{region=\"short_term\",backend=\"memory\"} 0"),
        "{metrics}"
    );

    let (status, kind, page) = demo.get_with_type("/").await;
    assert_eq!(status, 200);
    assert!(kind.starts_with("text/html"), "{kind}");
    assert!(page.contains("data-region=\"long_term\""));
    assert!(page.contains("data-region=\"short_term\""));

    let (status, body) = demo.get("/no/such/page").await;
    assert_eq!(status, 404);
    assert!(body.contains("/no/such/page"), "{body}");
}

#[tokio::test]
async fn invalidate_a_region_and_unknown_regions_are_404() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 50, &[]);
    let first = demo.get("/hello").await.1;

    let (status, body) = demo.post("/invalidate/nowhere").await;
    assert_eq!(status, 404);
    assert!(
        body.contains("nowhere") && body.contains("long_term"),
        "{body}"
    );

    let (status, body) = demo.post("/invalidate/long_term").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("long_term"), "{body}");
    // Soft: the page is stale; this lone request regenerates it.
    let second = demo.get("/hello").await.1;
    assert_ne!(second, first, "a soft-invalidated page is regenerated");
    assert_eq!(demo.counter("long_term", "creator_calls").await, 2);
    assert_eq!(demo.get("/hello").await.1, second);
}

/// `/greet/{name}` is tagged `greet:{name}`: invalidating Fred's tag
/// makes his greeting anew and leaves Wilma's.
#[tokio::test]
async fn invalidating_a_greeting_s_tag_makes_that_greeting_anew() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 0, &[]);
    let fred = demo.get("/greet/fred").await.1;
    let wilma = demo.get("/greet/wilma").await.1;
    assert_eq!(demo.get("/greet/fred").await.1, fred);
    // The greeting shows the time to the microsecond: one made anew
    // differs from the first.
    let (status, body) = demo.post("/invalidate/short_term?tag=greet%3Afred").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("invalidated tag greet:fred"), "{body}");
    assert_ne!(demo.get("/greet/fred").await.1, fred, "made anew");
    assert_eq!(demo.get("/greet/wilma").await.1, wilma, "still cached");
    let (status, body) = demo.post("/invalidate/short_term?tag=").await;
    assert_eq!(status, 400, "{body}");
}

#[tokio::test]
async fn a_burst_on_cold_goodbye_runs_the_work_once() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 300, &[]);
    let bodies = demo.burst("/goodbye", 16).await;
    assert!(bodies.iter().all(|b| *b == bodies[0]), "{bodies:?}");
    assert_eq!(demo.counter("short_term", "creator_calls").await, 1);
    assert_eq!(
        demo.counter("short_term", "misses").await + demo.counter("short_term", "hits").await,
        16
    );
}

#[tokio::test]
async fn an_expired_page_is_served_stale_while_one_request_regenerates() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "type = \"memory\"\nexpire = 1\nstale = 60");
    let demo = Demo::start(dir.path(), 1000, &["--config", config.to_str().unwrap()]);
    let old = demo.get("/goodbye").await.1;
    // A real wait past the 1 s expiry: this test runs the real process.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let bodies = demo.burst("/goodbye", 8).await;
    assert!(
        bodies.contains(&old),
        "someone got the stale page: {bodies:?}"
    );
    assert!(
        bodies.iter().any(|b| *b != old),
        "the regenerating request got the new page: {bodies:?}"
    );
    assert_eq!(demo.counter("short_term", "creator_calls").await, 2);
    assert!(demo.counter("short_term", "stale_served").await >= 1);
    let new = demo.get("/goodbye").await.1;
    assert_ne!(new, old);
}

#[test]
fn a_config_that_does_not_load_exits_1_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let seed = seed_ini();
    let out = tankard(
        dir.path(),
        &[
            "demo",
            "--bind",
            "127.0.0.1:0",
            "--config",
            seed.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cache.short_term.url") && err.contains("127.0.0.1.11211"),
        "{err}"
    );
    assert!(!text(&out.stdout).contains("http://"), "it never bound");

    let out = tankard(dir.path(), &["demo", "--config", "no-such-file.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no-such-file.toml"));

    let no_regions = dir.path().join("plain.toml");
    std::fs::write(&no_regions, "[cache]\ntype = \"memory\"\n").unwrap();
    let out = tankard(
        dir.path(),
        &["demo", "--config", no_regions.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("long_term"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_port_in_use_exits_2_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = tankard(dir.path(), &["demo", "--bind", &addr]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains(&addr) && err.contains("in use"), "{err}");
}

/// Two demo processes sharing a Redis `short_term`: a burst spread over
/// both runs the work once in all.
#[cfg(feature = "redis")]
#[tokio::test]
async fn two_demos_sharing_redis_run_goodbye_once() {
    let url =
        std::env::var("TANKARD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:26379/".into());
    let host = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    assert!(
        std::net::TcpStream::connect(&host).is_ok(),
        "Redis is not reachable at {url}: run scripts/services"
    );
    let dir = tempfile::tempdir().unwrap();
    // A prefix of its own, so that every run starts cold.
    let prefix = format!(
        "demo-test-{}-{}:",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let config = config(
        dir.path(),
        &format!("type = \"redis\"\nurl = \"{url}\"\nexpire = 60\nprefix = \"{prefix}\""),
    );
    let args = ["--config", config.to_str().unwrap()];
    let a = Demo::start(dir.path(), 1000, &args);
    let b = Demo::start(dir.path(), 1000, &args);
    let (from_a, from_b) = tokio::join!(a.burst("/goodbye", 8), b.burst("/goodbye", 8));
    let all: Vec<_> = from_a.iter().chain(&from_b).collect();
    assert!(all.iter().all(|body| *body == all[0]), "{all:?}");
    let calls = a.counter("short_term", "creator_calls").await
        + b.counter("short_term", "creator_calls").await;
    assert_eq!(calls, 1, "one creator run across both processes");
}

#[tokio::test]
async fn a_failing_backend_is_bypassed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    // long_term's data_dir is a plain file: every read and write of the
    // file backend fails, as a full or broken disk would.
    let blocked = dir.path().join("not-a-directory");
    std::fs::write(&blocked, "x").unwrap();
    let config = dir.path().join("broken.toml");
    std::fs::write(
        &config,
        format!(
            "[cache]\nregions = [\"short_term\", \"long_term\"]\n\
             [cache.long_term]\ntype = \"file\"\ndata_dir = \"{}\"\nlock_dir = \"{}\"\n\
             [cache.short_term]\ntype = \"memory\"\n",
            blocked.display(),
            dir.path().join("lock").display()
        ),
    )
    .unwrap();
    let demo = Demo::start(dir.path(), 50, &["--config", config.to_str().unwrap()]);
    let (status, first) = demo.get("/hello").await;
    assert_eq!(status, 200, "{first}");
    assert!(first.starts_with("Hello world, its "), "{first}");
    let errors = demo.counter("long_term", "backend_errors").await;
    assert!(errors >= 1, "the failures are counted");
    let (status, second) = demo.get("/hello").await;
    assert_eq!(status, 200);
    assert_ne!(second, first, "nothing could be stored: the work ran again");
    assert!(
        demo.counter("long_term", "backend_errors").await > errors,
        "and they keep rising"
    );
}

#[tokio::test]
async fn report_keeps_answering_with_fail_safe_while_its_upstream_is_down() {
    let dir = tempfile::tempdir().unwrap();
    // `--work-ms 200`: /report works 50 ms and its page expires after 500.
    let config = config(
        dir.path(),
        "type = \"memory\"\nexpire = 1200\nfail_safe = \"1h\"\nfail_safe_throttle = \"200ms\"",
    );
    let demo = Demo::start(dir.path(), 200, &["--config", config.to_str().unwrap()]);
    let (status, good) = demo.get("/report").await;
    assert_eq!(status, 200, "{good}");
    assert!(good.starts_with("Daily report, made "), "{good}");
    assert_eq!(demo.post("/upstream/down").await.0, 200);
    // A real wait past the report's expiry: this test runs the real process.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(demo.get("/report").await, (200, good.clone()));
    assert_eq!(demo.counter("short_term", "fail_safe_served").await, 1);
    // Throttled: asked again only after fail_safe_throttle; then, back up,
    // a new report replaces the old one.
    assert_eq!(demo.post("/upstream/up").await.0, 200);
    let mut fresh = None;
    for _ in 0..100 {
        let (status, body) = demo.get("/report").await;
        assert_eq!(status, 200, "{body}");
        if body != good {
            fresh = Some(body);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(fresh.is_some(), "no new report once the upstream was back");
}

#[tokio::test]
async fn report_fails_without_fail_safe_once_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "type = \"memory\"\nexpire = 1200");
    let demo = Demo::start(dir.path(), 200, &["--config", config.to_str().unwrap()]);
    assert_eq!(demo.get("/report").await.0, 200);
    demo.post("/upstream/down").await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (status, body) = demo.get("/report").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("the upstream is down"), "{body}");
}
