//! Tankard: Beaker-style caching for Rust.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod config;
mod error;

pub use config::Config;
pub use error::{Error, Result};
