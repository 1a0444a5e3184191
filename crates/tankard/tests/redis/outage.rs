//! Servers that die, hang or want a password: each test starts its own
//! `redis-server` on a free loopback port, so it can kill, stop and
//! restart it without disturbing the shared servers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::common::{
    Kind, PrivateServer, Raw, counted, entry_key, manager, toml_for, unique_prefix,
};

/// Puts and reads back until the server answers again (bounded).
async fn wait_until_cached(ns: &tankard::Cache, key: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        ns.put(key, "back".to_string()).await.unwrap();
        if ns.get::<String>(key).await.unwrap().is_some() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the cache was not used again after the server came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_server_is_bypassed_and_used_again_when_back() {
    let mut server = PrivateServer::start(&[]);
    let cache = manager(&toml_for(
        "ext:redis",
        &server.url(),
        &unique_prefix("outage"),
        "timeout = \"500ms\"",
    ));
    let ns = cache.namespace("n");
    let region = cache.default_region();
    let runs = Arc::new(AtomicUsize::new(0));

    assert_eq!(
        *ns.get_or_create("k", counted(&runs, "v1")).await.unwrap(),
        "v1"
    );
    assert_eq!(
        *ns.get_or_create("k", counted(&runs, "v2")).await.unwrap(),
        "v1"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(region.stats().backend_errors, 0);

    server.kill();
    for i in 0..5 {
        let want = format!("down-{i}");
        let got = ns.get_or_create("k", counted(&runs, &want)).await.unwrap();
        assert_eq!(*got, want, "with bypass the creator's value comes back");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 6);
    let errors = region.stats().backend_errors;
    assert!(errors >= 5, "backend errors counted: {errors}");

    // Same port, same manager: the connection comes back by itself.
    server.spawn();
    wait_until_cached(&ns, "k").await;
    let hits = region.stats().hits;
    let before = runs.load(Ordering::SeqCst);
    assert_eq!(
        *ns.get_or_create("k", counted(&runs, "unused"))
            .await
            .unwrap(),
        "back"
    );
    assert_eq!(runs.load(Ordering::SeqCst), before);
    assert_eq!(region.stats().hits, hits + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_server_cannot_hang_a_call() {
    let server = PrivateServer::start(&[]);
    let cache = manager(&toml_for(
        "ext:redis",
        &server.url(),
        &unique_prefix("hung"),
        "timeout = \"200ms\"",
    ));
    let ns = cache.namespace("n");
    ns.put("k", "cached".to_string()).await.unwrap();
    assert_eq!(*ns.get::<String>("k").await.unwrap().unwrap(), "cached");

    // Stopped, the server keeps its sockets open and answers nothing.
    server.signal("STOP");
    let runs = Arc::new(AtomicUsize::new(0));
    let call = ns.get_or_create("k", counted(&runs, "fresh"));
    let value = tokio::time::timeout(Duration::from_secs(20), call)
        .await
        .expect("a call hung on a stopped server")
        .unwrap();
    assert_eq!(*value, "fresh");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert!(cache.default_region().stats().backend_errors >= 1);

    // With `on_backend_error = error` the caller sees a timeout instead.
    let strict = manager(&toml_for(
        "ext:redis",
        &server.url(),
        &unique_prefix("hung-strict"),
        "timeout = \"200ms\"\non_backend_error = \"error\"",
    ));
    let err = tokio::time::timeout(
        Duration::from_secs(20),
        strict.namespace("n").get::<String>("k"),
    )
    .await
    .expect("a call hung on a stopped server")
    .unwrap_err();
    assert!(err.is_timeout() && err.is_backend(), "{err}");

    server.signal("CONT");
    wait_until_cached(&ns, "k2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_down_at_start_up_does_not_fail_the_app() {
    let mut server = PrivateServer::start(&[]);
    server.kill();
    // Building the manager needs no server.
    let cache = manager(&toml_for(
        "ext:redis",
        &server.url(),
        &unique_prefix("late"),
        "timeout = \"300ms\"",
    ));
    let ns = cache.namespace("n");
    assert_eq!(*ns.get_or_create("k", || async { 5u8 }).await.unwrap(), 5);
    assert!(cache.default_region().stats().backend_errors >= 1);
    server.spawn();
    wait_until_cached(&ns, "k").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn urls_with_password_and_database_number_work() {
    let server = PrivateServer::start(&["--requirepass", "s3cret"]);
    let prefix = unique_prefix("auth");
    let url = format!("redis://:s3cret@127.0.0.1:{}/3", server.port);
    let cache = manager(&toml_for(
        "ext:redis",
        &url,
        &prefix,
        "on_backend_error = \"error\"",
    ));
    let ns = cache.namespace("n");
    ns.put("k", 1u16).await.unwrap();
    assert_eq!(*ns.get::<u16>("k").await.unwrap().unwrap(), 1);

    // It went to database 3, and only there.
    let key = entry_key(&prefix, "n", "k");
    let mut db3 = Raw::connect_url(Kind::Single, &url).await;
    assert!(db3.get(&key).await.is_some());
    let mut db0 = Raw::connect_url(
        Kind::Single,
        &format!("redis://:s3cret@127.0.0.1:{}/0", server.port),
    )
    .await;
    assert!(db0.get(&key).await.is_none());

    // A wrong password is a backend error that does not repeat the password.
    let wrong = format!("redis://:hunter2@127.0.0.1:{}/3", server.port);
    let cache = manager(&toml_for(
        "ext:redis",
        &wrong,
        &prefix,
        "on_backend_error = \"error\"",
    ));
    let err = cache.namespace("n").get::<u16>("k").await.unwrap_err();
    assert!(err.is_backend(), "{err}");
    assert!(!err.to_string().contains("hunter2"), "{err}");
}

#[cfg(not(feature = "redis-tls"))]
#[test]
fn rediss_without_the_tls_feature_is_a_config_error_naming_it() {
    let toml = toml_for("ext:redis", "rediss://user:pw@127.0.0.1:26379/1", "p/", "");
    let config = tankard::Config::from_toml_str(&toml).unwrap();
    let err = tankard::CacheManager::new(config).unwrap_err();
    let message = err.to_string();
    assert!(err.is_config(), "{message}");
    assert!(
        message.contains("cache.url") && message.contains("redis-tls"),
        "{message}"
    );
    assert!(!message.contains(":pw@"), "{message}");
}

/// `rediss://` against a private TLS server whose certificate is signed by
/// a CA made here. The client trusts the platform's roots, which
/// `SSL_CERT_FILE` replaces; setting it needs a process of its own (the
/// test binary again, running `tls_child`).
#[cfg(feature = "redis-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_connect_with_tls() {
    use std::process::Command;

    let certs = tempfile::tempdir().unwrap();
    let dir = certs.path();
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl is needed to make the test certificates");
        assert!(status.success(), "openssl {args:?}");
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509"][..],
            &ec,
            &[
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                "/CN=tankard test CA",
            ],
        ]
        .concat(),
    );
    openssl(
        &[
            &["req"][..],
            &ec,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        ]
        .concat(),
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);

    let tls_port = crate::common::free_port().to_string();
    let path = |name: &str| dir.join(name).display().to_string();
    let server = PrivateServer::start(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        &path("server.pem"),
        "--tls-key-file",
        &path("server.key"),
        "--tls-ca-cert-file",
        &path("ca.pem"),
        "--tls-auth-clients",
        "no",
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/2");

    // Trusting our CA: it works.
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "outage::tls_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TANKARD_TLS_URL", &url)
        .env("SSL_CERT_FILE", path("ca.pem"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("tls:ok"),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Not trusting it (the platform's roots): a backend error, not a panic.
    let cache = manager(&toml_for(
        "ext:redis",
        &url,
        &unique_prefix("tls"),
        "on_backend_error = \"error\"",
    ));
    let err = cache.namespace("n").get::<u8>("k").await.unwrap_err();
    assert!(err.is_backend(), "{err}");
    drop(server);
}

/// The TLS client's side of `rediss_urls_connect_with_tls`.
#[cfg(feature = "redis-tls")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of rediss_urls_connect_with_tls; started by it"]
async fn tls_child() {
    let url = std::env::var("TANKARD_TLS_URL").expect("run only by rediss_urls_connect_with_tls");
    let cache = manager(&toml_for(
        "ext:redis",
        &url,
        &unique_prefix("tls"),
        "on_backend_error = \"error\"",
    ));
    let ns = cache.namespace("n");
    ns.put("k", 42u8).await.unwrap();
    assert_eq!(*ns.get::<u8>("k").await.unwrap().unwrap(), 42);
    println!("tls:ok");
}

/// Fail-safe through an outage of the store itself: Redis killed while the
/// creator's own upstream fails too. With an L1, the last good value this
/// process holds stands in for the dead store: it is served, the creator
/// is tried again only once `fail_safe_throttle` has passed, and caching
/// resumes when Redis is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_safe_serves_the_l1_s_last_good_value_while_redis_is_dead() {
    let mut server = PrivateServer::start(&[]);
    let config = tankard::Config::from_toml_str(&toml_for(
        "redis",
        &server.url(),
        &unique_prefix("fail-safe-outage"),
        "l1 = true\nfail_safe = \"1h\"\nfail_safe_throttle = \"30s\"\ntimeout = \"300ms\"",
    ))
    .unwrap();
    let clock = tankard::Clock::manual(1_700_000_000_000);
    let cache = tankard::CacheManager::with_clock(config, clock.clone()).unwrap();
    let ns = cache.namespace("reports");
    let region = cache.default_region();
    let runs = Arc::new(AtomicUsize::new(0));
    let upstream_down = |runs: &Arc<AtomicUsize>| {
        let runs = runs.clone();
        move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
            Err::<String, _>("the upstream is down")
        }
    };

    let made = ns.get_or_create("daily", || async { "v1".to_string() });
    assert_eq!(*made.await.unwrap(), "v1");
    server.kill();
    clock.advance(Duration::from_secs(61));

    // Expired, the store dead, the creator failing: the last good value.
    let got = ns.get_or_try_create("daily", upstream_down(&runs)).await;
    assert_eq!(*got.unwrap(), "v1");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(region.stats().fail_safe_served, 1);
    assert!(region.stats().backend_errors > 0);

    // Within the throttle the creator is not tried again.
    clock.advance(Duration::from_secs(10));
    for _ in 0..3 {
        let got = ns.get_or_try_create("daily", upstream_down(&runs)).await;
        assert_eq!(*got.unwrap(), "v1");
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "throttled");

    // Past it, one more try, and the last good value again.
    clock.advance(Duration::from_secs(21));
    let got = ns.get_or_try_create("daily", upstream_down(&runs)).await;
    assert_eq!(*got.unwrap(), "v1");
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    assert_eq!(region.stats().fail_safe_served, 2);

    // A key this process never held has no last good value: the error.
    let never = ns.get_or_try_create("never", upstream_down(&runs)).await;
    assert!(never.unwrap_err().is_creator());

    // Redis back, the upstream back: caching resumes.
    server.spawn();
    wait_until_cached(&ns, "other").await;
    clock.advance(Duration::from_secs(31));
    let got = ns.get_or_create("daily", || async { "v2".to_string() });
    assert_eq!(*got.await.unwrap(), "v2");
    let again = ns.get_or_create::<String, _, _>("daily", || async { unreachable!("cached") });
    assert_eq!(*again.await.unwrap(), "v2");
}
