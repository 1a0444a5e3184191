//! The per-region counters, and their export through the `metrics` facade.

use metrics_util::debugging::{DebugValue, DebuggingRecorder};

use crate::conformance::fixture;

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
    assert_eq!(published.len(), 16, "8 counters for each of 2 regions");
}
