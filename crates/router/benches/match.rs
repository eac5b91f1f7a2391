//! Router match benchmark (filled in next).
fn main() {}
