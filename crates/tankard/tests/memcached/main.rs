//! The memcached backend against real servers: the shared ones of
//! `scripts/services` (TANKARD_MEMCACHED_URL) and, for outages, memcached
//! processes each test starts and stops itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../support/stampede.rs"]
mod stampede;
stampede::child_entry!();

mod basic;
mod breaker;
mod faults;
mod hostile;
mod l1;
mod limits;
mod locks;
mod outage;
mod support;
