//! A config `tankard check` accepts never panics later (issue 11): every
//! bounded key at its largest, on memcached (the live servers, and one
//! that refuses connections) beside memory and file regions.

use std::time::Duration;

use tankard::{CacheManager, Config};

use crate::support::{unique_prefix, url};

/// Every bounded key at its largest allowed value, as `tankard check` would
/// take it (tests/core/config.rs checks that one step past each is refused).
const LARGEST: [(&str, &str); 11] = [
    ("timeout", "1h"),
    ("retry_after", "1h"),
    ("lock_timeout", "24h"),
    ("wait_timeout", "24h"),
    ("expire", "876000h"),
    ("stale", "876000h"),
    ("starttime", "4102444800"),
    ("key_length", "65535"),
    ("max_entries", "1000000000"),
    ("max_bytes", "1099511627776"),
    ("max_entry_bytes", "1073741824"),
];

/// A local port nothing listens on: connections are refused at once.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_at_its_largest_never_panics_on_any_backend() {
    let dir = tempfile::tempdir().unwrap();
    let mut pairs: Vec<(String, String)> = LARGEST
        .iter()
        .map(|(key, largest)| (format!("cache.{key}"), (*largest).to_owned()))
        .collect();
    pairs.extend(
        [
            ("cache.type", "memory".to_owned()),
            ("cache.prefix", unique_prefix("limits")),
            ("cache.regions", "disk, mc, dead".to_owned()),
            ("cache.disk.type", "file".to_owned()),
            ("cache.disk.data_dir", dir.path().display().to_string()),
            ("cache.mc.type", "ext:memcached".to_owned()),
            ("cache.mc.url", url()),
            ("cache.dead.type", "ext:memcached".to_owned()),
            ("cache.dead.url", format!("127.0.0.1:{}", refused_port())),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let manager = CacheManager::new(Config::from_flat(pairs).unwrap()).unwrap();
    let long_key = "k".repeat(70_000);

    let calls = async {
        for name in ["default", "disk", "mc", "dead"] {
            let region = if name == "default" {
                manager.default_region()
            } else {
                manager.region(name).unwrap()
            };
            let ns = region.namespace("limits");
            for key in ["k", long_key.as_str()] {
                let v = ns.get_or_create(key, || async { 1u32 }).await.unwrap();
                assert_eq!(*v, 1, "{name}");
                // The dead server is bypassed (on_backend_error = bypass):
                // whatever a call returns there, it returns and never panics.
                let put = ns.put(key, 2u32).await;
                if name != "dead" {
                    put.unwrap();
                    // Made before `starttime` (2100): stored, but stale.
                    let peeked = ns.peek::<u32>(key).await.unwrap();
                    assert_eq!(peeked.map(|(v, fresh)| (*v, fresh)), Some((2, false)));
                }
                let v = ns.get_or_create(key, || async { 3u32 }).await.unwrap();
                assert_eq!(*v, 3, "{name}");
            }
            let cleared = ns.clear().await;
            if name != "dead" {
                cleared.unwrap();
            }
            assert!(
                ns.peek::<u32>("k").await.unwrap_or(None).is_none(),
                "{name}"
            );
        }
    };
    // Generous: every call here is a local round trip or a refused connect.
    tokio::time::timeout(Duration::from_secs(60), calls)
        .await
        .expect("no call waits on the hour-long limits");
}
