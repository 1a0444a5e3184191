#[tankard::cached(expire = 10, expire = 20)]
fn hello(name: &str) -> String {
    format!("Hello {name}")
}

fn main() {}
