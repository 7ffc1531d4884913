//! Everything that touches the host the daemon runs on.
//!
//! **This crate knows nothing of the daemon that drives it**: it answers questions about the machine ([`facts`])
//! and, from the VM lifecycle issue on, is the only crate that links libvirt. `xapi-server` calls it through this
//! narrow interface so that the same agent can later run as a separate process on each pool member.

pub mod facts;
