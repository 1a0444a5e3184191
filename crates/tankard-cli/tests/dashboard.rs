//! The demo's page in headless Chromium: it loads, shows both regions and
//! their backends, its script keeps the counters live, and they change
//! after a request.

use std::path::Path;
use std::process::Command;

use crate::support::Demo;

const CHROMIUM: &str = "/usr/bin/chromium";

/// The page's DOM after its script has run for a few (virtual) seconds.
fn dump_dom(url: &str, profile: &Path) -> String {
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
            "--virtual-time-budget=2500",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 DOM")
}

/// The text of one counter cell of one region's row.
fn cell(dom: &str, region: &str, counter: &str) -> String {
    let row = dom
        .split(&format!("<tr data-region=\"{region}\">"))
        .nth(1)
        .unwrap_or_else(|| panic!("no row for {region} in {dom}"));
    let row = &row[..row.find("</tr>").unwrap()];
    let marker = match counter {
        "backend" => "<td class=\"backend\">".to_owned(),
        _ => format!("<td data-counter=\"{counter}\""),
    };
    let at = row
        .find(&marker)
        .unwrap_or_else(|| panic!("no {counter} cell in {row}"));
    let rest = &row[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest.find("</td>").unwrap();
    rest[start..end].to_owned()
}

/// How many times the page's script refreshed the counters.
fn refreshes(dom: &str) -> u64 {
    dom.split("data-refreshes=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn the_page_shows_the_regions_and_live_counters() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 50, &[]);
    let url = format!("{}/", demo.url);

    let before = tokio::task::spawn_blocking({
        let (url, profile) = (url.clone(), dir.path().join("profile-1"));
        move || dump_dom(&url, &profile)
    })
    .await
    .unwrap();
    assert_eq!(cell(&before, "long_term", "backend"), "file");
    assert_eq!(cell(&before, "short_term", "backend"), "memory");
    assert!(
        refreshes(&before) >= 1,
        "the script polled /stats: {before}"
    );
    assert!(before.contains("live: updated"), "the script ran: {before}");
    assert_eq!(cell(&before, "short_term", "creator_calls"), "0");
    assert_eq!(cell(&before, "short_term", "misses"), "0");

    demo.get("/goodbye").await;
    demo.get("/goodbye").await;

    let after = tokio::task::spawn_blocking({
        let profile = dir.path().join("profile-2");
        move || dump_dom(&url, &profile)
    })
    .await
    .unwrap();
    assert!(refreshes(&after) >= 1);
    assert_eq!(cell(&after, "short_term", "creator_calls"), "1");
    assert_eq!(cell(&after, "short_term", "misses"), "1");
    assert_eq!(cell(&after, "short_term", "hits"), "1");
    assert_eq!(cell(&after, "long_term", "creator_calls"), "0");
}
