//! Placeholder replaced by the RPC benchmark.
fn main() {}
