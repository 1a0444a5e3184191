//! `scripts/fuzz entry_decode`: see `tankard::__fuzz::entry_decode` for the input and the
//! invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tankard::__fuzz::entry_decode(data));
