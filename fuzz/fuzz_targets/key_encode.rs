//! `scripts/fuzz key_encode`: see `tankard::__fuzz::key_encode` for the input and the
//! invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tankard::__fuzz::key_encode(data));
