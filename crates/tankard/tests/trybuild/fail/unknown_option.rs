#[tankard::cached(ttl = 10)]
fn hello(name: &str) -> String {
    format!("Hello {name}")
}

fn main() {}
