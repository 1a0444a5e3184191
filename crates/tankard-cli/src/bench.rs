//! `tankard bench`: a load generator for one region. It writes to a
//! namespace of its own in the user's real region, so it removes every key
//! it may have written when it ends, also when stopped with Ctrl-C.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::ConfigArg;
use crate::failure::{Failure, Outcome};
use crate::tools::load;

/// The namespace the benchmark writes to.
const NAMESPACE: &str = "tankard::bench";
/// How many operations a task does between updates of the shared counter.
const BATCH: u64 = 64;
/// The most removals in flight at once when cleaning up.
const CLEANUP_TASKS: u64 = 16;

/// `tankard bench`'s options.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    config: ConfigArg,
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
    let cache = load(&args.config.path()?)?;
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
    // Ctrl-C is caught from here on (the first poll registers the
    // handler), so no entry is written before it would clean them up.
    let mut interrupt = std::pin::pin!(tokio::signal::ctrl_c());
    let mut interrupted = tokio::select! {
        biased;
        _ = &mut interrupt => true,
        () = std::future::ready(()) => false,
    };
    println!(
        "writing up to {} entries to namespace {NAMESPACE} of region {} ({}); {}",
        args.keys,
        region.name(),
        region.backend_name(),
        if region.in_process() {
            "they live in this process's memory and end with it"
        } else {
            "they are removed at the end"
        }
    );
    let ns = region.namespace(NAMESPACE);
    let keys: Arc<Vec<String>> = Arc::new((0..args.keys).map(|i| format!("key-{i}")).collect());
    let value = Arc::new("x".repeat(args.value_bytes));
    let duration = Duration::from_secs_f64(args.duration);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(interrupted));
    let before = region.stats();
    let start = Instant::now();
    let deadline = start + duration;

    let tasks: Vec<_> = (0..args.concurrency)
        .map(|task| {
            let (ns, keys, value) = (ns.clone(), keys.clone(), value.clone());
            let (done, failed, stop) = (done.clone(), failed.clone(), stop.clone());
            tokio::spawn(async move {
                let mut rng = XorShift(
                    0x9e37_79b9_7f4a_7c15 ^ (task + 1).wrapping_mul(0xff51_afd7_ed55_8ccd),
                );
                let mut latencies = Vec::with_capacity(1 << 16);
                let mut pending = 0;
                while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
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
    while Instant::now() < deadline && !interrupted {
        tokio::select! {
            () = tokio::time::sleep(
                Duration::from_millis(100).min(deadline.saturating_duration_since(Instant::now())),
            ) => {}
            _ = &mut interrupt => {
                interrupted = true;
                stop.store(true, Ordering::Relaxed);
            }
        }
        let elapsed = start.elapsed();
        bar.set_position(elapsed.as_millis() as u64);
        bar.set_message(format!(
            "{:.0} ops/s",
            done.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64()
        ));
    }
    let mut latencies = Vec::new();
    let mut panicked = None;
    for task in tasks {
        match task.await {
            Ok(mut l) => latencies.append(&mut l),
            Err(err) => panicked = Some(err),
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let cleanup = remove_all(&region, &ns, &keys).await;
    if let Some(err) = panicked {
        return Err(Failure::Environment(format!(
            "a benchmark task failed: {err}"
        )));
    }
    latencies.sort_unstable();

    let after = region.stats();
    let ops = latencies.len() as u64;
    let errors = failed.load(Ordering::Relaxed);
    let backend_errors = after.backend_errors - before.backend_errors;
    println!(
        "region {} ({}), {} tasks, {} keys, {}-byte values, {:.1} s{}",
        region.name(),
        region.backend_name(),
        args.concurrency,
        args.keys,
        args.value_bytes,
        elapsed.as_secs_f64(),
        if interrupted {
            " (stopped by Ctrl-C)"
        } else {
            ""
        }
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
    match &cleanup {
        Cleanup::InProcess => {}
        Cleanup::Removed(n) => println!("removed the {n} entries the run wrote"),
        Cleanup::Failed { removed, failed } => println!(
            "removed {removed} entries the run wrote; {failed} removals failed \
             (what is left is in namespace {NAMESPACE})"
        ),
    }
    if errors > 0 || backend_errors > 0 {
        return Err(Failure::Environment(format!(
            "the backend failed during the run ({errors} errors, {backend_errors} backend errors)"
        )));
    }
    if let Cleanup::Failed { failed, .. } = cleanup {
        return Err(Failure::Environment(format!(
            "{failed} entries of namespace {NAMESPACE} could not be removed"
        )));
    }
    if interrupted {
        return Err(Failure::Interrupted);
    }
    Ok(())
}

/// What the cleanup did.
enum Cleanup {
    /// A memory region: what the run wrote ends with this process.
    InProcess,
    /// Every key is gone; this many held an entry.
    Removed(u64),
    /// Some removals failed (the backend went away during the run).
    Failed { removed: u64, failed: u64 },
}

/// Removes every key of the run's key space from the region, a few
/// removals in flight at once: a shared region keeps what the run wrote
/// after it ends, and it is the user's real region.
async fn remove_all(
    region: &tankard::Region,
    ns: &tankard::Cache,
    keys: &Arc<Vec<String>>,
) -> Cleanup {
    if region.in_process() {
        return Cleanup::InProcess;
    }
    let removed = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..CLEANUP_TASKS.min(keys.len() as u64))
        .map(|task| {
            let (ns, keys) = (ns.clone(), keys.clone());
            let (removed, failed) = (removed.clone(), failed.clone());
            tokio::spawn(async move {
                for key in keys
                    .iter()
                    .skip(task as usize)
                    .step_by(CLEANUP_TASKS as usize)
                {
                    match ns.remove(key).await {
                        Ok(true) => removed.fetch_add(1, Ordering::Relaxed),
                        Ok(false) => 0,
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for task in tasks {
        if task.await.is_err() {
            failed.fetch_add(1, Ordering::Relaxed);
        }
    }
    let (removed, failed) = (
        removed.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    if failed == 0 {
        Cleanup::Removed(removed)
    } else {
        Cleanup::Failed { removed, failed }
    }
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
