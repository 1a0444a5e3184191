//! `scripts/fuzz config_ini`: see `tankard::__fuzz::config_ini` for the input and the
//! invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tankard::__fuzz::config_ini(data));
