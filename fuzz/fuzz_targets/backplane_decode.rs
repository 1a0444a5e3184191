//! `scripts/fuzz backplane_decode`: see `tankard::__fuzz::backplane_decode` for the input
//! and the invariants checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tankard::__fuzz::backplane_decode(data));
