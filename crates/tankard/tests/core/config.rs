//! Config parsing tests: the seed's two configurations, every coercion, and
//! every error message a user can meet.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tankard::Config;
use tankard::config::{
    BackendKind, BackplaneSetting, LockMode, OnBackendError, Refresh, RegionOptions,
};

use crate::logs::Logs;

/// The error message of a config that must fail.
#[track_caller]
fn err(config: tankard::Result<Config>) -> String {
    match config {
        Ok(config) => panic!("expected an error, got {config:?}"),
        Err(err) => {
            assert!(err.is_config(), "not a config error: {err:?}");
            err.to_string()
        }
    }
}

#[track_caller]
fn ok(config: tankard::Result<Config>) -> Config {
    match config {
        Ok(config) => config,
        Err(err) => panic!("expected a config, got: {err}"),
    }
}

#[track_caller]
fn region<'a>(config: &'a Config, name: &str) -> &'a RegionOptions {
    match config.region(name) {
        Some(options) => options,
        None => panic!("no region {name:?} in {config:?}"),
    }
}

fn flat_memory(extra: &[(&str, &str)]) -> tankard::Result<Config> {
    let mut pairs = vec![("cache.type", "memory")];
    pairs.extend_from_slice(extra);
    Config::from_flat(pairs)
}

const SEED_2: [(&str, &str); 9] = [
    ("cache.type", "file"),
    ("cache.data_dir", "cache/data"),
    ("cache.lock_dir", "cache/lock"),
    ("cache.regions", "short_term, long_term"),
    ("cache.short_term.type", "ext:memcached"),
    ("cache.short_term.url", "127.0.0.1.11211"),
    ("cache.short_term.expire", "1200"),
    ("cache.long_term.type", "file"),
    ("cache.long_term.expire", "86400"),
];

fn seed_2_fixed() -> Vec<(&'static str, &'static str)> {
    SEED_2
        .iter()
        .map(|&(k, v)| {
            if k == "cache.short_term.url" {
                (k, "127.0.0.1:11211")
            } else {
                (k, v)
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// The seed post

#[test]
fn seed_first_config_parses() {
    let config = ok(Config::from_flat([
        ("cache.type", "file"),
        ("cache.data_dir", "cache/data"),
        ("cache.lock_dir", "cache/lock"),
    ]));
    let default = config.default_options();
    assert_eq!(default.name, "default");
    assert_eq!(default.backend, BackendKind::File);
    assert_eq!(default.data_dir.as_deref(), Some(Path::new("cache/data")));
    assert_eq!(default.lock_dir.as_deref(), Some(Path::new("cache/lock")));
    assert_eq!(default.expire, None);
    assert_eq!(config.regions().count(), 0);
}

#[test]
fn seed_url_typo_names_the_region_key_whatever_the_features() {
    assert_eq!(
        err(Config::from_flat(SEED_2)),
        r#"cache.short_term.url: "127.0.0.1.11211" is not a memcached address: no port (did you mean "127.0.0.1:11211"?); expected host:port[;host:port…]"#
    );
}

#[cfg(feature = "memcached")]
#[test]
fn seed_second_config_parses_once_fixed() {
    let config = ok(Config::from_flat(seed_2_fixed()));
    let short = region(&config, "short_term");
    assert_eq!(short.backend, BackendKind::Memcached);
    assert_eq!(short.url.as_deref(), Some("127.0.0.1:11211"));
    assert_eq!(short.expire, Some(Duration::from_secs(1200)));
    let long = region(&config, "long_term");
    assert_eq!(long.backend, BackendKind::File);
    assert_eq!(long.expire, Some(Duration::from_secs(86400)));
    assert_eq!(long.data_dir.as_deref(), Some(Path::new("cache/data")));
}

#[cfg(not(feature = "memcached"))]
#[test]
fn seed_second_config_once_fixed_needs_the_memcached_feature() {
    assert_eq!(
        err(Config::from_flat(seed_2_fixed())),
        r#"cache.short_term.type: "ext:memcached" needs the cargo feature "memcached" of tankard; enable it with `tankard = { features = ["memcached"] }`"#
    );
}

#[test]
fn seed_long_term_region_inherits_data_and_lock_dirs() {
    // The seed without its memcached region, so it parses with any features.
    let pairs = seed_2_fixed()
        .into_iter()
        .filter(|(k, _)| !k.starts_with("cache.short_term."));
    let config = ok(Config::from_flat(pairs));
    let long = region(&config, "long_term");
    assert_eq!(long.name, "long_term");
    assert_eq!(long.backend, BackendKind::File);
    assert_eq!(long.expire, Some(Duration::from_secs(86400)));
    assert_eq!(long.data_dir.as_deref(), Some(Path::new("cache/data")));
    assert_eq!(long.lock_dir.as_deref(), Some(Path::new("cache/lock")));
    // short_term is listed with no keys of its own: the global options.
    let short = region(&config, "short_term");
    assert_eq!(short.backend, BackendKind::File);
    assert_eq!(short.expire, None);
    assert_eq!(short.data_dir.as_deref(), Some(Path::new("cache/data")));
}

// ---------------------------------------------------------------------------
// Keys and prefixes

#[test]
fn beaker_cache_prefix_means_the_same() {
    let a = ok(Config::from_flat([
        ("beaker.cache.type", "memory"),
        ("beaker.cache.regions", "r"),
        ("beaker.cache.r.expire", "5"),
    ]));
    let b = ok(Config::from_flat([
        ("cache.type", "memory"),
        ("cache.regions", "r"),
        ("cache.r.expire", "5"),
    ]));
    assert_eq!(a, b);
}

#[test]
fn errors_name_the_key_as_written_with_beaker_prefix() {
    assert_eq!(
        err(Config::from_flat([("beaker.cache.expire", "soon")])),
        r#"beaker.cache.expire: "soon" is not a duration; expected a number of seconds ("30", "2.5") or a number with a unit ("250ms", "20m", "1h")"#
    );
}

#[test]
fn key_without_prefix_is_an_error_in_a_flat_map() {
    assert_eq!(
        err(Config::from_flat([("expire", "10")])),
        "expire: unknown option; keys start with `cache.` (or `beaker.cache.`), e.g. `cache.expire`"
    );
}

#[test]
fn unknown_option_suggests_the_nearest() {
    assert_eq!(
        err(Config::from_flat([("cache.expir", "10")])),
        "cache.expir: unknown option; did you mean `expire`?"
    );
    assert_eq!(
        err(Config::from_flat([
            ("cache.regions", "r"),
            ("cache.r.data_dri", "x")
        ])),
        "cache.r.data_dri: unknown option; did you mean `data_dir`?"
    );
}

#[test]
fn unknown_option_far_from_any_lists_them_all() {
    let message = err(Config::from_flat([("cache.colour", "blue")]));
    assert!(
        message.starts_with("cache.colour: unknown option; expected one of type, expire, data_dir"),
        "{message}"
    );
}

#[test]
fn region_key_for_unlisted_region_is_an_error() {
    assert_eq!(
        err(Config::from_flat([
            ("cache.regions", "short_term"),
            ("cache.long_term.expire", "10"),
        ])),
        r#"cache.long_term.expire: region "long_term" is not listed in cache.regions (short_term); add it there or remove the key"#
    );
    assert_eq!(
        err(Config::from_flat([("cache.long_term.expire", "10")])),
        r#"cache.long_term.expire: region "long_term" is not listed in cache.regions (none listed); add it there or remove the key"#
    );
}

#[test]
fn regions_may_come_after_their_keys() {
    let config = ok(Config::from_flat([
        ("cache.r.expire", "7"),
        ("cache.type", "memory"),
        ("cache.regions", "r"),
    ]));
    assert_eq!(region(&config, "r").expire, Some(Duration::from_secs(7)));
}

#[test]
fn region_overrides_win_whatever_the_order() {
    let config = ok(Config::from_flat([
        ("cache.regions", "r"),
        ("cache.r.expire", "7"),
        ("cache.expire", "100"),
    ]));
    assert_eq!(region(&config, "r").expire, Some(Duration::from_secs(7)));
    assert_eq!(
        config.default_options().expire,
        Some(Duration::from_secs(100))
    );
}

#[test]
fn the_same_key_twice_last_one_wins() {
    let config = ok(Config::from_flat([
        ("cache.expire", "1"),
        ("cache.expire", "2"),
    ]));
    assert_eq!(
        config.default_options().expire,
        Some(Duration::from_secs(2))
    );
}

#[test]
fn regions_list_is_trimmed_and_deduplicated() {
    let config = ok(Config::from_flat([("cache.regions", " a ,, b.c-d_e , a,")]));
    let names: Vec<&str> = config.regions().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["a", "b.c-d_e"]);
}

#[test]
fn region_names_may_contain_dots() {
    let config = ok(Config::from_flat([
        ("cache.regions", "v1.hot"),
        ("cache.v1.hot.expire", "3"),
    ]));
    assert_eq!(
        region(&config, "v1.hot").expire,
        Some(Duration::from_secs(3))
    );
}

#[test]
fn bad_region_name_is_an_error() {
    assert_eq!(
        err(Config::from_flat([("cache.regions", "short term")])),
        r#"cache.regions: "short term" is not a valid region name; expected letters, digits, `_`, `.` and `-` only, names separated by commas"#
    );
}

#[test]
fn region_named_like_an_option_is_an_error() {
    assert_eq!(
        err(Config::from_flat([("cache.regions", "a, expire")])),
        r#"cache.regions: "expire" is an option name, so it cannot name a region; expected a region name that is not one of the option names (rename the region)"#
    );
}

#[test]
fn region_name_alone_is_not_a_key() {
    assert_eq!(
        err(Config::from_flat([
            ("cache.regions", "r"),
            ("cache.r", "x")
        ])),
        "cache.r: unknown option; `r` is a region: set its options as `cache.r.<option>`"
    );
}

#[test]
fn regions_cannot_be_set_per_region() {
    assert_eq!(
        err(Config::from_flat([
            ("cache.regions", "r"),
            ("cache.r.regions", "x")
        ])),
        "cache.r.regions: unknown option; `regions` is global only: set `cache.regions`"
    );
}

#[test]
fn option_has_no_sub_keys() {
    assert_eq!(
        err(Config::from_flat([("cache.expire.short", "1")])),
        "cache.expire.short: unknown option; `expire` is an option and has no sub-keys"
    );
}

// ---------------------------------------------------------------------------
// Inheritance

#[test]
fn regions_inherit_every_global_option() {
    let config = ok(Config::from_flat([
        ("cache.type", "file"),
        ("cache.data_dir", "/var/cache/app"),
        ("cache.url", "127.0.0.1:11211"),
        ("cache.expire", "60"),
        ("cache.stale", "5"),
        ("cache.enabled", "no"),
        ("cache.key_length", "100"),
        ("cache.prefix", "app:"),
        ("cache.secret", "s3cret"),
        ("cache.lock", "file"),
        ("cache.on_backend_error", "error"),
        ("cache.refresh", "background"),
        ("cache.l1", "true"),
        ("cache.l1_max_entries", "500"),
        ("cache.l1_max_bytes", "65536"),
        ("cache.l1_expire", "2s"),
        ("cache.backplane", "none"),
        ("cache.regions", "r"),
    ]));
    let r = region(&config, "r");
    let d = config.default_options();
    assert_eq!(r.backend, BackendKind::File);
    assert_eq!(r.url.as_deref(), Some("127.0.0.1:11211"));
    assert_eq!(r.data_dir.as_deref(), Some(Path::new("/var/cache/app")));
    assert_eq!(r.lock_dir, Some(PathBuf::from("/var/cache/app/.locks")));
    assert_eq!(r.expire, Some(Duration::from_secs(60)));
    assert_eq!(r.stale, Duration::from_secs(5));
    assert!(!r.enabled);
    assert_eq!(r.key_length, 100);
    assert_eq!(r.prefix, "app:");
    assert_eq!(r.secret, Some(tankard::config::Secret::new("s3cret")));
    assert_eq!(r.lock, LockMode::File);
    assert_eq!(r.on_backend_error, OnBackendError::Error);
    assert_eq!(r.refresh, Refresh::Background);
    assert!(r.l1);
    assert_eq!(r.l1_max_entries, 500);
    assert_eq!(r.l1_max_bytes, Some(65536));
    assert_eq!(r.l1_expire, Some(Duration::from_secs(2)));
    assert_eq!(r.backplane, BackplaneSetting::None);
    // Apart from its name, the region is the default options.
    let mut renamed = r.clone();
    renamed.name = "default".into();
    assert_eq!(renamed, *d);
}

#[test]
fn region_inherits_global_url_for_its_own_type() {
    // The global url serves the region's memcached; the global type is file,
    // and the default (file) never validates the url it does not use.
    let result = Config::from_flat([
        ("cache.type", "file"),
        ("cache.data_dir", "d"),
        ("cache.url", "mc1:11211;mc2:11212"),
        ("cache.regions", "short"),
        ("cache.short.type", "memcached"),
    ]);
    if cfg!(feature = "memcached") {
        let config = ok(result);
        assert_eq!(
            region(&config, "short").url.as_deref(),
            Some("mc1:11211;mc2:11212")
        );
    } else {
        assert!(err(result).starts_with("cache.short.type: \"memcached\""));
    }
}

#[test]
fn bad_inherited_url_names_the_global_key() {
    assert_eq!(
        err(Config::from_flat([
            ("cache.url", "localhost"),
            ("cache.regions", "short"),
            ("cache.short.type", "memcached"),
        ])),
        r#"cache.url: "localhost" is not a memcached address: no port; expected host:port[;host:port…]"#
    );
}

#[test]
fn unused_global_url_is_not_validated() {
    let config = ok(Config::from_flat([
        ("cache.type", "memory"),
        ("cache.url", "not a url"),
    ]));
    assert_eq!(config.default_options().url.as_deref(), Some("not a url"));
}

#[test]
fn region_overrides_type_and_dirs() {
    let config = ok(Config::from_flat([
        ("cache.type", "memory"),
        ("cache.regions", "disk"),
        ("cache.disk.type", "file"),
        ("cache.disk.data_dir", "/tmp/d"),
        ("cache.disk.lock_dir", "/tmp/l"),
    ]));
    assert_eq!(config.default_options().backend, BackendKind::Memory);
    let disk = region(&config, "disk");
    assert_eq!(disk.backend, BackendKind::File);
    assert_eq!(disk.lock_dir.as_deref(), Some(Path::new("/tmp/l")));
}

// ---------------------------------------------------------------------------
// Values

#[test]
fn all_boolean_spellings() {
    for (spelling, expected) in [
        ("true", true),
        ("yes", true),
        ("on", true),
        ("y", true),
        ("t", true),
        ("1", true),
        ("false", false),
        ("no", false),
        ("off", false),
        ("n", false),
        ("f", false),
        ("0", false),
    ] {
        for written in [
            spelling.to_owned(),
            format!("  {} ", spelling.to_uppercase()),
        ] {
            let config = ok(flat_memory(&[("cache.enabled", &written)]));
            assert_eq!(config.default_options().enabled, expected, "{written:?}");
        }
    }
}

#[test]
fn bad_boolean() {
    assert_eq!(
        err(flat_memory(&[("cache.enabled", "maybe")])),
        r#"cache.enabled: "maybe" is not a boolean; expected true, yes, on, y, t, 1 or false, no, off, n, f, 0"#
    );
}

#[test]
fn bad_expire() {
    assert_eq!(
        err(Config::from_flat([("cache.expire", "soon")])),
        r#"cache.expire: "soon" is not a duration; expected a number of seconds ("30", "2.5") or a number with a unit ("250ms", "20m", "1h")"#
    );
    for bad in ["", "-1", "none", "1d", "1H", "1e3", "inf", "1.2.3"] {
        let message = err(Config::from_flat([("cache.expire", bad)]));
        assert!(message.contains("is not a duration"), "{bad}: {message}");
        let message = err(Config::from_flat([("cache.stale", bad)]));
        assert!(message.contains("is not a duration"), "{bad}: {message}");
    }
}

#[test]
fn bad_expire_in_a_region_names_the_region_key() {
    assert_eq!(
        err(Config::from_flat([
            ("cache.regions", "r"),
            ("cache.r.expire", "1 hour")
        ])),
        r#"cache.r.expire: "1 hour" is not a duration; expected a number of seconds ("30", "2.5") or a number with a unit ("250ms", "20m", "1h")"#
    );
}

#[test]
fn expire_and_stale_take_every_duration_syntax() {
    for (written, expected) in [
        ("1200", Duration::from_secs(1200)),
        ("2.5", Duration::from_millis(2500)),
        ("0.1", Duration::from_millis(100)),
        (".5", Duration::from_millis(500)),
        ("250ms", Duration::from_millis(250)),
        ("30s", Duration::from_secs(30)),
        ("20m", Duration::from_secs(1200)),
        ("1h", Duration::from_secs(3600)),
        ("1.5h", Duration::from_secs(5400)),
        (" 2 m ", Duration::from_secs(120)),
        ("0.000000001", Duration::from_nanos(1)),
        ("0", Duration::ZERO),
        ("0ms", Duration::ZERO),
    ] {
        let config = ok(flat_memory(&[
            ("cache.expire", written),
            ("cache.stale", written),
        ]));
        let d = config.default_options();
        assert_eq!(d.expire, Some(expected), "{written}");
        assert_eq!(d.stale, expected, "{written}");
    }
}

#[test]
fn expire_zero_and_absent() {
    let config = ok(flat_memory(&[("cache.expire", "0")]));
    assert_eq!(config.default_options().expire, Some(Duration::ZERO));
    assert_eq!(ok(flat_memory(&[])).default_options().expire, None);
}

#[test]
fn negative_key_length() {
    assert_eq!(
        err(flat_memory(&[("cache.key_length", "-5")])),
        r#"cache.key_length: "-5" is not a whole number; expected a whole non-negative number"#
    );
}

#[test]
fn non_numeric_key_length() {
    assert_eq!(
        err(flat_memory(&[("cache.key_length", "long")])),
        r#"cache.key_length: "long" is not a whole number; expected a whole non-negative number"#
    );
}

#[test]
fn numbers_are_trimmed() {
    let config = ok(flat_memory(&[
        ("cache.key_length", " 120 "),
        ("cache.starttime", "1700000000"),
        ("cache.stale", "30"),
    ]));
    let d = config.default_options();
    assert_eq!(d.key_length, 120);
    assert_eq!(d.starttime, Some(1_700_000_000));
    assert_eq!(d.stale, Duration::from_secs(30));
}

#[test]
fn durations_with_and_without_units() {
    for (written, expected) in [
        ("30", Duration::from_secs(30)),
        ("0.5", Duration::from_millis(500)),
        ("250ms", Duration::from_millis(250)),
        ("2s", Duration::from_secs(2)),
        ("1.5s", Duration::from_millis(1500)),
        ("2m", Duration::from_secs(120)),
        (" 3 s ", Duration::from_secs(3)),
        ("1h", Duration::from_secs(3600)),
        ("0.1", Duration::from_millis(100)),
    ] {
        let config = ok(flat_memory(&[
            ("cache.lock_timeout", written),
            ("cache.wait_timeout", written),
            ("cache.timeout", written),
            ("cache.retry_after", written),
        ]));
        let d = config.default_options();
        assert_eq!(d.lock_timeout, expected, "{written}");
        assert_eq!(d.wait_timeout, expected, "{written}");
        assert_eq!(d.timeout, expected, "{written}");
        assert_eq!(d.retry_after, expected, "{written}");
    }
}

#[test]
fn bad_durations() {
    assert_eq!(
        err(flat_memory(&[("cache.timeout", "2 hours")])),
        r#"cache.timeout: "2 hours" is not a duration; expected a positive number of seconds ("0.5", "30") or a number with a unit ("250ms", "2s", "20m", "1h")"#
    );
    for bad in ["", "-1", "inf", "1e3", "1.2.3", "ms", ".", "1d", "5 s s"] {
        let message = err(flat_memory(&[("cache.lock_timeout", bad)]));
        assert!(message.contains("is not a duration"), "{bad}: {message}");
    }
    assert_eq!(
        err(flat_memory(&[("cache.wait_timeout", "0ms")])),
        r#"cache.wait_timeout: "0ms" is not a positive duration; expected a positive number of seconds ("0.5", "30") or a number with a unit ("250ms", "2s", "20m", "1h")"#
    );
    // Below a nanosecond is nothing: not a positive timeout.
    let message = err(flat_memory(&[("cache.timeout", "0.0000000001")]));
    assert!(message.contains("is not a positive duration"), "{message}");
    // retry_after alone takes zero: it turns the circuit breaker off.
    let config = ok(flat_memory(&[("cache.retry_after", "0")]));
    assert_eq!(config.default_options().retry_after, Duration::ZERO);
}

#[test]
fn backend_type_spellings() {
    for (written, expected) in [
        ("memory", BackendKind::Memory),
        ("MEMORY", BackendKind::Memory),
        ("null", BackendKind::Null),
    ] {
        let config = ok(Config::from_flat([("cache.type", written)]));
        assert_eq!(config.default_options().backend, expected);
    }
}

#[test]
fn bad_backend_type() {
    assert_eq!(
        err(Config::from_flat([("cache.type", "floppy")])),
        r#"cache.type: "floppy" is not a backend type; expected one of memory, file, dbm, ext:memcached, ext:redis, ext:rediscluster, ext:database, null"#
    );
}

#[test]
fn enums_are_case_insensitive_and_checked() {
    let config = ok(flat_memory(&[
        ("cache.lock", "Local"),
        ("cache.on_backend_error", "ERROR"),
        ("cache.refresh", "Background"),
    ]));
    let d = config.default_options();
    assert_eq!(d.lock, LockMode::Local);
    assert_eq!(d.on_backend_error, OnBackendError::Error);
    assert_eq!(d.refresh, Refresh::Background);
    assert_eq!(
        err(flat_memory(&[("cache.lock", "mutex")])),
        r#"cache.lock: "mutex" is not a lock mode; expected one of auto, local, file, distributed, none"#
    );
    assert_eq!(
        err(flat_memory(&[("cache.on_backend_error", "ignore")])),
        r#"cache.on_backend_error: "ignore" is not a policy; expected bypass or error"#
    );
    assert_eq!(
        err(flat_memory(&[("cache.refresh", "later")])),
        r#"cache.refresh: "later" is not a refresh mode; expected foreground or background"#
    );
}

#[test]
fn lock_file_needs_a_directory() {
    assert_eq!(
        err(flat_memory(&[("cache.lock", "file")])),
        r#"cache.lock_dir: missing; lock = file needs lock_dir = "<directory>" (or data_dir)"#
    );
}

#[test]
fn secret_and_prefix() {
    assert_eq!(
        err(flat_memory(&[("cache.secret", "")])),
        r#"cache.secret: "" is empty; expected a non-empty secret string"#
    );
    assert_eq!(
        err(flat_memory(&[("cache.prefix", "my app")])),
        r#"cache.prefix: "my app" contains whitespace or control characters; expected a key prefix without spaces, e.g. "myapp:""#
    );
    let config = ok(flat_memory(&[
        ("cache.secret", "k"),
        ("cache.prefix", "v2/"),
    ]));
    assert_eq!(config.default_options().prefix, "v2/");
    assert_eq!(
        format!("{:?}", config.default_options().secret),
        "Some(Secret(..))"
    );
}

#[test]
fn memory_is_bounded_by_default() {
    let config = ok(flat_memory(&[]));
    assert_eq!(config.default_options().max_entries, Some(10_000));
    assert_eq!(config.default_options().max_bytes, None);
    let config = ok(flat_memory(&[("cache.max_bytes", "1048576")]));
    assert_eq!(config.default_options().max_entries, None);
    assert_eq!(config.default_options().max_bytes, Some(1_048_576));
}

#[test]
fn zero_memory_bound_is_an_error() {
    assert_eq!(
        err(flat_memory(&[("cache.max_entries", "0")])),
        r#"cache.max_entries: "0" is not a bound; expected a whole number above 0 (use type = null to store nothing)"#
    );
    assert!(err(flat_memory(&[("cache.max_bytes", "-1")])).starts_with("cache.max_bytes: \"-1\""));
}

#[test]
fn file_backend_needs_data_dir() {
    assert_eq!(
        err(Config::from_flat([("cache.type", "file")])),
        r#"cache.data_dir: missing; the file backend needs data_dir = "<directory>""#
    );
    assert_eq!(
        err(Config::from_flat([
            ("cache.regions", "r"),
            ("cache.r.type", "file")
        ])),
        r#"cache.r.data_dir: missing; the file backend needs data_dir = "<directory>""#
    );
}

#[test]
fn network_backend_needs_url() {
    assert_eq!(
        err(Config::from_flat([
            ("cache.regions", "r"),
            ("cache.r.type", "ext:memcached")
        ])),
        r#"cache.r.url: missing; the memcached backend needs url = "host:port[;host:port…]""#
    );
    assert_eq!(
        err(Config::from_flat([("cache.type", "redis")])),
        r#"cache.url: missing; the redis backend needs url = "redis://host:port""#
    );
}

// ---------------------------------------------------------------------------
// URLs and features

#[test]
fn memcached_address_errors_name_the_part_that_is_wrong() {
    for (bad, problem) in [
        (
            "127.0.0.1.11211",
            r#"no port (did you mean "127.0.0.1:11211"?)"#,
        ),
        ("localhost", "no port"),
        ("host:0", r#"port "0" is not a number from 1 to 65535"#),
        (
            "host:65536",
            r#"port "65536" is not a number from 1 to 65535"#,
        ),
        ("host:", r#"port "" is not a number from 1 to 65535"#),
        (":11211", "no host"),
        (
            "memcached://h:1",
            r#"host "memcached://h" is not a host name or IP address (memcached addresses take no scheme)"#,
        ),
        ("a b:1", r#"host "a b" is not a host name or IP address"#),
        ("", "no server in it"),
        (";", "no server in it"),
        ("a:1;;b:2", "server 2 of 3 is empty (a `;` or `,` too many)"),
        ("a:1;", "server 2 of 2 is empty (a `;` or `,` too many)"),
        ("a:1;b", r#"no port in "b""#),
        ("a:1, b.2", r#"no port in "b.2" (did you mean "b:2"?)"#),
        (
            "a:1;b:x",
            r#"port "x" in "b:x" is not a number from 1 to 65535"#,
        ),
        (
            "a:1;b/c:2",
            r#"host "b/c" in "b/c:2" is not a host name or IP address"#,
        ),
    ] {
        assert_eq!(
            err(Config::from_flat([
                ("cache.type", "memcached"),
                ("cache.url", bad),
            ])),
            format!(
                "cache.url: {bad:?} is not a memcached address: {problem}; expected host:port[;host:port…]"
            )
        );
    }
}

#[test]
fn memcached_addresses() {
    for good in ["127.0.0.1:11211", "a:1;b:2", "a:1, b:2", "[::1]:11211"] {
        let result = Config::from_flat([("cache.type", "memcached"), ("cache.url", good)]);
        if cfg!(feature = "memcached") {
            ok(result);
        } else {
            assert!(
                err(result).contains("needs the cargo feature \"memcached\""),
                "{good}"
            );
        }
    }
}

#[test]
fn redis_urls() {
    for bad in [
        "localhost:6379",
        "redis://",
        "redis://h:port",
        "redis://h/x",
        "http://h",
    ] {
        let message = err(Config::from_flat([
            ("cache.type", "redis"),
            ("cache.url", bad),
        ]));
        assert!(message.contains("is not a redis URL"), "{bad}: {message}");
    }
    for good in [
        "redis://127.0.0.1:6379",
        "redis://localhost",
        "rediss://user:p@ss@host:6380/3",
        "redis://[::1]:6379/0",
        "redis+unix:///run/redis.sock",
        "unix:///tmp/r.sock?db=1",
    ] {
        let result = Config::from_flat([("cache.type", "redis"), ("cache.url", good)]);
        if cfg!(feature = "redis") {
            ok(result);
        } else {
            assert!(
                err(result).contains("needs the cargo feature \"redis\""),
                "{good}"
            );
        }
    }
}

#[test]
fn redis_cluster_seeds() {
    let message = err(Config::from_flat([
        ("cache.type", "redis-cluster"),
        ("cache.url", "redis://a:7000,b:7001"),
    ]));
    assert_eq!(
        message,
        r#"cache.url: "redis://a:7000,b:7001" is not a list of redis cluster seeds; expected redis://host:port[,redis://host:port…]"#
    );
    let result = Config::from_flat([
        ("cache.type", "ext:rediscluster"),
        ("cache.url", "redis://a:7000, redis://b:7001"),
    ]);
    assert_eq!(cfg!(feature = "redis"), result.is_ok());
}

/// The database store's options: the URL's scheme picks the engine (its
/// feature must be built), the table goes into SQL text so it must be a
/// plain name, and an in-memory SQLite database is refused.
#[test]
fn database_options_name_the_key_the_value_and_what_was_expected() {
    let database = |extra: &[(&'static str, &'static str)]| {
        let mut pairs = vec![("cache.type", "ext:database")];
        pairs.extend_from_slice(extra);
        Config::from_flat(pairs)
    };
    let any = cfg!(any(
        feature = "postgres",
        feature = "mysql",
        feature = "sqlite"
    ));
    assert!(
        err(database(&[])).starts_with("cache.url: missing; the database backend needs url ="),
        "{}",
        err(database(&[]))
    );
    assert!(
        err(database(&[("cache.url", "oracle://u:pw@h/db")])).starts_with(
            r#"cache.url: "oracle://u:***@h/db" does not name a database this backend knows (its scheme); expected postgres://"#
        ),
        "{}",
        err(database(&[("cache.url", "oracle://u:pw@h/db")]))
    );
    for (url, feature) in [
        ("postgres://h/db", "postgres"),
        ("mysql://h/db", "mysql"),
        ("mariadb://h/db", "mysql"),
        ("sqlite://cache.db", "sqlite"),
    ] {
        let built = match feature {
            "postgres" => cfg!(feature = "postgres"),
            "mysql" => cfg!(feature = "mysql"),
            _ => cfg!(feature = "sqlite"),
        };
        let result = database(&[("cache.url", url)]);
        if built {
            assert!(result.is_ok(), "{url}: {:?}", result.err());
        } else {
            assert_eq!(
                err(result),
                format!(
                    "cache.url: {url:?} needs the cargo feature \"{feature}\" of tankard; expected `tankard = {{ features = [\"{feature}\"] }}`"
                )
            );
        }
    }
    if cfg!(feature = "sqlite") {
        assert!(
            err(database(&[("cache.url", "sqlite::memory:")]))
                .starts_with(r#"cache.url: "sqlite::memory:" is not a database file"#)
        );
        for bad in ["t;drop table x", "2fast", "a-b", ""] {
            let e = err(database(&[
                ("cache.url", "sqlite://c.db"),
                ("cache.table", bad),
            ]));
            assert_eq!(
                e,
                format!(
                    "cache.table: {bad:?} is not a plain SQL identifier (it goes into SQL text); expected a name of letters, digits and _ that does not start with a digit, at most 48 bytes"
                )
            );
        }
        let ok = database(&[
            ("cache.url", "sqlite://c.db"),
            ("cache.table", "App_Cache2"),
        ])
        .unwrap();
        assert_eq!(ok.default_options().table.as_deref(), Some("App_Cache2"));
    }
    if !any {
        assert_eq!(
            err(Config::from_flat([
                ("cache.type", "ext:database"),
                ("cache.url", "sqlite://c.db")
            ])),
            r#"cache.url: "sqlite://c.db" needs the cargo feature "sqlite" of tankard; expected `tankard = { features = ["sqlite"] }`"#
        );
    }
}

#[cfg(not(feature = "redis"))]
#[test]
fn redis_without_its_feature_names_feature_and_key() {
    assert_eq!(
        err(Config::from_flat([
            ("cache.regions", "short_term"),
            ("cache.short_term.type", "redis"),
            ("cache.short_term.url", "redis://127.0.0.1:6379/0"),
        ])),
        r#"cache.short_term.type: "redis" needs the cargo feature "redis" of tankard; enable it with `tankard = { features = ["redis"] }`"#
    );
}

#[cfg(not(feature = "redis"))]
#[test]
fn inherited_type_without_its_feature_names_the_global_key() {
    assert_eq!(
        err(Config::from_flat([
            ("cache.type", "redis"),
            ("cache.url", "redis://h")
        ])),
        r#"cache.type: "redis" needs the cargo feature "redis" of tankard; enable it with `tankard = { features = ["redis"] }`"#
    );
}

// ---------------------------------------------------------------------------
// TOML

#[test]
fn toml_with_nested_tables_and_arrays() {
    let config = ok(Config::from_toml_str(
        r#"
        title = "not ours"

        [cache]
        type = "file"
        data_dir = "cache/data"
        lock_dir = "cache/lock"
        regions = ["short_term", "long_term"]
        enabled = true
        lock_timeout = 0.5
        wait_timeout = "250ms"

        [cache.long_term]
        type = "file"
        expire = 86400

        [cache.short_term]
        type = "memory"
        expire = "1200"
        max_entries = 500
        "#,
    ));
    let d = config.default_options();
    assert_eq!(d.lock_timeout, Duration::from_millis(500));
    assert_eq!(d.wait_timeout, Duration::from_millis(250));
    let long = region(&config, "long_term");
    assert_eq!(long.expire, Some(Duration::from_secs(86400)));
    assert_eq!(long.data_dir.as_deref(), Some(Path::new("cache/data")));
    let short = region(&config, "short_term");
    assert_eq!(short.backend, BackendKind::Memory);
    assert_eq!(short.expire, Some(Duration::from_secs(1200)));
    assert_eq!(short.max_entries, Some(500));
    assert_eq!(short.lock_timeout, Duration::from_millis(500));
}

#[test]
fn toml_and_flat_agree() {
    let from_toml = ok(Config::from_toml_str(
        "[cache]\ntype = \"memory\"\nexpire = 60\nregions = \"a, b\"\n[cache.a]\nstale = 5\n",
    ));
    let from_flat = ok(Config::from_flat([
        ("cache.type", "memory"),
        ("cache.expire", "60"),
        ("cache.regions", "a, b"),
        ("cache.a.stale", "5"),
    ]));
    assert_eq!(from_toml, from_flat);
}

#[test]
fn toml_beaker_cache_table() {
    let config = ok(Config::from_toml_str(
        "[beaker.cache]\ntype = \"memory\"\nexpire = 3\n",
    ));
    assert_eq!(
        config.default_options().expire,
        Some(Duration::from_secs(3))
    );
}

#[test]
fn toml_errors_name_the_dotted_path() {
    assert_eq!(
        err(Config::from_toml_str(
            "[cache]\nregions = [\"short_term\"]\n[cache.short_term]\nexpire = \"soon\"\n"
        )),
        r#"cache.short_term.expire: "soon" is not a duration; expected a number of seconds ("30", "2.5") or a number with a unit ("250ms", "20m", "1h")"#
    );
    assert_eq!(
        err(Config::from_toml_str("[beaker.cache]\nexpire = -3\n")),
        r#"beaker.cache.expire: "-3" is not a duration; expected a number of seconds ("30", "2.5") or a number with a unit ("250ms", "20m", "1h")"#
    );
    assert_eq!(
        err(Config::from_toml_str(
            "[cache]\n[cache.short_term]\nexpire = 3\n"
        )),
        r#"cache.short_term.expire: region "short_term" is not listed in cache.regions (none listed); add it there or remove the key"#
    );
}

#[test]
fn toml_array_only_for_regions() {
    assert_eq!(
        err(Config::from_toml_str("[cache]\nurl = [\"a:1\", \"b:2\"]\n")),
        r#"cache.url: "a:1, b:2" is an array; expected a single value; only `regions` takes an array"#
    );
}

#[test]
fn toml_without_cache_table() {
    assert_eq!(
        err(Config::from_toml_str("[server]\nport = 80\n")),
        "<toml>: no [cache] table; put the options under [cache] (or [beaker.cache]) and each region's under [cache.<region>]"
    );
}

#[test]
fn toml_syntax_error_has_a_line() {
    let message = err(Config::from_toml_str(
        "[cache]\ntype = \"memory\"\nexpire = = 3\n",
    ));
    assert!(message.starts_with("<toml>: line 3, column "), "{message}");
}

// ---------------------------------------------------------------------------
// INI

const INI: &str = "
# The app's own settings, then the cache's.
[app:main]
use = egg:myapp
debug = true
sqlalchemy.url = postgres://localhost/app

; Beaker's keys, with either prefix
beaker.cache.type = file
beaker.cache.data_dir = cache/data
beaker.cache.regions = short_term, long_term
beaker.cache.short_term.type = memory
beaker.cache.short_term.expire = 1200

[server:main]
cache.long_term.expire = 86400
port = 8080
";

#[test]
fn ini_with_sections_comments_and_foreign_keys() {
    let config = ok(Config::from_ini_str(INI));
    assert_eq!(config.default_options().backend, BackendKind::File);
    let short = region(&config, "short_term");
    assert_eq!(short.backend, BackendKind::Memory);
    assert_eq!(short.expire, Some(Duration::from_secs(1200)));
    let long = region(&config, "long_term");
    assert_eq!(long.expire, Some(Duration::from_secs(86400)));
    assert_eq!(long.data_dir.as_deref(), Some(Path::new("cache/data")));
}

#[test]
fn ini_line_without_equals_names_the_line() {
    assert_eq!(
        err(Config::from_ini_str(
            "cache.type = memory\n\ncache.expire 10\n"
        )),
        r#"<ini>: line 3: "cache.expire 10" is not `key = value`; expected a comment (# or ;), a [section] header or `key = value`"#
    );
}

#[test]
fn ini_value_errors_name_the_key() {
    assert_eq!(
        err(Config::from_ini_str("[app]\nbeaker.cache.expire = soon\n")),
        r#"beaker.cache.expire: "soon" is not a duration; expected a number of seconds ("30", "2.5") or a number with a unit ("250ms", "20m", "1h")"#
    );
}

// ---------------------------------------------------------------------------
// Files

#[test]
fn from_file_chooses_by_extension() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let toml_path = dir.path().join("tankard.toml");
    std::fs::write(&toml_path, "[cache]\ntype = \"memory\"\nexpire = 5\n")?;
    let ini_path = dir.path().join("tankard.ini");
    std::fs::write(&ini_path, "[app]\ncache.type = memory\ncache.expire = 6\n")?;
    let conf_path = dir.path().join("production.conf");
    std::fs::write(&conf_path, "cache.type = memory\ncache.expire = 7\n")?;

    let expire = |config: Config| config.default_options().expire;
    assert_eq!(
        expire(Config::from_file(&toml_path)?),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        expire(Config::from_toml_file(&toml_path)?),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        expire(Config::from_file(&ini_path)?),
        Some(Duration::from_secs(6))
    );
    assert_eq!(
        expire(Config::from_file(&conf_path)?),
        Some(Duration::from_secs(7))
    );

    // The INI text in a .toml file is a TOML error naming the file.
    std::fs::write(&toml_path, "cache.type = memory\n")?;
    let message = err(Config::from_file(&toml_path));
    assert!(
        message.starts_with(&format!("{}: line 1", toml_path.display())),
        "{message}"
    );
    Ok(())
}

#[test]
fn unreadable_file_names_the_path() {
    let result = Config::from_file("/no/such/dir/tankard.ini");
    let error = result.as_ref().err().map(std::error::Error::source);
    assert!(matches!(error, Some(Some(_))), "the OS error is the source");
    let message = err(result);
    assert!(
        message.starts_with("/no/such/dir/tankard.ini: cannot read the config file: "),
        "{message}"
    );
}

#[test]
fn refresh_background_is_accepted_without_a_warning() {
    let config = ok(flat_memory(&[
        ("cache.regions", "pages, data"),
        ("cache.pages.refresh", "background"),
    ]));
    let logs = Logs::default();
    let manager = logs.capture(|| {
        let manager = tankard::CacheManager::new(config).unwrap();
        manager.region("pages").unwrap();
        manager.region("data").unwrap();
        manager
    });
    assert_eq!(logs.warnings(), Vec::<String>::new());
    let pages = manager.region("pages").unwrap();
    assert_eq!(
        pages.options().refresh,
        tankard::config::Refresh::Background
    );
}

// ---------------------------------------------------------------------------
// L1 and the backplane (DESIGN §4, issue 12)

/// A shared store (file) as the default region, with `extra` on top.
fn flat_file(extra: &[(&str, &str)]) -> tankard::Result<Config> {
    let mut pairs = vec![("cache.type", "file"), ("cache.data_dir", "cache/data")];
    pairs.extend_from_slice(extra);
    Config::from_flat(pairs)
}

const NOT_A_BACKPLANE: &str = "expected auto, none or a redis:// URL (redis://[user:password@]host[:port][/db], or rediss://…)";

#[test]
fn l1_is_off_by_default_with_10_000_entries_and_an_automatic_backplane() {
    for config in [ok(flat_memory(&[])), ok(flat_file(&[]))] {
        let d = config.default_options();
        assert!(!d.l1);
        assert_eq!(d.l1_max_entries, 10_000);
        assert_eq!(d.l1_max_bytes, None);
        assert_eq!(d.l1_expire, None);
        assert_eq!(d.backplane, BackplaneSetting::Auto);
    }
}

#[test]
fn l1_options_read_alike_from_flat_toml_and_ini() {
    // Global options turn the tier on; `pages` overrides each of them.
    let flat = ok(Config::from_flat([
        ("cache.type", "file"),
        ("cache.data_dir", "cache/data"),
        ("cache.l1", "yes"),
        ("cache.l1_max_entries", " 500 "),
        ("cache.l1_expire", "250ms"),
        ("cache.backplane", "none"),
        ("cache.regions", "pages, data"),
        ("cache.pages.l1", "off"),
        ("cache.pages.l1_max_bytes", "1048576"),
        ("cache.pages.l1_expire", "1.5"),
        ("cache.pages.backplane", "AUTO"),
    ]));
    let toml = ok(Config::from_toml_str(
        r#"
        [cache]
        type = "file"
        data_dir = "cache/data"
        l1 = true
        l1_max_entries = 500
        l1_expire = "250ms"
        backplane = "none"
        regions = ["pages", "data"]

        [cache.pages]
        l1 = false
        l1_max_bytes = 1048576
        l1_expire = 1.5
        backplane = "auto"
        "#,
    ));
    let ini = ok(Config::from_ini_str(
        "
        [app:main]
        beaker.cache.type = file
        beaker.cache.data_dir = cache/data
        beaker.cache.l1 = on
        beaker.cache.l1_max_entries = 500
        beaker.cache.l1_expire = 0.25
        beaker.cache.backplane = None
        beaker.cache.regions = pages, data
        beaker.cache.pages.l1 = 0
        beaker.cache.pages.l1_max_bytes = 1048576
        beaker.cache.pages.l1_expire = 1500ms
        beaker.cache.pages.backplane = auto
        ",
    ));
    assert_eq!(toml, flat);
    assert_eq!(ini, flat);

    let data = region(&flat, "data");
    assert!(data.l1);
    assert_eq!(data.l1_max_entries, 500);
    assert_eq!(data.l1_max_bytes, None);
    assert_eq!(data.l1_expire, Some(Duration::from_millis(250)));
    assert_eq!(data.backplane, BackplaneSetting::None);
    let pages = region(&flat, "pages");
    assert!(!pages.l1);
    assert_eq!(pages.l1_max_entries, 500, "inherited");
    assert_eq!(pages.l1_max_bytes, Some(1_048_576));
    assert_eq!(pages.l1_expire, Some(Duration::from_millis(1500)));
    assert_eq!(pages.backplane, BackplaneSetting::Auto);
}

#[test]
fn l1_options_without_l1_are_accepted_on_any_type() {
    // A global default may set them for every region, memory ones too.
    let options = [
        ("cache.l1", "false"),
        ("cache.l1_max_entries", "5"),
        ("cache.l1_max_bytes", "5"),
        ("cache.l1_expire", "5"),
        ("cache.backplane", "none"),
    ];
    for ty in ["memory", "null"] {
        let mut pairs = vec![("cache.type", ty)];
        pairs.extend(options);
        let config = ok(Config::from_flat(pairs));
        let d = config.default_options();
        assert!(!d.l1);
        assert_eq!(d.l1_max_entries, 5);
        assert_eq!(d.backplane, BackplaneSetting::None);
    }
}

#[test]
fn l1_takes_every_boolean_spelling_and_refuses_others() {
    for (written, expected) in [("TRUE", true), ("y", true), ("1", true), ("no", false)] {
        let config = ok(flat_file(&[("cache.l1", written)]));
        assert_eq!(config.default_options().l1, expected, "{written}");
    }
    assert_eq!(
        err(flat_file(&[("cache.l1", "maybe")])),
        r#"cache.l1: "maybe" is not a boolean; expected true, yes, on, y, t, 1 or false, no, off, n, f, 0"#
    );
    assert_eq!(
        err(Config::from_toml_str(
            "[cache]\ntype = \"file\"\ndata_dir = \"d\"\nl1 = \"sometimes\"\n"
        )),
        r#"cache.l1: "sometimes" is not a boolean; expected true, yes, on, y, t, 1 or false, no, off, n, f, 0"#
    );
}

#[test]
fn l1_bounds_are_whole_numbers_above_zero() {
    for key in ["cache.l1_max_entries", "cache.l1_max_bytes"] {
        for bad in ["0", "-1", "lots", "1.5", ""] {
            assert_eq!(
                err(flat_file(&[(key, bad)])),
                format!(
                    "{key}: {bad:?} is not a bound; expected a whole number above 0 (use l1 = false for no L1 tier)"
                )
            );
        }
    }
    assert_eq!(
        err(Config::from_ini_str(
            "[app]\ncache.regions = r\ncache.r.l1_max_bytes = 1MB\n"
        )),
        r#"cache.r.l1_max_bytes: "1MB" is not a bound; expected a whole number above 0 (use l1 = false for no L1 tier)"#
    );
}

#[test]
fn l1_expire_is_a_positive_duration() {
    for (written, expected) in [
        ("5", Duration::from_secs(5)),
        ("0.5", Duration::from_millis(500)),
        ("100ms", Duration::from_millis(100)),
        ("2m", Duration::from_secs(120)),
        ("1h", Duration::from_secs(3600)),
    ] {
        let config = ok(flat_file(&[("cache.l1_expire", written)]));
        assert_eq!(config.default_options().l1_expire, Some(expected));
    }
    assert_eq!(
        err(flat_file(&[("cache.l1_expire", "soon")])),
        r#"cache.l1_expire: "soon" is not a duration; expected a positive number of seconds ("0.5", "30") or a number with a unit ("250ms", "2s", "20m", "1h")"#
    );
    // Zero would make every L1 copy stale at once: `l1 = false` says that.
    assert_eq!(
        err(flat_file(&[("cache.l1_expire", "0ms")])),
        r#"cache.l1_expire: "0ms" is not a positive duration; expected a positive number of seconds ("0.5", "30") or a number with a unit ("250ms", "2s", "20m", "1h")"#
    );
    assert_eq!(
        err(Config::from_toml_str(
            "[cache]\nregions = [\"r\"]\n[cache.r]\nl1_expire = -1\n"
        )),
        r#"cache.r.l1_expire: "-1" is not a duration; expected a positive number of seconds ("0.5", "30") or a number with a unit ("250ms", "2s", "20m", "1h")"#
    );
}

#[test]
fn backplane_is_auto_none_or_a_redis_url() {
    for (written, expected) in [
        ("auto", BackplaneSetting::Auto),
        (" Auto ", BackplaneSetting::Auto),
        ("none", BackplaneSetting::None),
        ("NONE", BackplaneSetting::None),
    ] {
        let config = ok(flat_file(&[("cache.backplane", written)]));
        assert_eq!(config.default_options().backplane, expected, "{written:?}");
    }
    for (bad, problem) in [
        ("", "is not a backplane"),
        ("off", "is not a backplane"),
        ("127.0.0.1:6379", "is not a backplane"),
        ("memcached://h:11211", "is not a backplane"),
        ("redis", "is not a redis URL"),
        ("redis://", "is not a redis URL"),
        ("redis://h:99999", "is not a redis URL"),
        ("redis://h/db0", "is not a redis URL"),
        // A unix socket serves a store on this machine, not a backplane
        // between machines.
        ("redis+unix:///tmp/redis.sock", "is not a redis URL"),
        ("redis://h:1,redis://h:2", "is not a redis URL"),
    ] {
        assert_eq!(
            err(flat_file(&[("cache.backplane", bad)])),
            format!("cache.backplane: {bad:?} {problem}; {NOT_A_BACKPLANE}")
        );
    }
    // The password never reaches the message.
    assert_eq!(
        err(Config::from_toml_str(
            "[cache]\nregions = [\"r\"]\n[cache.r]\nbackplane = \"redis://app:hunter2@bad host:6379\"\n"
        )),
        format!(
            "cache.r.backplane: \"redis://app:***@bad host:6379\" is not a redis URL; {NOT_A_BACKPLANE}"
        )
    );
}

#[cfg(feature = "redis")]
#[test]
fn backplane_takes_a_redis_url_for_a_region_on_any_store() {
    for url in [
        "redis://127.0.0.1:6379",
        "redis://:secret@cache.internal:6380/2",
        "REDIS://[::1]",
    ] {
        // A file region, and a memory one: a memory region may publish
        // its writes for the others even without a tier of its own.
        for config in [
            ok(flat_file(&[("cache.backplane", url)])),
            ok(flat_memory(&[("cache.backplane", url)])),
        ] {
            assert_eq!(
                config.default_options().backplane,
                BackplaneSetting::Redis(url.to_owned())
            );
        }
    }
    let result = flat_file(&[("cache.backplane", "rediss://u:pw@h:6380")]);
    if cfg!(feature = "redis-tls") {
        assert_eq!(
            ok(result).default_options().backplane,
            BackplaneSetting::Redis("rediss://u:pw@h:6380".to_owned())
        );
    } else {
        assert_eq!(
            err(result),
            r#"cache.backplane: "rediss://u:***@h:6380" needs the cargo feature "redis-tls" of tankard; enable it with `tankard = { features = ["redis-tls"] }`"#
        );
    }
}

#[cfg(not(feature = "redis"))]
#[test]
fn backplane_url_without_the_redis_feature_names_feature_and_key() {
    assert_eq!(
        err(flat_file(&[(
            "cache.backplane",
            "redis://app:hunter2@h:6379"
        )])),
        r#"cache.backplane: "redis://app:***@h:6379" needs the cargo feature "redis" of tankard; enable it with `tankard = { features = ["redis"] }`"#
    );
    // Inherited by a region: the global key is the one to change.
    assert_eq!(
        err(Config::from_ini_str(
            "cache.backplane = rediss://h\ncache.regions = r\ncache.r.type = file\ncache.r.data_dir = d\n"
        )),
        r#"cache.backplane: "rediss://h" needs the cargo feature "redis-tls" of tankard; enable it with `tankard = { features = ["redis-tls"] }`"#
    );
    // A value error anywhere is reported first, whatever the features.
    assert_eq!(
        err(Config::from_flat([
            ("cache.backplane", "redis://h"),
            ("cache.regions", "r"),
            ("cache.r.l1_expire", "soon"),
        ])),
        r#"cache.r.l1_expire: "soon" is not a duration; expected a positive number of seconds ("0.5", "30") or a number with a unit ("250ms", "2s", "20m", "1h")"#
    );
}

#[test]
fn tiered_is_gone_and_says_to_use_l1() {
    let expected = "is no longer a backend type: an L1 tier now goes in front of any shared store; expected a shared type with l1 = true instead (e.g. type = ext:redis and l1 = true)";
    assert_eq!(
        err(Config::from_flat([("cache.type", "tiered")])),
        format!("cache.type: \"tiered\" {expected}")
    );
    assert_eq!(
        err(Config::from_toml_str(
            "[cache]\nregions = [\"r\"]\n[cache.r]\ntype = \"Tiered\"\n"
        )),
        format!("cache.r.type: \"Tiered\" {expected}")
    );
    assert_eq!(
        err(Config::from_ini_str("beaker.cache.type = tiered\n")),
        format!("beaker.cache.type: \"tiered\" {expected}")
    );
}

#[test]
fn l1_on_a_memory_or_null_region_is_refused() {
    let problem = |backend: &str| {
        format!(
            "\"true\" is not available for the {backend} backend: l1 is for shared stores (file, dbm, memcached, redis, redis-cluster, database); expected l1 = false for this region, or a shared type"
        )
    };
    assert_eq!(
        err(flat_memory(&[("cache.l1", "true")])),
        format!("cache.l1: {}", problem("memory"))
    );
    assert_eq!(
        err(Config::from_toml_str(
            "[cache]\ntype = \"null\"\nl1 = true\n"
        )),
        format!("cache.l1: {}", problem("null"))
    );
    // Inherited from the global options: the region's own key is named,
    // since setting it to false there is the fix.
    assert_eq!(
        err(Config::from_ini_str(
            "cache.type = file\ncache.data_dir = d\ncache.l1 = yes\ncache.regions = hot\ncache.hot.type = memory\n"
        )),
        format!("cache.hot.l1: {}", problem("memory"))
    );
    let config = ok(Config::from_flat([
        ("cache.type", "file"),
        ("cache.data_dir", "d"),
        ("cache.l1", "yes"),
        ("cache.regions", "hot"),
        ("cache.hot.type", "memory"),
        ("cache.hot.l1", "no"),
    ]));
    assert!(config.default_options().l1);
    assert!(!region(&config, "hot").l1);
}

#[test]
fn l1_goes_in_front_of_every_shared_type() {
    let shared = [
        ("memcached", "127.0.0.1:11211", cfg!(feature = "memcached")),
        ("redis", "redis://127.0.0.1:6379", cfg!(feature = "redis")),
        (
            "redis-cluster",
            "redis://127.0.0.1:7000,redis://127.0.0.1:7001",
            cfg!(feature = "redis"),
        ),
    ];
    let config = ok(flat_file(&[("cache.l1", "true")]));
    assert!(config.default_options().l1);
    for (ty, url, built) in shared {
        let result = Config::from_flat([("cache.type", ty), ("cache.url", url), ("cache.l1", "1")]);
        if built {
            assert!(ok(result).default_options().l1, "{ty}");
        } else {
            // Refused for the feature, never for l1.
            assert!(err(result).contains("needs the cargo feature"), "{ty}");
        }
    }
}

// ---------------------------------------------------------------------------
// Bounds: every number has a largest value, named by the error

/// Each bounded key, its largest value as written, and a value just past it.
const LARGEST: [(&str, &str, &str); 15] = [
    ("fail_safe_throttle", "24h", "86400.5"),
    ("timeout", "1h", "3600.001"),
    ("retry_after", "1h", "61m"),
    ("lock_timeout", "24h", "86401"),
    ("wait_timeout", "24h", "24.001h"),
    ("expire", "876000h", "3153600001"),
    ("stale", "3153600000", "876000.001h"),
    ("starttime", "4102444800", "4102444801"),
    ("key_length", "65535", "65536"),
    ("max_entries", "1000000000", "1000000001"),
    ("max_bytes", "1099511627776", "1099511627777"),
    ("max_entry_bytes", "1073741824", "1073741825"),
    ("l1_max_entries", "1000000000", "1000000001"),
    ("l1_max_bytes", "1099511627776", "1099511627777"),
    ("l1_expire", "876000h", "876000.001h"),
];

/// What the error for a value past `key`'s largest says it expected.
fn largest_allowed(key: &str) -> &'static str {
    match key {
        "timeout" | "retry_after" => "at most 1h",
        "lock_timeout" | "wait_timeout" | "fail_safe_throttle" => "at most 24h",
        "expire" | "stale" | "l1_expire" => "at most 876000h (100 years)",
        "starttime" => "at most 4102444800 (2100-01-01, in seconds since the epoch)",
        "key_length" => "at most 65535",
        "max_entries" | "l1_max_entries" => "at most 1000000000",
        "max_bytes" | "l1_max_bytes" => "at most 1099511627776",
        "max_entry_bytes" => "at most 1073741824",
        other => panic!("no bound for {other}"),
    }
}

#[test]
fn early_refresh_takes_off_or_a_fraction_and_needs_an_expiry() {
    use tankard::config::EarlyRefresh;
    assert_eq!(
        ok(flat_memory(&[])).default_options().early_refresh,
        EarlyRefresh::Off
    );
    let at = |value| flat_memory(&[("cache.expire", "1m"), ("cache.early_refresh", value)]);
    let early = |value| ok(at(value)).default_options().early_refresh;
    assert_eq!(early("0.8"), EarlyRefresh::At(0.8));
    assert_eq!(early(".5"), EarlyRefresh::At(0.5));
    assert_eq!(early("OFF"), EarlyRefresh::Off);
    assert_eq!(early("xfetch"), EarlyRefresh::XFetch);
    let beta = |value| flat_memory(&[("cache.early_refresh_beta", value)]);
    let beta_of = |value| ok(beta(value)).default_options().early_refresh_beta;
    assert_eq!(
        ok(flat_memory(&[])).default_options().early_refresh_beta,
        1.0
    );
    assert_eq!(beta_of("2.5"), 2.5);
    assert_eq!(beta_of("1000"), 1000.0);
    for bad in ["0", "0.0", "-1", "1001", "1e3", "inf", "NaN", ""] {
        assert_eq!(
            err(beta(bad)),
            format!(
                "cache.early_refresh_beta: {bad:?} is not a positive factor; expected a number above 0 and at most 1000 (1.0 is XFetch's default; above 1 renews earlier)"
            ),
        );
    }
    for bad in [
        "0", "0.0", "1", "1.0", "1.5", "-0.5", "80%", "inf", "NaN", "0.8e0", "",
    ] {
        assert_eq!(
            err(at(bad)),
            format!(
                "cache.early_refresh: {bad:?} is not a fraction of the expiry; expected off, xfetch, or a fraction above 0 and below 1 (0.8: refresh past 80 % of expire)"
            ),
        );
    }
    assert_eq!(
        err(flat_memory(&[("cache.early_refresh", "0.8")])),
        "cache.early_refresh: \"0.8\" is set on a region without expire: its entries never expire, so none is renewed early; expected expire = <duration> for this region, or early_refresh = off"
    );
}

#[test]
fn soft_timeout_must_stay_below_hard_timeout() {
    let options = ok(flat_memory(&[
        ("cache.soft_timeout", "100ms"),
        ("cache.hard_timeout", "2s"),
    ]))
    .default_options()
    .clone();
    assert_eq!(options.soft_timeout, Some(Duration::from_millis(100)));
    assert_eq!(options.hard_timeout, Some(Duration::from_secs(2)));
    assert_eq!(ok(flat_memory(&[])).default_options().hard_timeout, None);
    assert_eq!(
        err(flat_memory(&[
            ("cache.soft_timeout", "2s"),
            ("cache.hard_timeout", "2s")
        ])),
        "cache.soft_timeout: \"2s\" is not below hard_timeout (2s): no caller would ever get the stale value early; expected a soft_timeout below hard_timeout, or no soft_timeout"
    );
    assert!(
        err(flat_memory(&[("cache.hard_timeout", "0")])).contains("is not a positive duration")
    );
    assert!(err(flat_memory(&[("cache.soft_timeout", "25h")])).contains("at most 24h"));
}

#[test]
fn fail_safe_keys_are_parsed_bounded_and_need_an_expiry() {
    let defaults = ok(flat_memory(&[])).default_options().clone();
    assert_eq!(defaults.fail_safe, Duration::ZERO);
    assert_eq!(defaults.fail_safe_throttle, Duration::from_secs(30));
    let config = ok(flat_memory(&[
        ("cache.expire", "1m"),
        ("cache.fail_safe", "2h"),
        ("cache.fail_safe_throttle", "5s"),
    ]));
    let options = config.default_options();
    assert_eq!(options.fail_safe, Duration::from_secs(7200));
    assert_eq!(options.fail_safe_throttle, Duration::from_secs(5));
    // Nothing expires, so nothing is kept past expiry: a slip, named.
    assert_eq!(
        err(flat_memory(&[("cache.fail_safe", "1h")])),
        "cache.fail_safe: \"3600s\" is set on a region without expire: its entries never expire, so none is kept past expiry; expected expire = <duration> for this region, or fail_safe = 0"
    );
    assert_eq!(
        err(flat_memory(&[("cache.fail_safe_throttle", "0")])),
        "cache.fail_safe_throttle: \"0\" is not a positive duration; expected a positive number of seconds (\"0.5\", \"30\") or a number with a unit (\"250ms\", \"2s\", \"20m\", \"1h\")"
    );
    assert_eq!(
        err(flat_memory(&[
            ("cache.expire", "1"),
            ("cache.fail_safe", "876000.001h")
        ])),
        "cache.fail_safe: \"876000.001h\" is too long; expected at most 876000h (100 years)"
    );
}

#[test]
fn every_bounded_key_takes_its_largest_and_names_it_past_that() {
    for (key, largest, past) in LARGEST {
        let name = format!("cache.{key}");
        ok(flat_memory(&[(&name, largest)]));
        let duration = [
            "timeout",
            "retry_after",
            "lock_timeout",
            "wait_timeout",
            "expire",
            "stale",
            "l1_expire",
            "fail_safe_throttle",
        ]
        .contains(&key);
        let problem = if duration {
            "is too long"
        } else {
            "is too large"
        };
        for too_big in [past, "99999999999999999999", "10000000000000000000"] {
            assert_eq!(
                err(flat_memory(&[(&name, too_big)])),
                format!(
                    "{name}: {too_big:?} {problem}; expected {}",
                    largest_allowed(key)
                ),
            );
        }
    }
}

#[test]
fn the_issue_s_timeouts_are_refused_at_parse_time() {
    // Issue 11: these passed `tankard check`, then the first memcached call
    // panicked adding the timeout to an Instant.
    assert_eq!(
        err(flat_memory(&[("cache.timeout", "10000000000000000000")])),
        r#"cache.timeout: "10000000000000000000" is too long; expected at most 1h"#
    );
    assert_eq!(
        err(flat_memory(&[(
            "cache.wait_timeout",
            "10000000000000000000"
        )])),
        r#"cache.wait_timeout: "10000000000000000000" is too long; expected at most 24h"#
    );
    // However many digits: still "too long", never a parse failure.
    let huge = format!("{}ms", "9".repeat(400));
    assert_eq!(
        err(flat_memory(&[("cache.lock_timeout", &huge)])),
        format!("cache.lock_timeout: {huge:?} is too long; expected at most 24h")
    );
}

#[test]
fn negative_and_junk_numbers_are_still_not_numbers() {
    assert_eq!(
        err(flat_memory(&[("cache.starttime", "-1")])),
        r#"cache.starttime: "-1" is not a number of seconds since the epoch; expected a whole non-negative number"#
    );
    assert_eq!(
        err(flat_memory(&[(
            "cache.max_entries",
            "-99999999999999999999"
        )])),
        r#"cache.max_entries: "-99999999999999999999" is not a bound; expected a whole number above 0 (use type = null to store nothing)"#
    );
}

#[test]
fn toml_numbers_too_big_for_toml_name_their_key() {
    // toml refuses these integers itself (past i64); the error still names
    // the key and the largest allowed, as a flat map's would.
    assert_eq!(
        err(Config::from_toml_str(
            "[cache]\ntype = \"memory\"\nexpire = 99999999999999999999\n"
        )),
        r#"cache.expire: "99999999999999999999" is too long; expected at most 876000h (100 years)"#
    );
    assert_eq!(
        err(Config::from_toml_str(
            "[cache]\nregions = [\"r\"]\n[cache.r]\ntimeout = 10_000_000_000_000_000_000 # ten to the 19th\n"
        )),
        r#"cache.r.timeout: "10000000000000000000" is too long; expected at most 1h"#
    );
    assert_eq!(
        err(Config::from_toml_str(
            "[beaker.cache]\nmax_bytes = 99999999999999999999\n"
        )),
        r#"beaker.cache.max_bytes: "99999999999999999999" is too large; expected at most 1099511627776"#
    );
    // Two of them (toml stops at each in turn): both are read as text, and
    // the error is the first the option checks meet.
    let two = "[cache]\nstale = 1e999\nkey_length = 99999999999999999999\n";
    assert_eq!(
        err(Config::from_toml_str(two)),
        r#"cache.key_length: "99999999999999999999" is too large; expected at most 65535"#
    );
    assert_eq!(
        err(Config::from_toml_str(&two.replace("key_length", "# "))),
        r#"cache.stale: "1e999" is not a duration; expected a number of seconds ("30", "2.5") or a number with a unit ("250ms", "20m", "1h")"#
    );
    // Outside Tankard's tables it stays toml's error, with its place.
    let message = err(Config::from_toml_str(
        "[server]\nport = 99999999999999999999\n[cache]\ntype = \"memory\"\n",
    ));
    assert!(
        message.starts_with("<toml>: line 2, column 8: "),
        "{message}"
    );
}

// ---------------------------------------------------------------------------
// Warnings: a config that parses but probably not as meant

/// Parses with `parse` and returns the warnings logged meanwhile.
fn warnings(parse: impl FnOnce() -> tankard::Result<Config>) -> Vec<String> {
    let logs = Logs::default();
    ok(logs.capture(parse));
    logs.warnings()
}

#[test]
fn an_empty_config_file_warns() {
    assert_eq!(
        warnings(|| Config::from_ini_str("\n  \n")),
        [
            "<ini>: the file is empty, so the cache is the default one: in-process memory, no regions"
        ]
    );
    assert_eq!(
        warnings(|| Config::from_ini_str("[app:main]\n# cache.type = file\nport = 80\n")),
        [
            "<ini>: no cache.* or beaker.cache.* key, so the cache is the default one: in-process memory, no regions"
        ]
    );
    assert_eq!(
        warnings(|| Config::from_toml_str("[cache]\n[server]\nport = 80\n")),
        [
            "<toml>: [cache] has no keys, so the cache is the default one: in-process memory, no regions"
        ]
    );
    assert_eq!(
        warnings(|| Config::from_toml_str("[beaker.cache]\n")),
        [
            "<toml>: [beaker.cache] has no keys, so the cache is the default one: in-process memory, no regions"
        ]
    );
}

#[test]
fn an_empty_file_on_disk_warns_with_its_path() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("production.ini");
    std::fs::write(&path, "")?;
    assert_eq!(
        warnings(|| Config::from_file(&path)),
        [format!(
            "{}: the file is empty, so the cache is the default one: in-process memory, no regions",
            path.display()
        )]
    );
    Ok(())
}

#[test]
fn a_key_set_twice_in_an_ini_file_warns_and_the_last_wins() {
    let text = "cache.type = memory\ncache.expire = 10\n[other]\nbeaker.cache.expire = 20\ncache.secret = a\ncache.secret = b\n";
    let logs = Logs::default();
    let config = ok(logs.capture(|| Config::from_ini_str(text)));
    assert_eq!(
        logs.warnings(),
        [
            "<ini>: line 4: beaker.cache.expire sets the same option as line 2 (cache.expire); the value on line 4 wins",
            "<ini>: line 6: cache.secret sets the same option as line 5 (cache.secret); the value on line 6 wins",
        ]
    );
    assert_eq!(
        config.default_options().expire,
        Some(Duration::from_secs(20))
    );
    assert_eq!(
        config.default_options().secret,
        Some(tankard::config::Secret::new("b"))
    );
    // A config with each key once says nothing.
    assert_eq!(warnings(|| Config::from_ini_str(INI)), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// A config `tankard check` accepts never panics later

/// Every bounded key at its largest, on a memory default region and a file
/// region: each kind of call runs, none panics.
#[tokio::test]
async fn every_key_at_its_largest_runs_every_call() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut pairs: Vec<(String, String)> = LARGEST
        .iter()
        .filter(|(key, ..)| *key != "max_entries")
        .map(|(key, largest, _)| (format!("cache.{key}"), (*largest).to_owned()))
        .collect();
    pairs.extend([
        ("cache.type".into(), "memory".into()),
        ("cache.max_entries".into(), "1000000000".into()),
        ("cache.regions".into(), "disk".into()),
        ("cache.disk.type".into(), "file".into()),
        ("cache.disk.data_dir".into(), data.display().to_string()),
        // The l1_* keys at their largest have to hold once the tier exists.
        ("cache.disk.l1".into(), "true".into()),
    ]);
    let manager = tankard::CacheManager::new(ok(Config::from_flat(pairs))).unwrap();
    let long_key = "k".repeat(70_000);
    for region in [manager.default_region(), manager.region("disk").unwrap()] {
        let ns = region.namespace("limits");
        for key in ["k", long_key.as_str()] {
            let v = ns.get_or_create(key, || async { 1u32 }).await.unwrap();
            assert_eq!(*v, 1);
            ns.put(key, 2u32).await.unwrap();
            // Created before `starttime` (2100): stored, but stale.
            let peeked = ns.peek::<u32>(key).await.unwrap();
            assert_eq!(peeked.map(|(v, fresh)| (*v, fresh)), Some((2, false)));
            let v = ns.get_or_create(key, || async { 3u32 }).await.unwrap();
            assert_eq!(*v, 3, "{}", region.name());
        }
        ns.clear().await.unwrap();
        assert!(ns.peek::<u32>("k").await.unwrap().is_none());
        // The namespace's own expiry, past the config's bound, saturates.
        let forever = ns.expire(Duration::MAX);
        forever.put("k", 4u32).await.unwrap();
        let peeked = forever.peek::<u32>("k").await.unwrap();
        assert_eq!(peeked.map(|(v, _)| *v), Some(4));
    }
}

/// A duration from code is not bounded by the config: its milliseconds
/// saturate instead of wrapping to a short lifetime.
#[tokio::test]
async fn an_expiry_past_u64_milliseconds_stays_fresh() {
    let clock = tankard::Clock::manual(1_000_000);
    let manager = tankard::CacheManager::with_clock(ok(flat_memory(&[])), clock.clone()).unwrap();
    // 2^64 + 384 ms: as a u64, 384 ms.
    let ns = manager
        .namespace("n")
        .expire(std::time::Duration::from_secs(18_446_744_073_709_552));
    ns.put("k", 1u8).await.unwrap();
    clock.advance(Duration::from_secs(3600));
    assert!(
        ns.try_get_fresh::<u8>("k").is_some(),
        "still fresh an hour on"
    );
}

#[test]
fn a_manual_clock_saturates_at_the_end_of_time() {
    let clock = tankard::Clock::manual(5);
    clock.advance(Duration::MAX);
    assert_eq!(clock.now_ms(), u64::MAX);
    clock.advance(Duration::from_millis(1));
    assert_eq!(clock.now_ms(), u64::MAX);
}

#[test]
fn a_distributed_lock_without_a_server_is_refused_at_parse_time() {
    // Found by the config_flat fuzz target: this loaded, then
    // CacheManager::new refused it. A config that loads must open.
    assert_eq!(
        err(flat_memory(&[("cache.lock", "distributed")])),
        r#"cache.lock: "distributed" is not available for the memory backend; expected auto, local, file (with lock_dir) or none"#
    );
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    assert_eq!(
        err(Config::from_flat([
            ("cache.type", "file"),
            ("cache.data_dir", data_dir.as_str()),
            ("cache.regions", "r"),
            ("cache.r.lock", "distributed"),
        ])),
        r#"cache.r.lock: "distributed" is not available for the file backend; expected auto, local, file (with lock_dir) or none"#
    );
    for lock in ["auto", "local", "none"] {
        let config = ok(flat_memory(&[("cache.lock", lock)]));
        tankard::CacheManager::new(config).unwrap();
    }
}

#[test]
fn the_builder_makes_what_the_flat_map_makes() {
    use tankard::config::{BackendKind, EarlyRefresh, LockMode, Refresh};
    let built = tankard::Config::builder()
        .defaults(|all| {
            all.backend(BackendKind::File)
                .data_dir("/var/cache/app")
                .expire(Duration::from_millis(1500))
                .lock(LockMode::File)
        })
        .region("short_term", |r| {
            r.backend(BackendKind::Memory)
                .expire(Duration::from_secs(1200))
                .early_refresh(EarlyRefresh::At(0.8))
                .early_refresh_beta(2.5)
                .refresh(Refresh::Background)
                .stale(Duration::from_secs(60))
                .fail_safe(Duration::from_secs(3600))
                .soft_timeout(Duration::from_millis(100))
                .hard_timeout(Duration::from_secs(2))
                .max_entries(500)
        })
        .region("long_term", |r| r.enabled(false))
        .build()
        .unwrap();
    let flat = ok(Config::from_flat([
        ("cache.type", "file"),
        ("cache.data_dir", "/var/cache/app"),
        ("cache.expire", "1.5"),
        ("cache.lock", "file"),
        ("cache.regions", "short_term, long_term"),
        ("cache.short_term.type", "memory"),
        ("cache.short_term.expire", "20m"),
        ("cache.short_term.early_refresh", "0.8"),
        ("cache.short_term.early_refresh_beta", "2.5"),
        ("cache.short_term.refresh", "background"),
        ("cache.short_term.stale", "60"),
        ("cache.short_term.fail_safe", "1h"),
        ("cache.short_term.soft_timeout", "100ms"),
        ("cache.short_term.hard_timeout", "2s"),
        ("cache.short_term.max_entries", "500"),
        ("cache.long_term.enabled", "false"),
    ]));
    assert_eq!(built, flat);
    // Its errors name the key a file would use.
    let err = tankard::Config::builder()
        .region("short_term", |r| {
            r.backend(BackendKind::Memcached).url("127.0.0.1.11211")
        })
        .build()
        .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("cache.short_term.url: \"127.0.0.1.11211\" is not a memcached address"),
        "{err}"
    );
}

#[test]
fn a_config_deserializes_from_the_shape_of_the_cache_table() {
    #[derive(serde::Deserialize)]
    struct Settings {
        cache: Config,
    }
    let text = r#"
        [cache]
        regions = ["short_term", "long_term"]
        type = "file"
        data_dir = "/var/cache/app"
        expire = 1.5
        [cache.short_term]
        type = "memory"
        expire = "20m"
        enabled = true
        [cache.long_term]
        max_entry_bytes = 1024
    "#;
    let settings: Settings = toml::from_str(text).unwrap();
    assert_eq!(settings.cache, ok(Config::from_toml_str(text)));
    // The parser's errors come through, naming the key.
    let err = toml::from_str::<Settings>("[cache]\nexpir = 10\n")
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("cache.expir: unknown option"),
        "{err}"
    );
    let err =
        toml::from_str::<Settings>("[cache]\nregions = [\"r\"]\n[cache.r]\nexpire = [\"1\"]\n")
            .err()
            .unwrap();
    assert!(
        err.to_string()
            .contains("cache.r.expire: a region's option takes a single value"),
        "{err}"
    );
}
