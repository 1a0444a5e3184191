//! The dashboard (`tankard::web::dashboard`, mounted by the demo) in
//! headless Chromium: every region shows with its figures, the script
//! keeps them live, the chart moves after traffic (checked in a
//! screenshot), and `/stats` has the shape of DESIGN §10.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::Demo;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The colour of the chart's hits line (`svg.chart polyline.hits`).
const HITS_GREEN: [u8; 3] = [0x1a, 0x7f, 0x37];

fn chromium(profile: &Path, extra: &[String], url: &str) -> Vec<u8> {
    assert!(
        Path::new(CHROMIUM).exists(),
        "{CHROMIUM} is missing: run scripts/services --with-chromium"
    );
    let out = Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1100,1800",
            "--virtual-time-budget=2500",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The page's DOM after its script has run for a few (virtual) seconds.
fn dump_dom(url: &str, profile: &Path) -> String {
    String::from_utf8(chromium(profile, &["--dump-dom".to_owned()], url)).expect("utf-8 DOM")
}

/// A screenshot of the page after its script has run: RGB rows.
fn screenshot(url: &str, profile: &Path) -> Vec<Vec<[u8; 3]>> {
    let file = profile.with_extension("png");
    chromium(profile, &[format!("--screenshot={}", file.display())], url);
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&file).expect("screenshot written"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    buf[..info.buffer_size()]
        .chunks(info.line_size)
        .map(|row| {
            row.chunks(channels)
                .map(|px| [px[0], px[1], px[2]])
                .collect()
        })
        .collect()
}

/// How many rows of the screenshot hold the hits line's colour: a flat
/// line (or none) holds a few, a line that rises after traffic many.
fn rows_with_hits_line(image: &[Vec<[u8; 3]>]) -> usize {
    image.iter().filter(|row| row.contains(&HITS_GREEN)).count()
}

/// One region's section of the page.
fn section<'a>(dom: &'a str, region: &str) -> &'a str {
    let start = dom
        .find(&format!(
            "<section class=\"region\" data-region=\"{region}\">"
        ))
        .unwrap_or_else(|| panic!("no section for {region} in {dom}"));
    let rest = &dom[start..];
    &rest[..rest.find("</section>").unwrap()]
}

/// The text of the first element carrying `marker` (an attribute) in a
/// region's section.
fn text_after(section: &str, marker: &str) -> String {
    let at = section
        .find(marker)
        .unwrap_or_else(|| panic!("no {marker} in {section}"));
    let rest = &section[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest[start..].find('<').unwrap() + start;
    rest[start..end].to_owned()
}

fn field(dom: &str, region: &str, name: &str) -> String {
    text_after(section(dom, region), &format!("data-field=\"{name}\""))
}

fn counter(dom: &str, region: &str, name: &str) -> String {
    text_after(section(dom, region), &format!("data-counter=\"{name}\""))
}

/// An attribute of the region's chart element (`<svg class="chart">`).
fn chart(dom: &str, region: &str, attribute: &str) -> Option<String> {
    let svg = section(dom, region);
    let svg = &svg[svg.find("<svg").expect("a chart element")..];
    let svg = &svg[..svg.find('>').unwrap()];
    let value = svg.split(&format!(" {attribute}=\"")).nth(1)?;
    Some(value[..value.find('"').unwrap()].to_owned())
}

/// How many times the page's script refreshed the figures.
fn refreshes(dom: &str) -> u64 {
    dom.split("data-refreshes=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

async fn in_chromium<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Polls `/stats` until `done` holds.
async fn wait_for_stats(demo: &Demo, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stats = demo.stats().await;
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "timed out: {stats}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `/live` until a region's chart has a point with hits in it.
async fn wait_for_chart(demo: &Demo, region: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = demo.get("/live").await;
        assert_eq!(status, 200, "{body}");
        let live: Value = serde_json::from_str(&body).unwrap();
        let points = live["regions"][region]["points"].as_array().unwrap();
        if points.iter().any(|p| p["hits"].as_u64() > Some(0)) && points.len() >= 2 {
            return live;
        }
        assert!(
            Instant::now() < deadline,
            "no chart point with hits: {live}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_page_shows_every_region_and_a_chart_that_moves_after_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 50, &[]);
    let url = format!("{}/", demo.url);

    let before = in_chromium({
        let (url, profile) = (url.clone(), dir.path().join("profile-1"));
        move || dump_dom(&url, &profile)
    })
    .await;
    assert_eq!(field(&before, "long_term", "backend"), "file");
    assert_eq!(field(&before, "short_term", "backend"), "memory");
    assert_eq!(field(&before, "long_term", "reachable"), "reachable");
    assert_eq!(field(&before, "short_term", "reachable"), "in-process");
    assert!(refreshes(&before) >= 1, "the script polled: {before}");
    assert!(before.contains("live: updated"), "the script ran: {before}");
    for region in ["long_term", "short_term"] {
        assert_eq!(field(&before, region, "entries"), "0");
        assert_eq!(field(&before, region, "hit_ratio"), "–");
        assert_eq!(counter(&before, region, "creator_calls"), "0");
        assert!(chart(&before, region, "data-chart").is_some());
        assert_eq!(chart(&before, region, "data-hits").as_deref(), Some("0"));
    }
    let settings = section(&before, "short_term");
    assert!(settings.contains("<b>expire</b> 20m"), "{settings}");
    assert!(settings.contains("data-invalidate=\"short_term\""));
    let shot_before = in_chromium({
        let (url, profile) = (url.clone(), dir.path().join("profile-2"));
        move || screenshot(&url, &profile)
    })
    .await;

    demo.get("/goodbye").await;
    for _ in 0..20 {
        demo.get("/goodbye").await;
    }
    demo.get("/hello").await;
    demo.get("/hello").await;
    wait_for_chart(&demo, "short_term").await;
    wait_for_stats(&demo, |s| s["regions"]["long_term"]["entries"] == 1).await;

    let after = in_chromium({
        let (url, profile) = (url.clone(), dir.path().join("profile-3"));
        move || dump_dom(&url, &profile)
    })
    .await;
    assert_eq!(counter(&after, "short_term", "creator_calls"), "1");
    assert_eq!(counter(&after, "short_term", "misses"), "1");
    assert_eq!(counter(&after, "short_term", "hits"), "20");
    assert_eq!(counter(&after, "long_term", "hits"), "1");
    assert_eq!(field(&after, "short_term", "entries"), "1");
    assert_eq!(field(&after, "long_term", "entries"), "1");
    assert_eq!(field(&after, "short_term", "hit_ratio"), "95.2%");
    assert_eq!(field(&after, "long_term", "hit_ratio"), "50.0%");
    assert!(
        field(&after, "long_term", "lookup_p50").ends_with(" µs"),
        "file reads are timed"
    );
    assert!(field(&after, "short_term", "creator_p99").ends_with(" ms"));
    let hits: u64 = chart(&after, "short_term", "data-hits")
        .unwrap()
        .parse()
        .unwrap();
    assert!(hits >= 1, "the chart counts the hits: {after}");
    assert!(
        section(&after, "short_term").contains("<polyline class=\"hits\""),
        "{after}"
    );

    let shot_after = in_chromium({
        let profile = dir.path().join("profile-4");
        move || screenshot(&url, &profile)
    })
    .await;
    let (flat, moved) = (
        rows_with_hits_line(&shot_before),
        rows_with_hits_line(&shot_after),
    );
    assert!(
        moved >= flat + 10,
        "the hits line rises in the screenshot: {flat} rows before, {moved} after"
    );
}

/// DESIGN §10's `/stats`, as this test's own copy: every key, and the
/// kind of value each holds.
const SHAPE: [(&str, &str); 15] = [
    ("backend", "string"),
    ("hits", "count"),
    ("misses", "count"),
    ("stale_served", "count"),
    ("creator_calls", "count"),
    ("creator_errors", "count"),
    ("lock_waits", "count"),
    ("backend_errors", "count"),
    ("decode_errors", "count"),
    ("fail_safe_served", "count"),
    ("entries", "count or null"),
    ("bytes", "count or null"),
    ("hit_ratio", "ratio or null"),
    ("lookup_us", "percentiles"),
    ("creator_ms", "percentiles"),
];

fn check_shape(stats: &Value) {
    let regions = stats["regions"].as_object().expect("regions");
    for (name, line) in regions {
        let line = line.as_object().unwrap();
        let mut keys: Vec<_> = line.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected: Vec<_> = SHAPE.iter().map(|(k, _)| *k).collect();
        expected.sort_unstable();
        assert_eq!(keys, expected, "{name}: the keys of DESIGN §10");
        for (key, kind) in SHAPE {
            let v = &line[key];
            let ok = match kind {
                "string" => v.is_string(),
                "count" => v.is_u64(),
                "count or null" => v.is_u64() || v.is_null(),
                "ratio or null" => {
                    v.is_null() || v.as_f64().is_some_and(|r| (0.0..=1.0).contains(&r))
                }
                _ => {
                    let p = v.as_object().unwrap();
                    p.len() == 2
                        && ["p50", "p99"]
                            .iter()
                            .all(|q| p[*q].is_null() || p[*q].as_f64().is_some_and(|x| x >= 0.0))
                }
            };
            assert!(ok, "{name}.{key} should be {kind}: {v}");
        }
    }
}

#[tokio::test]
async fn stats_has_the_shape_of_design_10() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 50, &[]);
    let empty = demo.stats().await;
    check_shape(&empty);
    assert_eq!(empty["regions"]["short_term"]["hit_ratio"], Value::Null);
    assert_eq!(
        empty["regions"]["short_term"]["lookup_us"]["p50"],
        Value::Null
    );

    demo.get("/greet/ann").await;
    demo.get("/greet/ann").await;
    demo.get("/hello").await;
    // A shared store's size is read again within a tick of being written.
    let stats = wait_for_stats(&demo, |s| s["regions"]["long_term"]["entries"] == 1).await;
    check_shape(&stats);
    let short = &stats["regions"]["short_term"];
    assert_eq!(short["hit_ratio"].as_f64(), Some(0.5));
    assert_eq!(short["entries"].as_u64(), Some(1));
    assert_eq!(short["bytes"], Value::Null, "counted by entries only");
    assert!(
        short["creator_ms"]["p50"].as_f64().unwrap() >= 40.0,
        "{short}"
    );
    let long = &stats["regions"]["long_term"];
    assert_eq!(long["entries"].as_u64(), Some(1));
    assert!(long["bytes"].as_u64().unwrap() > 0);
    assert!(long["lookup_us"]["p99"].as_f64().unwrap() > 0.0);
}
