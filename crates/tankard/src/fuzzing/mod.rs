//! The fuzz targets' entry points and the invariants they check; not an
//! API. `fuzz/fuzz_targets/*.rs` call these functions (through `scripts/fuzz`,
//! which runs cargo-fuzz) and this crate's unit tests replay the committed
//! corpus and every crash seed through the same functions, so a crash
//! found once stays a test.
//!
//! Compiled only under cargo-fuzz's `--cfg fuzzing` and for the unit
//! tests: the integration tests are another crate, where neither cfg is
//! set, and a cargo feature for them would be one more switch a user could
//! turn on by mistake.
//!
//! Each function takes the fuzzer's raw bytes and panics when an invariant
//! fails. An error the library returns for hostile input is the expected
//! outcome, never a failure; a panic, an abort, a hang or a runaway
//! allocation is.

mod config;
mod entry;
mod key;

/// The entry decoder: arbitrary bytes (or bytes resealed past the
/// checksum) through `open` and `decode_payload`, and values through
/// `encode` and back. Checks: no panic; an entry that opens re-encodes to
/// the same bytes and opens again to the same fields; `peek_meta` agrees
/// with `open`; `decode(encode(x)) == x`; another key or secret is a miss.
pub fn entry_decode(data: &[u8]) {
    entry::fuzz(data);
}

/// `Config::from_flat` on `key=value` lines. Checks: no panic; a config
/// that loads has every duration within range, opens as a manager and
/// serves a call on each region; the same pairs written as an INI file and
/// as a TOML file load to the same config.
pub fn config_flat(data: &[u8]) {
    config::flat(data);
}

/// `Config::from_toml_str` on arbitrary text, with the checks of
/// [`config_flat`] on what loads.
pub fn config_toml(data: &[u8]) {
    config::toml(data);
}

/// `Config::from_ini_str` on arbitrary text, with the checks of
/// [`config_flat`] on what loads.
pub fn config_ini(data: &[u8]) {
    config::ini(data);
}

/// The key encoder: two argument lists (of the same types, or not) through
/// `encode_args`, the compact key of a memory region and the word key, and
/// two (region, namespace, key) triples through the storage keys. Checks:
/// argument lists of the same types have equal keys exactly when they are
/// equal; a compact key reads back as its text key and hashes alike when
/// equal; word keys are equal exactly when text keys are; storage keys are
/// equal exactly when their triples are, and never equal a lock or
/// bookkeeping key.
pub fn key_encode(data: &[u8]) {
    key::fuzz(data);
}

/// The backplane's message decoder (`backend::backplane`): arbitrary bytes
/// from the channel, where any process (or anything else) may publish.
/// Checks: no panic; a message that decodes encodes to bytes that decode
/// to the same message.
pub fn backplane_decode(data: &[u8]) {
    use crate::backend::backplane::Message;
    if let Some(message) = Message::decode(data) {
        let again = Message::decode(&message.encode());
        assert_eq!(
            again.as_ref(),
            Some(&message),
            "a decoded message re-encodes"
        );
    }
}

/// The fuzzer's bytes read front to back as small values. Past the end it
/// reads zeros, so every input decodes to something and generation always
/// stops (a zero picks the smallest choice).
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&first, rest)) => {
                self.data = rest;
                first
            }
            None => 0,
        }
    }

    fn u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        for byte in &mut bytes {
            *byte = self.byte();
        }
        u64::from_le_bytes(bytes)
    }

    fn u128(&mut self) -> u128 {
        u128::from(self.u64()) | u128::from(self.u64()) << 64
    }

    /// Mostly ASCII, where every delimiter of every format lives; now and
    /// then any other character.
    fn char(&mut self) -> char {
        match self.byte() {
            byte @ 0..0x80 => char::from(byte),
            _ => {
                let code = u32::from_le_bytes([self.byte(), self.byte(), self.byte() % 0x11, 0]);
                char::from_u32(code).unwrap_or('\u{fffd}')
            }
        }
    }

    /// Up to `max - 1` characters.
    fn string(&mut self, max: u8) -> String {
        let len = self.byte() % max;
        (0..len).map(|_| self.char()).collect()
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    type Target = fn(&[u8]);

    const TARGETS: [(&str, Target); 6] = [
        ("entry_decode", super::entry_decode),
        ("config_flat", super::config_flat),
        ("config_toml", super::config_toml),
        ("config_ini", super::config_ini),
        ("key_encode", super::key_encode),
        ("backplane_decode", super::backplane_decode),
    ];

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
    }

    /// Runs every file of `dir/<target>/` through its target; returns how
    /// many ran per target and which failed. A target without a directory
    /// has no files (git keeps no empty directories); the corpus test
    /// checks the counts.
    fn replay(dir: &str) -> (Vec<(&'static str, usize)>, Vec<String>) {
        let mut counts = Vec::new();
        let mut failures = Vec::new();
        for (target, run) in TARGETS {
            let dir = fuzz_dir().join(dir).join(target);
            let mut paths: Vec<PathBuf> = match std::fs::read_dir(&dir) {
                Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                Err(err) => panic!("{}: {err}", dir.display()),
            };
            paths.retain(|path| path.is_file() && !path.ends_with("README.md"));
            paths.sort();
            for path in &paths {
                let bytes = std::fs::read(path).unwrap();
                if std::panic::catch_unwind(|| run(&bytes)).is_err() {
                    failures.push(path.display().to_string());
                }
            }
            counts.push((target, paths.len()));
        }
        (counts, failures)
    }

    /// The seed of every crash a fuzz target found (`fuzz/regressions/`):
    /// each must now pass its target's checks.
    #[test]
    fn crash_seeds_stay_fixed() {
        let (_, failures) = replay("regressions");
        assert!(failures.is_empty(), "crash seeds that fail: {failures:#?}");
    }

    /// The committed corpus replays cleanly, so every `cargo test` runs the
    /// fuzz invariants over a few hundred varied inputs without cargo-fuzz.
    #[test]
    fn corpus_replays_cleanly() {
        let (counts, failures) = replay("corpus");
        assert!(
            failures.is_empty(),
            "corpus inputs that fail: {failures:#?}"
        );
        for (target, count) in counts {
            assert!(count >= 10, "fuzz/corpus/{target} has only {count} inputs");
        }
    }

    #[test]
    fn input_reads_zeros_past_the_end() {
        let mut input = super::Input::new(&[1, 2]);
        assert_eq!(input.u64(), 0x0201);
        assert_eq!(input.byte(), 0);
        assert_eq!(input.string(10), "");
    }
}
