//! The `runner` command line.
pub mod nanobragg;

pub fn main() -> i32 {
    0
}
