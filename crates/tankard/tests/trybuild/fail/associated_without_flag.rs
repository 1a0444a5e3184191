// An associated function whose signature names neither `self` nor `Self`:
// the attribute cannot see the impl block, and says how to tell it.
struct Beer;

impl Beer {
    #[tankard::cached]
    fn label(id: u32) -> String {
        format!("label {id}")
    }
}

fn main() {
    let _ = Beer::label(1);
}
