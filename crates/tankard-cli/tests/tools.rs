//! `tankard check/stats/get/invalidate/clear/gc/bench` on real config
//! files, against entries written by the library in this process.

use std::path::Path;

use tankard::{CacheManager, Config};

use crate::support::{config, seed_ini, tankard, text};

/// Runs `tankard` and returns (exit code, stdout, stderr).
fn run(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = tankard(dir, args);
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[test]
fn check_names_the_seed_typo_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(dir.path(), &["check", seed_ini().to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(
            r#"cache.short_term.url: "127.0.0.1.11211" is not a memcached address: no port (did you mean "127.0.0.1:11211"?); expected host:port"#
        ),
        "{err}"
    );
}

#[test]
fn check_prints_each_region_s_resolved_options() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(
        dir.path(),
        "type = \"memory\"\nexpire = 1200\nstale = 30\nrefresh = \"background\"",
    );
    let (code, out, err) = run(dir.path(), &["check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok"), "{out}");
    let section = |name: &str| {
        let start = out
            .find(&format!("[{name}]"))
            .unwrap_or_else(|| panic!("no [{name}] in {out}"));
        let rest = &out[start + 1..];
        rest[..rest.find("\n[").unwrap_or(rest.len())].to_owned()
    };
    let long = section("long_term");
    assert!(long.contains("type              file"), "{long}");
    assert!(long.contains("expire            86400s"), "{long}");
    assert!(
        long.contains(&dir.path().join("cache/data").display().to_string()),
        "{long}"
    );
    let short = section("short_term");
    assert!(short.contains("type              memory"), "{short}");
    assert!(short.contains("expire            1200s"), "{short}");
    assert!(short.contains("stale             30s"), "{short}");
    assert!(short.contains("refresh           background\n"), "{short}");
    assert!(long.contains("refresh           foreground"), "{long}");
    // Background refresh is built: nothing warns about it any more.
    assert!(!err.contains("refresh"), "{err}");
    assert!(!out.contains("WARN"), "{out}");
    // Regions are listed: the global options are theirs, not a region.
    assert!(!out.contains("[default]"), "{out}");
    // Only what each backend reads: no url on a file region, no data_dir
    // or lock_timeout on a memory one, no max_entries on a file one.
    assert!(long.contains("data_dir") && !long.contains("url"), "{long}");
    assert!(!long.contains("max_entries"), "{long}");
    for option in [
        "data_dir",
        "lock_dir",
        "url",
        "lock_timeout",
        "secret",
        "l1 ",
    ] {
        assert!(!short.contains(option), "{option} in {short}");
    }
    assert!(short.contains("max_entries       10000"), "{short}");

    let (code, _, err) = run(dir.path(), &["check", "missing.ini"]);
    assert_eq!(code, 1);
    assert!(err.contains("missing.ini"), "{err}");
}

#[test]
fn check_prints_the_policies_and_only_the_settings_of_those_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(
        dir.path(),
        "type = \"memory\"\nexpire = 60\nearly_refresh = 0.8\nfail_safe = \"1h\"\nhard_timeout = \"2s\"",
    );
    let (code, out, err) = run(dir.path(), &["check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let short = &out[out.find("[short_term]").unwrap_or_else(|| panic!("{out}"))..];
    for line in [
        "early_refresh     0.8",
        "fail_safe         3600s",
        "fail_safe_throttle 30s",
        "soft_timeout      -",
        "hard_timeout      2s",
    ] {
        assert!(short.contains(line), "{line} in {short}");
    }
    // XFetch's beta only with XFetch; the throttle only with fail_safe.
    assert!(!short.contains("early_refresh_beta"), "{short}");
    let long = &out[out.find("[long_term]").unwrap()..out.find("[short_term]").unwrap()];
    assert!(long.contains("early_refresh     off"), "{long}");
    assert!(!long.contains("fail_safe_throttle"), "{long}");
}

#[test]
fn check_prints_the_l1_options_of_each_region() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(
        dir.path(),
        "l1 = true\nl1_max_entries = 500\nl1_max_bytes = 65536\nl1_expire = \"1.5s\"\nbackplane = \"none\"",
    );
    let (code, out, err) = run(dir.path(), &["check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let short = &out[out.find("[short_term]").unwrap()..];
    for line in [
        "l1                true",
        "l1_max_entries    500",
        "l1_max_bytes      65536",
        "l1_expire         1.5s",
        "backplane         none",
    ] {
        assert!(short.contains(line), "{line} in {short}");
    }
    // long_term has no L1: the tier's options are not shown for it.
    let long = &out[out.find("[long_term]").unwrap()..out.find("[short_term]").unwrap()];
    assert!(long.contains("l1                false"), "{long}");
    for option in ["l1_max_entries", "l1_max_bytes", "l1_expire", "backplane"] {
        assert!(!long.contains(option), "{option} in {long}");
    }
    // The defaults, as a region with an L1 inherits them.
    let file = config(dir.path(), "l1 = true");
    let (code, out, err) = run(dir.path(), &["check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let short = &out[out.find("[short_term]").unwrap()..];
    for line in [
        "l1                true",
        "l1_max_entries    10000",
        "l1_max_bytes      -",
        "l1_expire         default (expire with a backplane, 5s without)",
        "backplane         auto",
    ] {
        assert!(short.contains(line), "{line} in {short}");
    }

    // `type = tiered` from a v1 config says what replaced it.
    let file = config(dir.path(), "type = \"tiered\"");
    let (code, _, err) = run(dir.path(), &["check", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(r#"cache.short_term.type: "tiered" is no longer a backend type"#),
        "{err}"
    );
}

#[test]
fn check_refuses_a_value_past_its_largest_and_names_the_largest() {
    let dir = tempfile::tempdir().unwrap();
    // Issue 11: this passed `check`, then the first memcached call panicked.
    let file = config(dir.path(), "timeout = \"10000000000000000000\"");
    let (code, out, err) = run(dir.path(), &["check", file.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        err.contains(
            r#"cache.short_term.timeout: "10000000000000000000" is too long; expected at most 1h"#
        ),
        "{err}"
    );
    // An integer too large for TOML itself is named by its key too.
    let file = config(dir.path(), "expire = 99999999999999999999");
    let (code, _, err) = run(dir.path(), &["check", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(r#"cache.short_term.expire: "99999999999999999999" is too long; expected at most 876000h (100 years)"#),
        "{err}"
    );
    let file = config(dir.path(), "max_entries = 99999999999999999999");
    let (code, _, err) = run(dir.path(), &["check", file.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains(r#"cache.short_term.max_entries: "99999999999999999999" is too large; expected at most 1000000000"#),
        "{err}"
    );
}

#[test]
fn check_prints_durations_written_with_units() {
    let dir = tempfile::tempdir().unwrap();
    // `check` connects to nothing: no server needs to be at this address.
    let file = config(
        dir.path(),
        "type = \"ext:memcached\"\nurl = \"127.0.0.1:1\"\nexpire = \"20m\"\nstale = 2.5\nlock_timeout = \"24h\"\ntimeout = \"250ms\"",
    );
    let (code, out, err) = run(dir.path(), &["check", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let short = &out[out.find("[short_term]").unwrap()..];
    for line in [
        "type              memcached",
        "url               127.0.0.1:1",
        "expire            1200s",
        "stale             2.5s",
        "lock_timeout      86400s",
        "timeout           250ms",
    ] {
        assert!(short.contains(line), "{line} in {short}");
    }
    // A server region reads no directory, and no memory bound.
    for option in ["data_dir", "lock_dir", "max_entries"] {
        assert!(!short.contains(option), "{option} in {short}");
    }
    // The file region beside it shows zero stale as seconds too.
    let long = &out[out.find("[long_term]").unwrap()..out.find("[short_term]").unwrap()];
    assert!(long.contains("stale             0s\n"), "{long}");
}

#[test]
fn check_warns_on_stderr_about_duplicate_keys_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("app.ini");
    std::fs::write(
        &ini,
        "[app:main]\ncache.type = memory\ncache.expire = 10\nbeaker.cache.expire = 20\n",
    )
    .unwrap();
    let (code, out, err) = run(dir.path(), &["check", "app.ini"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "app.ini: line 4: beaker.cache.expire sets the same option as line 3 (cache.expire); the value on line 4 wins"
        ),
        "{err}"
    );
    assert!(out.contains("expire            20s"), "{out}");
    assert!(!out.contains("WARN"), "{out}");

    std::fs::write(&ini, "").unwrap();
    let (code, out, err) = run(dir.path(), &["check", "app.ini"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(
            "app.ini: the file is empty, so the cache is the default one: in-process memory, no regions"
        ),
        "{err}"
    );
    assert!(out.contains("app.ini: ok"), "{out}");
}

#[test]
fn bad_arguments_exit_1_and_help_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(run(dir.path(), &["get"]).0, 1);
    assert_eq!(run(dir.path(), &["frobnicate"]).0, 1);
    assert_eq!(run(dir.path(), &["demo", "--bind", "nowhere"]).0, 1);
    let (code, out, _) = run(dir.path(), &["--help"]);
    assert_eq!(code, 0);
    for command in [
        "demo",
        "check",
        "stats",
        "get",
        "invalidate",
        "clear",
        "gc",
        "bench",
    ] {
        assert!(out.contains(command), "{command} in {out}");
    }
}

/// A config with a file `long_term` and entries written by the library.
async fn stocked(dir: &Path) -> (std::path::PathBuf, CacheManager) {
    let file = config(dir, "type = \"memory\"");
    let cache = CacheManager::new(Config::from_file(&file).unwrap()).unwrap();
    let long = cache.region("long_term").unwrap();
    let views = long.namespace("views");
    views.put("page", "hello page".to_string()).await.unwrap();
    views.put("numbers", vec![1u32, 2, 3]).await.unwrap();
    views.put("bell", "ding\u{7}".to_string()).await.unwrap();
    // Dead on arrival: no expiry left and no stale grace, so gc removes it.
    long.namespace("old")
        .expire(std::time::Duration::from_secs(0))
        .put("gone", 1u8)
        .await
        .unwrap();
    (file, cache)
}

#[tokio::test]
async fn get_shows_state_times_size_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _cache) = stocked(dir.path()).await;
    let f = file.to_str().unwrap();
    let at = [
        "--config",
        f,
        "--region",
        "long_term",
        "--namespace",
        "views",
    ];

    let (code, out, err) = run(dir.path(), &[&["get"][..], &at, &["page"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state:       fresh"), "{out}");
    assert!(out.contains("value (text): hello page"), "{out}");
    assert!(
        out.contains("created:") && out.contains("fresh until:"),
        "{out}"
    );
    assert!(out.contains("11 bytes of value"), "{out}");

    let (_, out, _) = run(dir.path(), &[&["get"][..], &at, &["numbers"]].concat());
    assert!(out.contains("value (hex, postcard): 03010203"), "{out}");

    let (_, out, _) = run(dir.path(), &[&["get"][..], &at, &["bell"]].concat());
    assert!(
        out.contains("value (text): ding\\u{7}\n"),
        "control characters are escaped: {out}"
    );

    // Nothing there: exit 3, so that a script can tell it from an error.
    let (code, out, err) = run(dir.path(), &[&["get"][..], &at, &["absent"]].concat());
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("state:       missing"), "{out}");
    assert!(
        err.contains("nothing stored under absent in long_term/views"),
        "{err}"
    );
}

#[tokio::test]
async fn invalidate_and_clear_change_what_the_library_sees() {
    let dir = tempfile::tempdir().unwrap();
    let (file, cache) = stocked(dir.path()).await;
    let f = file.to_str().unwrap();
    let views = cache.region("long_term").unwrap().namespace("views");
    let at = [
        "--config",
        f,
        "--region",
        "long_term",
        "--namespace",
        "views",
    ];

    let (code, out, err) = run(
        dir.path(),
        &[&["invalidate"][..], &at, &["numbers"]].concat(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("removed numbers"), "{out}");
    assert!(views.get::<Vec<u32>>("numbers").await.unwrap().is_none());

    // Soft invalidation of the region: the page is stale, still readable.
    let (code, out, _) = run(
        dir.path(),
        &["invalidate", "--config", f, "--region", "long_term"],
    );
    assert_eq!(code, 0);
    assert!(out.contains("soft-invalidated region long_term"), "{out}");
    let (fresh, is_fresh) = views.peek::<String>("page").await.unwrap().unwrap();
    assert_eq!((fresh.as_str(), is_fresh), ("hello page", false));
    let (_, out, _) = run(dir.path(), &[&["get"][..], &at, &["page"]].concat());
    assert!(out.contains("state:       stale"), "{out}");

    let (code, out, _) = run(dir.path(), &[&["clear"][..], &at].concat());
    assert_eq!(code, 0);
    assert!(out.contains("cleared namespace views"), "{out}");
    assert!(views.peek::<String>("page").await.unwrap().is_none());

    let (code, out, _) = run(
        dir.path(),
        &[
            "invalidate",
            "--config",
            f,
            "--region",
            "long_term",
            "--hard",
        ],
    );
    assert_eq!(code, 0);
    assert!(out.contains("hard-invalidated"), "{out}");
    let (code, out, _) = run(dir.path(), &[&["get"][..], &at, &["page"]].concat());
    assert_eq!(code, 3, "gone after the hard invalidation: {out}");
}

/// `invalidate --tag` in the `tankard` process hides, in this one, every
/// entry that carries the tag, and only those; a bad tag is the user's
/// error.
#[tokio::test]
async fn invalidate_tag_hides_the_tagged_entries_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let (file, cache) = stocked(dir.path()).await;
    let f = file.to_str().unwrap();
    let views = cache.region("long_term").unwrap().namespace("views");
    let tagged = views.clone().tags(["user:7"]).unwrap();
    tagged.put("profile", "Ann".to_string()).await.unwrap();
    views
        .clone()
        .tags(["user:8"])
        .unwrap()
        .put("other", "Bob".to_string())
        .await
        .unwrap();
    let at = ["--config", f, "--region", "long_term"];
    let entry = ["--namespace", "views", "profile"];
    let (code, out, err) = run(dir.path(), &[&["get"][..], &at, &entry].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tags:        user:7"), "{out}");
    let (code, out, err) = run(
        dir.path(),
        &[&["invalidate"][..], &at, &["--tag", "user:7"]].concat(),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("invalidated tag user:7"), "{out}");
    assert!(views.get::<String>("profile").await.unwrap().is_none());
    let (code, out, _) = run(dir.path(), &[&["get"][..], &at, &entry].concat());
    assert_eq!(code, 3, "hidden by its tag: {out}");
    assert_eq!(
        views
            .get::<String>("other")
            .await
            .unwrap()
            .as_deref()
            .map(String::as_str),
        Some("Bob")
    );
    assert!(
        views.get::<String>("page").await.unwrap().is_some(),
        "untagged"
    );

    let (code, _, err) = run(
        dir.path(),
        &[&["invalidate"][..], &at, &["--tag", ""]].concat(),
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("empty"), "{err}");
}

#[tokio::test]
async fn memory_and_unknown_regions_are_user_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (file, _cache) = stocked(dir.path()).await;
    let f = file.to_str().unwrap();
    let (code, _, err) = run(
        dir.path(),
        &[
            "get",
            "--config",
            f,
            "--region",
            "short_term",
            "--namespace",
            "n",
            "k",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("in memory"), "{err}");
    let (code, _, err) = run(
        dir.path(),
        &[
            "clear",
            "--config",
            f,
            "--region",
            "mid_term",
            "--namespace",
            "n",
        ],
    );
    assert_eq!(code, 1);
    assert!(err.contains("mid_term"), "{err}");
}

#[tokio::test]
async fn gc_purges_expired_entries_and_stats_reports_usage() {
    let dir = tempfile::tempdir().unwrap();
    let (file, cache) = stocked(dir.path()).await;
    let f = file.to_str().unwrap();
    let long = cache.region("long_term").unwrap();
    let before = long.usage().await.unwrap().entries.unwrap();
    // Left by writers killed mid-write: one 11 minutes ago, one just now
    // (which could still be a live writer's).
    let data = dir.path().join("cache/data");
    std::fs::write(data.join(".tmp-4194000-0"), vec![0u8; 1234]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(data.join(".tmp-4194000-0"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(660))
        .unwrap();
    std::fs::write(data.join(".tmp-4194000-1"), vec![0u8; 10]).unwrap();

    let (code, out, err) = run(dir.path(), &["gc", "--config", f]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(
            "long_term (file): removed 1 expired entries \
             and 1 temp files (1234 bytes) left by crashed writers"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "1 expired entries and 1 temp files (1234 bytes) left by crashed writers removed"
        ),
        "{out}"
    );
    assert!(!data.join(".tmp-4194000-0").exists());
    assert!(data.join(".tmp-4194000-1").exists(), "young: kept");
    assert_eq!(long.usage().await.unwrap().entries.unwrap(), before - 1);
    assert!(
        long.namespace("views")
            .contains::<String>("page")
            .await
            .unwrap(),
        "live entries stay"
    );

    let (code, out, err) = run(dir.path(), &["stats", "--config", f]);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("long_term"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("file") && line.contains("yes"), "{line}");
    assert!(
        out.contains("1 temp files (10 bytes) left by crashed writers"),
        "{out}"
    );
    assert!(
        out.contains("expire 86400s · stale 0s · lock auto"),
        "{out}"
    );
    assert!(
        out.contains("hit ratio") && out.contains("/stats"),
        "says where the hit ratio is: {out}"
    );

    let (code, out, _) = run(dir.path(), &["stats", "--config", f, "--json"]);
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["regions"]["long_term"]["backend"], "file");
    assert_eq!(json["regions"]["long_term"]["reachable"], true);
    assert_eq!(
        json["regions"]["long_term"]["entries"].as_u64(),
        Some(before - 1)
    );
    assert_eq!(json["regions"]["long_term"]["temp_files"].as_u64(), Some(1));
    assert_eq!(
        json["regions"]["long_term"]["temp_bytes"].as_u64(),
        Some(10)
    );
    // A memory region's entries are in the app's process: tankard cannot
    // count them, and says so rather than "0 entries".
    let short = &json["regions"]["short_term"];
    assert_eq!(short["backend"], "memory");
    assert_eq!(short["in_process"], true);
    assert!(short["reachable"].is_null());
    assert!(
        short["entries"].is_null() && short["bytes"].is_null(),
        "{short}"
    );
    assert_eq!(json["regions"]["long_term"]["in_process"], false);
    let (_, out, _) = run(dir.path(), &["stats", "--config", f]);
    let line = out
        .lines()
        .find(|l| l.starts_with("short_term"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        !line.contains(" 0 "),
        "no count for a memory region: {line}"
    );
    assert!(out.contains("in memory, in another process"), "{out}");
}

#[tokio::test]
async fn bench_prints_throughput_and_percentiles_and_removes_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "type = \"memory\"");
    let f = file.to_str().unwrap();
    // An entry of the user's own beside the benchmark's: it stays.
    let cache = CacheManager::new(Config::from_file(&file).unwrap()).unwrap();
    let long = cache.region("long_term").unwrap();
    let views = long.namespace("views");
    views.put("page", "hello page".to_string()).await.unwrap();
    assert_eq!(long.usage().await.unwrap().entries, Some(1));
    for region in ["long_term", "short_term"] {
        let (code, out, err) = run(
            dir.path(),
            &[
                "bench",
                "--config",
                f,
                "--region",
                region,
                "--duration",
                "0.3",
                "--keys",
                "20",
                "--concurrency",
                "4",
            ],
        );
        assert_eq!(code, 0, "{err}");
        assert!(
            out.contains("throughput:") && out.contains("ops/s"),
            "{out}"
        );
        assert!(
            out.contains("p50") && out.contains("p99") && out.contains("p999"),
            "{out}"
        );
        assert!(
            out.contains("creator calls 20"),
            "every key was created once: {out}"
        );
        if region == "long_term" {
            assert!(
                out.contains("removed the 20 entries the run wrote"),
                "{out}"
            );
        } else {
            assert!(out.contains("end with it"), "{out}");
            assert!(
                !out.contains("removed"),
                "nothing outlives a memory region: {out}"
            );
        }
    }
    // The file region holds what it held before the run, and no more.
    assert_eq!(long.usage().await.unwrap().entries, Some(1));
    assert!(views.contains::<String>("page").await.unwrap());
    let (code, _, err) = run(
        dir.path(),
        &[
            "bench",
            "--config",
            f,
            "--region",
            "long_term",
            "--duration",
            "0",
        ],
    );
    assert_eq!(code, 1, "{err}");
}

/// Sends one command to the Redis at `host` (RESP, no client library) and
/// returns its first reply line.
#[cfg(feature = "redis")]
fn redis_command(host: &str, parts: &[&str]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(host).unwrap_or_else(|err| {
        panic!("Redis is not reachable at {host} ({err}): run scripts/services")
    });
    let mut command = format!("*{}\r\n", parts.len());
    for part in parts {
        command.push_str(&format!("${}\r\n{part}\r\n", part.len()));
    }
    stream.write_all(command.as_bytes()).unwrap();
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).unwrap();
    reply
}

/// Garbage in a Redis region's generation counter: `tankard get` and
/// `tankard stats` still read the region (the server answers, so it is not
/// "unreachable"), and the next invalidation repairs the counter.
#[cfg(feature = "redis")]
#[tokio::test]
async fn get_and_stats_read_through_a_damaged_redis_generation_counter() {
    let url =
        std::env::var("TANKARD_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:26379/".into());
    let host = url
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let prefix = format!(
        "cli-test-{}-{}/",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let file = config(
        dir.path(),
        &format!("type = \"redis\"\nurl = \"{url}\"\nexpire = 60\nprefix = \"{prefix}\""),
    );
    let f = file.to_str().unwrap();
    let cache = CacheManager::new(Config::from_file(&file).unwrap()).unwrap();
    let short = cache.region("short_term").unwrap();
    short
        .namespace("views")
        .put("page", "hello page".to_string())
        .await
        .unwrap();
    let generation = format!("{{{prefix}short_term}}!gen");
    assert_eq!(
        redis_command(&host, &["SET", &generation, "not a number"]).trim_end(),
        "+OK"
    );

    let at = [
        "--config",
        f,
        "--region",
        "short_term",
        "--namespace",
        "views",
    ];
    let (code, out, err) = run(dir.path(), &[&["get"][..], &at, &["page"]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("state:       fresh"), "{out}");
    assert!(out.contains("value (text): hello page"), "{out}");

    let (code, out, err) = run(dir.path(), &["stats", "--config", f]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("unreachable"), "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("short_term"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.contains("redis") && line.contains("yes"), "{line}");

    // A hard invalidation restarts the counter, and hides the entry.
    let (code, _, err) = run(
        dir.path(),
        &[
            "invalidate",
            "--config",
            f,
            "--region",
            "short_term",
            "--hard",
        ],
    );
    assert_eq!(code, 0, "{err}");
    // INCRBY 0 answers an integer only for a whole-number counter.
    let restarted = redis_command(&host, &["INCRBY", &generation, "0"]);
    assert!(restarted.starts_with(':'), "{restarted}");
    let (code, out, err) = run(dir.path(), &[&["get"][..], &at, &["page"]].concat());
    assert_eq!(code, 3, "{err}");
    assert!(out.contains("state:       missing"), "{out}");
}

/// The L1 of running nodes and the binary's `clear` and `invalidate`.
#[cfg(feature = "redis")]
mod l1 {
    use std::future::Future;
    use std::path::Path;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::{Duration, Instant};

    use tankard::{Cache, CacheManager, Config};

    use crate::support::config;

    /// Polls `check` until it holds; fails after 10 s.
    async fn until<F, Fut>(what: &str, mut check: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if check().await {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: not within 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Runs `tankard ARGS` off the runtime (the nodes' backplane tasks
    /// keep running meanwhile); it must succeed. Returns its stdout.
    async fn tankard(dir: &Path, args: &[&str]) -> String {
        let dir = dir.to_owned();
        let owned: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        let (code, out, err) = tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = owned.iter().map(String::as_str).collect();
            super::run(&dir, &args)
        })
        .await
        .unwrap();
        assert_eq!(code, 0, "tankard {args:?}: {out}\n{err}");
        out
    }

    fn held(ns: &Cache, key: &str) -> Option<String> {
        ns.try_get_fresh::<String>(key).map(|v| (*v).clone())
    }

    /// Returns once `to` has heard every backplane message published
    /// before this call: `to` keeps a copy of a fresh key, `from` writes
    /// it, and messages on one channel arrive in order.
    async fn fence(from: &Cache, to: &Cache) {
        static N: AtomicU64 = AtomicU64::new(0);
        let key = format!("fence-{}", N.fetch_add(1, Ordering::Relaxed));
        to.put(&key, 0u8).await.unwrap();
        assert!(to.try_get_fresh::<u8>(&key).is_some());
        from.put(&key, 1u8).await.unwrap();
        until("the fence's message arrives", || async {
            to.try_get_fresh::<u8>(&key).is_none()
        })
        .await;
    }

    /// `page` = `value` written by `a` and read by `b`, both keeping a
    /// copy. `b` reads once the write's message is in: one arriving after
    /// the read would drop its copy again.
    async fn hold(a: &Cache, b: &Cache, value: &str) {
        a.put("page", value.to_owned()).await.unwrap();
        fence(a, b).await;
        let read = b.get::<String>("page").await.unwrap();
        assert_eq!(read.as_deref().map(String::as_str), Some(value));
        assert_eq!(held(a, "page").as_deref(), Some(value), "A holds a copy");
        assert_eq!(held(b, "page").as_deref(), Some(value), "B holds a copy");
    }

    /// Waits until neither node's read of `page` answers: the L1 copies
    /// are gone (only the backplane ends them within the test), and Redis
    /// has no fresh value.
    async fn both_miss(a: &Cache, b: &Cache, after: &str) {
        for ns in [a, b] {
            until(&format!("a node's read misses after {after}"), || async {
                ns.get::<String>("page").await.unwrap().is_none()
            })
            .await;
            assert_eq!(held(ns, "page"), None);
        }
    }

    async fn peek(ns: &Cache) -> Option<(String, bool)> {
        let found = ns.peek::<String>("page").await.unwrap();
        found.map(|(v, fresh)| ((*v).clone(), fresh))
    }

    /// Two running nodes (managers of this process) on a Redis region
    /// with an L1 whose copies only the backplane ends (`l1_expire = 1h`):
    /// `tankard clear` and `tankard invalidate`, a third process on the
    /// same config file, reach both nodes' L1.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn clear_and_invalidate_reach_the_l1_of_running_nodes() {
        let url = std::env::var("TANKARD_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:26379/".into());
        let dir = tempfile::tempdir().unwrap();
        let prefix = format!(
            "cli-l1-{}-{}/",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        );
        let file = config(
            dir.path(),
            &format!(
                "type = \"redis\"\nurl = \"{url}\"\nprefix = \"{prefix}\"\n\
                 expire = 60\nstale = 60\nl1 = true\nl1_expire = \"1h\""
            ),
        );
        let f = file.to_str().unwrap();
        let node = || CacheManager::new(Config::from_file(&file).unwrap()).unwrap();
        let (a_node, b_node) = (node(), node());
        let a = a_node.region("short_term").unwrap().namespace("views");
        let b = b_node.region("short_term").unwrap().namespace("views");
        // Each L1 stays off until its node's subscription is live, which
        // the first read starts.
        a.put("warm", 0u8).await.unwrap();
        for ns in [&a, &b] {
            until("the node's L1 comes on", || async {
                ns.get::<u8>("warm").await.unwrap();
                ns.try_get_fresh::<u8>("warm").is_some()
            })
            .await;
        }
        let region = ["--config", f, "--region", "short_term"];

        hold(&a, &b, "v1").await;
        let out = tankard(
            dir.path(),
            &[&["clear"][..], &region, &["--namespace", "views"]].concat(),
        )
        .await;
        assert!(out.contains("cleared namespace views"), "{out}");
        both_miss(&a, &b, "`tankard clear`").await;

        hold(&a, &b, "v2").await;
        let out = tankard(dir.path(), &[&["invalidate"][..], &region].concat()).await;
        assert!(out.contains("soft-invalidated region short_term"), "{out}");
        both_miss(&a, &b, "`tankard invalidate`").await;
        for ns in [&a, &b] {
            assert_eq!(peek(ns).await, Some(("v2".to_owned(), false)), "stale");
        }

        hold(&a, &b, "v3").await;
        let out = tankard(
            dir.path(),
            &[&["invalidate"][..], &region, &["--hard"]].concat(),
        )
        .await;
        assert!(out.contains("hard-invalidated"), "{out}");
        both_miss(&a, &b, "`tankard invalidate --hard`").await;
        for ns in [&a, &b] {
            assert_eq!(peek(ns).await, None);
        }

        hold(&a, &b, "v4").await;
        let out = tankard(
            dir.path(),
            &[
                &["invalidate"][..],
                &region,
                &["--namespace", "views", "page"],
            ]
            .concat(),
        )
        .await;
        assert!(out.contains("removed page"), "{out}");
        both_miss(&a, &b, "`tankard invalidate KEY`").await;
    }
}

/// `tankard check`, `gc` and `stats` on a dbm region whose environment
/// this process has open too (two processes on one LMDB environment).
#[cfg(feature = "dbm")]
#[tokio::test]
async fn check_gc_and_stats_work_on_a_dbm_region() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tankard.toml");
    std::fs::write(
        &file,
        format!(
            "[cache]\nregions = [\"shared\"]\n\n[cache.shared]\ntype = \"dbm\"\n\
             data_dir = \"{}\"\nmax_bytes = 1073741824\nexpire = \"10m\"\n",
            dir.path().join("cache").display()
        ),
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let cache = CacheManager::new(Config::from_file(&file).unwrap()).unwrap();
    let shared = cache.region("shared").unwrap();
    let views = shared.namespace("views");
    views.put("page", "hello page".to_string()).await.unwrap();
    views.put("numbers", vec![1u32, 2, 3]).await.unwrap();
    // Dead on arrival: no expiry left and no stale grace, so gc removes it.
    shared
        .namespace("old")
        .expire(std::time::Duration::ZERO)
        .put("gone", 1u8)
        .await
        .unwrap();

    let (code, out, err) = run(dir.path(), &["check", f]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("data_dir") && out.contains("max_bytes") && !out.contains("url"),
        "{out}"
    );

    let (code, out, err) = run(dir.path(), &["gc", "--config", f]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("shared (dbm): removed 1 expired entries"),
        "{out}"
    );
    assert_eq!(shared.usage().await.unwrap().entries, Some(2));
    assert_eq!(
        *views.get::<String>("page").await.unwrap().unwrap(),
        "hello page",
        "live entries stay"
    );

    let (code, out, err) = run(dir.path(), &["stats", "--config", f, "--json"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let region = &json["regions"]["shared"];
    assert_eq!(region["backend"], "dbm");
    assert_eq!(region["reachable"], true);
    assert_eq!(region["entries"].as_u64(), Some(2));
    assert!(region["bytes"].as_u64().unwrap() > 0, "{region}");
}

#[tokio::test]
async fn check_shows_a_database_region_s_table_and_gc_purges_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cache.db");
    let file = config(
        dir.path(),
        &format!(
            "type = \"ext:database\"\nurl = \"sqlite://{}\"\ntable = \"cli_cache\"\nexpire = 1",
            db.display()
        ),
    );
    let f = file.to_str().unwrap();
    let (code, out, err) = run(dir.path(), &["check", f]);
    assert_eq!(code, 0, "{err}");
    let short = &out[out.find("[short_term]").unwrap()..];
    assert!(short.contains("table             cli_cache"), "{short}");
    assert!(short.contains("type              database"), "{short}");
    // A file region shows no table.
    let long = &out[out.find("[long_term]").unwrap()..out.find("[short_term]").unwrap()];
    assert!(!long.contains("table"), "{long}");

    // Two entries written by a clock 10 s behind are past their expiry now.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let cache = CacheManager::with_clock(
        Config::from_toml_file(&file).unwrap(),
        tankard::Clock::manual(now_ms - 10_000),
    )
    .unwrap();
    let short_term = cache.region("short_term").unwrap().namespace("n");
    short_term.put("a", "1".to_string()).await.unwrap();
    short_term.put("b", "2".to_string()).await.unwrap();
    let (code, out, err) = run(dir.path(), &["gc", "--config", f]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("short_term (sqlite): removed 2 expired entries"),
        "{out}"
    );
}
