//! The operator's dashboard (DESIGN §9): an axum [`Router`] with the live
//! page, `/stats` (JSON) and `/metrics` (Prometheus' text format), built
//! from Tankard's own figures: no recorder or exporter needed.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use http::{StatusCode, header};
use serde::Serialize;

use crate::config::RegionOptions;
use crate::manager::CacheManager;
use crate::region::{Invalidation, Region};
use crate::stats::{Latencies, Latency, Stats};
use crate::sync::lock;

const PAGE: &str = include_str!("dashboard.html");
/// How often the chart gets a point.
const TICK: Duration = Duration::from_secs(2);
/// How many points the chart keeps: five minutes.
const POINTS: usize = 150;
/// How often a shared store is asked for its size and probed: its size
/// can cost a walk of a directory, and the page polls every tick. Sooner
/// (every [`TICK`]) while this process writes to it.
const SIZE_EVERY: Duration = Duration::from_secs(10);

/// The operator's page and its data, for any app to mount:
///
/// | route | what |
/// |---|---|
/// | `GET /` | the page: per region its backend, reachability, entries and bytes, hit ratio, lookup and creator latency (p50, p99), every counter, its settings, a chart of hits, misses and latency over the last five minutes, and an invalidate button that asks first |
/// | `GET /stats` | the figures as JSON: `{"regions": {name: {backend, the counters, entries, bytes, hit_ratio, lookup_us: {p50, p99}, creator_ms: {p50, p99}}}}` |
/// | `GET /metrics` | the same in Prometheus' text format: the counters, `tankard_entries`, `tankard_bytes`, `tankard_breaker_open`, and the `tankard_lookup_seconds` and `tankard_creator_seconds` histograms |
/// | `GET /live` | what the page's chart and health column read: points every 2 s over the last 5 minutes, reachability, breaker state |
/// | `POST /invalidate/{region}` | soft-invalidates a region (its entries are served stale while one caller regenerates each) |
/// | `POST /invalidate/{region}?tag=T` | hides the region's entries tagged `T` ([`Region::invalidate_tag`]); a bad tag is a 400 |
///
/// Everything is self-contained: the page's chart is inline SVG drawn by
/// a small inline script; nothing is fetched from elsewhere. The page
/// finds its data relative to its own address, so the router can be
/// nested anywhere (`Router::nest("/cache", dashboard(manager))`, then
/// open `/cache/`). It shows the configured regions, and the default
/// region too when it has counted anything (or when no region is
/// configured).
///
/// The figures are this process's: counters and latencies since the
/// regions opened (`lookup_us` merges memory hits, sampled 1 in 64 and
/// counted 64 times each, with reads through the shared store), entries
/// and bytes where the store can tell (a shared store's re-read every 2 s
/// while this process writes to it, every 10 s otherwise: it can cost a
/// walk of a directory). The chart's points are taken by a task started with the
/// router (or, built outside a runtime, on its first request), which
/// ends when the router is dropped. Protect the
/// routes as you protect any admin page: anyone who reaches
/// `/invalidate` can invalidate a region.
///
/// ```
/// use axum::{Router, routing::get};
///
/// let cache = tankard::CacheManager::new(tankard::Config::memory())?;
/// let app: Router = Router::new()
///     .route("/hello", get(|| async { "Hello world" }))
///     .nest("/cache", tankard::web::dashboard(cache));
/// # let _ = app;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn dashboard(manager: CacheManager) -> Router {
    let board = Arc::new(Board {
        manager,
        sampling: AtomicBool::new(false),
        state: Mutex::new(BoardState::default()),
    });
    if tokio::runtime::Handle::try_current().is_ok() {
        board.start_sampling();
    }
    Router::new()
        .route("/", get(page))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/live", get(live))
        .route("/invalidate/{region}", post(invalidate))
        .with_state(board)
}

type Shared = Arc<Board>;

struct Board {
    manager: CacheManager,
    /// Whether the task taking the chart's points was started.
    sampling: AtomicBool,
    state: Mutex<BoardState>,
}

#[derive(Default)]
struct BoardState {
    sizes: BTreeMap<String, Size>,
    points: BTreeMap<String, VecDeque<Point>>,
    /// Each region's figures at the last point, to take the next one's
    /// differences from.
    last: BTreeMap<String, (Stats, Latencies)>,
}

/// What a region's store last said about itself.
#[derive(Clone, Default)]
struct Size {
    read_at: Option<Instant>,
    /// The region's creator calls when it was read: a change means
    /// entries were written since.
    creator_calls: u64,
    entries: Option<u64>,
    bytes: Option<u64>,
    /// `None`: the region's entries live in this process.
    reachable: Option<bool>,
    error: Option<String>,
}

/// One point of the chart: what happened since the point before.
#[derive(Clone, Serialize)]
struct Point {
    /// Wall-clock time, ms since the epoch.
    t: u64,
    hits: u64,
    misses: u64,
    stale_served: u64,
    /// The lookups' p99 over the interval, µs.
    lookup_p99_us: Option<f64>,
    /// The creator runs' p99 over the interval, ms.
    creator_p99_ms: Option<f64>,
}

impl Board {
    /// The regions the dashboard shows.
    fn regions(&self) -> Vec<&Region> {
        let mut regions: Vec<&Region> = self.manager.regions().collect();
        let default = self.manager.default_region();
        let stats = default.stats();
        if regions.is_empty() || stats != Stats::default() {
            regions.push(default);
        }
        regions
    }

    /// Starts the task that takes the chart's points, once, from inside
    /// the runtime serving the page.
    fn start_sampling(self: &Arc<Self>) {
        if self.sampling.swap(true, Ordering::AcqRel) {
            return;
        }
        let board: Weak<Board> = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(TICK);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // Held for one tick only: dropping the router ends the task.
                let Some(board) = board.upgrade() else {
                    return;
                };
                board.take_point();
                board.read_sizes().await;
            }
        });
    }

    /// Adds a point to every region's chart: the differences since the
    /// last one (the first call only takes the baseline).
    fn take_point(&self) {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut state = lock(&self.state);
        for region in self.regions() {
            let now = (region.stats(), region.latency());
            let name = region.name().to_owned();
            if let Some((stats, latency)) = state.last.get(&name) {
                let point = Point {
                    t,
                    hits: now.0.hits.saturating_sub(stats.hits),
                    misses: now.0.misses.saturating_sub(stats.misses),
                    stale_served: now.0.stale_served.saturating_sub(stats.stale_served),
                    lookup_p99_us: micros(now.1.lookup().since(&latency.lookup()).quantile(0.99)),
                    creator_p99_ms: millis(now.1.creator.since(&latency.creator).quantile(0.99)),
                };
                let points = state.points.entry(name.clone()).or_default();
                if points.len() == POINTS {
                    points.pop_front();
                }
                points.push_back(point);
            }
            state.last.insert(name, now);
        }
    }

    /// Reads the regions' sizes and reachability: a memory region's every
    /// time (it costs nothing), a shared store's when the last reading is
    /// older than [`SIZE_EVERY`].
    async fn read_sizes(&self) {
        for region in self.regions() {
            let in_process = region.inner.l2.is_none();
            let written = region.stats().creator_calls;
            let due = {
                let state = lock(&self.state);
                match state.sizes.get(region.name()) {
                    Some(Size {
                        read_at: Some(at),
                        creator_calls,
                        ..
                    }) => {
                        let age = at.elapsed();
                        in_process
                            || age >= SIZE_EVERY
                            || (age >= TICK && written != *creator_calls)
                    }
                    _ => true,
                }
            };
            if !due {
                continue;
            }
            let size = read_size(region).await;
            lock(&self.state)
                .sizes
                .insert(region.name().to_owned(), size);
        }
    }

    fn size(&self, region: &Region) -> Size {
        lock(&self.state)
            .sizes
            .get(region.name())
            .cloned()
            .unwrap_or_default()
    }

    /// What every handler does first: keep the chart's task running and
    /// the sizes current.
    async fn refresh(self: &Arc<Self>) {
        self.start_sampling();
        self.read_sizes().await;
    }
}

async fn read_size(region: &Region) -> Size {
    let mut size = Size {
        read_at: Some(Instant::now()),
        creator_calls: region.stats().creator_calls,
        ..Size::default()
    };
    if region.inner.l2.is_some() {
        // A read of a key nobody writes: the cheapest real round trip.
        let probe = region
            .namespace("tankard::probe")
            .inspect("reachable")
            .await;
        size.reachable = Some(probe.is_ok());
        size.error = probe.err().map(|err| err.to_string());
        if size.reachable == Some(false) {
            return size;
        }
    }
    match region.usage().await {
        Ok(usage) => {
            size.entries = usage.entries;
            size.bytes = usage.bytes;
        }
        Err(err) => size.error = Some(err.to_string()),
    }
    size
}

fn micros(d: Option<Duration>) -> Option<f64> {
    d.map(|d| round3(d.as_secs_f64() * 1e6))
}

fn millis(d: Option<Duration>) -> Option<f64> {
    d.map(|d| round3(d.as_secs_f64() * 1e3))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Two percentiles of a latency histogram.
#[derive(Serialize)]
struct Percentiles {
    p50: Option<f64>,
    p99: Option<f64>,
}

impl Percentiles {
    fn new(latency: &Latency, unit: fn(Option<Duration>) -> Option<f64>) -> Percentiles {
        Percentiles {
            p50: unit(latency.quantile(0.5)),
            p99: unit(latency.quantile(0.99)),
        }
    }
}

/// One region's figures in `/stats` (DESIGN §10).
#[derive(Serialize)]
struct RegionStats {
    backend: &'static str,
    hits: u64,
    misses: u64,
    stale_served: u64,
    creator_calls: u64,
    creator_errors: u64,
    lock_waits: u64,
    backend_errors: u64,
    decode_errors: u64,
    fail_safe_served: u64,
    entries: Option<u64>,
    bytes: Option<u64>,
    hit_ratio: Option<f64>,
    lookup_us: Percentiles,
    creator_ms: Percentiles,
}

impl RegionStats {
    fn new(region: &Region, size: &Size) -> RegionStats {
        let s = region.stats();
        let latency = region.latency();
        RegionStats {
            backend: region.backend_name(),
            hits: s.hits,
            misses: s.misses,
            stale_served: s.stale_served,
            creator_calls: s.creator_calls,
            creator_errors: s.creator_errors,
            lock_waits: s.lock_waits,
            backend_errors: s.backend_errors,
            decode_errors: s.decode_errors,
            fail_safe_served: s.fail_safe_served,
            entries: size.entries,
            bytes: size.bytes,
            hit_ratio: s.hit_ratio().map(|r| (r * 10_000.0).round() / 10_000.0),
            lookup_us: Percentiles::new(&latency.lookup(), micros),
            creator_ms: Percentiles::new(&latency.creator, millis),
        }
    }
}

#[derive(Serialize)]
struct StatsBody {
    regions: BTreeMap<String, RegionStats>,
}

fn stats_body(board: &Board) -> StatsBody {
    let regions = board
        .regions()
        .into_iter()
        .map(|region| {
            let line = RegionStats::new(region, &board.size(region));
            (region.name().to_owned(), line)
        })
        .collect();
    StatsBody { regions }
}

fn json(body: &impl Serialize) -> Response {
    match serde_json::to_string(body) {
        Ok(json) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            json,
        )
            .into_response(),
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")).into_response(),
    }
}

async fn stats(State(board): State<Shared>) -> Response {
    board.refresh().await;
    json(&stats_body(&board))
}

/// What the page's chart and health column read.
#[derive(Serialize)]
struct LiveBody {
    interval_ms: u64,
    regions: BTreeMap<String, LiveRegion>,
}

#[derive(Serialize)]
struct LiveRegion {
    reachable: Option<bool>,
    breaker: Option<&'static str>,
    error: Option<String>,
    points: Vec<Point>,
}

async fn live(State(board): State<Shared>) -> Response {
    board.refresh().await;
    let regions = board
        .regions()
        .into_iter()
        .map(|region| {
            let size = board.size(region);
            let points = lock(&board.state)
                .points
                .get(region.name())
                .map(|points| points.iter().cloned().collect())
                .unwrap_or_default();
            let line = LiveRegion {
                reachable: size.reachable,
                breaker: region.breaker().map(|state| state.as_str()),
                error: size.error,
                points,
            };
            (region.name().to_owned(), line)
        })
        .collect();
    json(&LiveBody {
        interval_ms: TICK.as_millis() as u64,
        regions,
    })
}

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `le` bounds of the exported histograms, in seconds: Tankard's own
/// buckets are finer; each exported bucket counts the durations of the
/// fine buckets that lie wholly below its bound.
const LE: [f64; 27] = [
    1e-7, 2.5e-7, 5e-7, 1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3,
    5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn histogram(out: &mut String, name: &str, labels: &str, latency: &Latency) {
    let buckets: Vec<(f64, u64)> = latency
        .buckets()
        .map(|(high, n)| (high.as_secs_f64(), n))
        .collect();
    for le in LE {
        let below: u64 = buckets
            .iter()
            .filter(|(high, _)| *high <= le)
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {below}");
    }
    let _ = writeln!(
        out,
        "{name}_bucket{{{labels},le=\"+Inf\"}} {}",
        latency.count()
    );
    let _ = writeln!(
        out,
        "{name}_sum{{{labels}}} {}",
        latency.sum().as_secs_f64()
    );
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", latency.count());
}

/// One region as the metrics see it.
struct Line<'a> {
    labels: String,
    stats: Stats,
    latency: Latencies,
    size: Size,
    region: &'a Region,
}

/// A gauge of `/metrics`: name, help, and its value for a region (if known).
type Gauge = (&'static str, &'static str, fn(&Line<'_>) -> Option<f64>);

fn render_metrics(lines: &[Line<'_>]) -> String {
    let mut out = String::new();
    for counter in Stats::COUNTERS {
        let name = counter.metric;
        let _ = writeln!(out, "# HELP {name} {}", counter.help);
        let _ = writeln!(out, "# TYPE {name} counter");
        for line in lines {
            let _ = writeln!(
                out,
                "{name}{{{}}} {}",
                line.labels,
                counter.read(&line.stats)
            );
        }
    }
    let gauges: [Gauge; 3] = [
        (
            "tankard_entries",
            "Entries the region's store holds, where it can tell.",
            |l| l.size.entries.map(|n| n as f64),
        ),
        (
            "tankard_bytes",
            "Bytes the region's store holds, where it can tell.",
            |l| l.size.bytes.map(|n| n as f64),
        ),
        (
            "tankard_breaker_open",
            "1 while the circuit breaker skips the region's store (open or probing), 0 when closed.",
            |l| {
                l.region.breaker().map(|s| {
                    if s == crate::BreakerState::Closed {
                        0.0
                    } else {
                        1.0
                    }
                })
            },
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for line in lines {
            if let Some(value) = value(line) {
                let _ = writeln!(out, "{name}{{{}}} {value}", line.labels);
            }
        }
    }
    let name = "tankard_lookup_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Lookup latency: tier=\"memory\" samples one memory hit in 64, tier=\"shared\" is every read through the shared store."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for line in lines {
        // Only the tiers the region has.
        let tiers = [
            (
                "memory",
                &line.latency.memory_hits,
                line.region.has_memory_tier(),
            ),
            (
                "shared",
                &line.latency.shared_lookups,
                line.region.inner.l2.is_some(),
            ),
        ];
        for (tier, latency, _) in tiers.into_iter().filter(|tier| tier.2) {
            let labels = format!("{},tier=\"{tier}\"", line.labels);
            histogram(&mut out, name, &labels, latency);
        }
    }
    let name = "tankard_creator_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} How long creators ran, failed runs included."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for line in lines {
        histogram(&mut out, name, &line.labels, &line.latency.creator);
    }
    out
}

async fn metrics(State(board): State<Shared>) -> Response {
    board.refresh().await;
    let lines: Vec<Line<'_>> = board
        .regions()
        .into_iter()
        .map(|region| Line {
            labels: format!(
                "region=\"{}\",backend=\"{}\"",
                label(region.name()),
                label(region.backend_name())
            ),
            stats: region.stats(),
            latency: region.latency(),
            size: board.size(region),
            region,
        })
        .collect();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        render_metrics(&lines),
    )
        .into_response()
}

fn escape_html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

fn duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if d.is_zero() {
        "0".to_owned()
    } else if secs < 1.0 {
        format!("{}ms", d.as_millis())
    } else if secs >= 3600.0 && secs % 3600.0 == 0.0 {
        format!("{}h", secs / 3600.0)
    } else if secs >= 60.0 && secs % 60.0 == 0.0 {
        format!("{}m", secs / 60.0)
    } else {
        format!("{secs}s")
    }
}

/// A region's settings, as the page lists them.
fn settings(o: &RegionOptions) -> Vec<(&'static str, String)> {
    let lower = |v: &dyn std::fmt::Debug| format!("{v:?}").to_lowercase();
    let mut list = vec![
        ("expire", o.expire.map_or("never".to_owned(), duration)),
        ("stale", duration(o.stale)),
        ("lock", lower(&o.lock)),
        ("wait_timeout", duration(o.wait_timeout)),
        (
            "l1",
            if o.l1 {
                format!("on, {} entries", o.l1_max_entries)
            } else {
                "off".to_owned()
            },
        ),
        ("refresh", lower(&o.refresh)),
        ("on_backend_error", lower(&o.on_backend_error)),
    ];
    if let Some(max) = o.max_entries {
        list.push(("max_entries", max.to_string()));
    }
    if let Some(max) = o.max_bytes {
        list.push(("max_bytes", max.to_string()));
    }
    if o.url.is_some() {
        list.push(("timeout", duration(o.timeout)));
        list.push(("retry_after", duration(o.retry_after)));
    }
    // The freshness and resilience policies, where they are on.
    match o.early_refresh {
        crate::config::EarlyRefresh::Off => {}
        crate::config::EarlyRefresh::At(fraction) => {
            list.push(("early_refresh", fraction.to_string()));
        }
        crate::config::EarlyRefresh::XFetch => list.push((
            "early_refresh",
            format!("xfetch, beta {}", o.early_refresh_beta),
        )),
    }
    if !o.fail_safe.is_zero() {
        list.push((
            "fail_safe",
            format!(
                "{}, throttle {}",
                duration(o.fail_safe),
                duration(o.fail_safe_throttle)
            ),
        ));
    }
    if let Some(soft) = o.soft_timeout {
        list.push(("soft_timeout", duration(soft)));
    }
    if let Some(hard) = o.hard_timeout {
        list.push(("hard_timeout", duration(hard)));
    }
    if !o.enabled {
        list.push(("enabled", "false".to_owned()));
    }
    list
}

fn number(value: Option<f64>, unit: &str) -> String {
    value.map_or("–".to_owned(), |v| format!("{v}{unit}"))
}

/// The page, rendered with the figures as they are now; its script keeps
/// them live.
async fn page(State(board): State<Shared>) -> Html<String> {
    board.refresh().await;
    let stats = stats_body(&board);
    let mut sections = String::new();
    for region in board.regions() {
        let Some(s) = stats.regions.get(region.name()) else {
            continue;
        };
        let size = board.size(region);
        let name = escape_html(region.name());
        let reach = match size.reachable {
            None => "in-process",
            Some(true) => "reachable",
            Some(false) => "UNREACHABLE",
        };
        let _ = write!(
            sections,
            "<section class=\"region\" data-region=\"{name}\">\n<header><h2>{name}</h2>\
             <span class=\"tag\" data-field=\"backend\">{}</span>\
             <span class=\"tag reach\" data-field=\"reachable\">{reach}</span>\
             <span class=\"tag\" data-field=\"breaker\">{}</span>\
             <button data-invalidate=\"{name}\" title=\"soft-invalidate: entries are served stale while one request regenerates each\">invalidate…</button></header>\n",
            escape_html(s.backend),
            region
                .breaker()
                .map_or(String::new(), |b| format!("breaker {}", b.as_str())),
        );
        let figures = [
            (
                "entries",
                s.entries.map_or("–".to_owned(), |n| n.to_string()),
            ),
            ("bytes", s.bytes.map_or("–".to_owned(), |n| n.to_string())),
            (
                "hit_ratio",
                s.hit_ratio
                    .map_or("–".to_owned(), |r| format!("{:.1}%", r * 100.0)),
            ),
            ("lookup_p50", number(s.lookup_us.p50, " µs")),
            ("lookup_p99", number(s.lookup_us.p99, " µs")),
            ("creator_p50", number(s.creator_ms.p50, " ms")),
            ("creator_p99", number(s.creator_ms.p99, " ms")),
        ];
        sections.push_str("<dl class=\"figures\">");
        for (field, value) in figures {
            let _ = write!(
                sections,
                "<div><dt>{}</dt><dd data-field=\"{field}\">{value}</dd></div>",
                field.replace('_', " ")
            );
        }
        sections.push_str("</dl>\n<table class=\"counters\"><tr>");
        for counter in Stats::COUNTERS {
            let _ = write!(sections, "<th>{}</th>", counter.name.replace('_', " "));
        }
        sections.push_str("</tr><tr>");
        let now = region.stats();
        for counter in Stats::COUNTERS {
            let _ = write!(
                sections,
                "<td data-counter=\"{}\">{}</td>",
                counter.name,
                counter.read(&now)
            );
        }
        sections.push_str("</tr></table>\n<p class=\"settings\">");
        for (key, value) in settings(region.options()) {
            let _ = write!(
                sections,
                "<span><b>{key}</b> {}</span> ",
                escape_html(&value)
            );
        }
        let _ = write!(
            sections,
            "</p>\n<svg class=\"chart\" data-chart=\"{name}\" viewBox=\"0 0 720 160\" role=\"img\" \
             aria-label=\"hits, misses and lookup p99 of {name} over the last five minutes\"></svg>\n\
             <p class=\"legend\"><span class=\"hits\">hits/s <b data-now=\"hits\">–</b></span> \
             <span class=\"misses\">misses/s <b data-now=\"misses\">–</b></span> \
             <span class=\"latency\">lookup p99 <b data-now=\"latency\">–</b></span></p>\n</section>\n"
        );
    }
    Html(PAGE.replace("{{REGIONS}}", &sections))
}

async fn invalidate(
    State(board): State<Shared>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let region = match board.manager.region(&name) {
        Ok(region) => region,
        Err(_) if name == board.manager.default_region().name() => board.manager.default_region(),
        Err(err) => return (StatusCode::NOT_FOUND, format!("{err}\n")).into_response(),
    };
    if let Some(tag) = query.as_deref().and_then(tag_of) {
        return match region.invalidate_tag(&tag).await {
            Ok(()) => format!("invalidated tag {tag} in region {name}\n").into_response(),
            Err(err) if err.is_bad_tag() => {
                (StatusCode::BAD_REQUEST, format!("{err}\n")).into_response()
            }
            Err(err) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot invalidate tag {tag} in region {name}: {err}\n"),
            )
                .into_response(),
        };
    }
    match region.invalidate(Invalidation::Soft).await {
        Ok(()) => format!(
            "soft-invalidated region {name}: its entries are stale; each is served \
             stale while one request regenerates it\n"
        )
        .into_response(),
        Err(err) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot invalidate region {name}: {err}\n"),
        )
            .into_response(),
    }
}

/// The `tag` of a query string (`tag=greet%3Afred`), percent-decoded
/// (`+` is a space); `None` without one. A tag that does not decode to
/// UTF-8 keeps its bytes' lossy form, which the tag check then judges.
fn tag_of(query: &str) -> Option<String> {
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("tag="))?;
    let mut bytes = Vec::with_capacity(value.len());
    let mut rest = value.as_bytes();
    while let Some((&byte, tail)) = rest.split_first() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (byte, tail) {
            (b'%', [high, low, ..]) if hex(*high).is_some() && hex(*low).is_some() => {
                let (high, low) = (hex(*high).unwrap_or(0), hex(*low).unwrap_or(0));
                bytes.push((high * 16 + low) as u8);
                rest = &tail[2..];
                continue;
            }
            (b'+', _) => bytes.push(b' '),
            _ => bytes.push(byte),
        }
        rest = tail;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_of_a_query_is_percent_decoded() {
        assert_eq!(tag_of("tag=greet%3Afred").as_deref(), Some("greet:fred"));
        assert_eq!(tag_of("x=1&tag=a+b%2").as_deref(), Some("a b%2"));
        assert_eq!(tag_of("tag=").as_deref(), Some(""));
        assert_eq!(tag_of("other=1"), None);
    }

    #[test]
    fn settings_name_the_policies_that_are_on() {
        let plain = crate::Config::from_flat([("cache.type", "memory")]).unwrap();
        let keys: Vec<_> = settings(plain.default_options())
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert!(!keys.contains(&"fail_safe") && !keys.contains(&"early_refresh"));
        let config = crate::Config::from_flat([
            ("cache.type", "memory"),
            ("cache.expire", "1m"),
            ("cache.early_refresh", "xfetch"),
            ("cache.fail_safe", "1h"),
            ("cache.soft_timeout", "100ms"),
            ("cache.hard_timeout", "2s"),
        ])
        .unwrap();
        let listed = settings(config.default_options());
        let value = |key| {
            listed
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(value("early_refresh"), Some("xfetch, beta 1"));
        assert_eq!(value("fail_safe"), Some("1h, throttle 30s"));
        assert_eq!(value("hard_timeout"), Some("2s"));
        assert!(value("soft_timeout").is_some());
    }

    #[test]
    fn metrics_escape_labels_and_list_every_figure() {
        let cache = CacheManager::new(crate::Config::memory()).unwrap();
        let region = cache.default_region();
        let lines = [Line {
            labels: format!("region=\"{}\",backend=\"memory\"", label("a\"b")),
            stats: Stats::default(),
            latency: Latencies::default(),
            size: Size {
                entries: Some(3),
                ..Size::default()
            },
            region,
        }];
        let text = render_metrics(&lines);
        assert!(text.contains("tankard_hits_total{region=\"a\\\"b\",backend=\"memory\"} 0"));
        assert!(text.contains("tankard_entries{region=\"a\\\"b\",backend=\"memory\"} 3"));
        assert!(
            !text.contains("tankard_bytes{"),
            "unknown sizes are left out"
        );
        assert!(text.contains(
            "tankard_lookup_seconds_bucket{region=\"a\\\"b\",backend=\"memory\",tier=\"memory\",le=\"+Inf\"} 0"
        ));
        assert!(
            !text.contains(",tier=\"shared\""),
            "a memory region has no shared store"
        );
        assert_eq!(
            text.matches("# TYPE").count(),
            Stats::COUNTERS.len() + 3 + 2
        );
    }

    #[test]
    fn durations_read_as_configured() {
        assert_eq!(duration(Duration::from_secs(1200)), "20m");
        assert_eq!(duration(Duration::from_secs(86400)), "24h");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_secs_f64(2.5)), "2.5s");
        assert_eq!(duration(Duration::ZERO), "0");
    }
}
