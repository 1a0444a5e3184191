#[tankard::cached(regoin = "long_term")]
fn hello(name: &str) -> String {
    format!("Hello {name}")
}

fn main() {}
