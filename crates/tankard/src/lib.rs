//! Tankard: Beaker-style caching for Rust.
#![cfg_attr(docsrs, feature(doc_cfg))]
// TEMPORARY (config branch): error.rs and Secret::as_bytes hold items the
// manager and backends will use; remove once those land.
#![allow(dead_code)]

pub mod config;
mod error;

pub use config::Config;
pub use error::{Error, Result};
