//! The `#[tankard::cached]` attribute, the `CacheKey` encoding and the
//! `tankard::blocking` API.

// Tests may unwrap: a failure there is the test failing.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Test items are `pub` inside private modules to show the attribute keeps
// the function's visibility for its companions.
#![allow(unreachable_pub)]

mod support;

mod background;
mod blocking;
mod dogpile;
mod failures;
mod functions;
mod keys;
mod memory;
mod setup;
