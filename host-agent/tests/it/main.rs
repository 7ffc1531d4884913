//! host-agent's integration tests: domain XML against libvirt's schema, on private test-driver hosts; disk hot-plug
//! on a real QEMU guest when the real-libvirt suite runs them (`real.rs`).

mod real;
mod xml;
