//! `tankard`: the seed post's app as `tankard demo`, and the tools around a
//! Tankard configuration (check, stats, get, invalidate, clear, gc, bench).
//!
//! Exit codes: 0 success, 1 a user error (bad arguments, a config that
//! does not load, an unknown region), 2 an environment error (a server
//! unreachable, a port in use), 3 nothing found (`get` of a missing key).

mod bench;
mod demo;
mod failure;
mod tools;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{ArgAction, Args, Parser, Subcommand};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

use failure::{Failure, Outcome};

/// The environment variable naming the config file when `--config` is not given.
const CONFIG_ENV: &str = "TANKARD_CONFIG";
/// The config file looked for in the working directory last.
const CONFIG_FILE: &str = "tankard.toml";

/// Beaker-style caching for Rust: run the demo, check a config, inspect
/// and manage what a cache holds.
#[derive(Debug, Parser)]
#[command(name = "tankard", version, propagate_version = true)]
#[command(
    after_help = "The config file: --config FILE, else $TANKARD_CONFIG, else ./tankard.toml.\n\
                        Logging: warnings by default; -v info, -vv debug, -vvv trace, or RUST_LOG \
                        (a level, or target=level pairs: RUST_LOG=tankard=debug,warn).\n\
                        Exit codes: 0 ok, 1 user error (config, arguments), \
                        2 environment error (server unreachable, port in use), \
                        3 not found (get of a missing key), 130 stopped by Ctrl-C (bench)."
)]
struct Cli {
    /// Log more: -v info, -vv debug, -vvv trace (on stderr). Overrides RUST_LOG.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the blog post's app: /hello (long_term), /goodbye and
    /// /greet/{name} (short_term), /stats, /metrics, a live dashboard at /,
    /// and POST /invalidate/{region}. With no config found, the built-in
    /// one (long_term in files under ./cache, short_term in memory).
    Demo(DemoArgs),
    /// Validate a config file (TOML, or `key = value` lines as in an INI
    /// file) and print each region's resolved options (those its backend
    /// reads).
    Check {
        /// The config file; `.toml` is read as TOML, anything else as INI
        /// lines. Without it: --config, $TANKARD_CONFIG, ./tankard.toml.
        #[arg(value_name = "FILE", conflicts_with = "config")]
        file: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArg,
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
    /// Show one stored entry: fresh or stale, its times, its size and its
    /// value (as text when it is a string, else hex). Exits 3 when nothing
    /// is stored under the key.
    Get {
        #[command(flatten)]
        at: EntryArgs,
        /// The entry's key.
        key: String,
    },
    /// Remove one entry (with --namespace and KEY), hide every entry that
    /// carries a tag (with --tag), or invalidate a whole region, in every
    /// process that shares it (soft unless --hard).
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
        /// Hide every entry of the region that carries this tag (one write).
        #[arg(long, conflicts_with_all = ["key", "namespace", "hard"])]
        tag: Option<String>,
    },
    /// Remove every entry of a namespace, in every process that shares the
    /// backend (one write; nothing else on the server is touched).
    Clear {
        #[command(flatten)]
        at: EntryArgs,
    },
    /// Purge expired entries, and temp files left by crashed writers, from
    /// the regions that keep them on disk (file), with a progress bar.
    Gc {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Load-test a region: concurrent get_or_create calls over a key space,
    /// printing throughput and p50/p99/p999 latency; the entries it wrote
    /// are removed at the end (also after Ctrl-C).
    Bench(bench::BenchArgs),
}

/// `--config F`; without it, the config is found as [`ConfigArg::find`] says.
#[derive(Debug, Args)]
struct ConfigArg {
    /// The config file (TOML, or INI-style `key = value` lines). Without
    /// it: $TANKARD_CONFIG, else ./tankard.toml.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// The config file: `--config`, else `$TANKARD_CONFIG` (when set and
    /// not empty), else `./tankard.toml` when it exists; `None` when none
    /// is given and there is no `./tankard.toml`.
    ///
    /// # Errors
    ///
    /// `$TANKARD_CONFIG` names a file that does not exist: the error names
    /// the variable, which a message about the file alone would not. (A
    /// missing `--config` file is named when it is loaded.)
    fn find(&self) -> Outcome<Option<PathBuf>> {
        if let Some(path) = &self.config {
            return Ok(Some(path.clone()));
        }
        if let Some(path) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            let path = PathBuf::from(path);
            if !path.exists() {
                return Err(Failure::User(format!(
                    "${CONFIG_ENV} names {}, which does not exist",
                    path.display()
                )));
            }
            tracing::info!("config: {} (from ${CONFIG_ENV})", path.display());
            return Ok(Some(path));
        }
        let local = Path::new(CONFIG_FILE);
        if local.is_file() {
            tracing::info!("config: ./{CONFIG_FILE} (found in the working directory)");
            return Ok(Some(local.to_owned()));
        }
        Ok(None)
    }

    /// The config file every command but `demo` needs.
    fn path(&self) -> Outcome<PathBuf> {
        self.find()?.ok_or_else(|| {
            Failure::User(format!(
                "no config file: pass --config FILE, set {CONFIG_ENV}, or put a {CONFIG_FILE} \
                 in the working directory (`tankard demo --print-config > {CONFIG_FILE}` \
                 writes the demo's)"
            ))
        })
    }
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
    /// A config file with the regions long_term and short_term.
    #[command(flatten)]
    config: ConfigArg,
    /// Print the built-in config (TOML) and exit: a start for your own.
    #[arg(long)]
    print_config: bool,
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
    init_logging(cli.verbose);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            failure.exit_code()
        }
    }
}

/// What is logged, on stderr: `-v`s when given, else `RUST_LOG`, else
/// warnings and errors (a backend that fails, an option that is not built).
/// Every command logs to stderr, never into its output.
fn init_logging(verbose: u8) {
    let (filter, bad_env) = match verbose {
        0 => match std::env::var("RUST_LOG") {
            Ok(text) if !text.trim().is_empty() => match text.parse::<Targets>() {
                Ok(targets) => (targets, None),
                Err(err) => (
                    Targets::new().with_default(LevelFilter::WARN),
                    Some((text, err)),
                ),
            },
            _ => (Targets::new().with_default(LevelFilter::WARN), None),
        },
        1 => (Targets::new().with_default(LevelFilter::INFO), None),
        2 => (Targets::new().with_default(LevelFilter::DEBUG), None),
        _ => (Targets::new().with_default(LevelFilter::TRACE), None),
    };
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .with(filter)
        .init();
    if let Some((text, err)) = bad_env {
        tracing::warn!(
            "RUST_LOG={text:?} is ignored ({err}); expected a level or target=level pairs, \
             such as RUST_LOG=tankard=debug,warn"
        );
    }
}

fn run(command: Command) -> Outcome {
    if let Command::Demo(args) = &command
        && args.print_config
    {
        print!("{}", demo::DEFAULT_CONFIG);
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Environment(format!("cannot start the async runtime: {e}")))?;
    match command {
        Command::Demo(args) => runtime.block_on(demo::run(args)),
        Command::Check { file, config } => match file {
            Some(file) => tools::check(&file),
            None => tools::check(&config.path()?),
        },
        Command::Stats { config, json } => runtime.block_on(tools::stats(&config.path()?, json)),
        Command::Get { at, key } => runtime.block_on(tools::get(&at, &key)),
        Command::Invalidate {
            config,
            region,
            namespace,
            key,
            hard,
            tag,
        } => runtime.block_on(tools::invalidate(
            &config.path()?,
            &region,
            match (namespace.as_deref().zip(key.as_deref()), tag.as_deref()) {
                (Some(entry), _) => tools::Target::Entry(entry),
                (None, Some(tag)) => tools::Target::Tag(tag),
                (None, None) if hard => tools::Target::Region(tankard::Invalidation::Hard),
                (None, None) => tools::Target::Region(tankard::Invalidation::Soft),
            },
        )),
        Command::Clear { at } => runtime.block_on(tools::clear(&at)),
        Command::Gc { config } => runtime.block_on(tools::gc(&config.path()?)),
        Command::Bench(args) => runtime.block_on(bench::run(args)),
    }
}
