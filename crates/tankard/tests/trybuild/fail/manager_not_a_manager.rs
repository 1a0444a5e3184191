#[tankard::cached(manager = "global")]
fn hello(name: &str) -> String {
    format!("Hello {name}")
}

fn main() {}
