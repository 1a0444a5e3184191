#[tankard::cached]
struct Hello;

fn main() {}
