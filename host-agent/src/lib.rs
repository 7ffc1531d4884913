//! Everything that touches the host the daemon runs on.
//!
//! **This crate knows nothing of the daemon that drives it**: it answers questions about the machine ([`facts`]),
//! turns a [`spec::DomainSpec`] into libvirt domain XML ([`xml`]) and runs domains through libvirt. It is the only
//! crate that links libvirt. `xapi-server` calls it through this narrow interface of plain data so that the same
//! agent can later run as a separate process on each pool member.

pub mod accel;
pub mod facts;
pub mod libvirt;
pub mod spec;
pub mod xml;
