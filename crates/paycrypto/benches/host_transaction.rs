//! The host's cryptographic cost per transaction.
fn main() {}
