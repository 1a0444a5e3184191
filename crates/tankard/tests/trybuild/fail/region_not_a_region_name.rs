// No configuration can define this region: `install` could never pass.
#[tankard::cached(region = "short term")]
fn hello(name: &str) -> String {
    format!("Hello {name}")
}

fn main() {}
