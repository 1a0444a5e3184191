//! Core tests: config, memory, file and dbm backends, the dog-pile
//! engine, and multi-process behaviour of the file and dbm backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/eventually.rs"]
mod eventually;
#[path = "../support/logs.rs"]
mod logs;
#[path = "../support/spans.rs"]
mod spans;
#[path = "../support/stampede.rs"]
mod stampede;
stampede::child_entry!();

mod config;
mod conformance;
mod counters;
mod dbm;
#[cfg(feature = "dbm")]
mod dbm_multiprocess;
mod file;
mod file_faults;
mod l1;
mod memory;
mod multiprocess;
