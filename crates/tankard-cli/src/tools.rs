//! The commands that work on a config and its stored entries: check,
//! stats, get, invalidate, clear and gc.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use tankard::config::{BackendKind, BackplaneSetting, EarlyRefresh, LockMode, RegionOptions};
use tankard::{CacheManager, Config, EntryState, Invalidation, Purged, Region};

use crate::EntryArgs;
use crate::failure::{Failure, Outcome};

/// Loads a config file and opens its regions (no server is contacted yet).
pub(crate) fn load(path: &Path) -> Outcome<CacheManager> {
    Ok(CacheManager::new(Config::from_file(path)?)?)
}

fn region<'a>(cache: &'a CacheManager, name: &str) -> Outcome<&'a Region> {
    Ok(cache.region(name)?)
}

/// Entries of a memory region live in the process that made them.
fn shared(region: &Region) -> Outcome<&Region> {
    if region.in_process() {
        return Err(Failure::User(format!(
            "region {} keeps its entries in memory, inside the process that uses it; \
             tankard can reach only shared backends (file, dbm, memcached, redis, redis-cluster, database)",
            region.name()
        )));
    }
    Ok(region)
}

fn duration(d: Duration) -> String {
    if d.is_zero() {
        // Debug prints a zero as `0ns`, an odd unit for "none".
        return "0s".to_owned();
    }
    format!("{d:?}")
}

fn options_table(o: &RegionOptions) -> Vec<(&'static str, String)> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    vec![
        ("type", o.backend.as_str().to_owned()),
        ("expire", o.expire.map_or("never".to_owned(), duration)),
        ("stale", duration(o.stale)),
        ("url", opt(o.url.clone())),
        (
            "table",
            o.table
                .clone()
                .unwrap_or_else(|| "tankard_cache".to_owned()),
        ),
        (
            "data_dir",
            opt(o.data_dir.as_ref().map(|p| p.display().to_string())),
        ),
        (
            "lock_dir",
            opt(o.lock_dir.as_ref().map(|p| p.display().to_string())),
        ),
        ("lock", format!("{:?}", o.lock).to_lowercase()),
        ("lock_timeout", duration(o.lock_timeout)),
        ("wait_timeout", duration(o.wait_timeout)),
        ("timeout", duration(o.timeout)),
        ("retry_after", duration(o.retry_after)),
        ("key_length", o.key_length.to_string()),
        ("max_entries", opt(o.max_entries.map(|n| n.to_string()))),
        ("max_bytes", opt(o.max_bytes.map(|n| n.to_string()))),
        ("max_entry_bytes", o.max_entry_bytes.to_string()),
        (
            "secret",
            if o.secret.is_some() { "set" } else { "-" }.to_owned(),
        ),
        (
            "on_backend_error",
            format!("{:?}", o.on_backend_error).to_lowercase(),
        ),
        ("refresh", format!("{:?}", o.refresh).to_lowercase()),
        (
            "early_refresh",
            match o.early_refresh {
                EarlyRefresh::Off => "off".to_owned(),
                EarlyRefresh::At(fraction) => fraction.to_string(),
                EarlyRefresh::XFetch => "xfetch".to_owned(),
                // `#[non_exhaustive]`: a later kind prints as its Debug.
                other => format!("{other:?}"),
            },
        ),
        ("early_refresh_beta", o.early_refresh_beta.to_string()),
        ("fail_safe", duration(o.fail_safe)),
        ("fail_safe_throttle", duration(o.fail_safe_throttle)),
        ("soft_timeout", opt(o.soft_timeout.map(duration))),
        ("hard_timeout", opt(o.hard_timeout.map(duration))),
        ("l1", o.l1.to_string()),
        ("l1_max_entries", o.l1_max_entries.to_string()),
        ("l1_max_bytes", opt(o.l1_max_bytes.map(|n| n.to_string()))),
        (
            "l1_expire",
            // Resolved when the region opens: whether `auto` finds a
            // backplane depends on the store.
            o.l1_expire.map_or_else(
                || "default (expire with a backplane, 5s without)".to_owned(),
                duration,
            ),
        ),
        (
            "backplane",
            match &o.backplane {
                BackplaneSetting::Auto => "auto".to_owned(),
                BackplaneSetting::None => "none".to_owned(),
                BackplaneSetting::Redis(url) => url.clone(),
                // `#[non_exhaustive]`: a later kind prints as its Debug.
                other => format!("{other:?}"),
            },
        ),
        ("prefix", format!("{:?}", o.prefix)),
        ("enabled", o.enabled.to_string()),
        ("starttime", opt(o.starttime.map(|n| n.to_string()))),
    ]
}

/// Whether a region's backend reads an option: `tankard check` shows only
/// those, so that a redis region lists no `data_dir` and a file region no
/// `url`. Options it does not know are shown.
fn applies(o: &RegionOptions, key: &str) -> bool {
    let kind = o.backend;
    let shared = !matches!(kind, BackendKind::Memory | BackendKind::Null);
    let server = matches!(
        kind,
        BackendKind::Memcached
            | BackendKind::Redis
            | BackendKind::RedisCluster
            | BackendKind::Database
    );
    match key {
        "type" | "enabled" => true,
        // Stores nothing: nothing else is read.
        _ if kind == BackendKind::Null => false,
        "data_dir" => matches!(kind, BackendKind::File | BackendKind::Dbm),
        "lock_dir" => {
            matches!(kind, BackendKind::File | BackendKind::Dbm) || o.lock == LockMode::File
        }
        "table" => kind == BackendKind::Database,
        // A remote operation's limit, the circuit breaker, a server-held lock.
        "url" | "timeout" | "retry_after" => server,
        // A database's locks live as long as their session instead.
        "lock_timeout" => server && kind != BackendKind::Database,
        // The memory backend's bounds (and those of a cached function's map
        // there); `max_bytes` is also a dbm region's map size.
        "max_entries" => kind == BackendKind::Memory,
        "max_bytes" => matches!(kind, BackendKind::Memory | BackendKind::Dbm),
        // What an encoded entry and its stored key are made of.
        "key_length" | "max_entry_bytes" | "secret" | "prefix" | "l1" => shared,
        "l1_max_entries" | "l1_max_bytes" | "l1_expire" | "backplane" => shared && o.l1,
        // Settings of a policy that is off.
        "early_refresh_beta" => o.early_refresh == EarlyRefresh::XFetch,
        "fail_safe_throttle" => !o.fail_safe.is_zero(),
        _ => true,
    }
}

/// `tankard check F`.
pub(crate) fn check(file: &Path) -> Outcome {
    let config = Config::from_file(file)?;
    // Opening the regions catches what parsing alone cannot (lock modes a
    // backend does not offer); it connects to nothing.
    CacheManager::new(config.clone())?;
    println!("{}: ok", file.display());
    // With regions listed, the global options are what each region starts
    // from, already shown in each; alone, they are the one region there is.
    let mut regions: Vec<&RegionOptions> = config.regions().collect();
    if regions.is_empty() {
        regions.push(config.default_options());
    }
    for options in regions {
        println!();
        println!("[{}]", options.name);
        for (key, value) in options_table(options) {
            if applies(options, key) {
                println!("  {key:<17} {value}");
            }
        }
    }
    Ok(())
}

/// One region's line of `tankard stats`: what the store itself can tell
/// (the figures a dashboard's `/stats` shows beside each process's
/// counters and latencies).
#[derive(Serialize)]
struct Usage {
    backend: &'static str,
    /// A memory region: its entries live in the memory of the process
    /// that uses it, out of this one's sight.
    in_process: bool,
    /// `None` for a memory region: nothing to reach outside this process.
    reachable: Option<bool>,
    entries: Option<u64>,
    bytes: Option<u64>,
    /// Temporary files left by writers that crashed mid-write (file
    /// backend), and their bytes.
    temp_files: Option<u64>,
    temp_bytes: Option<u64>,
    error: Option<String>,
}

async fn usage(region: &Region) -> Usage {
    let mut line = Usage {
        backend: region.backend_name(),
        in_process: region.in_process(),
        reachable: None,
        entries: None,
        bytes: None,
        temp_files: None,
        temp_bytes: None,
        error: None,
    };
    if line.in_process {
        // This process's own memory region is empty and says nothing of
        // the app's.
        return line;
    }
    // A read of a key nobody writes: the cheapest real round trip.
    let probe = region
        .namespace("tankard::probe")
        .inspect("reachable")
        .await;
    line.reachable = Some(probe.is_ok());
    if let Err(err) = probe {
        line.error = Some(err.to_string());
        return line;
    }
    match region.usage().await {
        Ok(usage) => {
            line.entries = usage.entries;
            line.bytes = usage.bytes;
            line.temp_files = usage.temp_files;
            line.temp_bytes = usage.temp_bytes;
        }
        Err(err) => line.error = Some(err.to_string()),
    }
    line
}

/// Where the figures `tankard stats` cannot know are read.
const HIT_RATIO_NOTE: &str = "Hits, misses, hit ratio and latency are counted inside each process that \
uses the cache: read them from its /stats or /metrics (tankard::web::dashboard; \
`tankard demo` serves them at /), or from its metrics recorder.";

/// The settings the dashboard shows for a region, on one line.
fn region_settings(o: &RegionOptions) -> String {
    options_table(o)
        .into_iter()
        .filter(|(key, _)| {
            [
                "expire",
                "stale",
                "lock",
                "l1",
                "refresh",
                "on_backend_error",
            ]
            .contains(key)
        })
        .map(|(key, value)| format!("{key} {value}"))
        .collect::<Vec<_>>()
        .join(" · ")
}

/// `tankard stats --config F [--json]`.
pub(crate) async fn stats(file: &Path, json: bool) -> Outcome {
    let cache = load(file)?;
    let mut regions: Vec<&Region> = cache.regions().collect();
    if regions.is_empty() {
        regions.push(cache.default_region());
    }
    let mut lines = BTreeMap::new();
    let mut settings = BTreeMap::new();
    for region in regions {
        lines.insert(region.name().to_owned(), usage(region).await);
        settings.insert(region.name().to_owned(), region_settings(region.options()));
    }
    if json {
        #[derive(Serialize)]
        struct Body<'a> {
            regions: &'a BTreeMap<String, Usage>,
        }
        let text = serde_json::to_string_pretty(&Body { regions: &lines })
            .map_err(|e| Failure::Environment(format!("cannot print JSON: {e}")))?;
        println!("{text}");
    } else {
        let opt = |v: Option<u64>| v.map_or("-".to_owned(), |n| n.to_string());
        println!(
            "{:<16} {:<14} {:<11} {:>9} {:>12}",
            "region", "backend", "reachable", "entries", "bytes"
        );
        for (name, line) in &lines {
            let reachable = match line.reachable {
                None => "-",
                Some(true) => "yes",
                Some(false) => "NO",
            };
            println!(
                "{name:<16} {:<14} {reachable:<11} {:>9} {:>12}",
                line.backend,
                opt(line.entries),
                opt(line.bytes)
            );
            if line.in_process {
                println!(
                    "  in memory, in another process: its entries live in the app that uses \
                     the region, out of tankard's sight"
                );
            }
            if let Some(files) = line.temp_files.filter(|n| *n > 0) {
                println!(
                    "  {files} temp files ({} bytes) left by crashed writers; \
                     `tankard gc` removes those 10 minutes old",
                    line.temp_bytes.unwrap_or_default()
                );
            }
            if let Some(error) = &line.error {
                println!("  {error}");
            }
            if let Some(settings) = settings.get(name) {
                println!("  {settings}");
            }
        }
        println!();
        println!("{HIT_RATIO_NOTE}");
    }
    let down: Vec<_> = lines
        .iter()
        .filter(|(_, line)| line.reachable == Some(false))
        .map(|(name, _)| name.as_str())
        .collect();
    if down.is_empty() {
        Ok(())
    } else {
        Err(Failure::Environment(format!(
            "unreachable: {}; is the server running? (the project's scripts/services starts the test servers)",
            down.join(", ")
        )))
    }
}

fn time(ms: u64) -> String {
    match chrono::DateTime::from_timestamp_millis(ms as i64) {
        Some(t) => format!(
            "{} ({ms})",
            t.with_timezone(&chrono::Local)
                .format("%Y-%m-%d %H:%M:%S%.3f %:z")
        ),
        None => ms.to_string(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Escapes control characters (other than newlines and tabs) so that a
/// stored value cannot drive the terminal.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\n' | '\t' => c.to_string(),
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

/// `tankard get --config F --region R --namespace N KEY`: exits 3 when
/// nothing is stored under the key.
pub(crate) async fn get(at: &EntryArgs, key: &str) -> Outcome {
    let cache = load(&at.config.path()?)?;
    let region = shared(region(&cache, &at.region)?)?;
    let info = region.namespace(&at.namespace).inspect(key).await?;
    println!("region:      {} ({})", region.name(), region.backend_name());
    println!("namespace:   {}", at.namespace);
    println!("key:         {key}");
    let Some(info) = info else {
        println!("state:       missing");
        return Err(Failure::NotFound(format!(
            "nothing stored under {key} in {}/{}",
            region.name(),
            at.namespace
        )));
    };
    let state = match info.state {
        EntryState::Fresh => "fresh",
        EntryState::Stale => "stale",
    };
    let never = || "never".to_owned();
    println!("state:       {state}");
    println!("stored as:   {}", info.storage_key);
    if !info.tags.is_empty() {
        println!("tags:        {}", info.tags.join(", "));
    }
    println!("created:     {}", time(info.created_ms));
    println!(
        "fresh until: {}",
        info.fresh_until_ms.map_or_else(never, time)
    );
    println!(
        "stale until: {}",
        info.stale_until_ms.map_or_else(never, time)
    );
    let payload = info.payload.as_deref().unwrap_or_default();
    println!(
        "size:        {} bytes stored, {} bytes of value",
        info.stored_bytes.unwrap_or_default(),
        payload.len()
    );
    match info.text() {
        Some(text) => println!("value (text): {}", printable(&text)),
        None => println!("value (hex, postcard): {}", hex(payload)),
    }
    Ok(())
}

/// What `tankard invalidate` acts on.
pub(crate) enum Target<'a> {
    /// One key of a namespace: removed.
    Entry((&'a str, &'a str)),
    /// Every entry that carries a tag.
    Tag(&'a str),
    /// The whole region.
    Region(Invalidation),
}

/// `tankard invalidate --config F --region R [--namespace N KEY | --tag T | --hard]`.
pub(crate) async fn invalidate(file: &Path, name: &str, target: Target<'_>) -> Outcome {
    let cache = load(file)?;
    let region = shared(region(&cache, name)?)?;
    match target {
        Target::Entry((namespace, key)) => {
            let removed = region.namespace(namespace).remove(key).await?;
            if removed {
                println!("removed {key} from {name}/{namespace}");
            } else {
                println!("nothing stored under {key} in {name}/{namespace}");
            }
        }
        Target::Tag(tag) => {
            region.invalidate_tag(tag).await?;
            println!("invalidated tag {tag} in region {name}");
        }
        Target::Region(how) => {
            let word = match how {
                Invalidation::Hard => "hard",
                Invalidation::Soft => "soft",
            };
            region.invalidate(how).await?;
            println!("{word}-invalidated region {name}");
        }
    }
    Ok(())
}

/// `tankard clear --config F --region R --namespace N`.
pub(crate) async fn clear(at: &EntryArgs) -> Outcome {
    let cache = load(&at.config.path()?)?;
    let region = shared(region(&cache, &at.region)?)?;
    region.namespace(&at.namespace).clear().await?;
    println!("cleared namespace {} of region {}", at.namespace, at.region);
    Ok(())
}

/// What `gc` removed, in words.
fn removed(purged: &Purged) -> String {
    let mut text = format!("{} expired entries", purged.entries);
    if purged.temp_files > 0 {
        text.push_str(&format!(
            " and {} temp files ({} bytes) left by crashed writers",
            purged.temp_files, purged.temp_bytes
        ));
    }
    text
}

/// `tankard gc --config F`.
pub(crate) async fn gc(file: &Path) -> Outcome {
    let cache = load(file)?;
    let mut regions: Vec<&Region> = cache.regions().collect();
    regions.push(cache.default_region());
    let bar = ProgressBar::new(regions.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut total = Purged::default();
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for region in regions {
        bar.set_message(format!("purging {}", region.name()));
        let line = if region.in_process() {
            "in memory: nothing on disk".to_owned()
        } else {
            let (bar, name) = (bar.clone(), region.name().to_owned());
            let progress = move |so_far: &Purged| {
                bar.set_message(format!(
                    "purging {name}: {} expired entries so far",
                    so_far.entries
                ));
            };
            match region.purge_expired_with(progress).await {
                Ok(purged) => {
                    total.entries += purged.entries;
                    total.temp_files += purged.temp_files;
                    total.temp_bytes += purged.temp_bytes;
                    format!("removed {}", removed(&purged))
                }
                Err(err) => {
                    failed.push(region.name().to_owned());
                    format!("failed: {err}")
                }
            }
        };
        lines.push(format!(
            "{} ({}): {line}",
            region.name(),
            region.backend_name()
        ));
        bar.inc(1);
    }
    bar.finish_and_clear();
    for line in lines {
        println!("{line}");
    }
    println!("{} removed", removed(&total));
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Failure::Environment(format!(
            "gc failed for {}",
            failed.join(", ")
        )))
    }
}
