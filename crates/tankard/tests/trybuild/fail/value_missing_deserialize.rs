// One missing derive: one error, at the return type, naming the derive.
#[derive(Clone, serde::Serialize)]
struct User {
    name: String,
}

#[tankard::cached(region = "short_term")]
async fn user(id: u32) -> Result<User, tankard::Error> {
    Ok(User { name: format!("user {id}") })
}

fn main() {}
