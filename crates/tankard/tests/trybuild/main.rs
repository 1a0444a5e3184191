//! Compile-time behaviour of `#[tankard::cached]`: what must compile, and
//! the errors a user sees for what must not (the `.stderr` files next to
//! each case; regenerate with `TRYBUILD=overwrite` and review the diff).

#[test]
fn attribute() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/trybuild/pass/*.rs");
    cases.compile_fail("tests/trybuild/fail/*.rs");
}
