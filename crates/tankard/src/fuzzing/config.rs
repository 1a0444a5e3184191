//! The config loader targets: flat pairs, TOML and INI text.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::CacheManager;
use crate::config::{BackendKind, BackplaneSetting, Config, RegionOptions};
use crate::error::Result;

/// `key=value` lines (split at the first `=`, nothing trimmed) as flat
/// pairs; the same pairs must load alike as an INI and a TOML file.
pub(super) fn flat(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let pairs: Vec<(&str, &str)> = text
        .split('\n')
        .map(|line| line.split_once('=').unwrap_or((line, "")))
        .collect();
    let loaded = Config::from_flat(pairs.iter().copied());
    check(&loaded);
    if let Ok(config) = &loaded {
        same_as_ini(&pairs, config);
        same_as_toml(&pairs, config);
    }
}

pub(super) fn toml(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check(&Config::from_toml_str(text));
    }
}

pub(super) fn ini(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        check(&Config::from_ini_str(text));
    }
}

/// What every loaded config must satisfy: each duration can be added to
/// an instant and counted in milliseconds, and the config opens as a
/// manager that serves a call on every region.
fn check(loaded: &Result<Config>) {
    let Ok(config) = loaded else {
        return;
    };
    for options in std::iter::once(config.default_options()).chain(config.regions()) {
        durations_in_range(options);
    }
    serves_calls(config.clone());
}

fn durations_in_range(options: &RegionOptions) {
    let durations = [
        ("expire", options.expire),
        ("stale", Some(options.stale)),
        ("lock_timeout", Some(options.lock_timeout)),
        ("wait_timeout", Some(options.wait_timeout)),
        ("timeout", Some(options.timeout)),
        ("retry_after", Some(options.retry_after)),
        ("l1_expire", options.l1_expire),
    ];
    let now = Instant::now();
    for (name, duration) in durations {
        let Some(duration) = duration else { continue };
        // Twice: a deadline may be computed from another deadline (a lock
        // wait inside a call's timeout).
        assert!(
            now.checked_add(duration)
                .and_then(|at| at.checked_add(duration))
                .is_some(),
            "region {:?}: {name} = {duration:?} overflows an Instant",
            options.name
        );
        assert!(
            u64::try_from(duration.as_millis()).is_ok(),
            "region {:?}: {name} = {duration:?} does not fit in u64 milliseconds",
            options.name
        );
    }
}

/// A directory for one input's file regions, removed afterwards: the
/// fuzzer's paths are never used, so it cannot write anywhere else.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Scratch(std::env::temp_dir().join(format!("tankard-fuzz-{}-{n}", std::process::id())))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => panic!("no tokio runtime: {err}"),
    };
}

/// Opens the config as a manager and makes one call on every region, which
/// is where a duration meets an instant. Configs with a region that needs
/// a server (its store or a `backplane` URL) are left out: fuzzing makes
/// no network calls.
fn serves_calls(mut config: Config) {
    let local = |options: &RegionOptions| {
        matches!(
            options.backend,
            BackendKind::Memory | BackendKind::File | BackendKind::Null
        ) && !matches!(options.backplane, BackplaneSetting::Redis(_))
    };
    if !std::iter::once(&config.default)
        .chain(config.regions.values())
        .all(local)
    {
        return;
    }
    let scratch = Scratch::new();
    for options in std::iter::once(&mut config.default).chain(config.regions.values_mut()) {
        if options.data_dir.is_some() {
            options.data_dir = Some(scratch.0.join("data"));
        }
        if options.lock_dir.is_some() {
            options.lock_dir = Some(scratch.0.join("lock"));
        }
    }
    let manager = match CacheManager::new(config) {
        Ok(manager) => manager,
        Err(err) => panic!("a config that loads does not open: {err}"),
    };
    RUNTIME.with(|runtime| {
        for region in std::iter::once(manager.default_region()).chain(manager.regions()) {
            let ns = region.namespace("fuzz");
            match runtime.block_on(ns.get_or_create("k", || async { 7u8 })) {
                Ok(value) => assert_eq!(*value, 7),
                Err(err) => panic!("region {:?}: a call failed: {err}", region.name()),
            }
        }
    });
    drop(manager);
    drop(scratch);
}

/// Pairs an INI file can hold as they are (`key = value` lines are trimmed).
fn ini_safe(pairs: &[(&str, &str)]) -> bool {
    pairs
        .iter()
        .all(|(key, value)| key.trim() == *key && value.trim() == *value)
}

fn same_as_ini(pairs: &[(&str, &str)], flat: &Config) {
    if !ini_safe(pairs) {
        return;
    }
    let text: String = pairs
        .iter()
        .map(|(key, value)| format!("{key} = {value}\n"))
        .collect();
    match Config::from_ini_str(&text) {
        Ok(ini) => assert_eq!(&ini, flat, "INI and flat disagree on {text:?}"),
        Err(err) => panic!("flat pairs load, the same INI does not: {err}\n{text}"),
    }
}

/// The pairs as a TOML document: `[cache]` (or `[beaker.cache]`) with the
/// global options, one sub-table per region. Left out when both prefixes
/// are used (TOML reads one table after the other, so "last one wins"
/// would pick differently).
fn same_as_toml(pairs: &[(&str, &str)], flat: &Config) {
    let beaker = pairs
        .iter()
        .filter(|(key, _)| key.starts_with("beaker."))
        .count();
    let table = match beaker {
        0 => "cache",
        n if n == pairs.len() => "beaker.cache",
        _ => return,
    };
    let mut global = std::collections::BTreeMap::new();
    let mut regions: std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, &str>> =
        Default::default();
    for (key, value) in pairs {
        // The pairs loaded, so every key is `<table>.<option>` or
        // `<table>.<region>.<option>`, and options have no dot.
        let rest = &key[table.len() + 1..];
        match rest.rsplit_once('.') {
            None => {
                global.insert(rest, *value);
            }
            Some((region, opt)) => {
                regions.entry(region).or_default().insert(opt, *value);
            }
        }
    }
    let quote = |value: &str| toml::Value::String(value.to_owned()).to_string();
    let mut text = format!("[{table}]\n");
    for (opt, value) in &global {
        text += &format!("{opt} = {}\n", quote(value));
    }
    for (region, options) in &regions {
        text += &format!("[{table}.\"{region}\"]\n");
        for (opt, value) in options {
            text += &format!("{opt} = {}\n", quote(value));
        }
    }
    match Config::from_toml_str(&text) {
        Ok(toml) => assert_eq!(&toml, flat, "TOML and flat disagree on {text}"),
        Err(err) => panic!("flat pairs load, the same TOML does not: {err}\n{text}"),
    }
}
