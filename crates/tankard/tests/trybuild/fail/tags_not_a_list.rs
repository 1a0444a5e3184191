#[tankard::cached(tags = "user:{id}")]
fn profile(id: u64) -> String {
    format!("profile {id}")
}

#[tankard::cached(tags = [""])]
fn empty(id: u64) -> String {
    format!("profile {id}")
}

#[tankard::cached(tags = [format!("user:{id}")])]
fn not_a_literal(id: u64) -> String {
    format!("profile {id}")
}

fn main() {}
