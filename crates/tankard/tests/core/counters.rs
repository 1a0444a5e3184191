//! The per-region figures (counters, latencies, sizes), their export
//! through the `metrics` facade, and the tracing spans of the slow path.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use crate::conformance::fixture;
use crate::eventually::eventually;
use crate::spans::Spans;

#[tokio::test]
async fn counters_are_published_through_the_metrics_facade() {
    let f = fixture("memory", &[("cache.regions", "short_term")]);
    let ns = f.manager.region("short_term").unwrap().namespace("n");
    ns.get_or_create("k", || async { 1u8 }).await.unwrap();
    ns.get_or_create("k", || async { 1u8 }).await.unwrap();

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || f.manager.publish_metrics());
    let published: Vec<(String, String, u64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(key, _, _, value)| {
            let region = key
                .key()
                .labels()
                .find(|l| l.key() == "region")?
                .value()
                .to_owned();
            match value {
                DebugValue::Counter(n) => Some((key.key().name().to_owned(), region, n)),
                _ => None,
            }
        })
        .collect();
    let get = |name: &str, region: &str| {
        published
            .iter()
            .find(|(n, r, _)| n == name && r == region)
            .map(|(_, _, v)| *v)
    };
    assert_eq!(get("tankard_hits_total", "short_term"), Some(1));
    assert_eq!(get("tankard_misses_total", "short_term"), Some(1));
    assert_eq!(get("tankard_creator_calls_total", "short_term"), Some(1));
    assert_eq!(get("tankard_hits_total", "default"), Some(0));
    assert_eq!(published.len(), 18, "9 counters for each of 2 regions");
}

/// What a debugging recorder holds: each metric's name, its labels
/// (`region` and, for lookups, `tier`) and its value.
fn recorded(recorder: &metrics_util::debugging::Snapshotter) -> Vec<(String, String, DebugValue)> {
    recorder
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let labels: Vec<String> = key
                .key()
                .labels()
                .filter(|l| l.key() != "backend")
                .map(|l| l.value().to_owned())
                .collect();
            (key.key().name().to_owned(), labels.join(","), value)
        })
        .collect()
}

#[tokio::test]
async fn a_recorder_sees_counts_latencies_and_sizes_as_they_happen() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // This test's runtime has one thread: every count is made here.
    let _recorder = metrics::set_default_local_recorder(&recorder);
    let f = fixture(
        "file",
        &[
            ("cache.regions", "short_term, pages"),
            ("cache.short_term.type", "memory"),
        ],
    );
    let short = f.manager.region("short_term").unwrap();
    let ns = short.namespace("n");
    ns.get_or_create("k", || async { 1u8 }).await.unwrap();
    for _ in 0..64 {
        ns.get_or_create("k", || async { 2u8 }).await.unwrap();
    }
    let pages = f.manager.region("pages").unwrap().namespace("p");
    pages.get_or_create("p", || async { 3u8 }).await.unwrap();
    pages.get_or_create("p", || async { 4u8 }).await.unwrap();

    // No publish_metrics(): everything below arrived as it happened.
    let seen = recorded(&snapshotter);
    let counter = |name: &str, labels: &str| {
        seen.iter().find_map(|(n, l, v)| match v {
            DebugValue::Counter(c) if n == name && l == labels => Some(*c),
            _ => None,
        })
    };
    let gauge = |name: &str, labels: &str| {
        seen.iter().find_map(|(n, l, v)| match v {
            DebugValue::Gauge(g) if n == name && l == labels => Some(g.into_inner()),
            _ => None,
        })
    };
    let histogram = |name: &str, labels: &str| {
        seen.iter()
            .find_map(|(n, l, v)| match v {
                DebugValue::Histogram(h) if n == name && l == labels => Some(h.len()),
                _ => None,
            })
            .unwrap_or(0)
    };
    // The 64th hit of the thread's row forwarded the row.
    assert_eq!(counter("tankard_hits_total", "short_term"), Some(64));
    assert_eq!(counter("tankard_misses_total", "short_term"), Some(1));
    assert_eq!(
        counter("tankard_creator_calls_total", "short_term"),
        Some(1)
    );
    assert_eq!(counter("tankard_hits_total", "pages"), Some(1));
    assert_eq!(counter("tankard_misses_total", "pages"), Some(1));
    assert_eq!(gauge("tankard_entries", "short_term"), Some(1.0));
    assert_eq!(histogram("tankard_creator_seconds", "short_term"), 1);
    assert_eq!(histogram("tankard_creator_seconds", "pages"), 1);
    // One memory hit in 64 is timed.
    assert_eq!(histogram("tankard_lookup_seconds", "short_term,memory"), 1);
    // The miss read twice (before and after taking the lock), the hit once.
    assert_eq!(histogram("tankard_lookup_seconds", "pages,shared"), 3);

    // The same figures, in the process.
    let latency = short.latency();
    assert_eq!(latency.memory_hits.count(), 1);
    assert_eq!(latency.lookup().count(), 64, "a sample stands for 64 hits");
    assert_eq!(latency.creator.count(), 1);
    assert!(latency.creator.quantile(0.99).is_some());
    assert_eq!(short.stats().hit_ratio(), Some(64.0 / 65.0));
    let pages_latency = f.manager.region("pages").unwrap().recent_latency();
    assert_eq!(pages_latency.shared_lookups.count(), 3);
}

#[tokio::test]
async fn a_miss_is_traced_and_a_memory_hit_is_not() {
    let spans = Spans::default();
    let _spans = spans.install();
    let f = fixture("file", &[]);
    let ns = f.manager.namespace("views");
    ns.get_or_create("k", || async { 1u8 }).await.unwrap();

    let all = spans.all();
    let miss_at = all.iter().position(|s| s.name == "tankard.miss").unwrap();
    let miss = &all[miss_at];
    assert_eq!(miss.level, tracing::Level::DEBUG);
    assert_eq!(miss.field("region"), Some("default"));
    assert_eq!(miss.field("namespace"), Some("views"));
    assert_eq!(miss.field("outcome"), Some("created"));
    let create = spans.named("tankard.create");
    assert_eq!(create.len(), 1);
    assert_eq!(
        create[0].parent,
        Some(miss_at),
        "the creator runs inside the miss"
    );
    assert_eq!(create[0].field("outcome"), Some("ok"));
    let ops: Vec<_> = spans
        .named("tankard.backend")
        .iter()
        .map(|s| {
            (
                s.field("op").unwrap().to_owned(),
                s.field("outcome").unwrap().to_owned(),
                s.level,
            )
        })
        .collect();
    let trace = tracing::Level::TRACE;
    assert_eq!(
        ops,
        [
            ("load".to_owned(), "ok".to_owned(), trace),
            ("load".to_owned(), "ok".to_owned(), trace),
            ("store".to_owned(), "ok".to_owned(), trace),
        ]
    );

    let memory = fixture("memory", &[]);
    let ns = memory.manager.namespace("views");
    ns.get_or_create("k", || async { 1u8 }).await.unwrap();
    let before = spans.all().len();
    ns.get_or_create("k", || async { 2u8 }).await.unwrap();
    assert_eq!(spans.all().len(), before, "a memory hit opens no span");
}

#[tokio::test]
async fn a_background_refresh_is_traced_as_its_own_root() {
    let f = fixture(
        "memory",
        &[
            ("cache.expire", "10"),
            ("cache.stale", "600"),
            ("cache.refresh", "background"),
        ],
    );
    let ns = f.manager.namespace("reports");
    ns.get_or_spawn("daily", || async { 1u32 }).await.unwrap();
    f.clock.advance(Duration::from_secs(11));

    let spans = Spans::default();
    let _spans = spans.install();
    let stale = ns.get_or_spawn("daily", || async { 2u32 }).await.unwrap();
    assert_eq!(*stale, 1, "the caller gets the stale value");
    eventually("the refresh task's span is closed", async || {
        spans
            .named("tankard.refresh")
            .first()
            .is_some_and(|s| s.closed)
    })
    .await;
    let all = spans.all();
    let at = all
        .iter()
        .position(|s| s.name == "tankard.refresh")
        .unwrap();
    let refresh = &all[at];
    assert_eq!(refresh.parent, None, "the task outlives the call");
    assert_eq!(refresh.field("region"), Some("default"));
    assert_eq!(refresh.field("namespace"), Some("reports"));
    assert_eq!(refresh.field("outcome"), Some("refreshed"));
    let create = spans.named("tankard.create");
    assert_eq!(create.len(), 1);
    assert_eq!(create[0].parent, Some(at));
    assert!(
        spans.named("tankard.miss").is_empty(),
        "a stale hit is no miss"
    );
    assert_eq!(
        *ns.get_or_spawn("daily", || async { 3u32 }).await.unwrap(),
        2
    );
}
