// Neither serde derive: one error for each, naming it.
#[derive(Clone)]
struct Report {
    lines: Vec<String>,
}

#[tankard::cached]
fn report(name: &str) -> Report {
    Report { lines: vec![name.to_owned()] }
}

fn main() {}
