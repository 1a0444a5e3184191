#[tankard::cached]
fn scaled(factor: f64) -> u32 {
    factor as u32
}

fn main() {}
