//! `scripts/fuzz config_toml`: see `tankard::__fuzz::config_toml` for the input and the
//! invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tankard::__fuzz::config_toml(data));
