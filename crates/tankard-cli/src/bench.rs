//! `tankard bench`: a load generator for one region.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::failure::{Failure, Outcome};
use crate::tools::load;

/// The namespace the benchmark writes to.
const NAMESPACE: &str = "tankard::bench";
/// How many operations a task does between updates of the shared counter.
const BATCH: u64 = 64;

/// `tankard bench`'s options.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// The config file (TOML, or INI-style `key = value` lines).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// The region to load.
    #[arg(long)]
    region: String,
    /// How long to run, in seconds (fractions allowed).
    #[arg(long, default_value_t = 10.0, value_name = "S", value_parser = positive_seconds)]
    duration: f64,
    /// Concurrent tasks calling get_or_create.
    #[arg(long, default_value_t = 16, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// Size of the key space the tasks pick from uniformly; the first call
    /// on each key misses and creates it.
    #[arg(long, default_value_t = 1000, value_name = "K", value_parser = clap::value_parser!(u64).range(1..))]
    keys: u64,
    /// Size of each stored value, in bytes.
    #[arg(long, default_value_t = 100, value_name = "B")]
    value_bytes: usize,
}

fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s.is_finite() && s <= 86_400.0 => Ok(s),
        _ => Err(format!(
            "{text:?} is not a number of seconds between 0 and 86400"
        )),
    }
}

/// A small, fast generator: the benchmark must not measure its RNG.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn percentile(sorted: &[u64], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    Duration::from_nanos(sorted[rank.clamp(1, sorted.len()) - 1])
}

pub(crate) async fn run(args: BenchArgs) -> Outcome {
    let cache = load(&args.config)?;
    let region = cache.region(&args.region)?.clone();
    if !region.in_process() {
        region
            .namespace("tankard::probe")
            .inspect("reachable")
            .await
            .map_err(|err| {
                Failure::Environment(format!("region {} is unreachable: {err}", args.region))
            })?;
    }
    let ns = region.namespace(NAMESPACE);
    let keys: Arc<Vec<String>> = Arc::new((0..args.keys).map(|i| format!("key-{i}")).collect());
    let value = Arc::new("x".repeat(args.value_bytes));
    let duration = Duration::from_secs_f64(args.duration);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let before = region.stats();
    let start = Instant::now();
    let deadline = start + duration;

    let tasks: Vec<_> = (0..args.concurrency)
        .map(|task| {
            let (ns, keys, value) = (ns.clone(), keys.clone(), value.clone());
            let (done, failed) = (done.clone(), failed.clone());
            tokio::spawn(async move {
                let mut rng = XorShift(
                    0x9e37_79b9_7f4a_7c15 ^ (task + 1).wrapping_mul(0xff51_afd7_ed55_8ccd),
                );
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut pending = 0;
                while Instant::now() < deadline {
                    // A memory hit never waits, so without this a task would
                    // keep its worker until the deadline and starve the others
                    // (and the creators they wait on).
                    tokio::task::consume_budget().await;
                    let key = &keys[(rng.next() % keys.len() as u64) as usize];
                    let t0 = Instant::now();
                    let got = ns
                        .get_or_create(key, || {
                            let value = value.clone();
                            async move { String::clone(&value) }
                        })
                        .await;
                    latencies.push(t0.elapsed().as_nanos() as u64);
                    if got.is_err() {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    pending += 1;
                    if pending == BATCH {
                        done.fetch_add(pending, Ordering::Relaxed);
                        pending = 0;
                    }
                }
                done.fetch_add(pending, Ordering::Relaxed);
                latencies
            })
        })
        .collect();

    let bar = ProgressBar::new(duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("[{bar:40}] {elapsed}/{duration} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    while Instant::now() < deadline {
        tokio::time::sleep(
            Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())),
        )
        .await;
        let elapsed = start.elapsed();
        bar.set_position(elapsed.as_millis() as u64);
        bar.set_message(format!(
            "{:.0} ops/s",
            done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
        ));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        match task.await {
            Ok(mut l) => latencies.append(&mut l),
            Err(err) => {
                return Err(Failure::Environment(format!(
                    "a benchmark task failed: {err}"
                )));
            }
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    latencies.sort_unstable();

    let after = region.stats();
    let ops = latencies.len() as u64;
    let errors = failed.load(Ordering::Relaxed);
    let backend_errors = after.backend_errors - before.backend_errors;
    println!(
        "region {} ({}), {} tasks, {} keys, {}-byte values, {:.1} s",
        region.name(),
        region.backend_name(),
        args.concurrency,
        args.keys,
        args.value_bytes,
        elapsed.as_secs_f64()
    );
    println!(
        "throughput: {:.0} ops/s ({ops} operations, {errors} errors)",
        ops as f64 / elapsed.as_secs_f64()
    );
    println!(
        "latency: p50 {:?}  p99 {:?}  p999 {:?}  max {:?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        percentile(&latencies, 0.999),
        percentile(&latencies, 1.0)
    );
    println!(
        "hits {}, misses {}, stale served {}, creator calls {}, lock waits {}, backend errors {backend_errors}",
        after.hits - before.hits,
        after.misses - before.misses,
        after.stale_served - before.stale_served,
        after.creator_calls - before.creator_calls,
        after.lock_waits - before.lock_waits,
    );
    if errors > 0 || backend_errors > 0 {
        return Err(Failure::Environment(format!(
            "the backend failed during the run ({errors} errors, {backend_errors} backend errors)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_rank_at_or_above() {
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_nanos(500));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_nanos(990));
        assert_eq!(percentile(&sorted, 0.999), Duration::from_nanos(999));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_nanos(1000));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }
}
