//! Parsing: flat map, TOML and INI text into a validated [`Config`].
//!
//! All three front ends reduce their input to the same list of [`Entry`]s
//! (the key as the user wrote it, the key with its prefix removed, the raw
//! value), and [`build`] does everything else. That is what keeps the three
//! formats from drifting apart: a value is coerced and an error is worded in
//! exactly one place.
//!
//! Resolution happens in two steps on purpose. First every key is checked
//! and sorted into "global" or "region" maps (a later duplicate replaces an
//! earlier one); only then is each region built from all global options with
//! its own options on top. So the input order never decides whether a region
//! override wins, and the `regions` list may come after the region keys.

use std::collections::BTreeMap;
use std::num::IntErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{
    BackendKind, BackplaneSetting, Config, EarlyRefresh, LockMode, OnBackendError, Refresh,
    RegionOptions, Secret,
};
use crate::backend::{self, Reach, redis::options as redis};
use crate::error::{ConfigError, Error, Kind, Result};

/// Every option name accepted as `cache.<opt>` and `cache.<region>.<opt>`.
///
/// A region may not take one of these names: `cache.expire.type` would be
/// ambiguous.
pub(crate) const OPTION_NAMES: &[&str] = &[
    "type",
    "expire",
    "data_dir",
    "lock_dir",
    "url",
    "table",
    "regions",
    "enabled",
    "key_length",
    "starttime",
    "stale",
    "lock",
    "lock_timeout",
    "wait_timeout",
    "timeout",
    "retry_after",
    "max_entry_bytes",
    "max_entries",
    "max_bytes",
    "secret",
    "on_backend_error",
    "refresh",
    "early_refresh",
    "early_refresh_beta",
    "fail_safe",
    "fail_safe_throttle",
    "soft_timeout",
    "hard_timeout",
    "l1",
    "l1_max_entries",
    "l1_max_bytes",
    "l1_expire",
    "backplane",
    "prefix",
];

/// What a config file without options gets, for the warning that says so.
const DEFAULTS: &str = "in-process memory, no regions";

/// The two prefixes Beaker accepts; the longer one is tried first because
/// `beaker.cache.` does not start with `cache.`.
const PREFIXES: [&str; 2] = ["beaker.cache.", "cache."];

/// The bound given to a memory backend configured without one: Beaker's
/// memory backend grows without limit, Tankard's never does.
const DEFAULT_MAX_ENTRIES: u64 = 10_000;

/// The largest entry read or written unless `max_entry_bytes` says
/// otherwise: far above any page or query result worth caching, far below
/// what a foreign value at an entry's key could cost a process to read.
const DEFAULT_MAX_ENTRY_BYTES: u64 = 16 * 1024 * 1024;

// ---------------------------------------------------------------------------
// Bounds
//
// Every number a config holds has a largest value, checked here, so that a
// config `tankard check` accepts can never overflow later: a duration added
// to an `Instant`, milliseconds added to the clock, a length in an entry
// header. Each bound is far past any sensible setting, so that a value above
// it is a typo (a unit forgotten, milliseconds written for seconds).

/// `timeout` and `retry_after`, the limit on one backend operation and the
/// pause after a connection failure: a server that takes longer than an
/// hour is down, not slow.
const MAX_OPERATION: DurationBound = DurationBound {
    max: Duration::from_secs(3600),
    shown: "1h",
};

/// `lock_timeout` and `wait_timeout`, how long one creator may hold its
/// lock and a caller wait for it: a creator still running after a day has
/// crashed or hung. A day also stays inside memcached's relative lifetimes
/// (30 days, after which it reads the number as a date).
const MAX_CREATION: DurationBound = DurationBound {
    max: Duration::from_secs(24 * 3600),
    shown: "24h",
};

/// `expire`, `stale` and `l1_expire`: a hundred years is "forever" for a
/// cache, and keeps the clock's milliseconds plus both (the entry's
/// timestamps, Redis's signed 64-bit `PX`) nowhere near an overflow. No
/// `expire` at all is the way to say "never".
const MAX_LIFETIME: DurationBound = DurationBound {
    max: Duration::from_secs(100 * 365 * 24 * 3600),
    shown: "876000h (100 years)",
};

/// `starttime`, in seconds since the epoch: 2100-01-01. The mistake this
/// catches is a time in milliseconds (13 digits), which would make every
/// entry stale for the next fifty thousand years.
const MAX_STARTTIME: u64 = 4_102_444_800;

/// `key_length`: the entry header stores the key's length in 16 bits, so a
/// longer cap would let through keys whose entries can never match.
const MAX_KEY_LENGTH: u64 = u16::MAX as u64;

/// `max_entry_bytes`: the entry header stores the value's length in 32 bits,
/// and no server stores more than 1 GiB in one item (memcached's largest;
/// Redis's is 512 MiB).
const MAX_ENTRY_BYTES: u64 = 1 << 30;

/// `max_entries` of a memory region and `l1_max_entries` of an L1 tier
/// (the same store): a billion entries cost nearly a hundred GB in
/// bookkeeping alone, past any process this crate targets.
const MAX_ENTRIES: u64 = 1_000_000_000;

/// `max_bytes` of a memory region and `l1_max_bytes` of an L1 tier: 1 TiB,
/// past any process this crate targets, and far from u64 overflow in the
/// store's weight sums.
const MAX_BYTES: u64 = 1 << 40;

/// The largest value of a duration key and how an error writes it.
#[derive(Clone, Copy, Debug)]
struct DurationBound {
    max: Duration,
    /// In the syntax the key takes, so the user can paste it.
    shown: &'static str,
}

/// A value before coercion. Only TOML can produce the non-text variants.
#[derive(Debug)]
enum Raw {
    Text(String),
    /// A TOML array; accepted only for `regions`.
    List(Vec<String>),
    /// A TOML value no option accepts (a table, a nested array): what it is
    /// and how it reads, for the error message.
    Invalid(&'static str, String),
}

#[derive(Debug)]
struct Entry {
    /// The key as the user wrote it (INI, flat) or its dotted path (TOML);
    /// every error names this, so the user can find the line.
    key: String,
    /// The key without `cache.`/`beaker.cache.`.
    rest: String,
    value: Raw,
}

pub(super) fn from_flat<I, K, V>(pairs: I) -> Result<Config>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let mut entries = Vec::new();
    for (key, value) in pairs {
        let key = key.as_ref();
        let Some(rest) = strip_prefix(key) else {
            let example = if OPTION_NAMES.contains(&key) {
                format!("cache.{key}")
            } else {
                "cache.expire".to_owned()
            };
            return Err(ConfigError::UnknownKey {
                key: key.to_owned(),
                hint: format!("; keys start with `cache.` (or `beaker.cache.`), e.g. `{example}`"),
            }
            .into());
        };
        entries.push(Entry {
            key: key.to_owned(),
            rest: rest.to_owned(),
            value: Raw::Text(value.as_ref().to_owned()),
        });
    }
    build(entries)
}

pub(super) fn from_toml_str(text: &str) -> Result<Config> {
    parse_toml(text, "<toml>")
}

pub(super) fn from_toml_file(path: &Path) -> Result<Config> {
    let text = read(path)?;
    parse_toml(&text, &path.display().to_string())
}

pub(super) fn from_ini_str(text: &str) -> Result<Config> {
    parse_ini(text, "<ini>")
}

pub(super) fn from_file(path: &Path) -> Result<Config> {
    let is_toml = path
        .extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("toml"));
    let text = read(path)?;
    let name = path.display().to_string();
    if is_toml {
        parse_toml(&text, &name)
    } else {
        parse_ini(&text, &name)
    }
}

fn strip_prefix(key: &str) -> Option<&str> {
    PREFIXES.iter().find_map(|prefix| key.strip_prefix(prefix))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|err| {
        let kind = Kind::Config(ConfigError::File {
            path: path.display().to_string(),
            message: format!("cannot read the config file: {err}"),
        });
        Error::with_source(
            kind,
            Arc::new(err) as Arc<dyn std::error::Error + Send + Sync>,
        )
    })
}

fn file_error(path: &str, message: impl Into<String>) -> Error {
    ConfigError::File {
        path: path.to_owned(),
        message: message.into(),
    }
    .into()
}

// ---------------------------------------------------------------------------
// INI

/// Reads `key = value` lines the way Beaker sees a Paste deploy file. Keys
/// without the cache prefix are the rest of the app's settings and are
/// skipped, but a line that is not `key = value` at all is an error: it is
/// more likely a typo than something another reader understands.
fn parse_ini(text: &str, path: &str) -> Result<Config> {
    let mut entries = Vec::new();
    // Where each option was set, to warn when a later line replaces it.
    let mut lines: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty()
            || line.starts_with('#')
            || line.starts_with(';')
            || line.starts_with('[')
        {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(file_error(
                path,
                format!(
                    "line {}: {line:?} is not `key = value`; expected a comment (# or ;), a [section] header or `key = value`",
                    index + 1
                ),
            ));
        };
        let key = key.trim();
        if let Some(rest) = strip_prefix(key) {
            if let Some((earlier, earlier_key)) =
                lines.insert(rest.to_owned(), (index + 1, key.to_owned()))
            {
                // No values in the message: one of them may be the secret.
                tracing::warn!(
                    "{path}: line {}: {key} sets the same option as line {earlier} ({earlier_key}); the value on line {} wins",
                    index + 1,
                    index + 1
                );
            }
            entries.push(Entry {
                key: key.to_owned(),
                rest: rest.to_owned(),
                value: Raw::Text(value.trim().to_owned()),
            });
        }
    }
    if entries.is_empty() {
        let what = if text.trim().is_empty() {
            "the file is empty"
        } else {
            "no cache.* or beaker.cache.* key"
        };
        tracing::warn!("{path}: {what}, so the cache is the default one: {DEFAULTS}");
    }
    build(entries)
}

// ---------------------------------------------------------------------------
// TOML

fn parse_toml(text: &str, path: &str) -> Result<Config> {
    let doc: toml::Table = text.parse().map_err(|err| toml_error(text, path, &err))?;
    let entries = toml_entries(&doc, path)?;
    if entries.is_empty() {
        let table = if doc.contains_key("cache") {
            "[cache]"
        } else {
            "[beaker.cache]"
        };
        tracing::warn!("{path}: {table} has no keys, so the cache is the default one: {DEFAULTS}");
    }
    build(entries)
}

/// The options of the `[cache]` and `[beaker.cache]` tables.
fn toml_entries(doc: &toml::Table, path: &str) -> Result<Vec<Entry>> {
    let mut tables = Vec::new();
    if let Some(value) = doc.get("cache") {
        tables.push(("cache.", value));
    }
    if let Some(value) = doc.get("beaker").and_then(|beaker| beaker.get("cache")) {
        tables.push(("beaker.cache.", value));
    }
    if tables.is_empty() {
        return Err(file_error(
            path,
            "no [cache] table; put the options under [cache] (or [beaker.cache]) and each region's under [cache.<region>]",
        ));
    }

    let mut entries = Vec::new();
    for (prefix, value) in tables {
        let Some(table) = value.as_table() else {
            return Err(file_error(
                path,
                format!(
                    "{prefix}: is {}, not a table; expected a [{}] table",
                    describe(value),
                    prefix.trim_end_matches('.')
                ),
            ));
        };
        for (name, value) in table {
            match value {
                toml::Value::Table(region) if !OPTION_NAMES.contains(&name.as_str()) => {
                    for (opt, value) in region {
                        let rest = format!("{name}.{opt}");
                        entries.push(Entry {
                            key: format!("{prefix}{rest}"),
                            rest,
                            value: toml_raw(value),
                        });
                    }
                }
                _ => entries.push(Entry {
                    key: format!("{prefix}{name}"),
                    rest: name.clone(),
                    value: toml_raw(value),
                }),
            }
        }
    }
    Ok(entries)
}

/// A TOML syntax error, with its line and column; but when toml refuses a
/// value it cannot hold (an integer past 64 bits, a float past f64), the
/// error of the key it belongs to, as a flat map would give it: the value,
/// quoted, goes through the usual checks, so the error names the key and
/// the largest allowed. A refused value outside Tankard's tables (or any
/// other syntax error) stays toml's own error.
fn toml_error(text: &str, path: &str, err: &toml::de::Error) -> Error {
    let location = match err.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: ")
        }
        None => String::new(),
    };
    let syntax = file_error(path, format!("{location}{}", err.message().trim_end()));
    // Each round quotes one more value, so a file with several refused
    // numbers is still named by key; the cap only bounds the work.
    let mut text = quote_number(text, err);
    for _ in 0..64 {
        let Some(quoted) = text else { break };
        match quoted.parse::<toml::Table>() {
            Ok(doc) => {
                return match toml_entries(&doc, path).and_then(build) {
                    Err(named) => named,
                    Ok(_) => syntax,
                };
            }
            Err(next) => text = quote_number(&quoted, &next),
        }
    }
    syntax
}

/// `text` with the value an error points at turned into a string, when that
/// value is a number after `key =`: digits, signs, `.`, `_`, letters (`e`,
/// `0x`, `inf`) and nothing toml would read differently inside quotes.
/// Underscores go, as toml would drop them from the number.
fn quote_number(text: &str, err: &toml::de::Error) -> Option<String> {
    let span = err.span()?;
    let literal = text.get(span.clone())?;
    let number = literal.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-')
        && literal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | ':'));
    let after_equals = text[..span.start]
        .trim_end_matches([' ', '\t'])
        .ends_with('=');
    (number && after_equals).then(|| {
        format!(
            "{}\"{}\"{}",
            &text[..span.start],
            literal.replace('_', ""),
            &text[span.end..]
        )
    })
}

fn toml_raw(value: &toml::Value) -> Raw {
    match value {
        toml::Value::Array(items) => {
            let mut list = Vec::with_capacity(items.len());
            for item in items {
                match toml_scalar(item) {
                    Some(text) => list.push(text),
                    None => return Raw::Invalid("a nested array or table", value.to_string()),
                }
            }
            Raw::List(list)
        }
        toml::Value::Table(_) => Raw::Invalid("a table", value.to_string()),
        scalar => match toml_scalar(scalar) {
            Some(text) => Raw::Text(text),
            None => Raw::Invalid(describe(scalar), scalar.to_string()),
        },
    }
}

/// Scalars become the text a flat map would hold, so that `expire = 60` and
/// `expire = "60"` are the same thing and go through the same checks.
fn toml_scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

fn describe(value: &toml::Value) -> &'static str {
    match value {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a date-time",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

// ---------------------------------------------------------------------------
// Sorting keys into global and region options

/// Options with their entries, keyed by option name; a later entry for the
/// same option replaces the earlier one ("last one wins").
type Options = BTreeMap<&'static str, Entry>;

fn option_name(name: &str) -> Option<&'static str> {
    OPTION_NAMES.iter().copied().find(|opt| *opt == name)
}

fn build(entries: Vec<Entry>) -> Result<Config> {
    // The prefix used for keys Tankard has to name itself (a missing
    // `data_dir`, say): whichever spelling the user chose.
    let prefix = entries.first().map_or("cache.", |e| {
        if e.key.starts_with("beaker.") {
            "beaker.cache."
        } else {
            "cache."
        }
    });

    // `regions` first: whether `cache.X.Y` is valid depends on it, wherever it is.
    let listed = match entries.iter().rev().find(|e| e.rest == "regions") {
        Some(entry) => parse_regions(entry)?,
        None => Vec::new(),
    };

    let mut global = Options::new();
    let mut regions: BTreeMap<String, Options> = BTreeMap::new();
    for entry in entries {
        if let Some(opt) = option_name(&entry.rest) {
            global.insert(opt, entry);
            continue;
        }
        let Some((region, opt)) = entry.rest.rsplit_once('.') else {
            let hint = if listed.contains(&entry.rest) {
                format!(
                    "; `{}` is a region: set its options as `{}.<option>`",
                    entry.rest, entry.key
                )
            } else {
                suggestion(&entry.rest)
            };
            return Err(ConfigError::UnknownKey {
                key: entry.key,
                hint,
            }
            .into());
        };
        if option_name(region).is_some() {
            return Err(ConfigError::UnknownKey {
                hint: format!("; `{region}` is an option and has no sub-keys"),
                key: entry.key,
            }
            .into());
        }
        if !listed.iter().any(|r| r == region) {
            return Err(ConfigError::UnlistedRegion {
                region: region.to_owned(),
                listed: if listed.is_empty() {
                    "none listed".to_owned()
                } else {
                    listed.join(", ")
                },
                key: entry.key,
            }
            .into());
        }
        let Some(opt) = option_name(opt) else {
            let hint = suggestion(opt);
            return Err(ConfigError::UnknownKey {
                key: entry.key,
                hint,
            }
            .into());
        };
        if opt == "regions" {
            return Err(ConfigError::UnknownKey {
                hint: format!("; `regions` is global only: set `{prefix}regions`"),
                key: entry.key,
            }
            .into());
        }
        let region = region.to_owned();
        regions.entry(region).or_default().insert(opt, entry);
    }

    let (default, mut missing_feature) = resolve("default", &global, None, prefix)?;
    let mut resolved = BTreeMap::new();
    let nothing = Options::new();
    for name in &listed {
        let own = Some(regions.get(name.as_str()).unwrap_or(&nothing));
        let (options, missing) = resolve(name, &global, own, prefix)?;
        missing_feature = missing_feature.or(missing);
        resolved.insert(name.clone(), options);
    }
    if let Some(err) = missing_feature {
        return Err(err.into());
    }
    Ok(Config {
        default,
        regions: resolved,
    })
}

fn parse_regions(entry: &Entry) -> Result<Vec<String>> {
    let items: Vec<String> = match &entry.value {
        Raw::Text(text) => text.split(',').map(|s| s.trim().to_owned()).collect(),
        Raw::List(list) => list.iter().map(|s| s.trim().to_owned()).collect(),
        Raw::Invalid(what, shown) => {
            return Err(bad(
                &entry.key,
                shown,
                &format!("is {what}"),
                "comma-separated region names, or an array of names",
            ));
        }
    };
    let mut names: Vec<String> = Vec::new();
    for name in items.into_iter().filter(|s| !s.is_empty()) {
        let valid = name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if !valid {
            return Err(bad(
                &entry.key,
                &name,
                "is not a valid region name",
                "letters, digits, `_`, `.` and `-` only, names separated by commas",
            ));
        }
        if option_name(&name).is_some() {
            return Err(bad(
                &entry.key,
                &name,
                "is an option name, so it cannot name a region",
                "a region name that is not one of the option names (rename the region)",
            ));
        }
        if !names.contains(&name) {
            names.push(name);
        }
    }
    Ok(names)
}

/// "; did you mean `expire`?" when a known option is within two edits, or
/// the list of options otherwise, so the message always names the fix.
fn suggestion(name: &str) -> String {
    let best = OPTION_NAMES
        .iter()
        .map(|opt| (levenshtein(name, opt), *opt))
        .min_by_key(|(distance, _)| *distance);
    match best {
        Some((distance, opt)) if distance <= 2 && distance < opt.len() => {
            format!("; did you mean `{opt}`?")
        }
        _ => format!("; expected one of {}", OPTION_NAMES.join(", ")),
    }
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if ca == *cb {
                diagonal
            } else {
                1 + diagonal.min(above).min(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

// ---------------------------------------------------------------------------
// Building one region

/// Where the options that decide validation came from, so that an error
/// points at the key the user has to change (the region's own, or the
/// global one it inherited).
struct Origin<'a> {
    type_key: Option<&'a str>,
    type_value: Option<&'a str>,
    url_key: Option<&'a str>,
    backplane_key: Option<&'a str>,
}

/// Builds one region from the global options and, for a listed region, its
/// own (`own` is `None` only for the default options).
fn resolve(
    name: &str,
    global: &Options,
    own: Option<&Options>,
    prefix: &str,
) -> Result<(RegionOptions, Option<ConfigError>)> {
    let mut options = RegionOptions::defaults(name);
    let mut origin = Origin {
        type_key: None,
        type_value: None,
        url_key: None,
        backplane_key: None,
    };
    let layers = std::iter::once(global).chain(own);
    for layer in layers {
        for (opt, entry) in layer {
            if *opt == "regions" {
                continue;
            }
            apply(&mut options, opt, entry)?;
            if let Raw::Text(value) = &entry.value {
                match *opt {
                    "type" => {
                        origin.type_key = Some(&entry.key);
                        origin.type_value = Some(value);
                    }
                    "url" => origin.url_key = Some(&entry.key),
                    "backplane" => origin.backplane_key = Some(&entry.key),
                    _ => {}
                }
            }
        }
    }
    // The region's own key, for options nobody set.
    let own_key = |opt: &str| {
        if own.is_none() {
            format!("{prefix}{opt}")
        } else {
            format!("{prefix}{name}.{opt}")
        }
    };
    let missing_feature = validate(&mut options, &origin, &own_key)?;
    Ok((options, missing_feature))
}

/// Why a number or duration was refused.
#[derive(Debug)]
enum Refused {
    /// Well written, but past the key's largest (however many digits).
    TooLarge,
    /// Not a number (or duration) at all.
    Malformed,
}

/// A whole number from 0 to `max`.
fn parse_whole(value: &str, max: u64) -> std::result::Result<u64, Refused> {
    match value.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        Ok(_) => Err(Refused::TooLarge),
        Err(e) if *e.kind() == IntErrorKind::PosOverflow => Err(Refused::TooLarge),
        Err(_) => Err(Refused::Malformed),
    }
}

/// The error for a number past its key's largest; `note` follows the
/// largest, to say what it is.
fn too_large(key: &str, raw: &str, max: u64, note: &str) -> Error {
    bad(key, raw, "is too large", &format!("at most {max}{note}"))
}

/// A whole number from 0 to `max` (`key_length`, `starttime`).
fn whole(key: &str, raw: &str, value: &str, problem: &str, max: u64, note: &str) -> Result<u64> {
    parse_whole(value, max).map_err(|why| match why {
        Refused::TooLarge => too_large(key, raw, max, note),
        Refused::Malformed => bad(key, raw, problem, "a whole non-negative number"),
    })
}

/// A duration key: `expire` and `stale` (`zero_ok`: 0 means at once)
/// and the timeouts (which must be positive), all with the same syntax.
fn duration(
    key: &str,
    raw: &str,
    value: &str,
    bound: DurationBound,
    zero_ok: bool,
) -> Result<Duration> {
    let expected = if zero_ok {
        "a number of seconds (\"30\", \"2.5\") or a number with a unit (\"250ms\", \"20m\", \"1h\")"
    } else {
        "a positive number of seconds (\"0.5\", \"30\") or a number with a unit (\"250ms\", \"2s\", \"20m\", \"1h\")"
    };
    match parse_duration(value, bound.max) {
        Ok(d) if d.is_zero() && !zero_ok => {
            Err(bad(key, raw, "is not a positive duration", expected))
        }
        Ok(d) => Ok(d),
        Err(Refused::TooLarge) => Err(bad(
            key,
            raw,
            "is too long",
            &format!("at most {}", bound.shown),
        )),
        Err(Refused::Malformed) => Err(bad(key, raw, "is not a duration", expected)),
    }
}

fn bad(key: &str, value: &str, problem: &str, expected: &str) -> Error {
    ConfigError::BadValue {
        key: key.to_owned(),
        value: value.to_owned(),
        problem: problem.to_owned(),
        expected: expected.to_owned(),
    }
    .into()
}

const BOOLEANS: &str = "true, yes, on, y, t, 1 or false, no, off, n, f, 0";

fn apply(options: &mut RegionOptions, opt: &str, entry: &Entry) -> Result<()> {
    let key = entry.key.as_str();
    let raw = match &entry.value {
        Raw::Text(text) => text.as_str(),
        Raw::List(list) => {
            return Err(bad(
                key,
                &list.join(", "),
                "is an array",
                "a single value; only `regions` takes an array",
            ));
        }
        Raw::Invalid(what, shown) => {
            return Err(bad(key, shown, &format!("is {what}"), "a single value"));
        }
    };
    let value = raw.trim();
    match opt {
        "type" => {
            // v1 configs name it; say what replaced it rather than list the types.
            if value.eq_ignore_ascii_case("tiered") {
                return Err(bad(
                    key,
                    raw,
                    "is no longer a backend type: an L1 tier now goes in front of any shared store",
                    "a shared type with l1 = true instead (e.g. type = ext:redis and l1 = true)",
                ));
            }
            options.backend = parse_backend(value).ok_or_else(|| {
                bad(
                    key,
                    raw,
                    "is not a backend type",
                    "one of memory, file, dbm, ext:memcached, ext:redis, ext:rediscluster, ext:database, null",
                )
            })?;
        }
        "expire" => options.expire = Some(duration(key, raw, value, MAX_LIFETIME, true)?),
        "stale" => options.stale = duration(key, raw, value, MAX_LIFETIME, true)?,
        "data_dir" | "lock_dir" => {
            if value.is_empty() {
                return Err(bad(key, raw, "is empty", "a directory path"));
            }
            let dir = Some(PathBuf::from(value));
            if opt == "data_dir" {
                options.data_dir = dir;
            } else {
                options.lock_dir = dir;
            }
        }
        // Checked in `validate`, against the backend that actually uses it.
        "url" => options.url = Some(value.to_owned()),
        // Checked by the database store, which uses it.
        "table" => options.table = Some(value.to_owned()),
        "enabled" | "l1" => {
            let on =
                parse_bool(value).ok_or_else(|| bad(key, raw, "is not a boolean", BOOLEANS))?;
            if opt == "enabled" {
                options.enabled = on;
            } else {
                options.l1 = on;
            }
        }
        "key_length" => {
            let length = whole(key, raw, value, "is not a whole number", MAX_KEY_LENGTH, "")?;
            // At most u16::MAX, so it fits any usize.
            options.key_length = usize::try_from(length).unwrap_or(usize::MAX);
        }
        "starttime" => {
            options.starttime = Some(whole(
                key,
                raw,
                value,
                "is not a number of seconds since the epoch",
                MAX_STARTTIME,
                " (2100-01-01, in seconds since the epoch)",
            )?);
        }
        "timeout" => options.timeout = duration(key, raw, value, MAX_OPERATION, false)?,
        "fail_safe" => options.fail_safe = duration(key, raw, value, MAX_LIFETIME, true)?,
        "early_refresh_beta" => {
            options.early_refresh_beta = parse_beta(value).ok_or_else(|| {
                bad(
                    key,
                    raw,
                    "is not a positive factor",
                    "a number above 0 and at most 1000 (1.0 is XFetch's default; above 1 renews earlier)",
                )
            })?;
        }
        "early_refresh" => {
            options.early_refresh = match value.to_ascii_lowercase().as_str() {
                "off" => EarlyRefresh::Off,
                "xfetch" => EarlyRefresh::XFetch,
                _ => match parse_fraction(value) {
                    Some(fraction) => EarlyRefresh::At(fraction),
                    None => {
                        return Err(bad(
                            key,
                            raw,
                            "is not a fraction of the expiry",
                            "off, xfetch, or a fraction above 0 and below 1 (0.8: refresh past 80 % of expire)",
                        ));
                    }
                },
            };
        }
        "soft_timeout" => {
            options.soft_timeout = Some(duration(key, raw, value, MAX_CREATION, false)?);
        }
        "hard_timeout" => {
            options.hard_timeout = Some(duration(key, raw, value, MAX_CREATION, false)?);
        }
        "fail_safe_throttle" => {
            options.fail_safe_throttle = duration(key, raw, value, MAX_CREATION, false)?;
        }
        // 0 turns the circuit breaker off: every operation tries the server.
        "retry_after" => options.retry_after = duration(key, raw, value, MAX_OPERATION, true)?,
        "lock_timeout" => options.lock_timeout = duration(key, raw, value, MAX_CREATION, false)?,
        "wait_timeout" => options.wait_timeout = duration(key, raw, value, MAX_CREATION, false)?,
        "max_entries" | "max_bytes" | "max_entry_bytes" | "l1_max_entries" | "l1_max_bytes" => {
            let max = match opt {
                "max_entries" | "l1_max_entries" => MAX_ENTRIES,
                "max_bytes" | "l1_max_bytes" => MAX_BYTES,
                _ => MAX_ENTRY_BYTES,
            };
            // Zero would make a cache that stores nothing; `type = null` and
            // `l1 = false` say that on purpose.
            let bound = match parse_whole(value, max) {
                Ok(n) if n > 0 => n,
                Err(Refused::TooLarge) => return Err(too_large(key, raw, max, "")),
                _ => {
                    let expected = if opt.starts_with("l1_") {
                        "a whole number above 0 (use l1 = false for no L1 tier)"
                    } else {
                        "a whole number above 0 (use type = null to store nothing)"
                    };
                    return Err(bad(key, raw, "is not a bound", expected));
                }
            };
            match opt {
                "max_entries" => options.max_entries = Some(bound),
                "max_bytes" => options.max_bytes = Some(bound),
                "l1_max_entries" => options.l1_max_entries = bound,
                "l1_max_bytes" => options.l1_max_bytes = Some(bound),
                _ => options.max_entry_bytes = bound,
            }
        }
        // Zero is refused: an L1 copy that is never fresh is `l1 = false`
        // with extra work, so a zero is more likely a slip than a wish.
        "l1_expire" => options.l1_expire = Some(duration(key, raw, value, MAX_LIFETIME, false)?),
        "backplane" => {
            options.backplane = match value.to_ascii_lowercase().as_str() {
                "auto" => BackplaneSetting::Auto,
                "none" => BackplaneSetting::None,
                _ if redis::is_url(value, false) => BackplaneSetting::Redis(value.to_owned()),
                lower => {
                    let problem = if lower.starts_with("redis") {
                        "is not a redis URL"
                    } else {
                        "is not a backplane"
                    };
                    return Err(bad(
                        key,
                        &redis::redact(raw),
                        problem,
                        "auto, none or a redis:// URL (redis://[user:password@]host[:port][/db], or rediss://…)",
                    ));
                }
            };
        }
        "secret" => {
            if value.is_empty() {
                return Err(bad(key, raw, "is empty", "a non-empty secret string"));
            }
            // Kept as written: whitespace may be part of a secret.
            options.secret = Some(Secret::new(raw));
        }
        "lock" => {
            options.lock = match value.to_ascii_lowercase().as_str() {
                "auto" => LockMode::Auto,
                "local" => LockMode::Local,
                "file" => LockMode::File,
                "distributed" => LockMode::Distributed,
                "none" => LockMode::None,
                _ => {
                    return Err(bad(
                        key,
                        raw,
                        "is not a lock mode",
                        "one of auto, local, file, distributed, none",
                    ));
                }
            };
        }
        "on_backend_error" => {
            options.on_backend_error = match value.to_ascii_lowercase().as_str() {
                "bypass" => OnBackendError::Bypass,
                "error" => OnBackendError::Error,
                _ => return Err(bad(key, raw, "is not a policy", "bypass or error")),
            };
        }
        "refresh" => {
            options.refresh = match value.to_ascii_lowercase().as_str() {
                "foreground" => Refresh::Foreground,
                "background" => Refresh::Background,
                _ => {
                    return Err(bad(
                        key,
                        raw,
                        "is not a refresh mode",
                        "foreground or background",
                    ));
                }
            };
        }
        "prefix" => {
            // Not trimmed: the check below tells the user about stray spaces
            // instead of silently changing every key.
            if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(bad(
                    key,
                    raw,
                    "contains whitespace or control characters",
                    "a key prefix without spaces, e.g. \"myapp:\"",
                ));
            }
            options.prefix = raw.to_owned();
        }
        // `option_name` only lets the names above through.
        _ => {}
    }
    Ok(())
}

fn parse_backend(value: &str) -> Option<BackendKind> {
    Some(match value.to_ascii_lowercase().as_str() {
        "memory" => BackendKind::Memory,
        "file" => BackendKind::File,
        "dbm" => BackendKind::Dbm,
        "ext:memcached" | "memcached" => BackendKind::Memcached,
        "ext:redis" | "redis" => BackendKind::Redis,
        "ext:rediscluster" | "redis-cluster" | "rediscluster" => BackendKind::RedisCluster,
        "ext:database" | "database" => BackendKind::Database,
        "null" => BackendKind::Null,
        _ => return None,
    })
}

/// A decimal above 0 and below 1, in digits and one dot (`0.8`, `.75`):
/// no sign, exponent, `inf` or `NaN` slips through.
fn parse_fraction(value: &str) -> Option<f64> {
    let (whole, fraction) = value.split_once('.')?;
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(whole) && digits(fraction)) || fraction.is_empty() {
        return None;
    }
    value.parse::<f64>().ok().filter(|f| *f > 0.0 && *f < 1.0)
}

/// XFetch's β: a decimal above 0 and at most 1000, in digits and at most
/// one dot. The bound keeps δ·β·chance far from overflowing a
/// millisecond count; a larger β renews everything almost at once.
fn parse_beta(value: &str) -> Option<f64> {
    let (whole, fraction) = value.split_once('.').unwrap_or((value, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || !(digits(whole) && digits(fraction)) {
        return None;
    }
    value
        .parse::<f64>()
        .ok()
        .filter(|beta| *beta > 0.0 && *beta <= 1000.0)
}

/// Beaker's `asbool` spellings, case-insensitive.
fn parse_bool(value: &str) -> Option<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "yes" | "on" | "y" | "t" | "1" => Some(true),
        "false" | "no" | "off" | "n" | "f" | "0" => Some(false),
        _ => None,
    }
}

/// Seconds as a decimal (`30`, `2.5`), or a decimal with a unit: `ms`, `s`,
/// `m` or `h`, from 0 to `max`. Only digits and one
/// dot are accepted, so `inf`, `1e9` and `-1` never slip through, and the
/// decimal is read exactly, in integers (`0.1` is 100 ms, not a float's
/// nearest): digits past the nanosecond are dropped.
fn parse_duration(value: &str, max: Duration) -> std::result::Result<Duration, Refused> {
    const NANOS: u128 = 1_000_000_000;
    let (number, unit_nanos) = if let Some(n) = value.strip_suffix("ms") {
        (n, NANOS / 1000)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, NANOS)
    } else if let Some(n) = value.strip_suffix('m') {
        (n, 60 * NANOS)
    } else if let Some(n) = value.strip_suffix('h') {
        (n, 3600 * NANOS)
    } else {
        (value, NANOS)
    };
    let number = number.trim();
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.len() + fraction.len() == 0 || !digits(whole) || !digits(fraction) {
        return Err(Refused::Malformed);
    }
    // The number in billionths of the unit: the whole part, then the first
    // nine digits of the fraction, padded.
    let mut billionths: u128 = 0;
    for digit in whole
        .bytes()
        .chain(fraction.bytes().chain(std::iter::repeat(b'0')).take(9))
    {
        billionths = match billionths
            .checked_mul(10)
            .and_then(|n| n.checked_add(u128::from(digit - b'0')))
        {
            Some(n) => n,
            None => return Err(Refused::TooLarge),
        };
    }
    let nanos = match billionths.checked_mul(unit_nanos) {
        Some(n) => n / NANOS,
        None => return Err(Refused::TooLarge),
    };
    if nanos > max.as_nanos() {
        return Err(Refused::TooLarge);
    }
    // Under `max`, so the seconds fit a u64.
    let secs = u64::try_from(nanos / NANOS).unwrap_or(u64::MAX);
    Ok(Duration::new(secs, (nanos % NANOS) as u32))
}

// ---------------------------------------------------------------------------
// Checks that need the whole region

/// Checks what needs the whole region (url against the backend, required
/// directories) and fills in derived defaults. A missing cargo feature is
/// returned rather than raised, so that the caller can report every syntax
/// error of every region first: a typo is reported the same way whichever
/// features are compiled in.
fn validate(
    options: &mut RegionOptions,
    origin: &Origin<'_>,
    own_key: &dyn Fn(&str) -> String,
) -> Result<Option<ConfigError>> {
    if options.lock_dir.is_none() {
        options.lock_dir = options.data_dir.as_ref().map(|dir| dir.join(".locks"));
    }
    if options.backend == BackendKind::Memory
        && options.max_entries.is_none()
        && options.max_bytes.is_none()
    {
        options.max_entries = Some(DEFAULT_MAX_ENTRIES);
    }

    let type_key = || {
        origin
            .type_key
            .map_or_else(|| own_key("type"), str::to_owned)
    };
    let type_value = || {
        origin
            .type_value
            .map_or_else(|| options.backend.to_string(), str::to_owned)
    };
    let Some(store) = backend::store(options.backend) else {
        return Err(bad(
            &type_key(),
            &type_value(),
            "is not built in this version of tankard",
            &backend::types(|_| true),
        ));
    };
    // The store reads its own options; the key it names is the one the
    // value came from (a region inherits the global `url`).
    (store.check)(options).map_err(|problem| {
        problem.into_error(|option| match (option, origin.url_key) {
            ("url", Some(key)) => key.to_owned(),
            _ => own_key(option),
        })
    })?;
    check_lock(options, store.reach, own_key)?;
    check_policies(options, own_key)?;
    check_l1(options, store.reach, own_key)?;
    if store.open.is_none() {
        return Ok(Some(ConfigError::FeatureMissing {
            key: type_key(),
            value: type_value(),
            feature: store.feature.unwrap_or_default(),
        }));
    }
    // Checked whether or not `l1` is on: a process without an L1 tier still
    // publishes its writes for the processes that have one.
    if let BackplaneSetting::Redis(url) = &options.backplane {
        let feature = if url.to_ascii_lowercase().starts_with("rediss://") {
            "redis-tls"
        } else {
            "redis"
        };
        if !BACKPLANE_FEATURES.contains(&(feature, true)) {
            return Ok(Some(ConfigError::FeatureMissing {
                key: origin
                    .backplane_key
                    .map_or_else(|| own_key("backplane"), str::to_owned),
                value: redis::redact(url),
                feature,
            }));
        }
    }
    Ok(None)
}

/// The features a backplane URL may need, and whether each is built; a
/// table of literals because `cfg!` needs them.
const BACKPLANE_FEATURES: [(&str, bool); 2] = [
    ("redis", cfg!(feature = "redis")),
    ("redis-tls", cfg!(feature = "redis-tls")),
];

/// The freshness and resilience policies against each other and the
/// region's expiry. `fail_safe` keeps entries past their expiry and
/// `early_refresh` renews them before it; with no `expire` nothing ever
/// expires, so either setting is more likely a slip (a region that forgot
/// its `expire`) than a wish.
fn check_policies(options: &RegionOptions, own_key: &dyn Fn(&str) -> String) -> Result<()> {
    if !options.fail_safe.is_zero() && options.expire.is_none() {
        return Err(bad(
            &own_key("fail_safe"),
            &format!("{:?}", options.fail_safe),
            "is set on a region without expire: its entries never expire, so none is kept past expiry",
            "expire = <duration> for this region, or fail_safe = 0",
        ));
    }
    if let (Some(soft), Some(hard)) = (options.soft_timeout, options.hard_timeout)
        && soft >= hard
    {
        return Err(bad(
            &own_key("soft_timeout"),
            &format!("{soft:?}"),
            &format!(
                "is not below hard_timeout ({hard:?}): no caller would ever get the stale value early"
            ),
            "a soft_timeout below hard_timeout, or no soft_timeout",
        ));
    }
    if options.early_refresh != EarlyRefresh::Off && options.expire.is_none() {
        let shown = match options.early_refresh {
            EarlyRefresh::At(fraction) => fraction.to_string(),
            _ => "xfetch".to_owned(),
        };
        return Err(bad(
            &own_key("early_refresh"),
            &shown,
            "is set on a region without expire: its entries never expire, so none is renewed early",
            "expire = <duration> for this region, or early_refresh = off",
        ));
    }
    Ok(())
}

/// The lock mode against the backend, so that a config that loads also
/// opens (the fuzz target `config_flat` found `lock = distributed` on a
/// memory region passing here and failing in `CacheManager::new`):
/// `lock = distributed` needs a server to hold the lock, and `lock = file`
/// somewhere to put its lock files.
fn check_lock(
    options: &RegionOptions,
    reach: Reach,
    own_key: &dyn Fn(&str) -> String,
) -> Result<()> {
    let serverless = reach != Reach::Network;
    if options.lock == LockMode::Distributed && serverless {
        return Err(bad(
            &own_key("lock"),
            "distributed",
            &format!("is not available for the {} backend", options.backend),
            "auto, local, file (with lock_dir) or none",
        ));
    }
    if options.lock == LockMode::File && options.lock_dir.is_none() {
        return Err(ConfigError::Missing {
            key: own_key("lock_dir"),
            message: "missing; lock = file needs lock_dir = \"<directory>\" (or data_dir)"
                .to_owned(),
        }
        .into());
    }
    Ok(())
}

/// `l1 = true` on a region whose store is already in this process (or is
/// nothing): a second memory tier in front of memory would only double the
/// bookkeeping, so it is refused rather than silently ignored. Named by the
/// region's own key, as `check_lock` does, since setting it there to false
/// is the fix even when the `true` is inherited.
fn check_l1(options: &RegionOptions, reach: Reach, own_key: &dyn Fn(&str) -> String) -> Result<()> {
    if options.l1 && reach == Reach::Process {
        return Err(bad(
            &own_key("l1"),
            "true",
            &format!(
                "is not available for the {} backend: l1 is for shared stores ({})",
                options.backend,
                backend::types(|store| store.reach != Reach::Process).trim_start_matches("one of "),
            ),
            "l1 = false for this region, or a shared type",
        ));
    }
    Ok(())
}

impl RegionOptions {
    pub(crate) fn defaults(name: &str) -> RegionOptions {
        RegionOptions {
            name: name.to_owned(),
            backend: super::BackendKind::Memory,
            expire: None,
            data_dir: None,
            lock_dir: None,
            url: None,
            table: None,
            enabled: true,
            key_length: 250,
            starttime: None,
            stale: std::time::Duration::ZERO,
            lock: super::LockMode::Auto,
            lock_timeout: std::time::Duration::from_secs(30),
            wait_timeout: std::time::Duration::from_secs(60),
            timeout: std::time::Duration::from_secs(2),
            retry_after: std::time::Duration::from_secs(1),
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            max_entries: None,
            max_bytes: None,
            secret: None,
            on_backend_error: super::OnBackendError::Bypass,
            refresh: super::Refresh::Foreground,
            early_refresh: EarlyRefresh::Off,
            early_refresh_beta: 1.0,
            soft_timeout: None,
            hard_timeout: None,
            fail_safe: std::time::Duration::ZERO,
            fail_safe_throttle: std::time::Duration::from_secs(30),
            l1: false,
            l1_max_entries: 10_000,
            l1_max_bytes: None,
            l1_expire: None,
            backplane: super::BackplaneSetting::Auto,
            prefix: String::new(),
        }
    }
}
