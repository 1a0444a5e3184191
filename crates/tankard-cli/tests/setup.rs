//! What a new user meets first: installing the binary, finding the config
//! file, the demo's config, logging, and `bench` leaving the user's region
//! as it found it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use tankard::{CacheManager, Config};

use crate::support::{Demo, command, config, tankard, text};

/// Runs `tankard ARGS` in `dir` with `env` set; returns (exit code, stdout, stderr).
fn run_with(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let out = command(dir)
        .envs(env.iter().copied())
        .args(args)
        .output()
        .expect("run tankard");
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// A config whose only region is `name`, in files under `dir`.
fn one_region(dir: &Path, file: &str, name: &str) -> String {
    let path = dir.join(file);
    std::fs::write(
        &path,
        format!(
            "[cache]\nregions = [\"{name}\"]\ntype = \"file\"\ndata_dir = \"{}\"\n",
            dir.join(format!("{name}-data")).display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// The regions `tankard stats` lists, by the first word of each row.
fn regions_in(stats: &str) -> Vec<String> {
    // The table ends at the first blank line (a note on hit ratios follows).
    stats
        .lines()
        .skip(1)
        .take_while(|l| !l.is_empty())
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect()
}

#[test]
fn the_config_is_found_from_the_flag_then_the_variable_then_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();

    // Nothing anywhere: a user error that says every way to give one.
    let (code, _, err) = run_with(d, &[], &["stats"]);
    assert_eq!(code, 1, "{err}");
    for hint in [
        "--config",
        "TANKARD_CONFIG",
        "tankard.toml",
        "--print-config",
    ] {
        assert!(err.contains(hint), "{hint} in {err}");
    }

    // ./tankard.toml (long_term and short_term).
    config(d, "type = \"memory\"");
    let (code, out, err) = run_with(d, &[], &["stats"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(regions_in(&out), ["long_term", "short_term"], "{out}");

    // $TANKARD_CONFIG wins over ./tankard.toml, --config over both.
    let env_file = one_region(d, "env.toml", "env_term");
    let flag_file = one_region(d, "flag.toml", "flag_term");
    let env = [("TANKARD_CONFIG", env_file.as_str())];
    let (code, out, err) = run_with(d, &env, &["stats"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(regions_in(&out), ["env_term"], "{out}");
    let (code, out, err) = run_with(d, &env, &["stats", "--config", &flag_file]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(regions_in(&out), ["flag_term"], "{out}");
    // An empty variable is no variable.
    let (_, out, _) = run_with(d, &[("TANKARD_CONFIG", "")], &["stats"]);
    assert_eq!(regions_in(&out), ["long_term", "short_term"], "{out}");

    // A variable naming no file is an error that names the variable, not
    // a quiet fall back to ./tankard.toml.
    let (code, _, err) = run_with(d, &[("TANKARD_CONFIG", "gone.toml")], &["stats"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("$TANKARD_CONFIG names gone.toml, which does not exist"),
        "{err}"
    );

    // Every command finds it.
    let (code, out, err) = run_with(d, &env, &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("env.toml: ok") && out.contains("[env_term]"),
        "{out}"
    );
    let (code, out, err) = run_with(d, &[], &["check"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tankard.toml: ok"), "{out}");
    let at = ["--region", "long_term", "--namespace", "views"];
    for (args, expected) in [
        (&["gc"][..], 0),
        (&["invalidate", "--region", "long_term"][..], 0),
        (&[&["clear"][..], &at].concat()[..], 0),
        // Found the config; nothing stored under the key.
        (&[&["get"][..], &at, &["page"]].concat()[..], 3),
        (
            &[
                "bench",
                "--region",
                "short_term",
                "--duration",
                "0.1",
                "--keys",
                "2",
                "--concurrency",
                "1",
            ][..],
            0,
        ),
    ] {
        let (code, out, err) = run_with(d, &[], args);
        assert_eq!(code, expected, "tankard {args:?}: {out}\n{err}");
        assert!(!err.contains("no config file"), "tankard {args:?}: {err}");
    }
}

#[tokio::test]
async fn the_demo_finds_a_config_or_runs_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let demo = Demo::start(dir.path(), 50, &[]);
    assert!(demo.banner.contains("config built in"), "{}", demo.banner);
    drop(demo);

    // ./tankard.toml with short_term on files: the demo uses it.
    config(dir.path(), "type = \"file\"");
    let demo = Demo::start(dir.path(), 50, &[]);
    assert!(
        demo.banner.contains("config tankard.toml"),
        "{}",
        demo.banner
    );
    demo.get("/goodbye").await;
    assert_eq!(
        demo.stats().await["regions"]["short_term"]["backend"],
        "file"
    );
}

#[test]
fn demo_print_config_prints_the_built_in_config_which_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = tankard(dir.path(), &["demo", "--print-config"]);
    assert_eq!(out.status.code(), Some(0));
    let printed = text(&out.stdout);
    assert_eq!(printed, include_str!("../src/demo/default.toml"));
    assert!(
        !dir.path().join("cache").exists(),
        "printing opens no region"
    );

    std::fs::write(dir.path().join("tankard.toml"), &printed).unwrap();
    let out = tankard(dir.path(), &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let checked = text(&out.stdout);
    for line in ["[long_term]", "type              file", "[short_term]"] {
        assert!(checked.contains(line), "{line} in {checked}");
    }
    let short = &checked[checked.find("[short_term]").unwrap()..];
    assert!(short.contains("type              memory"), "{short}");
}

#[test]
fn rust_log_and_v_set_the_log_level() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    config(d, "type = \"memory\"");
    // The config's origin is logged at info level.
    let origin = "config: ./tankard.toml (found in the working directory)";

    let (code, _, err) = run_with(d, &[], &["stats"]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains(origin), "warnings only by default: {err}");

    let (_, _, err) = run_with(d, &[], &["-v", "stats"]);
    assert!(err.contains("INFO") && err.contains(origin), "{err}");
    let (_, _, err) = run_with(d, &[], &["stats", "-vv"]);
    assert!(err.contains(origin), "-v goes anywhere: {err}");

    let (_, _, err) = run_with(d, &[("RUST_LOG", "info")], &["stats"]);
    assert!(err.contains(origin), "{err}");
    let (_, _, err) = run_with(d, &[("RUST_LOG", "tankard=info,warn")], &["stats"]);
    assert!(err.contains(origin), "{err}");
    let (_, _, err) = run_with(d, &[("RUST_LOG", "other=info")], &["stats"]);
    assert!(!err.contains(origin), "another target's level: {err}");
    // -v wins over RUST_LOG.
    let (_, _, err) = run_with(d, &[("RUST_LOG", "error")], &["-v", "stats"]);
    assert!(err.contains(origin), "{err}");

    // A RUST_LOG it cannot read is said, not silently dropped.
    let (code, out, err) = run_with(d, &[("RUST_LOG", "tankard=loud")], &["stats"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains(r#"RUST_LOG="tankard=loud" is ignored"#),
        "{err}"
    );
    assert!(out.contains("long_term"), "{out}");
}

/// Ctrl-C during `tankard bench`: the run stops, reports, and removes
/// what it wrote before exiting 130.
#[tokio::test]
async fn bench_stopped_by_ctrl_c_still_removes_what_it_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let file = config(dir.path(), "type = \"memory\"");
    let cache = CacheManager::new(Config::from_file(&file).unwrap()).unwrap();
    let long = cache.region("long_term").unwrap();

    let mut child = command(dir.path())
        .args([
            "bench",
            "--region",
            "long_term",
            "--duration",
            "600",
            "--keys",
            "50",
            "--concurrency",
            "2",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Printed once Ctrl-C is caught, before the first write.
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("they are removed at the end"), "{first}");
    // Interrupt once the run has written something to remove.
    let deadline = Instant::now() + Duration::from_secs(30);
    while long.usage().await.unwrap().entries == Some(0) {
        assert!(Instant::now() < deadline, "the bench wrote nothing in 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let kill = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = child.wait().unwrap();
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let rest = rest.join("\n");
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("(stopped by Ctrl-C)"), "{rest}");
    assert!(rest.contains("entries the run wrote"), "{rest}");
    assert_eq!(long.usage().await.unwrap().entries, Some(0), "{rest}");
}

/// `cargo install --path crates/tankard-cli`, as the README says, and the
/// installed `tankard --help`. A debug build in the workspace's own target
/// directory, offline and locked: it reuses what the test build compiled.
#[test]
fn cargo_install_builds_a_working_tankard() {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("the target directory");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the workspace");
    let root = tempfile::tempdir().unwrap();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut install = std::process::Command::new(cargo);
    // What cargo sets for this test process is no setting of the user's:
    // build scripts that watch one (ring's watches CARGO_MANIFEST_DIR)
    // would see it change and rebuild, with everything above them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name.as_ref())
        {
            install.env_remove(name.as_ref());
        }
    }
    let started = Instant::now();
    let out = install
        .current_dir(workspace)
        .env("CARGO_TARGET_DIR", target)
        .args(["install", "--path", "crates/tankard-cli", "--root"])
        .arg(root.path())
        .args(["--debug", "--offline", "--locked", "--quiet"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    eprintln!("cargo install took {:.1?}", started.elapsed());

    let installed = root.path().join("bin/tankard");
    let help = std::process::Command::new(&installed)
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(help.status.code(), Some(0));
    let help = text(&help.stdout);
    for line in ["demo", "check", "stats", "bench", "TANKARD_CONFIG"] {
        assert!(help.contains(line), "{line} in {help}");
    }
    // Built with every store: a redis region's config is accepted (a
    // store left out would be refused with the feature it needs).
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("tankard.toml"),
        "[cache]\nregions = [\"a\", \"b\", \"c\"]\n\
         [cache.a]\ntype = \"redis\"\nurl = \"rediss://127.0.0.1:1/\"\n\
         [cache.b]\ntype = \"ext:memcached\"\nurl = \"127.0.0.1:1\"\n\
         [cache.c]\ntype = \"redis-cluster\"\nurl = \"redis://127.0.0.1:1\"\n",
    )
    .unwrap();
    let check = std::process::Command::new(&installed)
        .arg("check")
        .current_dir(dir.path())
        .env_remove("TANKARD_CONFIG")
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", text(&check.stderr));
}
