//! `tankard`: the seed post's app as `tankard demo`, and the tools around a
//! Tankard configuration (check, stats, get, invalidate, clear, gc, bench).
//!
//! Exit codes: 0 success, 1 a user error (bad arguments, a config that
//! does not load, an unknown region), 2 an environment error (a server
//! unreachable, a port in use).

mod bench;
mod demo;
mod failure;
mod tools;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use failure::{Failure, Outcome};

/// Beaker-style caching for Rust: run the demo, check a config, inspect
/// and manage what a cache holds.
#[derive(Debug, Parser)]
#[command(name = "tankard", version, propagate_version = true)]
#[command(after_help = "Exit codes: 0 ok, 1 user error (config, arguments), \
                        2 environment error (server unreachable, port in use).")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the blog post's app: /hello (long_term), /goodbye and
    /// /greet/{name} (short_term), /stats, /metrics, a live dashboard at /,
    /// and POST /invalidate/{region}.
    Demo(DemoArgs),
    /// Validate a config file (TOML, or `key = value` lines as in an INI
    /// file) and print each region's resolved options.
    Check {
        /// The config file; `.toml` is read as TOML, anything else as INI lines.
        file: PathBuf,
    },
    /// Per region: backend, whether it is reachable, entries and bytes
    /// where the backend can tell.
    Stats {
        #[command(flatten)]
        config: ConfigArg,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one stored entry: fresh, stale or missing, its times, its size
    /// and its value (as text when it is a string, else hex).
    Get {
        #[command(flatten)]
        at: EntryArgs,
        /// The entry's key.
        key: String,
    },
    /// Remove one entry (with --namespace and KEY), or invalidate a whole
    /// region in every process that shares it (soft unless --hard).
    Invalidate {
        #[command(flatten)]
        config: ConfigArg,
        /// The region.
        #[arg(long)]
        region: String,
        /// The namespace of KEY.
        #[arg(long, requires = "key")]
        namespace: Option<String>,
        /// Remove this key (needs --namespace).
        #[arg(requires = "namespace")]
        key: Option<String>,
        /// Invalidate the region hard (entries become missing) rather than
        /// soft (entries become stale and are served while one caller
        /// regenerates them).
        #[arg(long, conflicts_with = "key")]
        hard: bool,
    },
    /// Remove every entry of a namespace, in every process that shares the
    /// backend (one write; nothing else on the server is touched).
    Clear {
        #[command(flatten)]
        at: EntryArgs,
    },
    /// Purge expired entries from the regions that keep them on disk
    /// (file, dbm, database), with a progress bar.
    Gc {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Load-test a region: concurrent get_or_create calls over a key space,
    /// printing throughput and p50/p99/p999 latency.
    Bench(bench::BenchArgs),
}

/// `--config F`, required.
#[derive(Debug, Args)]
struct ConfigArg {
    /// The config file (TOML, or INI-style `key = value` lines).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

/// Where an entry lives.
#[derive(Debug, Args)]
struct EntryArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// The region.
    #[arg(long)]
    region: String,
    /// The namespace (for functions: `module::path::fn_name`; the demo uses
    /// demo::hello, demo::goodbye and demo::greet).
    #[arg(long)]
    namespace: String,
}

/// `tankard demo`'s options.
#[derive(Debug, Args)]
struct DemoArgs {
    /// A config file; without one the demo keeps long_term in files under
    /// ./cache and short_term in memory.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8000")]
    bind: SocketAddr,
    /// How long each page's work takes, in milliseconds, for every route
    /// (defaults: /hello 15000, /goodbye and /greet 4000, as in the post).
    #[arg(long, value_name = "N")]
    work_ms: Option<u64>,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // clap's own exit code for usage errors is 2; ours is 1.
            let code = if err.use_stderr() { 1 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            failure.exit_code()
        }
    }
}

fn run(command: Command) -> Outcome {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Environment(format!("cannot start the async runtime: {e}")))?;
    // Every command: what the library warns about (a backend that fails,
    // an option that is not built) goes to stderr, never into the output.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .init();
    match command {
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::Check { file } => tools::check(&file),
        Command::Stats { config, json } => runtime.block_on(tools::stats(&config.config, json)),
        Command::Get { at, key } => runtime.block_on(tools::get(&at, &key)),
        Command::Invalidate {
            config,
            region,
            namespace,
            key,
            hard,
        } => runtime.block_on(tools::invalidate(
            &config.config,
            &region,
            namespace.as_deref().zip(key.as_deref()),
            hard,
        )),
        Command::Clear { at } => runtime.block_on(tools::clear(&at)),
        Command::Gc { config } => runtime.block_on(tools::gc(&config.config)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
    }
}
