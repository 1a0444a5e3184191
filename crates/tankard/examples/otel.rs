//! Tankard's spans in OpenTelemetry and its metrics in Prometheus.
//!
//! Nothing to call: every region records its counters, latencies and
//! sizes into whatever `metrics` recorder is installed, and opens
//! `tracing` spans on its slow path (`tankard.miss`, `tankard.create`,
//! `tankard.lock_wait`, `tankard.refresh` at debug level,
//! `tankard.backend` at trace level), which `tracing-opentelemetry`
//! turns into OpenTelemetry spans. Here the spans go to stdout and the
//! metrics are rendered once; in an app, use an OTLP exporter and let
//! `PrometheusBuilder::install()` serve `/metrics` (or mount
//! `tankard::web::dashboard`, whose `/metrics` needs no recorder).
//!
//! ```sh
//! cargo run -p tankard --example otel
//! ```

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::layer::SubscriberExt as _;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Metrics: a Prometheus recorder, installed before or after the
    // manager is built (Tankard registers with whichever it finds).
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;

    // Spans: tracing → OpenTelemetry, printed to stdout.
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    let otel = tracing_opentelemetry::layer().with_tracer(provider.tracer("tankard-example"));
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(otel))?;

    let config = tankard::Config::from_flat([
        ("cache.type", "memory"),
        ("cache.regions", "reports"),
        ("cache.reports.expire", "60"),
    ])?;
    let cache = tankard::CacheManager::new(config)?;
    let reports = cache.region("reports")?.namespace("reports::daily");
    // One miss (spans: tankard.miss with tankard.create inside), then 128
    // hits (no span; one hit in 64 is timed, and each thread hands its
    // hits to the recorder 64 at a time).
    for _ in 0..129 {
        let report = reports
            .get_or_create("today", || async {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                "the daily report".to_owned()
            })
            .await?;
        assert_eq!(*report, "the daily report");
    }
    provider.force_flush()?;

    // tankard_hits_total, tankard_misses_total, …, tankard_entries,
    // tankard_lookup_seconds{tier="memory"}, tankard_creator_seconds.
    let text = prometheus.render();
    println!("{text}");
    assert!(text.contains("tankard_hits_total{region=\"reports\",backend=\"memory\"} 128"));
    provider.shutdown()?;
    Ok(())
}
