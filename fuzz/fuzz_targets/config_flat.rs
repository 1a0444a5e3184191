//! `scripts/fuzz config_flat`: see `tankard::__fuzz::config_flat` for the input and the
//! invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tankard::__fuzz::config_flat(data));
