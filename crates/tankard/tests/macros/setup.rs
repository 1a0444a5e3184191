//! A cached function cannot lose its cache without a word: `install`
//! checks the regions that functions name, and a call that finds no
//! manager or no region panics at its caller in a debug build, or runs
//! uncached, logs once and counts in a release build. Without a manager
//! means in a process where nothing installed one: those tests run in a
//! child process of their own (`support::run_in_child`).

use std::panic::UnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex};

use tankard::{CacheManager, Config};

use crate::support;

// Registered for `install`'s check: they use the global manager and name
// a region. The test binary's global manager (`support::install_global`)
// has both regions.
#[tankard::cached(region = "short_term")]
fn on_short_term(n: u32) -> u32 {
    n + 1
}

#[tankard::cached(region = "long_term")]
async fn on_long_term(n: u32) -> Result<u32, tankard::Error> {
    Ok(n + 2)
}

#[test]
fn install_fails_naming_each_missing_region_and_its_functions() {
    let config = Config::from_flat([
        ("cache.type", "memory"),
        ("cache.regions", "shrot_term, long_term"),
    ])
    .unwrap();
    let err = tankard::install(CacheManager::new(config).unwrap()).unwrap_err();
    assert!(err.is_region_not_found(), "{err}");
    assert!(!err.is_already_installed());
    assert_eq!(
        err.to_string(),
        "#[tankard::cached] functions name cache regions the manager does not configure: \
         \"short_term\" (by macros::setup::on_short_term); \
         configured regions: long_term, shrot_term. \
         List them in cache.regions, or correct the attribute's region = \"...\""
    );

    let err = tankard::install(support::memory()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "#[tankard::cached] functions name cache regions the manager does not configure: \
         \"long_term\" (by macros::setup::on_long_term), \
         \"short_term\" (by macros::setup::on_short_term); none are configured. \
         List them in cache.regions, or correct the attribute's region = \"...\""
    );

    // A failed install installs nothing: a global manager, if another test
    // has installed one by now, is the test binary's.
    if let Ok(global) = tankard::global() {
        assert!(global.region("short_term").is_ok());
    }
    support::install_global();
    assert_eq!(on_short_term(1), 2);
    assert_eq!(on_short_term_peek(1).unwrap(), Some(2));
}

#[tokio::test]
async fn a_second_install_is_refused_and_the_first_manager_stays() {
    let first = support::install_global();
    let second = support::seed(&support::static_dir().join("setup-second"));
    let err = tankard::install(second).unwrap_err();
    assert!(err.is_already_installed(), "{err}");
    assert!(!err.is_region_not_found());
    assert!(std::ptr::eq(tankard::global().unwrap(), first));
    assert_eq!(on_long_term(1).await.unwrap(), 3);
}

static GLOBAL_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached]
fn global_plain(n: u32) -> u32 {
    GLOBAL_RUNS.fetch_add(1, Ordering::SeqCst);
    n * 10
}

/// The line of `global_async`'s attribute, where its panic points.
const GLOBAL_ASYNC_LINE: u32 = line!() + 1;
#[tankard::cached]
async fn global_async(n: u32) -> u32 {
    n * 100
}

static RESULT_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached]
fn global_result(n: u32) -> Result<u32, tankard::Error> {
    RESULT_RUNS.fetch_add(1, Ordering::SeqCst);
    Ok(n)
}

static SEED: LazyLock<CacheManager> =
    LazyLock::new(|| support::seed(&support::static_dir().join("setup-seed")));
static MISSING_RUNS: AtomicU32 = AtomicU32::new(0);

#[tankard::cached(manager = SEED, region = "medium_term")]
fn missing_plain(n: u32) -> u32 {
    MISSING_RUNS.fetch_add(1, Ordering::SeqCst);
    n + 1000
}

#[tankard::cached(manager = SEED, region = "medium_term")]
fn missing_option(n: u32) -> Option<u32> {
    MISSING_RUNS.fetch_add(1, Ordering::SeqCst);
    Some(n)
}

/// Runs `f`, which must panic; returns the panic's message and where it
/// points. Sets the process's panic hook: call it in a child process only.
fn panic_of(f: impl FnOnce() + UnwindSafe) -> (String, (String, u32)) {
    let seen = Arc::new(Mutex::new(None));
    let hook_seen = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        let location = info.location().unwrap();
        *hook_seen.lock().unwrap() = Some((location.file().to_owned(), location.line()));
    }));
    let payload = std::panic::catch_unwind(f).expect_err("the call did not panic");
    drop(std::panic::take_hook());
    let message = match payload.downcast::<String>() {
        Ok(message) => *message,
        Err(payload) => (*payload.downcast::<&str>().unwrap()).to_owned(),
    };
    let at = seen.lock().unwrap().take().unwrap();
    (message, at)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

#[test]
fn in_a_debug_build_the_first_uncached_call_panics_at_its_caller() {
    if support::run_in_child("setup::in_a_debug_build_the_first_uncached_call_panics_at_its_caller")
    {
        return;
    }
    // A child process: no manager was installed here.
    assert!(tankard::global().is_err());
    if !cfg!(debug_assertions) {
        // A release build of the tests: the release behaviour (below).
        assert_eq!(global_plain(1), 10);
        return;
    }

    let caller = (file!().to_owned(), line!() + 2);
    let (message, at) = panic_of(|| {
        let _ = global_plain(1);
    });
    assert_eq!(at, caller, "{message}");
    assert_eq!(
        message,
        "#[tankard::cached] function macros::setup::global_plain cannot use its cache: \
         no global cache manager: call tankard::install(manager) at start-up, \
         or pass manager = ... to the attribute\n\
         (a debug build panics here; a release build runs the function without its cache and logs this once)"
    );
    assert_eq!(GLOBAL_RUNS.load(Ordering::SeqCst), 0);

    let caller = (file!().to_owned(), line!() + 2);
    let (message, at) = panic_of(|| {
        let _ = missing_plain(1);
    });
    assert_eq!(at, caller, "{message}");
    assert!(
        message.starts_with(
            "#[tankard::cached] function macros::setup::missing_plain cannot use its cache: \
             no cache region named \"medium_term\"; configured regions: long_term, short_term\n"
        ),
        "{message}"
    );
    let caller = (file!().to_owned(), line!() + 2);
    let (message, at) = panic_of(|| {
        let _ = missing_option(1);
    });
    assert_eq!(at, caller, "{message}");
    assert!(message.contains("missing_option"), "{message}");
    assert_eq!(MISSING_RUNS.load(Ordering::SeqCst), 0);

    // An async fn cannot know its caller (`#[track_caller]` does nothing
    // on one): its panic points at its attribute.
    let (message, at) = panic_of(|| {
        let _ = runtime().block_on(global_async(1));
    });
    assert_eq!(at, (file!().to_owned(), GLOBAL_ASYNC_LINE), "{message}");
    assert!(message.contains("macros::setup::global_async cannot use its cache"));

    // The next call panics again: the program is wrong until it installs.
    let (message, _) = panic_of(|| {
        let _ = global_plain(2);
    });
    assert!(message.contains("no global cache manager"), "{message}");

    // Functions with an error channel return the error; companions too.
    assert!(global_result(1).is_err());
    assert_eq!(RESULT_RUNS.load(Ordering::SeqCst), 0);
    assert!(global_plain_peek(1).is_err());
    assert!(missing_plain_peek(1).unwrap_err().is_region_not_found());
}

#[test]
fn in_a_release_build_an_uncached_call_runs_logs_once_and_counts() {
    if support::run_in_child("setup::in_a_release_build_an_uncached_call_runs_logs_once_and_counts")
    {
        return;
    }
    // What decides between the debug and the release behaviour is switched
    // to release for this (child) process: the test binary is a debug
    // build.
    tankard::__private::release_behaviour_for_tests();
    assert!(tankard::global().is_err());
    let errors_before = SEED.default_region().stats().backend_errors;
    let logs = support::Logs::default();
    logs.capture(|| {
        assert_eq!(global_plain(2), 20);
        assert_eq!(global_plain(2), 20);
        assert_eq!(missing_plain(3), 1003);
        assert_eq!(missing_plain(3), 1003);
        assert_eq!(missing_option(4), Some(4));
        assert_eq!(runtime().block_on(global_async(5)), 500);
    });
    // Every call ran its body: nothing was cached.
    assert_eq!(GLOBAL_RUNS.load(Ordering::SeqCst), 2);
    assert_eq!(MISSING_RUNS.load(Ordering::SeqCst), 3);
    // Logged once per function, at error level.
    let errors = logs.errors();
    assert_eq!(errors.len(), 4, "{errors:#?}");
    for (function, cause) in [
        ("macros::setup::global_plain", "no global cache manager"),
        (
            "macros::setup::missing_plain",
            "no cache region named \"medium_term\"",
        ),
        (
            "macros::setup::missing_option",
            "no cache region named \"medium_term\"",
        ),
        ("macros::setup::global_async", "no global cache manager"),
    ] {
        assert_eq!(
            errors
                .iter()
                .filter(|e| e.contains(cause) && e.contains(&format!("function={function}")))
                .count(),
            1,
            "{function}: {errors:#?}"
        );
    }
    // Counted as backend errors of the manager's default region, each
    // call; with no manager there is no region to count on.
    assert_eq!(
        SEED.default_region().stats().backend_errors - errors_before,
        3
    );
}
