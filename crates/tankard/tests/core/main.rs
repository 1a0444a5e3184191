//! Core tests: config, memory and file backends, the dog-pile engine.

mod config;
