// A value the cache cannot share between threads.
use std::cell::Cell;

#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Counter {
    hits: Cell<u32>,
}

#[tankard::cached]
fn counter(name: &str) -> Option<Counter> {
    Some(Counter { hits: Cell::new(name.len() as u32) })
}

fn main() {}
