//! The `tankard` binary, run as a user runs it: the demo as a real process
//! on a real socket, driven by a real HTTP client (and headless Chromium
//! for its page), and the tools on real config files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

mod dashboard;
mod demo;
mod setup;
mod tools;
